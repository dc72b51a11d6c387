"""The verify stage: run each verifier on the evidence it applies to, between collect and evaluate.

Results are recorded twice: on the Evidence item (`verification`, with every check and reason,
for the bundle) and as facts in the VM document (for rules). Providers never verify; the engine
never parses certificates.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any

from auditor.guest.format import GuestEvidenceError, parse_evidence_file
from auditor.model import VM, Evidence, Gap, Verification
from auditor.providers.base import make_gap
from auditor.verify.anchors import gcp_vtpm_store
from auditor.verify.disk_coverage import covered_disks
from auditor.verify.evidence import EvidenceOptions, GuestEvidenceResult, verify_guest_evidence
from auditor.verify.gce_identity import Expected, verify_ek_certificate
from auditor.verify.maa import MaaPolicy, MaaResult, fetch_jwks, verify_maa_token
from auditor.verify.proof import clear_hardware_facts, record_proof

GCE_EK_KIND = "shielded_instance_identity"
MAA_KIND = "maa_token"
GUEST_KIND = "guest_evidence"
#: The evidence a verifier writes a verification on: (VM evidence section, evidence kind).
VERIFIED_SECTIONS = (("tpm", GCE_EK_KIND), ("attestation", MAA_KIND), ("hardware", GUEST_KIND))
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
    value = ev.raw  # parsed once (JSON evidence is held packed)
    raw: Mapping[str, Any] = value if isinstance(value, dict) else {}
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
    """Verify every VM's verifiable evidence in place (document facts + Evidence.verification).

    This stage is the only writer of what EXCLUDED rests on: `vm.hardware_evidence` and the
    document's `hardware`, `guest` and per-disk `guest_encrypted` facts. Whatever a provider or
    a replayed file put there before is removed first.
    """
    opts = options or VerifyOptions()
    for vm in vms:
        clear_hardware_facts(vm)
        for sha in vm.evidence.get("tpm", []):
            ev = evidence.get(sha)
            if ev is not None and ev.kind == GCE_EK_KIND:
                _guarded(vm, ev, "tpm", partial(_verify_gce_ek, vm, ev, at))
        for sha in vm.evidence.get("attestation", []):
            ev = evidence.get(sha)
            if ev is not None and ev.kind == MAA_KIND:
                _guarded(vm, ev, "attestation", partial(_verify_maa, vm, ev, at, opts))
        files = [
            ev
            for sha in vm.evidence.get("hardware", [])
            if (ev := evidence.get(sha)) is not None and ev.kind == GUEST_KIND
        ]
        if files:
            _verify_guest_files(vm, files, at, opts)


def verified_items(vm: VM, evidence: Mapping[str, Evidence]) -> list[str]:
    """The items of `vm` that `verify_vms` writes a verification on (VERIFIED_SECTIONS)."""
    return [
        sha
        for section, kind in VERIFIED_SECTIONS
        for sha in vm.evidence.get(section, [])
        if (ev := evidence.get(sha)) is not None and ev.kind == kind
    ]


def _guarded(vm: VM, ev: Evidence, section: str, verify: Callable[[], None]) -> None:
    """Run one verifier; whatever it raises on untrusted input is this item's gap, not a crash.
    The item then supports nothing: its verification says why."""
    try:
        verify()
    except Exception as err:  # untrusted input a library refused in a way not foreseen
        what = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        ev.verification = Verification(verifier=ev.kind, ok=False, reason=f"unusable: {what}")
        vm.gaps.append(
            make_gap(
                vm.provider,
                ev.call or ev.kind,
                "MalformedEvidence",
                f"{ev.ref or ev.sha256[:12]}: unusable: {what}",
                vm.account,
                region=vm.region,
                resource=vm.id,
                sections=[section],
            )
        )


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


@dataclass
class _Verified:
    """One guest evidence file of a VM, verified on its own."""

    evidence: Evidence
    doc: dict[str, Any]
    result: GuestEvidenceResult

    @property
    def verified(self) -> bool:
        return self.result.hardware.get("verified") is True

    def rank(self) -> int:
        """How much the file shows, for choosing what to display when none verified."""
        hw = self.result.hardware
        return (
            4 * bool(hw.get("authentic") and hw.get("bound"))
            + 2 * bool(hw.get("authentic"))
            + bool(hw.get("present"))
        )


def _verify_guest_files(vm: VM, files: list[Evidence], at: datetime, opts: VerifyOptions) -> None:
    """Verify each file alone, then take everything from one: the first whose report verified.

    Facts are never mixed across files: a second, stale or unverified file cannot add a claim
    (an encrypted disk, a key-release receipt) next to another file's fresh report. When no file
    verified, the best of them is shown as `hardware` (verified false) and no guest claim is
    used at all.
    """
    checked: list[_Verified] = []
    for ev in files:
        one = _verify_guest(vm, ev, at, opts)
        if one is None:
            continue
        if one.verified:  # consumed at once: a second file with the same nonce is a reuse
            _consume_nonce(vm, one, opts)
        checked.append(one)
    chosen = next((v for v in checked if v.verified), None)
    for other in checked:
        if chosen is not None and other is not chosen and other.verified:
            _note(other.evidence, f"not used: {_name(chosen.evidence)} was used for this VM")
    if chosen is None:
        shown = max(checked, key=_Verified.rank, default=None)
        if shown is not None:
            hardware = dict(shown.result.hardware, verified=False)
            vm.document["hardware"] = hardware
            vm.document["guest"] = {"evidence_file": True, "claims_used": False}
        return
    _apply(vm, chosen)


def _apply(vm: VM, chosen: _Verified) -> None:
    """The chosen file's facts, and the proof the engine reads (auditor/verify/proof.py)."""
    hardware = dict(chosen.result.hardware)
    record_proof(vm, chosen.evidence.sha256, hardware)
    if not chosen.result.claims_bound:
        vm.document["guest"] = {
            "evidence_file": True,
            "claims_used": False,
            "reason": "evidence format version 1: the report does not cover the guest's claims",
        }
        return
    guest = dict(chosen.result.guest, claims_used=True)
    vm.document["guest"] = guest
    if chosen.result.event_log:
        vm.document.setdefault("tpm", {})["event_log"] = chosen.result.event_log
    disk = guest.get("disk_encryption")
    disks = vm.document.get("disks")
    if isinstance(disk, dict) and isinstance(disks, list):
        covered = covered_disks(vm.provider, disks, disk.get("devices") or [])
        for index, entry in enumerate(disks):
            if isinstance(entry, dict):
                entry["guest_encrypted"] = index in covered
                if index in covered:
                    entry["guest_device"] = covered[index]
        disk["all_disks_covered"] = bool(disks) and len(covered) == len(disks)
    if isinstance(disk, dict):
        counts = [d.get("tpm_tokens") for d in disk.get("devices") or []]
        if counts and all(isinstance(c, int) for c in counts):
            disk["tpm_sealed"] = any(c > 0 for c in counts)
        receipt = guest.get("key_release") or {}
        # the vTPM holds nothing the data depends on: every disk is encrypted in the guest, no
        # key slot is sealed to a TPM, and the key came from the owner's broker instead
        guest["nothing_sealed_to_vtpm"] = bool(
            disk.get("all_disks_covered") is True
            and disk.get("tpm_sealed") is False
            and receipt.get("verified") is True
        )


def _consume_nonce(vm: VM, chosen: _Verified, opts: VerifyOptions) -> None:
    """Mark a verified file's nonce used (only a verified file may use it up, so junk cannot).
    If that fails the nonce stays reusable: the file does not count (a reusable nonce is a
    replay hole) and the VM gets a gap."""
    store = opts.nonce_store
    if store is None:
        return
    try:
        store.mark_used(str(chosen.doc.get("nonce", "")), chosen.evidence.sha256)
    except (OSError, ValueError) as err:
        why = f"the nonce could not be marked as used ({err}), so it could be replayed"
        vm.gaps.append(_guest_gap(vm, chosen.evidence, "NonceStateError", why))
        hardware = chosen.result.hardware
        hardware.update(verified=False, reason=f"{hardware.get('reason', '')}; but {why}")
        _note(chosen.evidence, f"not used: {why}", ok=False)


def _note(ev: Evidence, text: str, ok: bool | None = None) -> None:
    if ev.verification is not None:
        ev.verification.reason = f"{ev.verification.reason}; {text}"
        if ok is not None:
            ev.verification.ok = ok


def _name(ev: Evidence) -> str:
    return ev.ref.rsplit("/", 1)[-1] if ev.ref else ev.sha256[:12]


def _verify_guest(vm: VM, ev: Evidence, at: datetime, opts: VerifyOptions) -> _Verified | None:
    """Verify one guest evidence file for `vm`; any failure is a gap on the VM, never a crash."""
    try:
        doc = parse_evidence_file(base64.b64decode(str(ev.raw)))
    except (GuestEvidenceError, ValueError) as err:
        vm.gaps.append(_guest_gap(vm, ev, "MalformedEvidence", str(err)))
        return None
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
    except Exception as err:  # untrusted input: any failure is this file's gap
        # A field of the wrong shape, a certificate a library refuses (a duplicated
        # extension), a parser bug: listed on this VM, and the scan goes on.
        what = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        vm.gaps.append(_guest_gap(vm, ev, "MalformedEvidence", f"unusable: {what}"))
        ev.verification = Verification(
            verifier="evidence.verify_guest_evidence", ok=False, reason=f"unusable: {what}"
        )
        return None
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
    return _Verified(ev, doc, result)
