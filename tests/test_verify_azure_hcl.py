"""Azure CVM HCL reports: the SNP/TDX report's REPORT_DATA binds the vTPM's runtime claims.

The real Azure vectors are AGPL-era Constellation and flashbots data: read from ../shared when
present, never copied into the project.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.verify.anchors import AZURE_VTPM_PINS, azure_vtpm_store, fingerprint
from auditor.verify.azure_hcl import (
    HW_REPORT_AREA,
    hcl_ak_public,
    jwk_rsa_public_key,
    parse_hcl_report,
    verify_hcl_binding,
)
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.x509chain import verify_chain
from tests.shared_vectors import shared_vectors


def _shared(name: str) -> bytes:
    [path] = shared_vectors(name)
    return path.read_bytes()


def _hcl(hw_report: bytes, report_type: int, runtime: bytes, hash_type: int = 1) -> bytes:
    header = struct.pack("<5I", 0x414C4348, 2, 0, 2, 0) + bytes(12)
    request = struct.pack("<5I", 20 + len(runtime), 1, report_type, hash_type, len(runtime))
    return header + hw_report.ljust(HW_REPORT_AREA, b"\x00") + request + runtime


def test_constellation_azure_snp_report_binds_the_runtime_data() -> None:
    attestation = _shared("constellation/azure_attestation.bin")
    runtime = _shared("constellation/azure_runtimedata.bin")
    report = attestation[:0x4A0]
    check = verify_hcl_binding(report[0x50:0x90], runtime)
    assert check.name == "hcl_binding" and check.ok, check.reason
    # The same parts, framed as the vTPM NV index holds them, parse back to the same binding.
    parsed = parse_hcl_report(_hcl(report, 2, runtime))
    assert parsed.report_type == "snp"
    assert parsed.hw_report == report
    assert parsed.report_data == report[0x50:0x90]
    assert verify_hcl_binding(parsed.report_data, parsed.runtime_data).ok
    ak = hcl_ak_public(runtime)
    assert ak is not None and ak["kid"] == "HCLAkPub"
    assert jwk_rsa_public_key(ak).key_size == 2048


def test_constellation_trailer_is_the_igvm_request_header() -> None:
    attestation = _shared("constellation/azure_attestation.bin")
    runtime = _shared("constellation/azure_runtimedata.bin")
    size, _version, report_type, hash_type, var_size = struct.unpack_from("<5I", attestation, 0x4A0)
    assert (report_type, hash_type, var_size) == (2, 1, len(runtime))
    assert size == 20 + len(runtime)


def test_mutated_runtime_data_fails_the_binding() -> None:
    attestation = _shared("constellation/azure_attestation.bin")
    runtime = bytearray(_shared("constellation/azure_runtimedata.bin"))
    runtime[runtime.index(b"HCLAkPub") + 20] ^= 0x01
    check = verify_hcl_binding(attestation[0x50:0x90], bytes(runtime))
    assert not check.ok
    assert "SHA-256" in check.reason


def test_flashbots_azure_tdx_hcl_report_parses_and_binds() -> None:
    data = _shared("flashbots-cvm-reverse-proxy/azure_tdx_hclreport.bin")
    report = parse_hcl_report(data)
    assert report.report_type == "tdx"
    assert report.hash_type == "sha256"
    assert len(report.hw_report) == 1024
    assert report.report_data[:32] == hashlib.sha256(report.runtime_data).digest()
    assert verify_hcl_binding(report.report_data, report.runtime_data).ok
    assert report.runtime_claims()["keys"][0]["kid"] == "HCLAkPub"
    ak = hcl_ak_public(report.runtime_data)
    assert ak is not None
    assert isinstance(jwk_rsa_public_key(ak), rsa.RSAPublicKey)


def test_synthetic_tdx_report_and_binding() -> None:
    runtime = json.dumps({"keys": [{"kid": "HCLEkPub", "kty": "RSA"}]}).encode()
    td_report = bytearray(1024)
    td_report[128:160] = hashlib.sha256(runtime).digest()
    parsed = parse_hcl_report(_hcl(bytes(td_report), 4, runtime))
    assert parsed.report_type == "tdx"
    assert verify_hcl_binding(parsed.report_data, parsed.runtime_data).ok
    assert hcl_ak_public(parsed.runtime_data) is None  # only an EK key: no AK named
    assert not verify_hcl_binding(parsed.report_data, runtime + b" ").ok


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda d: d[:100], "bytes"),
        (lambda d: b"XXXX" + d[4:], "HCLA"),
        (lambda d: d[: 0x4C0 + 8] + struct.pack("<I", 3) + d[0x4C0 + 12 :], "report type"),
        (lambda d: d[: 0x4C0 + 12] + struct.pack("<I", 9) + d[0x4C0 + 16 :], "hash type"),
        (lambda d: d[:-1], "runs past"),
    ],
)
def test_malformed_hcl_reports_raise(mutate: object, why: str) -> None:
    good = _hcl(bytes(1184), 2, b'{"keys": []}')
    parse_hcl_report(good)
    with pytest.raises(EvidenceFormatError, match=why):
        parse_hcl_report(mutate(good))  # type: ignore[operator]


def test_binding_needs_report_data_and_runtime_data() -> None:
    assert not verify_hcl_binding(b"\x00" * 16, b"x").ok
    assert not verify_hcl_binding(bytes(64), b"").ok


def test_runtime_data_that_is_not_json_raises() -> None:
    with pytest.raises(EvidenceFormatError):
        hcl_ak_public(b"\xff\xfe not json")
    with pytest.raises(EvidenceFormatError):
        hcl_ak_public(b"[1, 2]")
    with pytest.raises(EvidenceFormatError):
        jwk_rsa_public_key({"kty": "EC"})


def test_azure_vtpm_anchors_are_pinned() -> None:
    store = azure_vtpm_store()
    assert {fingerprint(c) for c in store.roots + store.intermediates} == {
        pin for pin, _ in AZURE_VTPM_PINS.values()
    }
    names = {c.subject.rfc4514_string() for c in store.roots}
    assert any("Azure Virtual TPM Root Certificate Authority 2023" in n for n in names)
    # The Global Virtual TPM CA - 03 intermediate chains to the 2023 root.
    inter = store.intermediates[0]
    result = verify_chain(inter, store, inter.not_valid_before_utc)
    assert result.ok, result.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1400), st.integers(0, 10))
def test_hcl_parser_raises_only_format_errors(tail: bytes, report_type: int) -> None:
    for data in (tail, _hcl(b"", report_type, tail)[: len(tail) + 1300]):
        with contextlib.suppress(EvidenceFormatError):
            report = parse_hcl_report(data)
            hcl_ak_public(report.runtime_data)
