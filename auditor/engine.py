"""The engine: rule packs + a VM document -> party statuses, findings, level, GDPR reading.

Semantics (DESIGN.md §5). Each party starts CAN_ACCESS. A matching rule can raise it to
CLAIMED_EXCLUDED or EXCLUDED; a matching veto (effect CAN_ACCESS) forces CAN_ACCESS and wins.
A rule whose inputs are missing is *undetermined*; it makes the party UNDETERMINED whenever its
outcome could change the status: an undetermined veto when nothing vetoed, or an undetermined
exclusion stronger than any that matched. No SDK, no network, no I/O here.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cel

from auditor.assurance import gdpr_reading, level_for
from auditor.model import VM, Finding, Gap, Party, PartyStatus, Status, VMResult
from auditor.rules.loader import CompiledRule, RulePack, RulePackError

_VM_FIELDS = tuple(VM.model_fields)
_VM_NAME = re.compile(r"\bvm\b")
_VM_DOT = re.compile(r"\bvm\s*\.\s*[A-Za-z_]")
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")

_STRENGTH = {Status.CLAIMED_EXCLUDED: 1, Status.EXCLUDED: 2}
_DEFAULT_REASON = "Nothing in the evidence shuts this party out."


@dataclass
class _Outcome:
    rule: CompiledRule
    matched: bool
    undetermined_reason: str | None = None


@dataclass
class _PartyAcc:
    matched: list[_Outcome] = field(default_factory=list)
    undetermined: list[_Outcome] = field(default_factory=list)


class Engine:
    """Compiled rules of several packs, merged: a later pack's rule replaces one with its id."""

    def __init__(self, packs: Iterable[RulePack]) -> None:
        self.packs = list(packs)
        rules: dict[str, CompiledRule] = {}
        self.party_defaults: dict[Party, str] = {}
        for pack in self.packs:
            for rid in pack.spec.disable:
                if rid not in rules:
                    raise RulePackError(pack.ref.path, "disables a rule no earlier pack has", rid)
                del rules[rid]
            for compiled in pack.rules:
                rules[compiled.rule.id] = compiled
            for party, default in pack.spec.parties.items():
                self.party_defaults[party] = default.reason
        self.rules: tuple[CompiledRule, ...] = tuple(rules.values())
        # The CEL context is built once per VM from the sections the rules read (building it
        # is the costliest step per VM); the whole document when a rule reads `vm` otherwise.
        self._read: frozenset[str] | None = _sections_read(self.rules)
        self._references = {id(c): c.rule.references.flat() for c in self.rules}

    def _run(self, compiled: CompiledRule, ctx: Any, vm: Any) -> _Outcome:
        try:
            value = compiled.program.execute(ctx)
        except KeyError as err:
            missing = err.args[0] if err.args else "?"
            return _Outcome(compiled, False, self._missing(compiled, vm, f"'{missing}'"))
        except Exception as err:  # CEL raises TypeError/ValueError/RuntimeError on bad data
            detail = str(err).split(". ")[0]
            return _Outcome(compiled, False, self._missing(compiled, vm, None, detail))
        if not isinstance(value, bool):
            return _Outcome(
                compiled,
                False,
                f"rule condition returned {type(value).__name__}, not true/false",
            )
        return _Outcome(compiled, value)

    @staticmethod
    def _missing(compiled: CompiledRule, vm: Any, key: str | None, detail: str = "") -> str:
        sections = set(compiled.sections)
        gaps: list[Gap] = [g for g in vm.gaps if not sections or _gap_touches(g, sections)]
        what = f"field {key} is not in the evidence" if key else f"evidence unusable ({detail})"
        if gaps:
            causes = "; ".join(
                f"{g.call} failed in {g.account}/{g.region}: {g.code}" for g in gaps[:3]
            )
            return f"Could not evaluate: {what}; {causes}."
        return f"Could not evaluate: {what}."

    def evaluate(self, vm: Any) -> VMResult:
        """Decide every party for one collected VM (an `auditor.model.VM`)."""
        doc = vm.document
        if self._read is not None:
            doc = {k: v for k, v in doc.items() if k in self._read}
        ctx = cel.Context({"vm": doc})
        acc: dict[Party, _PartyAcc] = {p: _PartyAcc() for p in Party}
        findings: list[Finding] = []
        for compiled in self.rules:
            rule = compiled.rule
            if not rule.applies_to(vm.provider):
                continue
            outcome = self._run(compiled, ctx, vm)
            if outcome.matched:
                acc[rule.party].matched.append(outcome)
            elif outcome.undetermined_reason is not None:
                acc[rule.party].undetermined.append(outcome)
            else:
                continue
            findings.append(self._finding(outcome, vm))
        statuses = {p: self._decide(p, acc[p], vm) for p in Party}
        level, level_reason = level_for({p: s.status for p, s in statuses.items()})
        caveat = _evidence_caveat(vm)
        if caveat:  # e.g. the demo fleet's self-made AMD chain: said next to every verdict
            for ps in statuses.values():
                if ps.status is Status.EXCLUDED:
                    ps.reason = f"{ps.reason} [{caveat}]"
            for f in findings:
                if f.status is Status.EXCLUDED:
                    f.reason = f"{f.reason} [{caveat}]"
            level_reason = f"{level_reason} [{caveat}]"
        gdpr = gdpr_reading(vm, statuses, findings)
        return VMResult(
            **{name: getattr(vm, name) for name in _VM_FIELDS},  # validated already: no dump
            level=level,
            level_reason=level_reason,
            parties={p: s.status for p, s in statuses.items()},
            party_status=statuses,
            findings=findings,
            gdpr=gdpr,
        )

    def _finding(self, outcome: _Outcome, vm: Any) -> Finding:
        rule = outcome.rule.rule
        status = rule.effect if outcome.matched else Status.UNDETERMINED
        reason = rule.title if outcome.matched else str(outcome.undetermined_reason)
        if outcome.matched and outcome.rule.detail_program is not None:
            reason = f"{reason}: {_detail(outcome.rule, vm)}"
        return Finding(
            rule_id=rule.id,
            party=rule.party,
            status=status,
            title=rule.title,
            reason=reason,
            severity=rule.severity,
            rationale=rule.rationale,
            evidence=_evidence_for(outcome.rule, vm),
            remediation=rule.remediation_for(vm.provider),
            references=self._references[id(outcome.rule)],
        )

    def _decide(self, party: Party, acc: _PartyAcc, vm: Any) -> PartyStatus:
        vetoes = [o for o in acc.matched if o.rule.rule.is_veto]
        if vetoes:
            return self._status(party, Status.CAN_ACCESS, vetoes, vm)
        exclusions = [o for o in acc.matched if not o.rule.rule.is_veto]
        best = max((_STRENGTH[o.rule.rule.effect] for o in exclusions), default=0)
        blocking = [
            o
            for o in acc.undetermined
            if o.rule.rule.is_veto or _STRENGTH[o.rule.rule.effect] > best
        ]
        if blocking:
            ps = self._status(party, Status.UNDETERMINED, blocking, vm)
            ps.reason = " ".join(dict.fromkeys(str(o.undetermined_reason) for o in blocking))
            return ps
        if exclusions:
            top = [o for o in exclusions if _STRENGTH[o.rule.rule.effect] == best]
            return self._status(party, top[0].rule.rule.effect, top, vm)
        return PartyStatus(
            party=party,
            status=Status.CAN_ACCESS,
            reason=self.party_defaults.get(party, _DEFAULT_REASON),
        )

    @staticmethod
    def _status(party: Party, status: Status, outcomes: list[_Outcome], vm: Any) -> PartyStatus:
        reasons = list(dict.fromkeys(o.rule.rule.title for o in outcomes))
        evidence: list[str] = []
        for o in outcomes:
            for sha in _evidence_for(o.rule, vm):
                if sha not in evidence:
                    evidence.append(sha)
        return PartyStatus(
            party=party,
            status=status,
            reason="; ".join(reasons) + ".",
            rules=[o.rule.rule.id for o in outcomes],
            evidence=evidence,
        )


def _evidence_caveat(vm: Any) -> str | None:
    hardware = vm.document.get("hardware")
    caveat = hardware.get("caveat") if isinstance(hardware, dict) else None
    return str(caveat) if caveat else None


def _detail(compiled: CompiledRule, vm: Any) -> str:
    """A rule's `detail` expression, evaluated for a matched rule; never fails the rule."""
    try:
        value = compiled.detail_program.execute(cel.Context({"vm": vm.document}))
    except Exception as err:  # a detail is commentary: report, don't fail
        return f"(detail unavailable: {str(err).split('. ')[0]})"
    return str(value)


def _gap_touches(gap: Gap, sections: set[str]) -> bool:
    return not gap.sections or bool(set(gap.sections) & sections)


def _evidence_for(compiled: CompiledRule, vm: Any) -> list[str]:
    """The evidence behind the document sections a rule reads, by sha256."""
    out: list[str] = []
    sections = compiled.sections or tuple(vm.evidence)
    for section in sections:
        for sha in vm.evidence.get(section, []):
            if sha not in out:
                out.append(sha)
    return out


def _sections_read(rules: Sequence[CompiledRule]) -> frozenset[str] | None:
    """Every section the rules read, or None when one reads `vm` other than as `vm.<section>`."""
    read: set[str] = set()
    for compiled in rules:
        rule = compiled.rule
        code = _STRING_LITERAL.sub('""', rule.when + " " + (rule.detail or ""))
        if len(_VM_NAME.findall(code)) != len(_VM_DOT.findall(code)) or not compiled.sections:
            return None  # e.g. vm["cc"], or `vm` passed whole: give it the whole document
        read.update(compiled.sections)
    return frozenset(read)


#: Worker processes never paid on the 2-core benchmark machine: sending 100k results back
#: (pickling pydantic objects) cost more than the second core saved (benchmarks/RESULTS.md),
#: so `workers=None` stays in-process; pass `workers` to measure again.
PARALLEL_MIN_VMS: int | None = None


_FORKED: tuple[Engine, Sequence[Any]] | None = None


def _evaluate_chunk(engine: Engine, vms: Sequence[Any]) -> list[VMResult]:
    return [engine.evaluate(vm) for vm in vms]


def _evaluate_forked(start: int, stop: int) -> list[VMResult]:
    """In a forked worker: the engine and VMs were inherited, only the slice bounds travel."""
    assert _FORKED is not None
    gc.disable()
    engine, vms = _FORKED
    return _evaluate_chunk(engine, vms[start:stop])


def evaluate_all(engine: Engine, vms: Sequence[Any], workers: int | None = None) -> list[VMResult]:
    """Evaluate every VM, in order; in forked worker processes when that pays.

    `workers`: None chooses (every core for at least PARALLEL_MIN_VMS VMs, where fork is
    available; in-process while that is None); 1 stays in this process. Workers inherit the
    engine and the VMs (compiled CEL programs cannot be pickled) and send back results. The
    garbage collector is paused meanwhile: results are long-lived, and full collections over a
    large fleet would cost more than the evaluation itself.
    """
    global _FORKED
    import multiprocessing

    can_fork = "fork" in multiprocessing.get_all_start_methods()
    count = workers if workers is not None else (os.cpu_count() or 1)
    if workers is None and (PARALLEL_MIN_VMS is None or len(vms) < PARALLEL_MIN_VMS):
        count = 1
    enabled = gc.isenabled()
    gc.disable()
    try:
        if count <= 1 or len(vms) < 2 or not can_fork:
            return _evaluate_chunk(engine, vms)
        size = -(-len(vms) // (count * 4))
        bounds = [(i, min(i + size, len(vms))) for i in range(0, len(vms), size)]
        _FORKED = (engine, vms)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
            out: list[VMResult] = []
            for part in pool.map(_evaluate_forked, *zip(*bounds, strict=True)):
                out.extend(part)
            return out
    finally:
        _FORKED = None
        if enabled:
            gc.enable()
