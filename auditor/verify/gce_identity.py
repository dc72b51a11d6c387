"""GCE Shielded VM identity: the vTPM EK certificate, its chain, and whose instance it names.

Google signs each vTPM's EK certificate with its EK/AK CA and puts the instance's identity in
extension 1.3.6.1.4.1.11129.2.1.21 (layout as go-tpm-tools' server/verify.go reads it):
SEQUENCE { zone UTF8String, projectNumber INTEGER, projectId UTF8String, instanceId INTEGER,
instanceName UTF8String, [0] EXPLICIT SEQUENCE { [n] EXPLICIT INTEGER|BOOLEAN ... } OPTIONAL }.
A verified chain shows the vTPM is Google's; it does not take Google out of the trust set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from auditor.verify.anchors import TrustStore
from auditor.verify.checks import Check, CheckedResult
from auditor.verify.der import DerError, children, tlv
from auditor.verify.errors import CERT_ERRORS, decoded
from auditor.verify.x509chain import verify_chain

_PEM_ERRORS: tuple[type[Exception], ...] = (*CERT_ERRORS, UnicodeEncodeError)

IDENTITY_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.1.21")
MAX_PEM = 64 * 1024
_SECURITY_NAMES = {0: "security_version", 1: "is_production"}


def _scalar(tag: int, value: bytes) -> Any:
    if tag == 0x02:
        return int.from_bytes(value, "big", signed=True)
    if tag == 0x01:
        return value != b"\x00"
    if tag == 0x0C:
        return value.decode("utf-8")
    raise DerError(f"unexpected DER tag 0x{tag:02x}")


@dataclass(frozen=True)
class GceIdentity:
    zone: str
    project_number: int
    project_id: str
    instance_id: int
    instance_name: str
    security: dict[str, Any] = field(default_factory=dict)


def parse_identity(der: bytes) -> GceIdentity:
    """Decode the instance-identity extension value; DerError on anything malformed."""
    tag, body, end = tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise DerError("identity extension is not one SEQUENCE")
    items = children(body)
    if len(items) < 5:
        raise DerError("identity extension has fewer than 5 fields")
    expected = (0x0C, 0x02, 0x0C, 0x02, 0x0C)
    for (t, _), want in zip(items[:5], expected, strict=True):
        if t != want:
            raise DerError(f"identity field has tag 0x{t:02x}, expected 0x{want:02x}")
    values = [_scalar(t, v) for t, v in items[:5]]
    security: dict[str, Any] = {}
    for t, v in items[5:]:
        if t == 0xA0:
            inner_tag, inner, _ = tlv(v, 0)
            if inner_tag != 0x30:
                raise DerError("security properties are not a SEQUENCE")
            for ctag, cval in children(inner):
                if ctag & 0xE0 != 0xA0:
                    raise DerError("security property is not context-tagged")
                num = ctag & 0x1F
                stag, sval, _ = tlv(cval, 0)
                security[_SECURITY_NAMES.get(num, f"property_{num}")] = _scalar(stag, sval)
    return GceIdentity(
        zone=values[0],
        project_number=values[1],
        project_id=values[2],
        instance_id=values[3],
        instance_name=values[4],
        security=security,
    )


@dataclass
class EkResult(CheckedResult):
    """All checks on one EK certificate; `ok` only when every check passed."""

    identity: GceIdentity | None = None
    root_fingerprint: str | None = None


@dataclass(frozen=True)
class Expected:
    """The instance the certificate must name (from the control plane's own record)."""

    project_id: str
    instance_id: str
    instance_name: str
    zone: str


def verify_ek_certificate(
    cert_pem: str,
    ek_pub_pem: str | None,
    store: TrustStore,
    at: datetime,
    expected: Expected,
) -> EkResult:
    """Parse, chain to Google's pinned roots, bind to the EK public key and to this instance."""
    result = EkResult()
    if not cert_pem or len(cert_pem) > MAX_PEM:
        result.checks.append(Check("parse", False, "EK certificate missing or oversized"))
        return result
    try:
        cert = decoded(x509.load_pem_x509_certificate(cert_pem.encode("ascii")), "EK certificate")
    except _PEM_ERRORS as err:
        result.checks.append(Check("parse", False, f"EK certificate does not parse: {err}"))
        return result
    result.checks.append(Check("parse", True, "EK certificate parses"))

    chain = verify_chain(cert, store, at)
    result.checks.append(Check("chain", chain.ok, chain.reason))
    result.root_fingerprint = chain.root_fingerprint

    if ek_pub_pem:
        try:
            given = serialization.load_pem_public_key(ek_pub_pem.encode("ascii"))
            same = given.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ) == cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            result.checks.append(
                Check(
                    "key_binding",
                    same,
                    "EK public key equals the certificate's key"
                    if same
                    else "EK public key differs from the certificate's key",
                )
            )
        except (ValueError, UnicodeEncodeError) as err:
            result.checks.append(Check("key_binding", False, f"ekPub does not parse: {err}"))

    try:
        ext = cert.extensions.get_extension_for_oid(IDENTITY_OID)
    except x509.ExtensionNotFound:
        result.checks.append(
            Check("identity", False, "no instance-identity extension (1.3.6.1.4.1.11129.2.1.21)")
        )
        return result
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    try:
        ident = parse_identity(raw)
    except DerError as err:
        result.checks.append(Check("identity", False, f"instance-identity extension: {err}"))
        return result
    result.identity = ident
    mismatches = [
        f"{what} {got!r} != {want!r}"
        for what, got, want in (
            ("instance id", str(ident.instance_id), expected.instance_id),
            ("project", ident.project_id, expected.project_id),
            ("zone", ident.zone, expected.zone),
            ("name", ident.instance_name, expected.instance_name),
        )
        if got != want
    ]
    result.checks.append(
        Check(
            "identity",
            not mismatches,
            "certificate names this instance"
            if not mismatches
            else "certificate names another instance: " + ", ".join(mismatches),
        )
    )
    return result
