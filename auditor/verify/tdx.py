"""Intel TDX quotes (v4, v5) verified by the owner against the pinned Intel SGX Root CA.

A TDX quote is the hardware's own statement of what runs in a trust domain (MRTD, RTMR0-3) and
how (TD attributes: DEBUG lets the host read the TD's memory). Its worth rests on a chain the
cloud cannot forge: the quote is signed by an attestation key, that key is bound into a
quoting-enclave report, the report is signed by the platform's PCK key, and the PCK certificate
chains to Intel's root. Intel's signed collateral (TCB Info, QE Identity, CRLs) then says whether
the platform is patched. Every step is a named check with a reason.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from auditor.verify import intel
from auditor.verify.checks import Check, CheckedResult
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.eventlog import ccel_rtmrs

HEADER_SIZE = 48
TD_BODY_10_SIZE = 584  # TDX 1.0 TD report body
TD_BODY_15_SIZE = 648  # TDX 1.5: adds TEE_TCB_SVN_2 and MRSERVICETD
TEE_TYPE_TDX = 0x81
ATT_KEY_ECDSA_P256 = 2
CERT_DATA_QE_REPORT = 6
CERT_DATA_PCK_CHAIN = 5
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
_MAX_QUOTE = 1 << 20

TD_ATTR_DEBUG = 1 << 0
TD_ATTR_SEPT_VE_DISABLE = 1 << 28
TD_ATTR_MIGRATABLE = 1 << 29
TD_ATTR_PKS = 1 << 30
TD_ATTR_PERFMON = 1 << 63

AUTHENTICITY_CHECKS = ("pck_chain", "qe_report_signature", "qe_binding", "quote_signature")


@dataclass(frozen=True)
class TdxQuote:
    version: int
    att_key_type: int
    tee_type: int
    qe_vendor_id: bytes
    user_data: bytes
    tee_tcb_svn: bytes
    mrseam: bytes
    mrsignerseam: bytes
    seam_attributes: bytes
    td_attributes: int
    xfam: bytes
    mrtd: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    signed_bytes: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes
    raw: bytes
    body_type: int = 2
    tee_tcb_svn_2: bytes | None = None
    mrservicetd: bytes | None = None
    trailing_bytes: int = 0  # after the signature data, unsigned (zero padding on GCE)


class _Cursor:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, size: int, name: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise EvidenceFormatError(
                f"TDX quote truncated: {name} needs {size} bytes at offset {self.pos}, "
                f"{max(0, len(self.data) - self.pos)} left"
            )
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def u16(self, name: str) -> int:
        value: int = struct.unpack("<H", self.take(2, name))[0]
        return value

    def u32(self, name: str) -> int:
        value: int = struct.unpack("<I", self.take(4, name))[0]
        return value


def parse_quote(data: bytes) -> TdxQuote:
    """Parse a TDX quote v4 (or v5 with a TDX 1.0/1.5 body); EvidenceFormatError otherwise."""
    if len(data) > _MAX_QUOTE:
        raise EvidenceFormatError(f"TDX quote is {len(data)} bytes, larger than any real quote")
    cur = _Cursor(data)
    version = cur.u16("header version")
    att_key_type = cur.u16("header attestation key type")
    tee_type = cur.u32("header TEE type")
    cur.take(4, "header QE/PCE SVN")
    qe_vendor_id = cur.take(16, "header QE vendor id")
    user_data = cur.take(20, "header user data")
    if version not in (4, 5):
        raise EvidenceFormatError(f"unsupported TDX quote version {version} (4 and 5 are read)")
    if tee_type != TEE_TYPE_TDX:
        raise EvidenceFormatError(
            f"quote TEE type is 0x{tee_type:x}, not TDX (0x81)"
            + (": this is an SGX enclave quote" if tee_type == 0 else "")
        )
    if att_key_type != ATT_KEY_ECDSA_P256:
        raise EvidenceFormatError(
            f"quote attestation key type {att_key_type} is not ECDSA-256-with-P-256 (2)"
        )
    body_type = 2
    body_size = TD_BODY_10_SIZE
    if version == 5:
        body_type = cur.u16("v5 body type")
        body_size = cur.u32("v5 body size")
        expected = {2: TD_BODY_10_SIZE, 3: TD_BODY_15_SIZE}.get(body_type)
        if expected is None:
            raise EvidenceFormatError(
                f"quote v5 body type {body_type} is not a TD report (2 = TDX 1.0, 3 = TDX 1.5)"
            )
        if body_size != expected:
            raise EvidenceFormatError(
                f"quote v5 body type {body_type} declares {body_size} bytes, expected {expected}"
            )
    body = _Cursor(cur.take(body_size, "TD report body"))
    tee_tcb_svn = body.take(16, "TEE_TCB_SVN")
    mrseam = body.take(48, "MRSEAM")
    mrsignerseam = body.take(48, "MRSIGNERSEAM")
    seam_attributes = body.take(8, "SEAMATTRIBUTES")
    td_attributes = int.from_bytes(body.take(8, "TDATTRIBUTES"), "little")
    xfam = body.take(8, "XFAM")
    mrtd = body.take(48, "MRTD")
    mrconfigid = body.take(48, "MRCONFIGID")
    mrowner = body.take(48, "MROWNER")
    mrownerconfig = body.take(48, "MROWNERCONFIG")
    rtmrs = (
        body.take(48, "RTMR0"),
        body.take(48, "RTMR1"),
        body.take(48, "RTMR2"),
        body.take(48, "RTMR3"),
    )
    report_data = body.take(64, "REPORTDATA")
    tee_tcb_svn_2 = body.take(16, "TEE_TCB_SVN_2") if body_type == 3 else None
    mrservicetd = body.take(48, "MRSERVICETD") if body_type == 3 else None
    signed_bytes = data[: cur.pos]

    sig_len = cur.u32("signature data length")
    sig_data = _Cursor(cur.take(sig_len, "signature data"))
    # Bytes after the signature data are outside every signature: GCE zero-pads quotes to 8000
    # bytes and go-tdx-guest's sample appends a text marker. They are kept count of, never used.
    trailing = len(data) - cur.pos
    signature = sig_data.take(64, "quote signature")
    attestation_key = sig_data.take(64, "attestation key")
    cert_type = sig_data.u16("certification data type")
    if cert_type != CERT_DATA_QE_REPORT:
        raise EvidenceFormatError(
            f"quote certification data type {cert_type}, expected 6 (QE report certification data)"
        )
    cert = _Cursor(sig_data.take(sig_data.u32("certification data size"), "certification data"))
    qe_report = cert.take(intel.SGX_REPORT_SIZE, "QE report")
    qe_report_signature = cert.take(64, "QE report signature")
    qe_auth_data = cert.take(cert.u16("QE auth data size"), "QE auth data")
    inner_type = cert.u16("inner certification data type")
    if inner_type != CERT_DATA_PCK_CHAIN:
        raise EvidenceFormatError(
            f"quote inner certification data type {inner_type}, expected 5 (PCK certificate chain)"
        )
    pck_chain_pem = cert.take(cert.u32("PCK chain size"), "PCK certificate chain")
    return TdxQuote(
        version=version,
        att_key_type=att_key_type,
        tee_type=tee_type,
        qe_vendor_id=qe_vendor_id,
        user_data=user_data,
        tee_tcb_svn=tee_tcb_svn,
        mrseam=mrseam,
        mrsignerseam=mrsignerseam,
        seam_attributes=seam_attributes,
        td_attributes=td_attributes,
        xfam=xfam,
        mrtd=mrtd,
        mrconfigid=mrconfigid,
        mrowner=mrowner,
        mrownerconfig=mrownerconfig,
        rtmrs=rtmrs,
        report_data=report_data,
        signed_bytes=signed_bytes,
        signature=signature,
        attestation_key=attestation_key,
        qe_report=qe_report,
        qe_report_signature=qe_report_signature,
        qe_auth_data=qe_auth_data,
        pck_chain_pem=pck_chain_pem,
        raw=data,
        body_type=body_type,
        tee_tcb_svn_2=tee_tcb_svn_2,
        mrservicetd=mrservicetd,
        trailing_bytes=trailing,
    )


# ---------------------------------------------------------------------------------------------
# Collateral


@dataclass
class TdxCollateral:
    tcb_info: bytes  # the raw JSON response body, exactly as Intel PCS served it
    qe_identity: bytes
    tcb_info_chain: list[x509.Certificate]
    qe_identity_chain: list[x509.Certificate]
    pck_crl: bytes | None = None
    root_crl: bytes | None = None
    pck_crl_chain: list[x509.Certificate] = field(default_factory=list)


_COLLATERAL_NAMES: dict[str, tuple[str, ...]] = {
    "tcb_info": ("tcb_info.json", "sample_tcbInfo_response", "tcbInfo.json"),
    "qe_identity": ("qe_identity.json", "sample_qeIdentity_response", "qeIdentity.json"),
    "tcb_info_chain": ("tcb_info_chain.pem", "tcbInfoIssuerChain.pem"),
    "qe_identity_chain": ("qe_identity_chain.pem", "qeIdentityIssuerChain.pem"),
    "pck_crl": ("pck_crl.der", "pck_crl.pem", "pckcrl"),
    "root_crl": ("root_crl.der", "rootcrl.der", "root_crl.pem"),
    "pck_crl_chain": ("pck_crl_chain.pem", "pckCrlIssuerChain.pem"),
}
_REQUIRED = ("tcb_info", "qe_identity", "tcb_info_chain", "qe_identity_chain")


def load_collateral_dir(path: Path) -> TdxCollateral:
    """Read Intel PCS collateral saved in a folder (go-tdx-guest testdata names or plain names)."""
    if not path.is_dir():
        raise EvidenceFormatError(f"TDX collateral folder {path} does not exist")
    found: dict[str, bytes] = {}
    for key, names in _COLLATERAL_NAMES.items():
        for name in names:
            candidate = path / name
            if candidate.is_file():
                found[key] = candidate.read_bytes()
                break
    missing = [key for key in _REQUIRED if key not in found]
    if missing:
        wanted = "; ".join(" or ".join(_COLLATERAL_NAMES[key]) for key in missing)
        raise EvidenceFormatError(f"TDX collateral folder {path} lacks: {wanted}")
    return TdxCollateral(
        tcb_info=found["tcb_info"],
        qe_identity=found["qe_identity"],
        tcb_info_chain=intel.load_pem_chain(found["tcb_info_chain"], "TCB Info issuer chain"),
        qe_identity_chain=intel.load_pem_chain(
            found["qe_identity_chain"], "QE Identity issuer chain"
        ),
        pck_crl=found.get("pck_crl"),
        root_crl=found.get("root_crl"),
        pck_crl_chain=(
            intel.load_pem_chain(found["pck_crl_chain"], "PCK CRL issuer chain")
            if "pck_crl_chain" in found
            else []
        ),
    )


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass
class TdxOptions:
    at: datetime | None = None
    collateral: TdxCollateral | None = None
    expected_report_data: bytes | None = None
    reference_mrtd: Sequence[tuple[str, str]] = ()  # (label, MRTD hex)
    ccel_data: bytes | None = None


@dataclass
class TdxResult(CheckedResult):
    quote: TdxQuote | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    #: Part of the quote could not be read at all (its embedded certificates): the quote is
    #: unusable input, besides not verifying.
    format_error: str | None = None

    @property
    def authentic(self) -> bool:
        """The quote was produced by genuine Intel TDX hardware (signatures and chain hold)."""
        names = AUTHENTICITY_CHECKS + (
            ("cert_validity",) if self.check("cert_validity") is not None else ()
        )
        return all(self.check(name) is True for name in names)


def td_attributes_facts(td_attributes: int) -> dict[str, Any]:
    return {
        "raw": f"0x{td_attributes:016x}",
        "debug": bool(td_attributes & TD_ATTR_DEBUG),
        "sept_ve_disable": bool(td_attributes & TD_ATTR_SEPT_VE_DISABLE),
        "migratable": bool(td_attributes & TD_ATTR_MIGRATABLE),
        "pks": bool(td_attributes & TD_ATTR_PKS),
        "perfmon": bool(td_attributes & TD_ATTR_PERFMON),
    }


def td_debug_check(quote: TdxQuote) -> Check:
    """Policy: a TD with DEBUG set has no confidentiality against the host."""
    if quote.td_attributes & TD_ATTR_DEBUG:
        return Check("td_debug", False, "DEBUG=1: the host can read the TD's memory")
    return Check("td_debug", True, "DEBUG=0: TD memory is not readable through the debug interface")


def td_migratable_check(quote: TdxQuote) -> Check:
    """Policy: a MIGRATABLE TD can have its memory moved out by a migration TD."""
    if quote.td_attributes & TD_ATTR_MIGRATABLE:
        return Check(
            "td_migratable",
            False,
            "MIGRATABLE=1: a migration TD chosen by the host's operator can export the TD",
        )
    return Check("td_migratable", True, "MIGRATABLE=0: the TD cannot be migrated out")


def _certificate_facts(cert: x509.Certificate) -> dict[str, str]:
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string()}


def _check_signatures(quote: TdxQuote, chain: list[x509.Certificate], checks: list[Check]) -> None:
    leaf_key = chain[0].public_key() if chain else None
    if isinstance(leaf_key, ec.EllipticCurvePublicKey) and intel.ecdsa_p256_verify(
        leaf_key, quote.qe_report_signature, quote.qe_report
    ):
        checks.append(Check("qe_report_signature", True, "QE report is signed by the PCK key"))
    else:
        checks.append(
            Check(
                "qe_report_signature",
                False,
                "QE report signature does not verify with the PCK certificate's key",
            )
        )
    qe = intel.parse_sgx_report(quote.qe_report)
    expected = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest()
    if qe.report_data[:32] != expected:
        checks.append(
            Check(
                "qe_binding",
                False,
                "QE REPORTDATA[0:32] is not SHA-256(attestation key || QE auth data): the "
                "attestation key is not the one the quoting enclave vouched for",
            )
        )
    elif any(qe.report_data[32:]):
        checks.append(Check("qe_binding", False, "QE REPORTDATA[32:64] is not zero"))
    else:
        checks.append(
            Check("qe_binding", True, "attestation key is bound into the QE report's REPORTDATA")
        )
    att_key = intel.p256_key_from_raw(quote.attestation_key)
    if att_key is None:
        checks.append(Check("quote_signature", False, "attestation key is not a point on P-256"))
    elif intel.ecdsa_p256_verify(att_key, quote.signature, quote.signed_bytes):
        checks.append(
            Check("quote_signature", True, "header and TD report are signed by the attestation key")
        )
    else:
        checks.append(
            Check(
                "quote_signature",
                False,
                "quote signature does not verify over the header and TD report",
            )
        )


def _check_collateral(
    quote: TdxQuote,
    chain: list[x509.Certificate],
    collateral: TdxCollateral,
    at: datetime | None,
    checks: list[Check],
    facts: dict[str, Any],
) -> None:
    signed: dict[str, intel.SignedCollateral | None] = {}
    for check_name, raw, key, issuer_chain, what in (
        (
            "tcb_info_signature",
            collateral.tcb_info,
            "tcbInfo",
            collateral.tcb_info_chain,
            "TCB Info",
        ),
        (
            "qe_identity_signature",
            collateral.qe_identity,
            "enclaveIdentity",
            collateral.qe_identity_chain,
            "QE Identity",
        ),
    ):
        try:
            parsed = intel.parse_signed_collateral(raw, key, what)
        except EvidenceFormatError as err:
            checks.append(Check(check_name, False, str(err)))
            signed[key] = None
            continue
        problem = intel.collateral_signature_problem(parsed, issuer_chain, what)
        if problem is None and at is not None:
            problem = intel.validity_problem(issuer_chain, at)
        checks.append(
            Check(
                check_name, problem is None, problem or f"{what} is signed by Intel (pinned root)"
            )
        )
        signed[key] = parsed if problem is None else None
    checks.append(_tcb_status(quote, chain, signed, at, facts))
    if collateral.pck_crl is not None or collateral.root_crl is not None:
        checks.append(_crl_check(chain, collateral, at))


def _tcb_status(
    quote: TdxQuote,
    chain: list[x509.Certificate],
    signed: dict[str, intel.SignedCollateral | None],
    at: datetime | None,
    facts: dict[str, Any],
) -> Check:
    tcb_info, qe_identity = signed.get("tcbInfo"), signed.get("enclaveIdentity")
    if tcb_info is None or qe_identity is None:
        return Check(
            "tcb_status", False, "TCB status unknown: the TCB Info or QE Identity did not verify"
        )
    if not chain:
        return Check("tcb_status", False, "TCB status unknown: no PCK certificate")
    try:
        pck = intel.parse_pck_extensions(chain[0])
        platform = intel.evaluate_tdx_tcb(
            tcb_info.body, pck, quote.tee_tcb_svn, quote.mrsignerseam, quote.seam_attributes
        )
        qe = intel.evaluate_qe_identity(qe_identity.body, intel.parse_sgx_report(quote.qe_report))
    except EvidenceFormatError as err:
        return Check("tcb_status", False, f"TCB status unknown: {err}")
    facts["tcb_status"] = platform.status
    facts["qe_tcb_status"] = qe.status
    if platform.advisory_ids:
        facts["advisory_ids"] = platform.advisory_ids
    expiry = None
    if at is not None:
        expiry = intel.collateral_expiry_problem(
            tcb_info.body, "TCB Info", at
        ) or intel.collateral_expiry_problem(qe_identity.body, "QE Identity", at)
    if platform.status is None:
        return Check("tcb_status", False, platform.reason)
    if qe.status is None:
        return Check("tcb_status", False, qe.reason)
    reason = f"platform {platform.reason}; {qe.reason}"
    if expiry is not None:
        return Check("tcb_status", False, f"{reason}; but {expiry}")
    accepted = intel.ACCEPTED_TCB_STATUSES
    if platform.status not in accepted or qe.status not in accepted:
        if platform.advisory_ids:
            reason += f" (advisories {', '.join(platform.advisory_ids)})"
        return Check("tcb_status", False, reason)
    if "SWHardeningNeeded" in (platform.status, qe.status):
        reason += " (software hardening needed: check the TD's mitigations)"
    return Check("tcb_status", True, reason)


def _crl_check(
    chain: list[x509.Certificate], collateral: TdxCollateral, at: datetime | None
) -> Check:
    if len(chain) < 2:
        return Check("pck_crl", False, "PCK revocation unknown: the quote lacks the PCK issuer CA")
    leaf, pck_ca = chain[0], chain[1]
    root = intel.intel_root_store().roots[0]
    problems: list[str] = []
    notes: list[str] = []
    try:
        if collateral.pck_crl is not None:
            crl = intel.load_crl(collateral.pck_crl, "PCK CRL")
            problem = intel.crl_problem(crl, pck_ca, leaf, "PCK CRL", at)
            if problem:
                problems.append(problem)
            else:
                notes.append("PCK certificate not listed in the PCK CRL")
        if collateral.root_crl is not None:
            crl = intel.load_crl(collateral.root_crl, "Root CA CRL")
            problem = intel.crl_problem(crl, root, pck_ca, "Root CA CRL", at)
            if problem:
                problems.append(problem)
            else:
                notes.append("PCK CA not listed in the Root CA CRL")
    except (EvidenceFormatError, ValueError) as err:
        problems.append(f"CRL unusable: {err}")
    if problems:
        return Check("pck_crl", False, "; ".join(problems))
    return Check("pck_crl", True, "; ".join(notes))


def _rtmr_check(quote: TdxQuote, ccel_data: bytes) -> Check:
    try:
        replayed = ccel_rtmrs(ccel_data)
    except EvidenceFormatError as err:
        return Check("rtmr_replay", False, f"CCEL event log unusable: {err}")
    for i in range(4):
        if replayed[i] != quote.rtmrs[i]:
            return Check(
                "rtmr_replay",
                False,
                f"CCEL replay gives RTMR{i} {replayed[i].hex()[:16]}..., the quote says "
                f"{quote.rtmrs[i].hex()[:16]}...: the event log is not what was measured",
            )
    return Check("rtmr_replay", True, "CCEL event log replay reproduces RTMR0-3")


PCK_CA_NAMES = ("Intel SGX PCK Platform CA", "Intel SGX PCK Processor CA")


def _pck_chain_check(chain: list[x509.Certificate]) -> Check:
    """Leaf PCK certificate -> Platform or Processor CA -> pinned Intel SGX Root CA."""
    chained = intel.verify_intel_chain(chain, "PCK chain")
    if not chained.ok:
        return Check("pck_chain", False, chained.reason)
    leaf_name = intel.common_name(chain[0])
    if leaf_name != "Intel SGX PCK Certificate":
        return Check("pck_chain", False, f"PCK chain leaf is '{leaf_name}', not a PCK certificate")
    ca_name = intel.common_name(chain[1]) if len(chain) > 1 else ""
    if ca_name not in PCK_CA_NAMES:
        return Check(
            "pck_chain",
            False,
            f"PCK certificate is issued by '{ca_name or chain[0].issuer.rfc4514_string()}', "
            "not the PCK Platform or Processor CA",
        )
    return Check("pck_chain", True, chained.reason)


def _facts(quote: TdxQuote) -> dict[str, Any]:
    return {
        "version": quote.version,
        "tee_type": quote.tee_type,
        "qe_vendor_id": quote.qe_vendor_id.hex(),
        "intel_qe": quote.qe_vendor_id == INTEL_QE_VENDOR_ID,
        "td_attributes": td_attributes_facts(quote.td_attributes),
        "xfam": quote.xfam.hex(),
        "mrtd": quote.mrtd.hex(),
        "mrseam": quote.mrseam.hex(),
        "mrsignerseam": quote.mrsignerseam.hex(),
        "mrconfigid": quote.mrconfigid.hex(),
        "mrowner": quote.mrowner.hex(),
        "mrownerconfig": quote.mrownerconfig.hex(),
        "rtmr": [r.hex() for r in quote.rtmrs],
        "report_data": quote.report_data.hex(),
        "tee_tcb_svn": quote.tee_tcb_svn.hex(),
        "trailing_bytes": quote.trailing_bytes,
        "trust_anchor": intel.INTEL_ROOT_NAME,
        "root_sha256": intel.INTEL_ROOT_SHA256,
    }


def verify_tdx(quote: bytes | TdxQuote, options: TdxOptions | None = None) -> TdxResult:
    """Verify a TDX quote: signatures and chain always, policy and collateral when given."""
    opts = options or TdxOptions()
    parsed = quote if isinstance(quote, TdxQuote) else parse_quote(quote)
    result = TdxResult(quote=parsed, facts=_facts(parsed))
    checks = result.checks
    checks.append(Check("parse", True, f"TDX quote v{parsed.version}, {len(parsed.raw)} bytes"))
    chain: list[x509.Certificate] = []
    try:
        chain = intel.load_pem_chain(parsed.pck_chain_pem, "PCK certificate chain in the quote")
    except EvidenceFormatError as err:
        checks.append(Check("pck_chain", False, str(err)))
        result.format_error = str(err)
    if chain:
        checks.append(_pck_chain_check(chain))
        result.facts["pck"] = _certificate_facts(chain[0])
        try:
            pck = intel.parse_pck_extensions(chain[0])
            result.facts["fmspc"] = pck.fmspc.hex()
            result.facts["pce_id"] = pck.pce_id.hex()
        except EvidenceFormatError as err:
            result.facts["pck_extensions_error"] = str(err)
        if opts.at is not None:
            problem = intel.validity_problem(chain, opts.at)
            checks.append(
                Check(
                    "cert_validity",
                    problem is None,
                    problem or f"PCK chain valid at {opts.at.isoformat()}",
                )
            )
    _check_signatures(parsed, chain, checks)
    checks.append(td_debug_check(parsed))
    checks.append(td_migratable_check(parsed))
    if opts.expected_report_data is not None:
        expected = opts.expected_report_data.ljust(64, b"\x00")
        same = expected == parsed.report_data
        checks.append(
            Check(
                "report_data",
                same,
                "REPORTDATA equals the expected value (nonce binding)"
                if same
                else f"REPORTDATA {parsed.report_data.hex()[:32]}... is not the expected "
                f"{expected.hex()[:32]}...: the quote is not bound to this challenge",
            )
        )
    if opts.reference_mrtd:
        mrtd = parsed.mrtd.hex()
        label = next((lbl for lbl, ref in opts.reference_mrtd if ref.lower() == mrtd), None)
        checks.append(
            Check(
                "mrtd",
                label is not None,
                f"MRTD matches reference '{label}'"
                if label is not None
                else f"MRTD {mrtd[:16]}... matches none of {len(opts.reference_mrtd)} references",
            )
        )
    if opts.collateral is not None:
        _check_collateral(parsed, chain, opts.collateral, opts.at, checks, result.facts)
    if opts.ccel_data is not None:
        checks.append(_rtmr_check(parsed, opts.ccel_data))
    return result
