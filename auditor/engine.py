"""The engine: rule packs + a VM document -> party statuses, findings, level, GDPR reading.

Semantics (DESIGN.md §5). Each party starts CAN_ACCESS. A matching rule can raise it to
CLAIMED_EXCLUDED or EXCLUDED; a matching veto (effect CAN_ACCESS) forces CAN_ACCESS and wins.
A rule whose inputs are missing is *undetermined*; it makes the party UNDETERMINED whenever its
outcome could change the status: an undetermined veto when nothing vetoed, or an undetermined
exclusion stronger than any that matched. No SDK, no network, no I/O here.

Two guards hold whatever the packs say (DESIGN.md §2):
- EXCLUDED only with verified hardware evidence: a rule whose effect is EXCLUDED is not even
  run on a VM without the verify stage's proof (auditor/verify/proof.py).
- Owner overrides are visible: a built-in veto that an owner's pack disables or replaces is
  still evaluated; where it applies, the party's status names the override and is at most
  CLAIMED_EXCLUDED, so an override never produces EXCLUDED by itself.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
from array import array
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import cel

from auditor.assurance import gdpr_reading, host_operator, level_for
from auditor.model import (
    VM,
    Finding,
    Gap,
    GdprReading,
    OwnerOverride,
    Party,
    PartyStatus,
    Status,
    VMResult,
    build_unchecked,
    unchecked_builder,
)
from auditor.rules.loader import CompiledRule, RulePack, RulePackError
from auditor.verify.proof import has_verified_hardware

log = logging.getLogger(__name__)
_VM_FIELDS = tuple(VM.model_fields)
_VM_NAME = re.compile(r"\bvm\b")
_VM_DOT = re.compile(r"\bvm\s*\.\s*[A-Za-z_]")
_VM_PATH = re.compile(r"\bvm((?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)+)(\s*\()?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LIST_MACROS = frozenset({"all", "exists", "exists_one", "filter", "map"})
_HAS_CALL = re.compile(r"\bhas\s*\(\s*$")
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")

_STRENGTH = {Status.CLAIMED_EXCLUDED: 1, Status.EXCLUDED: 2}
_DEFAULT_REASON = "Nothing in the evidence shuts this party out."


class _Plan:
    """One rule as evaluated for one provider: everything read per VM, looked up once."""

    __slots__ = (
        "compiled",
        "detail",
        "effect",
        "id",
        "index",
        "is_veto",
        "party",
        "provider",
        "rationale",
        "references",
        "remediation",
        "rule",
        "sections",
        "severity",
        "strength",
        "title",
    )

    def __init__(
        self, compiled: CompiledRule, provider: str, references: list[str], index: int
    ) -> None:
        rule = compiled.rule
        self.compiled = compiled
        #: its place among the plans of its (provider, proof): names it in an outcome key,
        #: the same in a forked evaluation worker as here
        self.index = index
        self.rule = rule
        self.id = rule.id
        self.party = rule.party
        self.effect = rule.effect
        self.is_veto = rule.is_veto
        self.strength = 0 if rule.is_veto else _STRENGTH[rule.effect]
        self.title = rule.title
        self.severity = rule.severity
        self.rationale = rule.rationale
        self.provider = provider
        self.remediation = rule.remediation_for(provider)
        self.references = references  # shared by every finding of this rule: read-only
        self.detail = compiled.detail_program
        self.sections = compiled.sections


#: (plan, reason): reason None when the rule matched, the undetermined reason otherwise.
_Outcome = tuple[_Plan, str | None]

#: A rule's run on one context: (plan, kind, text). Matched: the detail (or None); missing
#: field: the key; unusable evidence: the error; odd (not a bool): the whole reason.
_Run = tuple[_Plan, str, str | None]
_MATCHED, _MISSING, _UNUSABLE, _ODD = "matched", "missing", "unusable", "odd"
#: A kind as it comes back from a worker (an equal string) -> the constant compared with `is`
_KINDS = {kind: kind for kind in (_MATCHED, _MISSING, _UNUSABLE, _ODD)}
#: What a case is a function of: (provider, proof, technology, (plan index, kind, text) of
#: each rule run, the same of each shadow rule). Plain values: it crosses from a worker.
_Key = tuple[str, bool, str | None, tuple[tuple[int, str, str | None], ...], tuple[Any, ...]]
#: (party, status, plans that decided it, reason): reason None = join the undetermined reasons.
_Decision = tuple[Party, Status, list[_Plan], str | None]
#: Outcomes kept per distinct set of fields read; cleared when full (memory stays bounded).
_MEMO_MAX = 50_000


class Engine:
    """Compiled rules of several packs, merged: a later pack's rule replaces one with its id."""

    def __init__(
        self, packs: Iterable[RulePack], reuse: bool = True, share_outcomes: bool = True
    ) -> None:
        """`reuse=False` runs every rule on every VM afresh (the cost when no two VMs are
        configured alike); `share_outcomes=False` also builds each VM's decision anew from
        its rules' outcomes (the tests' oracle)."""
        self.packs = list(packs)
        self.reuse = reuse
        self.share_outcomes = share_outcomes
        rules: dict[str, CompiledRule] = {}
        builtin_vetoes: dict[str, CompiledRule] = {}
        #: Built-in vetoes an owner's pack disabled or replaced: still run, to show the override.
        shadow: dict[str, tuple[CompiledRule, OwnerOverride]] = {}
        self.party_defaults: dict[Party, str] = {}
        for pack in self.packs:
            builtin = pack.ref.path.startswith("builtin:")
            for rid in pack.spec.disable:
                if rid not in rules:
                    raise RulePackError(pack.ref.path, "disables a rule no earlier pack has", rid)
                if not builtin and rid in builtin_vetoes:
                    shadow[rid] = (
                        builtin_vetoes[rid],
                        _override(builtin_vetoes[rid], pack, "disabled"),
                    )
                del rules[rid]
            for compiled in pack.rules:
                rid = compiled.rule.id
                if builtin and compiled.rule.is_veto:
                    builtin_vetoes[rid] = compiled
                elif (
                    rid in builtin_vetoes and rid in rules and not _same_rule(compiled, rules[rid])
                ):
                    shadow[rid] = (
                        builtin_vetoes[rid],
                        _override(builtin_vetoes[rid], pack, "replaced"),
                    )
                rules[rid] = compiled
            for party, default in pack.spec.parties.items():
                self.party_defaults[party] = default.reason
        self.rules: tuple[CompiledRule, ...] = tuple(rules.values())
        self.shadow: tuple[CompiledRule, ...] = tuple(rule for rule, _ in shadow.values())
        self.overrides: dict[str, OwnerOverride] = {rid: o for rid, (_, o) in shadow.items()}
        self._override_words = {
            rid: f"{o.rule_id} {o.action} by owner pack {o.pack} (sha256 {o.pack_sha256[:12]})"
            for rid, o in self.overrides.items()
        }
        # The CEL context is built once per VM from the fields the rules read (converting it
        # to CEL values is the costliest step per VM); the whole document when a rule reads
        # `vm` otherwise than by name.
        read_by = self.rules + self.shadow
        self._read: frozenset[str] | None = _sections_read(read_by)
        self._paths: _Trie | None = _paths_read(read_by) if self._read is not None else None
        self._references = {id(c): c.rule.references.flat() for c in read_by}
        self._plans: dict[tuple[str, bool], tuple[_Plan, ...]] = {}
        self._shadow_plans: dict[str, tuple[_Plan, ...]] = {}
        self._joined: dict[tuple[str, ...], str] = {}
        #: (provider, proof, technology, fields read) -> case
        self._memo: dict[tuple[str, bool, Any, Any], _Case] = {}
        #: (provider, proof, technology, rule outcomes) -> case: VMs configured differently
        #: mostly still come out the same, and a case costs more to build than its rules
        self._outcomes: dict[_Key, _Case] = {}
        #: (provider, proof, technology, fields read) -> outcome key: a worker's `_memo`
        self._keys: dict[tuple[str, bool, Any, Any], _Key] = {}
        self.cases = 0  # distinct sets of fields read seen so far (decisions worked out)
        self._defaults: dict[Party, PartyStatus] = {}

    def _plan(self, provider: str, proof: bool) -> tuple[_Plan, ...]:
        """The rules that may run: without verified hardware evidence, no EXCLUDED rule."""
        plans = self._plans.get((provider, proof))
        if plans is None:
            plans = self._plans[(provider, proof)] = tuple(
                _Plan(c, provider, self._references[id(c)], i)
                for i, c in enumerate(
                    c
                    for c in self.rules
                    if c.rule.applies_to(provider)
                    and (proof or c.rule.effect is not Status.EXCLUDED)
                )
            )
        return plans

    def _shadow_plan(self, provider: str) -> tuple[_Plan, ...]:
        plans = self._shadow_plans.get(provider)
        if plans is None:
            plans = self._shadow_plans[provider] = tuple(
                _Plan(c, provider, self._references[id(c)], i)
                for i, c in enumerate(c for c in self.shadow if c.rule.applies_to(provider))
            )
        return plans

    def context(self, vm: Any) -> Any:
        """The CEL context for one VM: `vm` is the document, cut to the fields rules read."""
        doc = vm.document
        return cel.Context({"vm": doc if self._paths is None else _prune(doc, self._paths)})

    def _run_rules(self, plans: tuple[_Plan, ...], ctx: Any) -> tuple[_Run, ...]:
        """Every rule of `plans` on one context; rules that did not match are left out."""
        out: list[_Run] = []
        for plan in plans:
            try:
                value = plan.compiled.program.execute(ctx)
            except KeyError as err:
                out.append((plan, _MISSING, f"'{err.args[0] if err.args else '?'}'"))
            except Exception as err:  # CEL raises TypeError/ValueError/RuntimeError on bad data
                out.append((plan, _UNUSABLE, str(err).split(". ")[0]))
            else:
                if value is True:
                    detail = None if plan.detail is None else _detail(plan.detail, ctx)
                    out.append((plan, _MATCHED, detail))
                elif value is not False:
                    reason = f"rule condition returned {type(value).__name__}, not true/false"
                    out.append((plan, _ODD, reason))
        return tuple(out)

    def _fields_key(self, vm: Any, provider: str, proof: bool) -> tuple[str, bool, Any, Any] | None:
        """The exact value of the fields the rules read (`_frozen`), as a memo key; None when
        not reusing. A value that is not JSON (a set, say) may not hash: the memo lookups
        catch that TypeError (hashing here too would cost every VM a second hash)."""
        if self._paths is None or not self.reuse:
            return None
        try:
            # the technology fits each finding's remediation, so it is part of the key
            return (
                provider,
                proof,
                vm.document.get("technology"),
                _frozen(vm.document, self._paths),
            )
        except TypeError:
            return None

    def _case(self, vm: Any) -> _Case:
        """What the rules decide on this VM's fields, worked out once per distinct set of them.

        Rules are pure functions of the fields they read, and a fleet's VMs mostly repeat a
        few configurations (ids and names are not read), so the outcome is kept by the exact
        value of those fields (`_frozen`): converting a context to CEL values costs more than a
        lookup.
        """
        provider = vm.provider
        proof = has_verified_hardware(vm)
        key = self._fields_key(vm, provider, proof)
        if key is None:
            return self._new_case(provider, proof, vm)
        try:
            case = self._memo.get(key)
        except TypeError:  # a value that cannot be hashed (not JSON): no reuse
            return self._new_case(provider, proof, vm)
        if case is None:
            self.cases += 1
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            case = self._memo[key] = self._new_case(provider, proof, vm)
        return case

    def _outcome(
        self, provider: str, proof: bool, vm: Any
    ) -> tuple[str | None, tuple[_Run, ...], tuple[_Run, ...]]:
        """Every rule (and shadow rule) run on this VM's context, and its technology."""
        ctx = self.context(vm)
        shadow = self._run_rules(self._shadow_plan(provider), ctx) if self.shadow else ()
        technology = vm.document.get("technology")
        tech = technology if isinstance(technology, str) else None
        return tech, self._run_rules(self._plan(provider, proof), ctx), shadow

    def _new_case(self, provider: str, proof: bool, vm: Any) -> _Case:
        tech, runs, shadow = self._outcome(provider, proof, vm)
        if not self.share_outcomes:
            return _Case(self, runs, shadow, tech)
        return self._shared_case(_outcome_key(provider, proof, tech, runs, shadow), runs, shadow)

    def _shared_case(self, key: _Key, runs: tuple[_Run, ...], shadow: tuple[_Run, ...]) -> _Case:
        """The case of an outcome key, built once: a case is a function of exactly the plans
        (fixed per provider and proof), what each rule gave, and the technology
        (remediations)."""
        case = self._outcomes.get(key)
        if case is None:
            if len(self._outcomes) >= _MEMO_MAX:
                self._outcomes.clear()
            case = self._outcomes[key] = _Case(self, runs, shadow, key[2])
        return case

    def outcome_key(self, vm: Any) -> _Key:
        """What decides this VM, as plain values (a forked worker's part of `evaluate_all`)."""
        provider = vm.provider
        proof = has_verified_hardware(vm)
        fields = self._fields_key(vm, provider, proof)
        if fields is not None:
            try:
                known = self._keys.get(fields)
            except TypeError:  # a value that cannot be hashed (not JSON): no reuse
                fields = known = None
            if known is not None:
                return known
        key = _outcome_key(provider, proof, *self._outcome(provider, proof, vm))
        if fields is not None:
            self.cases += 1
            if len(self._keys) >= _MEMO_MAX:
                self._keys.clear()
            self._keys[fields] = key
        return key

    def case_of(self, key: _Key) -> _Case:
        """The case an outcome key (from a worker) stands for."""
        if self.share_outcomes and (case := self._outcomes.get(key)) is not None:
            return case
        provider, proof, tech, run_keys, shadow_keys = key
        plans, shadow_plans = self._plan(provider, proof), self._shadow_plan(provider)
        runs = tuple((plans[i], _KINDS[kind], text) for i, kind, text in run_keys)
        shadow = tuple((shadow_plans[i], _KINDS[kind], text) for i, kind, text in shadow_keys)
        if not self.share_outcomes:
            return _Case(self, runs, shadow, tech)
        return self._shared_case(key, runs, shadow)

    def evaluate(self, vm: Any) -> VMResult:
        """Decide every party for one collected VM (an `auditor.model.VM`)."""
        return self.result(vm, self._case(vm))

    def result(self, vm: Any, case: _Case) -> VMResult:
        """One VM's result from its case: what names the VM (evidence, its own failed calls,
        the demo caveat) filled into the case's shared findings and statuses."""
        caveat = _evidence_caveat(vm)
        evidence: dict[tuple[str, ...], list[str]] = {}
        # Why a rule could not be evaluated names the VM's own failed calls, if it has any.
        undetermined = case.undetermined
        if vm.gaps:
            undetermined = {
                id(plan): _undetermined(plan, kind, text, vm)
                for plan, kind, text in case.runs
                if kind is not _MATCHED
            }
        findings: list[Finding] = []
        for plan, status, reason, template in case.findings:
            values = template.copy()  # the rule's fields, shared by every VM of the case
            if reason is None:
                values["reason"] = undetermined[id(plan)]
            elif caveat and status is Status.EXCLUDED:
                values["reason"] = f"{reason} [{caveat}]"
            values["evidence"] = _evidence_for(plan, vm, evidence)
            findings.append(_new_finding(values))
        statuses: dict[Party, PartyStatus] = {}
        for party, status, plans, reason, decided in case.decisions:
            if decided is None:
                statuses[party] = self._default_status(party)
                continue
            values = decided.copy()
            if reason is None:  # undetermined: the rules' own reasons, in order, once each
                values["reason"] = " ".join(dict.fromkeys(undetermined[id(p)] for p in plans))
            elif caveat and status is Status.EXCLUDED:
                values["reason"] = f"{reason} [{caveat}]"
            values["evidence"] = _evidence_of(plans, vm, evidence)
            statuses[party] = _new_status(values)
        level_reason = case.level_reason
        if caveat:  # e.g. the demo fleet's self-made AMD chain: said next to every verdict
            level_reason = f"{level_reason} [{caveat}]"
        values = vm.__dict__
        result = {name: values[name] for name in _VM_FIELDS}  # validated already: shared
        result.update(
            level=case.level,
            level_reason=level_reason,
            parties=dict(case.parties),  # its own: a caller may change one VM's result
            party_status=statuses,
            findings=findings,
            gdpr=case.gdpr(vm, statuses, findings),
            overrides=list(case.overrides),
        )
        return _new_result(result)

    def _decide(self, party: Party, outcomes: list[tuple[_Plan, bool]]) -> _Decision:
        """DESIGN.md §5 for one party: a veto wins, then missing inputs that could change the
        outcome, then the strongest exclusion; otherwise the party can access (no plans)."""
        matched = [plan for plan, ok in outcomes if ok]
        vetoes = [plan for plan in matched if plan.is_veto]
        if vetoes:
            return party, Status.CAN_ACCESS, vetoes, self._titles(vetoes)
        exclusions = [plan for plan in matched if not plan.is_veto]
        best = max((plan.strength for plan in exclusions), default=0)
        blocking = [
            plan for plan, ok in outcomes if not ok and (plan.is_veto or plan.strength > best)
        ]
        if blocking:
            return party, Status.UNDETERMINED, blocking, None
        if exclusions:
            top = [plan for plan in exclusions if plan.strength == best]
            return party, top[0].effect, top, self._titles(top)
        return party, Status.CAN_ACCESS, [], None

    def _titles(self, plans: list[_Plan]) -> str:
        ids = tuple(plan.id for plan in plans)
        joined = self._joined.get(ids)
        if joined is None:  # a few combinations per fleet: join each once
            joined = self._joined[ids] = "; ".join(dict.fromkeys(p.title for p in plans)) + "."
        return joined

    def _default_status(self, party: Party) -> PartyStatus:
        """The status of a party no rule decided: one shared, read-only object per party."""
        status = self._defaults.get(party)
        if status is None:
            status = self._defaults[party] = build_unchecked(
                PartyStatus,
                {
                    "party": party,
                    "status": Status.CAN_ACCESS,
                    "reason": self.party_defaults.get(party, _DEFAULT_REASON),
                    "rules": [],
                    "evidence": [],
                    "override": None,
                },
            )
        return status

    @staticmethod
    def _missing(plan: _Plan, vm: Any, key: str | None, detail: str = "") -> str:
        sections = set(plan.sections)
        gaps: list[Gap] = [g for g in vm.gaps if not sections or _gap_touches(g, sections)]
        what = f"field {key} is not in the evidence" if key else f"evidence unusable ({detail})"
        if gaps:
            causes = "; ".join(_gap_cause(g) for g in gaps[:3])
            return f"Could not evaluate: {what}; {causes}."
        return f"Could not evaluate: {what}."


class _Case:
    """The decision for one distinct set of fields read: shared by every VM that has it.

    Per VM only what names the VM remains: evidence hashes, reasons that cite its failed calls,
    the demo caveat; everything else of its findings and statuses is built once, here.
    """

    __slots__ = (
        "_gdpr",
        "decisions",
        "findings",
        "level",
        "level_reason",
        "overrides",
        "parties",
        "runs",
        "undetermined",
    )

    def __init__(
        self,
        engine: Engine,
        runs: tuple[_Run, ...],
        shadow: tuple[_Run, ...] = (),
        technology: str | None = None,
    ) -> None:
        self.runs = runs
        self.undetermined: dict[int, str] = {}
        #: (plan, status, reason, the finding's fields but its evidence); reason None =
        #: undetermined (the VM's own words are filled in per VM).
        self.findings: list[tuple[_Plan, Status, str | None, dict[str, Any]]] = []
        by_party: dict[Party, list[tuple[_Plan, bool]]] = {}
        for plan, kind, text in runs:
            matched = kind is _MATCHED
            if matched:
                reason = plan.title if text is None else f"{plan.title}: {text}"
                status = plan.effect
            else:
                self.undetermined[id(plan)] = _undetermined(plan, kind, text, _NO_GAPS)
                reason, status = None, Status.UNDETERMINED
            template = {
                "rule_id": plan.id,
                "party": plan.party,
                "status": status,
                "title": plan.title,
                "reason": reason,
                "severity": plan.severity,
                "rationale": plan.rationale,
                "evidence": None,
                "remediation": plan.rule.remediation_for(plan.provider, technology)
                if technology
                else plan.remediation,
                "references": plan.references,
            }
            self.findings.append((plan, status, reason, template))
            by_party.setdefault(plan.party, []).append((plan, matched))
        decisions = [engine._decide(p, by_party.get(p, [])) for p in Party]
        overridden: dict[Party, list[tuple[_Plan, str]]] = {}
        for plan, kind, _ in shadow:  # a disabled built-in veto that applies (or might) here
            overridden.setdefault(plan.party, []).append((plan, kind))
        notes: dict[Party, str] = {}
        self.overrides: list[str] = []
        for i, (party, status, plans, reason) in enumerate(decisions):
            vetoes = overridden.get(party)
            if not vetoes or status is Status.CAN_ACCESS:
                continue  # no override applies, or the party can access anyway: no change
            words = "; ".join(
                engine._override_words[p.id]
                + (" (it applies here)" if k is _MATCHED else " (it could not be evaluated here)")
                for p, k in vetoes
            )
            notes[party] = words
            self.overrides.extend(p.id for p, _ in vetoes if p.id not in self.overrides)
            capped = Status.CLAIMED_EXCLUDED if status is Status.EXCLUDED else status
            if reason is not None:
                reason = f"{reason} Owner override: {words}; at most CLAIMED_EXCLUDED."
            decisions[i] = (party, capped, plans, reason)
        #: (party, status, plans, reason, the status's fields but its evidence, or None when
        #: no rule decided it: the party's shared default status).
        self.decisions: list[
            tuple[Party, Status, list[_Plan], str | None, dict[str, Any] | None]
        ] = [
            (
                party,
                status,
                plans,
                reason,
                {
                    "party": party,
                    "status": status,
                    "reason": reason,
                    "rules": [plan.id for plan in plans],  # shared by the case's VMs: read-only
                    "evidence": None,
                    "override": notes.get(party),
                }
                if plans
                else None,
            )
            for party, status, plans, reason in decisions
        ]
        self.parties = {party: status for party, status, _, _ in decisions}
        self.level, self.level_reason = level_for(self.parties)
        self._gdpr: dict[tuple[str, str], GdprReading] = {}

    def gdpr(
        self, vm: Any, statuses: dict[Party, PartyStatus], findings: list[Finding]
    ) -> GdprReading:
        """The GDPR reading: it depends on the decision, the region and (a private cloud's)
        host operator only, so it is shared by the VMs that have those."""
        key = (vm.region, host_operator(vm))
        reading = self._gdpr.get(key)
        if reading is None:
            reading = self._gdpr[key] = gdpr_reading(vm, statuses, findings)
        return reading


def _outcome_key(
    provider: str, proof: bool, tech: str | None, runs: tuple[_Run, ...], shadow: tuple[_Run, ...]
) -> _Key:
    return (
        provider,
        proof,
        tech,
        tuple([(plan.index, kind, text) for plan, kind, text in runs]),
        tuple([(plan.index, kind, text) for plan, kind, text in shadow]),
    )


def _override(rule: CompiledRule, pack: RulePack, action: str) -> OwnerOverride:
    return OwnerOverride(
        rule_id=rule.rule.id,
        party=rule.rule.party,
        action=action,
        pack=pack.ref.name,
        pack_sha256=pack.ref.sha256,
        title=rule.rule.title,
    )


def _same_rule(a: CompiledRule, b: CompiledRule) -> bool:
    """Does a replacement keep the built-in veto as it was (same party, effect, condition)?"""
    ra, rb = a.rule, b.rule
    return (ra.party, ra.effect, ra.when, ra.providers) == (
        rb.party,
        rb.effect,
        rb.when,
        rb.providers,
    )


def _undetermined(plan: _Plan, kind: str, text: str | None, vm: Any) -> str:
    """Why a rule could not be evaluated, naming the VM's failed calls that touch it."""
    if kind is _MISSING:
        return Engine._missing(plan, vm, text)
    if kind is _UNUSABLE:
        return Engine._missing(plan, vm, None, str(text))
    return str(text)


class _NoGaps:
    gaps: tuple[Gap, ...] = ()


_NO_GAPS = _NoGaps()


def _evidence_of(plans: list[_Plan], vm: Any, cache: dict[tuple[str, ...], list[str]]) -> list[str]:
    """The evidence behind a party status: that of every rule that decided it, once each."""
    if len(plans) == 1:
        return _evidence_for(plans[0], vm, cache)  # shared with the finding: read-only
    shas: list[str] = []
    for plan in plans:
        for sha in _evidence_for(plan, vm, cache):
            if sha not in shas:
                shas.append(sha)
    return shas


_new_finding = unchecked_builder(Finding)
_new_status = unchecked_builder(PartyStatus)
_new_result = unchecked_builder(VMResult)


def _evidence_caveat(vm: Any) -> str | None:
    hardware = vm.document.get("hardware")
    caveat = hardware.get("caveat") if isinstance(hardware, dict) else None
    return str(caveat) if caveat else None


def _detail(program: Any, ctx: Any) -> str:
    """A rule's `detail` expression, evaluated for a matched rule; never fails the rule."""
    try:
        value = program.execute(ctx)
    except Exception as err:  # a detail is commentary: report, don't fail
        return f"(detail unavailable: {str(err).split('. ')[0]})"
    return str(value)


#: Gap codes that mean "the call worked, this resource was not in its answer".
_NOT_FOUND_CODES = frozenset({"NotReturned", "NotFound"})


def _gap_cause(gap: Gap) -> str:
    """Why a fact is missing, in words: a failed call, or a resource the call did not return."""
    where = f"{gap.account}/{gap.region}"
    if gap.code in _NOT_FOUND_CODES:
        return f"{gap.resource or 'a resource'} was not found by {gap.call} in {where}"
    return f"{gap.call} failed in {where}: {gap.code}"


def _gap_touches(gap: Gap, sections: set[str]) -> bool:
    return not gap.sections or bool(set(gap.sections) & sections)


def _evidence_for(plan: _Plan, vm: Any, cache: dict[tuple[str, ...], list[str]]) -> list[str]:
    """The evidence behind the document sections a rule reads, by sha256.

    One list per VM and set of sections, shared by the findings that read them: read-only.
    """
    out = cache.get(plan.sections)
    if out is None:
        out = cache[plan.sections] = []
        by_section = vm.evidence
        for section in plan.sections or tuple(by_section):
            for sha in by_section.get(section, ()):
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


#: The fields of the document the rules read, as a tree: None = the whole value from here on.
_Trie = dict[str, "_Trie | None"]


def _paths_read(rules: Sequence[CompiledRule]) -> _Trie:
    """Every `vm.a.b.c` path the rules read (up to a method call or index), as a tree.

    `vm.agents.extensions.size()` reads `agents.extensions` whole; `has(vm.migration)` only
    whether `migration` is there; `vm.disks.exists(d, d.boot)` the field `boot` of each disk.
    Call only when `_sections_read` is not None (every use of `vm` is `vm.<name>`).
    """
    tree: _Trie = {}
    for compiled in rules:
        rule = compiled.rule
        code = _STRING_LITERAL.sub('""', rule.when + " " + (rule.detail or ""))
        for match in _VM_PATH.finditer(code):
            names = [n.strip() for n in match.group(1).split(".")[1:]]
            element: _Trie | None = {}  # presence only, unless a use below says more
            if match.group(2):  # `.size(` / `.exists(`: the last name is a method, not a field
                method = names.pop()
                element = _macro_fields(code, match.end(), method)
            elif _HAS_CALL.search(code, 0, match.start()) is None:
                element = None  # the value itself is read
            _add_path(tree, names, element)
    return tree


def _add_path(tree: _Trie, names: list[str], leaf: _Trie | None) -> None:
    """Add `names` to `tree`, reading `leaf` of the last one (None = all of it)."""
    node = tree
    for i, name in enumerate(names):
        current = node.get(name, {})
        if name in node and current is None:
            return  # read whole already
        assert current is not None
        if i < len(names) - 1:
            node[name] = current
            node = current
        elif leaf is None:
            node[name] = None
        else:
            for key, sub in leaf.items():
                _add_path(current, [key], sub)
            node[name] = current


def _macro_fields(code: str, start: int, method: str) -> _Trie | None:
    """The element fields a list macro reads: `exists(d, d.boot && d.encrypted)` -> both.

    None (the whole value) for any other method, and whenever the variable is used other than
    as `d.field` (passed whole, or `d.size()`), or the macro has a second variable.
    """
    if method not in _LIST_MACROS:
        return None
    args = _call_args(code, start)
    if args is None or len(args) < 2:
        return None
    var = args[0].strip()
    if not _IDENT.fullmatch(var) or _IDENT.fullmatch(args[1].strip()):
        return None  # not `x, expr`: e.g. the two-variable form `all(k, v, expr)`
    fields: _Trie = {}
    body = ",".join(args[1:])
    uses = re.finditer(rf"\b{re.escape(var)}\b(\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)(\s*\()?)?", body)
    for use in uses:
        if use.group(2) is None or use.group(3):
            return None  # `d` itself, or a method of `d`
        fields[use.group(2)] = None
    return fields


def _call_args(code: str, start: int) -> list[str] | None:
    """The top-level, comma-separated arguments of the call whose `(` ends before `start`."""
    depth, args, begin = 0, [], start
    for i in range(start, len(code)):
        char = code[i]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                args.append(code[begin:i])
                return args
            depth -= 1
        elif char == "," and depth == 0:
            args.append(code[begin:i])
            begin = i + 1
    return None


def _prune(value: Any, tree: _Trie | None) -> Any:
    """`value` cut to the paths in `tree`: absent stays absent, a scalar stays whole.

    A list is cut element by element (what a macro reads of each). So every rule sees what it
    would see in the whole document: the same values, the same missing keys, the same errors.
    """
    if tree is None:
        return value
    if isinstance(value, dict):
        return {name: _prune(value[name], sub) for name, sub in tree.items() if name in value}
    if isinstance(value, list):
        return [_prune(item, tree) for item in value]
    return value


def _frozen(value: Any, tree: _Trie | None) -> Any:
    """A hashable key equal for two documents exactly when `_prune` gives equal values.

    Built in one walk without the cut copy. Booleans and floats carry their type (CEL tells
    `true` from `1` and `1` from `1.0`; Python's `==` does not), lists and maps are marked
    apart, absent fields are left out while present ones keep their names. Raises TypeError
    for a value that cannot be hashed.
    """
    if tree is None:
        return _frozen_whole(value)
    if isinstance(value, dict):
        return (
            _MAP,
            tuple(
                [(name, _frozen(value[name], sub)) for name, sub in tree.items() if name in value]
            ),
        )
    if isinstance(value, list):
        return (_LIST, tuple([_frozen(item, tree) for item in value]))
    return value if type(value) in _UNTAGGED else (type(value), value)


def _frozen_whole(value: Any) -> Any:
    kind = type(value)
    if kind in _UNTAGGED:
        return value
    if isinstance(value, dict):
        return (_MAP, tuple([(k, _frozen_whole(v)) for k, v in value.items()]))
    if isinstance(value, list):
        return (_LIST, tuple([_frozen_whole(item) for item in value]))
    return (kind, value)


#: Scalars no other JSON value equals: strings, ints (bool is not `int` here) and None.
_UNTAGGED = frozenset({str, int, type(None)})
_MAP, _LIST = object(), object()


#: Fleets from this size on may be evaluated with forked workers where fork is available:
#: they run the rules and send back only which case each VM is (a few bytes), this process
#: builds the results meanwhile (sending whole results back never paid: benchmarks/RESULTS.md).
PARALLEL_MIN_VMS: int | None = 20_000
#: VMs per worker task (small: this process starts building results early), and the first
#: VMs evaluated here to see whether workers pay
_CHUNK = 2_000
#: Workers pay only when the VMs are mostly configured differently: with reuse, a VM whose
#: fields repeat costs its result only, which this process builds either way. Past this
#: share of new sets of fields among the first VMs, the rest go to workers.
PARALLEL_DISTINCT_SHARE = 0.1


_FORKED: tuple[Engine, Sequence[Any]] | None = None


def _keys_forked(start: int, stop: int) -> tuple[list[_Key], bytes, int]:
    """In a forked worker: the outcome key of each VM of a slice, as a table of the distinct
    keys and one index into it per VM, and how many decisions it worked out (the engine and
    VMs were inherited, only the slice bounds travel)."""
    assert _FORKED is not None
    gc.disable()
    engine, vms = _FORKED
    before = engine.cases
    table: dict[_Key, int] = {}
    index = array("I")
    for vm in vms[start:stop]:
        key = engine.outcome_key(vm)
        found = table.get(key)
        if found is None:
            found = table[key] = len(table)
        index.append(found)
    return list(table), index.tobytes(), engine.cases - before


def evaluate_all(engine: Engine, vms: Sequence[Any], workers: int | None = None) -> list[VMResult]:
    """Evaluate every VM, in order; the rules in forked worker processes when that pays.

    `workers`: None chooses: every core for at least PARALLEL_MIN_VMS VMs on Linux (fork),
    once the first VMs show that they are mostly configured differently
    (PARALLEL_DISTINCT_SHARE); 1 stays in this process; more than 1 uses that many workers
    for every VM. Workers inherit the engine and the VMs (compiled CEL programs cannot be
    pickled), run the rules and send back each VM's outcome key; this process turns keys into
    shared cases and builds each VM's result while the workers go on. The garbage collector is
    paused meanwhile: results are long-lived, and full collections over a large fleet would
    cost more than the evaluation itself.
    """
    import multiprocessing

    can_fork = "fork" in multiprocessing.get_all_start_methods()
    count = workers if workers is not None else (os.cpu_count() or 1)
    if workers is None and (
        PARALLEL_MIN_VMS is None
        or len(vms) < PARALLEL_MIN_VMS
        or not sys.platform.startswith("linux")  # fork is unsafe on macOS: not by default
    ):
        count = 1
    enabled = gc.isenabled()
    gc.disable()
    try:
        if count <= 1 or len(vms) < 2 or not can_fork:
            return [engine.evaluate(vm) for vm in vms]
        done = 0
        out: list[VMResult] = []
        if workers is None and engine.reuse and engine._paths is not None:
            done = min(_CHUNK, len(vms))
            before = engine.cases
            out = [engine.evaluate(vm) for vm in vms[:done]]
            if engine.cases - before <= done * PARALLEL_DISTINCT_SHARE:  # mostly repeats
                out.extend([engine.evaluate(vm) for vm in vms[done:]])
                return out
        out.extend(_evaluate_in_workers(engine, vms, done, count))
        return out
    finally:
        if enabled:
            gc.enable()


def _evaluate_in_workers(
    engine: Engine, vms: Sequence[Any], begin: int, count: int
) -> list[VMResult]:
    """The results of vms[begin:], their rules run by `count` forked workers. A worker that
    dies (killed for memory, say) costs time, not the scan: the VMs it left are evaluated
    here."""
    global _FORKED
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    left = len(vms) - begin
    size = max(1, min(_CHUNK, -(-left // (count * 4))))
    starts = range(begin, len(vms), size)
    stops = [min(i + size, len(vms)) for i in starts]
    out: list[VMResult] = []
    result = engine.result
    _FORKED = (engine, vms)
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
            for start, (table, packed, worked_out) in zip(
                starts, pool.map(_keys_forked, starts, stops), strict=True
            ):
                engine.cases += worked_out
                cases = [engine.case_of(key) for key in table]
                index = array("I")
                index.frombytes(packed)
                out.extend([result(vms[start + i], cases[c]) for i, c in enumerate(index)])
    except BrokenProcessPool as err:
        done = begin + len(out)
        log.warning("evaluation worker died (%s): %d VMs evaluated here", err, len(vms) - done)
        out.extend([engine.evaluate(vm) for vm in vms[done:]])
    finally:
        _FORKED = None
    return out
