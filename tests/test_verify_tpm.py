"""vTPM verification against real GCE go-tpm-tools attestations and their mutations."""

from __future__ import annotations

import contextlib
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.verify import eventlog, gotpm
from auditor.verify.anchors import fingerprint
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.gce_identity import Expected
from auditor.verify.protobuf import LEN, VARINT, Message, WireField, decode_fields, read_varint
from auditor.verify.tpm import (
    VtpmOptions,
    VtpmResult,
    parse_tpms_attest,
    parse_tpmt_public,
    verify_event_log_against_pcrs,
    verify_gce_attestation,
    verify_tpm_quote,
)

VECTORS = Path(__file__).parent / "data" / "vectors" / "go-tpm-tools"
NONCE_PB = VECTORS / "gce-cos-85-nonce9009.pb"
NO_NONCE_PB = VECTORS / "gce-cos-85-no-nonce.pb"
# go-tpm-tools' test passes the nonce []byte{0x90, 0x09}; the TPM copies it into extraData.
NONCE = bytes.fromhex("9009")
AT = datetime(2022, 1, 1, tzinfo=UTC)
ALL_CHECKS = (
    "parse",
    "ak_chain",
    "ak_binding",
    "quote_signature",
    "pcr_digest",
    "nonce",
    "event_log_replay",
)


# --- a minimal protobuf encoder, to rebuild mutated evidence ---------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _encode(fields: list[WireField]) -> bytes:
    out = bytearray()
    for f in fields:
        out += _varint(f.number << 3 | f.wire_type)
        if f.wire_type == VARINT:
            assert isinstance(f.value, int)
            out += _varint(f.value)
        elif f.wire_type == LEN:
            assert isinstance(f.value, bytes)
            out += _varint(len(f.value)) + f.value
        else:
            raise AssertionError("only varint and length-delimited fields are re-encoded here")
    return bytes(out)


def _replace(
    fields: list[WireField], number: int, value: bytes, occurrence: int = 0
) -> list[WireField]:
    out: list[WireField] = []
    seen = 0
    for f in fields:
        if f.number == number:
            if seen == occurrence:
                f = WireField(number, f.wire_type, value)
            seen += 1
        out.append(f)
    return out


def _attestation() -> list[WireField]:
    return decode_fields(NONCE_PB.read_bytes())


def _quote_fields(att: list[WireField], index: int) -> list[WireField]:
    raw = [f.value for f in att if f.number == 2][index]
    assert isinstance(raw, bytes)
    return decode_fields(raw)


def _with_quote(att: list[WireField], index: int, quote_fields: list[WireField]) -> bytes:
    return _encode(_replace(att, 2, _encode(quote_fields), occurrence=index))


def _verify(data: bytes) -> VtpmResult:
    return verify_gce_attestation(data, VtpmOptions(at=AT))


# --- the real attestations -------------------------------------------------------------------


def test_encoder_round_trips_the_vector() -> None:
    assert _encode(_attestation()) == NONCE_PB.read_bytes()


def test_nonce_attestation_passes_every_check() -> None:
    result = verify_gce_attestation(NONCE_PB.read_bytes(), VtpmOptions(at=AT, expected_nonce=NONCE))
    assert [c.name for c in result.checks] == list(ALL_CHECKS), result.checks
    assert result.ok, result.reason
    assert result.authentic
    root = x509.load_der_x509_certificate((VECTORS / "tpm_ek_root_1.cer").read_bytes())
    assert result.facts["root_sha256"] == fingerprint(root)
    assert set(result.facts["pcrs"]) == {"sha1", "sha256", "sha384"}
    assert len(result.facts["pcrs"]["sha256"]) == 24
    assert result.facts["extra_data"] == "9009"
    assert result.facts["instance"]["instance_name"] == "cos-test"
    assert result.facts["secure_boot"]["secure_boot"] is True
    assert result.facts["events"] == len(
        eventlog.parse_event_log(gotpm.parse_attestation(NONCE_PB.read_bytes()).event_log).events
    )
    assert "PCR" in result.checks[-1].reason


def test_no_nonce_attestation_passes_without_a_nonce() -> None:
    result = verify_gce_attestation(NO_NONCE_PB.read_bytes(), VtpmOptions(at=AT))
    assert result.ok, result.reason
    assert result.check("nonce") is None
    assert result.facts["extra_data"] == ""


def test_no_nonce_attestation_fails_an_expected_nonce() -> None:
    result = verify_gce_attestation(
        NO_NONCE_PB.read_bytes(), VtpmOptions(at=AT, expected_nonce=NONCE)
    )
    assert result.check("nonce") is False
    assert result.authentic  # the quotes are genuine, just not fresh for this nonce
    assert not result.ok


def test_wrong_nonce_fails() -> None:
    result = verify_gce_attestation(
        NONCE_PB.read_bytes(), VtpmOptions(at=AT, expected_nonce=b"\x90\x0a")
    )
    assert result.check("nonce") is False
    assert "900a" in result.reason


def test_identity_matches_the_instance_named_in_the_ak_certificate() -> None:
    good = Expected(
        project_id="google.com:wuale-gcp-testing",
        instance_id="6797026933021542085",
        instance_name="cos-test",
        zone="us-central1-a",
    )
    result = verify_gce_attestation(NONCE_PB.read_bytes(), VtpmOptions(at=AT, expected=good))
    assert result.check("identity") is True
    other = Expected(good.project_id, good.instance_id, "other-vm", good.zone)
    result = verify_gce_attestation(NONCE_PB.read_bytes(), VtpmOptions(at=AT, expected=other))
    assert result.check("identity") is False
    assert "other-vm" in result.reason


def test_default_time_and_trust_store_are_used() -> None:
    result = verify_gce_attestation(NONCE_PB.read_bytes())
    assert result.check("ak_chain") is True  # the AK certificate is valid until 2051


def test_expired_time_fails_the_chain() -> None:
    result = verify_gce_attestation(
        NONCE_PB.read_bytes(), VtpmOptions(at=datetime(2019, 1, 1, tzinfo=UTC))
    )
    assert result.check("ak_chain") is False
    assert not result.authentic


# --- mutations -------------------------------------------------------------------------------


def test_flipped_quote_byte_fails_the_signature() -> None:
    att = _attestation()
    quote = _quote_fields(att, 1)  # the sha256 bank
    raw = quote[0].value
    assert quote[0].number == 1 and isinstance(raw, bytes)
    flipped = raw[:40] + bytes([raw[40] ^ 0x01]) + raw[41:]
    result = _verify(_with_quote(att, 1, _replace(quote, 1, flipped)))
    assert result.check("quote_signature") is False
    assert "sha256" in result.reason
    assert not result.authentic
    assert result.check("ak_chain") is True


def _raw(value: int | bytes) -> bytes:
    assert isinstance(value, bytes)
    return value


def test_changed_pcr_value_fails_the_pcr_digest() -> None:
    att = _attestation()
    quote = _quote_fields(att, 1)
    pcrs = decode_fields(_raw(quote[2].value))
    new_pcrs = []
    for f in pcrs:
        entry = decode_fields(_raw(f.value)) if f.number == 2 else []
        if entry and entry[0].value == 5:
            f = WireField(2, LEN, _encode(_replace(entry, 2, b"\x55" * 32)))
        new_pcrs.append(f)
    assert new_pcrs != pcrs
    data = _with_quote(att, 1, _replace(quote, 3, _encode(new_pcrs)))
    result = _verify(data)
    assert result.check("pcr_digest") is False
    assert result.check("quote_signature") is True
    assert "sha256" in result.reason


def test_mutated_event_digest_fails_replay_naming_the_pcr() -> None:
    att = _attestation()
    log_raw = next(f.value for f in att if f.number == 3)
    assert isinstance(log_raw, bytes)
    log = eventlog.parse_event_log(log_raw)
    event = next(e for e in log.events if e.index == 4 and e.event_type != eventlog.EV_NO_ACTION)
    digest = event.digests["sha256"]
    pos = log_raw.index(digest)
    mutated = log_raw[:pos] + bytes([digest[0] ^ 0xFF]) + log_raw[pos + 1 :]
    result = _verify(_encode(_replace(att, 3, mutated)))
    replay = next(c for c in result.checks if c.name == "event_log_replay")
    assert not replay.ok
    assert "sha256 PCR 4" in replay.reason
    assert result.authentic


def test_swapped_ak_certificate_fails_the_binding() -> None:
    other = (VECTORS / "tpm_ek_intermediate_2.crt").read_bytes()  # DER, a genuine Google cert
    result = _verify(_encode(_replace(_attestation(), 6, other)))
    assert result.check("ak_binding") is False
    assert result.check("ak_chain") is True
    assert not result.authentic


def test_missing_ak_certificate_is_not_a_pass() -> None:
    att = [f for f in _attestation() if f.number != 6]
    result = _verify(_encode(att))
    assert result.check("ak_chain") is False
    assert result.check("ak_binding") is False


def test_missing_event_log_is_not_a_pass() -> None:
    att = [f for f in _attestation() if f.number != 3]
    result = _verify(_encode(att))
    assert result.check("event_log_replay") is False
    assert result.check("quote_signature") is True


@pytest.mark.parametrize(
    "data",
    [
        NONCE_PB.read_bytes()[: len(NONCE_PB.read_bytes()) // 2],
        NONCE_PB.read_bytes()[:-1],
        b"\xff" * 64,
        b"not a protobuf at all",
        b"",
    ],
)
def test_unusable_attestation_raises(data: bytes) -> None:
    with pytest.raises(EvidenceFormatError):
        verify_gce_attestation(data, VtpmOptions(at=AT))


# --- the TPM structures on their own ---------------------------------------------------------


def test_parse_tpms_attest_reads_the_quote() -> None:
    att = gotpm.parse_attestation(NONCE_PB.read_bytes())
    parsed = parse_tpms_attest(att.quotes[0].quote)
    assert parsed.magic == 0xFF544347
    assert parsed.type == 0x8018
    assert parsed.extra_data == NONCE
    assert parsed.pcr_select == [("sha1", list(range(24)))]
    assert len(parsed.pcr_digest) == 32
    assert parsed.qualified_signer[:2] == b"\x00\x0b"  # a SHA-256 TPM name
    with pytest.raises(EvidenceFormatError, match="magic"):
        parse_tpms_attest(b"\x00" + att.quotes[0].quote[1:])
    with pytest.raises(EvidenceFormatError, match="trailing"):
        parse_tpms_attest(att.quotes[0].quote + b"\x00")


def test_parse_tpmt_public_matches_the_ak_certificate() -> None:
    att = gotpm.parse_attestation(NONCE_PB.read_bytes())
    ak = parse_tpmt_public(att.ak_pub)
    cert = x509.load_der_x509_certificate(att.ak_cert)
    assert ak.type == "rsa"
    assert ak.name_alg == "sha256"
    assert {"restricted", "sign", "fixedTPM"} <= set(ak.attribute_names)
    assert ak.spki_der() == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sized = struct.pack(">H", len(att.ak_pub)) + att.ak_pub  # TPM2B_PUBLIC
    assert parse_tpmt_public(sized).spki_der() == ak.spki_der()


def _tpmt_public_ecc(key: ec.EllipticCurvePublicKey) -> bytes:
    nums = key.public_numbers()
    return (
        struct.pack(">HHI", 0x0023, 0x000B, 0x00050072)
        + struct.pack(">H", 0)  # authPolicy
        + struct.pack(">H", 0x0010)  # symmetric NULL
        + struct.pack(">HH", 0x0018, 0x000B)  # ECDSA SHA-256
        + struct.pack(">H", 0x0003)  # NIST P-256
        + struct.pack(">H", 0x0010)  # kdf NULL
        + struct.pack(">H", 32)
        + nums.x.to_bytes(32, "big")
        + struct.pack(">H", 32)
        + nums.y.to_bytes(32, "big")
    )


def _quote_for(pcrs: dict[int, bytes], nonce: bytes) -> bytes:
    bitmap = bytearray(3)
    for i in pcrs:
        bitmap[i // 8] |= 1 << (i % 8)
    digest = hashes.Hash(hashes.SHA256())
    for i in sorted(pcrs):
        digest.update(pcrs[i])
    return (
        struct.pack(">IH", 0xFF544347, 0x8018)
        + struct.pack(">H", 0)
        + struct.pack(">H", len(nonce))
        + nonce
        + struct.pack(">QIIB", 1000, 1, 0, 1)
        + struct.pack(">Q", 0x2016051100162800)
        + struct.pack(">IHB", 1, 0x000B, 3)
        + bytes(bitmap)
        + struct.pack(">H", 32)
        + digest.finalize()
    )


def test_ecdsa_quote_verifies_and_tampering_fails() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    tpmt = _tpmt_public_ecc(key.public_key())
    parsed = parse_tpmt_public(tpmt)
    assert parsed.type == "ecc" and parsed.curve == "nist_p256" and parsed.scheme == "ecdsa"
    pcrs = {0: b"\x01" * 32, 7: b"\x07" * 32}
    quote = _quote_for(pcrs, b"nonce")
    r, s = decode_dss_signature(key.sign(quote, ec.ECDSA(hashes.SHA256())))
    sig = (
        struct.pack(">HH", 0x0018, 0x000B)
        + struct.pack(">H", 32)
        + r.to_bytes(32, "big")
        + struct.pack(">H", 32)
        + s.to_bytes(32, "big")
    )
    ok = verify_tpm_quote(tpmt, quote, sig, pcrs, "sha256", expected_nonce=b"nonce")
    assert ok.ok, ok.reason
    assert [c.name for c in ok.checks] == ["quote_parse", "quote_signature", "pcr_digest", "nonce"]
    bad = verify_tpm_quote(tpmt, quote[:-1] + b"\x00", sig, pcrs, "sha256")
    assert bad.check("quote_signature") is False
    assert bad.check("pcr_digest") is False
    missing = verify_tpm_quote(key.public_key(), quote, sig, {0: pcrs[0]}, "sha256")
    assert missing.check("quote_signature") is True
    assert missing.check("pcr_digest") is False
    assert "7" in missing.reason


def test_rsapss_quote_verifies_and_wrong_key_type_fails() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pcrs = {0: b"\x00" * 32}
    quote = _quote_for(pcrs, b"")
    raw = key.sign(
        quote,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    sig = struct.pack(">HHH", 0x0016, 0x000B, len(raw)) + raw
    assert verify_tpm_quote(key.public_key(), quote, sig, pcrs, "sha256").ok
    ecc = ec.generate_private_key(ec.SECP256R1()).public_key()
    wrong = verify_tpm_quote(ecc, quote, sig, pcrs, "sha256")
    assert wrong.check("quote_signature") is False
    assert "non-RSA" in wrong.reason


def test_unparsable_quote_is_a_failed_check() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    result = verify_tpm_quote(key.public_key(), b"\x00\x01", b"", {}, "sha256", b"n")
    assert result.check("quote_parse") is False
    assert not result.ok


def test_event_log_replay_against_pcrs_names_the_differing_pcr() -> None:
    att = gotpm.parse_attestation(NONCE_PB.read_bytes())
    sha256 = next(q for q in att.quotes if q.bank == "sha256")
    check = verify_event_log_against_pcrs(att.event_log, sha256.pcrs, "sha256")
    assert check.name == "event_log_replay" and check.ok, check.reason
    changed = dict(sha256.pcrs)
    changed[7] = b"\x00" * 32
    check = verify_event_log_against_pcrs(att.event_log, changed, "sha256")
    assert not check.ok
    assert "PCR 7" in check.reason
    assert not verify_event_log_against_pcrs(b"\x01\x02", sha256.pcrs, "sha256").ok


# --- the protobuf decoder --------------------------------------------------------------------


def test_protobuf_decoder_reads_each_wire_type() -> None:
    data = (
        _varint(1 << 3 | 0)
        + _varint(300)
        + _varint(2 << 3 | 1)
        + struct.pack("<Q", 7)
        + _varint(3 << 3 | 2)
        + _varint(3)
        + b"abc"
        + _varint(4 << 3 | 5)
        + struct.pack("<I", 9)
    )
    msg = Message.parse(data)
    assert msg.uint(1) == 300
    assert [f.value for f in msg.fields] == [300, 7, b"abc", 9]
    assert msg.bytes_field(3) == b"abc"
    assert read_varint(_varint(2**64 - 1), 0) == (2**64 - 1, 10)
    with pytest.raises(EvidenceFormatError, match="wire type"):
        msg.uint(3)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x0a\x05ab", "declares"),  # length past the end
        (b"\x08", "truncated varint"),
        (b"\x0b", "wire type"),  # group start
        (b"\x00\x00", "field number"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "varint"),
    ],
)
def test_protobuf_decoder_rejects_malformed(data: bytes, why: str) -> None:
    with pytest.raises(EvidenceFormatError, match=why):
        decode_fields(data)


def test_protobuf_depth_is_bounded() -> None:
    data = b""
    for _ in range(40):
        data = _varint(1 << 3 | 2) + _varint(len(data)) + data
    msg = Message.parse(data)
    with pytest.raises(EvidenceFormatError, match="nested"):
        for _ in range(40):
            inner = msg.message(1, "inner")
            assert inner is not None
            msg = inner


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parsers_raise_only_evidence_format_errors(data: bytes) -> None:
    for parse in (decode_fields, parse_tpms_attest, parse_tpmt_public, gotpm.parse_attestation):
        with contextlib.suppress(EvidenceFormatError):
            parse(data)  # type: ignore[operator]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(NONCE_PB.read_bytes()) - 1), st.integers(1, 255))
def test_flipped_attestation_bytes_never_crash(pos: int, xor: int) -> None:
    data = bytearray(NONCE_PB.read_bytes())
    data[pos] ^= xor
    try:
        result = verify_gce_attestation(bytes(data), VtpmOptions(at=AT, expected_nonce=NONCE))
    except EvidenceFormatError:
        return
    assert all(c.reason for c in result.checks)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=4, max_size=200), st.integers(0, 200))
def test_tpm_structures_from_prefixed_garbage(tail: bytes, cut: int) -> None:
    att = gotpm.parse_attestation(NONCE_PB.read_bytes())
    for data in (att.quotes[0].quote[:cut] + tail, att.ak_pub[:cut] + tail):
        for parse in (parse_tpms_attest, parse_tpmt_public):
            with contextlib.suppress(EvidenceFormatError):
                parse(data)  # type: ignore[operator]
