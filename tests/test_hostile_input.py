"""Hostile input against the verdict: every way around "EXCLUDED only from verified, bound,
fresh hardware evidence" that a hostile guest, rule pack or run directory could try.

Each test sends one attack (or two combined) through a real scan of the demo fleet's AWS replay
with evidence signed for real by a test chain, and asserts the exact outcome: the level, the
party statuses and the words of the gap. `tests/hostile.py` builds the files.
"""

from __future__ import annotations

import base64
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli import app
from auditor.model import Level, Party, Status
from auditor.rules.loader import RulePackError
from tests.conftest import DEMO_FLEET
from tests.hostile import (
    BOTH_DISKS,
    DATA_VOL,
    FULL_CLAIMS,
    ROOT_ONLY,
    ROOT_VOL,
    Lab,
    gap_texts,
    quote_with_duplicated_pck_extension,
    vm_of,
)

runner = CliRunner()
FULL = FULL_CLAIMS


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab(tmp_path_factory.mktemp("lab"))


def _disks(vm: object) -> dict[str, object]:
    return {d["id"]: d.get("guest_encrypted") for d in vm.document["disks"]}  # type: ignore[attr-defined]


# ------------------------------------------------------------------ the control: L4 is reachable


def test_control_full_claims_from_one_verified_file_reach_l4(lab: Lab, tmp_path: Path) -> None:
    doc = lab.evidence(claims=FULL, receipt=True)
    hr = vm_of(lab.scan({"a.json": doc}, tmp_path))
    assert hr.level is Level.L4
    assert hr.parties[Party.KEY_CUSTODIAN] is Status.EXCLUDED
    assert _disks(hr) == {ROOT_VOL: True, DATA_VOL: True}
    assert hr.hardware_evidence is not None
    assert hr.document["guest"]["claims_used"] is True


# ------------------------------------------------------------------ 1. mixed evidence files


@pytest.mark.parametrize("order", ["fresh-first", "stale-first"])
def test_claims_of_a_stale_file_never_join_a_fresh_report(
    lab: Lab, tmp_path: Path, order: str
) -> None:
    """A fresh report without claims, and a stale file with LUKS on every disk and a receipt:
    before the fix the VM reached L4 while the gap list named the stale file."""
    fresh = lab.evidence()
    stale = lab.evidence(nonce="ab" * 32, claims=FULL, receipt=True)  # never issued
    files = {"a.json": fresh, "b.json": stale}
    if order == "stale-first":
        files = {"a.json": stale, "b.json": fresh}
    hr = vm_of(lab.scan(files, tmp_path))
    assert hr.level is Level.L3
    assert hr.parties[Party.HYPERVISOR] is Status.EXCLUDED
    assert hr.parties[Party.KEY_CUSTODIAN] is Status.CAN_ACCESS
    assert "keys.provider-held" in hr.party_status[Party.KEY_CUSTODIAN].rules
    assert "disk_encryption" not in hr.document["guest"]
    assert "key_release" not in hr.document["guest"]
    assert _disks(hr) == {ROOT_VOL: None, DATA_VOL: None}  # no coverage from a claim-less file
    stale_name = "b.json" if order == "fresh-first" else "a.json"
    assert gap_texts(hr) == [
        f"EvidenceNotUsable: ../evidence/guest/{stale_name}: genuine AMD-signed report (demo "
        "trust anchor, not AMD), bound to this VM, but its nonce is not fresh: stale: nonce "
        "unknown to this audit state"
    ]


def test_claims_of_a_file_signed_by_an_untrusted_chain_are_ignored(
    lab: Lab, tmp_path: Path
) -> None:
    fresh = lab.evidence()
    rogue = lab.evidence(claims=FULL, receipt=True, chain=lab.rogue)
    hr = vm_of(lab.scan({"a.json": fresh, "b.json": rogue}, tmp_path))
    assert hr.level is Level.L3
    assert hr.parties[Party.KEY_CUSTODIAN] is Status.CAN_ACCESS
    assert len(gap_texts(hr)) == 1
    assert gap_texts(hr)[0].startswith(
        "EvidenceNotUsable: ../evidence/guest/b.json: hardware report does not verify"
    )


def test_only_unusable_files_show_the_best_but_use_no_claim(lab: Lab, tmp_path: Path) -> None:
    stale = lab.evidence(nonce="cd" * 32, claims=FULL, receipt=True)
    hr = vm_of(lab.scan({"a.json": stale}, tmp_path))
    assert hr.level is Level.L1
    assert hr.hardware_evidence is None
    assert hr.document["hardware"]["authentic"] is True
    assert hr.document["hardware"]["verified"] is False
    assert hr.document["guest"] == {"evidence_file": True, "claims_used": False}
    assert Status.EXCLUDED not in hr.parties.values()


# ------------------------------------------------------------------ claims outside REPORT_DATA


def test_claims_added_after_the_report_unbind_it(lab: Lab, tmp_path: Path) -> None:
    doc = lab.evidence()
    doc["disk_encryption"] = BOTH_DISKS  # added once the report was made
    hr = vm_of(lab.scan({"a.json": doc}, tmp_path))
    assert hr.level is Level.L1
    assert hr.document["hardware"]["bound"] is False
    assert gap_texts(hr) == [
        "EvidenceNotUsable: ../evidence/guest/a.json: genuine AMD-signed report (demo trust "
        "anchor, not AMD), but the guest's claims were changed after it was made (REPORT_DATA "
        "covers claims with another SHA-256)"
    ]


def test_version_1_file_verifies_its_report_but_none_of_its_claims(
    lab: Lab, tmp_path: Path
) -> None:
    doc = lab.evidence(claims=FULL, receipt=True, version=1)
    hr = vm_of(lab.scan({"a.json": doc}, tmp_path))
    assert hr.level is Level.L3
    assert hr.parties[Party.HYPERVISOR] is Status.EXCLUDED
    assert hr.parties[Party.KEY_CUSTODIAN] is Status.CAN_ACCESS
    assert hr.document["hardware"]["claims_bound"] is False
    assert hr.document["guest"] == {
        "evidence_file": True,
        "claims_used": False,
        "reason": "evidence format version 1: the report does not cover the guest's claims",
    }
    assert _disks(hr) == {ROOT_VOL: None, DATA_VOL: None}


# ------------------------------------------------------------------ 3. every disk keeps its veto


def test_encrypted_root_does_not_cover_a_kms_data_disk(lab: Lab, tmp_path: Path) -> None:
    doc = lab.evidence(claims={"disk_encryption": ROOT_ONLY}, receipt=True)
    hr = vm_of(lab.scan({"a.json": doc}, tmp_path))
    assert _disks(hr) == {ROOT_VOL: True, DATA_VOL: False}
    assert hr.level is Level.L3
    assert hr.parties[Party.KEY_CUSTODIAN] is Status.CAN_ACCESS
    assert hr.party_status[Party.KEY_CUSTODIAN].rules == ["keys.provider-held"]


def test_plaintext_data_disk_blocks_l4(lab: Lab, tmp_path: Path) -> None:
    """The issue's case: verified report, LUKS root, broker receipt, unencrypted second volume."""
    replay = tmp_path / "replay"
    shutil.copytree(DEMO_FLEET / "aws" / "111122223333", replay / "aws" / "111122223333")
    shutil.copy(DEMO_FLEET / "replay.json", replay / "replay.json")
    volumes = replay / "aws" / "111122223333" / "eu-west-1" / "DescribeVolumes.json"
    data = json.loads(volumes.read_text())
    for vol in data["Volumes"]:
        if vol["VolumeId"] == DATA_VOL:
            vol["Encrypted"] = False
            vol.pop("KmsKeyId", None)
    volumes.write_text(json.dumps(data))
    doc = lab.evidence(claims={"disk_encryption": ROOT_ONLY}, receipt=True)
    hr = vm_of(lab.scan({"a.json": doc}, tmp_path, replay=replay))
    assert hr.level is Level.L3
    assert hr.party_status[Party.KEY_CUSTODIAN].rules == ["keys.unencrypted-disk"]


# ------------------------------------------------------------------ nonces


def test_second_file_with_the_same_nonce_is_a_reuse(lab: Lab, tmp_path: Path) -> None:
    first = lab.evidence(claims=FULL, receipt=True)
    second = dict(first, collected_at="2026-11-21T10:00:00Z")  # same nonce, other bytes
    hr = vm_of(lab.scan({"a.json": first, "b.json": second}, tmp_path))
    assert hr.level is Level.L4  # the first counts
    (gap,) = gap_texts(hr)
    assert gap.startswith(
        "EvidenceNotUsable: ../evidence/guest/b.json: genuine AMD-signed report (demo trust "
        "anchor, not AMD), bound to this VM, but its nonce is not fresh: reused: nonce already "
        "used by evidence sha256 "
    )


def test_nonce_issued_after_the_judging_time_is_refused(lab: Lab, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    nonce = lab.issue(at=datetime(2026, 11, 23, tzinfo=UTC))  # the replay is judged on 11-22
    hr = vm_of(lab.scan({"a.json": lab.evidence(nonce=nonce)}, tmp_path))
    assert hr.level is Level.L1
    (gap,) = gap_texts(hr)
    assert gap.endswith(
        "its nonce is not fresh: not yet issued: nonce issued 2026-11-23T00:00:00Z, after the "
        "time the evidence is judged at (2026-11-22T00:00:00Z)"
    )


def test_a_nonce_that_cannot_be_marked_used_does_not_count(lab: Lab, tmp_path: Path) -> None:
    """Marking the nonce used fails (its lock cannot be taken): it stays replayable, so the
    file does not count and the VM says why."""
    state = lab.fresh_state(tmp_path / "broken-state")
    doc = lab.evidence(claims=FULL, receipt=True)
    shutil.copy(lab.state / "nonces.json", state / "nonces.json")
    (state / "nonces.json.lock").mkdir()  # the lock is a directory: flock cannot open it
    hr = vm_of(lab.scan({"a.json": doc}, tmp_path, nonce_state=state))
    assert hr.level is Level.L1
    assert hr.hardware_evidence is None
    assert any(
        g.startswith("NonceStateError: ../evidence/guest/a.json: the nonce could not be marked")
        and g.endswith("so it could be replayed")
        for g in gap_texts(hr)
    )


# ------------------------------------------------------------------ forged chains


def test_a_self_made_chain_shipped_inside_the_evidence_is_not_trusted(
    lab: Lab, tmp_path: Path
) -> None:
    """The file carries its own ARK, ASK and VCEK (rogue), all self-consistent."""
    doc = lab.evidence(claims=FULL, receipt=True, chain=lab.rogue)
    hr = vm_of(lab.scan({"a.json": doc}, tmp_path))
    assert hr.level is Level.L1
    assert hr.document["hardware"]["authentic"] is False
    (gap,) = gap_texts(hr)
    assert gap.startswith("EvidenceNotUsable: ../evidence/guest/a.json: hardware report does not")


def test_report_bound_to_another_vm_is_not_used_for_this_one(lab: Lab, tmp_path: Path) -> None:
    doc = lab.evidence(claims=FULL, receipt=True, bound_to="i-045a5d8d3c4039e06")
    hr = vm_of(lab.scan({"a.json": doc}, tmp_path))
    assert hr.level is Level.L1
    assert hr.document["hardware"]["bound"] is False


# ------------------------------------------------------------------ 5. files that crash parsers


def _duplicate_extension(der: bytes) -> bytes:
    """The VCEK with its teeSPL extension renamed to blSPL: two extensions, one OID."""
    tee = bytes.fromhex("060a2b060104019c78010302")  # 1.3.6.1.4.1.3704.1.3.2
    bl = bytes.fromhex("060a2b060104019c78010301")  # 1.3.6.1.4.1.3704.1.3.1
    assert der.count(tee) == 1
    return der.replace(tee, bl)


def test_a_certificate_with_a_duplicated_extension_is_a_gap_not_a_crash(
    lab: Lab, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    from auditor.verify.amd import build_cert_table

    doc = lab.evidence(claims=FULL, receipt=True)
    vcek = lab.trusted.vcek.public_bytes(serialization.Encoding.DER)
    doc["tee"]["auxblob"] = base64.b64encode(
        build_cert_table({"vcek": _duplicate_extension(vcek)})
    ).decode()
    run = lab.scan({"a.json": doc}, tmp_path)
    hr = vm_of(run)
    assert hr.level is Level.L1
    assert Status.EXCLUDED not in hr.parties.values()
    (gap,) = gap_texts(hr)
    assert "Duplicate" in gap and "1.3.6.1.4.1.3704.1.3.1" in gap
    assert len(run.vms) == 8  # the rest of the AWS fleet is there


def test_verify_snp_on_a_duplicated_extension_exits_2(lab: Lab, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    doc = lab.evidence()
    report = tmp_path / "report.bin"
    report.write_bytes(base64.b64decode(doc["tee"]["outblob"]))
    cert = tmp_path / "vcek.der"
    cert.write_bytes(
        _duplicate_extension(lab.trusted.vcek.public_bytes(serialization.Encoding.DER))
    )
    result = runner.invoke(app, ["verify", "snp", str(report), "--cert", str(cert)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Duplicate" in lines[0]
    assert "Traceback" not in result.output


def test_verify_tdx_on_a_pck_with_a_duplicated_extension_exits_2(tmp_path: Path) -> None:
    """The real GCE quote with its PCK's keyUsage extension renamed to subjectKeyIdentifier."""
    path = tmp_path / "quote.dat"
    path.write_bytes(quote_with_duplicated_pck_extension())
    result = runner.invoke(app, ["verify", "tdx", str(path), "--at", "none"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Duplicate" in lines[0]
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ 2. hostile rule packs


def _pack(tmp_path: Path, body: str, name: str = "hostile.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


FOUR_LINES = """
pack: lift-everything
disable: [attestation.none]
rules:
  - {id: lift.hypervisor, title: API says SNP, party: hypervisor, effect: EXCLUDED,
     when: 'vm.technology in ["SEV_SNP", "TDX"]', rationale: we believe the API}
  - {id: lift.attestation, title: API says SNP, party: attestation_service, effect: EXCLUDED,
     when: 'vm.technology in ["SEV_SNP", "TDX"]', rationale: we believe the API}
"""


def test_a_pack_that_excludes_from_api_flags_is_refused(lab: Lab, tmp_path: Path) -> None:
    pack = _pack(tmp_path, FOUR_LINES)
    with pytest.raises(RulePackError) as err:
        lab.scan({}, tmp_path, rules=[pack])
    assert err.value.path == str(pack) and err.value.rule_id == "lift.hypervisor"
    assert "condition must have `vm.hardware.verified == true`" in str(err.value)
    result = runner.invoke(app, ["scan", "--replay", str(DEMO_FLEET), "--rules", str(pack)])
    assert result.exit_code == 2
    assert f"{pack}: rule 'lift.hypervisor': effect EXCLUDED" in result.output


def test_disabling_a_veto_is_a_visible_override_and_never_excludes(
    lab: Lab, tmp_path: Path
) -> None:
    """The owner disables the provider-held-key veto and loosens the broker rule to an
    encrypted root: the override shows on the VM and in the run, and key custody is only
    CLAIMED_EXCLUDED, so the VM stays L3."""
    pack = _pack(
        tmp_path,
        """
        pack: trust-our-kms
        disable: [keys.provider-held]
        rules:
          - id: keys.broker-release-verified
            title: Broker released the key; the root is encrypted
            party: key_custodian
            effect: EXCLUDED
            when: >-
              has(vm.hardware) && vm.hardware.verified == true &&
              vm.guest.disk_encryption.root_encrypted == true &&
              vm.guest.key_release.verified == true
            rationale: our policy
        """,
    )
    doc = lab.evidence(claims={"disk_encryption": ROOT_ONLY}, receipt=True)
    run = lab.scan({"a.json": doc}, tmp_path, rules=[pack])
    hr = vm_of(run)
    keys = hr.party_status[Party.KEY_CUSTODIAN]
    assert keys.status is Status.CLAIMED_EXCLUDED
    assert hr.level is Level.L3
    assert keys.override == (
        "keys.provider-held disabled by owner pack trust-our-kms (sha256 "
        f"{run.rule_packs[-1].sha256[:12]}) (it applies here)"
    )
    assert "Owner override: keys.provider-held disabled" in keys.reason
    assert hr.overrides == ["keys.provider-held"]
    (override,) = run.owner_overrides
    assert (override.rule_id, override.action, override.pack) == (
        "keys.provider-held",
        "disabled",
        "trust-our-kms",
    )
    assert override.vms == sum(1 for vm in run.vms if "keys.provider-held" in vm.overrides)
    assert override.vms >= 1
    # shown in every human format, next to the verdict and in the summary
    from io import StringIO

    from rich.console import Console

    from auditor.reports.html import render_html
    from auditor.reports.markdown import render_markdown
    from auditor.reports.table import print_table

    html = render_html(run)
    assert 'id="owner-overrides"' in html and "keys.provider-held" in html
    assert '<span class="override" title="keys.provider-held disabled by owner pack' in html
    md = render_markdown(run)
    assert "## Owner overrides" in md and "`keys.provider-held` (disk-key custodian) disabled" in md
    out = StringIO()
    print_table(run, Console(file=out, width=200))
    assert "Owner override: built-in veto keys.provider-held (key_custodian) disabled" in (
        " ".join(out.getvalue().split())
    )


def test_replacing_a_veto_with_a_rule_that_never_matches_is_an_override(
    lab: Lab, tmp_path: Path
) -> None:
    pack = _pack(
        tmp_path,
        """
        pack: quiet
        rules:
          - {id: keys.provider-held, title: never, party: key_custodian, effect: CAN_ACCESS,
             when: "false", rationale: switched off}
        """,
    )
    doc = lab.evidence(claims=FULL, receipt=True)
    run = lab.scan({"a.json": doc}, tmp_path, rules=[pack])
    (override,) = run.owner_overrides
    assert (override.rule_id, override.action) == ("keys.provider-held", "replaced")
    # eu-payments-api has no evidence: its key custody is CAN_ACCESS by default, unchanged
    api = vm_of(run, "i-045a5d8d3c4039e06")
    assert api.parties[Party.KEY_CUSTODIAN] is Status.CAN_ACCESS and api.overrides == []
    # eu-hr-db covers every disk in the guest, so the veto does not apply: L4 stands
    assert vm_of(run).level is Level.L4 and vm_of(run).overrides == []


def test_a_forged_verified_flag_in_the_document_excludes_nothing() -> None:
    """A document that says `hardware.verified: true` (as a tampered replay or provider could
    make it) without the verify stage's proof: EXCLUDED rules are not even run."""
    from auditor.engine import Engine
    from auditor.model import VM, Technology
    from auditor.rules.loader import load_packs

    doc = {
        "technology": "SEV_SNP",
        "disks": [{"id": "vol-1", "encrypted": True, "custody": "none", "guest_encrypted": True}],
        "hardware": {
            "present": True,
            "authentic": True,
            "bound": True,
            "fresh": True,
            "verified": True,
            "debug": False,
            "measurement_matched": True,
            "tcb_current": True,
        },
        "guest": {
            "disk_encryption": {"root_encrypted": True},
            "key_release": {"verified": True, "broker": "x"},
        },
        "attestation": {"provider_verdict": "none"},
    }
    vm = VM(
        provider="aws",
        account="1",
        region="eu-west-1",
        id="i-1",
        technology=Technology.SEV_SNP,
        document=doc,
        hardware_evidence=None,
    )
    result = Engine(load_packs()).evaluate(vm)
    assert Status.EXCLUDED not in result.parties.values()
    assert result.level.rank <= 2
    vm.hardware_evidence = "ee" * 32  # a proof that the document does not back
    assert Status.EXCLUDED not in Engine(load_packs()).evaluate(vm).parties.values()


# ------------------------------------------------------------------ 6. verify exit codes


def test_verify_evidence_without_state_does_not_pass(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_text(json.dumps(lab.evidence()))
    args = ["verify", "evidence", str(path), "--demo-trust-anchor", str(lab.anchor)]
    result = runner.invoke(app, [*args, "--at", "2026-11-22T00:00:00Z", "--format", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["authentic"] is True and doc["fresh"] is None and doc["passes"] is False
    assert "fresh: not checked (give --state)" in doc["verdict"]
    stated = runner.invoke(
        app,
        [*args, "--state", str(lab.state), "--at", "2026-11-22T00:00:00Z", "--format", "json"],
    )
    assert stated.exit_code == 0, stated.stdout
    assert json.loads(stated.stdout)["passes"] is True


def test_verify_evidence_with_debug_on_does_not_pass(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_text(json.dumps(lab.evidence(debug=True)))
    result = runner.invoke(
        app,
        [
            "verify",
            "evidence",
            str(path),
            "--demo-trust-anchor",
            str(lab.anchor),
            "--state",
            str(lab.state),
            "--at",
            "2026-11-22T00:00:00Z",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["valid"] is True and doc["policy_ok"] is False
    assert "policy: no (snp.policy_debug)" in doc["verdict"]
