"""vTPM evidence: TPM2 structures, quote signatures, PCR digests and event-log replay.

A TPM2 quote is the vTPM's signed statement of its PCRs. It proves something only when three
links hold: the attestation key (AK) that signed it is certified by a pinned CA for this
instance, the quote's PCR digest covers the PCR values presented beside it, and the event log
replays to those values. Only then do the log's events (Secure Boot state, what booted) count as
evidence rather than the guest's say-so. Layouts are TPM 2.0 Library Part 2 (Structures):
TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE; every integer is big-endian.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from auditor.verify import eventlog, gotpm
from auditor.verify.anchors import TrustStore, gcp_vtpm_store
from auditor.verify.checks import Check, CheckedResult
from auditor.verify.der import DerError
from auditor.verify.errors import CERT_ERRORS, EvidenceFormatError
from auditor.verify.gce_identity import IDENTITY_OID, Expected, parse_identity
from auditor.verify.x509chain import verify_chain

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018

TPM_ALG_RSA = 0x0001
TPM_ALG_ECC = 0x0023
TPM_ALG_NULL = 0x0010
TPM_ALG_RSAES = 0x0015
TPM_ALG_RSASSA = 0x0014
TPM_ALG_RSAPSS = 0x0016
TPM_ALG_ECDSA = 0x0018
TPM_ALG_ECDAA = 0x001A

#: TPM_ALG_ID -> (name, digest size) for hash algorithms.
HASH_ALGS: dict[int, tuple[str, int]] = {
    0x0004: ("sha1", 20),
    0x000B: ("sha256", 32),
    0x000C: ("sha384", 48),
    0x000D: ("sha512", 64),
    0x0012: ("sm3_256", 32),
}
_DIGEST_SIZE = {name: size for name, size in HASH_ALGS.values()}
_CRYPTO_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_CURVES: dict[int, tuple[str, type[ec.EllipticCurve], int]] = {
    0x0003: ("nist_p256", ec.SECP256R1, 32),
    0x0004: ("nist_p384", ec.SECP384R1, 48),
    0x0005: ("nist_p521", ec.SECP521R1, 66),
}
_SIG_SCHEMES = {TPM_ALG_RSASSA: "rsassa", TPM_ALG_RSAPSS: "rsapss", TPM_ALG_ECDSA: "ecdsa"}

#: TPMA_OBJECT bits (Part 2, 8.3).
OBJECT_ATTRIBUTES: dict[int, str] = {
    1: "fixedTPM",
    2: "stClear",
    4: "fixedParent",
    5: "sensitiveDataOrigin",
    6: "userWithAuth",
    7: "adminWithPolicy",
    10: "noDA",
    11: "encryptedDuplication",
    16: "restricted",
    17: "decrypt",
    18: "sign",
}

_MAX_PCR_SELECTIONS = 16
_MAX_SELECT_BYTES = 32


class _Reader:
    """Bounds-checked big-endian reads; running off the end is an EvidenceFormatError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, size: int, name: str) -> bytes:
        if self.pos + size > len(self.data):
            raise EvidenceFormatError(
                f"{self.what}: truncated reading {name} at offset {self.pos} "
                f"({size} bytes wanted, {len(self.data) - self.pos} left)"
            )
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def u8(self, name: str) -> int:
        return self.take(1, name)[0]

    def u16(self, name: str) -> int:
        value: int = struct.unpack(">H", self.take(2, name))[0]
        return value

    def u32(self, name: str) -> int:
        value: int = struct.unpack(">I", self.take(4, name))[0]
        return value

    def u64(self, name: str) -> int:
        value: int = struct.unpack(">Q", self.take(8, name))[0]
        return value

    def tpm2b(self, name: str) -> bytes:
        return self.take(self.u16(f"{name} size"), name)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise EvidenceFormatError(
                f"{self.what}: {len(self.data) - self.pos} unexpected trailing bytes"
            )


def _hash_name(alg: int, what: str, *, allow_null: bool = False) -> str:
    if allow_null and alg == TPM_ALG_NULL:
        return "null"
    known = HASH_ALGS.get(alg)
    if known is None:
        raise EvidenceFormatError(f"{what}: unknown hash algorithm 0x{alg:04x}")
    return known[0]


# --- TPMT_PUBLIC -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TpmPublic:
    """A TPM object's public area, with its key as a `cryptography` public key."""

    type: str  # "rsa" | "ecc"
    name_alg: str
    attributes: int
    auth_policy: bytes
    scheme: str  # signing scheme ("rsassa", "rsapss", "ecdsa", "null", ...)
    scheme_hash: str | None
    key: PublicKey
    curve: str | None = None

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(name for bit, name in OBJECT_ATTRIBUTES.items() if self.attributes >> bit & 1)

    def spki_der(self) -> bytes:
        return _spki(self.key)


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _sym_def(r: _Reader) -> None:
    """TPMT_SYM_DEF_OBJECT: algorithm, then keyBits and mode unless TPM_ALG_NULL."""
    if r.u16("symmetric.algorithm") != TPM_ALG_NULL:
        r.u16("symmetric.keyBits")
        r.u16("symmetric.mode")


def _scheme(r: _Reader, what: str) -> tuple[str, str | None]:
    """TPMT_RSA_SCHEME / TPMT_ECC_SCHEME: scheme, then its details (a hash, or hash + count)."""
    scheme = r.u16(f"{what}.scheme")
    name = _SIG_SCHEMES.get(scheme, f"0x{scheme:04x}")
    if scheme == TPM_ALG_NULL:
        return "null", None
    if scheme == TPM_ALG_RSAES:
        return "rsaes", None
    hash_name = _hash_name(r.u16(f"{what}.hashAlg"), "TPMT_PUBLIC")
    if scheme == TPM_ALG_ECDAA:
        r.u16(f"{what}.count")
    return name, hash_name


def parse_tpmt_public(data: bytes) -> TpmPublic:
    """Parse a TPMT_PUBLIC (or a TPM2B_PUBLIC around one) holding an RSA or ECC key."""
    if len(data) >= 2:
        size = struct.unpack_from(">H", data)[0]
        if size == len(data) - 2 and size not in (TPM_ALG_RSA, TPM_ALG_ECC):
            data = data[2:]
    r = _Reader(data, "TPMT_PUBLIC")
    obj_type = r.u16("type")
    name_alg = _hash_name(r.u16("nameAlg"), "TPMT_PUBLIC", allow_null=True)
    attributes = r.u32("objectAttributes")
    auth_policy = r.tpm2b("authPolicy")
    if obj_type == TPM_ALG_RSA:
        _sym_def(r)
        scheme, scheme_hash = _scheme(r, "rsa scheme")
        key_bits = r.u16("keyBits")
        exponent = r.u32("exponent") or 65537
        modulus = r.tpm2b("unique.rsa")
        r.done()
        if not modulus or len(modulus) * 8 != key_bits:
            raise EvidenceFormatError(
                f"TPMT_PUBLIC: RSA modulus is {len(modulus) * 8} bits, keyBits says {key_bits}"
            )
        try:
            rsa_key = rsa.RSAPublicNumbers(exponent, int.from_bytes(modulus, "big")).public_key()
        except (ValueError, UnsupportedAlgorithm) as err:
            raise EvidenceFormatError(f"TPMT_PUBLIC: unusable RSA key: {err}") from err
        return TpmPublic(
            "rsa", name_alg, attributes, auth_policy, scheme, scheme_hash, rsa_key, None
        )
    if obj_type == TPM_ALG_ECC:
        _sym_def(r)
        scheme, scheme_hash = _scheme(r, "ecc scheme")
        curve_id = r.u16("curveID")
        if r.u16("kdf.scheme") != TPM_ALG_NULL:
            r.u16("kdf.hashAlg")
        x = r.tpm2b("unique.ecc.x")
        y = r.tpm2b("unique.ecc.y")
        r.done()
        curve = _CURVES.get(curve_id)
        if curve is None:
            raise EvidenceFormatError(f"TPMT_PUBLIC: unsupported ECC curve 0x{curve_id:04x}")
        curve_name, curve_cls, size = curve
        if len(x) > size or len(y) > size:
            raise EvidenceFormatError(f"TPMT_PUBLIC: ECC point larger than {curve_name}")
        point = b"\x04" + x.rjust(size, b"\x00") + y.rjust(size, b"\x00")
        try:
            ec_key = ec.EllipticCurvePublicKey.from_encoded_point(curve_cls(), point)
        except (ValueError, UnsupportedAlgorithm) as err:
            raise EvidenceFormatError(f"TPMT_PUBLIC: ECC point not on {curve_name}") from err
        return TpmPublic(
            "ecc", name_alg, attributes, auth_policy, scheme, scheme_hash, ec_key, curve_name
        )
    raise EvidenceFormatError(f"TPMT_PUBLIC: object type 0x{obj_type:04x} is not an RSA or ECC key")


# --- TPMS_ATTEST -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TpmsAttest:
    """A TPM2_Quote's attestation structure: what the AK signed."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    pcr_select: list[tuple[str, list[int]]]
    pcr_digest: bytes


def parse_tpms_attest(data: bytes) -> TpmsAttest:
    """Parse a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE."""
    r = _Reader(data, "TPMS_ATTEST")
    magic = r.u32("magic")
    if magic != TPM_GENERATED_VALUE:
        raise EvidenceFormatError(
            f"TPMS_ATTEST: magic 0x{magic:08x} is not TPM_GENERATED_VALUE (0xff544347)"
        )
    st = r.u16("type")
    if st != TPM_ST_ATTEST_QUOTE:
        raise EvidenceFormatError(f"TPMS_ATTEST: type 0x{st:04x} is not a quote (0x8018)")
    signer = r.tpm2b("qualifiedSigner")
    extra = r.tpm2b("extraData")
    clock = r.u64("clockInfo.clock")
    reset_count = r.u32("clockInfo.resetCount")
    restart_count = r.u32("clockInfo.restartCount")
    safe = r.u8("clockInfo.safe")
    firmware = r.u64("firmwareVersion")
    count = r.u32("pcrSelect.count")
    if count > _MAX_PCR_SELECTIONS:
        raise EvidenceFormatError(f"TPMS_ATTEST: {count} PCR selections (at most 16)")
    selection: list[tuple[str, list[int]]] = []
    for _ in range(count):
        bank = _hash_name(r.u16("pcrSelect.hash"), "TPMS_ATTEST")
        size = r.u8("pcrSelect.sizeofSelect")
        if size > _MAX_SELECT_BYTES:
            raise EvidenceFormatError(f"TPMS_ATTEST: PCR select of {size} bytes")
        bitmap = r.take(size, "pcrSelect.pcrSelect")
        indexes = [
            8 * i + bit for i, byte in enumerate(bitmap) for bit in range(8) if byte >> bit & 1
        ]
        selection.append((bank, indexes))
    digest = r.tpm2b("pcrDigest")
    r.done()
    return TpmsAttest(
        magic=magic,
        type=st,
        qualified_signer=signer,
        extra_data=extra,
        clock=clock,
        reset_count=reset_count,
        restart_count=restart_count,
        safe=bool(safe),
        firmware_version=firmware,
        pcr_select=selection,
        pcr_digest=digest,
    )


# --- TPMT_SIGNATURE and TPM2_Quote verification ----------------------------------------------


@dataclass(frozen=True)
class TpmSignature:
    scheme: str  # "rsassa" | "rsapss" | "ecdsa"
    hash: str
    signature: bytes  # RSA signature, or DER-encoded ECDSA (r, s)


def parse_tpmt_signature(data: bytes) -> TpmSignature:
    r = _Reader(data, "TPMT_SIGNATURE")
    alg = r.u16("sigAlg")
    scheme = _SIG_SCHEMES.get(alg)
    if scheme is None:
        raise EvidenceFormatError(f"TPMT_SIGNATURE: unsupported signature scheme 0x{alg:04x}")
    hash_name = _hash_name(r.u16("hash"), "TPMT_SIGNATURE")
    if scheme == "ecdsa":
        sig_r = int.from_bytes(r.tpm2b("signatureR"), "big")
        sig_s = int.from_bytes(r.tpm2b("signatureS"), "big")
        raw = encode_dss_signature(sig_r, sig_s)
    else:
        raw = r.tpm2b("sig")
    r.done()
    return TpmSignature(scheme, hash_name, raw)


def _verify_signature(key: PublicKey, sig: TpmSignature, message: bytes) -> str | None:
    """None when `sig` verifies over `message` with `key`, else why not."""
    algo_cls = _CRYPTO_HASH.get(sig.hash)
    if algo_cls is None:
        return f"signature hash {sig.hash} is not supported"
    algo = algo_cls()
    try:
        if sig.scheme in ("rsassa", "rsapss"):
            if not isinstance(key, rsa.RSAPublicKey):
                return f"an {sig.scheme} signature cannot come from a non-RSA key"
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if sig.scheme == "rsassa"
                else padding.PSS(mgf=padding.MGF1(algo), salt_length=padding.PSS.AUTO)
            )
            key.verify(sig.signature, message, pad, algo)
        else:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return "an ECDSA signature cannot come from a non-ECC key"
            key.verify(sig.signature, message, ec.ECDSA(algo))
    except InvalidSignature:
        return "the signature does not verify with the AK"
    except (ValueError, UnsupportedAlgorithm) as err:
        return f"the signature cannot be checked: {err}"
    return None


@dataclass
class QuoteResult(CheckedResult):
    """Checks on one quote, and the parsed TPMS_ATTEST when it parsed."""

    attest: TpmsAttest | None = None
    signature_hash: str | None = None


def _ak_key(ak: bytes | PublicKey) -> tuple[PublicKey | None, str | None, str]:
    """(key, nameAlg, error) for an AK given as TPMT_PUBLIC bytes or a public key."""
    if isinstance(ak, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return ak, None, ""
    try:
        public = parse_tpmt_public(bytes(ak))
    except EvidenceFormatError as err:
        return None, None, str(err)
    return public.key, public.name_alg, ""


def pcr_digest(pcrs: Mapping[int, bytes], indexes: list[int], hash_name: str) -> bytes:
    """H(PCR[i0] || PCR[i1] || ...) over the selected PCRs in selection order."""
    algo = _CRYPTO_HASH[hash_name]()
    h = hashes.Hash(algo)
    for index in indexes:
        h.update(pcrs[index])
    return h.finalize()


def verify_tpm_quote(
    ak: bytes | PublicKey,
    quote: bytes,
    signature: bytes,
    pcrs: Mapping[int, bytes],
    hash_alg: str,
    expected_nonce: bytes | None = None,
) -> QuoteResult:
    """Verify one TPM2_Quote: its AK signature, and that it covers exactly `pcrs` of `hash_alg`."""
    result = QuoteResult()
    try:
        attest = parse_tpms_attest(quote)
    except EvidenceFormatError as err:
        result.checks.append(Check("quote_parse", False, str(err)))
        return result
    result.attest = attest
    result.checks.append(
        Check(
            "quote_parse",
            True,
            "TPMS_ATTEST quote over "
            + ", ".join(f"{bank} PCRs {_ranges(idx)}" for bank, idx in attest.pcr_select),
        )
    )

    key, name_alg, key_error = _ak_key(ak)
    sig: TpmSignature | None = None
    if key is None:
        result.checks.append(Check("quote_signature", False, f"AK unusable: {key_error}"))
    else:
        try:
            sig = parse_tpmt_signature(signature)
        except EvidenceFormatError as err:
            result.checks.append(Check("quote_signature", False, str(err)))
        else:
            why = _verify_signature(key, sig, quote)
            result.signature_hash = sig.hash
            result.checks.append(
                Check(
                    "quote_signature",
                    why is None,
                    f"{hash_alg} quote: {sig.scheme.upper()}-{sig.hash.upper()} signature by "
                    "the AK verifies"
                    if why is None
                    else f"{hash_alg} quote: {why}",
                )
            )

    digest_hash = sig.hash if sig is not None else name_alg
    result.checks.append(_check_pcr_digest(attest, pcrs, hash_alg, digest_hash))

    if expected_nonce is not None:
        same = attest.extra_data == expected_nonce
        result.checks.append(
            Check(
                "nonce",
                same,
                f"extraData equals the expected nonce ({expected_nonce.hex()})"
                if same
                else f"extraData {attest.extra_data.hex() or '(empty)'} is not the expected "
                f"nonce {expected_nonce.hex()}",
            )
        )
    return result


def _check_pcr_digest(
    attest: TpmsAttest, pcrs: Mapping[int, bytes], bank: str, digest_hash: str | None
) -> Check:
    if bank not in _DIGEST_SIZE:
        return Check("pcr_digest", False, f"unknown PCR bank {bank!r}")
    banks = [b for b, idx in attest.pcr_select if idx]
    if banks != [bank]:
        return Check(
            "pcr_digest",
            False,
            f"the quote selects PCRs of {', '.join(banks) or 'no bank'}, not only {bank}",
        )
    selected = next(idx for b, idx in attest.pcr_select if idx)
    if sorted(pcrs) != sorted(selected):
        missing = sorted(set(selected) - set(pcrs))
        extra = sorted(set(pcrs) - set(selected))
        parts = []
        if missing:
            parts.append(f"PCRs {_ranges(missing)} quoted but not given")
        if extra:
            parts.append(f"PCRs {_ranges(extra)} given but not quoted")
        return Check("pcr_digest", False, f"{bank} PCR selection mismatch: {'; '.join(parts)}")
    wrong_size = [i for i in selected if len(pcrs[i]) != _DIGEST_SIZE[bank]]
    if wrong_size:
        return Check(
            "pcr_digest", False, f"{bank} PCR {wrong_size[0]} is not a {bank} digest in length"
        )
    if digest_hash is None or digest_hash not in _CRYPTO_HASH:
        return Check(
            "pcr_digest", False, f"cannot tell which hash computes the pcrDigest ({digest_hash})"
        )
    computed = pcr_digest(pcrs, selected, digest_hash)
    if computed != attest.pcr_digest:
        return Check(
            "pcr_digest",
            False,
            f"{bank} PCR values do not match the quoted pcrDigest "
            f"({computed.hex()[:16]}... != {attest.pcr_digest.hex()[:16]}...)",
        )
    return Check("pcr_digest", True, f"{bank} PCRs {_ranges(selected)} match the quoted pcrDigest")


def _ranges(indexes: list[int]) -> str:
    """[0,1,2,3,7] -> '0-3,7'."""
    out: list[str] = []
    items = sorted(indexes)
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(out) or "(none)"


# --- event-log replay ------------------------------------------------------------------------


def _replay_check(log: eventlog.EventLog, pcrs: Mapping[int, bytes], bank: str) -> Check:
    logged = sorted({e.index for e in log.events if e.event_type != eventlog.EV_NO_ACTION})
    covered = [i for i in logged if i in pcrs]
    uncovered = [i for i in logged if i not in pcrs]
    if not covered:
        return Check(
            "event_log_replay",
            False,
            f"the event log extends no PCR the {bank} quote covers (log: {_ranges(logged)})",
        )
    try:
        replayed = eventlog.replay(log, bank, covered)
    except EvidenceFormatError as err:
        return Check("event_log_replay", False, f"{bank} bank: {err}")
    for index in covered:
        if replayed[index] != pcrs[index]:
            extends = [
                (number, e)
                for number, e in enumerate(log.events, 1)
                if e.index == index and e.event_type != eventlog.EV_NO_ACTION
            ]
            number, last = extends[-1]
            return Check(
                "event_log_replay",
                False,
                f"{bank} PCR {index}: event-log replay of its {len(extends)} events (the last "
                f"{last.type_name}, event {number}) gives {replayed[index].hex()}, the quoted "
                f"value is {pcrs[index].hex()}",
            )
    note = (
        f" (events for PCRs {_ranges(uncovered)} are not covered by the quote)" if uncovered else ""
    )
    return Check(
        "event_log_replay",
        True,
        f"event-log replay reproduces {bank} PCRs {_ranges(covered)}{note}",
    )


def verify_event_log_against_pcrs(log: bytes, pcrs: Mapping[int, bytes], bank: str) -> Check:
    """Replay a TCG event log against `pcrs` of `bank`; a failure names the differing PCR."""
    try:
        parsed = eventlog.parse_event_log(log)
    except EvidenceFormatError as err:
        return Check("event_log_replay", False, f"event log unreadable: {err}")
    return _replay_check(parsed, pcrs, bank)


# --- GCE vTPM attestation --------------------------------------------------------------------


@dataclass
class VtpmOptions:
    at: datetime | None = None
    expected_nonce: bytes | None = None
    trust: TrustStore | None = None
    expected: Expected | None = None


@dataclass
class VtpmResult(CheckedResult):
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def authentic(self) -> bool:
        """The quotes come from a vTPM whose AK the pinned CA certified (PCRs aside)."""
        return all(self.check(n) is True for n in ("ak_chain", "ak_binding", "quote_signature"))


def _combine(name: str, checks: list[Check]) -> Check:
    """One check per name: the first failure's reason, or every success's reason joined."""
    failed = [c for c in checks if not c.ok]
    if failed:
        return Check(name, False, failed[0].reason)
    return Check(name, True, "; ".join(c.reason for c in checks))


def load_der_certificate(raw: bytes, what: str) -> x509.Certificate:
    """Load a DER certificate from evidence and decode all of it now, or raise a format error."""
    try:
        cert = x509.load_der_x509_certificate(raw)
        cert.subject.rfc4514_string()
        cert.issuer.rfc4514_string()
        for ext in cert.extensions:
            _ = ext.value
        cert.public_key()
    except CERT_ERRORS as err:
        raise EvidenceFormatError(f"{what} is not a usable DER certificate: {err}") from err
    return cert


def _identity_check(
    cert: x509.Certificate | None, expected: Expected | None, facts: dict[str, Any]
) -> Check | None:
    ident = None
    problem = "no AK certificate"
    if cert is not None:
        try:
            ext = cert.extensions.get_extension_for_oid(IDENTITY_OID)
        except x509.ExtensionNotFound:
            problem = (
                "the AK certificate has no instance-identity extension (1.3.6.1.4.1.11129.2.1.21)"
            )
        except CERT_ERRORS as err:
            problem = f"the AK certificate's extensions do not parse: {err}"
        else:
            value = ext.value
            raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
            try:
                ident = parse_identity(raw)
            except (DerError, UnicodeDecodeError) as err:
                problem = f"instance-identity extension: {err}"
    if ident is not None:
        facts["instance"] = {
            "project_id": ident.project_id,
            "project_number": ident.project_number,
            "zone": ident.zone,
            "instance_id": str(ident.instance_id),
            "instance_name": ident.instance_name,
        }
        if ident.security:
            facts["instance"]["security"] = dict(ident.security)
    if expected is None:
        return None
    if ident is None:
        return Check("identity", False, problem)
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
    if mismatches:
        return Check(
            "identity", False, "the AK certificate names another instance: " + ", ".join(mismatches)
        )
    return Check(
        "identity",
        True,
        f"the AK certificate names instance {ident.instance_name} ({ident.instance_id}) "
        f"in {ident.project_id}/{ident.zone}",
    )


def verify_gce_attestation(data: bytes, options: VtpmOptions | None = None) -> VtpmResult:
    """Verify a go-tpm-tools attestation from a GCE vTPM against Google's pinned vTPM CAs."""
    # Google's vTPM CA names exceed X.520's 64-character bound; cryptography warns on each use.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attribute's length", category=UserWarning)
        return _verify_gce_attestation(data, options or VtpmOptions())


def _verify_gce_attestation(data: bytes, opts: VtpmOptions) -> VtpmResult:
    at = opts.at or datetime.now(UTC)
    trust = opts.trust or gcp_vtpm_store()
    att = gotpm.parse_attestation(data)
    ak = parse_tpmt_public(att.ak_pub)
    result = VtpmResult()
    facts = result.facts
    facts["ak"] = {
        "type": ak.type,
        "name_alg": ak.name_alg,
        "attributes": list(ak.attribute_names),
        "scheme": ak.scheme,
    }
    facts["quotes"] = len(att.quotes)
    result.checks.append(
        Check(
            "parse",
            True,
            f"go-tpm-tools attestation: {ak.type.upper()} AK, {len(att.quotes)} quotes "
            f"({', '.join(q.bank for q in att.quotes)}), event log {len(att.event_log)} bytes, "
            f"AK certificate {'present' if att.ak_cert else 'absent'}",
        )
    )

    # AK certificate: chain to the pinned roots, and the same key as the AK that signs quotes.
    cert: x509.Certificate | None = None
    if not att.ak_cert:
        result.checks.append(Check("ak_chain", False, "the attestation carries no AK certificate"))
        result.checks.append(Check("ak_binding", False, "no AK certificate to bind the AK to"))
    else:
        try:
            cert = load_der_certificate(att.ak_cert, "AK certificate")
            extra = tuple(
                load_der_certificate(raw, f"intermediate certificate {n + 1}")
                for n, raw in enumerate(att.intermediate_certs)
            )
        except EvidenceFormatError as err:
            result.checks.append(Check("ak_chain", False, str(err)))
            result.checks.append(Check("ak_binding", False, str(err)))
            cert = None
        else:
            chain = verify_chain(cert, trust, at, extra)
            result.checks.append(Check("ak_chain", chain.ok, chain.reason))
            facts["ak_subject"] = cert.subject.rfc4514_string()
            facts["ak_issuer"] = cert.issuer.rfc4514_string()
            if chain.root_fingerprint:
                facts["root_sha256"] = chain.root_fingerprint
            try:
                cert_spki = _spki(cert.public_key())  # type: ignore[arg-type]
            except (ValueError, UnsupportedAlgorithm, AttributeError) as err:
                cert_spki = b""
                why = f"the AK certificate's key is unusable: {err}"
            else:
                why = "the AK certificate certifies a different key than the quoting AK"
            same = cert_spki == ak.spki_der()
            result.checks.append(
                Check(
                    "ak_binding",
                    same,
                    "the AK certificate certifies the quoting AK (TPMT_PUBLIC)" if same else why,
                )
            )

    # Quotes: signature, PCR digest and nonce for every bank.
    quote_results = [
        (q, verify_tpm_quote(ak.key, q.quote, q.raw_sig, q.pcrs, q.bank, opts.expected_nonce))
        for q in att.quotes
    ]
    for name in ("quote_signature", "pcr_digest"):
        result.checks.append(_combine(name, [_named(r, name, q.bank) for q, r in quote_results]))
    if opts.expected_nonce is not None:
        result.checks.append(
            _combine("nonce", [_named(r, "nonce", q.bank) for q, r in quote_results])
        )
    facts["pcrs"] = {q.bank: {i: v.hex() for i, v in sorted(q.pcrs.items())} for q in att.quotes}
    extra_data = {r.attest.extra_data.hex() for _, r in quote_results if r.attest is not None}
    if len(extra_data) == 1:
        facts["extra_data"] = extra_data.pop()

    identity = _identity_check(cert, opts.expected, facts)
    if identity is not None:
        result.checks.append(identity)

    result.checks.append(_event_log_check(att, facts))
    return result


def _named(result: QuoteResult, name: str, bank: str) -> Check:
    for c in result.checks:
        if c.name == name:
            return c
    # The quote did not parse, so this check could not run: that is a failure, not a pass.
    parse_reason = next((c.reason for c in result.checks if c.name == "quote_parse"), "")
    return Check(name, False, f"{bank} quote unreadable: {parse_reason}")


def _event_log_check(att: gotpm.Attestation, facts: dict[str, Any]) -> Check:
    if not att.event_log:
        return Check("event_log_replay", False, "the attestation carries no event log")
    try:
        log = eventlog.parse_event_log(att.event_log)
    except EvidenceFormatError as err:
        return Check("event_log_replay", False, f"event log unreadable: {err}")
    facts["events"] = len(log.events)
    facts["secure_boot"] = eventlog.secure_boot_state(log)
    replayable = [q for q in att.quotes if q.bank in log.algorithms]
    if not replayable:
        return Check(
            "event_log_replay",
            False,
            f"the event log has no bank of the quotes ({', '.join(q.bank for q in att.quotes)})",
        )
    check = _combine("event_log_replay", [_replay_check(log, q.pcrs, q.bank) for q in replayable])
    skipped = [q.bank for q in att.quotes if q.bank not in log.algorithms]
    if check.ok and skipped:
        check.reason += f" (the log records no {', '.join(skipped)} digests)"
    return check
