"""GCE vTPM EK certificates: chain to pinned roots, key binding, instance identity."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.verify.anchors import AnchorError, TrustStore, gcp_vtpm_store, load_pinned
from auditor.verify.gce_identity import (
    IDENTITY_OID,
    DerError,
    Expected,
    parse_identity,
    verify_ek_certificate,
)
from auditor.verify.x509chain import verify_chain

DATA = Path(__file__).parent / "data" / "cloud"
AT = datetime(2026, 11, 22, tzinfo=UTC)
IDENTITY = json.loads((DATA / "gcp_shielded_identity.json").read_text())
EK_PEM = IDENTITY["encryptionKey"]["ekCert"]
EK_PUB = IDENTITY["encryptionKey"]["ekPub"]
FIXTURE_CA = x509.load_pem_x509_certificate(
    (DATA / "gcp_shielded_identity_FIXTURE_CA.pem").read_bytes()
)
FIXTURE_STORE = TrustStore(name="fixture CA", roots=(FIXTURE_CA,))
EXPECTED = Expected(
    project_id="cc-audit-demo",
    instance_id="6524697943022743941",
    instance_name="cvm-snp-1",
    zone="us-central1-a",
)


def test_fixture_certificate_verifies_against_its_ca() -> None:
    result = verify_ek_certificate(EK_PEM, EK_PUB, FIXTURE_STORE, AT, EXPECTED)
    assert result.ok, result.reason
    assert result.identity is not None
    assert result.identity.instance_name == "cvm-snp-1"
    assert result.identity.project_id == "cc-audit-demo"
    assert result.identity.security.get("is_production") is True


def test_fixture_certificate_is_not_google() -> None:
    """A certificate not issued by Google's pinned EK/AK CA must not pass as Google's."""
    result = verify_ek_certificate(EK_PEM, EK_PUB, gcp_vtpm_store(), AT, EXPECTED)
    assert not result.ok
    assert result.check("chain") is False
    assert "not a pinned root" in result.reason
    assert result.check("identity") is True  # the other checks still run and are reported


def test_identity_naming_another_instance_fails() -> None:
    other = Expected("cc-audit-demo", "1", "cvm-snp-1", "us-central1-a")
    result = verify_ek_certificate(EK_PEM, EK_PUB, FIXTURE_STORE, AT, other)
    assert result.check("identity") is False
    assert "names another instance" in result.reason and "instance id" in result.reason


def test_ek_pub_not_matching_certificate_fails() -> None:
    other_pub = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    result = verify_ek_certificate(EK_PEM, other_pub, FIXTURE_STORE, AT, EXPECTED)
    assert result.check("key_binding") is False and not result.ok


def test_expired_certificate_fails() -> None:
    result = verify_ek_certificate(
        EK_PEM, EK_PUB, FIXTURE_STORE, datetime(2070, 1, 1, tzinfo=UTC), EXPECTED
    )
    assert result.check("chain") is False and "not valid at" in result.reason


@pytest.mark.parametrize(
    "mutate",
    [
        lambda pem: pem[:200] + pem[260:],  # truncated body
        lambda pem: pem.replace("MII", "MIJ", 1),  # corrupted DER
        lambda pem: "",
        lambda pem: "x" * 70000,
    ],
)
def test_malformed_certificates_fail_with_reason(mutate: object) -> None:
    bad = mutate(EK_PEM)  # type: ignore[operator]
    result = verify_ek_certificate(bad, EK_PUB, FIXTURE_STORE, AT, EXPECTED)
    assert not result.ok
    assert result.check("parse") is False
    assert result.reason


def _ca(
    name: str,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name | None = None,
    signer: rsa.RSAPrivateKey | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(signer or key, hashes.SHA256())
    )


def test_chain_signed_by_lookalike_issuer_fails() -> None:
    """Same issuer name as the pinned root, different key: the signature check must catch it."""
    pinned_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _ca("EK/AK CA Root", pinned_key)
    forged = _ca("leaf", forger_key, issuer=root.subject, signer=forger_key)
    result = verify_chain(forged, TrustStore("test", (root,)), AT)
    assert not result.ok and "signature does not verify" in result.reason
    genuine = _ca("leaf", forger_key, issuer=root.subject, signer=pinned_key)
    assert verify_chain(genuine, TrustStore("test", (root,)), AT).ok


def test_chain_through_intermediate() -> None:
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    mid_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _ca("root", root_key)
    mid = _ca("mid", mid_key, issuer=root.subject, signer=root_key)
    leaf = _ca("leaf", mid_key, issuer=mid.subject, signer=mid_key)
    assert not verify_chain(leaf, TrustStore("t", (root,)), AT).ok
    ok = verify_chain(leaf, TrustStore("t", (root,), (mid,)), AT)
    assert ok.ok and ok.path == ["CN=leaf", "CN=mid", "CN=root"]


def test_pinned_google_anchors_load_and_tampering_is_caught(tmp_path: Path) -> None:
    store = gcp_vtpm_store()
    assert len(store.roots) == 2 and len(store.intermediates) == 3
    # Google's intermediates chain to the pinned roots
    for inter in store.intermediates:
        assert verify_chain(inter, TrustStore("roots only", store.roots), AT).ok
    with pytest.raises(AnchorError, match="fingerprint"):
        load_pinned("gcp", {"ek_ak_ca_root.pem": ("00" * 32, True)}, "tampered")


def test_identity_extension_layout() -> None:
    cert = x509.load_pem_x509_certificate(EK_PEM.encode())
    raw = cert.extensions.get_extension_for_oid(IDENTITY_OID).value.value  # type: ignore[attr-defined]
    ident = parse_identity(raw)
    assert (ident.zone, ident.instance_id) == ("us-central1-a", 6524697943022743941)
    with pytest.raises(DerError):
        parse_identity(raw[:-3])
    with pytest.raises(DerError):
        parse_identity(raw + b"\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_identity_parser_never_crashes(data: bytes) -> None:
    with contextlib.suppress(DerError):  # anything else is a crash
        parse_identity(data)
