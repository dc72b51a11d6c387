"""The Azure provider: the real azure-mgmt-compute client over HTTP to fakecloud, and MAA tokens."""

from __future__ import annotations

import copy
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from auditor.engine import Engine
from auditor.fakecloud import FakeCloud, FaultConfig
from auditor.model import AuditRun, Level, Party, Scope, Status, Technology
from auditor.providers.azure import AzureProvider
from auditor.rules.loader import load_packs
from auditor.run import run_audit
from auditor.verify.maa import load_jwks
from auditor.verify.stage import VerifyOptions
from tests.fakecloud.helpers import fixture as _fixture
from tests.fakecloud.helpers import write_json as _write

pytest.importorskip("azure.mgmt.compute")

DATA = Path(__file__).parent / "data" / "cloud"
SUB = "00000000-1111-2222-3333-444444444444"
TOKEN_VMID = "d3fd4b09-37a3-40d5-8f2a-ea80762213cc"  # x-ms-azurevm-vmid of the FIXTURE token
MAA_ISSUER = "https://sharedwus.wus.attest.azure.net"
TOKEN_TIME = datetime(2022, 9, 8, 1, 0, tzinfo=UTC)  # inside the FIXTURE token's validity


def _replay(root: Path, sub: str = SUB) -> Path:
    cvm = _fixture("azure_vm_cvm.json")
    tdx = _fixture("azure_vm_cvm_tdx_vmgs_only.json")
    tl = _fixture("azure_vm_trusted_launch.json")
    base = f"azure/{sub}"
    _write(root, f"{base}/virtualMachines.json", {"value": [cvm, tdx, tl]})
    disk = _fixture("azure_disk_cvm_os.json")
    disks = [disk]
    for vm in (tdx, tl):
        d = copy.deepcopy(disk)
        d["id"] = vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
        d["name"] = d["id"].rsplit("/", 1)[-1]
        d["properties"].pop("securityProfile", None)
        disks.append(d)
    _write(root, f"{base}/disks.json", {"value": disks})
    des_id = cvm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["securityProfile"][
        "diskEncryptionSet"
    ]["id"]
    _write(
        root,
        f"{base}/diskEncryptionSets.json",
        {
            "value": [
                {
                    "id": des_id,
                    "name": des_id.rsplit("/", 1)[-1],
                    "type": "Microsoft.Compute/diskEncryptionSets",
                    "location": "westeurope",
                    "properties": {
                        "encryptionType": "ConfidentialVmEncryptedWithCustomerKey",
                        "activeKey": {
                            "sourceVault": {
                                "id": f"/subscriptions/{sub}/resourceGroups/cc-audit-rg/providers/"
                                "Microsoft.KeyVault/managedHSMs/cvm-hsm"
                            },
                            "keyUrl": "https://cvm-hsm.managedhsm.azure.net/keys/cvm-key/1",
                        },
                    },
                }
            ]
        },
    )
    _write(root, f"{base}/resourceSkus.json", _fixture("azure_resource_skus_cvm.json"))
    _write(
        root,
        f"{base}/virtualMachines/{tl['name']}/extensions.json",
        {
            "value": [
                {
                    "name": "RunCommandLinux",
                    "id": tl["id"] + "/extensions/RunCommandLinux",
                    "type": "Microsoft.Compute/virtualMachines/extensions",
                    "location": tl["location"],
                    "properties": {
                        "publisher": "Microsoft.CPlat.Core",
                        "type": "RunCommandLinux",
                        "typeHandlerVersion": "1.0",
                        "provisioningState": "Succeeded",
                    },
                }
            ]
        },
    )
    return root


def _audit(
    root: Path,
    faults: FaultConfig | None = None,
    subs: tuple[str, ...] = (SUB,),
    guest: Path | None = None,
    options: VerifyOptions | None = None,
    at: datetime | None = None,
) -> tuple[AuditRun, FakeCloud]:
    with FakeCloud(root, faults=faults) as cloud:
        provider = AzureProvider(
            list(subs), endpoint_url=cloud.endpoint, replay=True, retry_backoff=0.01
        )
        run = run_audit(
            [provider],
            Engine(load_packs()),
            Scope(providers=["azure"]),
            as_of=at,
            guest_evidence=guest,
            verify_options=options,
        )
    return run, cloud


def _by_name(run: AuditRun) -> dict[str, Any]:
    return {vm.name: vm for vm in run.vms}


def test_security_types_and_technology(tmp_path: Path) -> None:
    run, _ = _audit(_replay(tmp_path))
    assert run.coverage.complete, run.coverage.gaps
    vms = _by_name(run)
    cvm = vms["cvm-snp-1"]
    assert cvm.technology is Technology.SEV_SNP
    assert cvm.document["cc"]["basis"] == "resource_skus"
    assert cvm.id == "5c0d55a7-c407-4ed6-bf7d-ddb810267c85"  # the vmId, what guest tokens name
    assert cvm.level is Level.L1
    assert cvm.parties[Party.VTPM] is Status.CLAIMED_EXCLUDED  # paravisor vTPM: a claim
    tdx = next(v for v in run.vms if v.technology is Technology.TDX)
    assert tdx.parties[Party.HYPERVISOR] is Status.CLAIMED_EXCLUDED
    tl = next(v for v in run.vms if v.document["azure"]["security_type"] == "TrustedLaunch")
    assert tl.technology is Technology.NONE and tl.level is Level.L0
    assert "hypervisor.trusted-launch-is-not-confidential" in {f.rule_id for f in tl.findings}
    assert Status.EXCLUDED not in {s for v in run.vms for s in v.parties.values()}


def test_confidential_disk_key_custody(tmp_path: Path) -> None:
    run, _ = _audit(_replay(tmp_path))
    cvm = _by_name(run)["cvm-snp-1"]
    (os_disk,) = [d for d in cvm.document["disks"] if d["boot"]]
    assert os_disk["confidential_encryption"] == "DiskWithVMGuestState"
    assert os_disk["custody"] == "customer_kms" and os_disk["key_store"] == "managed_hsm"
    rules = set(cvm.party_status[Party.KEY_CUSTODIAN].rules)
    assert {"keys.confidential-disk-key-with-provider", "keys.provider-held"} <= rules
    tdx = next(v for v in run.vms if v.technology is Technology.TDX)
    assert "keys.os-disk-not-confidential" in {f.rule_id for f in tdx.findings}


def test_run_command_extension_is_an_access_path(tmp_path: Path) -> None:
    run, _ = _audit(_replay(tmp_path))
    tl = next(v for v in run.vms if v.document["azure"]["security_type"] == "TrustedLaunch")
    assert tl.document["agents"]["run_command"] is True
    assert "agents.run-command" in tl.party_status[Party.GUEST_AGENTS].rules


def test_paging_and_several_subscriptions(tmp_path: Path) -> None:
    other = "99999999-1111-2222-3333-444444444444"
    root = _replay(tmp_path)
    _replay(tmp_path, other)
    run, cloud = _audit(root, faults=FaultConfig(page_size=1), subs=(SUB, other))
    assert len(run.vms) == 6
    assert {v.account for v in run.vms} == {SUB, other}
    lists = [r for r in cloud.request_log if r.operation == "virtualMachines.listAll"]
    assert len(lists) == 6  # three pages per subscription, via nextLink


def test_throttling_with_retry_after_is_absorbed(tmp_path: Path) -> None:
    run, cloud = _audit(_replay(tmp_path), faults=FaultConfig(throttle_first=1))
    assert run.coverage.complete, run.coverage.gaps
    assert 429 in [r.status for r in cloud.request_log]


def test_listing_denied_fails_the_subscription(tmp_path: Path) -> None:
    _write(
        tmp_path,
        f"azure/{SUB}/virtualMachines.error.json",
        {"status": 403, "code": "AuthorizationFailed", "message": "no Microsoft.Compute read"},
    )
    run, _ = _audit(tmp_path)
    (scope,) = run.coverage.scopes
    assert scope.status == "failed"
    assert scope.errors[0].code == "AuthorizationFailed" and not run.coverage.complete


def test_skus_denied_falls_back_to_size_name(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    (root / f"azure/{SUB}/resourceSkus.json").unlink()
    _write(
        root,
        f"azure/{SUB}/resourceSkus.error.json",
        {"status": 403, "code": "AuthorizationFailed", "message": "no skus/read"},
    )
    run, _ = _audit(root)
    cvm = _by_name(run)["cvm-snp-1"]
    assert cvm.technology is Technology.SEV_SNP
    assert cvm.document["cc"]["basis"] == "size_name"
    assert [g.call for g in run.coverage.gaps] == ["resourceSkus.list"]


def test_unknown_security_type_is_undetermined(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    path = root / f"azure/{SUB}/virtualMachines.json"
    data = json.loads(path.read_text())
    data["value"][0]["properties"]["securityProfile"]["securityType"] = "ConfidentialVMv2"
    path.write_text(json.dumps(data))
    run, _ = _audit(root)
    cvm = _by_name(run)["cvm-snp-1"]
    assert cvm.technology is Technology.UNKNOWN
    assert cvm.parties[Party.HYPERVISOR] is Status.UNDETERMINED


# ---------------------------------------------------------------------------- MAA tokens


def _token_replay(tmp_path: Path) -> tuple[Path, Path]:
    root = _replay(tmp_path / "replay")
    path = root / f"azure/{SUB}/virtualMachines.json"
    data = json.loads(path.read_text())
    data["value"][0]["properties"]["vmId"] = TOKEN_VMID.upper()
    path.write_text(json.dumps(data))
    guest = tmp_path / "guest"
    guest.mkdir()
    shutil.copy(DATA / "azure_maa_token_FIXTURE.jwt", guest / "cvm-snp-1.jwt")
    return root, guest


def _options(issuers: tuple[str, ...] = (MAA_ISSUER,)) -> VerifyOptions:
    jwks = load_jwks((DATA / "azure_maa_jwks_FIXTURE.json").read_bytes())
    return VerifyOptions(maa_issuers=issuers, maa_jwks=jwks)


def test_valid_maa_token_makes_attestation_claimed(tmp_path: Path) -> None:
    root, guest = _token_replay(tmp_path)
    run, _ = _audit(root, guest=guest, options=_options(), at=TOKEN_TIME)
    cvm = _by_name(run)["cvm-snp-1"]
    att = cvm.document["attestation"]
    assert att["token"]["verified"] is True and att["provider_verdict"] == "passed"
    assert att["launch"]["debug_enabled"] is False
    assert cvm.parties[Party.ATTESTATION_SERVICE] is Status.CLAIMED_EXCLUDED  # never EXCLUDED
    assert cvm.level is Level.L2
    (sha,) = [s for s in cvm.evidence["attestation"] if run.evidence[s].kind == "maa_token"]
    assert run.evidence[sha].verification is not None and run.evidence[sha].verification.ok


def test_maa_token_from_unpinned_issuer_is_a_finding(tmp_path: Path) -> None:
    root, guest = _token_replay(tmp_path)
    options = _options(("https://sharedweu.weu.attest.azure.net",))
    run, _ = _audit(root, guest=guest, options=options, at=TOKEN_TIME)
    cvm = _by_name(run)["cvm-snp-1"]
    assert cvm.document["attestation"]["token"]["verified"] is False
    assert "attestation.token-unverified" in cvm.party_status[Party.ATTESTATION_SERVICE].rules
    assert cvm.level is Level.L1


def test_expired_maa_token_is_not_accepted(tmp_path: Path) -> None:
    root, guest = _token_replay(tmp_path)
    run, _ = _audit(root, guest=guest, options=_options(), at=datetime(2026, 11, 22, tzinfo=UTC))
    cvm = _by_name(run)["cvm-snp-1"]
    assert cvm.document["attestation"]["token"]["verified"] is False
    assert "exp" in cvm.document["attestation"]["token"]["reason"]


def test_token_for_no_scanned_vm_is_reported(tmp_path: Path) -> None:
    root = _replay(tmp_path / "replay")
    guest = tmp_path / "guest"
    guest.mkdir()
    shutil.copy(DATA / "azure_maa_token_FIXTURE.jwt", guest / "stray.jwt")
    (guest / "notes.txt").write_text("hello")
    (guest / "broken.jwt").write_text("not.a.jwt!")
    run, _ = _audit(root, guest=guest, options=_options(), at=TOKEN_TIME)
    codes = {g.resource: g.code for g in run.coverage.gaps}
    assert codes == {
        "stray.jwt": "NoMatchingVM",
        "notes.txt": "UnsupportedEvidence",
        "broken.jwt": "MalformedEvidence",
    }
    assert not run.coverage.complete


def test_fixture_vms_keep_their_audit_fields(tmp_path: Path) -> None:
    """Every Azure VM fixture's security, UEFI, disk-encryption and size fields arrive."""
    listed = _fixture("azure_vm_list.json")["value"]
    singles = [
        _fixture(n)
        for n in (
            "azure_vm_cvm.json",
            "azure_vm_cvm_tdx_vmgs_only.json",
            "azure_vm_trusted_launch.json",
        )
    ]
    vms = []
    for i, vm in enumerate(singles + listed):
        copy_ = copy.deepcopy(vm)
        copy_["name"] = f"vm-{i}"
        copy_["properties"]["vmId"] = f"00000000-0000-0000-0000-{i:012d}"
        vms.append(copy_)
    _write(tmp_path, f"azure/{SUB}/virtualMachines.json", {"value": vms})
    _write(tmp_path, f"azure/{SUB}/resourceSkus.json", _fixture("azure_resource_skus_cvm.json"))
    run, _ = _audit(tmp_path)
    by_name = {vm.name: vm for vm in run.vms}
    assert len(by_name) == len(vms)
    for raw in vms:
        vm = by_name[raw["name"]]
        props = raw["properties"]
        sec = props.get("securityProfile") or {}
        uefi = sec.get("uefiSettings") or {}
        doc = vm.document
        assert vm.id == props["vmId"]
        assert vm.instance_type == props["hardwareProfile"]["vmSize"]
        assert doc["azure"]["security_type"] == sec.get("securityType")
        assert doc["azure"]["encryption_at_host"] == sec.get("encryptionAtHost")
        assert doc["boot"]["secure_boot"] is bool(uefi.get("secureBootEnabled", False))
        assert doc["tpm"]["present"] is bool(uefi.get("vTpmEnabled", False))
        assert vm.region == raw["location"]
        os_sec = (
            props["storageProfile"]["osDisk"].get("managedDisk", {}).get("securityProfile") or {}
        )
        (os_doc,) = [d for d in doc["disks"] if d["boot"]]
        assert os_doc.get("confidential_encryption") == os_sec.get("securityEncryptionType")
    # no disks.json in this replay: disk facts are unknown, listed as gaps, never "unencrypted"
    for vm in run.vms:
        assert all(d["custody"] == "unknown" and "encrypted" not in d for d in vm.document["disks"])


def test_extension_named_on_the_vm_but_not_listed_is_used_and_a_gap(tmp_path: Path) -> None:
    """Recorded data of another project: the VM resource names MDE.Windows in `resources`, its
    extensions call returned nothing. The extension still counts, and the gap says why."""
    root = _replay(tmp_path)
    listing = json.loads((root / f"azure/{SUB}/virtualMachines.json").read_text())
    cvm = next(v for v in listing["value"] if v["name"] == "cvm-snp-1")
    cvm["resources"] = [{"id": cvm["id"] + "/extensions/MDE.Windows"}]
    _write(root, f"azure/{SUB}/virtualMachines.json", listing)
    run, _ = _audit(root)
    vm = _by_name(run)["cvm-snp-1"]
    assert [e["name"] for e in vm.document["agents"]["extensions"]] == ["MDE.Windows"]
    assert vm.parties[Party.GUEST_AGENTS] is Status.CAN_ACCESS
    assert "agents.extensions" in vm.party_status[Party.GUEST_AGENTS].rules
    (gap,) = [g for g in vm.gaps if g.call == "virtualMachineExtensions.list"]
    assert gap.code == "NotReturned" and "MDE.Windows named on the VM resource" in gap.message
    assert not run.coverage.complete


def test_a_disk_not_in_the_disk_list_is_not_found_not_a_failed_call(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    _write(root, f"azure/{SUB}/disks.json", {"value": []})
    run, _ = _audit(root)
    vm = _by_name(run)["cvm-snp-1"]
    undetermined = [f for f in vm.findings if f.status is Status.UNDETERMINED]
    assert any("was not found by disks.list" in f.reason for f in undetermined)
    for finding in undetermined:
        if "disks" in finding.reason:
            assert "was not found by disks.list" in finding.reason, finding.reason
            assert "disks.list failed" not in finding.reason
