"""AMD's SEV-SNP key infrastructure: products, TCB layouts, VCEK/VLEK certificates, trust roots.

An SNP report is only as good as the key that signed it. That key (VCEK per chip and TCB, or VLEK
per cloud provider) is certified by AMD through ARK -> ASK/ASVK -> VCEK/VLEK, one ARK per product
line. This module knows those certificates: the AMD extensions that bind a VCEK to a chip and a
TCB (1.3.6.1.4.1.3704.1.*), the pinned roots, the extended-report certificate table in which a
guest receives them, and the one explicit network fetch (AMD KDS, for a missing VCEK).
Report parsing and the verdict live in `auditor.verify.snp`.
"""

from __future__ import annotations

import hashlib
import re
import struct
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.utils import CryptographyDeprecationWarning

from auditor.verify.anchors import ANCHOR_DIR, AnchorError, fingerprint
from auditor.verify.der import single
from auditor.verify.errors import CERT_ERRORS, EvidenceFormatError, decoded

PRODUCTS = ("Milan", "Genoa", "Turin")
KDS_BASE_URL = "https://kdsintf.amd.com"
MAX_CERT_BYTES = 64 * 1024
MAX_CERT_TABLE_ENTRIES = 64
#: Certificates and certificate tables are parsed once per distinct input and cached by their
#: exact bytes (a fleet sends the same VCEK, ASK and ARK with every report). Larger inputs are
#: parsed every time, so the caches hold at most 1024 x 16 KiB and 256 x 64 KiB of input; an AMD
#: certificate is ~1.5 KiB, an extended-report table with three of them ~5 KiB.
CACHED_CERT_INPUT_BYTES = 16 * 1024
CACHED_TABLE_INPUT_BYTES = 64 * 1024

# AMD's VCEK/VLEK extensions (attestation.md §1.4).
_AMD = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = x509.ObjectIdentifier(f"{_AMD}.1")
OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{_AMD}.2")
OID_BL_SPL = x509.ObjectIdentifier(f"{_AMD}.3.1")
OID_TEE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.2")
OID_SNP_SPL = x509.ObjectIdentifier(f"{_AMD}.3.3")
OID_UCODE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.8")
OID_FMC_SPL = x509.ObjectIdentifier(f"{_AMD}.3.9")
OID_HWID = x509.ObjectIdentifier(f"{_AMD}.4")
OID_CSP_ID = x509.ObjectIdentifier(f"{_AMD}.5")
SPL_OIDS: dict[str, x509.ObjectIdentifier] = {
    "bootloader": OID_BL_SPL,
    "tee": OID_TEE_SPL,
    "snp": OID_SNP_SPL,
    "microcode": OID_UCODE_SPL,
    "fmc": OID_FMC_SPL,
}

# Extended-report certificate table GUIDs (go-sev-guest abi.go; gce-tcb-verifier endorsement.go).
CERT_TABLE_GUIDS: dict[str, str] = {
    "63da758d-e664-4564-adc5-f4b93be8accd": "vcek",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1": "vlek",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782": "ask",
    "c0b406a4-a803-4952-9743-3fb6014cd0ae": "ark",
    "9f4116cd-c503-4f5a-8f6f-fb68882f4ce2": "gce_endorsement",
}

#: SHA-256 of the pinned ARK/ASK/ASVK per product (vectors README §2; anchors/amd/NOTICE).
AMD_PINS: dict[str, dict[str, str]] = {
    "Milan": {
        "ark": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
        "ask": "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
        "asvk": "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    },
    "Genoa": {
        "ark": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
        "ask": "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
        "asvk": "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    },
    "Turin": {
        "ark": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
        "ask": "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
        "asvk": "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
    },
}

_PRODUCT_ALIASES = {
    "milan": "Milan",
    "genoa": "Genoa",
    "siena": "Genoa",  # Siena and Bergamo chain to the Genoa ARK
    "bergamo": "Genoa",
    "turin": "Turin",
}


# --- products and TCB layout ------------------------------------------------------------------


def product_from_name(name: str | None) -> str | None:
    """ "Milan-B0", "SEV-VLEK-Genoa", "ARK-Turin" -> the product line; None if not recognised."""
    if not name:
        return None
    for part in re.split(r"[-_\s]+", name.strip()):
        found = _PRODUCT_ALIASES.get(part.lower())
        if found:
            return found
    return None


def product_from_cpuid(family: int, model: int) -> str | None:
    """Product line from the CPUID family/model a v3+ report carries (go-sev-guest abi.go)."""
    if family == 0x19:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:  # Genoa; Bergamo/Siena use its chain
            return "Genoa"
    if family == 0x1A and model <= 0x1F:
        return "Turin"
    return None


@dataclass(frozen=True)
class TcbVersion:
    """An 8-byte TCB_VERSION, decoded with the product's layout (attestation.md §1.3).

    Milan/Genoa: bootloader, tee, 4 reserved, snp, microcode. Turin and later: fmc, bootloader,
    tee, snp, 3 reserved, microcode. `raw` is the little-endian u64 as found in the report.
    """

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None
    raw: int

    @classmethod
    def decode(cls, raw: int, product: str | None) -> TcbVersion:
        b = raw.to_bytes(8, "little")
        if product == "Turin":
            return cls(bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7], fmc=b[0], raw=raw)
        return cls(bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7], fmc=None, raw=raw)

    @classmethod
    def build(
        cls,
        product: str | None,
        *,
        bootloader: int,
        tee: int,
        snp: int,
        microcode: int,
        fmc: int | None = None,
    ) -> TcbVersion:
        """Encode components with the product's layout (fmc only exists from Turin on)."""
        if product == "Turin":
            b = bytes([fmc or 0, bootloader, tee, snp, 0, 0, 0, microcode])
        else:
            if fmc is not None:
                raise ValueError(f"{product or 'Milan/Genoa'} TCB has no FMC component")
            b = bytes([bootloader, tee, 0, 0, 0, 0, snp, microcode])
        return cls.decode(int.from_bytes(b, "little"), product)

    def as_dict(self) -> dict[str, int]:
        out = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out


# --- certificates ------------------------------------------------------------------------------


@contextmanager
def quiet_serial_warning() -> Iterator[None]:
    """Load AMD certificates with exactly the zero-serial warning silenced.

    AMD KDS issues every VCEK and VLEK with serialNumber 0 (RFC 5280 wants positive serials);
    cryptography >= 45 emits a CryptographyDeprecationWarning about it on load and on
    `serial_number`. That is AMD's format, not a defect of the evidence, so only that one
    warning is suppressed; every other warning still surfaces.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Parsed a serial number which wasn't positive",
            category=CryptographyDeprecationWarning,
        )
        yield


def load_certificate(data: bytes, what: str = "certificate") -> x509.Certificate:
    """One certificate, DER or PEM; `what` names it in the error."""
    certs = load_certificates(data, what)
    if len(certs) != 1:
        raise EvidenceFormatError(f"{what}: expected one certificate, found {len(certs)}")
    return certs[0]


def load_certificates(data: bytes, what: str = "certificates") -> list[x509.Certificate]:
    """A PEM bundle or one DER certificate.

    Parsed once per distinct input (see CACHED_CERT_INPUT_BYTES): certificates are immutable,
    and every call gets its own list.
    """
    if len(data) > 16 * MAX_CERT_BYTES:
        raise EvidenceFormatError(f"{what}: {len(data)} bytes is too large for certificates")
    raw = bytes(data)  # the same object when it is already bytes
    try:
        if len(raw) <= CACHED_CERT_INPUT_BYTES:
            return list(_load_cached(raw))
        return list(_load_uncached(raw))
    except EvidenceFormatError as err:
        raise EvidenceFormatError(f"{what}: {err}") from err
    except CERT_ERRORS as err:
        raise EvidenceFormatError(f"{what}: not a DER or PEM X.509 certificate ({err})") from err


def _load_uncached(data: bytes) -> tuple[x509.Certificate, ...]:
    with quiet_serial_warning():
        if b"-----BEGIN CERTIFICATE-----" in data:
            certs = tuple(x509.load_pem_x509_certificates(data))
        else:
            certs = (x509.load_der_x509_certificate(data),)
        # decoded now: a malformed extension (even a duplicated one) fails here, as a format
        # error, and never in the middle of a verification
        return tuple(decoded(cert, "certificate") for cert in certs)


#: Keyed on the whole input (bytes compare by value); a ValueError is raised, never cached.
_load_cached = lru_cache(maxsize=1024)(_load_uncached)


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_PSS_CACHE: dict[tuple[bytes, bytes], bool] = {}
_PSS_CACHE_MAX = 4096


def pss_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """AMD's signature scheme, applied explicitly: RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48.

    Cached per (certificate, issuer) digest pair: one VCEK chain per chip and TCB is checked once.
    """
    if cert.issuer != issuer.subject:
        return False
    key = (_der_sha(cert), _der_sha(issuer))
    cached = _PSS_CACHE.get(key)
    if cached is not None:
        return cached
    public = issuer.public_key()
    ok = isinstance(public, rsa.RSAPublicKey)
    if isinstance(public, rsa.RSAPublicKey):
        try:
            public.verify(cert.signature, cert.tbs_certificate_bytes, _PSS, hashes.SHA384())
        except (InvalidSignature, UnsupportedAlgorithm, ValueError):
            ok = False
    if len(_PSS_CACHE) >= _PSS_CACHE_MAX:
        _PSS_CACHE.clear()
    _PSS_CACHE[key] = ok
    return ok


def _der_sha(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.tbs_certificate_bytes + cert.signature).digest()


# --- AMD certificate extensions ------------------------------------------------------------------


@dataclass(frozen=True)
class AmdCertInfo:
    """What a VCEK or VLEK certifies, read from its AMD extensions."""

    kind: str  # "vcek" | "vlek" | "unknown"
    struct_version: int | None
    product_name: str | None
    product: str | None
    spl: dict[str, int]  # bootloader, tee, snp, microcode, fmc (when present)
    hwid: bytes | None
    csp_id: str | None


def _ext_bytes(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    except CERT_ERRORS as err:  # a malformed or duplicated extension in the certificate
        raise EvidenceFormatError(f"certificate extensions unreadable: {err}") from err
    value = ext.value
    if isinstance(value, x509.UnrecognizedExtension):
        return value.value
    raise EvidenceFormatError(f"AMD extension {oid.dotted_string} has an unexpected type")


def _ext_int(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> int | None:
    raw = _ext_bytes(cert, oid)
    if raw is None:
        return None
    try:
        tag, body = single(raw)
    except ValueError as err:
        raise EvidenceFormatError(f"AMD extension {oid.dotted_string}: {err}") from err
    if tag != 0x02 or not body or body[0] & 0x80:
        raise EvidenceFormatError(f"AMD extension {oid.dotted_string} is not a small INTEGER")
    return int.from_bytes(body, "big")


def _ext_text(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    raw = _ext_bytes(cert, oid)
    if raw is None:
        return None
    try:
        tag, body = single(raw)
    except ValueError as err:
        raise EvidenceFormatError(f"AMD extension {oid.dotted_string}: {err}") from err
    if tag not in (0x16, 0x0C, 0x13):  # IA5String (AMD), UTF8String, PrintableString
        raise EvidenceFormatError(f"AMD extension {oid.dotted_string} is not a string")
    return body.decode("ascii" if tag != 0x0C else "utf-8", "replace")


def _hwid(cert: x509.Certificate) -> bytes | None:
    raw = _ext_bytes(cert, OID_HWID)
    if raw is None:
        return None
    # KDS puts the chip id in the extension as raw bytes (64 Milan/Genoa, 8 Turin); an OCTET
    # STRING wrapper is accepted too (some tools re-encode it).
    if len(raw) in (8, 64):
        return raw
    try:
        tag, body = single(raw)
    except ValueError:
        tag, body = 0, b""
    if tag == 0x04 and len(body) in (8, 64):
        return body
    raise EvidenceFormatError(f"VCEK hwID extension has {len(raw)} bytes, expected 8 or 64")


def cert_info(cert: x509.Certificate) -> AmdCertInfo:
    """Read a VCEK/VLEK's AMD extensions; EvidenceFormatError if one is malformed."""
    spl: dict[str, int] = {}
    for name, oid in SPL_OIDS.items():
        value = _ext_int(cert, oid)
        if value is not None:
            spl[name] = value
    hwid = _hwid(cert)
    csp_id = _ext_text(cert, OID_CSP_ID)
    cn = common_name(cert)
    if cn == "SEV-VCEK" or (hwid is not None and csp_id is None and cn != "SEV-VLEK"):
        kind = "vcek"
    elif cn == "SEV-VLEK" or csp_id is not None:
        kind = "vlek"
    else:
        kind = "unknown"
    product_name = _ext_text(cert, OID_PRODUCT_NAME)
    return AmdCertInfo(
        kind=kind,
        struct_version=_ext_int(cert, OID_STRUCT_VERSION),
        product_name=product_name,
        product=product_from_name(product_name),
        spl=spl,
        hwid=hwid,
        csp_id=csp_id,
    )


# --- trust roots -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductRoots:
    """One product line's root and intermediates: ARK, ASK (VCEK chain), ASVK (VLEK chain)."""

    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate | None = None

    def intermediates(self) -> Iterator[tuple[str, x509.Certificate]]:
        yield "ASK", self.ask
        if self.asvk is not None:
            yield "ASVK", self.asvk


def _check_roots(name: str, product: str, roots: ProductRoots) -> None:
    if not is_self_signed(roots.ark) or not pss_signed_by(roots.ark, roots.ark):
        raise AnchorError(f"{name}: {product} ARK '{common_name(roots.ark)}' is not self-signed")
    for label, cert in roots.intermediates():
        if not pss_signed_by(cert, roots.ark):
            raise AnchorError(
                f"{name}: {product} {label} '{common_name(cert)}' is not signed by its ARK"
            )


@dataclass
class AmdTrust:
    """The roots a VCEK/VLEK may chain to, per product line."""

    name: str
    products: dict[str, ProductRoots]

    @classmethod
    def pinned(cls) -> AmdTrust:
        """AMD's real roots, shipped in anchors/amd and checked against their fingerprints."""
        return _pinned_trust()

    @classmethod
    def from_pem(cls, name: str, products: Mapping[str, bytes]) -> AmdTrust:
        """A trust store from one PEM bundle per product: ARK + ASK (+ ASVK)."""
        loaded: dict[str, ProductRoots] = {}
        for product, pem in products.items():
            certs = load_certificates(pem, f"{name} {product} bundle")
            arks = [c for c in certs if is_self_signed(c)]
            others = [c for c in certs if not is_self_signed(c)]
            asvks = [c for c in others if "VLEK" in common_name(c).upper()]
            asks = [c for c in others if "VLEK" not in common_name(c).upper()]
            if len(arks) != 1 or len(asks) != 1 or len(asvks) > 1:
                raise AnchorError(
                    f"{name}: the {product} bundle must hold one ARK, one ASK and at most one "
                    f"ASVK (found {len(arks)} self-signed, {len(asks)} ASK, {len(asvks)} ASVK)"
                )
            roots = ProductRoots(ark=arks[0], ask=asks[0], asvk=asvks[0] if asvks else None)
            _check_roots(name, product, roots)
            loaded[product] = roots
        return cls(name=name, products=loaded)

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.products) or 'no products'})"


@lru_cache(maxsize=1)
def _pinned_trust() -> AmdTrust:
    products: dict[str, ProductRoots] = {}
    for product, pins in AMD_PINS.items():
        certs: dict[str, x509.Certificate] = {}
        for role, expected in pins.items():
            path = ANCHOR_DIR / "amd" / f"{product.lower()}_{role}.pem"
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError) as err:
                raise AnchorError(f"trust anchor {path} unusable: {err}") from err
            got = fingerprint(cert)
            if got != expected:
                raise AnchorError(f"trust anchor {path} has fingerprint {got}, pinned {expected}")
            certs[role] = cert
        roots = ProductRoots(ark=certs["ark"], ask=certs["ask"], asvk=certs["asvk"])
        _check_roots("AMD", product, roots)
        products[product] = roots
    return AmdTrust(name="AMD", products=products)


# --- extended-report certificate table ---------------------------------------------------------


def _guid_names() -> dict[bytes, str]:
    names: dict[bytes, str] = {}
    for text, name in CERT_TABLE_GUIDS.items():
        guid = uuid.UUID(text)
        names[guid.bytes] = name  # RFC 4122 byte order, as written by Linux/go-sev-guest
        names.setdefault(guid.bytes_le, name)  # EFI byte order, accepted from other writers
    return names


_GUID_NAMES = _guid_names()


def parse_cert_table(auxblob: bytes) -> dict[str, bytes]:
    """The SNP extended-report certificate table (GHCB spec; configfs-tsm `auxblob`).

    24-byte entries {GUID, u32 offset, u32 length} end with an all-zero entry; each entry points
    at a certificate inside the blob. Returns name ("vcek", "vlek", "ask", "ark",
    "gce_endorsement", or the GUID string for others) -> bytes. Parsed once per distinct blob
    (see CACHED_TABLE_INPUT_BYTES); every call gets its own dict.
    """
    if not isinstance(auxblob, bytes | bytearray):
        raise EvidenceFormatError("certificate table: expected bytes")
    data = bytes(auxblob)  # the same object when it is already bytes
    if len(data) <= CACHED_TABLE_INPUT_BYTES:
        return dict(_cert_table_cached(data))
    return dict(_cert_table_entries(data))


def _cert_table_entries(data: bytes) -> tuple[tuple[str, bytes], ...]:
    out: dict[str, bytes] = {}
    for index in range(MAX_CERT_TABLE_ENTRIES + 1):
        start = index * 24
        if start + 24 > len(data):
            raise EvidenceFormatError(
                f"certificate table: entry {index} runs past the end ({len(data)} bytes) "
                "before the all-zero terminator"
            )
        entry = data[start : start + 24]
        if entry == bytes(24):
            return tuple(out.items())
        if index == MAX_CERT_TABLE_ENTRIES:
            break
        guid = entry[:16]
        offset, length = struct.unpack_from("<II", entry, 16)
        name = _GUID_NAMES.get(guid, str(uuid.UUID(bytes=guid)))
        if offset + length > len(data) or (length and offset < start + 24):
            raise EvidenceFormatError(
                f"certificate table: entry {index} ({name}) points at bytes "
                f"{offset}..{offset + length}, outside the {len(data)}-byte blob"
            )
        if name in out:
            raise EvidenceFormatError(f"certificate table: {name} appears twice")
        if length:
            out[name] = data[offset : offset + length]
    raise EvidenceFormatError(f"certificate table: more than {MAX_CERT_TABLE_ENTRIES} entries")


#: One parse per distinct auxblob (keyed on its whole bytes; errors are raised, never cached).
#: Entries are immutable tuples; `parse_cert_table` hands every caller a new dict.
_cert_table_cached = lru_cache(maxsize=256)(_cert_table_entries)


def build_cert_table(entries: Mapping[str, bytes]) -> bytes:
    """The inverse of `parse_cert_table`, for demo evidence and tests."""
    by_name = {name: uuid.UUID(text).bytes for text, name in CERT_TABLE_GUIDS.items()}
    table_size = 24 * (len(entries) + 1)
    header, body = b"", b""
    for name, blob in entries.items():
        guid = by_name[name] if name in by_name else uuid.UUID(name).bytes
        header += guid + struct.pack("<II", table_size + len(body), len(blob))
        body += blob
    return header + bytes(24) + body


# --- AMD KDS -----------------------------------------------------------------------------------


class KdsError(Exception):
    """AMD KDS did not deliver a usable VCEK."""


def _kds_chip(product: str, chip_id: bytes) -> str:
    return (chip_id[:8] if product == "Turin" else chip_id).hex()


def kds_vcek_url(
    product: str, chip_id: bytes, tcb: TcbVersion, base_url: str = KDS_BASE_URL
) -> str:
    """The KDS address of the VCEK for one chip at one reported TCB (snpguest fetch.rs)."""
    if product not in PRODUCTS:
        raise ValueError(f"unknown AMD product {product!r}")
    query = f"blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    if product == "Turin":
        query = f"fmcSPL={tcb.fmc or 0}&" + query
    return f"{base_url.rstrip('/')}/vcek/v1/{product}/{_kds_chip(product, chip_id)}?{query}"


def vcek_cache_path(product: str, chip_id: bytes, tcb: TcbVersion, cache_dir: Path) -> Path:
    """One file per product, chip and reported TCB: a VCEK never changes for those."""
    return cache_dir / f"vcek-{product}-{_kds_chip(product, chip_id)}-{tcb.raw:016x}.der"


def cached_vcek(
    product: str, chip_id: bytes, tcb: TcbVersion, cache_dir: Path | None
) -> bytes | None:
    if cache_dir is None:
        return None
    path = vcek_cache_path(product, chip_id, tcb, cache_dir)
    try:
        return path.read_bytes()
    except OSError:
        return None


def fetch_vcek(
    product: str,
    chip_id: bytes,
    reported_tcb: TcbVersion,
    cache_dir: Path | None,
    base_url: str = KDS_BASE_URL,
    timeout: float = 20.0,
) -> bytes:
    """The DER VCEK from the cache, else from AMD KDS (then cached). Raises KdsError.

    The only network access of the SNP verifier; callers reach it only when not offline.
    """
    cached = cached_vcek(product, chip_id, reported_tcb, cache_dir)
    if cached is not None:
        return cached
    if not any(chip_id):
        raise KdsError("CHIP_ID is masked (all zero): KDS cannot name this chip's VCEK")
    url = kds_vcek_url(product, chip_id, reported_tcb, base_url)
    if not url.startswith(("https://", "http://")):
        raise KdsError(f"refusing to fetch {url!r}: only http(s) is allowed")
    request = urllib.request.Request(url, headers={"Accept": "application/pkix-cert"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            der = bytes(response.read(MAX_CERT_BYTES + 1))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise KdsError(f"AMD KDS fetch of {url} failed: {err}") from err
    if len(der) > MAX_CERT_BYTES:
        raise KdsError(f"AMD KDS answer from {url} is larger than {MAX_CERT_BYTES} bytes")
    try:
        load_certificate(der, "VCEK from AMD KDS")
    except EvidenceFormatError as err:
        raise KdsError(str(err)) from err
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = vcek_cache_path(product, chip_id, reported_tcb, cache_dir)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(der)
        tmp.replace(path)
    return der
