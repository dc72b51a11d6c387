"""Reverify: the audit of a sealed run directory run again offline, from its own files.

A reader who does not trust our verdicts re-runs verification and evaluation from the bundle's
`raw/` (replayed through fakecloud and the real SDKs), its `evidence/` (guest files, the owner's
trust inputs, custom rule packs) and the time the run was judged at, and gets every difference
with the stored `result.json` (`compare_runs`). Apart from bundle.py (which seals and checks
files) because it runs a scan: the package that scans (auditor.api) writes bundles too.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.api import ScanError, scan
from auditor.model import AuditRun, VMResult
from auditor.rules.loader import RulePackError
from auditor.run import NONCE_COLLATERAL, RESULT_FILE, load_run
from auditor.runs.bundle import (
    COLLATERAL_DIR,
    GUEST_DIR,
    RULES_DIR,
    BundleError,
    pinned_fingerprints,
    read_manifest,
    safe_relpath,
    sha256_file,
)


@dataclass(frozen=True)
class Difference:
    """One way the reproduced run differs from the stored one. `vm` is None for the run."""

    vm: str | None
    aspect: str
    recorded: str
    reproduced: str

    def __str__(self) -> str:
        where = self.vm or "run"
        return f"{where}: {self.aspect}: recorded {self.recorded}, reproduced {self.reproduced}"

    def as_dict(self) -> dict[str, str | None]:
        return {
            "vm": self.vm,
            "aspect": self.aspect,
            "recorded": self.recorded,
            "reproduced": self.reproduced,
        }


@dataclass
class ReverifyReport:
    """The stored run against a fresh offline re-run of the same bundle.

    `ok` means the bundle reproduces: same VMs, levels, party statuses, findings and evidence.
    `notes` say what could make it not reproduce (missing inputs, a newer tool) without being
    differences themselves.
    """

    run_id: str
    vms: int
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    reproduced: AuditRun | None = field(default=None, repr=False)
    #: One line: which trust inputs this reverify used (its own pins only, or the bundle's).
    trust: str = ""

    @property
    def ok(self) -> bool:
        return not self.differences

    def by_vm(self) -> dict[str, list[Difference]]:
        """Differences grouped VM by VM; run-level ones under "run"."""
        out: dict[str, list[Difference]] = {}
        for d in self.differences:
            out.setdefault(d.vm or "run", []).append(d)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "vms": self.vms,
            "differences": [d.as_dict() for d in self.differences],
            "notes": list(self.notes),
            "inputs": dict(self.inputs),
            "trust": self.trust,
        }


def reverify(
    run_dir: Path,
    *,
    maa_issuers: Sequence[str] | None = None,
    maa_jwks: Path | None = None,
    rules: Sequence[Path] = (),
    log_window_days: int | None = None,
    trust_bundle_inputs: bool = False,
    key_broker_keys: Sequence[Path] = (),
    reference_measurements: Sequence[tuple[str, str]] | None = None,
    nonce_state: Path | None = None,
    tcb_table: Path | None = None,
    endorsement_root: Path | None = None,
    demo_trust_anchor: Path | None = None,
) -> ReverifyReport:
    """Re-run verification and evaluation from the bundle alone and compare with result.json.

    The bundle's `raw/` is served by fakecloud on 127.0.0.1, its `evidence/guest/` is the guest
    evidence, nothing is fetched, and the judging time is the recorded one (raw/replay.json).

    What is trusted: always this tool's own pinned vendor roots (AMD, Intel, Google, Microsoft);
    vendor certificates kept in the bundle count only as they chain to those pins. The owner's
    inputs (key-broker keys, reference measurements, the nonce state, a TCB table, the
    endorsement root, the demo trust anchor, MAA issuer pins and keys) decide verdicts too, and
    a bundle can carry any of them, so they are taken from the bundle only with
    `trust_bundle_inputs=True`; otherwise only those given here are used, and a verdict that
    needed another one does not reproduce. `report.trust` says in one line which was done.
    Rule packs are found by the SHA-256 the run recorded. Raises BundleError when the bundle
    cannot be re-run at all.
    """
    run_dir = Path(run_dir)
    try:
        recorded = load_run(run_dir)
    except (OSError, ValueError) as err:
        raise BundleError(f"{run_dir / RESULT_FILE}: not a readable run: {err}") from err
    notes: list[str] = []
    guest = run_dir / GUEST_DIR
    custom = _custom_packs(run_dir, recorded, rules, notes)
    given = _Given(
        maa_issuers=list(maa_issuers) if maa_issuers is not None else None,
        maa_jwks=maa_jwks,
        key_broker_keys=list(key_broker_keys),
        reference_measurements=(
            list(reference_measurements) if reference_measurements is not None else None
        ),
        nonce_state=nonce_state,
        tcb_table=tcb_table,
        endorsement_root=endorsement_root,
        demo_trust_anchor=demo_trust_anchor,
    )
    state = tempfile.TemporaryDirectory(prefix="ccaudit-reverify-")
    try:
        kwargs, trust, used = _trust_inputs(
            run_dir, recorded, given, trust_bundle_inputs, Path(state.name), notes
        )
        if log_window_days is not None:
            kwargs["log_window_days"] = log_window_days
        inputs: dict[str, Any] = {
            "maa_issuers": kwargs["maa_issuers"],
            "maa_jwks": str(kwargs["maa_jwks"]) if kwargs["maa_jwks"] else None,
            "guest_evidence": str(guest) if guest.is_dir() else None,
            "rules": [str(p) for p in custom],
            "log_window_days": log_window_days,
            "trust_bundle_inputs": trust_bundle_inputs,
            "owner_inputs": used,
        }
        fresh = scan(
            list(recorded.scope.providers),
            replay=run_dir,
            regions=list(recorded.scope.regions) or None,
            rules=custom,
            guest_evidence=guest if guest.is_dir() else None,
            maa_fetch_keys=False,
            run_id=recorded.run_id,
            **kwargs,
        )
    except (ScanError, RulePackError) as err:
        raise BundleError(f"cannot re-run {run_dir}: {err}") from err
    finally:
        state.cleanup()
    if recorded.tool.version != fresh.tool.version:
        notes.append(
            f"recorded with cc-auditor {recorded.tool.version}, reverified with "
            f"{fresh.tool.version}"
        )
    notes.extend(_anchor_notes(run_dir, fresh))
    judged = fresh.judged_at or recorded.judged_at
    if judged is not None:
        notes.append(f"judged at the recording time {judged.isoformat()}, not today")
    return ReverifyReport(
        run_id=recorded.run_id,
        vms=len(recorded.vms),
        differences=compare_runs(recorded, fresh),
        notes=notes,
        inputs=inputs,
        reproduced=fresh,
        trust=trust,
    )


@dataclass
class _Given:
    """Owner inputs given to reverify directly (None or empty: not given)."""

    maa_issuers: list[str] | None
    maa_jwks: Path | None
    key_broker_keys: list[Path]
    reference_measurements: list[tuple[str, str]] | None
    nonce_state: Path | None
    tcb_table: Path | None
    endorsement_root: Path | None
    demo_trust_anchor: Path | None


def _trust_inputs(
    run_dir: Path,
    run: AuditRun,
    given: _Given,
    from_bundle: bool,
    state: Path,
    notes: list[str],
) -> tuple[dict[str, Any], str, list[str]]:
    """scan() arguments for the owner's inputs, the one-line trust statement, the inputs used."""
    collateral = run_dir / COLLATERAL_DIR
    out: dict[str, Any] = {"nonce_state": state, "offline": True}
    used: list[str] = []
    vceks = sorted((collateral / "amd-vcek").glob("*.der"))
    if vceks:  # AMD KDS certificates: they must still chain to the pinned AMD roots
        (state / "cache").mkdir(parents=True, exist_ok=True)
        for der in vceks:
            shutil.copy(der, state / "cache" / der.name)

    def pick(name: str, mine: Any, bundled: Any) -> Any:
        if mine not in (None, []):
            used.append(f"{name} (given)")
            return mine
        if from_bundle and bundled not in (None, []):
            used.append(f"{name} (from the bundle)")
            return bundled
        return None

    out["maa_issuers"] = pick("MAA issuer pins", given.maa_issuers, run.scope.maa_issuers) or []
    out["maa_jwks"] = pick("MAA signing keys", given.maa_jwks, _recorded_jwks(run_dir, run, notes))
    recorded_refs = [(r["name"], r["measurement"]) for r in run.scope.reference_measurements]
    out["reference_measurements"] = (
        pick("reference measurements", given.reference_measurements, recorded_refs) or []
    )
    brokers = sorted((collateral / "key-broker").glob("*.pem"))
    out["key_broker_keys"] = pick("key-broker keys", given.key_broker_keys, brokers) or []
    bundled_nonces = collateral / NONCE_COLLATERAL
    nonce_file = pick(
        "nonce state",
        given.nonce_state / NONCE_COLLATERAL if given.nonce_state else None,
        bundled_nonces if bundled_nonces.is_file() else None,
    )
    if nonce_file is not None and Path(nonce_file).is_file():
        shutil.copy(nonce_file, state / NONCE_COLLATERAL)
    elif run.scope.guest_evidence:
        notes.append("no nonce state used: guest evidence reads as stale, so it raises nothing")
    demo = collateral / "demo-trust-anchor" if run.scope.demo_trust_anchor else None
    out["demo_trust_anchor"] = pick("the demo trust anchor", given.demo_trust_anchor, demo)
    if out["demo_trust_anchor"] is not None:
        notes.append("the demo trust anchor (not AMD) is trusted by this reverify")
    tcb = collateral / "tcb-table.yaml"
    out["tcb_table"] = pick("TCB table", given.tcb_table, tcb if tcb.is_file() else None)
    root = collateral / "endorsement-root.pem"
    out["endorsement_root"] = pick(
        "endorsement root", given.endorsement_root, root if root.is_file() else None
    )
    what = ", ".join(used) if used else "none"
    if from_bundle:
        trust = (
            "reproduced with the owner inputs shipped in the bundle (--trust-bundle-inputs) "
            f"beside this tool's own pinned roots: {what}; not an independent verification"
        )
    else:
        trust = (
            f"independent: this tool's own pinned roots; owner inputs used: {what}; the "
            "bundle's own were not trusted (give them, or --trust-bundle-inputs)"
        )
    return out, trust, used


def _recorded_jwks(run_dir: Path, run: AuditRun, notes: list[str]) -> Path | None:
    rel = run.scope.maa_jwks
    if not rel:
        return None
    if not safe_relpath(rel):
        notes.append(f"recorded MAA keys path {rel!r} is not inside the bundle; not used")
        return None
    path = run_dir / rel
    if not path.is_file():
        notes.append(f"recorded MAA keys {rel} are missing from the bundle; verified without")
        return None
    return path


def _custom_packs(
    run_dir: Path, run: AuditRun, given: Sequence[Path], notes: list[str]
) -> list[Path]:
    """Custom rule packs of the run, each found by its recorded SHA-256 (never by name alone)."""
    wanted = [p for p in run.rule_packs if not p.path.startswith("builtin:")]
    if not wanted:
        return []
    pool: list[Path] = [Path(p) for p in given]
    bundled = run_dir / RULES_DIR
    if bundled.is_dir():
        pool.extend(sorted(p for p in bundled.iterdir() if p.is_file()))
    by_sha: dict[str, Path] = {}
    for p in pool:
        with contextlib.suppress(OSError):
            by_sha.setdefault(sha256_file(p), p)
    found: list[Path] = []
    for ref in wanted:
        path = by_sha.get(ref.sha256)
        if path is None:
            candidate = Path(ref.path)
            with contextlib.suppress(OSError):
                if candidate.is_file() and sha256_file(candidate) == ref.sha256:
                    path = candidate
        if path is None:
            notes.append(
                f"rule pack {ref.name} {ref.version} (sha256 {ref.sha256}) is not in the bundle "
                f"and {ref.path} no longer matches; give it with rules="
            )
            continue
        found.append(path)
    return found


def _anchor_notes(run_dir: Path, fresh: AuditRun) -> list[str]:
    """Did this tool pin the same roots the run was verified against?"""
    try:
        manifest = read_manifest(run_dir)
    except BundleError:
        return []
    pinned_now = {a.sha256 for a in fresh.trust_anchors if a.pinned}
    recorded = pinned_fingerprints(manifest.trust_anchors)
    missing = sorted(recorded - pinned_now - {a.sha256 for a in fresh.trust_anchors})
    if missing:
        return [
            "the manifest records trust anchors this tool does not pin or was not given: "
            + ", ".join(fp[:16] for fp in missing[:5])
        ]
    return []


def _evidence_of(vm: VMResult) -> set[str]:
    return {sha for shas in vm.evidence.values() for sha in shas}


def _fmt_counter(items: Counter[str]) -> str:
    return ", ".join(sorted(items.elements())) or "absent"


def compare_runs(recorded: AuditRun, fresh: AuditRun) -> list[Difference]:
    """What differs between two runs of the same bundle, VM by VM, then for the run.

    Compared: which VMs exist, their level, each party's status, the findings (rule id and
    status) and the evidence SHA-256s behind them; for the run, the rule packs and evidence
    that no VM references. Reasons and timestamps are not compared: they may be worded
    differently by a newer tool without changing the verdict.
    """
    out: list[Difference] = []
    old = {vm.key: vm for vm in recorded.vms}
    new = {vm.key: vm for vm in fresh.vms}
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            out.append(
                Difference(key, "vm", "present" if a else "absent", "present" if b else "absent")
            )
            continue
        if a.level != b.level:
            out.append(Difference(key, "level", a.level.value, b.level.value))
        for party in sorted(a.parties.keys() | b.parties.keys(), key=str):
            sa, sb = a.parties.get(party), b.parties.get(party)
            if sa != sb:
                out.append(
                    Difference(
                        key,
                        f"party {party.value}",
                        sa.value if sa else "absent",
                        sb.value if sb else "absent",
                    )
                )
        fa = _findings(a)
        fb = _findings(b)
        for rule in sorted(fa.keys() | fb.keys()):
            ca, cb = fa.get(rule, Counter()), fb.get(rule, Counter())
            if ca != cb:
                out.append(Difference(key, f"finding {rule}", _fmt_counter(ca), _fmt_counter(cb)))
        ea, eb = _evidence_of(a), _evidence_of(b)
        for sha in sorted(ea - eb):
            out.append(Difference(key, "evidence", sha, "absent"))
        for sha in sorted(eb - ea):
            out.append(Difference(key, "evidence", "absent", sha))
    packs_a = [f"{p.name} {p.version} {p.sha256}" for p in recorded.rule_packs]
    packs_b = [f"{p.name} {p.version} {p.sha256}" for p in fresh.rule_packs]
    if packs_a != packs_b:
        out.append(Difference(None, "rule packs", "; ".join(packs_a), "; ".join(packs_b)))
    used = set().union(*(_evidence_of(v) for v in [*recorded.vms, *fresh.vms]))
    ra, rb = set(recorded.evidence) - used, set(fresh.evidence) - used
    for sha in sorted(ra - rb):
        out.append(Difference(None, "evidence", sha, "absent"))
    for sha in sorted(rb - ra):
        out.append(Difference(None, "evidence", "absent", sha))
    return out


def _findings(vm: VMResult) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for f in vm.findings:
        out.setdefault(f.rule_id, Counter())[f.status.value] += 1
    return out
