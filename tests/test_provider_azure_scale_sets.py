"""Azure virtual machine scale sets: instances (AKS node pools) read through the real SDK from
fakecloud into the same VM model, their inherited settings, and coverage that is complete only
when the scale sets could be listed too."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from auditor.model import SOME_VMS, Level, Party, Status, Technology
from tests.fakecloud.helpers import write_json as _write
from tests.test_provider_azure import SUB, _audit, _by_name, _replay

pytest.importorskip("azure.mgmt.compute")

DEMO_SUB = Path(__file__).resolve().parents[1] / (
    "examples/demo-fleet/azure/ab4bd4af-8843-4e36-bac0-04fdd527ff09"
)
CVM_POOL = "aks-cvmpool-31416926-vmss"
SYS_POOL = "aks-nodepool1-27182818-vmss"


def _retarget(data: Any, sub: str) -> Any:
    """The demo's scale-set files, moved into another subscription (ids included)."""
    return json.loads(json.dumps(data).replace("ab4bd4af-8843-4e36-bac0-04fdd527ff09", sub))


def _with_scale_sets(root: Path) -> Path:
    _replay(root)
    base = root / "azure" / SUB
    sets = json.loads((DEMO_SUB / "virtualMachineScaleSets.json").read_text())
    _write(root, f"azure/{SUB}/virtualMachineScaleSets.json", _retarget(sets, SUB))
    for source in (DEMO_SUB / "virtualMachineScaleSets").rglob("*.json"):
        target = base / source.relative_to(DEMO_SUB)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(_retarget(json.loads(source.read_text()), SUB)))
    return root


def test_scale_set_instances_are_vms_with_their_verdicts(tmp_path: Path) -> None:
    run, cloud = _audit(_with_scale_sets(tmp_path))
    assert run.coverage.complete, run.coverage.gaps
    vms = _by_name(run)
    assert len(run.vms) == 6  # three VMs and three scale-set instances
    cvm0 = vms[f"{CVM_POOL}_0"]
    assert cvm0.id == "c7d2e9f1-3b4a-4c5d-8e6f-7a8b9c0d1e2f"  # the instance's vmId
    # inherited from the scale set's model: the instance itself does not repeat it
    assert cvm0.technology is Technology.SEV_SNP and cvm0.document["cc"]["basis"] == "resource_skus"
    assert cvm0.document["azure"]["security_type"] == "ConfidentialVM"
    assert cvm0.document["tpm"]["implemented_by"] == "paravisor"
    assert cvm0.level is Level.L1 and cvm0.parties[Party.HYPERVISOR] is Status.CLAIMED_EXCLUDED
    (os_disk,) = cvm0.document["disks"]
    assert os_disk["confidential_encryption"] == "VMGuestStateOnly"
    assert os_disk["custody"] == "provider_key"
    assert cvm0.document["azure"]["scale_set"] == {
        "name": CVM_POOL,
        "id": cvm0.document["azure"]["scale_set"]["id"],
        "instance_id": "0",
        "orchestration_mode": "Uniform",
    }
    assert cvm0.document["kubernetes"] == {
        "platform": "aks",
        "source": "scale set tags",
        "cluster": "payroll-aks",
        "cluster_resource_group": "rg-payroll-prod",
        "node_pool": "cvmpool",
        "declared_technology": "SEV_SNP",  # what the scale set's model declares
    }
    assert {e["type"] for e in cvm0.document["agents"]["extensions"]} == {
        "CustomScript",
        "Compute.AKS.Linux.Billing",
    }
    # every section rests on the instance and its scale set as listed
    assert all(len(shas) >= 2 for shas in cvm0.evidence.values())
    refs = {run.evidence[s].ref for s in cvm0.evidence["cc"]}
    assert f"azure/{SUB}/virtualMachineScaleSets/{CVM_POOL}/virtualMachines.json" in refs
    # the system pool: Trusted Launch, an ephemeral OS disk without encryption at host
    sys0 = vms[f"{SYS_POOL}_0"]
    assert sys0.technology is Technology.NONE and sys0.level is Level.L0
    (eph,) = sys0.document["disks"]
    assert eph["ephemeral"] is True and eph["encrypted"] is False
    assert "keys.unencrypted-disk" in sys0.party_status[Party.KEY_CUSTODIAN].rules
    ops = {r.operation for r in cloud.request_log}
    assert {
        "virtualMachineScaleSets.listAll",
        "virtualMachineScaleSetVMs.list",
        "virtualMachineScaleSetVMExtensions.list",
    } <= ops


def test_a_scan_that_could_not_list_scale_sets_is_not_complete(tmp_path: Path) -> None:
    root = _with_scale_sets(tmp_path)
    _write(
        root,
        f"azure/{SUB}/virtualMachineScaleSets.error.json",
        {"status": 403, "code": "AuthorizationFailed", "message": "no scale set read"},
    )
    run, _ = _audit(root)
    assert not run.coverage.complete
    (gap,) = run.coverage.gaps
    assert (gap.call, gap.code, gap.affects) == (
        "virtualMachineScaleSets.listAll",
        "AuthorizationFailed",
        SOME_VMS,
    )
    assert gap.describe() == ("VMs not seen: virtual machine scale set instances (listing failed)")
    assert len(run.vms) == 3  # the plain VMs are still read and judged
    (scope,) = run.coverage.scopes
    assert scope.status != "ok"


def test_one_scale_set_whose_instances_fail_is_named(tmp_path: Path) -> None:
    root = _with_scale_sets(tmp_path)
    folder = root / "azure" / SUB / "virtualMachineScaleSets" / CVM_POOL
    (folder / "virtualMachines.json").unlink()
    _write(
        root,
        f"azure/{SUB}/virtualMachineScaleSets/{CVM_POOL}/virtualMachines.error.json",
        {"status": 500, "code": "InternalServerError", "message": "try later"},
    )
    run, _ = _audit(root)
    (gap,) = run.coverage.gaps
    assert gap.affects == SOME_VMS and gap.resource == f"the instances of scale set {CVM_POOL}"
    assert {v.name for v in run.vms} >= {f"{SYS_POOL}_0"}
    assert not any(v.name.startswith(CVM_POOL) for v in run.vms)


def test_scale_set_instances_are_paged_and_fetched_by_id(tmp_path: Path) -> None:
    from auditor.fakecloud import FaultConfig

    run, cloud = _audit(_with_scale_sets(tmp_path), faults=FaultConfig(page_size=1))
    assert len(run.vms) == 6 and run.coverage.complete
    pages = [r for r in cloud.request_log if r.operation == "virtualMachineScaleSetVMs.list"]
    assert len(pages) == 3  # two instances in one pool (two pages), one in the other


def test_fakecloud_serves_one_instance_and_its_extension(tmp_path: Path) -> None:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.mgmt.compute import ComputeManagementClient

    from auditor.fakecloud import FakeCloud
    from auditor.providers.azure import AzureProvider

    root = _with_scale_sets(tmp_path)
    rg = "MC_rg-payroll-prod_payroll-aks_westeurope"
    with FakeCloud(root) as cloud:
        provider = AzureProvider([SUB], endpoint_url=cloud.endpoint, replay=True)
        client = ComputeManagementClient(provider._cred(), SUB, **provider._client_kwargs())
        inst = client.virtual_machine_scale_set_vms.get(rg, CVM_POOL, "1")
        assert inst.instance_id == "1" and inst.properties.vm_id.startswith("e3f4a5b6")
        ext = client.virtual_machine_scale_set_vm_extensions.get(rg, CVM_POOL, "1", "vmssCSE")
        assert ext.properties.type == "CustomScript"
        with pytest.raises(ResourceNotFoundError):
            client.virtual_machine_scale_set_vms.get(rg, CVM_POOL, "7")
        with pytest.raises(ResourceNotFoundError):
            client.virtual_machine_scale_set_vms.list(rg, "no-such-vmss").next()


def test_a_bad_scale_set_replay_file_names_the_key(tmp_path: Path) -> None:
    root = _with_scale_sets(tmp_path)
    path = root / "azure" / SUB / "virtualMachineScaleSets" / CVM_POOL / "virtualMachines.json"
    data = json.loads(path.read_text())
    broken = copy.deepcopy(data)
    broken["value"][0]["properties"]["vmIdd"] = "typo"
    path.write_text(json.dumps(broken))
    run, _ = _audit(root)
    (gap,) = run.coverage.gaps
    assert "vmIdd" in gap.message and gap.affects == SOME_VMS


def test_flexible_scale_sets_are_not_listed_twice(tmp_path: Path) -> None:
    """Flexible orchestration makes ordinary VMs (virtualMachines.listAll lists them): its
    instances are not asked for again, and no gap is made for it."""
    root = _with_scale_sets(tmp_path)
    path = root / "azure" / SUB / "virtualMachineScaleSets.json"
    data = json.loads(path.read_text())
    flex = copy.deepcopy(data["value"][0])
    flex["name"] = "flex-web"
    flex["id"] = flex["id"].rsplit("/", 1)[0] + "/flex-web"
    flex["properties"]["orchestrationMode"] = "Flexible"
    data["value"].append(flex)
    path.write_text(json.dumps(data))
    run, cloud = _audit(root)
    assert run.coverage.complete, run.coverage.gaps
    assert len(run.vms) == 6
    asked = [
        r.resource for r in cloud.request_log if r.operation == "virtualMachineScaleSetVMs.list"
    ]
    assert "flex-web" not in asked
