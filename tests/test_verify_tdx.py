"""TDX quotes: real go-tdx-guest vectors, Intel collateral, CCEL replay, and mutations of each."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.verify import intel
from auditor.verify.anchors import AnchorError, load_pinned
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.eventlog import ccel_rtmrs, parse_ccel_table, parse_event_log
from auditor.verify.tdx import (
    TdxCollateral,
    TdxOptions,
    TdxQuote,
    load_collateral_dir,
    parse_quote,
    td_debug_check,
    verify_tdx,
)

TDX = Path(__file__).parent / "data" / "vectors" / "go-tdx-guest"
SPR = (TDX / "tdx_prod_quote_SPR_E4.dat").read_bytes()
GCE = (TDX / "cos-113-tdx-quote.dat").read_bytes()
V5 = (TDX / "quote_v5_sample.dat").read_bytes()
CCEL = (TDX / "ccel_data.dat").read_bytes()
NONCE = (TDX / "nonce.dat").read_bytes()
AT_SPR = datetime(2023, 7, 1, tzinfo=UTC)  # inside the sample collateral's validity window
AUTH = ("pck_chain", "qe_report_signature", "qe_binding", "quote_signature")
BODY = 0x30
QE_REPORT = 0x27C + 64 + 64 + 6  # after signature, attestation key, certification data header


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def _reasons(result: object) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.reason) for c in result.checks}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def collateral() -> TdxCollateral:
    return load_collateral_dir(TDX)


# --- real vectors ------------------------------------------------------------------------------


def test_spr_quote_signatures_and_chain_verify() -> None:
    result = verify_tdx(SPR, TdxOptions(at=AT_SPR))
    for name in (*AUTH, "cert_validity", "td_debug"):
        assert result.check(name) is True, _reasons(result)[name]
    assert result.authentic
    assert result.ok
    facts = result.facts
    assert facts["version"] == 4
    assert facts["tee_type"] == 0x81
    assert facts["fmspc"] == "50806f000000"
    assert facts["pce_id"] == "0000"
    assert facts["trust_anchor"] == "Intel SGX Root CA"
    assert facts["root_sha256"] == intel.INTEL_ROOT_SHA256
    assert facts["td_attributes"]["debug"] is False
    assert facts["pck"]["issuer"].endswith("CN=Intel SGX PCK Platform CA")
    assert len(facts["rtmr"]) == 4 and all(len(r) == 96 for r in facts["rtmr"])
    assert facts["mrtd"] == SPR[BODY + 136 : BODY + 184].hex()


def test_spr_collateral_signatures_pass_and_tcb_has_no_matching_level(
    collateral: TdxCollateral,
) -> None:
    result = verify_tdx(SPR, TdxOptions(at=AT_SPR, collateral=collateral))
    reasons = _reasons(result)
    assert reasons["tcb_info_signature"][0], reasons["tcb_info_signature"]
    assert reasons["qe_identity_signature"][0], reasons["qe_identity_signature"]
    assert reasons["pck_crl"][0], reasons["pck_crl"]
    ok, reason = reasons["tcb_status"]
    assert not ok
    assert "no matching TCB level" in reason
    assert result.facts["tcb_status"] is None
    assert result.facts["qe_tcb_status"] == "UpToDate"
    assert result.authentic  # genuine hardware, but not a patched platform
    assert not result.ok


def test_expired_collateral_fails_tcb_status(collateral: TdxCollateral) -> None:
    result = verify_tdx(SPR, TdxOptions(at=datetime(2024, 6, 1, tzinfo=UTC), collateral=collateral))
    assert result.check("pck_crl") is False  # the sample PCK CRL expired 2023-07-08
    assert "expired" in _reasons(result)["pck_crl"][1]


def test_gce_quote_verifies_and_binds_the_nonce() -> None:
    result = verify_tdx(GCE, TdxOptions(expected_report_data=NONCE, ccel_data=CCEL))
    reasons = _reasons(result)
    for name in (*AUTH, "td_debug", "report_data", "rtmr_replay"):
        assert reasons[name][0], reasons[name]
    assert result.ok
    assert result.facts["fmspc"] == "00806f050000"
    assert result.facts["td_attributes"]["sept_ve_disable"] is True
    assert result.facts["trailing_bytes"] > 0  # GCE pads to 8000 bytes
    assert result.facts["rtmr"] == [ccel_rtmrs(CCEL)[i].hex() for i in range(4)]
    assert "cert_validity" not in reasons  # no audit time given: dates not judged


def test_gce_quote_with_another_nonce_is_not_bound() -> None:
    result = verify_tdx(GCE, TdxOptions(expected_report_data=b"\x01" * 64))
    ok, reason = _reasons(result)["report_data"]
    assert not ok
    assert "not bound" in reason
    assert result.authentic


def test_ccel_table_of_the_gce_vector() -> None:
    table = parse_ccel_table((TDX / "ccel_table.dat").read_bytes())
    assert table["cc_type"] == 2
    assert table["laml"] == len(CCEL)


def test_v5_quote_with_tdx15_body_parses_and_verifies() -> None:
    quote = parse_quote(V5)
    assert quote.version == 5
    assert quote.body_type == 3
    assert quote.mrservicetd is not None and len(quote.mrservicetd) == 48
    result = verify_tdx(quote)
    for name in AUTH:
        assert result.check(name) is True, _reasons(result)[name]


def test_reference_mrtd() -> None:
    mrtd = parse_quote(GCE).mrtd.hex()
    good = verify_tdx(GCE, TdxOptions(reference_mrtd=[("other", "00" * 48), ("gce", mrtd)]))
    assert good.check("mrtd") is True
    assert "gce" in _reasons(good)["mrtd"][1]
    bad = verify_tdx(GCE, TdxOptions(reference_mrtd=[("other", "00" * 48)]))
    assert bad.check("mrtd") is False


# --- mutations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset",
    [
        28,  # header user data
        BODY + 16,  # MRSEAM
        BODY + 136,  # MRTD
        BODY + 328 + 48,  # RTMR1
        BODY + 520,  # REPORTDATA
    ],
)
def test_flipped_header_or_body_byte_fails_quote_signature(offset: int) -> None:
    result = verify_tdx(_flip(SPR, offset))
    reasons = _reasons(result)
    assert not reasons["quote_signature"][0]
    assert "does not verify" in reasons["quote_signature"][1]
    for name in ("pck_chain", "qe_report_signature", "qe_binding"):
        assert reasons[name][0]
    assert not result.authentic


def test_flipped_qe_report_byte_fails_qe_report_signature() -> None:
    result = verify_tdx(_flip(SPR, QE_REPORT + 258))  # QE ISVSVN
    assert result.check("qe_report_signature") is False
    assert result.check("quote_signature") is True
    assert not result.authentic


def test_flipped_qe_report_data_fails_binding_and_signature() -> None:
    result = verify_tdx(_flip(SPR, QE_REPORT + 320))
    assert result.check("qe_binding") is False
    assert result.check("qe_report_signature") is False


def test_swapped_attestation_key_fails_binding() -> None:
    quote = parse_quote(SPR)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    raw_key = other.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )[1:]
    result = verify_tdx(dataclasses.replace(quote, attestation_key=raw_key))
    assert result.check("qe_binding") is False
    assert result.check("quote_signature") is False


def test_debug_bit_set_fails_td_debug_and_signature() -> None:
    mutated = _flip(SPR, BODY + 120)  # TDATTRIBUTES bit 0
    result = verify_tdx(mutated)
    reasons = _reasons(result)
    assert reasons["td_debug"] == (False, "DEBUG=1: the host can read the TD's memory")
    assert not reasons["quote_signature"][0]
    assert result.facts["td_attributes"]["debug"] is True


def test_td_debug_policy_on_parsed_quote() -> None:
    quote = parse_quote(GCE)
    assert td_debug_check(quote).ok
    debug = dataclasses.replace(quote, td_attributes=quote.td_attributes | 1)
    check = td_debug_check(debug)
    assert not check.ok
    assert check.reason == "DEBUG=1: the host can read the TD's memory"
    perfmon_only = dataclasses.replace(quote, td_attributes=1 << 63)
    assert td_debug_check(perfmon_only).ok


def _mutate_ccel_event(mr_index: int) -> bytes:
    log = parse_event_log(CCEL)
    event = next(e for e in log.events if e.index == mr_index and e.event_type != 3)
    offset = CCEL.find(event.digests["sha384"])
    assert offset > 0
    return _flip(CCEL, offset)


@pytest.mark.parametrize(("mr_index", "rtmr"), [(1, "RTMR0"), (2, "RTMR1"), (3, "RTMR2")])
def test_mutated_ccel_event_fails_rtmr_replay_naming_the_register(mr_index: int, rtmr: str) -> None:
    result = verify_tdx(GCE, TdxOptions(ccel_data=_mutate_ccel_event(mr_index)))
    ok, reason = _reasons(result)["rtmr_replay"]
    assert not ok
    assert rtmr in reason
    assert result.authentic


def test_unusable_ccel_fails_replay_with_reason() -> None:
    result = verify_tdx(GCE, TdxOptions(ccel_data=b"\x01\x02"))
    ok, reason = _reasons(result)["rtmr_replay"]
    assert not ok
    assert "CCEL event log unusable" in reason


@pytest.mark.parametrize("cut", [0, 10, 47, 100, 0x278, 0x27C + 10, QE_REPORT + 100, 4000, 4934])
def test_truncated_quote_is_a_format_error(cut: int) -> None:
    with pytest.raises(EvidenceFormatError, match="truncated"):
        parse_quote(SPR[:cut])
    with pytest.raises(EvidenceFormatError):
        verify_tdx(SPR[:cut])


def test_unknown_version_and_sgx_quote_are_format_errors() -> None:
    with pytest.raises(EvidenceFormatError, match="version 3"):
        parse_quote(struct.pack("<H", 3) + SPR[2:])
    with pytest.raises(EvidenceFormatError, match="SGX"):
        parse_quote(SPR[:4] + struct.pack("<I", 0) + SPR[8:])
    v5_sgx_body = bytearray(V5)
    v5_sgx_body[48:50] = struct.pack("<H", 1)
    with pytest.raises(EvidenceFormatError, match="body type 1"):
        parse_quote(bytes(v5_sgx_body))


def test_expired_certificate_fails_cert_validity() -> None:
    result = verify_tdx(SPR, TdxOptions(at=datetime(2100, 1, 1, tzinfo=UTC)))
    ok, reason = _reasons(result)["cert_validity"]
    assert not ok
    assert "not valid at 2100" in reason
    assert not result.authentic


def _self_signed(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def test_chain_to_a_look_alike_root_fails() -> None:
    quote = parse_quote(SPR)
    chain = intel.load_pem_chain(quote.pck_chain_pem, "test")
    fake_root, _ = _self_signed("Intel SGX Root CA")
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (*chain[:2], fake_root))
    result = verify_tdx(dataclasses.replace(quote, pck_chain_pem=pem))
    ok, reason = _reasons(result)["pck_chain"]
    assert not ok
    assert "not the pinned Intel SGX Root CA" in reason
    assert not result.authentic


def test_chain_missing_the_platform_ca_fails() -> None:
    quote = parse_quote(SPR)
    chain = intel.load_pem_chain(quote.pck_chain_pem, "test")
    pem = chain[0].public_bytes(serialization.Encoding.PEM)
    result = verify_tdx(dataclasses.replace(quote, pck_chain_pem=pem))
    ok, reason = _reasons(result)["pck_chain"]
    assert not ok
    assert "is not signed by" in reason


def test_garbage_pck_chain_is_a_failed_check() -> None:
    quote = dataclasses.replace(parse_quote(SPR), pck_chain_pem=b"not a certificate")
    result = verify_tdx(quote)
    assert result.check("pck_chain") is False
    assert result.check("qe_report_signature") is False
    assert not result.authentic


# --- collateral --------------------------------------------------------------------------------


def test_tcb_info_signature_is_over_the_exact_bytes(collateral: TdxCollateral) -> None:
    raw = collateral.tcb_info
    signed = intel.parse_signed_collateral(raw, "tcbInfo", "TCB Info")
    assert signed.signed_bytes in raw
    assert signed.signed_bytes.startswith(b'{"id":"TDX"')
    # Same JSON meaning, different bytes (a space after the first colon): the signature fails.
    spaced = raw.replace(b'"tcbInfo":{"id":"TDX"', b'"tcbInfo":{"id": "TDX"', 1)
    assert spaced != raw
    tampered = dataclasses.replace(collateral, tcb_info=spaced)
    result = verify_tdx(SPR, TdxOptions(at=AT_SPR, collateral=tampered))
    assert result.check("tcb_info_signature") is False
    ok, reason = _reasons(result)["tcb_status"]
    assert not ok and "unknown" in reason


def test_tampered_qe_identity_fails_its_signature(collateral: TdxCollateral) -> None:
    tampered = dataclasses.replace(
        collateral, qe_identity=collateral.qe_identity.replace(b'"isvsvn":4', b'"isvsvn":1')
    )
    result = verify_tdx(SPR, TdxOptions(at=AT_SPR, collateral=tampered))
    assert result.check("qe_identity_signature") is False
    assert result.check("tcb_info_signature") is True


def test_collateral_signed_under_a_foreign_root_fails(collateral: TdxCollateral) -> None:
    fake_root, _ = _self_signed("Intel SGX Root CA")
    tampered = dataclasses.replace(collateral, tcb_info_chain=[fake_root])
    result = verify_tdx(SPR, TdxOptions(at=AT_SPR, collateral=tampered))
    assert result.check("tcb_info_signature") is False
    assert "pinned" in _reasons(result)["tcb_info_signature"][1]


def test_pck_crl_from_the_wrong_issuer_fails(collateral: TdxCollateral) -> None:
    root_crl_as_pck = dataclasses.replace(collateral, pck_crl=collateral.root_crl)
    result = verify_tdx(SPR, TdxOptions(at=AT_SPR, collateral=root_crl_as_pck))
    ok, reason = _reasons(result)["pck_crl"]
    assert not ok
    assert "not 'C=US" in reason or "is issued by" in reason


def test_crl_listing_the_certificate_is_reported_as_revoked() -> None:
    ca, ca_key = _self_signed("Test PCK CA")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(4242)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    revoked = x509.RevokedCertificateBuilder().serial_number(4242).revocation_date(now).build()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - timedelta(hours=1))
        .next_update(now + timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(ca_key, hashes.SHA256())
    )
    problem = intel.crl_problem(crl, ca, leaf, "PCK CRL", now)
    assert problem is not None and "revoked" in problem
    clean = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - timedelta(hours=1))
        .next_update(now + timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    assert intel.crl_problem(clean, ca, leaf, "PCK CRL", now) is None
    other, _ = _self_signed("Test PCK CA")
    assert "signature" in (intel.crl_problem(clean, other, leaf, "PCK CRL", now) or "")


def test_load_collateral_dir_plain_names_and_missing_files(tmp_path: Path) -> None:
    shutil.copy(TDX / "sample_tcbInfo_response", tmp_path / "tcb_info.json")
    with pytest.raises(EvidenceFormatError) as err:
        load_collateral_dir(tmp_path)
    assert "qe_identity.json" in str(err.value)
    assert "tcbInfoIssuerChain.pem" in str(err.value)
    assert "tcb_info.json" not in str(err.value)
    shutil.copy(TDX / "sample_qeIdentity_response", tmp_path / "qe_identity.json")
    shutil.copy(TDX / "tcbInfoIssuerChain.pem", tmp_path / "tcb_info_chain.pem")
    shutil.copy(TDX / "qeIdentityIssuerChain.pem", tmp_path / "qe_identity_chain.pem")
    loaded = load_collateral_dir(tmp_path)
    assert loaded.pck_crl is None
    result = verify_tdx(SPR, TdxOptions(at=AT_SPR, collateral=loaded))
    assert result.check("tcb_info_signature") is True
    assert result.check("pck_crl") is None
    with pytest.raises(EvidenceFormatError, match="does not exist"):
        load_collateral_dir(tmp_path / "nope")


def test_pck_extensions_of_the_spr_certificate() -> None:
    chain = intel.load_pem_chain(parse_quote(SPR).pck_chain_pem, "test")
    ext = intel.parse_pck_extensions(chain[0])
    assert ext.fmspc.hex() == "50806f000000"
    assert ext.pcesvn == 11
    assert list(ext.sgx_tcb_components[:8]) == [3, 3, 2, 2, 2, 1, 0, 2]
    assert len(ext.cpusvn) == 16
    with pytest.raises(EvidenceFormatError, match="no SGX extensions"):
        intel.parse_pck_extensions(chain[1])


def _pck(svns: list[int], pcesvn: int = 11) -> intel.PckExtensions:
    return intel.PckExtensions(
        fmspc=bytes.fromhex("50806f000000"),
        pce_id=b"\x00\x00",
        pcesvn=pcesvn,
        cpusvn=bytes(16),
        sgx_tcb_components=tuple(svns + [0] * (16 - len(svns))),
    )


def test_tcb_level_selection(collateral: TdxCollateral) -> None:
    tcb_info = intel.parse_signed_collateral(collateral.tcb_info, "tcbInfo", "TCB Info").body
    quote = parse_quote(SPR)
    tee = bytes([3, 0, 5]) + bytes(13)
    args = (quote.mrsignerseam, quote.seam_attributes)
    newest = intel.evaluate_tdx_tcb(tcb_info, _pck([5, 5, 2, 2, 3, 1, 0, 3], 11), tee, *args)
    assert newest.status == "UpToDate"
    old_pce = intel.evaluate_tdx_tcb(tcb_info, _pck([5, 5, 2, 2, 3, 1, 0, 3], 6), tee, *args)
    assert old_pce.status == "OutOfDate"
    assert "INTEL-SA-00106" in old_pce.advisory_ids
    old_module = intel.evaluate_tdx_tcb(
        tcb_info, _pck([5, 5, 2, 2, 3, 1, 0, 3], 11), bytes([2, 0, 5]) + bytes(13), *args
    )
    assert old_module.status is None and "no matching TCB level" in old_module.reason
    major = intel.evaluate_tdx_tcb(
        tcb_info, _pck([5, 5, 2, 2, 3, 1, 0, 3], 11), bytes([3, 1, 5]) + bytes(13), *args
    )
    assert major.status is None and "major SVN" in major.reason
    other_fmspc = dataclasses.replace(_pck([9] * 16), fmspc=b"\x00" * 6)
    assert "FMSPC" in intel.evaluate_tdx_tcb(tcb_info, other_fmspc, tee, *args).reason


def test_qe_identity_evaluation(collateral: TdxCollateral) -> None:
    identity = intel.parse_signed_collateral(
        collateral.qe_identity, "enclaveIdentity", "QE Identity"
    ).body
    qe = intel.parse_sgx_report(parse_quote(SPR).qe_report)
    assert intel.evaluate_qe_identity(identity, qe).status == "UpToDate"
    old = dataclasses.replace(qe, isvsvn=3)
    assert intel.evaluate_qe_identity(identity, old).status is None
    foreign = dataclasses.replace(qe, mrsigner=bytes(32))
    assert "MRSIGNER" in intel.evaluate_qe_identity(identity, foreign).reason


# --- trust anchor ------------------------------------------------------------------------------


def test_pinned_root_matches_its_fingerprint() -> None:
    store = intel.intel_root_store()
    assert store.roots[0].subject.rfc4514_string().endswith("CN=Intel SGX Root CA")
    assert intel.fingerprint(store.roots[0]) == intel.INTEL_ROOT_SHA256
    with pytest.raises(AnchorError, match="fingerprint"):
        load_pinned("intel", {"intel_sgx_root_ca.pem": ("00" * 32, True)}, "wrong pin")


# --- property tests ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_parse_quote_raises_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        parse_quote(data)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=len(SPR)), st.binary(max_size=64))
def test_parse_quote_on_cut_real_quote(cut: int, tail: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        parse_quote(SPR[:cut] + tail)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(min_value=0, max_value=0x277), st.integers(min_value=1, max_value=255))
def test_any_flip_in_the_signed_part_fails_quote_signature(offset: int, mask: int) -> None:
    try:
        result = verify_tdx(_flip(SPR, offset, mask))
    except EvidenceFormatError:
        assert offset < 8  # version, key type or TEE type changed: not a TDX v4 quote any more
        return
    assert result.check("quote_signature") is False
    assert not result.authentic


def test_pck_with_a_duplicated_extension_is_a_failed_chain_not_a_crash() -> None:
    """What the flip test below once hit only sometimes, pinned: cryptography raises
    `x509.DuplicateExtension` (not a ValueError) for such a certificate."""
    from tests.hostile import quote_with_duplicated_pck_extension

    result = verify_tdx(quote_with_duplicated_pck_extension())
    assert result.check("pck_chain") is False and not result.authentic
    assert result.format_error is not None and "Duplicate 2.5.29.14" in result.format_error


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.integers(min_value=0x278, max_value=len(SPR) - 40), st.integers(min_value=1, max_value=255)
)
def test_flips_in_the_signature_data_never_crash(offset: int, mask: int) -> None:
    with contextlib.suppress(EvidenceFormatError):
        result = verify_tdx(_flip(SPR, offset, mask))
        assert isinstance(result.quote, TdxQuote)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_parse_signed_collateral_raises_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        intel.parse_signed_collateral(data, "tcbInfo", "TCB Info")
    with contextlib.suppress(EvidenceFormatError):
        intel.parse_signed_collateral(b'{"tcbInfo":' + data + b',"signature":"00"}', "tcbInfo", "t")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_load_crl_raises_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        intel.load_crl(data, "PCK CRL")


# --- cross-check with Phala's dcap-qvl (Rust), when installed -----------------------------------


def test_dcap_qvl_agrees(collateral: TdxCollateral) -> None:
    dcap_qvl = pytest.importorskip("dcap_qvl")
    tcb = intel.parse_signed_collateral(collateral.tcb_info, "tcbInfo", "TCB Info")
    qe = intel.parse_signed_collateral(collateral.qe_identity, "enclaveIdentity", "QE Identity")
    pem = b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in collateral.pck_crl_chain
    ).decode()
    theirs = dcap_qvl.QuoteCollateralV3(
        pck_crl_issuer_chain=pem,
        root_ca_crl=collateral.root_crl,
        pck_crl=collateral.pck_crl,
        tcb_info_issuer_chain=(TDX / "tcbInfoIssuerChain.pem").read_text(),
        tcb_info=tcb.signed_bytes.decode(),
        tcb_info_signature=tcb.signature,
        qe_identity_issuer_chain=(TDX / "qeIdentityIssuerChain.pem").read_text(),
        qe_identity=qe.signed_bytes.decode(),
        qe_identity_signature=qe.signature,
    )
    now = int(AT_SPR.timestamp())
    ours = verify_tdx(SPR, TdxOptions(at=AT_SPR, collateral=collateral))
    with pytest.raises(ValueError, match="No matching TCB level") as err:
        dcap_qvl.verify(SPR, theirs, now)
    assert "no matching TCB level" in _reasons(ours)["tcb_status"][1], err.value
    assert ours.authentic
    mutated = _flip(SPR, BODY + 136)
    with pytest.raises(ValueError, match="signature") as err:
        dcap_qvl.verify(mutated, theirs, now)
    assert verify_tdx(mutated).check("quote_signature") is False, err.value
    mutated_qe = _flip(SPR, QE_REPORT + 258)
    with pytest.raises(ValueError, match="qe_report") as err:
        dcap_qvl.verify(mutated_qe, theirs, now)
    assert verify_tdx(mutated_qe).check("qe_report_signature") is False, err.value
