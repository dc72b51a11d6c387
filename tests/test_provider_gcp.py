"""The GCP provider: real google-cloud-compute and google-cloud-logging over HTTP to fakecloud."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditor.engine import Engine
from auditor.fakecloud import FakeCloud, FaultConfig
from auditor.model import AuditRun, Level, Party, Scope, Source, Status, Technology
from auditor.providers.gcp import GcpProvider, attestation_from_logs, technology_of
from auditor.rules.loader import load_packs
from auditor.run import run_audit
from tests.fakecloud.helpers import fixture as _fixture
from tests.fakecloud.helpers import write_json as _write

pytest.importorskip("google.cloud.compute_v1")

PROJECT = "cc-audit-demo"
AS_OF = datetime(2025, 1, 20, tzinfo=UTC)


def _named(inst: dict[str, Any], name: str, iid: str, zone: str) -> dict[str, Any]:
    out = copy.deepcopy(inst)
    out["name"], out["id"] = name, iid
    out["zone"] = f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{zone}"
    return out


def _replay(root: Path, logs: list[dict[str, Any]] | None = None) -> Path:
    snp = _fixture("gcp_instance_sev_snp.json")  # cvm-snp-1, us-central1-a
    sev = _named(
        _fixture("gcp_instance_sev_live_migratable.json"), "cvm-sev-1", "11", "us-central1-b"
    )
    tdx = _named(_fixture("gcp_instance_tdx.json"), "cvm-tdx-1", "12", "us-central1-b")
    plain = _named(_fixture("gcp_instance_non_confidential.json"), "plain-1", "13", "us-central1-c")
    items = {
        "zones/us-central1-a": {"instances": [snp]},
        "zones/us-central1-b": {"instances": [sev, tdx]},
        "zones/us-central1-c": {"instances": [plain]},
    }
    _write(root, f"gcp/{PROJECT}/aggregatedList.json", {"items": items})
    for zone, inst in (
        ("us-central1-a", snp),
        ("us-central1-b", sev),
        ("us-central1-b", tdx),
        ("us-central1-c", plain),
    ):
        if inst.get("shieldedInstanceConfig", {}).get("enableVtpm"):
            _write(
                root,
                f"gcp/{PROJECT}/shieldedInstanceIdentity/{zone}/{inst['name']}.json",
                _fixture("gcp_shielded_identity.json"),
            )
    if logs is None:
        logs = _fixture("gcp_log_shielded_boot_integrity.json")
    _write(root, f"gcp/{PROJECT}/logEntries.json", logs)
    return root


def _audit(root: Path, faults: FaultConfig | None = None, **kw: Any) -> tuple[AuditRun, FakeCloud]:
    with FakeCloud(root, faults=faults) as cloud:
        provider = GcpProvider(
            [PROJECT],
            endpoint_url=cloud.endpoint,
            anonymous=True,
            as_of=kw.pop("as_of", AS_OF),
            retry_initial=0.01,
            **kw,
        )
        run = run_audit([provider], Engine(load_packs()), Scope(providers=["gcp"]), as_of=AS_OF)
    return run, cloud


def _by_name(run: AuditRun) -> dict[str, Any]:
    return {vm.name: vm for vm in run.vms}


def _launch(iid: str, when: str, passed: bool = True, debug: bool = False) -> dict[str, Any]:
    entry = copy.deepcopy(_fixture("gcp_log_sev_launch_attestation.json"))
    entry["resource"]["labels"]["instance_id"] = iid
    entry["timestamp"] = when
    event = entry["jsonPayload"]["sevLaunchAttestationReportEvent"]
    event["integrityEvaluationPassed"] = passed
    event["sevPolicy"]["debugEnabled"] = debug
    return entry


def test_technologies_and_levels(tmp_path: Path) -> None:
    run, _ = _audit(_replay(tmp_path))
    assert run.coverage.complete, run.coverage.gaps
    vms = _by_name(run)
    assert set(vms) == {"cvm-snp-1", "cvm-sev-1", "cvm-tdx-1", "plain-1"}
    snp = vms["cvm-snp-1"]
    # created with confidentialInstanceType alone: SEV-SNP, not "not confidential"
    assert snp.technology is Technology.SEV_SNP
    assert snp.level is Level.L1 and snp.parties[Party.HYPERVISOR] is Status.CLAIMED_EXCLUDED
    assert (snp.zone, snp.region) == ("us-central1-a", "us-central1")
    # the fixture's late-boot integrity event failed: reported, on the provider's word
    assert snp.document["attestation"]["boot"] == {"early_passed": True, "late_passed": False}
    assert "control-plane.boot-integrity-failed" in {f.rule_id for f in snp.findings}
    sev = vms["cvm-sev-1"]
    assert sev.technology is Technology.SEV
    ids = {f.rule_id for f in sev.findings}
    assert "hypervisor.sev-without-integrity" in ids and "hypervisor.snp-or-tdx-claimed" not in ids
    assert "control-plane.live-migration" in ids
    assert vms["cvm-tdx-1"].technology is Technology.TDX
    assert vms["plain-1"].technology is Technology.NONE and vms["plain-1"].level is Level.L0
    assert Status.EXCLUDED not in {s for vm in run.vms for s in vm.parties.values()}


def test_disk_key_custody(tmp_path: Path) -> None:
    run, _ = _audit(_replay(tmp_path))
    snp = _by_name(run)["cvm-snp-1"]
    assert [d.custody for d in snp.disks] == ["customer_kms"]
    assert snp.disks[0].kms_key and "cryptoKeys/cvm-boot" in snp.disks[0].kms_key
    assert snp.parties[Party.KEY_CUSTODIAN] is Status.CAN_ACCESS
    assert "keys.provider-held" in snp.party_status[Party.KEY_CUSTODIAN].rules


def test_ek_certificate_checked_against_pinned_google_roots(tmp_path: Path) -> None:
    run, _ = _audit(_replay(tmp_path))
    snp = _by_name(run)["cvm-snp-1"]
    ek = snp.document["tpm"]["ek"]
    # the fixture certificate is issued by a FIXTURE CA, not Google's: must not verify
    assert ek["certificate"] is True and ek["chain_verified"] is False
    assert ek["identity_match"] is True
    ids = {f.rule_id for f in snp.findings}
    assert "vtpm.ek-certificate-unverified" in ids
    (ev,) = [run.evidence[s] for s in snp.evidence["tpm"] if run.evidence[s].kind != "api_resource"]
    assert ev.verification is not None and not ev.verification.ok
    assert {c["name"] for c in ev.verification.checks} >= {"parse", "chain", "identity"}
    # the same certificate served for another instance names the wrong instance
    sev = _by_name(run)["cvm-sev-1"]
    assert sev.document["tpm"]["ek"]["identity_match"] is False
    assert "vtpm.ek-names-other-instance" in {f.rule_id for f in sev.findings}


def test_launch_log_within_window(tmp_path: Path) -> None:
    logs = [
        _launch("11", "2025-01-15T10:00:00Z"),
        _launch("11", "2024-11-01T10:00:00Z", passed=False),  # outside the 30-day window
    ]
    run, cloud = _audit(_replay(tmp_path, logs))
    sev = _by_name(run)["cvm-sev-1"]
    assert sev.document["attestation"]["provider_verdict"] == "passed"
    assert sev.parties[Party.ATTESTATION_SERVICE] is Status.CLAIMED_EXCLUDED
    assert sev.parties[Party.HYPERVISOR] is Status.CAN_ACCESS  # no memory integrity
    assert sev.level is Level.L0
    (ev_sha,) = sev.evidence["attestation"]
    assert run.evidence[ev_sha].source is Source.PROVIDER_LOG
    # no launch event for SEV-SNP: no evidence, not a failure
    snp = _by_name(run)["cvm-snp-1"]
    assert snp.document["attestation"]["provider_verdict"] == "none"
    assert snp.parties[Party.ATTESTATION_SERVICE] is Status.CAN_ACCESS
    assert "logging.entries.list" in [r.operation for r in cloud.request_log]


def test_log_window_is_explicit(tmp_path: Path) -> None:
    logs = [_launch("11", "2025-01-15T10:00:00Z")]
    short, _ = _audit(_replay(tmp_path / "a", logs), log_window=timedelta(days=2))
    assert _by_name(short)["cvm-sev-1"].document["attestation"]["provider_verdict"] == "none"
    longer, _ = _audit(_replay(tmp_path / "b", logs), log_window=timedelta(days=30))
    assert _by_name(longer)["cvm-sev-1"].document["attestation"]["provider_verdict"] == "passed"


def test_debug_policy_is_a_veto(tmp_path: Path) -> None:
    run, _ = _audit(_replay(tmp_path, [_launch("11", "2025-01-15T10:00:00Z", debug=True)]))
    sev = _by_name(run)["cvm-sev-1"]
    assert sev.parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    assert "hypervisor.debug-policy-allowed" in sev.party_status[Party.HYPERVISOR].rules
    assert sev.level is Level.L0


def test_failed_launch_integrity(tmp_path: Path) -> None:
    run, _ = _audit(_replay(tmp_path, [_launch("11", "2025-01-15T10:00:00Z", passed=False)]))
    sev = _by_name(run)["cvm-sev-1"]
    assert sev.parties[Party.ATTESTATION_SERVICE] is Status.CAN_ACCESS
    assert "attestation.provider-failed" in sev.party_status[Party.ATTESTATION_SERVICE].rules


def test_logging_denied_is_a_gap_and_undetermined(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    (root / f"gcp/{PROJECT}/logEntries.json").unlink()
    _write(
        root,
        f"gcp/{PROJECT}/logEntries.error.json",
        {"status": 403, "code": "PERMISSION_DENIED", "message": "logging.logEntries.list denied"},
    )
    run, _ = _audit(root)
    (gap,) = run.coverage.gaps
    assert (gap.call, gap.code) == ("logging.entries.list", "PERMISSION_DENIED")
    vms = _by_name(run)
    assert vms["cvm-snp-1"].parties[Party.ATTESTATION_SERVICE] is Status.UNDETERMINED
    # debug unknown, but plain SEV lets the hypervisor in anyway (no memory integrity)
    assert vms["cvm-sev-1"].parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    # SNP's hypervisor claim does not depend on Google's SEV launch log
    assert vms["cvm-snp-1"].parties[Party.HYPERVISOR] is Status.CLAIMED_EXCLUDED


def test_project_denied_fails_the_scope(tmp_path: Path) -> None:
    root = tmp_path
    _write(
        root,
        f"gcp/{PROJECT}/aggregatedList.error.json",
        {"status": 403, "code": "PERMISSION_DENIED", "message": "compute.instances.list denied"},
    )
    run, _ = _audit(root)
    assert run.vms == []
    (scope,) = run.coverage.scopes
    assert scope.status == "failed" and scope.errors[0].affects == "scope"
    assert scope.errors[0].code == "PERMISSION_DENIED"


def test_pagination_across_zones(tmp_path: Path) -> None:
    run, cloud = _audit(_replay(tmp_path), faults=FaultConfig(page_size=1))
    assert len(run.vms) == 4
    ops = [r.operation for r in cloud.request_log]
    assert ops.count("instances.aggregatedList") == 4


def test_throttling_absorbed_by_api_core_retry(tmp_path: Path) -> None:
    run, cloud = _audit(_replay(tmp_path), faults=FaultConfig(throttle_first=1))
    assert run.coverage.complete, run.coverage.gaps
    assert 429 in [r.status for r in cloud.request_log]
    assert len(run.vms) == 4


def test_unknown_confidential_type_is_undetermined(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    path = root / f"gcp/{PROJECT}/aggregatedList.json"
    data = json.loads(path.read_text())
    data["items"]["zones/us-central1-a"]["instances"][0]["confidentialInstanceConfig"] = {
        "confidentialInstanceType": "CCA"
    }
    path.write_text(json.dumps(data))
    run, _ = _audit(root)
    vm = _by_name(run)["cvm-snp-1"]
    assert vm.technology is Technology.UNKNOWN
    assert vm.parties[Party.HYPERVISOR] is Status.UNDETERMINED


@pytest.mark.parametrize(
    ("conf", "tech"),
    [
        ({"confidentialInstanceType": "SEV_SNP"}, Technology.SEV_SNP),
        (
            {"enableConfidentialCompute": True, "confidentialInstanceType": "SEV_SNP"},
            Technology.SEV_SNP,
        ),
        ({"enableConfidentialCompute": True}, Technology.SEV),
        (
            {
                "confidentialInstanceType": "CONFIDENTIAL_INSTANCE_TYPE_UNSPECIFIED",
                "enableConfidentialCompute": True,
            },
            Technology.SEV,
        ),
        ({"enableConfidentialCompute": False}, Technology.NONE),
        ({}, Technology.NONE),
        ({"confidentialInstanceType": "BMSAI"}, Technology.UNKNOWN),
    ],
)
def test_technology_of(conf: dict[str, Any], tech: Technology) -> None:
    assert technology_of({"confidentialInstanceConfig": conf})[0] is tech


def test_fixture_logs_parse() -> None:
    boot = attestation_from_logs(_fixture("gcp_log_shielded_boot_integrity.json"))
    assert boot["provider_verdict"] == "none"
    assert boot["boot"] == {"early_passed": True, "late_passed": False}  # as the fixture says
    launch = attestation_from_logs([_fixture("gcp_log_sev_launch_attestation.json")])
    assert launch["launch"]["debug_enabled"] is False and launch["provider_verdict"] == "passed"


def test_every_instance_fixture_keeps_its_audit_fields(tmp_path: Path) -> None:
    """The fixtures' confidential, shielded, scheduling, platform and disk fields all arrive."""
    listed = _fixture("gcp_instances_list.json")["items"]
    singles = [
        _fixture(n)
        for n in (
            "gcp_instance_sev_snp.json",
            "gcp_instance_sev_live_migratable.json",
            "gcp_instance_tdx.json",
            "gcp_instance_non_confidential.json",
        )
    ]
    seen: dict[str, dict[str, Any]] = {}
    for i, inst in enumerate(singles + listed):
        copy_ = _named(inst, f"vm-{i}", str(100 + i), "us-central1-a")
        seen[copy_["name"]] = copy_
    _write(
        tmp_path,
        f"gcp/{PROJECT}/aggregatedList.json",
        {"items": {"zones/us-central1-a": {"instances": list(seen.values())}}},
    )
    for name, inst in seen.items():
        if inst.get("shieldedInstanceConfig", {}).get("enableVtpm"):
            _write(
                tmp_path,
                f"gcp/{PROJECT}/shieldedInstanceIdentity/us-central1-a/{name}.json",
                _fixture("gcp_shielded_identity.json"),
            )
    _write(tmp_path, f"gcp/{PROJECT}/logEntries.json", [])
    run, _ = _audit(tmp_path)
    assert run.coverage.complete, run.coverage.gaps
    for vm in run.vms:
        inst = seen[vm.name or ""]
        doc = vm.document
        conf = inst.get("confidentialInstanceConfig", {})
        assert doc["cc"]["raw_flag"] == conf.get("confidentialInstanceType")
        assert doc["cc"]["legacy_flag"] == conf.get("enableConfidentialCompute")
        shielded = inst.get("shieldedInstanceConfig", {})
        assert doc["tpm"]["present"] is bool(shielded.get("enableVtpm", False))
        assert doc["boot"]["secure_boot"] is bool(shielded.get("enableSecureBoot", False))
        assert doc["gcp"]["on_host_maintenance"] == inst.get("scheduling", {}).get(
            "onHostMaintenance"
        )
        assert doc["gcp"]["cpu_platform"] == inst.get("cpuPlatform")
        assert doc["gcp"]["min_cpu_platform"] == inst.get("minCpuPlatform")
        assert vm.instance_type == inst["machineType"].rsplit("/", 1)[-1]
        assert len(vm.disks) == len(inst.get("disks", []))
        for disk, raw in zip(vm.disks, inst.get("disks", []), strict=True):
            key = raw.get("diskEncryptionKey", {})
            assert (disk.kms_key or None) == (key.get("kmsKeyName") or None)
        scopes = [s for a in inst.get("serviceAccounts", []) for s in a.get("scopes", [])]
        assert [s for a in doc["gcp"]["service_accounts"] for s in a["scopes"]] == scopes


def test_malformed_ek_certificate_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    ident = _fixture("gcp_shielded_identity.json")
    ident["encryptionKey"]["ekCert"] = (
        "-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n"
    )
    _write(root, f"gcp/{PROJECT}/shieldedInstanceIdentity/us-central1-a/cvm-snp-1.json", ident)
    run, _ = _audit(root)
    snp = _by_name(run)["cvm-snp-1"]
    ek = snp.document["tpm"]["ek"]
    assert ek["verified"] is False and "does not parse" in ek["reason"]
    assert "vtpm.ek-certificate-unverified" in {f.rule_id for f in snp.findings}


def test_an_unreachable_zone_is_vms_not_seen_never_complete(tmp_path: Path) -> None:
    """aggregatedList answers a zone it could not reach with a warning, not an error: those
    instances were not seen, and the scan must say so instead of reading "none there"."""
    root = _replay(tmp_path)
    path = root / "gcp" / PROJECT / "aggregatedList.json"
    data = json.loads(path.read_text())
    data["items"]["zones/asia-east1-c"] = {
        "warning": {
            "code": "UNREACHABLE",
            "message": "The zone 'projects/p/zones/asia-east1-c' is unavailable.",
            "data": [{"key": "scope", "value": "zones/asia-east1-c"}],
        }
    }
    path.write_text(json.dumps(data))
    run, _ = _audit(root)
    assert not run.coverage.complete
    (gap,) = run.coverage.gaps
    assert (gap.code, gap.affects, gap.region) == ("UNREACHABLE", "some-vms", "asia-east1-c")
    assert gap.describe() == "VMs not seen: the instances of zone asia-east1-c (unreachable)"
    assert len(run.vms) == 4  # the zones that answered are read and judged as before


def _gke_replay(root: Path) -> Path:
    """Two GKE nodes of one pool whose instance template declares SEV-SNP; one of them is a
    plain VM (recreated by hand) that still carries the pool's labels and template."""
    _replay(root)
    snp = _named(
        _fixture("gcp_instance_sev_snp.json"), "gke-claims-cc-pool-1a2b", "21", "us-central1-a"
    )
    plain = _named(
        _fixture("gcp_instance_non_confidential.json"),
        "gke-claims-cc-pool-3c4d",
        "22",
        "us-central1-a",
    )
    template = "gke-claims-gke-cc-pool-5e6f7a8b"
    for inst in (snp, plain):
        inst["labels"] = {
            "goog-k8s-cluster-name": "claims-gke",
            "goog-k8s-node-pool-name": "cc-pool",
            "goog-k8s-cluster-location": "us-central1",
            "goog-gke-node": "",
        }
        items = inst.setdefault("metadata", {}).setdefault("items", [])
        items.append(
            {
                "key": "instance-template",
                "value": f"projects/123/global/instanceTemplates/{template}",
            }
        )
        if inst.get("shieldedInstanceConfig", {}).get("enableVtpm"):
            _write(
                root,
                f"gcp/{PROJECT}/shieldedInstanceIdentity/us-central1-a/{inst['name']}.json",
                _fixture("gcp_shielded_identity.json"),
            )
    path = root / "gcp" / PROJECT / "aggregatedList.json"
    data = json.loads(path.read_text())
    data["items"]["zones/us-central1-a"]["instances"] += [snp, plain]
    path.write_text(json.dumps(data))
    _write(
        root,
        f"gcp/{PROJECT}/instanceTemplates/{template}.json",
        {
            "kind": "compute#instanceTemplate",
            "name": template,
            "properties": {
                "machineType": "n2d-standard-4",
                "confidentialInstanceConfig": {"confidentialInstanceType": "SEV_SNP"},
                "labels": {"goog-k8s-cluster-name": "claims-gke"},
            },
        },
    )
    return root


def test_gke_nodes_are_grouped_and_a_node_unlike_its_pool_is_a_finding(tmp_path: Path) -> None:
    run, cloud = _audit(_gke_replay(tmp_path))
    assert run.coverage.complete, run.coverage.gaps
    vms = _by_name(run)
    good, odd = vms["gke-claims-cc-pool-1a2b"], vms["gke-claims-cc-pool-3c4d"]
    for vm in (good, odd):
        assert vm.document["kubernetes"] == {
            "platform": "gke",
            "source": "instance labels",
            "cluster": "claims-gke",
            "node_pool": "cc-pool",
            "cluster_location": "us-central1",
            "instance_template": "gke-claims-gke-cc-pool-5e6f7a8b",
            "declared_technology": "SEV_SNP",
        }
    assert "hypervisor.node-differs-from-its-pool" not in {f.rule_id for f in good.findings}
    finding = next(f for f in odd.findings if f.rule_id == "hypervisor.node-differs-from-its-pool")
    assert "node pool cc-pool declares SEV_SNP; this node runs NONE" in finding.reason
    assert odd.parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    templates = [r for r in cloud.request_log if r.operation == "instanceTemplates.get"]
    assert len(templates) == 1  # one template for the pool, read once
    # the template is evidence of what the pool declares
    refs = {run.evidence[s].ref for s in odd.evidence["kubernetes"]}
    assert any(r.endswith("instanceTemplates/gke-claims-gke-cc-pool-5e6f7a8b.json") for r in refs)
    # and the report's node-pool table counts the node that is unlike its pool
    from auditor.reports.view import build_view

    (pool,) = build_view(run).fleet.pools
    assert (pool.platform, pool.cluster, pool.node_pool) == ("GKE", "claims-gke", "cc-pool")
    assert (pool.nodes, pool.declared, pool.unlike_pool) == (2, "SEV_SNP", 1)


def test_a_template_that_cannot_be_read_leaves_the_pool_undeclared(tmp_path: Path) -> None:
    root = _gke_replay(tmp_path)
    (root / "gcp" / PROJECT / "instanceTemplates" / "gke-claims-gke-cc-pool-5e6f7a8b.json").unlink()
    run, _ = _audit(root)
    assert not run.coverage.complete
    assert {g.call for g in run.coverage.gaps} == {"compute.instanceTemplates.get"}
    odd = _by_name(run)["gke-claims-cc-pool-3c4d"]
    assert "declared_technology" not in odd.document["kubernetes"]
    assert "hypervisor.node-differs-from-its-pool" not in {f.rule_id for f in odd.findings}


def test_messages_convert_to_the_json_the_sdk_prints() -> None:
    """`_to_dict` skips the JSON text of `to_json` (it was most of the conversion's CPU): every
    instance and shielded identity of the fixtures and the demo converts to the same dict."""
    from google.cloud import compute_v1

    from auditor.providers.gcp import _to_dict

    demo = Path(__file__).resolve().parents[1] / "examples" / "demo-fleet" / "gcp"
    instances = [_fixture(n) for n in ("gcp_instance_sev_snp.json", "gcp_instance_tdx.json")]
    for listing in demo.glob("*/aggregatedList.json"):
        for scoped in json.loads(listing.read_text()).get("items", {}).values():
            instances += scoped.get("instances", [])
    identities = [json.loads(p.read_text()) for p in demo.glob("*/shieldedInstanceIdentity/*/*")]
    cases = [(compute_v1.Instance, i) for i in instances]
    cases += [(compute_v1.ShieldedInstanceIdentity, i) for i in identities]
    assert len(instances) > 5 and identities
    for kind, data in cases:
        message = kind.from_json(json.dumps(data), ignore_unknown_fields=True)
        printed = json.loads(kind.to_json(message, always_print_fields_with_no_presence=False))
        assert _to_dict(message) == printed
        assert "kind" not in data or _to_dict(message)["kind"] == data["kind"]
