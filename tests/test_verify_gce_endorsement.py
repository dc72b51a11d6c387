"""GCE firmware launch endorsements, built here because no real one is published.

The endorsement is assembled with a small protobuf encoder and signed by a self-made root and
signer certificate, in the layout gce-tcb-verifier uses; mutations must fail the right check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.verify.errors import EvidenceFormatError
from auditor.verify.gce_endorsement import (
    GCE_ENDORSEMENT_GUID,
    endorsement_from_auxblob,
    parse_endorsement,
    verify_launch_endorsement,
)

AT = datetime(2025, 6, 1, tzinfo=UTC)
SIGNED_AT = datetime(2025, 3, 1, tzinfo=UTC)
UEFI = b"pretend OVMF image" * 100
M1 = hashlib.sha384(b"1 vcpu").digest()
M2 = hashlib.sha384(b"2 vcpus").digest()
MRTD = hashlib.sha384(b"mrtd 16 GiB").digest()
POLICY = 0x30000
VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")


# --- a minimal protobuf encoder --------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _uint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


# --- certificates ----------------------------------------------------------------------------


@dataclass
class Pki:
    root: x509.Certificate
    root_key: rsa.RSAPrivateKey
    signer: x509.Certificate
    signer_key: rsa.RSAPrivateKey


def _cert(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: str,
    issuer_key: rsa.RSAPrivateKey,
    ca: bool,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_key, signer_key = _key(), _key()
    root = _cert("Test GCE-cc-tcb-root", root_key, "Test GCE-cc-tcb-root", root_key, True)
    signer = _cert("Test GCE TCB signer", signer_key, "Test GCE-cc-tcb-root", root_key, False)
    return Pki(root, root_key, signer, signer_key)


def _golden(
    cert: x509.Certificate,
    *,
    signed_at: datetime = SIGNED_AT,
    cl_spec: int = 123456,
    ca_bundle: bytes = b"",
) -> bytes:
    timestamp = _uint(1, int(signed_at.timestamp()))
    sev_snp = (
        _uint(1, 3)
        + _bytes(2, _uint(1, 1) + _bytes(2, M1))
        + _bytes(2, _uint(1, 2) + _bytes(2, M2))
        + _bytes(3, uuid.UUID("f73a6949-e8f3-473b-9553-e40e056fa3a2").bytes)
        + _bytes(4, b"\x01" * 16)
        + _uint(5, POLICY)
    )
    tdx = _uint(1, 2) + _bytes(2, _uint(1, 16) + _uint(2, 1) + _bytes(3, MRTD))
    return (
        _bytes(1, timestamp)
        + (_uint(2, cl_spec) if cl_spec else b"")
        + _bytes(4, cert.public_bytes(serialization.Encoding.DER))
        + _bytes(5, hashlib.sha384(UEFI).digest())
        + (_bytes(6, ca_bundle) if ca_bundle else b"")
        + _bytes(7, sev_snp)
        + _bytes(8, tdx)
    )


def _sign(golden: bytes, key: rsa.RSAPrivateKey) -> bytes:
    return key.sign(
        golden,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def _endorsement(golden: bytes, signature: bytes) -> bytes:
    return _bytes(1, golden) + _bytes(2, signature)


@pytest.fixture(scope="module")
def endorsement(pki: Pki) -> bytes:
    golden = _golden(pki.signer)
    return _endorsement(golden, _sign(golden, pki.signer_key))


# --- tests -----------------------------------------------------------------------------------


def test_parse_reads_the_golden_measurement(endorsement: bytes, pki: Pki) -> None:
    e = parse_endorsement(endorsement)
    assert e.digest == hashlib.sha384(UEFI).digest()
    assert e.timestamp == SIGNED_AT
    assert e.cl_spec == 123456
    assert e.cert == pki.signer.public_bytes(serialization.Encoding.DER)
    assert e.sev_snp is not None and e.sev_snp.measurements == {1: M1, 2: M2}
    assert e.sev_snp.policy == POLICY and e.sev_snp.svn == 3
    assert e.tdx is not None and e.tdx.measurements[0].mrtd == MRTD
    assert e.tdx.measurements[0].ram_gib == 16 and e.tdx.measurements[0].early_accept


def test_genuine_endorsement_matches_the_measurement(endorsement: bytes, pki: Pki) -> None:
    result = verify_launch_endorsement(
        endorsement, pki.root, measurement=M2, vcpus=2, policy=POLICY, at=AT
    )
    assert result.ok, result.reason
    assert [c.name for c in result.checks] == [
        "parse",
        "chain",
        "signature",
        "provenance",
        "measurement",
        "policy",
    ]
    assert result.matched
    assert result.facts["digest"] == hashlib.sha384(UEFI).hexdigest()
    assert result.facts["svn"] == 3
    assert result.facts["measurements"] == 2
    assert result.facts["signer"] == "CN=Test GCE TCB signer"
    assert result.facts["timestamp"] == SIGNED_AT.isoformat()


def test_any_vcpu_count_matches_when_none_is_given(endorsement: bytes, pki: Pki) -> None:
    result = verify_launch_endorsement(endorsement, pki.root, measurement=M1, at=AT)
    assert result.check("measurement") is True
    assert "1 vCPUs" in next(c.reason for c in result.checks if c.name == "measurement")


def test_tdx_mrtd_matches(endorsement: bytes, pki: Pki) -> None:
    assert verify_launch_endorsement(endorsement, pki.root, mrtd=MRTD, at=AT).matched
    other = verify_launch_endorsement(endorsement, pki.root, mrtd=M1, at=AT)
    assert other.check("measurement") is False


def test_without_a_measurement_it_is_genuine_but_not_matched(endorsement: bytes, pki: Pki) -> None:
    result = verify_launch_endorsement(endorsement, pki.root, at=AT)
    assert result.ok
    assert result.check("measurement") is None
    assert not result.matched


def test_flipped_signed_byte_fails_the_signature(endorsement: bytes, pki: Pki) -> None:
    digest = hashlib.sha384(UEFI).digest()
    pos = endorsement.index(digest)
    mutated = endorsement[:pos] + bytes([digest[0] ^ 1]) + endorsement[pos + 1 :]
    result = verify_launch_endorsement(mutated, pki.root, measurement=M2, vcpus=2, at=AT)
    assert result.check("signature") is False
    assert result.check("chain") is True
    assert not result.ok and not result.matched


def test_other_root_fails_the_chain(endorsement: bytes) -> None:
    other_key = _key()
    other = _cert("Test GCE-cc-tcb-root", other_key, "Test GCE-cc-tcb-root", other_key, True)
    result = verify_launch_endorsement(endorsement, other, measurement=M2, at=AT)
    assert result.check("chain") is False
    assert "signature does not verify" in result.reason


def test_other_measurement_fails(endorsement: bytes, pki: Pki) -> None:
    wrong = hashlib.sha384(b"other firmware").digest()
    result = verify_launch_endorsement(endorsement, pki.root, measurement=wrong, vcpus=2, at=AT)
    assert result.check("measurement") is False
    assert result.check("signature") is True
    assert "2 vCPUs" in result.reason
    unlisted = verify_launch_endorsement(endorsement, pki.root, measurement=M2, vcpus=8, at=AT)
    assert unlisted.check("measurement") is False
    assert "8 vCPUs" in unlisted.reason
    anyof = verify_launch_endorsement(endorsement, pki.root, measurement=wrong, at=AT)
    assert anyof.check("measurement") is False


def test_other_policy_fails(endorsement: bytes, pki: Pki) -> None:
    result = verify_launch_endorsement(endorsement, pki.root, policy=0xB0000, at=AT)
    assert result.check("policy") is False
    assert "0x30000" in result.reason


def test_expired_signer_fails_the_chain(endorsement: bytes, pki: Pki) -> None:
    late = AT + timedelta(days=3650)
    assert verify_launch_endorsement(endorsement, pki.root, at=late).check("chain") is False


def test_chain_through_the_ca_bundle(pki: Pki) -> None:
    inter_key, signer_key = _key(), _key()
    inter = _cert("Test intermediate", inter_key, "Test GCE-cc-tcb-root", pki.root_key, True)
    signer = _cert("Test bundled signer", signer_key, "Test intermediate", inter_key, False)
    bundle = pki.root.public_bytes(serialization.Encoding.PEM) + inter.public_bytes(
        serialization.Encoding.PEM
    )
    golden = _golden(signer, ca_bundle=bundle)
    data = _endorsement(golden, _sign(golden, signer_key))
    assert verify_launch_endorsement(data, pki.root, measurement=M1, at=AT).ok
    no_bundle = _golden(signer)
    data = _endorsement(no_bundle, _sign(no_bundle, signer_key))
    assert verify_launch_endorsement(data, pki.root, at=AT).check("chain") is False


def test_missing_provenance_after_august_2024_fails(pki: Pki) -> None:
    golden = _golden(pki.signer, cl_spec=0)
    data = _endorsement(golden, _sign(golden, pki.signer_key))
    result = verify_launch_endorsement(data, pki.root, at=AT)
    assert result.check("provenance") is False
    early = _golden(pki.signer, cl_spec=0, signed_at=datetime(2024, 5, 1, tzinfo=UTC))
    data = _endorsement(early, _sign(early, pki.signer_key))
    assert verify_launch_endorsement(data, pki.root, at=AT).check("provenance") is None


def test_signature_by_another_key_fails(pki: Pki) -> None:
    golden = _golden(pki.signer)
    data = _endorsement(golden, _sign(golden, _key()))
    assert verify_launch_endorsement(data, pki.root, at=AT).check("signature") is False


@pytest.mark.parametrize("cut", [1, 10, 100, -1, -50])
def test_truncated_endorsement_raises(endorsement: bytes, pki: Pki, cut: int) -> None:
    with pytest.raises(EvidenceFormatError):
        parse_endorsement(endorsement[:cut])
    with pytest.raises(EvidenceFormatError):
        verify_launch_endorsement(endorsement[:cut], pki.root, measurement=M1, at=AT)


def test_wrong_measurement_length_raises(pki: Pki) -> None:
    sev_snp = _bytes(2, _uint(1, 1) + _bytes(2, b"short"))
    golden = _bytes(4, pki.signer.public_bytes(serialization.Encoding.DER)) + _bytes(7, sev_snp)
    with pytest.raises(EvidenceFormatError, match="48"):
        parse_endorsement(_endorsement(golden, b"sig"))


def _cert_table(entries: list[tuple[uuid.UUID, bytes]]) -> bytes:
    header_size = 24 * (len(entries) + 1)
    header = b""
    body = b""
    for guid, blob in entries:
        header += guid.bytes + struct.pack("<II", header_size + len(body), len(blob))
        body += blob
    return header + bytes(24) + body


def test_endorsement_from_auxblob(endorsement: bytes) -> None:
    aux = _cert_table([(VCEK_GUID, b"vcek der"), (GCE_ENDORSEMENT_GUID, endorsement)])
    assert endorsement_from_auxblob(aux) == endorsement
    assert endorsement_from_auxblob(_cert_table([(VCEK_GUID, b"vcek der")])) is None
    broken = bytearray(aux)
    broken[24 + 20 : 24 + 24] = struct.pack("<I", 1 << 20)  # the endorsement's length
    with pytest.raises(EvidenceFormatError):
        endorsement_from_auxblob(bytes(broken))
    with pytest.raises(EvidenceFormatError):
        endorsement_from_auxblob(aux[:30])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parse_endorsement_raises_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        parse_endorsement(data)
    with contextlib.suppress(EvidenceFormatError):
        endorsement_from_auxblob(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_endorsement_never_crashes(
    endorsement: bytes, pki: Pki, data: st.DataObject
) -> None:
    pos = data.draw(st.integers(0, len(endorsement) - 1))
    mutated = bytearray(endorsement)
    mutated[pos] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(EvidenceFormatError):
        result = verify_launch_endorsement(bytes(mutated), pki.root, measurement=M2, at=AT)
        # Every byte of the endorsement is signed or is the signature: a flip never passes.
        assert not result.ok


# --- the investigator's CLI ------------------------------------------------------------------


def test_cli_verifies_and_matches_an_endorsement_file(
    endorsement: bytes, pki: Pki, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from auditor.cli import app

    (tmp_path / "e.binarypb").write_bytes(endorsement)
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    args = ["verify", "endorsement", str(tmp_path / "e.binarypb"), "--root"]
    args += [str(tmp_path / "root.pem"), "--at", AT.isoformat(), "--format", "json"]
    ok = CliRunner().invoke(app, [*args, "--measurement", M2.hex(), "--vcpus", "2"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["valid"] is True
    other = CliRunner().invoke(app, [*args, "--measurement", M1.hex(), "--vcpus", "2"])
    assert other.exit_code == 1
    (tmp_path / "e.binarypb").write_bytes(endorsement[:10])
    broken = CliRunner().invoke(app, args)
    assert broken.exit_code == 2 and "error:" in broken.stderr
