"""Guest evidence through a whole scan: import, binding, freshness, verdicts, and what is refused.

The demo fleet's AWS replay is scanned through boto3 and fakecloud with the committed guest
evidence: two SEV-SNP reports bound to demo VMs by the demo trust anchor (L4 and L3), and a real
AMD report that is genuine but bound to nothing here. Each test then breaks one thing (trust,
nonce, file) and checks the VM is not raised and the problem is listed.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from auditor.api import scan
from auditor.model import Answer, AuditRun, Level, Party, Status

FLEET = Path(__file__).resolve().parent.parent / "examples" / "demo-fleet"
EVIDENCE = FLEET / "guest-evidence"
HR_DB = "i-0d83016e1898302ed"
PAYMENTS_API = "i-045a5d8d3c4039e06"
PAYMENTS_DR = "i-0ea342d0eabd8c42e"


def _state(tmp_path: Path, issued: bool = True) -> Path:
    state = tmp_path / "state"
    state.mkdir(parents=True)
    if issued:
        shutil.copy(FLEET / "audit-state" / "nonces.json", state / "nonces.json")
    return state


def _scan(tmp_path: Path, evidence: Path = EVIDENCE, **options: Any) -> AuditRun:
    kwargs: dict[str, Any] = {
        "rules": [FLEET / "reference-measurements.yaml"],
        "demo_trust_anchor": FLEET / "demo-trust-anchor",
        "key_broker_keys": [FLEET / "demo-key-broker" / "broker.pem"],
    }
    kwargs.update(options)
    if "nonce_state" not in kwargs:
        kwargs["nonce_state"] = _state(tmp_path / "default")
    return scan("aws", replay=FLEET, guest_evidence=evidence, **kwargs)


def _vm(run: AuditRun, vm_id: str) -> Any:
    return next(v for v in run.vms if v.id == vm_id)


def _only(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "evidence"
    folder.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(EVIDENCE / name, folder / name)
    return folder


def test_demo_evidence_gives_l4_and_l3_and_says_demo_anchor(tmp_path: Path) -> None:
    run = _scan(tmp_path)
    hr, api = _vm(run, HR_DB), _vm(run, PAYMENTS_API)
    assert hr.level is Level.L4
    assert hr.gdpr.provider_can_access is Answer.NO  # every provider party is excluded
    # everything eu-hr-db has, but the SSM Agent runs in its guest: L3 for that one reason
    assert api.level is Level.L3
    assert api.parties[Party.KEY_CUSTODIAN] is Status.EXCLUDED  # LUKS over the KMS volume
    assert api.gdpr.blocking_parties == [Party.GUEST_AGENTS]
    assert set(api.party_status[Party.GUEST_AGENTS].rules) == {
        "agents.guest-runs-provider-agent",  # the SSM Agent, and the IMDS that feeds it
        "agents.metadata-service",
    }
    assert "L4 needs guest_agents EXCLUDED; it is CAN_ACCESS" in api.level_reason
    for vm in (hr, api):
        assert "demo trust anchor, not AMD" in vm.level_reason
        assert vm.document["hardware"]["verified"] is True
    assert run.scope.demo_trust_anchor is True
    assert run.scope.reference_measurements[0]["name"] == "aws-ovmf-2026.10-rebuilt"
    verified = [e for e in run.evidence.values() if e.kind == "guest_evidence"]
    assert verified and all(e.verification is not None for e in verified)


def test_real_amd_report_is_genuine_but_not_bound_and_raises_nothing(tmp_path: Path) -> None:
    run = _scan(tmp_path)
    dr = _vm(run, PAYMENTS_DR)
    hardware = dr.document["hardware"]
    assert hardware["authentic"] is True
    assert hardware["trust_anchor"] == "AMD"
    assert hardware["bound"] is False
    assert hardware["debug"] is True  # reported, not held against this VM
    assert "genuine AMD-signed report, not bound to this VM" in hardware["reason"]
    assert dr.level is Level.L1
    assert "demo trust anchor" not in dr.level_reason
    assert any("not bound to this VM" in g.message for g in dr.gaps)


def test_without_demo_mode_the_demo_chain_is_not_trusted(tmp_path: Path) -> None:
    run = _scan(tmp_path, demo_trust_anchor=None)
    hr = _vm(run, HR_DB)
    assert hr.level is Level.L1
    assert hr.document["hardware"]["authentic"] is False
    assert "does not verify" in hr.document["hardware"]["reason"]
    assert all(s is not Status.EXCLUDED for s in hr.parties.values())


def test_unknown_nonce_is_stale_and_raises_nothing(tmp_path: Path) -> None:
    run = _scan(tmp_path, nonce_state=_state(tmp_path / "empty", issued=False))
    hr = _vm(run, HR_DB)
    assert hr.level is Level.L1
    assert hr.document["hardware"]["fresh"] is False
    assert "stale" in hr.document["hardware"]["reason"]
    checks = {c["name"]: c for c in run.evidence[hr.evidence["hardware"][0]].verification.checks}
    assert "nonce unknown" in checks["nonce"]["reason"]


def test_expired_nonce_is_stale(tmp_path: Path) -> None:
    state = _state(tmp_path)
    doc = json.loads((state / "nonces.json").read_text())
    for record in doc["nonces"].values():
        record["issued_at"] = "2026-01-01T00:00:00Z"
    (state / "nonces.json").write_text(json.dumps(doc))
    run = _scan(tmp_path, nonce_state=state)
    assert _vm(run, HR_DB).level is Level.L1


def test_a_second_file_with_the_same_nonce_is_reused(tmp_path: Path) -> None:
    folder = _only(tmp_path, "eu-hr-db.json")
    copy = json.loads((folder / "eu-hr-db.json").read_text())
    copy["collected_at"] = "2026-11-21T10:00:00Z"  # same nonce, another file
    (folder / "eu-hr-db-again.json").write_text(json.dumps(copy))
    run = _scan(tmp_path, evidence=folder)
    hr = _vm(run, HR_DB)
    reasons = [
        c["reason"]
        for sha in hr.evidence["hardware"]
        for c in run.evidence[sha].verification.checks
        if c["name"] == "nonce"
    ]
    assert any(r.startswith("reused") for r in reasons)
    assert any(r.startswith("fresh") for r in reasons)
    assert hr.level is Level.L4  # the first, fresh file still counts; the reuse is listed
    assert any("nonce is not fresh: reused" in g.message for g in hr.gaps)


def test_report_bound_to_another_vm_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / "evidence"
    folder.mkdir()
    doc = json.loads((EVIDENCE / "eu-hr-db.json").read_text())
    doc["vm"]["id"] = PAYMENTS_API  # the file now claims another VM; its report binds eu-hr-db
    (folder / "moved.json").write_text(json.dumps(doc))
    state = _state(tmp_path)
    nonces = json.loads((state / "nonces.json").read_text())
    nonces["nonces"][doc["nonce"]]["vm_id"] = PAYMENTS_API
    (state / "nonces.json").write_text(json.dumps(nonces))
    run = _scan(tmp_path, evidence=folder, nonce_state=state)
    api = _vm(run, PAYMENTS_API)
    assert api.document["hardware"]["authentic"] is True
    assert api.document["hardware"]["bound"] is False
    assert api.level is Level.L1


def test_files_that_match_nothing_or_are_malformed_are_gaps(tmp_path: Path) -> None:
    folder = tmp_path / "evidence"
    folder.mkdir()
    doc = json.loads((EVIDENCE / "eu-hr-db.json").read_text())
    doc["vm"]["id"] = "i-00000000000000000"
    (folder / "stranger.json").write_text(json.dumps(doc))
    (folder / "broken.json").write_text("{not json")
    (folder / "notes.txt").write_text("hello")
    run = _scan(tmp_path, evidence=folder)
    codes = {g.resource: g.code for g in run.coverage.gaps if g.call == "guest-evidence"}
    assert codes == {
        "stranger.json": "NoMatchingVM",
        "broken.json": "MalformedEvidence",
        "notes.txt": "UnsupportedEvidence",
    }
    assert not run.coverage.complete


@pytest.mark.parametrize("field", ["outblob", "auxblob"])
def test_tampered_blob_fails_and_raises_nothing(tmp_path: Path, field: str) -> None:
    folder = tmp_path / "evidence"
    folder.mkdir()
    doc = json.loads((EVIDENCE / "eu-hr-db.json").read_text())
    blob = bytearray(base64.b64decode(doc["tee"][field]))
    blob[0x90 if field == "outblob" else 200] ^= 0x01
    doc["tee"][field] = base64.b64encode(bytes(blob)).decode()
    (folder / "eu-hr-db.json").write_text(json.dumps(doc))
    run = _scan(tmp_path, evidence=folder)
    hr = _vm(run, HR_DB)
    assert hr.level is Level.L1
    assert hr.document["hardware"]["verified"] is False


def test_a_field_of_the_wrong_shape_is_a_gap_not_a_crash(tmp_path: Path) -> None:
    folder = tmp_path / "evidence"
    folder.mkdir()
    doc = json.loads((EVIDENCE / "eu-hr-db.json").read_text())
    doc["disk_encryption"] = {"devices": 5}
    (folder / "eu-hr-db.json").write_text(json.dumps(doc))
    run = _scan(tmp_path, evidence=folder)
    hr = _vm(run, HR_DB)
    assert hr.level is Level.L1
    assert any(g.code == "MalformedEvidence" for g in hr.gaps)


def test_junk_file_does_not_use_up_the_nonce(tmp_path: Path) -> None:
    folder = _only(tmp_path, "eu-hr-db.json")
    junk = json.loads((folder / "eu-hr-db.json").read_text())
    junk["tee"]["outblob"] = base64.b64encode(bytes(0x4A0)).decode()
    (folder / "a-junk.json").write_text(json.dumps(junk))  # read first, same nonce
    run = _scan(tmp_path, evidence=folder)
    assert _vm(run, HR_DB).level is Level.L4
