"""The verify stage: run each verifier on the evidence it applies to, between collect and evaluate.

Results are recorded twice: on the Evidence item (`verification`, with every check and reason,
for the bundle) and as facts in the VM document (for rules). Providers never verify; the engine
never parses certificates.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from auditor.guest.format import GuestEvidenceError, parse_evidence_file
from auditor.model import VM, Evidence, Gap, Verification
from auditor.providers.base import make_gap
from auditor.verify.anchors import gcp_vtpm_store
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.evidence import EvidenceOptions, verify_guest_evidence
from auditor.verify.gce_identity import Expected, verify_ek_certificate
from auditor.verify.maa import MaaPolicy, MaaResult, fetch_jwks, verify_maa_token

GCE_EK_KIND = "shielded_instance_identity"
MAA_KIND = "maa_token"
GUEST_KIND = "guest_evidence"
#: Checks that make a token authentic; the others judge what it says.
_MAA_AUTHENTICITY = ("parse", "algorithm", "issuer", "key", "signature", "expiry")


@dataclass
class VerifyOptions:
    """What verifiers may trust: pinned MAA issuers and their keys (file, or fetched if allowed)."""

    maa_issuers: tuple[str, ...] = ()
    maa_jwks: dict[str, Any] | None = None
    fetch_online: bool = False
    #: Guest evidence: what the owner trusts and expects (see auditor.verify.evidence).
    evidence: EvidenceOptions = field(default_factory=EvidenceOptions)
    #: Where issued nonces are kept (auditor.guest.nonces.NonceStore); None = nonces unchecked.
    nonce_store: Any = None
    #: Trust inputs the user named (key-broker keys, demo anchor, TCB table, endorsement root):
    #: kept in the bundle under evidence/collateral/<name> so `reverify` can re-run offline.
    collateral: dict[str, bytes] = field(default_factory=dict)
    _fetched: dict[str, dict[str, Any]] = field(default_factory=dict)

    def jwks_for(self, issuer: str | None) -> tuple[dict[str, Any], str]:
        if self.maa_jwks is not None:
            return self.maa_jwks, ""
        if not self.fetch_online or not issuer:
            return {"keys": []}, "no MAA signing keys given (--maa-jwks, or --maa-fetch-keys)"
        if issuer not in self._fetched:
            try:
                self._fetched[issuer] = fetch_jwks(issuer, MaaPolicy(self.maa_issuers))
            except ValueError as err:
                return {"keys": []}, f"could not fetch signing keys of {issuer}: {err}"
        return self._fetched[issuer], ""


def _verify_gce_ek(vm: VM, ev: Evidence, at: datetime) -> None:
    raw: Mapping[str, Any] = ev.raw if isinstance(ev.raw, dict) else {}
    enc = raw.get("encryptionKey") or {}
    zone = vm.zone or ""
    result = verify_ek_certificate(
        str(enc.get("ekCert") or ""),
        enc.get("ekPub"),
        gcp_vtpm_store(),
        at,
        Expected(
            project_id=vm.account,
            instance_id=vm.id,
            instance_name=vm.name or "",
            zone=zone,
        ),
    )
    ev.verification = Verification(
        verifier="gce_identity.verify_ek_certificate",
        ok=result.ok,
        checks=[c.as_dict() for c in result.checks],
        reason=result.reason,
    )
    tpm = vm.document.setdefault("tpm", {})
    tpm["ek"] = {
        "present": True,
        "source": "control_plane",
        "certificate": True,
        "chain_verified": bool(result.check("chain")),
        "identity_match": bool(result.check("identity")),
        "key_binding": result.check("key_binding") is not False,
        "verified": result.ok,
        "reason": result.reason,
    }
    if result.root_fingerprint:
        tpm["ek"]["root_sha256"] = result.root_fingerprint


def _verify_maa(vm: VM, ev: Evidence, at: datetime, options: VerifyOptions) -> None:
    token = base64.b64decode(str(ev.raw)).decode("ascii", "replace").strip()
    policy = MaaPolicy(allowed_issuers=options.maa_issuers)
    claimed = _issuer_claim(token)
    jwks, why = options.jwks_for(claimed if claimed in options.maa_issuers else None)
    result: MaaResult = verify_maa_token(token, jwks, policy, at)
    reason = result.reason if not why else f"{why}; {result.reason}"
    if not options.maa_issuers:
        reason = f"no MAA issuer pinned (--maa-issuer); {reason}"
    ev.verification = Verification(
        verifier="maa.verify_maa_token",
        ok=result.ok,
        checks=[c.as_dict() for c in result.checks],
        reason=reason,
    )
    authentic = all(result.check(name) for name in _MAA_AUTHENTICITY)
    facts = result.facts
    att = vm.document.setdefault("attestation", {})
    att["token"] = {
        "verified": authentic,
        "reason": reason,
        "issuer": facts.get("issuer"),
        "tee": facts.get("tee"),
        "compliance_status": facts.get("compliance_status"),
    }
    if not authentic:
        return  # an unverifiable token says nothing: the rules see only that it failed
    att["provider_verdict"] = "passed" if result.ok else "failed"
    att["source"] = "provider_attestation_service"
    launch = {
        "integrity_passed": result.ok,
        "debug_enabled": facts.get("debuggable"),
        "migration_allowed": facts.get("migration_allowed"),
        "smt_allowed": facts.get("smt_allowed"),
        "launch_measurement": facts.get("launch_measurement"),
        "vmpl": facts.get("vmpl"),
    }
    att["launch"] = {k: v for k, v in launch.items() if v is not None}


def _issuer_claim(token: str) -> str | None:
    import json

    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError):
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss.rstrip("/") if isinstance(iss, str) else None


def verify_vms(
    vms: Iterable[VM],
    evidence: Mapping[str, Evidence],
    at: datetime,
    options: VerifyOptions | None = None,
) -> None:
    """Verify every VM's verifiable evidence in place (document facts + Evidence.verification)."""
    opts = options or VerifyOptions()
    for vm in vms:
        for sha in vm.evidence.get("tpm", []):
            ev = evidence.get(sha)
            if ev is not None and ev.kind == GCE_EK_KIND:
                _verify_gce_ek(vm, ev, at)
        for sha in vm.evidence.get("attestation", []):
            ev = evidence.get(sha)
            if ev is not None and ev.kind == MAA_KIND:
                _verify_maa(vm, ev, at, opts)
        for sha in vm.evidence.get("hardware", []):
            ev = evidence.get(sha)
            if ev is not None and ev.kind == GUEST_KIND:
                _verify_guest(vm, ev, at, opts)


def _guest_gap(vm: VM, ev: Evidence, code: str, message: str) -> Gap:
    return make_gap(
        vm.provider,
        "guest-evidence",
        code,
        f"{ev.ref or ev.sha256[:12]}: {message}",
        vm.account,
        region=vm.region,
        resource=vm.id,
        sections=["hardware"],
    )


def _verify_guest(vm: VM, ev: Evidence, at: datetime, opts: VerifyOptions) -> None:
    """Verify one guest evidence file for `vm`; the first verified file wins `vm.hardware`."""
    try:
        doc = parse_evidence_file(base64.b64decode(str(ev.raw)))
    except (GuestEvidenceError, ValueError) as err:
        vm.gaps.append(_guest_gap(vm, ev, "MalformedEvidence", str(err)))
        return
    store = opts.nonce_store
    options = opts.evidence
    if store is not None:

        def check(nonce: str) -> tuple[bool, str]:
            try:
                ok, why = store.check(nonce, vm.id, ev.sha256, now=at)
            except (OSError, ValueError) as err:  # unreadable or corrupt nonce store
                return False, f"nonce state unusable: {err}"
            return bool(ok), str(why)

        options = replace(options, nonce_check=check)
    if options.at is None:
        options = replace(options, at=at)
    try:
        result = verify_guest_evidence(doc, options, expected_vm=(vm.provider, vm.id))
    except (EvidenceFormatError, TypeError, ValueError, KeyError, AttributeError) as err:
        # a field of the wrong shape in an untrusted file: listed, never a crash
        vm.gaps.append(_guest_gap(vm, ev, "MalformedEvidence", f"unusable: {err}"))
        return
    hw = result.hardware
    if store is not None and hw.get("authentic") and hw.get("bound") and hw.get("fresh"):
        # only a report that verified and binds consumes its nonce, so junk cannot use it up
        with contextlib.suppress(OSError, ValueError):
            store.mark_used(str(doc.get("nonce", "")), ev.sha256)
    ev.verification = Verification(
        verifier="evidence.verify_guest_evidence",
        ok=result.ok,
        checks=[c.as_dict() for c in result.checks],
        reason=result.summary if result.ok else f"{result.summary}; {result.reason}",
    )
    opts.collateral.update(result.collateral)
    hardware = result.hardware
    if hardware.get("present") and not hardware.get("verified"):
        vm.gaps.append(_guest_gap(vm, ev, "EvidenceNotUsable", result.summary))
    current = vm.document.get("hardware")
    if current is None or (hardware.get("verified") and not current.get("verified")):
        vm.document["hardware"] = hardware
    if result.guest:
        vm.document.setdefault("guest", {}).update(result.guest)
    if result.event_log:
        vm.document.setdefault("tpm", {})["event_log"] = result.event_log
