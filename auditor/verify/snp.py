"""AMD SEV-SNP attestation reports: parse them and verify them against AMD's pinned roots.

This is the evidence that lets the owner, not the cloud, decide whether the hypervisor is shut
out: a report signed by the chip's VCEK (or the provider's VLEK), chaining to AMD's ARK, with
debug off. `parse_report` turns the 0x4A0 bytes into fields and knows no policy; `verify_snp`
runs every check with a reason (signature, chain, certificate-to-report binding, policy, TCB
minimums, report data and measurement when the caller has expectations) and returns facts ready
for the rule engine. Layout and rules: reference/attestation.md §1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from auditor.verify.amd import (
    PRODUCTS,
    AmdCertInfo,
    AmdTrust,
    KdsError,
    ProductRoots,
    TcbVersion,
    cached_vcek,
    cert_info,
    common_name,
    fetch_vcek,
    is_self_signed,
    kds_vcek_url,
    load_certificate,
    load_certificates,
    parse_cert_table,
    product_from_cpuid,
    product_from_name,
    pss_signed_by,
)
from auditor.verify.anchors import fingerprint
from auditor.verify.checks import Check, CheckedResult
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.tcb_minimums import (
    TcbTable,
    TcbTableError,
    format_firmware,
    load_tcb_table,
    shortfalls,
)

__all__ = [
    "AmdTrust",
    "ProductRoots",
    "SnpOptions",
    "SnpReport",
    "SnpResult",
    "TcbTable",
    "TcbTableError",
    "TcbVersion",
    "azure_runtime_binding",
    "load_tcb_table",
    "parse_cert_table",
    "parse_report",
    "verify_snp",
]

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = range(2, 6)  # go-sev-guest accepts 2..5; 4 is laid out like 3
SIG_ALGO_ECDSA_P384_SHA384 = 1

#: (offset, size) of every field of the signed part, for readers and mutation tests.
FIELDS: dict[str, tuple[int, int]] = {
    "version": (0x000, 4),
    "guest_svn": (0x004, 4),
    "policy": (0x008, 8),
    "family_id": (0x010, 16),
    "image_id": (0x020, 16),
    "vmpl": (0x030, 4),
    "signature_algo": (0x034, 4),
    "current_tcb": (0x038, 8),
    "platform_info": (0x040, 8),
    "signer_info": (0x048, 4),
    "report_data": (0x050, 64),
    "measurement": (0x090, 48),
    "host_data": (0x0C0, 32),
    "id_key_digest": (0x0E0, 48),
    "author_key_digest": (0x110, 48),
    "report_id": (0x140, 32),
    "report_id_ma": (0x160, 32),
    "reported_tcb": (0x180, 8),
    "cpuid": (0x188, 3),
    "chip_id": (0x1A0, 64),
    "committed_tcb": (0x1E0, 8),
    "current_fw": (0x1E8, 3),
    "committed_fw": (0x1EC, 3),
    "launch_tcb": (0x1F0, 8),
    "launch_mit_vector": (0x1F8, 8),
    "current_mit_vector": (0x200, 8),
}
SIGNATURE_OFFSET = 0x2A0
SIGNATURE_COMPONENT = 72  # R and S, little-endian, zero-padded to 72 bytes each

# POLICY bits (attestation.md §1.2)
POLICY_SMT = 1 << 16
POLICY_RESERVED_1 = 1 << 17
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20
# PLATFORM_INFO bits
_PLATFORM_BITS = {
    "smt_enabled": 0,
    "tsme_enabled": 1,
    "ecc_enabled": 2,
    "rapl_disabled": 3,
    "ciphertext_hiding_enabled": 4,
    "alias_check_complete": 5,
    "tio_enabled": 7,
}
_SIGNING_KEYS = {0: "vcek", 1: "vlek", 7: "none"}


@dataclass(frozen=True)
class SnpReport:
    """Every field of an ATTESTATION_REPORT; firmware versions as (major, minor, build)."""

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: int
    signing_key: str  # "vcek" | "vlek" | "none"
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid: tuple[int, int, int] | None  # (family, model, stepping); v3+ only
    chip_id: bytes
    committed_tcb: TcbVersion
    current_fw: tuple[int, int, int]
    committed_fw: tuple[int, int, int]
    launch_tcb: TcbVersion
    product: str | None  # "Milan" | "Genoa" | "Turin" | None
    raw: bytes  # the whole report; the signed part is raw[:0x2A0]
    signer_info: int = 0
    author_key_en: bool = False
    mask_chip_key: bool = False
    launch_mit_vector: int | None = None  # v5 only
    current_mit_vector: int | None = None  # v5 only
    signature_r: int = 0
    signature_s: int = 0
    product_source: str | None = None  # "cpuid" | "hint" | "chip_id" | None

    @property
    def signed_part(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def debug(self) -> bool:
        return bool(self.policy & POLICY_DEBUG)


def _turin_like(chip_id: bytes) -> bool:
    """Turin chips use 8 bytes of CHIP_ID (virtee's heuristic for v2 reports)."""
    return any(chip_id[:8]) and not any(chip_id[8:])


#: Bytes 0x000-0x207 in one unpack, field by field as in FIELDS (a test checks the offsets).
_LAYOUT = struct.Struct(
    "<"
    "I"  # 0x000 version
    "I"  # 0x004 guest_svn
    "Q"  # 0x008 policy
    "16s"  # 0x010 family_id
    "16s"  # 0x020 image_id
    "I"  # 0x030 vmpl
    "I"  # 0x034 signature_algo
    "Q"  # 0x038 current_tcb
    "Q"  # 0x040 platform_info
    "I"  # 0x048 signer_info
    "4x"
    "64s"  # 0x050 report_data
    "48s"  # 0x090 measurement
    "32s"  # 0x0C0 host_data
    "48s"  # 0x0E0 id_key_digest
    "48s"  # 0x110 author_key_digest
    "32s"  # 0x140 report_id
    "32s"  # 0x160 report_id_ma
    "Q"  # 0x180 reported_tcb
    "3B"  # 0x188 cpuid family, model, stepping
    "21x"
    "64s"  # 0x1A0 chip_id
    "Q"  # 0x1E0 committed_tcb
    "3B"  # 0x1E8 current_fw build, minor, major
    "x"
    "3B"  # 0x1EC committed_fw build, minor, major
    "x"
    "Q"  # 0x1F0 launch_tcb
    "Q"  # 0x1F8 launch_mit_vector
    "Q"  # 0x200 current_mit_vector
)
_SIGNATURE = struct.Struct(f"<{SIGNATURE_COMPONENT}s{SIGNATURE_COMPONENT}s")


@lru_cache(maxsize=1024)
def _tcb(raw: int, product: str | None) -> TcbVersion:
    """TcbVersion.decode, shared: a TcbVersion is immutable and a fleet has few TCBs."""
    return TcbVersion.decode(raw, product)


def parse_report(data: bytes, product_hint: str | None = None) -> SnpReport:
    """Decode an SEV-SNP report (versions 2 to 5). Trailing bytes are allowed (Azure appends).

    The product decides the TCB layout: from CPUID (v3+), else `product_hint`, else the
    Turin CHIP_ID heuristic, else None (decoded with the Milan/Genoa layout).
    """
    if product_hint is not None and product_hint not in PRODUCTS:
        raise ValueError(f"unknown AMD product {product_hint!r}; expected one of {PRODUCTS}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EvidenceFormatError("SEV-SNP report: expected bytes")
    raw = bytes(data)
    if len(raw) < REPORT_SIZE:
        raise EvidenceFormatError(
            f"SEV-SNP report is truncated: {len(raw)} bytes, a report has {REPORT_SIZE}"
        )
    (
        version,
        guest_svn,
        policy,
        family_id,
        image_id,
        vmpl,
        signature_algo,
        current_tcb,
        platform_info,
        signer_info,
        report_data,
        measurement,
        host_data,
        id_key_digest,
        author_key_digest,
        report_id,
        report_id_ma,
        reported_tcb,
        family,
        model,
        stepping,
        chip_id,
        committed_tcb,
        cur_build,
        cur_minor,
        cur_major,
        com_build,
        com_minor,
        com_major,
        launch_tcb,
        launch_mit_vector,
        current_mit_vector,
    ) = _LAYOUT.unpack_from(raw)
    if version not in SUPPORTED_VERSIONS:
        raise EvidenceFormatError(
            f"SEV-SNP report version {version} is not supported (expected 2 to 5)"
        )
    if signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise EvidenceFormatError(
            f"SEV-SNP report signature algorithm {signature_algo} is not 1 (ECDSA P-384 SHA-384)"
        )
    key_code = (signer_info >> 2) & 0x7
    if key_code not in _SIGNING_KEYS:
        raise EvidenceFormatError(f"SEV-SNP report names reserved signing key {key_code}")
    cpuid: tuple[int, int, int] | None = None
    product: str | None = None
    source: str | None = None
    if version >= 3:
        cpuid = (family, model, stepping)
        product = product_from_cpuid(family, model)
        source = "cpuid" if product else None
    if product is None and product_hint is not None:
        product, source = product_hint, "hint"
    if product is None and _turin_like(chip_id):
        product, source = "Turin", "chip_id"

    sig_r, sig_s = _SIGNATURE.unpack_from(raw, SIGNATURE_OFFSET)
    return SnpReport(
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=family_id,
        image_id=image_id,
        vmpl=vmpl,
        signature_algo=signature_algo,
        current_tcb=_tcb(current_tcb, product),
        platform_info=platform_info,
        signing_key=_SIGNING_KEYS[key_code],
        report_data=report_data,
        measurement=measurement,
        host_data=host_data,
        id_key_digest=id_key_digest,
        author_key_digest=author_key_digest,
        report_id=report_id,
        report_id_ma=report_id_ma,
        reported_tcb=_tcb(reported_tcb, product),
        cpuid=cpuid,
        chip_id=chip_id,
        committed_tcb=_tcb(committed_tcb, product),
        current_fw=(cur_major, cur_minor, cur_build),
        committed_fw=(com_major, com_minor, com_build),
        launch_tcb=_tcb(launch_tcb, product),
        product=product,
        raw=raw,
        signer_info=signer_info,
        author_key_en=bool(signer_info & 1),
        mask_chip_key=bool(signer_info & 2),
        launch_mit_vector=launch_mit_vector if version >= 5 else None,
        current_mit_vector=current_mit_vector if version >= 5 else None,
        signature_r=int.from_bytes(sig_r, "little"),
        signature_s=int.from_bytes(sig_s, "little"),
        product_source=source,
    )


def _with_product(report: SnpReport, product: str, source: str) -> SnpReport:
    """The report decoded for `product` (what `parse_report(raw, product_hint=...)` gives a
    report whose CPUID names no product), without parsing it again: only TCBs depend on it."""
    return replace(
        report,
        product=product,
        product_source=source,
        current_tcb=_tcb(report.current_tcb.raw, product),
        reported_tcb=_tcb(report.reported_tcb.raw, product),
        committed_tcb=_tcb(report.committed_tcb.raw, product),
        launch_tcb=_tcb(report.launch_tcb.raw, product),
    )


# --- options and result ------------------------------------------------------------------------


@dataclass
class SnpOptions:
    at: datetime | None = None  # enforce certificate validity at this time; None = don't
    trust: AmdTrust | None = None  # None = AmdTrust.pinned()
    expected_report_data: bytes | None = None  # 64 bytes
    reference_measurements: Sequence[tuple[str, str]] = ()  # (name, hex of 48 bytes)
    tcb_minimums: TcbTable | None = None  # None = shipped table
    offline: bool = True  # when False and no VCEK is given, fetch it from AMD KDS (cached)
    cache_dir: Path | None = None
    kds_base_url: str = "https://kdsintf.amd.com"


#: Checks that together mean "a genuine report signed by a key AMD certified for this chip".
AUTHENTICITY_CHECKS = ("signature", "chain", "tcb_binding", "signing_key")


@dataclass
class SnpResult(CheckedResult):
    """Every check on one report; `ok` only when all passed (so DEBUG=1 makes it False)."""

    report: SnpReport | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def authentic(self) -> bool:
        """A genuine AMD-signed report, whatever its policy, binding or TCB."""
        verdicts: dict[str, bool] = {}
        for c in self.checks:  # the first check of each name, as `check()` answers
            verdicts.setdefault(c.name, c.ok)
        if not all(verdicts.get(name) is True for name in AUTHENTICITY_CHECKS):
            return False
        binding = [verdicts.get(name) for name in ("chip_id", "csp_id")]
        if not any(b is not None for b in binding) or any(b is False for b in binding):
            return False
        return verdicts.get("cert_validity") is not False


@lru_cache(maxsize=1)
def _shipped_table() -> TcbTable:
    return load_tcb_table()


# --- helpers ---------------------------------------------------------------------------------


def _tcb_text(tcb: TcbVersion) -> str:
    return ", ".join(f"{k} {v}" for k, v in tcb.as_dict().items())


def policy_facts(policy: int) -> dict[str, Any]:
    return dict(_policy_facts(policy))


def platform_facts(info: int) -> dict[str, Any]:
    return dict(_platform_facts(info))


@lru_cache(maxsize=256)
def _policy_facts(policy: int) -> dict[str, Any]:  # shared: callers get copies
    return {
        "raw": f"0x{policy:x}",
        "debug": bool(policy & POLICY_DEBUG),
        "migrate_ma": bool(policy & POLICY_MIGRATE_MA),
        "smt": bool(policy & POLICY_SMT),
        "single_socket": bool(policy & POLICY_SINGLE_SOCKET),
        "abi_major": (policy >> 8) & 0xFF,
        "abi_minor": policy & 0xFF,
    }


@lru_cache(maxsize=256)
def _platform_facts(info: int) -> dict[str, Any]:  # shared: callers get copies
    out: dict[str, Any] = {name: bool(info >> bit & 1) for name, bit in _PLATFORM_BITS.items()}
    out["raw"] = f"0x{info:x}"
    return out


#: The one signature algorithm of SEV-SNP reports, built once.
_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())


def _signature_check(report: SnpReport, key: PublicKeyTypes, label: str) -> Check:
    """The report's own signature, verified on every call (never cached)."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        return Check("signature", False, f"the {label} key is not ECDSA P-384")
    if not report.signature_r or not report.signature_s:
        return Check("signature", False, "the report's signature is empty (R or S is zero)")
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(signature, report.signed_part, _ECDSA_SHA384)
    except InvalidSignature:
        return Check(
            "signature",
            False,
            f"the report's ECDSA P-384 signature does not verify with the {label} "
            f"(bytes 0x000-0x29F were altered, or the {label} belongs to another chip or TCB)",
        )
    return Check("signature", True, f"ECDSA P-384 signature over bytes 0x000-0x29F by the {label}")


@dataclass
class _ChainOutcome:
    check: Check
    product: str | None = None
    intermediate: x509.Certificate | None = None
    ark: x509.Certificate | None = None
    root_sha256: str | None = None  # fingerprint(ark), filled in by _chain_check_cached


def _describe(cert: x509.Certificate, product: str | None) -> str:
    return f"'{common_name(cert)}' ({product or 'unknown product'})"


def _chain_check(
    leaf: x509.Certificate,
    info: AmdCertInfo,
    claimed: str | None,
    supplied: Sequence[x509.Certificate],
    trust: AmdTrust,
) -> _ChainOutcome:
    """VCEK -> ASK -> ARK or VLEK -> ASVK -> ARK, RSA-PSS SHA-384, ending in the trust's ARK.

    Intermediates the evidence supplies are the chain that is verified (so a chain for another
    product fails, naming both); without them the trust store's own ASK/ASVK are used.
    A supplied root is never trusted: the chain must end in the trust's ARK.
    """
    label = info.kind.upper() if info.kind != "unknown" else "certificate"
    leaf_desc = (
        f"the {label} (product {claimed or 'unknown'}, issuer '{leaf.issuer.rfc4514_string()}')"
    )
    supplied_inter = [c for c in supplied if not is_self_signed(c)]
    if supplied_inter:
        pool = [(product_from_name(common_name(c)), c) for c in supplied_inter]
        where = "supplied"
    else:
        pool = [(p, c) for p, roots in trust.products.items() for _, c in roots.intermediates()]
        where = f"trust store '{trust.name}'"
    issuer = next(((p, c) for p, c in pool if pss_signed_by(leaf, c)), None)
    if issuer is None:
        names = ", ".join(_describe(c, p) for p, c in pool) or "none"
        return _ChainOutcome(
            Check(
                "chain",
                False,
                f"{leaf_desc} is not signed (RSA-PSS SHA-384) by any {where} intermediate: {names}",
            )
        )
    inter_product, intermediate = issuer
    ark = next(
        ((p, r.ark) for p, r in trust.products.items() if pss_signed_by(intermediate, r.ark)),
        None,
    )
    if ark is None:
        products = ", ".join(trust.products) or "none"
        return _ChainOutcome(
            Check(
                "chain",
                False,
                f"intermediate {_describe(intermediate, inter_product)} is not signed by the ARK "
                f"of any product in trust store '{trust.name}' ({products})",
            ),
            intermediate=intermediate,
        )
    root_product, ark_cert = ark
    if claimed and claimed != root_product:
        return _ChainOutcome(
            Check(
                "chain",
                False,
                f"the {label} is for {claimed} but chains to {_describe(ark_cert, root_product)}: "
                f"a {root_product} root cannot vouch for a {claimed} key",
            ),
            root_product,
            intermediate,
            ark_cert,
        )
    notes = ""
    ignored = [c for c in supplied if is_self_signed(c) and fingerprint(c) != fingerprint(ark_cert)]
    if ignored:
        notes = "; supplied root(s) " + ", ".join(f"'{common_name(c)}'" for c in ignored)
        notes += f" ignored: not the ARK of trust store '{trust.name}'"
    return _ChainOutcome(
        Check(
            "chain",
            True,
            f"{label} -> '{common_name(intermediate)}' -> '{common_name(ark_cert)}' "
            f"({root_product}, trust store '{trust.name}'), RSA-PSS SHA-384 verified{notes}",
        ),
        root_product,
        intermediate,
        ark_cert,
    )


#: Chain checks done, keyed by the certificates themselves (hashed and compared by DER): a
#: fleet has one VCEK per chip and TCB, so all its reports need only a few chain checks.
_CHAIN_CACHE: dict[tuple[Any, ...], tuple[AmdTrust, _ChainOutcome]] = {}
_CACHE_MAX = 4096


@dataclass(frozen=True)
class _Leaf:
    """What a VCEK/VLEK contributes to every report it signs, computed once per certificate."""

    info: AmdCertInfo
    label: str  # "VCEK" | "VLEK" | "certificate"
    key: PublicKeyTypes
    der: bytes
    sha256: str  # hex SHA-256 of `der`
    #: "tcb_binding" outcomes per REPORTED_TCB (bounded by _TCB_CHECKS_MAX); copies are handed out
    tcb_checks: dict[TcbVersion, Check] = field(default_factory=dict, compare=False)


_TCB_CHECKS_MAX = 64


#: Keyed by the certificate (hashed and compared by its DER), bounded by _CACHE_MAX.
_LEAF_CACHE: dict[x509.Certificate, _Leaf] = {}

#: Identity fronts of the two caches above. Certificates loaded from the same bytes are the same
#: objects (`amd.load_certificates` caches them), so most lookups need not hash a DER encoding.
#: Each entry holds the objects whose ids key it, so no id is reused while its entry exists, and
#: a hit is confirmed by identity (`is`) before use.
_LEAF_BY_ID: dict[int, tuple[x509.Certificate, _Leaf]] = {}
_CHAIN_BY_ID: dict[tuple[Any, ...], tuple[tuple[Any, ...], _ChainOutcome]] = {}


def _bounded_put(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


def _same_objects(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(map(operator.is_, a, b))


def _leaf_cached(cert: x509.Certificate) -> _Leaf:
    """`cert_info`, public key and DER digest of a leaf; EvidenceFormatError is not cached."""
    hit = _LEAF_BY_ID.get(id(cert))
    if hit is not None and hit[0] is cert:
        return hit[1]
    leaf = _LEAF_CACHE.get(cert)
    if leaf is None:
        info = cert_info(cert)
        der = cert.public_bytes(serialization.Encoding.DER)
        leaf = _Leaf(
            info=info,
            label=info.kind.upper() if info.kind != "unknown" else "certificate",
            key=cert.public_key(),
            der=der,
            sha256=hashlib.sha256(der).hexdigest(),
        )
        _bounded_put(_LEAF_CACHE, cert, leaf)
    _bounded_put(_LEAF_BY_ID, id(cert), (cert, leaf))
    return leaf


def _cert_info_cached(cert: x509.Certificate) -> AmdCertInfo:
    return _leaf_cached(cert).info


def _tcb_binding_cached(report: SnpReport, leaf: _Leaf) -> Check:
    """`_tcb_binding_check`: it depends only on the leaf and REPORTED_TCB (returns a copy)."""
    done = leaf.tcb_checks.get(report.reported_tcb)
    if done is None:
        done = _tcb_binding_check(report, leaf.info, leaf.label)
        if len(leaf.tcb_checks) >= _TCB_CHECKS_MAX:
            leaf.tcb_checks.clear()
        leaf.tcb_checks[report.reported_tcb] = done
    return Check(done.name, done.ok, done.reason)


def _chain_check_cached(
    leaf: x509.Certificate,
    info: AmdCertInfo,
    claimed: str | None,
    supplied: Sequence[x509.Certificate],
    trust: AmdTrust,
) -> _ChainOutcome:
    """`_chain_check`, done once per leaf, supplied chain and trust store (a copy is returned)."""
    objects = (leaf, *supplied, trust)
    ids = (claimed, *map(id, objects))
    fast = _CHAIN_BY_ID.get(ids)
    if fast is not None and _same_objects(fast[0], objects):
        done = fast[1]
    else:
        key = (leaf, claimed, tuple(supplied), id(trust))
        hit = _CHAIN_CACHE.get(key)
        if hit is None or hit[0] is not trust:  # the trust object is kept, so its id stays its own
            outcome = _chain_check(leaf, info, claimed, supplied, trust)
            if outcome.ark is not None:
                outcome.root_sha256 = fingerprint(outcome.ark)
            hit = (trust, outcome)
            _bounded_put(_CHAIN_CACHE, key, hit)
        done = hit[1]
        _bounded_put(_CHAIN_BY_ID, ids, (objects, done))
    check = done.check
    return _ChainOutcome(
        Check(check.name, check.ok, check.reason),
        done.product,
        done.intermediate,
        done.ark,
        done.root_sha256,
    )


def _validity_check(at: datetime, certs: Sequence[x509.Certificate]) -> Check:
    for cert in certs:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            return Check(
                "cert_validity",
                False,
                f"'{common_name(cert)}' is not valid at {at.isoformat()} (valid "
                f"{cert.not_valid_before_utc.date()} to {cert.not_valid_after_utc.date()})",
            )
    names = ", ".join(f"'{common_name(c)}'" for c in certs)
    return Check("cert_validity", True, f"{names} valid at {at.isoformat()}")


def _tcb_binding_check(report: SnpReport, info: AmdCertInfo, label: str) -> Check:
    reported = report.reported_tcb.as_dict()
    missing = [name for name in reported if name not in info.spl]
    if missing:
        return Check(
            "tcb_binding", False, f"the {label} lacks TCB extension(s) for {', '.join(missing)}"
        )
    differ = [
        f"{name} {info.spl[name]} in the {label} vs {value} reported"
        for name, value in reported.items()
        if info.spl[name] != value
    ]
    if differ:
        return Check(
            "tcb_binding",
            False,
            f"the {label} was issued for another TCB than REPORTED_TCB: {'; '.join(differ)}",
        )
    return Check(
        "tcb_binding",
        True,
        f"{label} TCB extensions equal REPORTED_TCB ({_tcb_text(report.reported_tcb)})",
    )


def _chip_id_check(report: SnpReport, info: AmdCertInfo) -> Check:
    if info.hwid is None:
        return Check("chip_id", False, "the VCEK has no hwID extension")
    if report.mask_chip_key and not any(report.chip_id):
        return Check(
            "chip_id",
            False,
            "the guest masked CHIP_ID (MASK_CHIP_KEY=1): the report cannot be tied to the "
            "VCEK's chip",
        )
    compared = report.chip_id[: len(info.hwid)]
    if len(info.hwid) == 8 and any(report.chip_id[8:]):
        return Check(
            "chip_id", False, "the VCEK's 8-byte (Turin) hwID cannot match a 64-byte CHIP_ID"
        )
    if not hmac.compare_digest(compared, info.hwid):
        return Check(
            "chip_id",
            False,
            f"the VCEK was issued for chip {info.hwid.hex()[:16]}..., "
            f"the report comes from chip {report.chip_id.hex()[:16]}...",
        )
    return Check("chip_id", True, f"VCEK hwID equals CHIP_ID ({len(info.hwid)} bytes)")


def _tcb_minimum(
    report: SnpReport, product: str | None, table: TcbTable
) -> tuple[Check, dict[str, Any]]:
    if product is None:
        return (
            Check("tcb_minimum", False, "product unknown: cannot compare the TCB with minimums"),
            {"ok": None, "table_version": table.table_version, "below": []},
        )
    below = shortfalls(table, product, report.reported_tcb, report.committed_fw)
    fact = {
        "ok": not below,
        "table_version": table.table_version,
        "below": [b.as_dict() for b in below],
    }
    rows = table.products.get(product, ())
    if not below:
        if not rows:
            text = f"no minimums recorded for {product} in TCB table {table.table_version}"
        else:
            text = (
                f"REPORTED_TCB and committed firmware meet all {len(rows)} {product} minimums "
                f"of TCB table {table.table_version}"
            )
        return Check("tcb_minimum", True, text), fact
    parts: dict[str, list[str]] = {}
    for b in below:
        doubt = ", unconfirmed minimum" if b.confidence != "confirmed" else ""
        key = f"{b.bulletin} ({b.cve}{doubt})"
        what = (
            f"committed firmware {b.reported} < {b.minimum}"
            if b.component == "firmware"
            else f"{b.component} SPL {b.reported} < {b.minimum}"
        )
        parts.setdefault(key, []).append(what)
    text = "; ".join(f"below {k}: {', '.join(v)}" for k, v in parts.items())
    return Check("tcb_minimum", False, f"{product} TCB {text}"), fact


def _measurement_check(
    report: SnpReport, references: Sequence[tuple[str, str]]
) -> tuple[Check, str | None]:
    for name, value in references:
        try:
            expected = bytes.fromhex(value)
        except ValueError as err:
            raise ValueError(f"reference measurement {name!r} is not hex: {err}") from err
        if len(expected) != 48:
            raise ValueError(f"reference measurement {name!r} has {len(expected)} bytes, not 48")
        if hmac.compare_digest(expected, report.measurement):
            return Check("measurement", True, f"MEASUREMENT matches reference '{name}'"), name
    names = ", ".join(f"'{n}'" for n, _ in references)
    return (
        Check(
            "measurement",
            False,
            f"MEASUREMENT {report.measurement.hex()} matches no reference ({names})",
        ),
        None,
    )


# --- verification ------------------------------------------------------------------------------


def _load_chain(chain: bytes | Sequence[x509.Certificate]) -> list[x509.Certificate]:
    if isinstance(chain, bytes | bytearray):
        return load_certificates(bytes(chain), "certificate chain") if chain else []
    return list(chain)


def verify_snp(
    report: bytes | SnpReport,
    cert: bytes | x509.Certificate | None = None,
    chain: bytes | Sequence[x509.Certificate] = (),
    auxblob: bytes | None = None,
    options: SnpOptions | None = None,
) -> SnpResult:
    """Verify one SEV-SNP report; EvidenceFormatError when the report or a cert is unusable.

    `cert` is the VCEK or VLEK (DER or PEM); `chain` the ASK/ASVK and ARK (PEM bundle or
    certificates); `auxblob` the extended-report certificate table. A missing VCEK is taken
    from the cache in `options.cache_dir`, or fetched from AMD KDS when `options.offline` is off.
    """
    options = options or SnpOptions()
    trust = options.trust or AmdTrust.pinned()
    table = options.tcb_minimums or _shipped_table()
    if options.expected_report_data is not None and len(options.expected_report_data) != 64:
        raise ValueError("expected_report_data must be 64 bytes")
    given = isinstance(report, SnpReport)
    parsed = report if isinstance(report, SnpReport) else parse_report(report)
    result = SnpResult(report=parsed)
    checks = result.checks
    facts = result.facts

    # Certificates: the argument, else the extended report's table, else cache / KDS.
    table_certs = parse_cert_table(auxblob) if auxblob else {}
    supplied = _load_chain(chain)
    for name in ("ask", "ark"):
        if name in table_certs:
            supplied.append(load_certificate(table_certs[name], f"{name.upper()} from auxblob"))
    leaf: x509.Certificate | None = None
    source: str | None = None
    missing_reason = "no VCEK or VLEK certificate was supplied"
    if isinstance(cert, x509.Certificate):
        leaf, source = cert, "argument"
    elif cert:
        leaf, source = load_certificate(bytes(cert), "VCEK/VLEK"), "argument"
    else:
        order = ("vlek", "vcek") if parsed.signing_key == "vlek" else ("vcek", "vlek")
        for name in order:
            if name in table_certs:
                leaf = load_certificate(table_certs[name], f"{name.upper()} from auxblob")
                source = "auxblob"
                break
    if leaf is None and parsed.signing_key == "vcek":
        if parsed.product is None:
            missing_reason += " (and the report does not name its product, so KDS cannot be asked)"
        else:
            der = cached_vcek(
                parsed.product, parsed.chip_id, parsed.reported_tcb, options.cache_dir
            )
            if der is not None:
                source = "cache"
            elif options.offline:
                missing_reason += "; offline: not fetched from AMD KDS"
            else:
                try:
                    der = fetch_vcek(
                        parsed.product,
                        parsed.chip_id,
                        parsed.reported_tcb,
                        options.cache_dir,
                        options.kds_base_url,
                    )
                    source = "kds"
                except KdsError as err:
                    missing_reason += f"; {err}"
            if der is not None:
                try:
                    leaf = load_certificate(der, f"VCEK from {source}")
                except EvidenceFormatError as err:  # a damaged cache file is not bad evidence
                    missing_reason += f"; {err}"
                    source = None

    cached = _leaf_cached(leaf) if leaf is not None else None
    info = cached.info if cached is not None else None
    if (
        info is not None
        and info.product
        and parsed.product_source in (None, "chip_id")
        and info.product != parsed.product
    ):
        # A v2 report does not name its product; the certificate decides the TCB layout.
        if given:  # a caller's SnpReport: decode its bytes again, as they are what is signed
            parsed = replace(
                parse_report(parsed.raw, product_hint=info.product), product_source="certificate"
            )
        else:
            parsed = _with_product(parsed, info.product, "certificate")
        result.report = parsed

    checks.append(
        Check(
            "parse",
            True,
            f"SEV-SNP report v{parsed.version}, {parsed.product or 'product unknown'}"
            f"{f' (from {parsed.product_source})' if parsed.product_source else ''}, "
            f"{len(parsed.raw)} bytes",
        )
    )
    product = parsed.product
    root_product: str | None = None
    if leaf is None or cached is None or info is None:
        checks.append(Check("signature", False, f"cannot verify: {missing_reason}"))
    else:
        label = cached.label
        checks.append(_signature_check(parsed, cached.key, label))
        outcome = _chain_check_cached(leaf, info, info.product or product, supplied, trust)
        checks.append(outcome.check)
        root_product = outcome.product
        product = product or root_product
        if options.at is not None:
            chain_certs = [c for c in (leaf, outcome.intermediate, outcome.ark) if c is not None]
            checks.append(_validity_check(options.at, chain_certs))
        checks.append(_tcb_binding_cached(parsed, cached))
        if info.kind == "vcek":
            checks.append(_chip_id_check(parsed, info))
        elif info.kind == "vlek":
            checks.append(
                Check("csp_id", True, f"VLEK issued to {info.csp_id}")
                if info.csp_id
                else Check("csp_id", False, "the VLEK carries no cspID")
            )
        if parsed.signing_key == "none":
            checks.append(Check("signing_key", False, "the report says it is not signed"))
        else:
            checks.append(
                Check(
                    "signing_key",
                    parsed.signing_key == info.kind,
                    f"SIGNER_INFO names the {parsed.signing_key.upper()}, the certificate is a "
                    f"{label}",
                )
            )
        if info.product is None:
            checks.append(Check("product", False, "the certificate names no AMD product"))
        elif parsed.product is None or parsed.product_source == "certificate":
            checks.append(
                Check(
                    "product",
                    True,
                    f"the v{parsed.version} report does not name its product; the certificate "
                    f"says {info.product_name}",
                )
            )
        else:
            checks.append(
                Check(
                    "product",
                    info.product == parsed.product,
                    f"certificate productName {info.product_name!r}, report "
                    f"{parsed.product} (from {parsed.product_source})",
                )
            )
        facts["csp_id"] = info.csp_id
        facts["certificate_product"] = info.product_name
        facts["certificate_sha256"] = cached.sha256
        if source == "kds":
            # A fetched VCEK is evidence too: record where it came from and its bytes.
            facts["kds_url"] = kds_vcek_url(
                parsed.product or "", parsed.chip_id, parsed.reported_tcb, options.kds_base_url
            )
            facts["fetched_certificate"] = base64.b64encode(cached.der).decode("ascii")
        if outcome.ark is not None:
            facts["root_sha256"] = outcome.root_sha256

    debug = parsed.debug
    checks.append(
        Check(
            "policy_debug",
            not debug,
            "DEBUG=1: the host can decrypt guest memory" if debug else "DEBUG=0",
        )
    )
    migrate = bool(parsed.policy & POLICY_MIGRATE_MA)
    checks.append(
        Check(
            "policy_migrate_ma",
            not migrate,
            "MIGRATE_MA=1: a migration agent may export the guest" if migrate else "MIGRATE_MA=0",
        )
    )
    checks.append(Check("vmpl", True, f"report requested at VMPL{parsed.vmpl}"))
    if options.expected_report_data is not None:
        bound = hmac.compare_digest(parsed.report_data, options.expected_report_data)
        checks.append(
            Check(
                "report_data",
                bound,
                "REPORT_DATA equals the expected value"
                if bound
                else f"REPORT_DATA {parsed.report_data.hex()[:32]}... is not the expected "
                f"{options.expected_report_data.hex()[:32]}...",
            )
        )
    match: str | None = None
    if options.reference_measurements:
        measurement_check, match = _measurement_check(parsed, options.reference_measurements)
        checks.append(measurement_check)
    tcb_check, tcb_fact = _tcb_minimum(parsed, product, table)
    checks.append(tcb_check)

    facts.update(
        {
            "version": parsed.version,
            "policy": policy_facts(parsed.policy),
            "measurement": parsed.measurement.hex(),
            "host_data": parsed.host_data.hex(),
            "report_data": parsed.report_data.hex(),
            "chip_id": parsed.chip_id.hex(),
            "vmpl": parsed.vmpl,
            "signer": parsed.signing_key,
            "product": product,
            "reported_tcb": parsed.reported_tcb.as_dict(),
            "committed_tcb": parsed.committed_tcb.as_dict(),
            "current_tcb": parsed.current_tcb.as_dict(),
            "launch_tcb": parsed.launch_tcb.as_dict(),
            "firmware": {
                "current": format_firmware(parsed.current_fw),
                "committed": format_firmware(parsed.committed_fw),
            },
            "platform_info": platform_facts(parsed.platform_info),
            "tcb_minimum": tcb_fact,
            "measurement_match": match,
            "trust_anchor": trust.name,
            "certificate_source": source,
        }
    )
    facts.setdefault("csp_id", None)
    facts.setdefault("root_sha256", None)
    facts["authentic"] = result.authentic
    return result


def azure_runtime_binding(report: SnpReport, runtime_data: bytes) -> Check:
    """Azure CVM: REPORT_DATA[0:32] is SHA-256 of the HCL runtime-claims JSON (with the vTPM AK)."""
    digest = hashlib.sha256(runtime_data).digest()
    if hmac.compare_digest(report.report_data[:32], digest):
        return Check(
            "runtime_data_binding", True, "REPORT_DATA[0:32] equals SHA-256 of the runtime data"
        )
    return Check(
        "runtime_data_binding",
        False,
        f"REPORT_DATA[0:32] {report.report_data[:32].hex()} is not SHA-256 of the runtime data "
        f"({digest.hex()})",
    )
