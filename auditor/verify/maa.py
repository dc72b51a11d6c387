"""Microsoft Azure Attestation (MAA) tokens: guest evidence for an Azure confidential VM.

An MAA token is an RS256 JWT whose payload carries the SEV-SNP (or TDX) report fields MAA
checked, under `x-ms-isolation-tee`. It is only evidence if its signature verifies under a key
of an issuer we pinned beforehand: nothing the token says about where its keys live (`jku`,
`x5u`, `jwk`, `x5c` in the header) is trusted or fetched. A verified token shows what MAA saw;
it does not take Microsoft (paravisor, MAA itself) out of the trust set.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from auditor.verify.checks import Check, CheckedResult
from auditor.verify.errors import CERT_ERRORS, decoded

MAX_TOKEN = 64 * 1024
# MAA signing certificates embed an SGX quote, so a JWKS with x5c chains is larger than usual.
MAX_JWKS = 1024 * 1024
MIN_RSA_BITS = 2048
ALLOWED_ALG = "RS256"
AZUREVM = "azurevm"
TEE_TYPES = frozenset({"sevsnpvm", "tdxvm"})
COMPLIANT = "azure-compliant-cvm"
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_KEY_LOCATORS = ("jku", "x5u", "jwk", "x5c")


@dataclass(frozen=True)
class MaaPolicy:
    """Which MAA issuers we trust (pinned, never taken from the token) and the clock leeway."""

    allowed_issuers: tuple[str, ...]
    leeway_seconds: int = 60


@dataclass
class MaaResult(CheckedResult):
    """All checks on one MAA token; `ok` only when every check passed.

    `claims` and `facts` are filled whenever the token parses, even if a check failed, so a
    report can show what an unverified token claimed; rules must only trust them when `ok`.
    """

    claims: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


# --- decoding helpers --------------------------------------------------------------------------


def _b64url_decode(text: str) -> bytes:
    """Strict, canonical base64url without padding (RFC 7515 §2): one encoding per byte string."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise ValueError("non-canonical base64url")
    return raw


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate JSON member {_show(key)}")
        out[key] = value
    return out


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """Parse a JSON object; duplicate members and NaN/Infinity are refused (no ambiguity)."""
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError too
        raise ValueError(f"{what} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _show(value: Any, limit: int = 80) -> str:
    """repr of a token-controlled value, bounded so a hostile token cannot flood the report."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _norm_issuer(issuer: str) -> str:
    return issuer.rstrip("/")


def _number(value: Any) -> float | None:
    """A JSON number usable as a NumericDate; bool is not a number here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return float(value)


def _iso(seconds: float) -> str | None:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


# --- JWKS --------------------------------------------------------------------------------------


def load_jwks(data: bytes | str) -> dict[str, Any]:
    """Parse a JWKS document (bounded); ValueError says what is wrong with it."""
    if len(data) > MAX_JWKS:
        raise ValueError(f"JWKS is larger than {MAX_JWKS} bytes")
    doc = _json_object(data, "JWKS")
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise ValueError("JWKS has no 'keys' list")
    for i, key in enumerate(keys):
        if not isinstance(key, dict):
            raise ValueError(f"JWKS key #{i} is not an object")
        for member in ("kid", "kty"):
            if not isinstance(key.get(member), str):
                raise ValueError(f"JWKS key #{i} has no string {member!r}")
    return doc


def _rsa_from_jwk(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    """The RSA key a JWK names, from n/e and/or its x5c leaf; both must agree if both exist."""
    if jwk.get("kty") != "RSA":
        raise ValueError(f"key type {jwk.get('kty')!r} is not RSA")
    if jwk.get("alg") not in (None, ALLOWED_ALG):
        raise ValueError(f"key is for alg {jwk.get('alg')!r}, not {ALLOWED_ALG}")
    if jwk.get("use") not in (None, "sig"):
        raise ValueError(f"key use is {jwk.get('use')!r}, not 'sig'")
    from_ne: rsa.RSAPublicKey | None = None
    from_cert: rsa.RSAPublicKey | None = None
    n, e = jwk.get("n"), jwk.get("e")
    if n is not None or e is not None:
        if not isinstance(n, str) or not isinstance(e, str):
            raise ValueError("key has only one of n and e")
        numbers = rsa.RSAPublicNumbers(
            e=int.from_bytes(_b64url_decode(e), "big"), n=int.from_bytes(_b64url_decode(n), "big")
        )
        from_ne = numbers.public_key()
    x5c = jwk.get("x5c")
    if x5c is not None:
        if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
            raise ValueError("x5c is not a list of base64 certificates")
        try:
            der = base64.b64decode(x5c[0], validate=True)
        except binascii.Error as err:
            raise ValueError(f"x5c[0] is not base64: {err}") from None
        try:
            leaf_key = decoded(x509.load_der_x509_certificate(der), "x5c[0]").public_key()
        except CERT_ERRORS as err:
            raise ValueError(f"x5c[0] is not a usable certificate: {err}") from None
        if not isinstance(leaf_key, rsa.RSAPublicKey):
            raise ValueError("x5c[0] does not hold an RSA key")
        from_cert = leaf_key
    key = from_ne or from_cert
    if key is None:
        raise ValueError("key has neither n/e nor x5c")
    if (
        from_ne is not None
        and from_cert is not None
        and from_ne.public_numbers() != from_cert.public_numbers()
    ):
        raise ValueError("n/e and the x5c certificate hold different keys")
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key has {key.key_size} bits, fewer than {MIN_RSA_BITS}")
    return key


def _find_key(
    jwks: Mapping[str, Any], kid: Any, issuer: str | None
) -> tuple[rsa.RSAPublicKey | None, str]:
    where = f" (fetch {issuer}/certs from a pinned issuer)" if issuer else ""
    if not isinstance(kid, str) or not kid:
        return None, "header has no kid: the signing key cannot be identified"
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if keys is not None and not isinstance(keys, list):
        return (
            None,
            f"JWKS is malformed ('keys' is not a list): signature cannot be verified{where}",
        )
    if not keys:
        return None, (
            f"no JWKS keys given: signature of kid {_show(kid)} cannot be verified offline{where}"
        )
    matches = [k for k in keys if isinstance(k, Mapping) and k.get("kid") == kid]
    if not matches:
        known = sorted(str(k.get("kid")) for k in keys if isinstance(k, Mapping))
        return None, (
            f"kid {_show(kid)} is not in the JWKS (has {', '.join(_show(k) for k in known[:10])}): "
            f"signature cannot be verified{where}"
        )
    if len(matches) > 1:
        return None, f"kid {_show(kid)} appears {len(matches)} times in the JWKS (ambiguous)"
    try:
        return _rsa_from_jwk(matches[0]), f"kid {_show(kid)} found in the given JWKS"
    except (ValueError, UnsupportedAlgorithm) as err:
        return None, f"JWKS key {_show(kid)} is unusable: {err}"


# --- verification ------------------------------------------------------------------------------


@dataclass
class _Parsed:
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _parse(token: Any) -> _Parsed:
    if not isinstance(token, str):
        raise ValueError("token is not a string")
    token = token.strip()
    if not token:
        raise ValueError("token is empty")
    if len(token) > MAX_TOKEN:
        raise ValueError(f"token is longer than {MAX_TOKEN} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"token has {len(parts)} dot-separated parts, expected 3")
    decoded: list[bytes] = []
    for name, part in zip(("header", "payload", "signature"), parts, strict=True):
        try:
            decoded.append(_b64url_decode(part))
        except ValueError as err:
            raise ValueError(f"{name} is not base64url: {err}") from None
    header = _json_object(decoded[0], "header")
    payload = _json_object(decoded[1], "payload")
    return _Parsed(
        header=header,
        payload=payload,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=decoded[2],
    )


def _check_algorithm(header: Mapping[str, Any]) -> Check:
    alg = header.get("alg")
    if alg != ALLOWED_ALG:
        return Check("algorithm", False, f"alg {_show(alg)} is not accepted (only {ALLOWED_ALG})")
    crit = header.get("crit")
    if crit is not None:
        return Check(
            "algorithm",
            False,
            f"header marks extensions critical ({_show(crit)}); none is understood",
        )
    return Check("algorithm", True, f"alg is {ALLOWED_ALG}")


def _check_issuer(payload: Mapping[str, Any], policy: MaaPolicy) -> Check:
    iss = payload.get("iss")
    pinned = {_norm_issuer(i) for i in policy.allowed_issuers}
    if not isinstance(iss, str):
        return Check("issuer", False, "token has no string iss claim")
    if _norm_issuer(iss) not in pinned:
        return Check(
            "issuer", False, f"issuer {_show(iss)} is not pinned (allowed: {sorted(pinned)})"
        )
    return Check("issuer", True, f"issuer {iss!r} is pinned")


def _check_expiry(payload: Mapping[str, Any], now: float, leeway: int) -> Check:
    problems: list[str] = []
    exp_raw = payload.get("exp")
    exp = _number(exp_raw)
    if exp is None:
        problems.append(
            "no numeric exp claim" if exp_raw is None else f"exp {_show(exp_raw)} is not a number"
        )
    elif now - leeway >= exp:
        problems.append(f"expired at {_iso(exp) or exp} (checked at {_iso(now)}, leeway {leeway}s)")
    for name in ("nbf", "iat"):
        raw = payload.get(name)
        if raw is None:
            continue
        value = _number(raw)
        if value is None:
            problems.append(f"{name} {_show(raw)} is not a number")
        elif value > now + leeway:
            problems.append(
                f"not yet valid: {name} {_iso(value) or value} is after {_iso(now)} "
                f"(leeway {leeway}s)"
            )
    if problems or exp is None:
        return Check("expiry", False, "; ".join(problems))
    facts_exp = _iso(exp) or exp
    return Check("expiry", True, f"valid at {_iso(now)} (expires {facts_exp})")


def _tee(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    tee = payload.get("x-ms-isolation-tee")
    return tee if isinstance(tee, Mapping) else {}


def _check_attestation_type(payload: Mapping[str, Any]) -> Check:
    outer = payload.get("x-ms-attestation-type")
    tee_type = _tee(payload).get("x-ms-attestation-type")
    problems = []
    if outer != AZUREVM:
        problems.append(f"x-ms-attestation-type is {_show(outer)}, not {AZUREVM!r}")
    if tee_type not in TEE_TYPES:
        problems.append(
            f"x-ms-isolation-tee.x-ms-attestation-type is {_show(tee_type)}, "
            f"not one of {sorted(TEE_TYPES)}"
        )
    if problems:
        return Check("attestation_type", False, "; ".join(problems))
    return Check("attestation_type", True, f"{AZUREVM} with TEE {tee_type}")


def _check_compliance(payload: Mapping[str, Any]) -> Check:
    status = _tee(payload).get("x-ms-compliance-status")
    if status != COMPLIANT:
        return Check(
            "compliance",
            False,
            f"x-ms-isolation-tee.x-ms-compliance-status is {_show(status)}, not {COMPLIANT!r}",
        )
    return Check("compliance", True, f"compliance status {COMPLIANT}")


_BOOL_FACTS = {
    "debuggable": "x-ms-sevsnpvm-is-debuggable",
    "migration_allowed": "x-ms-sevsnpvm-migration-allowed",
    "smt_allowed": "x-ms-sevsnpvm-smt-allowed",
}
_INT_FACTS = {
    "vmpl": "x-ms-sevsnpvm-vmpl",
    "bootloader_svn": "x-ms-sevsnpvm-bootloader-svn",
    "tee_svn": "x-ms-sevsnpvm-tee-svn",
    "snpfw_svn": "x-ms-sevsnpvm-snpfw-svn",
    "microcode_svn": "x-ms-sevsnpvm-microcode-svn",
}
_HEX_FACTS = {
    "launch_measurement": "x-ms-sevsnpvm-launchmeasurement",
    "host_data": "x-ms-sevsnpvm-hostdata",
    "id_key_digest": "x-ms-sevsnpvm-idkeydigest",
    "report_data": "x-ms-sevsnpvm-reportdata",
}
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def extract_facts(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Normalised facts for rules. A claim that is missing or of the wrong type stays absent:
    a rule must see "unknown", never a default that looks like an answer."""
    facts: dict[str, Any] = {}
    tee = _tee(payload)
    for fact, claim in (
        ("tee", "x-ms-attestation-type"),
        ("compliance_status", "x-ms-compliance-status"),
    ):
        if isinstance(tee.get(claim), str):
            facts[fact] = tee[claim]
    if isinstance(payload.get("x-ms-azurevm-vmid"), str):
        facts["vm_id"] = payload["x-ms-azurevm-vmid"]
    for fact, claim in _BOOL_FACTS.items():
        if isinstance(tee.get(claim), bool):
            facts[fact] = tee[claim]
    for fact, claim in _INT_FACTS.items():
        value = tee.get(claim)
        if isinstance(value, int) and not isinstance(value, bool):
            facts[fact] = value
    for fact, claim in _HEX_FACTS.items():
        value = tee.get(claim)
        if isinstance(value, str) and _HEX.fullmatch(value):
            facts[fact] = value.lower()
    iss = payload.get("iss")
    if isinstance(iss, str):
        facts["issuer"] = _norm_issuer(iss)
    exp = _number(payload.get("exp"))
    if exp is not None and (when := _iso(exp)) is not None:
        facts["expires_at"] = when
    config: Any = None
    for runtime in (tee.get("x-ms-runtime"), payload.get("x-ms-runtime")):
        if isinstance(runtime, Mapping) and isinstance(runtime.get("vm-configuration"), Mapping):
            config = runtime["vm-configuration"]
            break
    if isinstance(config, Mapping):
        for fact, claim in (("secure_boot", "secure-boot"), ("vtpm_enabled", "tpm-enabled")):
            if isinstance(config.get(claim), bool):
                facts[fact] = config[claim]
    return facts


def verify_maa_token(
    token: str, jwks: Mapping[str, Any], policy: MaaPolicy, at: datetime
) -> MaaResult:
    """Check one MAA token offline against a JWKS the caller obtained from a pinned issuer.

    Never raises on bad input: every problem is a failed, named check. Checks after `parse`
    all run, so the report shows every reason a token is unacceptable, not just the first.
    A naive `at` is taken as UTC.
    """
    result = MaaResult()
    try:
        parsed = _parse(token)
    except ValueError as err:
        result.checks.append(Check("parse", False, f"token does not parse: {err}"))
        return result
    result.checks.append(Check("parse", True, "token parses as a JWS compact JWT"))
    header, payload = parsed.header, parsed.payload
    result.claims = payload
    result.facts = extract_facts(payload)

    algorithm = _check_algorithm(header)
    result.checks.append(algorithm)
    result.checks.append(_check_issuer(payload, policy))

    iss = payload.get("iss")
    issuer = _norm_issuer(iss) if isinstance(iss, str) else None
    key, key_reason = _find_key(jwks, header.get("kid"), issuer)
    ignored = [h for h in _KEY_LOCATORS if h in header]
    jku = header.get("jku")
    if jku is not None and (issuer is None or jku != f"{issuer}/certs"):
        key_reason += f"; header jku {_show(jku)} is not <iss>/certs and was ignored"
    elif ignored:
        key_reason += f"; header {', '.join(ignored)} ignored (keys come only from the JWKS given)"
    result.checks.append(Check("key", key is not None, key_reason))

    if not algorithm.ok:
        sig = Check("signature", False, f"signature not verified: {algorithm.reason}")
    elif key is None:
        sig = Check("signature", False, "signature not verified: no trusted key for its kid")
    else:
        try:
            key.verify(parsed.signature, parsed.signing_input, padding.PKCS1v15(), hashes.SHA256())
            sig = Check("signature", True, "RS256 signature verifies")
        except InvalidSignature:
            sig = Check("signature", False, "RS256 signature does not verify (token altered?)")
    result.checks.append(sig)

    when = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    result.checks.append(_check_expiry(payload, when.timestamp(), policy.leeway_seconds))
    result.checks.append(_check_attestation_type(payload))
    result.checks.append(_check_compliance(payload))
    return result


# --- online ------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would let the server send us to keys of its choosing: refuse it."""

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> None:
        raise urllib.error.HTTPError(newurl, code, f"redirect to {newurl} refused", headers, fp)


def _is_loopback(host: str) -> bool:
    """A literal loopback address only: a name like "localhost" is whatever DNS says it is."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetch_jwks(issuer: str, policy: MaaPolicy, timeout: float = 10.0) -> dict[str, Any]:
    """GET <issuer>/certs, but only for an issuer pinned in `policy` (never from a token's jku).

    https is required except on loopback (local tests); redirects are refused and the body is
    bounded. Every refusal or failure is a ValueError.
    """
    wanted = _norm_issuer(issuer)
    if wanted not in {_norm_issuer(i) for i in policy.allowed_issuers}:
        raise ValueError(f"issuer {issuer!r} is not pinned in the policy; refusing to fetch")
    parts = urllib.parse.urlsplit(wanted)
    host = parts.hostname or ""
    if not host or parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"issuer {issuer!r} is not a plain https://host URL")
    loopback = _is_loopback(host)
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(f"issuer {issuer!r} is not https (plain http only on loopback)")
    url = f"{wanted}/certs"
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if loopback:
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
            body = response.read(MAX_JWKS + 1)
    except urllib.error.HTTPError as err:
        raise ValueError(f"GET {url} failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise ValueError(f"GET {url} failed: {err}") from None
    if status != 200:
        raise ValueError(f"GET {url} returned HTTP {status}")
    if len(body) > MAX_JWKS:
        raise ValueError(f"GET {url} returned more than {MAX_JWKS} bytes")
    return load_jwks(body)
