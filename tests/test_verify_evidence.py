"""verify_guest_evidence on single files: what each section contributes, and what it refuses."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from auditor.guest.format import (
    FORMAT,
    binding_report_data,
    expected_report_data,
    identity_string,
)
from auditor.verify.amd import vcek_cache_path
from auditor.verify.demo_anchor import make_demo_chain, sign_demo_report
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.evidence import EvidenceOptions, verify_guest_evidence
from auditor.verify.snp import parse_report

VECTORS = Path(__file__).parent / "data" / "vectors"
NONCE = "11" * 32


def _doc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "nonce": NONCE,
        "vm": {"provider": "aws", "id": "i-1"},
        "errors": [],
    }
    doc.update(extra)
    return doc


def _snp_tee() -> dict[str, Any]:
    report = (VECTORS / "go-sev-guest" / "attestation.bin").read_bytes()
    return {"provider": "sev_guest", "outblob": base64.b64encode(report).decode()}


def test_file_without_a_report_is_present_false_and_says_why() -> None:
    result = verify_guest_evidence(_doc(), EvidenceOptions())
    assert result.hardware == {
        "present": False,
        "authentic": False,
        "bound": False,
        "verified": False,
        "reason": "no usable hardware report in the evidence file",
    }
    assert result.check("tee") is False


def test_unknown_tsm_provider_is_not_guessed() -> None:
    result = verify_guest_evidence(_doc(tee={"provider": "cca_guest", "outblob": "AAAA"}))
    assert result.hardware["present"] is False
    assert "unknown configfs-tsm provider" in result.reason


def test_bad_base64_is_a_format_error() -> None:
    with pytest.raises(EvidenceFormatError, match="not base64"):
        verify_guest_evidence(_doc(tee={"provider": "sev_guest", "outblob": "%%%"}))


def test_certificate_from_the_cache_is_kept_as_collateral(tmp_path: Path) -> None:
    chain = make_demo_chain("Milan")
    binding = expected_report_data(_doc(), identity_string("aws", "i-1"))
    raw = sign_demo_report(chain, report_data=binding, measurement=bytes(48))
    report = parse_report(raw)
    assert report.product == "Milan"  # v3: the report names its product, so KDS can be asked
    path = vcek_cache_path("Milan", report.chip_id, report.reported_tcb, tmp_path)
    path.write_bytes(chain.vcek.public_bytes(serialization.Encoding.DER))
    tee = {"provider": "sev_guest", "outblob": base64.b64encode(raw).decode()}
    options = EvidenceOptions(cache_dir=tmp_path, offline=True, amd_trust=chain.trust())
    result = verify_guest_evidence(_doc(tee=tee), options)
    assert result.hardware["authentic"] is True and result.hardware["bound"] is True
    assert result.hardware["certificate_source"] == "cache"
    assert result.collateral == {f"amd-vcek/{path.name}": path.read_bytes()}


def test_without_any_certificate_the_report_is_not_authentic(tmp_path: Path) -> None:
    result = verify_guest_evidence(
        _doc(tee=_snp_tee()), EvidenceOptions(cache_dir=tmp_path, offline=True)
    )
    assert result.hardware["authentic"] is False
    assert result.hardware["verified"] is False


def test_event_log_and_disk_facts() -> None:
    log = (VECTORS / "go-tpm-tools" / "cos-101-amd-sev.bin").read_bytes()
    doc = _doc(
        tpm={"event_log": base64.b64encode(log).decode()},
        disk_encryption={
            "devices": [
                {"name": "dm-0", "type": "LUKS2", "holds_root": True},
                {"name": "dm-1", "type": "LUKS2", "holds_root": False},
            ]
        },
        kernel_cmdline="root=/dev/mapper/root",
        errors=[{"source": "tsm", "message": "configfs-tsm not mounted"}],
    )
    result = verify_guest_evidence(doc)
    assert result.event_log["parsed"] is True and result.event_log["secure_boot"] is True
    assert result.guest["disk_encryption"]["root_encrypted"] is True
    assert result.guest["collection_errors"] == ["tsm: configfs-tsm not mounted"]


def test_garbage_event_log_is_a_failed_check_not_a_crash() -> None:
    doc = _doc(tpm={"event_log": base64.b64encode(b"\x00" * 64).decode()})
    result = verify_guest_evidence(doc)
    assert result.check("event_log") is False
    assert result.event_log == {"present": True, "parsed": False}


def test_expected_vm_mismatch_and_binding_use_the_attached_vm() -> None:
    result = verify_guest_evidence(_doc(), expected_vm=("aws", "i-2"))
    assert result.check("identity") is False
    assert "attached to aws:i-2" in result.reason
    # the binding the report would need is computed for the VM it is attached to
    assert binding_report_data(bytes.fromhex(NONCE), identity_string("aws", "i-2")) != (
        binding_report_data(bytes.fromhex(NONCE), identity_string("aws", "i-1"))
    )
