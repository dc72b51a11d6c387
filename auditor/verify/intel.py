"""Intel DCAP trust material: the pinned SGX root, PCK certificates, CRLs and signed collateral.

A TDX quote is only as good as the chain behind it: the PCK certificate (whose SGX extensions
name the platform's FMSPC and TCB) must chain to the Intel SGX Root CA pinned here, and Intel's
signed TCB Info and QE Identity decide whether that platform and its quoting enclave are up to
date. The quote layout itself lives in `tdx.py`; this module knows nothing about TDs.
"""

from __future__ import annotations

import binascii
import itertools
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from auditor.verify.anchors import TrustStore, fingerprint, load_pinned
from auditor.verify.der import DerError, children
from auditor.verify.errors import CERT_ERRORS, EvidenceFormatError, decoded

INTEL_ROOT_NAME = "Intel SGX Root CA"
INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
INTEL_PINS: dict[str, tuple[str, bool]] = {"intel_sgx_root_ca.pem": (INTEL_ROOT_SHA256, True)}

SGX_EXTENSIONS_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX = "1.2.840.113741.1.13.1"
_OID_PPID = f"{_SGX}.1"
_OID_TCB = f"{_SGX}.2"
_OID_PCEID = f"{_SGX}.3"
_OID_FMSPC = f"{_SGX}.4"
_OID_SGX_TYPE = f"{_SGX}.5"
_OID_PCESVN = f"{_SGX}.2.17"
_OID_CPUSVN = f"{_SGX}.2.18"

#: Statuses Intel publishes; only these two mean "patched" (the second needs software mitigations).
ACCEPTED_TCB_STATUSES = ("UpToDate", "SWHardeningNeeded")


@lru_cache(maxsize=1)
def intel_root_store() -> TrustStore:
    """The Intel SGX Root CA: the only anchor a PCK or collateral signing chain may end in."""
    return load_pinned("intel", INTEL_PINS, INTEL_ROOT_NAME)


# ---------------------------------------------------------------------------------------------
# Certificates and chains


def load_pem_chain(pem: bytes, what: str) -> list[x509.Certificate]:
    """PEM certificates in order; quotes pad their embedded chain with NUL bytes."""
    text = pem.replace(b"\x00", b"").strip()
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise EvidenceFormatError(f"{what}: no PEM certificate found")
    try:
        certs = x509.load_pem_x509_certificates(text)
    except CERT_ERRORS as err:
        raise EvidenceFormatError(f"{what}: unreadable PEM certificate ({err})") from err
    # cryptography decodes these lazily: force it here (a duplicated extension included), not
    # mid-check
    return [decoded(cert, f"{what}: unreadable PEM certificate") for cert in certs]


@dataclass
class ChainCheck:
    ok: bool
    reason: str
    root_sha256: str | None = None


def _p256(cert: x509.Certificate) -> bool:
    key = cert.public_key()
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


def _signed_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def verify_intel_chain(certs: Sequence[x509.Certificate], what: str) -> ChainCheck:
    """Each certificate signed by the next, ECDSA P-256, ending in the pinned Intel root.

    Validity dates are checked separately (`validity_problem`) so that a chain can be judged on
    signatures alone when no audit time is given.
    """
    store = intel_root_store()
    if not certs:
        return ChainCheck(False, f"{what}: no certificates")
    chain = list(certs)
    root = store.roots[0]
    if fingerprint(chain[-1]) != fingerprint(root):
        if chain[-1].subject == chain[-1].issuer:
            return ChainCheck(
                False,
                f"{what}: ends in self-signed '{chain[-1].subject.rfc4514_string()}' "
                f"(sha256 {fingerprint(chain[-1])}), not the pinned {INTEL_ROOT_NAME}",
            )
        chain.append(root)
    for child, parent in itertools.pairwise(chain):
        name = child.subject.rfc4514_string()
        if not _p256(child):
            return ChainCheck(False, f"{what}: '{name}' does not carry an ECDSA P-256 key")
        if child.issuer != parent.subject or not _signed_by(child, parent):
            return ChainCheck(
                False,
                f"{what}: '{name}' is not signed by '{parent.subject.rfc4514_string()}'",
            )
    if not _signed_by(root, root):
        return ChainCheck(False, f"{what}: the pinned root's self-signature does not verify")
    path = " -> ".join(common_name(c) for c in chain)
    return ChainCheck(True, f"{what}: {path} (pinned)", fingerprint(root))


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else cert.subject.rfc4514_string()
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def validity_problem(certs: Sequence[x509.Certificate], at: datetime) -> str | None:
    for cert in certs:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            return (
                f"'{cert.subject.rfc4514_string()}' is not valid at {at.isoformat()} "
                f"(valid {cert.not_valid_before_utc.isoformat()} to "
                f"{cert.not_valid_after_utc.isoformat()})"
            )
    return None


def ecdsa_p256_verify(key: ec.EllipticCurvePublicKey, raw_signature: bytes, data: bytes) -> bool:
    """Verify an Intel-style raw r||s (big-endian, 32 bytes each) ECDSA-P256-SHA256 signature."""
    if len(raw_signature) != 64:
        return False
    der = encode_dss_signature(
        int.from_bytes(raw_signature[:32], "big"), int.from_bytes(raw_signature[32:], "big")
    )
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def p256_key_from_raw(raw: bytes) -> ec.EllipticCurvePublicKey | None:
    """The quote's attestation key: 64 bytes X||Y; None if it is not a point on P-256."""
    if len(raw) != 64:
        return None
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# PCK certificate SGX extensions (minimal DER reader: SEQUENCE / OID / INTEGER / OCTET STRING)


def _children(data: bytes) -> list[tuple[int, bytes]]:
    try:
        return children(data)
    except DerError as err:
        raise EvidenceFormatError(f"PCK SGX extension: {err}") from err


def _oid(value: bytes) -> str:
    if not value:
        raise EvidenceFormatError("PCK SGX extension: empty OID")
    parts = [value[0] // 40, value[0] % 40]
    acc = 0
    for byte in value[1:]:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(acc)
            acc = 0
    return ".".join(str(p) for p in parts)


def _pairs(value: bytes) -> dict[str, tuple[int, bytes]]:
    """SEQUENCE OF SEQUENCE { OID, value } -> {oid: (tag, value)}."""
    out: dict[str, tuple[int, bytes]] = {}
    for tag, inner in _children(value):
        if tag != 0x30:
            raise EvidenceFormatError("PCK SGX extension: entry is not a SEQUENCE")
        items = _children(inner)
        if len(items) != 2 or items[0][0] != 0x06:
            raise EvidenceFormatError("PCK SGX extension: entry is not {OID, value}")
        out[_oid(items[0][1])] = items[1]
    return out


def _der_int(item: tuple[int, bytes], name: str) -> int:
    tag, value = item
    if tag not in (0x02, 0x0A) or not value or len(value) > 8:
        raise EvidenceFormatError(f"PCK SGX extension: {name} is not a small INTEGER")
    return int.from_bytes(value, "big", signed=False)


def _der_octets(item: tuple[int, bytes], name: str, size: int) -> bytes:
    tag, value = item
    if tag != 0x04 or len(value) != size:
        raise EvidenceFormatError(f"PCK SGX extension: {name} is not a {size}-byte OCTET STRING")
    return value


@dataclass(frozen=True)
class PckExtensions:
    fmspc: bytes
    pce_id: bytes
    pcesvn: int
    cpusvn: bytes
    sgx_tcb_components: tuple[int, ...]  # comp SVN 01..16
    ppid: bytes | None = None
    sgx_type: int | None = None


def parse_pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """Decode the SGX extensions (OID 1.2.840.113741.1.13.1) of a PCK certificate."""
    try:
        ext = cert.extensions.get_extension_for_oid(SGX_EXTENSIONS_OID)
    except x509.ExtensionNotFound as err:
        raise EvidenceFormatError(
            "PCK certificate has no SGX extensions (1.2.840.113741.1.13.1)"
        ) from err
    except CERT_ERRORS as err:
        raise EvidenceFormatError(f"PCK certificate extensions unreadable: {err}") from err
    raw = ext.value
    if not isinstance(raw, x509.UnrecognizedExtension):
        raise EvidenceFormatError("PCK certificate SGX extension is not raw DER")
    top = _children(raw.value)
    if len(top) != 1 or top[0][0] != 0x30:
        raise EvidenceFormatError("PCK SGX extension is not one SEQUENCE")
    fields = _pairs(top[0][1])
    for needed, name in ((_OID_TCB, "TCB"), (_OID_PCEID, "PCE-ID"), (_OID_FMSPC, "FMSPC")):
        if needed not in fields:
            raise EvidenceFormatError(f"PCK SGX extension lacks {name} ({needed})")
    tcb_tag, tcb_value = fields[_OID_TCB]
    if tcb_tag != 0x30:
        raise EvidenceFormatError("PCK SGX extension: TCB is not a SEQUENCE")
    tcb = _pairs(tcb_value)
    comps = []
    for i in range(1, 17):
        oid = f"{_OID_TCB}.{i}"
        if oid not in tcb:
            raise EvidenceFormatError(f"PCK SGX extension lacks SGX TCB comp SVN {i:02d}")
        comps.append(_der_int(tcb[oid], f"SGX TCB comp SVN {i:02d}"))
    if _OID_PCESVN not in tcb or _OID_CPUSVN not in tcb:
        raise EvidenceFormatError("PCK SGX extension lacks PCESVN or CPUSVN")
    return PckExtensions(
        fmspc=_der_octets(fields[_OID_FMSPC], "FMSPC", 6),
        pce_id=_der_octets(fields[_OID_PCEID], "PCE-ID", 2),
        pcesvn=_der_int(tcb[_OID_PCESVN], "PCESVN"),
        cpusvn=_der_octets(tcb[_OID_CPUSVN], "CPUSVN", 16),
        sgx_tcb_components=tuple(comps),
        ppid=_der_octets(fields[_OID_PPID], "PPID", 16) if _OID_PPID in fields else None,
        sgx_type=_der_int(fields[_OID_SGX_TYPE], "SGX type") if _OID_SGX_TYPE in fields else None,
    )


# ---------------------------------------------------------------------------------------------
# SGX report body (the QE report inside a quote)

SGX_REPORT_SIZE = 384


@dataclass(frozen=True)
class SgxReportBody:
    cpusvn: bytes
    miscselect: int
    attributes: bytes
    mrenclave: bytes
    mrsigner: bytes
    isvprodid: int
    isvsvn: int
    report_data: bytes


def parse_sgx_report(body: bytes) -> SgxReportBody:
    if len(body) != SGX_REPORT_SIZE:
        raise EvidenceFormatError(f"SGX report body is {len(body)} bytes, expected 384")
    miscselect = struct.unpack_from("<I", body, 16)[0]
    isvprodid, isvsvn = struct.unpack_from("<HH", body, 256)
    return SgxReportBody(
        cpusvn=body[0:16],
        miscselect=miscselect,
        attributes=body[48:64],
        mrenclave=body[64:96],
        mrsigner=body[128:160],
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        report_data=body[320:384],
    )


# ---------------------------------------------------------------------------------------------
# CRLs


def load_crl(data: bytes, what: str) -> x509.CertificateRevocationList:
    """Intel PCS serves CRLs as DER, PEM or hex-encoded DER depending on the API version."""
    stripped = data.strip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(stripped)
        if stripped[:1] == b"\x30":
            return x509.load_der_x509_crl(stripped)
        return x509.load_der_x509_crl(binascii.unhexlify(stripped))
    except (ValueError, binascii.Error) as err:
        raise EvidenceFormatError(f"{what}: not a CRL in DER, PEM or hex ({err})") from err


def crl_problem(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    subject: x509.Certificate,
    what: str,
    at: datetime | None,
) -> str | None:
    """None when `crl` is signed by `issuer`, current at `at`, and does not list `subject`."""
    if crl.issuer != issuer.subject:
        return (
            f"{what} is issued by '{crl.issuer.rfc4514_string()}', not "
            f"'{issuer.subject.rfc4514_string()}'"
        )
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(key):
        return f"{what} signature does not verify with '{issuer.subject.rfc4514_string()}'"
    if at is not None and crl.next_update_utc is not None and at > crl.next_update_utc:
        return f"{what} expired at {crl.next_update_utc.isoformat()}"
    revoked = crl.get_revoked_certificate_by_serial_number(subject.serial_number)
    if revoked is not None:
        return (
            f"'{subject.subject.rfc4514_string()}' (serial {subject.serial_number:x}) is revoked "
            f"by {what} since {revoked.revocation_date_utc.isoformat()}"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Signed collateral (TCB Info, QE Identity)


@dataclass
class SignedCollateral:
    name: str  # "tcbInfo" or "enclaveIdentity"
    body: dict[str, Any]
    signed_bytes: bytes
    signature: bytes


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _top_level_values(text: str, what: str) -> dict[str, tuple[int, int]]:
    """Character spans of each top-level value, found with the JSON scanner itself."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "{":
        raise EvidenceFormatError(f"{what} is not a JSON object")
    pos = _skip_ws(text, pos + 1)
    while pos < len(text) and text[pos] != "}":
        key, pos = decoder.raw_decode(text, pos)
        if not isinstance(key, str):
            raise EvidenceFormatError(f"{what}: JSON object key is not a string")
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] != ":":
            raise EvidenceFormatError(f"{what}: malformed JSON after key {key!r}")
        start = _skip_ws(text, pos + 1)
        _, end = decoder.raw_decode(text, start)
        spans[key] = (start, end)
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
    return spans


def parse_signed_collateral(raw: bytes, name: str, what: str) -> SignedCollateral:
    """Split an Intel PCS response into the exact signed bytes of `name` and its signature."""
    try:
        text = raw.decode("utf-8")
        json.loads(text)
        spans = _top_level_values(text, what)
    except (ValueError, RecursionError) as err:
        raise EvidenceFormatError(f"{what} is not valid JSON ({err})") from err
    if name not in spans or "signature" not in spans:
        raise EvidenceFormatError(f"{what} lacks '{name}' or 'signature'")
    start, end = spans[name]
    signed_text = text[start:end]
    body = json.loads(signed_text)
    sig_start, sig_end = spans["signature"]
    sig_hex = json.loads(text[sig_start:sig_end])
    if not isinstance(body, dict) or not isinstance(sig_hex, str):
        raise EvidenceFormatError(f"{what}: '{name}' is not an object or signature not a string")
    try:
        signature = bytes.fromhex(sig_hex)
    except ValueError as err:
        raise EvidenceFormatError(f"{what}: signature is not hex") from err
    return SignedCollateral(name, body, signed_text.encode("utf-8"), signature)


def collateral_signature_problem(
    collateral: SignedCollateral, chain: Sequence[x509.Certificate], what: str
) -> str | None:
    """None when the collateral verifies under a chain to the pinned Intel root."""
    checked = verify_intel_chain(chain, f"{what} issuer chain")
    if not checked.ok:
        return checked.reason
    key = chain[0].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return f"{what} signer does not carry an EC key"
    if not ecdsa_p256_verify(key, collateral.signature, collateral.signed_bytes):
        return (
            f"{what} signature does not verify with "
            f"'{chain[0].subject.rfc4514_string()}' over the exact '{collateral.name}' bytes"
        )
    return None


# ---------------------------------------------------------------------------------------------
# TCB level evaluation (Intel PCS TDX TCB Info v3, QE Identity v2)


@dataclass
class TcbEvaluation:
    status: str | None  # None: no matching level
    reason: str
    tcb_date: str | None = None
    advisory_ids: list[str] = field(default_factory=list)


def _svns(components: Any, what: str) -> list[int]:
    if not isinstance(components, list) or len(components) != 16:
        raise EvidenceFormatError(f"{what} does not list 16 components")
    out = []
    for comp in components:
        svn = comp.get("svn") if isinstance(comp, dict) else None
        if not isinstance(svn, int):
            raise EvidenceFormatError(f"{what} has a component without an integer svn")
        out.append(svn)
    return out


def _masked_equal(value: bytes, expected_hex: Any, mask_hex: Any) -> bool:
    try:
        expected = bytes.fromhex(str(expected_hex))
        mask = bytes.fromhex(str(mask_hex))
    except ValueError:
        return False
    if len(expected) != len(value) or len(mask) != len(value):
        return False
    return all((v & m) == e for v, m, e in zip(value, mask, expected, strict=True))


def _level_isvsvn(level: Any, what: str) -> int:
    tcb = level.get("tcb") if isinstance(level, dict) else None
    isvsvn = tcb.get("isvsvn") if isinstance(tcb, dict) else None
    if not isinstance(isvsvn, int):
        raise EvidenceFormatError(f"{what} level without an integer isvsvn")
    return isvsvn


def evaluate_tdx_tcb(
    tcb_info: dict[str, Any],
    pck: PckExtensions,
    tee_tcb_svn: bytes,
    mrsignerseam: bytes,
    seam_attributes: bytes,
) -> TcbEvaluation:
    """Pick the first TCB level the platform meets (Intel's TDX algorithm) and read its status."""
    if tcb_info.get("id") != "TDX":
        return TcbEvaluation(None, f"TCB Info id is {tcb_info.get('id')!r}, not 'TDX'")
    fmspc = str(tcb_info.get("fmspc", "")).lower()
    if fmspc != pck.fmspc.hex():
        return TcbEvaluation(
            None, f"TCB Info is for FMSPC {fmspc}, the PCK certificate says {pck.fmspc.hex()}"
        )
    if str(tcb_info.get("pceId", "")).lower() != pck.pce_id.hex():
        return TcbEvaluation(None, "TCB Info PCE-ID differs from the PCK certificate's")
    module = tcb_info.get("tdxModule")
    if isinstance(module, dict) and not (
        _masked_equal(seam_attributes, module.get("attributes"), module.get("attributesMask"))
        and str(module.get("mrsigner", "")).lower() == mrsignerseam.hex()
    ):
        return TcbEvaluation(
            None, "MRSIGNERSEAM/SEAMATTRIBUTES do not match the TCB Info tdxModule"
        )
    module_note = ""
    first_tdx_component = 0
    identities = tcb_info.get("tdxModuleIdentities")
    if tee_tcb_svn[1] > 0 and isinstance(identities, list):
        module_id = f"TDX_{tee_tcb_svn[1]:02d}"
        identity = next(
            (i for i in identities if isinstance(i, dict) and i.get("id") == module_id), None
        )
        if identity is None:
            return TcbEvaluation(None, f"TCB Info has no module identity {module_id}")
        module_levels = identity.get("tcbLevels")
        match = next(
            (
                lv
                for lv in (module_levels if isinstance(module_levels, list) else [])
                if tee_tcb_svn[0] >= _level_isvsvn(lv, "TCB Info module identity")
            ),
            None,
        )
        if match is None:
            return TcbEvaluation(
                None, f"TDX module {module_id} SVN {tee_tcb_svn[0]} matches no level"
            )
        if match.get("tcbStatus") not in ACCEPTED_TCB_STATUSES:
            module_note = f"; TDX module {module_id} is {match.get('tcbStatus')}"
        first_tdx_component = 2
    levels = tcb_info.get("tcbLevels")
    if not isinstance(levels, list):
        raise EvidenceFormatError("TCB Info has no tcbLevels list")
    for level in levels:
        tcb = level.get("tcb") if isinstance(level, dict) else None
        if not isinstance(tcb, dict):
            raise EvidenceFormatError("TCB Info level without a 'tcb' object")
        sgx = _svns(tcb.get("sgxtcbcomponents"), "TCB Info sgxtcbcomponents")
        tdx = _svns(tcb.get("tdxtcbcomponents"), "TCB Info tdxtcbcomponents")
        pcesvn = tcb.get("pcesvn")
        if not isinstance(pcesvn, int):
            raise EvidenceFormatError("TCB Info level without an integer pcesvn")
        if any(have < need for have, need in zip(pck.sgx_tcb_components, sgx, strict=True)):
            continue
        if pck.pcesvn < pcesvn:
            continue
        if any(tee_tcb_svn[i] < tdx[i] for i in range(first_tdx_component, 16)):
            continue
        if tdx[1] != tee_tcb_svn[1]:
            return TcbEvaluation(
                None,
                f"selected TCB level has TDX module major SVN {tdx[1]}, the quote {tee_tcb_svn[1]}",
            )
        status = str(level.get("tcbStatus"))
        advisories = [str(a) for a in level.get("advisoryIDs", []) if isinstance(a, str)]
        reason = f"TCB level {level.get('tcbDate')}: {status}{module_note}"
        if module_note:
            status = "OutOfDate"
        return TcbEvaluation(status, reason, level.get("tcbDate"), advisories)
    return TcbEvaluation(
        None,
        f"no matching TCB level (PCK SGX SVNs {list(pck.sgx_tcb_components[:8])}, PCESVN "
        f"{pck.pcesvn}, TEE_TCB_SVN {tee_tcb_svn.hex()})",
    )


def evaluate_qe_identity(identity: dict[str, Any], qe: SgxReportBody) -> TcbEvaluation:
    """Match the QE report against Intel's QE Identity and read the QE's TCB status."""
    if identity.get("id") not in ("TD_QE", "QE"):
        return TcbEvaluation(None, f"QE Identity id is {identity.get('id')!r}, not 'TD_QE'")
    if str(identity.get("mrsigner", "")).lower() != qe.mrsigner.hex():
        return TcbEvaluation(None, "QE MRSIGNER differs from Intel's QE Identity")
    if identity.get("isvprodid") != qe.isvprodid:
        return TcbEvaluation(None, f"QE ISVPRODID {qe.isvprodid} differs from Intel's QE Identity")
    if not _masked_equal(
        qe.miscselect.to_bytes(4, "big"), identity.get("miscselect"), identity.get("miscselectMask")
    ):
        return TcbEvaluation(None, "QE MISCSELECT does not match Intel's QE Identity")
    if not _masked_equal(qe.attributes, identity.get("attributes"), identity.get("attributesMask")):
        return TcbEvaluation(None, "QE ATTRIBUTES do not match Intel's QE Identity")
    levels = identity.get("tcbLevels")
    if not isinstance(levels, list):
        raise EvidenceFormatError("QE Identity has no tcbLevels list")
    for level in levels:
        if qe.isvsvn >= _level_isvsvn(level, "QE Identity"):
            status = str(level.get("tcbStatus"))
            return TcbEvaluation(status, f"QE ISVSVN {qe.isvsvn}: {status}", level.get("tcbDate"))
    return TcbEvaluation(None, f"QE ISVSVN {qe.isvsvn} matches no QE Identity TCB level")


def collateral_expiry_problem(body: dict[str, Any], what: str, at: datetime) -> str | None:
    next_update = body.get("nextUpdate")
    if not isinstance(next_update, str):
        return f"{what} has no nextUpdate"
    try:
        when = datetime.fromisoformat(next_update.replace("Z", "+00:00"))
    except ValueError:
        return f"{what} nextUpdate {next_update!r} is not a date"
    if at > when:
        return f"{what} expired at {next_update}"
    return None
