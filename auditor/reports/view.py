"""The report view: one display-ready reading of an AuditRun, shared by HTML, PDF and Markdown.

The three human formats must say the same thing in the same words, so the wording (the GDPR
reading per scope, the attestation grading, what would change the answer) is decided here,
once, and the templates only lay it out. `build_view` is a pure function of the run; the only
other input is the set of trust anchors pinned inside the tool, which the method section lists so
that a reader can check which roots the verifiers trusted.

Vocabulary: a *scope* is one provider account (AWS account, Google Cloud project, Azure
subscription): the unit a controller contracts for and a DPA names. The reading never says the
fleet is "in order" or not: it states what the evidence shows and which law it is relevant to.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from auditor.assurance import LEVEL_MEANING, LEVEL_REQUIREMENTS
from auditor.jurisdiction import PROVIDER_PARENT, legal_version, place_of
from auditor.model import (
    PROVIDER_PARTIES,
    Answer,
    AuditRun,
    Evidence,
    Gap,
    Level,
    Party,
    Source,
    Status,
    VMResult,
    result_sha256,
)
from auditor.reports.tables import places_by_account, vms_at
from auditor.verify.anchors import AnchorError, fingerprint, gcp_vtpm_store

_K = TypeVar("_K")

CLOUD_NAME: dict[str, str] = {
    "aws": "AWS",
    "gcp": "Google Cloud",
    "azure": "Azure",
    "libvirt": "KVM (libvirt)",
}
SCOPE_NOUN: dict[str, str] = {
    "aws": "account",
    "gcp": "project",
    "azure": "subscription",
    "libvirt": "host",
}

PARTY_LABEL: dict[Party, str] = {
    Party.CONTROL_PLANE: "control plane",
    Party.HYPERVISOR: "hypervisor",
    Party.FIRMWARE: "provider firmware",
    Party.ATTESTATION_SERVICE: "attestation service",
    Party.VTPM: "vTPM",
    Party.KEY_CUSTODIAN: "disk-key custodian",
    Party.GUEST_AGENTS: "guest agents",
    Party.IMAGE_PUBLISHER: "image publisher",
    Party.CPU_VENDOR: "CPU vendor",
}
#: Short party names: matrix columns here, and the terminal table's headers.
PARTY_SHORT: dict[Party, str] = {
    Party.CONTROL_PLANE: "ctrl",
    Party.HYPERVISOR: "hyperv",
    Party.FIRMWARE: "fw",
    Party.ATTESTATION_SERVICE: "attest",
    Party.VTPM: "vtpm",
    Party.KEY_CUSTODIAN: "keys",
    Party.GUEST_AGENTS: "agents",
    Party.IMAGE_PUBLISHER: "image",
    Party.CPU_VENDOR: "cpu",
}
#: How each party could still reach the data (DESIGN.md §1), for the method section.
PARTY_WORDS: dict[Party, str] = {
    Party.CONTROL_PLANE: "provisioning, metadata and console: could launch another image or "
    "hand over forged keys",
    Party.HYPERVISOR: "hypervisor, host administrators and physical access: could read guest "
    "memory",
    Party.FIRMWARE: "closed provider firmware or paravisor: runs inside the guest with full access",
    Party.ATTESTATION_SERVICE: "provider attestation service or logs: could vouch for a VM that "
    "is not what it claims",
    Party.VTPM: "host-emulated or provider-paravisor vTPM: sealed keys and measurements are "
    "provider-forgeable",
    Party.KEY_CUSTODIAN: "provider-side disk encryption or KMS: decrypts outside the TEE",
    Party.GUEST_AGENTS: "guest agents, console, run-command, host-provided data: provider code or "
    "input inside the guest",
    Party.IMAGE_PUBLISHER: "OS vendor or image publisher: signs what boots",
    Party.CPU_VENDOR: "AMD or Intel: holds the roots of trust (irreducible, recorded)",
}

STATUS_LABEL: dict[Status, str] = {
    Status.CAN_ACCESS: "can access",
    Status.CLAIMED_EXCLUDED: "claimed excluded",
    Status.EXCLUDED: "excluded",
    Status.UNDETERMINED: "undetermined",
}
STATUS_MEANING: dict[Status, str] = {
    Status.CAN_ACCESS: "nothing stops the party, or something proves it can (debug policy on)",
    Status.CLAIMED_EXCLUDED: "the provider says the party is shut out (API flag, provider log, "
    "provider attestation token), but the owner has not verified it: weak evidence",
    Status.EXCLUDED: "hardware-signed evidence, verified by this tool against pinned vendor "
    "roots, shows the party is shut out",
    Status.UNDETERMINED: "the evidence needed is missing (not collected, API error, no "
    "permission): never counted as a pass",
}
#: Short status codes, as the terminal table prints them.
STATUS_CODE: dict[Status, str] = {
    Status.CAN_ACCESS: "CAN",
    Status.CLAIMED_EXCLUDED: "claim",
    Status.EXCLUDED: "EXCL",
    Status.UNDETERMINED: "?",
}
STATUS_ORDER: tuple[Status, ...] = (
    Status.CAN_ACCESS,
    Status.UNDETERMINED,
    Status.CLAIMED_EXCLUDED,
    Status.EXCLUDED,
)

ANSWER_ORDER: tuple[Answer, ...] = (Answer.YES, Answer.UNDETERMINED, Answer.NO)
ANSWER_MEANING: dict[Answer, str] = {
    Answer.YES: "at least one provider-controlled party can reach the plaintext",
    Answer.UNDETERMINED: "no party is shown able to, but not every one is excluded by "
    "owner-verified evidence",
    Answer.NO: "owner-verified hardware evidence shuts every provider-controlled party out",
}

SOURCE_LABEL: dict[Source, str] = {
    Source.CONTROL_PLANE: "provider control plane (API)",
    Source.PROVIDER_LOG: "provider log",
    Source.PROVIDER_ATTESTATION_SERVICE: "provider attestation service",
    Source.HARDWARE: "hardware-signed",
    Source.GUEST: "guest",
}


class Attestation(StrEnum):
    """Who verified the attestation of a VM, graded as C5:2026 OPS-33 grades it."""

    OWNER = "owner-verified"
    DEMO = "owner-verified against the demo trust anchor (not AMD)"
    PROVIDER = "provider-verified"
    NONE = "none"
    UNDETERMINED = "undetermined"


ATTESTATION_ORDER: tuple[Attestation, ...] = (
    Attestation.OWNER,
    Attestation.DEMO,
    Attestation.PROVIDER,
    Attestation.NONE,
    Attestation.UNDETERMINED,
)
ATTESTATION_GRADE: dict[Attestation, str] = {
    Attestation.OWNER: "strong: the owner verified the raw hardware evidence against vendor roots",
    Attestation.DEMO: "demonstration only: verified against the demo fleet's self-made chain, "
    "which is not AMD; shows how owner verification reads, proves nothing about real hardware",
    Attestation.PROVIDER: "weak: provider-collected and provider-verified (the provider stays in "
    "the trust set)",
    Attestation.NONE: "none: no attestation the owner can rely on",
    Attestation.UNDETERMINED: "undetermined: the evidence needed is missing",
}
_ATTESTATION_BY_STATUS: dict[Status, Attestation] = {
    Status.EXCLUDED: Attestation.OWNER,
    Status.CLAIMED_EXCLUDED: Attestation.PROVIDER,
    Status.CAN_ACCESS: Attestation.NONE,
    Status.UNDETERMINED: Attestation.UNDETERMINED,
}

DISCLAIMER = (
    "This report states what the collected evidence shows and which provisions it is relevant "
    "to. It is not a legal assessment: the controller and its data protection officer decide "
    "under GDPR Art. 24, 28, 32, 35 and Chapter V."
)

#: How many VMs the short formats list as the lowest.
LOWEST_VMS = 10


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class EvidenceView:
    """One evidence item as reports show it: who says so, its hash, and any verification."""

    sha256: str
    short: str
    known: bool
    kind: str
    source: str
    source_label: str
    call: str
    ref: str
    collected_at: str
    verifier: str
    verified: bool | None
    verification_reason: str
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class VMEvidence:
    item: EvidenceView
    sections: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PartyView:
    party: Party
    label: str
    short: str
    status: Status
    status_label: str
    status_code: str
    reason: str
    rules: tuple[str, ...]
    evidence: tuple[str, ...]
    reason_number: int
    reason_anchor: str
    override: str = ""


@dataclass(frozen=True, slots=True)
class OverrideRow:
    """A built-in veto the owner's pack switched off: shown in the summary and the method."""

    rule_id: str
    party: str
    action: str
    pack: str
    pack_sha256: str
    title: str
    vms: int


@dataclass(frozen=True, slots=True)
class Reason:
    """One distinct (party, status, reason, rules) of a scope: large reports print it once."""

    number: int
    anchor: str
    party: Party
    label: str
    status: Status
    status_label: str
    text: str
    rules: tuple[str, ...]
    count: int


class _Reasons:
    """Numbers distinct party reasons across the report, counting the VMs that share each."""

    def __init__(self) -> None:
        self.numbers: dict[tuple[Party, Status, str, tuple[str, ...]], int] = {}

    def number(self, key: tuple[Party, Status, str, tuple[str, ...]]) -> int:
        return self.numbers.setdefault(key, len(self.numbers) + 1)

    def for_scope(self, vms: Sequence[VMView]) -> tuple[Reason, ...]:
        seen: dict[int, PartyView] = {}
        counts: Counter[int] = Counter()
        for vm in vms:
            for p in vm.parties:
                seen.setdefault(p.reason_number, p)
                counts[p.reason_number] += 1
        return tuple(
            Reason(
                number=n,
                anchor=p.reason_anchor,
                party=p.party,
                label=p.label,
                status=p.status,
                status_label=p.status_label,
                text=p.reason,
                rules=p.rules,
                count=counts[n],
            )
            for n, p in sorted(seen.items())
        )


@dataclass(frozen=True, slots=True)
class GapView:
    scope_label: str
    provider: str
    account: str
    region: str
    call: str
    code: str
    message: str
    what: str
    affects: str
    resource: str
    sections: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """One deduplicated "what would change it" entry of a scope, numbered within the report."""

    number: int
    anchor: str
    source: str
    party: Party | None
    party_label: str
    text: str
    count: int
    total: int


@dataclass(frozen=True, slots=True)
class VMView:
    key: str
    anchor: str
    scope_anchor: str
    provider: str
    cloud: str
    account: str
    region: str
    zone: str
    id: str
    name: str
    label: str
    instance_type: str
    technology: str
    state: str
    pool: str  # "cluster/node pool" of a Kubernetes node, "" otherwise
    operator: str  # who runs a libvirt host, as the owner configured it; "" for clouds
    level: Level
    level_reason: str
    answer: Answer
    gdpr_summary: str
    jurisdiction: str
    references: tuple[str, ...]
    attestation: Attestation
    not_excluded: int
    parties: tuple[PartyView, ...]
    changes: tuple[Change, ...]
    evidence: tuple[VMEvidence, ...]
    gaps: tuple[GapView, ...]


@dataclass(frozen=True, slots=True)
class ScopeView:
    """The GDPR reading of one provider account, in one sentence and in its parts."""

    provider: str
    cloud: str
    account: str
    anchor: str
    title: str
    vms: tuple[VMView, ...]
    total: int
    answer: Answer
    answers: tuple[tuple[Answer, int], ...]
    levels: tuple[tuple[Level, int], ...]
    deciding: tuple[tuple[Party, str, int], ...]
    attestation: tuple[tuple[Attestation, int], ...]
    articles: tuple[str, ...]
    use_cases: tuple[tuple[str, int], ...]
    references: tuple[str, ...]
    regions: tuple[str, ...]
    places: tuple[tuple[str, str, str], ...]
    parent: str
    coverage: str
    gaps: tuple[GapView, ...]
    changes: tuple[Change, ...]
    reasons: tuple[Reason, ...]

    @property
    def sentence(self) -> str:
        return scope_sentence(self)


@dataclass(frozen=True, slots=True)
class PoolView:
    """One Kubernetes node pool: its nodes' levels and readings, and what it declares."""

    platform: str
    cluster: str
    node_pool: str
    nodes: int
    levels: tuple[tuple[Level, int], ...]
    answers: tuple[tuple[Answer, int], ...]
    declared: str
    unlike_pool: int  # nodes that do not run what the pool declares


@dataclass(frozen=True, slots=True)
class FleetView:
    total: int
    levels: tuple[tuple[Level, str, int], ...]
    clouds: tuple[tuple[str, str, tuple[int, ...], int], ...]
    answers: tuple[tuple[Answer, int], ...]
    attestation: tuple[tuple[Attestation, int], ...]
    lowest: Level | None
    scopes: int
    complete: bool
    gaps: int
    pools: tuple[PoolView, ...] = ()


@dataclass(frozen=True, slots=True)
class CoverageRow:
    scope_label: str
    provider: str
    account: str
    region: str
    status: str
    vms: int
    calls: int
    errors: int


@dataclass(frozen=True, slots=True)
class AnchorRow:
    store: str
    subject: str
    role: str
    fingerprint: str
    source: str = ""
    used_by: int = 0
    pinned: bool = True
    demo: bool = False


@dataclass(frozen=True, slots=True)
class MethodView:
    levels: tuple[tuple[Level, str, str], ...]
    statuses: tuple[tuple[Status, str, str], ...]
    answers: tuple[tuple[Answer, str], ...]
    attestation: tuple[tuple[Attestation, str], ...]
    parties: tuple[tuple[Party, str, str, bool], ...]
    rule_packs: tuple[tuple[str, str, str, str, int], ...]
    tool_name: str
    tool_version: str
    python: str
    dependencies: tuple[tuple[str, str], ...]
    anchors: tuple[AnchorRow, ...]
    anchor_error: str
    scope: tuple[tuple[str, str], ...]
    evidence_items: int
    reproduce: tuple[str, ...]
    judged_at: str = ""
    judged_note: str = ""
    overrides: tuple[OverrideRow, ...] = ()


@dataclass(frozen=True, slots=True)
class SignOffView:
    """The first page: what a compliance officer signs, on one or two printed pages."""

    rows: tuple[tuple[str, str], ...]
    levels: tuple[tuple[Level, int], ...]
    answers: tuple[tuple[Answer, int], ...]
    no_vms: tuple[str, ...]
    not_seen: tuple[str, ...]
    not_seen_more: int
    anchors: tuple[AnchorRow, ...]
    demo_vms: int
    overrides: int
    result_sha256: str


@dataclass(frozen=True, slots=True)
class ReportView:
    title: str
    run_id: str
    schema_version: str
    started_at: str
    finished_at: str
    finished_iso: str
    started_iso: str
    disclaimer: str
    fleet: FleetView
    scopes: tuple[ScopeView, ...]
    vms: tuple[VMView, ...]
    lowest: tuple[VMView, ...]
    coverage_complete: bool
    coverage: tuple[CoverageRow, ...]
    gaps: tuple[GapView, ...]
    method: MethodView
    parties: tuple[tuple[Party, str, str], ...]
    status_legend: tuple[tuple[Status, str, str], ...]
    sign_off: SignOffView
    glossary: tuple[tuple[str, str, str], ...]


def build_view(run: AuditRun) -> ReportView:
    """Everything a human-readable report shows, decided once."""
    slugs = _Slugger()
    evidence_cache: dict[str, EvidenceView] = {}
    gaps = tuple(_gap_view(g) for g in run.coverage.gaps)

    # by place in the run, not by object: a run read from disk (auditor.runs.spool) gives new
    # objects each time its VMs are read; and an account's VMs at a time: a stored run's VMs
    # are read again per account instead of all held while the views are made (a 10k-VM
    # run's report peaked at 0.7 GiB for a view of 80 MiB)
    grouped = places_by_account(run.vms)
    for sc in run.coverage.scopes:
        grouped.setdefault((sc.provider, sc.account), [])
    for gap in run.coverage.gaps:
        if gap.affects == "scope" and gap.account:
            grouped.setdefault((gap.provider, gap.account), [])

    scopes: list[ScopeView] = []
    vm_views: dict[int, VMView] = {}  # by place in the run
    reasons = _Reasons()
    next_change = 1
    for provider, account in sorted(grouped):
        scope_anchor = slugs.make(f"scope/{provider}/{account}")
        places = grouped[(provider, account)]
        vms = vms_at(run.vms, places)
        changes = _changes(vms, next_change)
        next_change += len(changes)
        by_text = {c.source: c for c in changes}
        views = tuple(
            _vm_view(run, vm, slugs, scope_anchor, by_text, evidence_cache, reasons) for vm in vms
        )
        for n, view in zip(places, views, strict=True):
            vm_views[n] = view
        del vms
        scope_gaps = tuple(g for g in gaps if g.provider == provider and g.account in (account, ""))
        scopes.append(
            _scope_view(
                run,
                provider,
                account,
                scope_anchor,
                views,
                scope_gaps,
                changes,
                reasons.for_scope(views),
            )
        )

    ordered = tuple(vm_views[n] for n in range(len(vm_views)))
    lowest = tuple(sorted(ordered, key=_lowness)[:LOWEST_VMS])
    method = _method(run)
    return ReportView(
        title="Confidential-computing evidence report",
        run_id=run.run_id,
        schema_version=run.schema_version,
        started_at=_when(run.started_at),
        finished_at=_when(run.finished_at),
        started_iso=_iso(run.started_at),
        finished_iso=_iso(run.finished_at),
        disclaimer=DISCLAIMER,
        fleet=_fleet(run, ordered, len(scopes)),
        scopes=tuple(scopes),
        vms=ordered,
        lowest=lowest,
        coverage_complete=run.coverage.complete,
        coverage=tuple(
            CoverageRow(
                scope_label=_scope_label(s.provider, s.account, s.region),
                provider=s.provider,
                account=s.account,
                region=s.region or "",
                status=s.status,
                vms=s.vms,
                calls=s.calls,
                errors=len(s.errors),
            )
            for s in run.coverage.scopes
        ),
        gaps=gaps,
        method=method,
        parties=tuple((p, PARTY_LABEL[p], PARTY_SHORT[p]) for p in Party),
        status_legend=tuple((s, STATUS_LABEL[s], STATUS_MEANING[s]) for s in STATUS_ORDER),
        sign_off=_sign_off(run, ordered, gaps, method),
        glossary=GLOSSARY,
    )


# --------------------------------------------------------------------------------- helpers


class _Slugger:
    """HTML ids from identities: readable, restricted to [a-z0-9-], unique within a report."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def make(self, key: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")[:120] or "x"
        slug = base
        if slug in self.used:
            slug = f"{base}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:8]}"
        n = 2
        while slug in self.used:
            slug = f"{base}-{n}"
            n += 1
        self.used.add(slug)
        return slug


#: One vocabulary for VM state across clouds (each cloud spells it its own way).
_STATES: dict[str, str] = {
    "running": "running",
    "pending": "starting",
    "provisioning": "starting",
    "staging": "starting",
    "stopping": "stopping",
    "suspending": "stopping",
    "stopped": "stopped",
    "terminated": "stopped",
    "suspended": "suspended",
    "shutting-down": "stopping",
    "deallocated": "stopped",
}


def state_label(provider: str, state: str | None) -> str:
    """`running`, `stopped`, ... for every cloud; Azure's listing gives the provisioning state
    only (not the power state), which is said as such."""
    if not state:
        return "state unknown"
    if provider == "azure":
        return f"provisioned ({state}); power state not read"
    return _STATES.get(state.lower(), state.lower())


def display_path(path: str | None, inside_run: str) -> str:
    """A user's local path as reports show it: where it is kept in the run, never the path of
    the machine that scanned (it says nothing to a reader and may leak a user name)."""
    if not path:
        return ""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return f"{inside_run} (given as {name})" if name else inside_run


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scope_label(provider: str, account: str | None, region: str | None = None) -> str:
    return "/".join(x for x in (provider, account, region) if x)


def _scope_title(provider: str, account: str) -> str:
    cloud = CLOUD_NAME.get(provider, provider)
    noun = SCOPE_NOUN.get(provider, "account")
    return f"{cloud} {noun} {account}"


def _gap_view(gap: Gap) -> GapView:
    what = gap.describe()
    return GapView(
        scope_label=_scope_label(gap.provider, gap.account, gap.region),
        provider=gap.provider,
        account=gap.account or "",
        region=gap.region or "",
        call=gap.call,
        code=gap.code,
        message=gap.message,
        what=what,
        affects=gap.affects,
        resource=gap.resource or "",
        sections=tuple(gap.sections),
    )


def _evidence_view(sha: str, ev: Evidence | None) -> EvidenceView:
    if ev is None:
        return EvidenceView(
            sha256=sha,
            short=sha[:12],
            known=False,
            kind="(not in this run)",
            source="",
            source_label="",
            call="",
            ref="",
            collected_at="",
            verifier="",
            verified=None,
            verification_reason="",
            checks=(),
        )
    ver = ev.verification
    return EvidenceView(
        sha256=sha,
        short=sha[:12],
        known=True,
        kind=ev.kind,
        source=ev.source.value,
        source_label=SOURCE_LABEL.get(ev.source, ev.source.value),
        call=ev.call or "",
        ref=ev.ref or "",
        collected_at=_when(ev.collected_at),
        verifier=ver.verifier if ver else "",
        verified=ver.ok if ver else None,
        verification_reason=ver.reason if ver else "",
        checks=tuple(
            Check(
                name=str(c.get("name", "")),
                ok=bool(c.get("ok", False)),
                reason=str(c.get("reason", "")),
            )
            for c in (ver.checks if ver else [])
        ),
    )


def _change_party(text: str) -> Party | None:
    head = text.split(":", 1)[0].strip()
    try:
        return Party(head)
    except ValueError:
        return None


def _changes(vms: Sequence[VMResult], first: int) -> tuple[Change, ...]:
    """VMResult.gdpr.would_change of a scope, deduplicated, most widely applicable first."""
    counts: Counter[str] = Counter()
    for vm in vms:
        counts.update(dict.fromkeys(vm.gdpr.would_change, 1))
    party_rank = {p: i for i, p in enumerate(Party)}

    def order(item: tuple[str, int]) -> tuple[int, int, str]:
        party = _change_party(item[0])
        return (-item[1], party_rank[party] if party else len(party_rank), item[0])

    out: list[Change] = []
    for i, (text, count) in enumerate(sorted(counts.items(), key=order)):
        party = _change_party(text)
        body = text.split(":", 1)[1].strip() if party else text
        out.append(
            Change(
                number=first + i,
                anchor=f"chg-{first + i}",
                source=text,
                party=party,
                party_label=PARTY_LABEL[party] if party else "",
                text=body,
                count=count,
                total=len(vms),
            )
        )
    return tuple(out)


def _vm_view(
    run: AuditRun,
    vm: VMResult,
    slugs: _Slugger,
    scope_anchor: str,
    changes: Mapping[str, Change],
    cache: dict[str, EvidenceView],
    reasons: _Reasons,
) -> VMView:
    parties = []
    for party in Party:
        ps = vm.party_status.get(party)
        status = ps.status if ps else vm.parties.get(party, Status.UNDETERMINED)
        reason = ps.reason if ps else ""
        rules = tuple(ps.rules) if ps else ()
        number = reasons.number((party, status, reason, rules))
        parties.append(
            PartyView(
                party=party,
                label=PARTY_LABEL[party],
                short=PARTY_SHORT[party],
                status=status,
                status_label=STATUS_LABEL[status],
                status_code=STATUS_CODE[status],
                reason=reason,
                rules=rules,
                evidence=tuple(h[:12] for h in ps.evidence) if ps else (),
                reason_number=number,
                reason_anchor=f"r-{number}",
                override=(ps.override or "") if ps else "",
            )
        )
    sections: dict[str, list[str]] = {}
    for section, hashes in vm.evidence.items():
        for h in hashes:
            sections.setdefault(h, []).append(section)
    for ps in vm.party_status.values():
        for h in ps.evidence:
            sections.setdefault(h, [])
    for finding in vm.findings:
        for h in finding.evidence:
            sections.setdefault(h, [])
    evidence = []
    for sha, secs in sections.items():
        item = cache.get(sha)
        if item is None:
            item = cache[sha] = _evidence_view(sha, run.evidence.get(sha))
        evidence.append(VMEvidence(item=item, sections=tuple(secs)))
    attestation = vm.party_status.get(Party.ATTESTATION_SERVICE)
    att_status = attestation.status if attestation else Status.UNDETERMINED
    grade = _ATTESTATION_BY_STATUS[att_status]
    hardware = vm.document.get("hardware")
    if grade is Attestation.OWNER and isinstance(hardware, dict) and hardware.get("demo_anchor"):
        grade = Attestation.DEMO
    return VMView(
        key=vm.key,
        anchor=slugs.make(f"vm/{vm.provider}/{vm.account}/{vm.id}"),
        scope_anchor=scope_anchor,
        provider=vm.provider,
        cloud=CLOUD_NAME.get(vm.provider, vm.provider),
        account=vm.account,
        region=vm.region,
        zone=vm.zone or "",
        id=vm.id,
        name=vm.name or "",
        label=vm.name or vm.id,
        instance_type=vm.instance_type or "",
        technology=vm.technology.value,
        state=state_label(vm.provider, vm.state),
        pool=vm.pool_label or "",
        operator=_operator(vm),
        level=vm.level,
        level_reason=vm.level_reason,
        answer=vm.gdpr.provider_can_access,
        gdpr_summary=vm.gdpr.summary,
        jurisdiction=vm.gdpr.region_jurisdiction,
        references=tuple(vm.gdpr.references),
        attestation=grade,
        not_excluded=sum(
            1 for p in PROVIDER_PARTIES if vm.parties.get(p, Status.UNDETERMINED) != Status.EXCLUDED
        ),
        parties=tuple(parties),
        changes=tuple(changes[t] for t in dict.fromkeys(vm.gdpr.would_change) if t in changes),
        evidence=tuple(evidence),
        gaps=tuple(_gap_view(g) for g in vm.gaps),
    )


def _count(values: Iterable[_K], order: Sequence[_K]) -> tuple[tuple[_K, int], ...]:
    """Counts in a fixed order, zeros included, so every report lists the same rows."""
    c = Counter(values)
    return tuple((k, c[k]) for k in order)


_ART = re.compile(r"^GDPR Art\. (\d+)(?:-(\d+))?(\(\d+\)\([a-z]\))?")
_UC = re.compile(r"Use Case (\d+)")


def _articles(refs: Iterable[str]) -> tuple[str, ...]:
    """`GDPR Art. 5(1)(f)`, `GDPR Art. 25(1)`, `… 44-46 (…)` -> ("5(1)(f)", "25", "44-46")."""
    found: dict[str, int] = {}
    for ref in refs:
        m = _ART.match(ref)
        if not m:
            continue
        num, upto, para = m.group(1), m.group(2), m.group(3)
        token = f"{num}-{upto}" if upto else num + (para if num == "5" and para else "")
        found.setdefault(token, int(num))
    return tuple(sorted(found, key=lambda t: (found[t], t)))


def _scope_view(
    run: AuditRun,
    provider: str,
    account: str,
    anchor: str,
    vms: tuple[VMView, ...],
    gaps: tuple[GapView, ...],
    changes: tuple[Change, ...],
    reasons: tuple[Reason, ...],
) -> ScopeView:
    title = _scope_title(provider, account)
    total = len(vms)
    answers = Counter(v.answer for v in vms)
    if answers[Answer.YES]:
        answer = Answer.YES
    elif answers[Answer.UNDETERMINED] or not total:
        answer = Answer.UNDETERMINED
    else:
        answer = Answer.NO
    deciding_counts: Counter[Party] = Counter()
    for v in vms:
        if v.answer is Answer.NO:
            continue
        for p in v.parties:
            if p.party not in PROVIDER_PARTIES:
                continue
            # "yes" is decided by the parties that can access; "undetermined" by every party
            # not shown excluded by owner-verified evidence.
            if v.answer is Answer.YES:
                decides = p.status is Status.CAN_ACCESS
            else:
                decides = p.status is not Status.EXCLUDED
            if decides:
                deciding_counts[p.party] += 1
    party_rank = {p: i for i, p in enumerate(Party)}
    deciding = tuple(
        (p, PARTY_LABEL[p], n)
        for p, n in sorted(deciding_counts.items(), key=lambda x: (-x[1], party_rank[x[0]]))
    )
    refs = tuple(dict.fromkeys(r for v in vms for r in v.references))
    use_counts: Counter[str] = Counter()
    for v in vms:
        for uc in dict.fromkeys(m.group(1) for r in v.references for m in _UC.finditer(r)):
            use_counts[uc] += 1
    use_cases = tuple((f"Use Case {uc}", n) for uc, n in sorted(use_counts.items()))
    regions = sorted({v.region for v in vms})
    places = tuple(
        (region, place.name, place.status)
        for region, place in ((r, place_of(provider, r)) for r in regions)
    )
    scope_rows = [s for s in run.coverage.scopes if s.provider == provider and s.account == account]
    unread = [s for s in scope_rows if s.status != "complete"]
    if any(g.affects == "scope" for g in gaps) or any(s.status == "failed" for s in scope_rows):
        coverage = "incomplete: part of this scope could not be read"
    elif unread or gaps:
        coverage = "partial: some facts could not be collected"
    else:
        coverage = "complete"
    if not scope_rows and not gaps:
        coverage = "complete" if total else "not in the run's coverage"
    levels = _count((v.level for v in vms), tuple(Level))
    attestation = _count((v.attestation for v in vms), ATTESTATION_ORDER)
    answers_t = tuple((a, answers[a]) for a in ANSWER_ORDER)
    parent = "provider parent " + PROVIDER_PARENT.get(provider, "unknown provider")
    if provider == "libvirt":  # no cloud provider: the operator the owner configured runs it
        operators = sorted({v.operator for v in vms if v.operator}) or ["not configured"]
        parent = "host operator " + ", ".join(operators)
    articles = _articles(refs)
    return ScopeView(
        provider=provider,
        cloud=CLOUD_NAME.get(provider, provider),
        account=account,
        anchor=anchor,
        title=title,
        vms=vms,
        total=total,
        answer=answer,
        answers=answers_t,
        levels=levels,
        deciding=deciding,
        attestation=attestation,
        articles=articles,
        use_cases=use_cases,
        references=refs,
        regions=tuple(
            region + ("" if name == region else f" {name}") + f" ({status})"
            for region, name, status in places
        ),
        places=places,
        parent=parent,
        coverage=coverage,
        gaps=gaps,
        changes=changes,
        reasons=reasons,
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def scope_sentence(s: ScopeView, ident: Callable[[str], str] = str) -> str:
    """The per-scope GDPR reading, in one sentence a compliance officer can quote.

    `ident` formats the cloud-supplied tokens (account id, region names, error codes): identity
    for HTML (which escapes on output), a code span for Markdown.
    """
    title = f"{s.cloud} {SCOPE_NOUN.get(s.provider, 'account')} {ident(s.account)}"
    total = s.total
    if not total:
        calls = ", ".join(sorted({ident(f"{g.call} {g.code}") for g in s.gaps})) or "no VM listed"
        return (
            f"{title}: provider can reach plaintext: undetermined, no VM of this scope could be "
            f"read ({calls}); nothing is assumed about it; {s.parent}."
        )
    counted = [(a, n) for a, n in s.answers if n]
    phrase = ", ".join(
        f"{a.value} for {n} of {total} VMs" if i == 0 else f"{a.value} for {n}"
        for i, (a, n) in enumerate(counted)
    )
    if s.deciding:
        who = "deciding parties: " + ", ".join(f"{label} ({n})" for _, label, n in s.deciding)
    else:
        who = "every provider-controlled party is excluded by owner-verified evidence"
    graded = dict(s.attestation)
    att = f"the owner (strong) for {graded.get(Attestation.OWNER, 0)} of {total}" + "".join(
        f", {words} for {graded[a]}"
        for a, words in (
            (Attestation.DEMO, "the owner against the demo trust anchor (not AMD)"),
            (Attestation.PROVIDER, "the provider only (weak)"),
            (Attestation.NONE, "nobody"),
            (Attestation.UNDETERMINED, "undetermined"),
        )
        if graded.get(a)
    )
    no = dict(s.answers).get(Answer.NO, 0)
    demo_no = sum(1 for v in s.vms if v.answer is Answer.NO and v.attestation is Attestation.DEMO)
    no_words = f"{no} of {total}" + (
        f" ({demo_no} of them on the demo trust anchor only, not AMD)" if demo_no else ""
    )
    law = "GDPR Art. " + ", ".join(s.articles) if s.articles else "GDPR Art. 5(1)(f), 25, 28, 32"
    if s.use_cases:
        law += " and EDPB Recommendations 01/2020 " + ", ".join(
            f"{uc} ({_plural(n, 'VM')})" for uc, n in s.use_cases
        )
    where = "; ".join(
        ident(region) + ("" if name == region else f" {name}") + f" ({status})"
        for region, name, status in s.places
    )
    tail = (
        ""
        if s.coverage == "complete"
        else f"; coverage {s.coverage} ({_plural(len(s.gaps), 'gap')})"
    )
    return (
        f"{title}: provider can reach plaintext: {phrase}; {who}; attestation verified by "
        f"{att} (C5:2026 OPS-33); provider access to data and "
        f"keys shut out by owner-verified evidence (C5:2026 OPS-32) for {no_words}; "
        f"regions {where or 'none'}, {s.parent}{tail}; evidence relevant to {law}."
    )


def _operator(vm: VMResult) -> str:
    host = vm.document.get("libvirt") if vm.provider == "libvirt" else None
    return str(host.get("operator") or "") if isinstance(host, dict) else ""


def _lowness(v: VMView) -> tuple[int, int, int, str]:
    can = sum(1 for p in v.parties if p.status is Status.CAN_ACCESS)
    return (v.level.rank, ANSWER_ORDER.index(v.answer), -can, v.key)


def _fleet(run: AuditRun, vms: tuple[VMView, ...], scopes: int) -> FleetView:
    levels = Counter(v.level for v in vms)
    clouds = sorted({v.provider for v in vms} | {s.provider for s in run.coverage.scopes})
    cloud_rows = []
    for c in clouds:
        counts = Counter(v.level for v in vms if v.provider == c)
        cloud_rows.append(
            (c, CLOUD_NAME.get(c, c), tuple(counts[lv] for lv in Level), sum(counts.values()))
        )
    return FleetView(
        total=len(vms),
        levels=tuple((lv, LEVEL_MEANING[lv], levels[lv]) for lv in Level),
        clouds=tuple(cloud_rows),
        answers=_count((v.answer for v in vms), ANSWER_ORDER),
        attestation=_count((v.attestation for v in vms), ATTESTATION_ORDER),
        lowest=run.lowest_level(),
        scopes=scopes,
        complete=run.coverage.complete,
        gaps=len(run.coverage.gaps),
        pools=_pools(run),
    )


#: The rule whose finding says a node does not run what its pool declares.
_UNLIKE_POOL = "hypervisor.node-differs-from-its-pool"


def _pools(run: AuditRun) -> tuple[PoolView, ...]:
    """Kubernetes node pools, from the nodes' `kubernetes` sections, in name order."""
    grouped: dict[tuple[str, str, str], list[VMResult]] = {}
    for vm in run.vms:
        section = vm.document.get("kubernetes")
        if isinstance(section, dict):
            key = (str(section.get("platform", "?")), vm.cluster or "?", vm.node_pool or "?")
            grouped.setdefault(key, []).append(vm)
    out: list[PoolView] = []
    for (platform, cluster, pool), nodes in sorted(grouped.items()):
        levels = Counter(v.level for v in nodes)
        declared = sorted(
            {
                str(v.document["kubernetes"]["declared_technology"])
                for v in nodes
                if "declared_technology" in v.document["kubernetes"]
            }
        )
        out.append(
            PoolView(
                platform=platform.upper(),
                cluster=cluster,
                node_pool=pool,
                nodes=len(nodes),
                levels=tuple((lv, levels[lv]) for lv in Level if levels[lv]),
                answers=_count((v.gdpr.provider_can_access for v in nodes), ANSWER_ORDER),
                declared=", ".join(declared) or "not recorded",
                unlike_pool=sum(
                    1 for v in nodes if any(f.rule_id == _UNLIKE_POOL for f in v.findings)
                ),
            )
        )
    return tuple(out)


#: How many gaps the sign-off page lists before pointing to the coverage section.
SIGN_OFF_GAPS = 6


def _sign_off(
    run: AuditRun, vms: tuple[VMView, ...], gaps: tuple[GapView, ...], method: MethodView
) -> SignOffView:
    sc = run.scope
    accounts = {(v.provider, v.account) for v in vms}
    accounts |= {(c.provider, c.account) for c in run.coverage.scopes}
    source = "a replay of recorded API responses (raw/)" if sc.replay else "the clouds' APIs, live"
    judged = method.judged_note or f"Judged at {_iso(run.finished_at)}."
    packs = "; ".join(
        f"{name} {version} ({sha[:12]})" for name, version, sha, _, _ in method.rule_packs
    )
    rows: list[tuple[str, str]] = [
        ("Run", f"{run.run_id}, {_when(run.started_at)} to {_when(run.finished_at)}"),
        ("Judged at", judged),
        (
            "Scope",
            f"{', '.join(CLOUD_NAME.get(p, p) for p in sc.providers)}: "
            f"{len(accounts)} accounts, projects or subscriptions; regions: "
            f"{', '.join(sc.regions) or 'all enabled'}; read from {source}",
        ),
        (
            "Coverage",
            "complete: every scope was read"
            if run.coverage.complete
            else f"incomplete: {len(run.coverage.gaps)} gap(s), listed below; nothing missing is "
            "counted as a pass",
        ),
        (
            "Guest evidence",
            "imported from evidence/guest/" if sc.guest_evidence else "none: no VM can be above L2",
        ),
        ("Tool", f"{run.tool.name} {run.tool.version} (Python {run.tool.python})"),
        ("Rule packs", packs or "none"),
        ("Legal data", legal_version()),
    ]
    anchors = tuple(a for a in method.anchors if a.used_by > 0)
    not_seen = tuple(f"{g.scope_label}: {g.call} {g.code} ({g.what})" for g in gaps[:SIGN_OFF_GAPS])
    return SignOffView(
        rows=tuple(rows),
        levels=tuple((lv, sum(1 for v in vms if v.level is lv)) for lv in Level),
        answers=_count((v.answer for v in vms), ANSWER_ORDER),
        no_vms=tuple(v.label for v in vms if v.answer is Answer.NO)[:12],
        not_seen=not_seen,
        not_seen_more=max(0, len(gaps) - SIGN_OFF_GAPS),
        anchors=anchors,
        demo_vms=sum(1 for v in vms if v.attestation is Attestation.DEMO),
        overrides=len(run.owner_overrides),
        result_sha256=result_sha256(run),
    )


#: Terms a reader meets in the body, explained once (the report links them here).
GLOSSARY: tuple[tuple[str, str, str], ...] = (
    (
        "REPORT_DATA",
        "report-data",
        "64 bytes the guest puts into its hardware report. Here it is "
        "SHA-512 of the audit's nonce, the VM's identity and the guest's claims, so the signed "
        "report proves it was made for this audit, this VM and these claims.",
    ),
    (
        "nonce",
        "nonce",
        "A random challenge the auditor issues per VM; a report is fresh only if "
        "it carries a nonce this audit issued recently and no other file used.",
    ),
    (
        "VCEK, VLEK, ASK, ASVK, ARK",
        "amd-chain",
        "AMD's certificate chain for SEV-SNP: a chip-"
        "specific (VCEK) or cloud-specific (VLEK) signing key, certified by an intermediate (ASK / "
        "ASVK), certified by AMD's root (ARK), whose fingerprint this tool pins.",
    ),
    (
        "PCK, Intel SGX Root CA",
        "intel-chain",
        "Intel's chain for TDX quotes: the platform's PCK "
        "certificate chains to the Intel SGX Root CA, pinned by fingerprint.",
    ),
    (
        "TCB",
        "tcb",
        "Trusted computing base: the firmware and microcode versions a report states; "
        "below the fixes of a published security bulletin, known attacks stay open.",
    ),
    (
        "launch measurement, MRTD",
        "measurement",
        "A hash of the firmware (and, with measured "
        "direct boot, kernel and command line) the VM started with, signed in the report; equal to "
        "a reference the owner trusts, it shows what booted.",
    ),
    (
        "VMPL0",
        "vmpl",
        "The most privileged SEV-SNP privilege level inside the VM; a report "
        "requested at VMPL0 comes from the guest's most trusted code (or a paravisor there).",
    ),
    (
        "MIGRATE_MA, MIGRATABLE",
        "migrate-ma",
        "SEV-SNP policy bit and TDX attribute that let a "
        "migration agent move the VM's memory to another host: a path the launcher controls.",
    ),
    (
        "vTPM, EK, AK",
        "vtpm",
        "A virtual TPM; its endorsement key (EK) and attestation key (AK) "
        "certificates name who made it. Implemented by the provider, it can read what is sealed to "
        "it.",
    ),
    (
        "LUKS, dm-crypt",
        "luks",
        "Disk encryption done by the guest's own kernel; with the key "
        "released by the owner's broker after attestation, the provider's storage sees ciphertext.",
    ),
    (
        "MAA",
        "maa",
        "Microsoft Azure Attestation: Microsoft's service that verifies a VM's "
        "evidence and signs a token; it is the provider's verdict, graded weak.",
    ),
    (
        "C5:2026 OPS-32, OPS-33, CRY-05",
        "c5",
        "Criteria of the German BSI's cloud catalogue C5: "
        "confidential-computing policies (OPS-32), remote attestation graded by who verifies "
        "(OPS-33), key management outside the provider (CRY-05).",
    ),
    (
        "EDPB Use Case 1, Use Case 6",
        "use-cases",
        "EDPB Recommendations 01/2020: encryption whose "
        "keys stay out of the importer's reach can be a supplementary measure (Use Case 1); where "
        "the provider needs or can reach the data in the clear, none is (Use Case 6).",
    ),
    (
        "owner override",
        "owner-override",
        "A built-in veto an owner's rule pack switched off; "
        "shown where it changes a verdict, and never more than claimed excluded.",
    ),
    (
        "demo trust anchor",
        "demo-anchor",
        "The demo fleet's self-made AMD-style chain: verdicts "
        "resting on it show how owner verification reads, and prove nothing about real hardware.",
    ),
)


def _level_needs(level: Level) -> str:
    if level is Level.L0:
        return "nothing (the floor)"
    reqs = LEVEL_REQUIREMENTS[level]
    needs = "; ".join(f"{p.value} {' or '.join(s.value for s in ok)}" for p, ok in reqs)
    below = f"L{level.rank - 1}"
    return f"{below}, plus {needs}"


def _judged_note(run: AuditRun) -> str:
    """When the evidence was judged, and whether that is the recording time of a replay."""
    if run.judged_at is None:
        return ""
    when = _iso(run.judged_at)
    if run.scope.replay and abs((run.judged_at - run.started_at).total_seconds()) > 300:
        return (
            f"Judged at the recording time {when} (a replay): certificate validity, nonce "
            "freshness and log windows are as they were then, not as they are today."
        )
    return f"Judged at {when}, the time of the scan."


def _anchor_rows(run: AuditRun) -> tuple[tuple[AnchorRow, ...], str]:
    """The run's trust anchors (pinned and given); the pinned stores for runs that predate it."""
    if run.trust_anchors:
        return (
            tuple(
                AnchorRow(
                    store=a.store,
                    subject=a.subject,
                    role=a.role,
                    fingerprint=a.sha256,
                    source=a.source,
                    used_by=a.used_by,
                    pinned=a.pinned,
                    demo=a.demo,
                )
                for a in run.trust_anchors
            ),
            "",
        )
    anchors: list[AnchorRow] = []
    try:
        store = gcp_vtpm_store()
        with warnings.catch_warnings():
            # Google's EK CA names exceed X.520 length limits; cryptography warns, we only print.
            warnings.simplefilter("ignore", UserWarning)
            pinned = store.fingerprints()
    except AnchorError as err:
        return (), str(err)
    roots = {fingerprint(c) for c in store.roots}
    for subject, fp in pinned.items():
        anchors.append(
            AnchorRow(
                store=store.name,
                subject=subject,
                role="root" if fp in roots else "intermediate",
                fingerprint=fp,
            )
        )
    return tuple(anchors), ""


def _pack_place(path: str, sha256: str) -> str:
    """Where a rule pack is: built into the tool, or kept in the run by its hash."""
    if path.startswith("builtin:"):
        return f"built into cc-auditor ({path.removeprefix('builtin:')})"
    return display_path(path, f"evidence/rules/{sha256}.yaml")


def _method(run: AuditRun) -> MethodView:
    anchors, error = _anchor_rows(run)
    sc = run.scope
    scope: list[tuple[str, str]] = [("providers", ", ".join(sc.providers) or "(none)")]
    if sc.accounts:
        scope.append(("accounts", ", ".join(sc.accounts)))
    scope.append(("regions", ", ".join(sc.regions) or "all enabled"))
    for label, value in (
        ("replay", display_path(sc.replay, "raw/ (the recorded responses)")),
        ("endpoint", sc.endpoint_url),
        ("guest evidence", display_path(sc.guest_evidence, "evidence/guest/")),
        ("MAA issuers", ", ".join(sc.maa_issuers)),
        ("MAA signing keys", sc.maa_jwks),
        ("legal data", legal_version()),
    ):
        if value:
            scope.append((label, value))
    return MethodView(
        levels=tuple((lv, LEVEL_MEANING[lv], _level_needs(lv)) for lv in Level),
        statuses=tuple((s, STATUS_LABEL[s], STATUS_MEANING[s]) for s in STATUS_ORDER),
        answers=tuple((a, ANSWER_MEANING[a]) for a in ANSWER_ORDER),
        attestation=tuple((a, ATTESTATION_GRADE[a]) for a in ATTESTATION_ORDER),
        parties=tuple((p, PARTY_LABEL[p], PARTY_WORDS[p], p in PROVIDER_PARTIES) for p in Party),
        rule_packs=tuple(
            (r.name, r.version, r.sha256, _pack_place(r.path, r.sha256), r.rules)
            for r in run.rule_packs
        ),
        tool_name=run.tool.name,
        tool_version=run.tool.version,
        python=run.tool.python,
        dependencies=tuple(sorted(run.tool.dependencies.items())),
        anchors=anchors,
        anchor_error=error,
        scope=tuple(scope),
        evidence_items=len(run.evidence),
        judged_at=_iso(run.judged_at) if run.judged_at else "",
        judged_note=_judged_note(run),
        overrides=tuple(
            OverrideRow(
                rule_id=o.rule_id,
                party=PARTY_LABEL[o.party],
                action=o.action,
                pack=o.pack,
                pack_sha256=o.pack_sha256,
                title=o.title,
                vms=o.vms,
            )
            for o in run.owner_overrides
        ),
        reproduce=(
            "ccaudit scan --replay <run directory>   (re-runs the audit on the recorded responses)",
            "ccaudit report <run directory> --format html,pdf,markdown   (re-renders this report)",
        ),
    )
