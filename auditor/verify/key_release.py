"""Key-release receipts: evidence that a data key came from the owner's broker, not the provider.

The owner's key broker (KBS, Vault, an HSM outside the provider) releases a disk or data key
only after it verified the VM's attestation. It answers with a receipt, a compact JWS it signs,
naming the VM identity and the REPORT_DATA it saw. The guest collector stores it beside the
report. Here we check the receipt against broker keys the owner declares (`--key-broker-key`):
a receipt signed by an undeclared key, naming another VM or another report, is no evidence.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from auditor.verify.checks import Check, CheckedResult
from auditor.verify.errors import EvidenceFormatError

MAX_RECEIPT = 64 * 1024
BrokerKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_EC_ALGS: dict[str, tuple[type[ec.EllipticCurve], hashes.HashAlgorithm, int]] = {
    "ES256": (ec.SECP256R1, hashes.SHA256(), 32),
    "ES384": (ec.SECP384R1, hashes.SHA384(), 48),
}
_RSA_ALGS: dict[str, tuple[hashes.HashAlgorithm, bool]] = {
    "RS256": (hashes.SHA256(), False),
    "PS256": (hashes.SHA256(), True),
    "PS384": (hashes.SHA384(), True),
}


@dataclass
class KeyReleaseResult(CheckedResult):
    claims: dict[str, Any] = field(default_factory=dict)


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


def load_broker_keys(pem: bytes) -> list[BrokerKey]:
    """Every public key (or certificate's key) in a PEM file the owner declares for its broker."""
    keys: list[BrokerKey] = []
    for match in _PEM_BLOCK.finditer(pem):
        block = match.group(0)
        try:
            if match.group(1) == b"CERTIFICATE":
                key: Any = x509.load_pem_x509_certificate(block).public_key()
            else:
                key = serialization.load_pem_public_key(block)
        except ValueError as err:
            raise EvidenceFormatError(f"key-broker key file: unreadable PEM block: {err}") from err
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise EvidenceFormatError("key-broker keys must be EC or RSA public keys")
        keys.append(key)
    if not keys:
        raise EvidenceFormatError("key-broker key file holds no PEM public key or certificate")
    return keys


def _b64url(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as err:
        raise EvidenceFormatError(f"key-release receipt: bad base64url: {err}") from err


def _parse(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    if len(token) > MAX_RECEIPT:
        raise EvidenceFormatError(f"key-release receipt larger than {MAX_RECEIPT} bytes")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise EvidenceFormatError("key-release receipt is not a compact JWS (three parts)")
    try:
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
    except ValueError as err:
        raise EvidenceFormatError(f"key-release receipt: header or claims not JSON: {err}") from err
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise EvidenceFormatError("key-release receipt: header and claims must be JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), _b64url(parts[2])


def _signature_ok(alg: str, key: BrokerKey, signed: bytes, sig: bytes) -> bool:
    try:
        if alg in _EC_ALGS and isinstance(key, ec.EllipticCurvePublicKey):
            curve, digest, size = _EC_ALGS[alg]
            if not isinstance(key.curve, curve) or len(sig) != 2 * size:
                return False
            der = encode_dss_signature(
                int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
            )
            key.verify(der, signed, ec.ECDSA(digest))
            return True
        if alg in _RSA_ALGS and isinstance(key, rsa.RSAPublicKey):
            digest, pss = _RSA_ALGS[alg]
            pad: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
                if pss
                else padding.PKCS1v15()
            )
            key.verify(sig, signed, pad, digest)
            return True
    except InvalidSignature:
        return False
    return False


def verify_key_release(
    token: str,
    broker_keys: Sequence[BrokerKey],
    identity: str,
    report_data_hex: str,
) -> KeyReleaseResult:
    """Check a receipt: signed by a declared broker key, for this VM and this attested report."""
    result = KeyReleaseResult()
    try:
        header, claims, signed, sig = _parse(token)
    except EvidenceFormatError as err:
        result.checks.append(Check("key_release_parse", False, str(err)))
        return result
    result.claims = claims
    result.checks.append(Check("key_release_parse", True, "compact JWS with JSON claims"))
    alg = str(header.get("alg", ""))
    if alg not in _EC_ALGS and alg not in _RSA_ALGS:
        result.checks.append(
            Check("key_release_signature", False, f"algorithm {alg!r} is not accepted")
        )
    elif not broker_keys:
        result.checks.append(
            Check(
                "key_release_signature",
                False,
                "no key-broker key declared (--key-broker-key): the receipt cannot be checked",
            )
        )
    else:
        ok = any(_signature_ok(alg, key, signed, sig) for key in broker_keys)
        result.checks.append(
            Check(
                "key_release_signature",
                ok,
                f"{alg} signature by a declared key-broker key"
                if ok
                else "the signature does not verify with any declared key-broker key",
            )
        )
    sub = str(claims.get("sub", ""))
    result.checks.append(
        Check(
            "key_release_vm",
            sub == identity,
            f"receipt names {sub!r}" + ("" if sub == identity else f", not {identity!r}"),
        )
    )
    seen = str(claims.get("report_data", "")).lower()
    result.checks.append(
        Check(
            "key_release_report",
            seen == report_data_hex.lower(),
            "the broker released the key against this report's REPORT_DATA"
            if seen == report_data_hex.lower()
            else "the receipt was issued for another attestation (REPORT_DATA differs)",
        )
    )
    return result


def sign_key_release(
    key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], kid: str | None = None
) -> str:
    """Issue a receipt (ES384): what an owner's broker does; used by the demo fleet and tests."""
    header: dict[str, Any] = {"alg": "ES384", "typ": "JWT"}
    if kid:
        header["kid"] = kid

    def enc(obj: Any) -> str:
        raw = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    signing_input = f"{enc(header)}.{enc(claims)}".encode("ascii")
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA384())))
    sig = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    return signing_input.decode("ascii") + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
