"""Key-release receipts: only a declared broker's signature, for this VM and report, counts."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auditor.verify.errors import EvidenceFormatError
from auditor.verify.key_release import load_broker_keys, sign_key_release, verify_key_release

IDENTITY = "aws:i-0d83016e1898302ed"
REPORT_DATA = "ab" * 64


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def broker() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _receipt(key: ec.EllipticCurvePrivateKey, **claims: str) -> str:
    body = {"iss": "kbs.example.eu", "sub": IDENTITY, "report_data": REPORT_DATA, **claims}
    return sign_key_release(key, body)


def test_receipt_from_declared_broker_for_this_vm_verifies(
    broker: ec.EllipticCurvePrivateKey,
) -> None:
    keys = load_broker_keys(_pem(broker))
    result = verify_key_release(_receipt(broker), keys, IDENTITY, REPORT_DATA)
    assert result.ok, result.reason
    assert result.claims["iss"] == "kbs.example.eu"


def test_receipt_signed_by_another_key_fails(broker: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    keys = load_broker_keys(_pem(broker))
    result = verify_key_release(_receipt(other), keys, IDENTITY, REPORT_DATA)
    assert result.check("key_release_signature") is False
    assert "does not verify" in result.reason


def test_receipt_for_another_vm_or_report_fails(broker: ec.EllipticCurvePrivateKey) -> None:
    keys = load_broker_keys(_pem(broker))
    other_vm = verify_key_release(_receipt(broker, sub="aws:i-other"), keys, IDENTITY, REPORT_DATA)
    assert other_vm.check("key_release_vm") is False
    other_report = verify_key_release(_receipt(broker), keys, IDENTITY, "cd" * 64)
    assert other_report.check("key_release_report") is False
    assert "another attestation" in other_report.reason


def test_tampered_claims_fail(broker: ec.EllipticCurvePrivateKey) -> None:
    keys = load_broker_keys(_pem(broker))
    head, body, sig = _receipt(broker).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["sub"] = "aws:i-attacker"
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    result = verify_key_release(f"{head}.{forged_body}.{sig}", keys, "aws:i-attacker", REPORT_DATA)
    assert result.check("key_release_signature") is False


def test_no_declared_key_is_not_a_pass(broker: ec.EllipticCurvePrivateKey) -> None:
    result = verify_key_release(_receipt(broker), [], IDENTITY, REPORT_DATA)
    assert not result.ok
    assert "no key-broker key declared" in result.reason


@pytest.mark.parametrize("token", ["", "a.b", "not base64!.x.y", "e30.e30"])
def test_malformed_receipts_are_reported_not_raised(token: str) -> None:
    result = verify_key_release(token, [], IDENTITY, REPORT_DATA)
    assert result.check("key_release_parse") is False


def test_rsa_keys_and_certificates_load_and_garbage_is_refused() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert len(load_broker_keys(_pem(rsa_key) + b"\n" + _pem(rsa_key))) == 2
    with pytest.raises(EvidenceFormatError, match="no PEM public key"):
        load_broker_keys(b"hello")
