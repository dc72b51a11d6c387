"""Policy gates: the checks that turn a finished scan into a CI pass or fail (exit 1).

Each gate says in one line whether it passed and why, so a red CI job explains itself:

* `fail_below`: any VM below a level; `fail_below_scopes` sets the level per provider or
  per provider/account, the most specific entry winning over the global one;
* `fail_on_regression`: any level that fell or party status that got worse than in the baseline
  (the order is in `auditor.runs.drift`);
* `max_undetermined`: more UNDETERMINED party statuses in the run than allowed (evidence that
  went missing must not pass silently).

Exit code: 1 if any gate failed (it wins over 3), else 3 if collection was incomplete, else 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from auditor.model import AuditRun, Level, Status, VMResult
from auditor.runs.drift import LevelChange, RunDiff

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_INCOMPLETE = 3
#: How many offending VMs a gate line names before saying "and N more".
NAMED = 3


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    reason: str

    def line(self) -> str:
        return f"gate {self.name}: {'passed' if self.passed else 'FAILED'}: {self.reason}"


@dataclass(frozen=True)
class Gates:
    fail_below: Level | None = None
    fail_below_scopes: Mapping[str, Level] = field(default_factory=dict)
    fail_on_regression: bool = False
    max_undetermined: int | None = None

    @property
    def any(self) -> bool:
        return bool(
            self.fail_below is not None
            or self.fail_below_scopes
            or self.fail_on_regression
            or self.max_undetermined is not None
        )


def threshold_for(vm: VMResult, gates: Gates) -> tuple[Level | None, str]:
    """The level a VM must reach, and where that requirement comes from."""
    for key in (f"{vm.provider}/{vm.account}", vm.provider):
        if key in gates.fail_below_scopes:
            return gates.fail_below_scopes[key], key
    return gates.fail_below, "fail_below"


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:NAMED])
    return shown + (f" and {len(items) - NAMED} more" if len(items) > NAMED else "")


def _fail_below(run: AuditRun, gates: Gates) -> GateResult:
    below: list[str] = []
    rules: set[str] = set()
    for vm in sorted(run.vms, key=lambda v: v.key):
        need, source = threshold_for(vm, gates)
        if need is not None:
            rules.add(f"{source} {need.value}")
            if vm.level.rank < need.rank:
                below.append(f"{vm.name or vm.id} {vm.level.value} < {need.value} ({source})")
    what = "; ".join(sorted(rules)) or "no VM in a configured scope"
    if below:
        return GateResult("fail-below", False, f"{len(below)} VM(s) below: {_names(below)}")
    return GateResult("fail-below", True, f"all {len(run.vms)} VMs meet {what}")


def _regression(d: RunDiff | None, note: str | None) -> GateResult:
    if d is None:
        return GateResult("fail-on-regression", True, note or "no baseline: nothing to compare")
    worse = d.regressions
    if not worse:
        return GateResult(
            "fail-on-regression",
            True,
            f"nothing worse than baseline {d.a.run_id} ({len(d.levels)} level and "
            f"{len(d.parties)} party changes, none worse)",
        )
    named = [
        f"{c.name or c.key} "
        + ("level" if isinstance(c, LevelChange) else c.party.value)
        + f" {c.before.value}->{c.after.value}"
        for c in worse
    ]
    return GateResult(
        "fail-on-regression",
        False,
        f"{len(worse)} worse than baseline {d.a.run_id}: {_names(named)}",
    )


def undetermined_count(run: AuditRun) -> int:
    return sum(1 for vm in run.vms for s in vm.parties.values() if s is Status.UNDETERMINED)


def _undetermined(run: AuditRun, limit: int) -> GateResult:
    n = undetermined_count(run)
    vms = sum(1 for vm in run.vms if Status.UNDETERMINED in vm.parties.values())
    text = f"{n} UNDETERMINED party statuses on {vms} VMs, limit {limit}"
    return GateResult("max-undetermined", n <= limit, text)


def evaluate(
    run: AuditRun, gates: Gates, diff: RunDiff | None = None, baseline_note: str | None = None
) -> list[GateResult]:
    """The outcome of every configured gate (none configured: an empty list)."""
    results: list[GateResult] = []
    if gates.fail_below is not None or gates.fail_below_scopes:
        results.append(_fail_below(run, gates))
    if gates.fail_on_regression:
        results.append(_regression(diff, baseline_note))
    if gates.max_undetermined is not None:
        results.append(_undetermined(run, gates.max_undetermined))
    return results


def exit_code(run: AuditRun, results: Sequence[GateResult]) -> int:
    if any(not r.passed for r in results):
        return EXIT_GATE_FAILED
    if not run.coverage.complete:
        return EXIT_INCOMPLETE
    return EXIT_OK
