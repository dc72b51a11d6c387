"""MAA tokens: RS256 under a pinned issuer's JWKS, never the token's own key pointers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.verify.maa import (
    MAX_JWKS,
    MaaPolicy,
    MaaResult,
    extract_facts,
    fetch_jwks,
    load_jwks,
    verify_maa_token,
)

DATA = Path(__file__).parent / "data" / "cloud"
TOKEN = (DATA / "azure_maa_token_FIXTURE.jwt").read_text().strip()
JWKS = load_jwks((DATA / "azure_maa_jwks_FIXTURE.json").read_bytes())
REAL = (DATA / "azure_maa_token_real_sample.jwt").read_text().strip()
CLAIMS = json.loads((DATA / "azure_maa_token_claims.json").read_text())
ISSUER = "https://sharedwus.wus.attest.azure.net"
POLICY = MaaPolicy(allowed_issuers=(ISSUER + "/",))  # trailing slash: normalised away


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    h, p, s = token.split(".")
    return json.loads(unb64url(h)), json.loads(unb64url(p)), unb64url(s)


HEADER, PAYLOAD, SIGNATURE = segments(TOKEN)
INSIDE = datetime.fromtimestamp((PAYLOAD["iat"] + PAYLOAD["exp"]) // 2, UTC)
CHECK_NAMES = [
    "parse",
    "algorithm",
    "issuer",
    "key",
    "signature",
    "expiry",
    "attestation_type",
    "compliance",
]


def verify(
    token: str, jwks: Any = JWKS, policy: MaaPolicy = POLICY, at: datetime = INSIDE
) -> MaaResult:
    return verify_maa_token(token, jwks, policy, at)


def failed(result: MaaResult) -> list[str]:
    return [c.name for c in result.checks if not c.ok]


def reason_of(result: MaaResult, name: str) -> str:
    return next(c.reason for c in result.checks if c.name == name)


def encode(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())


@pytest.fixture(scope="module")
def own_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(key: rsa.RSAPrivateKey, header: dict[str, Any], payload: dict[str, Any]) -> str:
    signing_input = encode(header, payload)
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(sig)


def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "kid": kid,
        "n": b64url(numbers.n.to_bytes(256, "big")),
        "e": b64url(numbers.e.to_bytes(3, "big")),
    }


@pytest.fixture(autouse=True)
def _no_network(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline verification must never open a URL (the token's jku above all)."""
    if "server" in request.fixturenames:
        return  # those tests fetch from their own loopback server

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", refuse)


# --- the good path -----------------------------------------------------------------------------


def test_fixture_token_verifies() -> None:
    result = verify(TOKEN)
    assert [c.name for c in result.checks] == CHECK_NAMES
    assert result.ok, result.reason
    assert result.reason == "all checks passed"
    assert result.check("signature") is True
    assert result.claims == CLAIMS["payload"]
    # The FIXTURE header points jku at a loopback URL: ignored, and the report says so.
    assert "http://127.0.0.1:0/certs" in reason_of(result, "key")
    assert "ignored" in reason_of(result, "key")
    assert all(isinstance(c.as_dict()["reason"], str) for c in result.checks)


def test_leeway_applies_at_both_ends() -> None:
    leeway = POLICY.leeway_seconds
    just_after_exp = datetime.fromtimestamp(PAYLOAD["exp"] + leeway - 1, UTC)
    just_before_nbf = datetime.fromtimestamp(PAYLOAD["nbf"] - leeway, UTC)
    assert verify(TOKEN, at=just_after_exp).ok
    assert verify(TOKEN, at=just_before_nbf).ok


def test_naive_time_is_utc() -> None:
    assert verify(TOKEN, at=INSIDE.replace(tzinfo=None)).ok


# --- each attack fails its own check -----------------------------------------------------------


def test_flipped_signature_byte() -> None:
    h, p, _ = TOKEN.split(".")
    sig = bytearray(SIGNATURE)
    sig[100] ^= 0x01
    result = verify(f"{h}.{p}.{b64url(bytes(sig))}")
    assert failed(result) == ["signature"]
    assert "does not verify" in result.reason


def test_flipped_payload_byte() -> None:
    h, p, s = TOKEN.split(".")
    raw = bytearray(unb64url(p))
    at = raw.index(b"D3FD4B09")
    raw[at + 7] ^= 0x01  # '9' -> '8' in the vmid: still valid JSON, different claims
    result = verify(f"{h}.{b64url(bytes(raw))}.{s}")
    assert failed(result) == ["signature"]
    assert result.check("parse") is True
    assert result.claims["x-ms-azurevm-vmid"].startswith("D3FD4B08")  # shown, not trusted


def test_wrong_issuer() -> None:
    other = MaaPolicy(allowed_issuers=("https://sharedweu.weu.attest.azure.net",))
    result = verify(TOKEN, policy=other)
    assert failed(result) == ["issuer"]
    assert ISSUER in result.reason and "not pinned" in result.reason


def test_expired() -> None:
    late = datetime.fromtimestamp(PAYLOAD["exp"], UTC) + timedelta(seconds=61)
    result = verify(TOKEN, at=late)
    assert failed(result) == ["expiry"]
    assert "expired" in result.reason


def test_not_yet_valid() -> None:
    early = datetime.fromtimestamp(PAYLOAD["nbf"], UTC) - timedelta(seconds=61)
    result = verify(TOKEN, at=early)
    assert failed(result) == ["expiry"]
    assert "not yet valid" in result.reason and "nbf" in result.reason


def test_alg_none() -> None:
    _, p, _ = TOKEN.split(".")
    header = dict(HEADER, alg="none")
    token = b64url(json.dumps(header).encode()) + "." + p + "."
    result = verify(token)
    assert result.check("parse") is True
    assert result.check("algorithm") is False
    assert result.check("signature") is False
    assert not result.ok
    assert "'none'" in reason_of(result, "algorithm")


@pytest.mark.parametrize("secret_form", ["pem", "der", "jwk_json"])
def test_alg_hs256_with_public_key_as_secret(secret_form: str) -> None:
    """The classic confusion: HMAC keyed with the (public) RSA key must never verify."""
    jwk = JWKS["keys"][0]
    n = int.from_bytes(unb64url(jwk["n"]), "big")
    e = int.from_bytes(unb64url(jwk["e"]), "big")
    public = rsa.RSAPublicNumbers(e, n).public_key()
    secret = {
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk_json": json.dumps(jwk).encode(),
    }[secret_form]
    signing_input = encode(dict(HEADER, alg="HS256"), PAYLOAD)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    result = verify(signing_input + "." + b64url(mac))
    assert result.check("algorithm") is False
    assert result.check("signature") is False
    assert not result.ok
    assert "'HS256'" in reason_of(result, "algorithm")


def test_unknown_kid() -> None:
    jwks = {"keys": [dict(JWKS["keys"][0], kid="some-other-key")]}
    result = verify(TOKEN, jwks=jwks)
    assert failed(result) == ["key", "signature"]
    assert "'fixture-maa-signing-key' is not in the JWKS" in reason_of(result, "key")


def test_duplicate_kid_is_ambiguous() -> None:
    jwks = {"keys": [JWKS["keys"][0], JWKS["keys"][0]]}
    result = verify(TOKEN, jwks=jwks)
    assert failed(result) == ["key", "signature"]
    assert "ambiguous" in result.reason


def test_jku_elsewhere_is_ignored(own_key: rsa.RSAPrivateKey) -> None:
    """A token naming its own key URL gets nothing from it: only the given JWKS counts."""
    header = dict(HEADER, kid="k1", jku="https://evil.example/certs")
    token = sign(own_key, header, PAYLOAD)
    good = verify(token, jwks={"keys": [jwk_of(own_key, "k1")]})
    assert good.ok, good.reason
    assert "https://evil.example/certs" in reason_of(good, "key")
    # The same token against the pinned JWKS (which lacks k1): refused, nothing fetched.
    bad = verify(token)
    assert failed(bad) == ["key", "signature"]


def test_attacker_key_under_the_pinned_kid_fails(own_key: rsa.RSAPrivateKey) -> None:
    token = sign(own_key, HEADER, PAYLOAD)
    result = verify(token)
    assert failed(result) == ["signature"]


def test_crit_header_is_refused(own_key: rsa.RSAPrivateKey) -> None:
    header = {"alg": "RS256", "kid": "k1", "crit": ["b64"], "b64": False}
    result = verify(sign(own_key, header, PAYLOAD), jwks={"keys": [jwk_of(own_key, "k1")]})
    assert failed(result) == ["algorithm", "signature"]
    assert "critical" in result.reason


def test_weak_key_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    numbers = small.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "kid": "k1",
        "n": b64url(numbers.n.to_bytes(128, "big")),
        "e": "AQAB",
    }
    result = verify(sign(small, dict(HEADER, kid="k1"), PAYLOAD), jwks={"keys": [jwk]})
    assert failed(result) == ["key", "signature"]
    assert "1024 bits" in result.reason


@pytest.mark.parametrize(
    "token",
    [
        TOKEN[: len(TOKEN) // 2],
        TOKEN.rsplit(".", 1)[0],
        TOKEN.split(".", 1)[0],
        TOKEN + ".",
        TOKEN + "x" * (64 * 1024),
    ],
    ids=["half", "no-signature-part", "header-only", "four-parts", "oversized"],
)
def test_truncated_or_malformed(token: str) -> None:
    result = verify(token)
    assert failed(result) == ["parse"]
    assert result.claims == {} and result.facts == {}


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "..", "\x00.\x00.\x00", "eyJ9.eyJ9.", "W10.W10.", "e30.e30.!!!"],
)
def test_garbage(token: str) -> None:
    result = verify(token)
    assert [c.name for c in result.checks] == ["parse"]
    assert not result.ok and result.reason.startswith("token does not parse")


def test_duplicate_claims_are_refused() -> None:
    """Two `iss` members could mean two things to two parsers: refuse to guess."""
    h, _, s = TOKEN.split(".")
    payload = b'{"iss":"https://evil.example","iss":"' + ISSUER.encode() + b'"}'
    result = verify(f"{h}.{b64url(payload)}.{s}")
    assert failed(result) == ["parse"]
    assert "duplicate" in result.reason


def test_non_canonical_base64_is_refused() -> None:
    h, p, s = TOKEN.split(".")
    # The last signature char carries 4 unused bits (256 bytes -> 342 chars); set one.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    bumped = s[:-1] + alphabet[alphabet.index(s[-1]) ^ 1]
    assert unb64url(bumped) == SIGNATURE
    assert failed(verify(f"{h}.{p}.{bumped}")) == ["parse"]


def test_claim_checks_report_everything(own_key: rsa.RSAPrivateKey) -> None:
    payload = dict(PAYLOAD)
    payload["x-ms-attestation-type"] = "sgx"
    payload["x-ms-isolation-tee"] = dict(
        PAYLOAD["x-ms-isolation-tee"],
        **{"x-ms-attestation-type": "vbs", "x-ms-compliance-status": "azure-noncompliant"},
    )
    token = sign(own_key, dict(HEADER, kid="k1"), payload)
    result = verify(token, jwks={"keys": [jwk_of(own_key, "k1")]})
    assert failed(result) == ["attestation_type", "compliance"]
    assert "'sgx'" in result.reason and "'vbs'" in result.reason
    assert "'azure-noncompliant'" in result.reason


def test_tdx_is_an_accepted_tee(own_key: rsa.RSAPrivateKey) -> None:
    payload = dict(PAYLOAD)
    tee = {"x-ms-attestation-type": "tdxvm", "x-ms-compliance-status": "azure-compliant-cvm"}
    payload["x-ms-isolation-tee"] = tee
    result = verify(
        sign(own_key, dict(HEADER, kid="k1"), payload), {"keys": [jwk_of(own_key, "k1")]}
    )
    assert result.ok, result.reason
    assert result.facts["tee"] == "tdxvm"
    assert "debuggable" not in result.facts  # SNP claims absent: never defaulted


def test_missing_exp_fails(own_key: rsa.RSAPrivateKey) -> None:
    payload = {k: v for k, v in PAYLOAD.items() if k != "exp"}
    result = verify(
        sign(own_key, dict(HEADER, kid="k1"), payload), {"keys": [jwk_of(own_key, "k1")]}
    )
    assert failed(result) == ["expiry"]
    assert "exp" in result.reason
    assert "expires_at" not in result.facts


# --- the real token ----------------------------------------------------------------------------


def test_real_sample_parses_but_cannot_be_verified_offline() -> None:
    result = verify(REAL, jwks={"keys": []})
    header, _, _ = segments(REAL)
    assert header == CLAIMS["header"]
    assert result.claims == CLAIMS["payload"]
    assert result.check("parse") is True
    assert result.check("issuer") is True
    assert result.check("attestation_type") is True
    assert result.check("compliance") is True
    assert result.check("key") is False
    assert result.check("signature") is False
    key_reason = reason_of(result, "key")
    assert "cannot be verified offline" in key_reason
    assert f"{ISSUER}/certs" in key_reason
    assert not result.ok


def test_real_sample_with_an_empty_mapping_or_other_jwks() -> None:
    assert "cannot be verified offline" in reason_of(verify(REAL, jwks={}), "key")
    other = verify(REAL)  # the FIXTURE JWKS does not hold Microsoft's 2022 key
    assert "XxRc2vLh1E5FrsNawnRH3PzuFgqg3q7NvCdnjoJHBGE=" in reason_of(other, "key")
    assert "cannot be verified" in reason_of(other, "key")


def test_facts_from_the_real_claims() -> None:
    tee = CLAIMS["payload"]["x-ms-isolation-tee"]
    facts = verify(REAL, jwks={}).facts
    assert facts == extract_facts(CLAIMS["payload"])
    assert facts["tee"] == "sevsnpvm"
    assert facts["compliance_status"] == "azure-compliant-cvm"
    assert facts["vm_id"] == "D3FD4B09-37A3-40D5-8F2A-EA80762213CC"
    assert facts["debuggable"] is False
    assert facts["migration_allowed"] is False
    assert facts["smt_allowed"] is True
    assert facts["vmpl"] == 0
    assert facts["launch_measurement"] == tee["x-ms-sevsnpvm-launchmeasurement"]
    assert len(bytes.fromhex(facts["launch_measurement"])) == 48
    assert facts["id_key_digest"] == tee["x-ms-sevsnpvm-idkeydigest"]
    assert facts["host_data"] == tee["x-ms-sevsnpvm-hostdata"]
    assert facts["report_data"] == tee["x-ms-sevsnpvm-reportdata"]
    assert (facts["bootloader_svn"], facts["tee_svn"], facts["snpfw_svn"]) == (2, 0, 6)
    assert facts["microcode_svn"] == 93
    assert facts["issuer"] == ISSUER
    assert facts["expires_at"] == "2022-09-08T05:04:47+00:00"
    assert facts["secure_boot"] is True
    assert facts["vtpm_enabled"] is True


def test_missing_or_mistyped_claims_stay_absent() -> None:
    payload = json.loads(json.dumps(CLAIMS["payload"]))
    tee = payload["x-ms-isolation-tee"]
    del tee["x-ms-sevsnpvm-is-debuggable"]
    tee["x-ms-sevsnpvm-vmpl"] = "0"
    tee["x-ms-sevsnpvm-migration-allowed"] = 0
    tee["x-ms-sevsnpvm-launchmeasurement"] = "not hex"
    del tee["x-ms-runtime"]
    facts = extract_facts(payload)
    for absent in ("debuggable", "vmpl", "migration_allowed", "launch_measurement"):
        assert absent not in facts
    assert "secure_boot" not in facts and "vtpm_enabled" not in facts
    assert extract_facts({}) == {}


# --- JWKS loading and fetching -----------------------------------------------------------------


def test_load_jwks_errors() -> None:
    with pytest.raises(ValueError, match="larger than"):
        load_jwks(b" " * (MAX_JWKS + 1))
    with pytest.raises(ValueError, match="not valid JSON"):
        load_jwks("{")
    with pytest.raises(ValueError, match="not a JSON object"):
        load_jwks("[]")
    with pytest.raises(ValueError, match="'keys' list"):
        load_jwks('{"keys": {}}')
    with pytest.raises(ValueError, match="#0 has no string 'kid'"):
        load_jwks('{"keys": [{"kty": "RSA"}]}')
    with pytest.raises(ValueError, match="#1 is not an object"):
        load_jwks('{"keys": [{"kty": "RSA", "kid": "a"}, 3]}')
    assert load_jwks('{"keys": []}') == {"keys": []}


def test_x5c_only_key(own_key: rsa.RSAPrivateKey) -> None:
    """MAA's /certs publishes keys as kid + kty + x5c (no n/e): the leaf's key is used."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fixture MAA signer")])
    now = datetime(2022, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(own_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
        .sign(own_key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    jwk = {"kid": "k1", "kty": "RSA", "x5c": [base64.b64encode(der).decode()]}
    token = sign(own_key, dict(HEADER, kid="k1"), PAYLOAD)
    assert verify(token, jwks={"keys": [jwk]}).ok
    # n/e that disagree with the certificate: refused rather than picking one.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    mixed = dict(jwk_of(other, "k1"), x5c=jwk["x5c"])
    result = verify(token, jwks={"keys": [mixed]})
    assert failed(result) == ["key", "signature"]
    assert "different keys" in result.reason


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    requests: list[str] = []  # noqa: RUF012 (test-only shared log)

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        if self.path == "/certs":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(type(self).body)
        elif self.path == "/redirect/certs":
            self.send_response(302)
            self.send_header("Location", "/certs")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    """A loopback HTTP server; the handler class records request paths and serves `body`."""
    handler = type("Handler", (_Handler,), {"body": b"", "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_fetch_refuses_unpinned_issuer() -> None:
    with pytest.raises(ValueError, match="not pinned"):
        fetch_jwks("https://evil.example", POLICY)
    # What the token's jku says is never a reason to fetch.
    with pytest.raises(ValueError, match="not pinned"):
        fetch_jwks(HEADER["jku"].removesuffix("/certs"), POLICY)


def test_fetch_refuses_plain_http_off_loopback() -> None:
    policy = MaaPolicy(allowed_issuers=("http://maa.example",))
    with pytest.raises(ValueError, match="not https"):
        fetch_jwks("http://maa.example", policy)


def test_fetch_from_pinned_loopback_issuer(
    server: tuple[str, type[_Handler]], own_key: rsa.RSAPrivateKey
) -> None:
    base, handler = server
    handler.body = (DATA / "azure_maa_jwks_FIXTURE.json").read_bytes()
    policy = MaaPolicy(allowed_issuers=(base + "/",))
    assert fetch_jwks(base, policy) == JWKS
    assert handler.requests == ["/certs"]
    # End to end: a token from that issuer verifies with the fetched keys.
    handler.body = json.dumps({"keys": [jwk_of(own_key, "k1")]}).encode()
    payload = dict(PAYLOAD, iss=base)
    token = sign(own_key, dict(HEADER, kid="k1", jku="https://evil.example/certs"), payload)
    result = verify_maa_token(token, fetch_jwks(base + "/", policy), policy, INSIDE)
    assert result.ok, result.reason
    assert handler.requests == ["/certs", "/certs"]  # never the jku


def test_fetch_bounds_and_errors(server: tuple[str, type[_Handler]]) -> None:
    base, handler = server
    handler.body = b'{"keys": [' + b" " * MAX_JWKS + b"]}"
    with pytest.raises(ValueError, match="more than"):
        fetch_jwks(base, MaaPolicy(allowed_issuers=(base,)))
    handler.body = b"not json"
    with pytest.raises(ValueError, match="not valid JSON"):
        fetch_jwks(base, MaaPolicy(allowed_issuers=(base,)))
    with pytest.raises(ValueError, match="redirect"):
        fetch_jwks(base + "/redirect", MaaPolicy(allowed_issuers=(base + "/redirect",)))
    with pytest.raises(ValueError, match="HTTP 404"):
        fetch_jwks(base + "/missing", MaaPolicy(allowed_issuers=(base + "/missing",)))


# --- fuzzing -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_strings_fail_parse(text: str) -> None:
    result = verify(text)
    assert result.check("parse") is False
    assert not result.ok


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    header=st.dictionaries(st.sampled_from(["alg", "kid", "jku", "crit", "typ"]), _JSON),
    payload=st.dictionaries(
        st.sampled_from(["iss", "exp", "nbf", "iat", "x-ms-isolation-tee", "x-ms-runtime"]), _JSON
    ),
    signature=st.binary(max_size=300),
)
def test_arbitrary_json_never_raises(
    header: dict[str, Any], payload: dict[str, Any], signature: bytes
) -> None:
    token = encode(header, payload) + "." + b64url(signature)
    result = verify(token)
    assert result.check("parse") is True
    assert not result.ok
    assert isinstance(result.facts, dict)
