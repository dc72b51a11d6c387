"""Drift between two runs: what changed in the fleet, and whether anything got worse.

A scheduled scan is only useful if someone notices when a VM loses SEV-SNP or a party that was
shut out is back in. `diff_runs(a, b)` compares a baseline `a` with a later run `b` VM by VM
(identity: `VM.key`, provider/account/region/id): VMs added and removed, level changes, party
status changes, and findings that appeared or were resolved on VMs present in both (an added or
removed VM is one line, not a list of its findings). It renders as a terminal table, JSON, and
GitHub-flavoured Markdown for a pull-request comment or a CI job summary.

What counts as *worse* (the `--fail-on-regression` gate):

* a level that fell (L3 -> L1);
* a party status that moved down this order, best first:
  EXCLUDED > CLAIMED_EXCLUDED > UNDETERMINED > CAN_ACCESS.
  UNDETERMINED sits below CLAIMED_EXCLUDED because missing evidence is never a pass: a party that
  the provider at least claimed to shut out and that can no longer be judged (a permission was
  revoked, a log stopped) is a regression the gate must catch. It sits above CAN_ACCESS because
  nothing shows the party can reach the data; so UNDETERMINED -> CAN_ACCESS is worse too (the run
  now shows access where it showed none).

A VM that disappears is not a regression (it may have been deleted; the diff lists it), and a new
VM has no baseline to regress from (`--fail-below` judges it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from auditor.model import AuditRun, Finding, Level, Party, Status, VMResult
from auditor.reports.markdown import md_code, md_text

__all__ = [
    "STATUS_RANK",
    "FindingChange",
    "LevelChange",
    "PartyChange",
    "RunDiff",
    "VMChange",
    "diff_runs",
    "is_worse",
    "render_json",
    "render_markdown",
    "render_table",
]

#: Party statuses from worst (0) to best; see the module docstring for why in this order.
STATUS_RANK: dict[Status, int] = {
    Status.CAN_ACCESS: 0,
    Status.UNDETERMINED: 1,
    Status.CLAIMED_EXCLUDED: 2,
    Status.EXCLUDED: 3,
}
FORMATS = ("table", "json", "markdown")
_SECTIONS = ("added", "removed", "levels", "parties", "new_findings", "resolved_findings")
#: Rows per section in Markdown: a PR comment is capped at 65,536 characters.
MARKDOWN_ROWS = 50


def is_worse(before: Status, after: Status) -> bool:
    return STATUS_RANK[after] < STATUS_RANK[before]


@dataclass(frozen=True)
class VMChange:
    """A VM added or removed."""

    key: str
    name: str | None
    level: Level
    technology: str
    pool: str | None = None  # `cluster/node pool` of a Kubernetes node


@dataclass(frozen=True)
class LevelChange:
    key: str
    name: str | None
    before: Level
    after: Level
    reason: str
    pool: str | None = None

    @property
    def worse(self) -> bool:
        return self.after.rank < self.before.rank


@dataclass(frozen=True)
class PartyChange:
    key: str
    name: str | None
    party: Party
    before: Status
    after: Status
    reason: str
    pool: str | None = None

    @property
    def worse(self) -> bool:
        return is_worse(self.before, self.after)


@dataclass(frozen=True)
class FindingChange:
    key: str
    name: str | None
    rule_id: str
    party: Party
    status: Status
    severity: str
    title: str
    pool: str | None = None


@dataclass(frozen=True)
class RunRef:
    run_id: str
    started_at: str
    vms: int


@dataclass(frozen=True)
class RunDiff:
    """Baseline `a` -> run `b`."""

    a: RunRef
    b: RunRef
    added: tuple[VMChange, ...] = ()
    removed: tuple[VMChange, ...] = ()
    levels: tuple[LevelChange, ...] = ()
    parties: tuple[PartyChange, ...] = ()
    new_findings: tuple[FindingChange, ...] = ()
    resolved_findings: tuple[FindingChange, ...] = ()
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return any(getattr(self, s) for s in _SECTIONS)

    @property
    def regressions(self) -> tuple[LevelChange | PartyChange, ...]:
        """Every level that fell and every party status that got worse."""
        changes: list[LevelChange | PartyChange] = [*self.levels, *self.parties]
        return tuple(c for c in changes if c.worse)

    def _repr_markdown_(self) -> str:
        return render_markdown(self)

    def changed_vms(self) -> set[str]:
        return {c.key for s in _SECTIONS for c in getattr(self, s)}

    def as_dict(self) -> dict[str, Any]:
        def vm(c: VMChange) -> dict[str, Any]:
            return {
                "vm": c.key,
                "name": c.name,
                "node_pool": c.pool,
                "level": c.level.value,
                "technology": c.technology,
            }

        def finding(c: FindingChange) -> dict[str, Any]:
            return {
                "vm": c.key,
                "name": c.name,
                "node_pool": c.pool,
                "rule_id": c.rule_id,
                "party": c.party.value,
                "status": c.status.value,
                "severity": c.severity,
                "title": c.title,
            }

        return {
            "baseline": {
                "run_id": self.a.run_id,
                "started_at": self.a.started_at,
                "vms": self.a.vms,
            },
            "run": {"run_id": self.b.run_id, "started_at": self.b.started_at, "vms": self.b.vms},
            "summary": {
                "added": len(self.added),
                "removed": len(self.removed),
                "level_changes": len(self.levels),
                "party_changes": len(self.parties),
                "new_findings": len(self.new_findings),
                "resolved_findings": len(self.resolved_findings),
                "regressions": len(self.regressions),
                "unchanged_vms": self.unchanged,
            },
            "added": [vm(c) for c in self.added],
            "removed": [vm(c) for c in self.removed],
            "level_changes": [
                {
                    "vm": c.key,
                    "name": c.name,
                    "node_pool": c.pool,
                    "from": c.before.value,
                    "to": c.after.value,
                    "worse": c.worse,
                    "reason": c.reason,
                }
                for c in self.levels
            ],
            "party_changes": [
                {
                    "vm": c.key,
                    "name": c.name,
                    "node_pool": c.pool,
                    "party": c.party.value,
                    "from": c.before.value,
                    "to": c.after.value,
                    "worse": c.worse,
                    "reason": c.reason,
                }
                for c in self.parties
            ],
            "new_findings": [finding(c) for c in self.new_findings],
            "resolved_findings": [finding(c) for c in self.resolved_findings],
            "by_node_pool": self.by_node_pool(),
        }

    def by_node_pool(self) -> dict[str, dict[str, int]]:
        """Changes counted per Kubernetes `cluster/node pool` (nodes only), for platform teams
        who own pools rather than VMs: {pool: {section: count, "regressions": n}}."""
        out: dict[str, dict[str, int]] = {}
        for section in _SECTIONS:
            for change in getattr(self, section):
                if change.pool is not None:
                    counts = out.setdefault(change.pool, {})
                    counts[section] = counts.get(section, 0) + 1
        for change in self.regressions:
            if change.pool is not None:
                counts = out.setdefault(change.pool, {})
                counts["regressions"] = counts.get("regressions", 0) + 1
        return dict(sorted(out.items()))


_PARTY_ORDER = {p: i for i, p in enumerate(Party)}


def _finding_key(f: Finding) -> tuple[str, str, str]:
    return (f.rule_id, f.party.value, f.status.value)


def _findings(vm: VMResult) -> dict[tuple[str, str, str], Finding]:
    return {_finding_key(f): f for f in vm.findings}


def _vm_change(vm: VMResult) -> VMChange:
    return VMChange(vm.key, vm.name, vm.level, vm.technology.value, vm.pool_label)


def _finding_change(vm: VMResult, f: Finding) -> FindingChange:
    return FindingChange(
        vm.key, vm.name, f.rule_id, f.party, f.status, f.severity.value, f.title, vm.pool_label
    )


def _party_reason(vm: VMResult, party: Party) -> str:
    ps = vm.party_status.get(party)
    return ps.reason if ps is not None else ""


def diff_runs(a: AuditRun, b: AuditRun) -> RunDiff:
    """What changed from baseline `a` to run `b`."""
    # each VM's place, not the VM: a stored run (auditor.runs.spool) reads one when asked, so
    # comparing two large runs holds neither whole
    old = {vm.key: n for n, vm in enumerate(a.vms)}
    new = {vm.key: n for n, vm in enumerate(b.vms)}
    added = tuple(_vm_change(b.vms[new[k]]) for k in sorted(new.keys() - old.keys()))
    removed = tuple(_vm_change(a.vms[old[k]]) for k in sorted(old.keys() - new.keys()))
    levels: list[LevelChange] = []
    parties: list[PartyChange] = []
    appeared: list[FindingChange] = []
    resolved: list[FindingChange] = []
    unchanged = 0
    for key in sorted(old.keys() & new.keys()):
        before, after = a.vms[old[key]], b.vms[new[key]]
        touched = False
        if before.level is not after.level:
            levels.append(
                LevelChange(
                    key, after.name, before.level, after.level, after.level_reason, after.pool_label
                )
            )
            touched = True
        for party in sorted(set(before.parties) | set(after.parties), key=_PARTY_ORDER.__getitem__):
            was = before.parties.get(party, Status.UNDETERMINED)
            now = after.parties.get(party, Status.UNDETERMINED)
            if was is not now:
                parties.append(
                    PartyChange(
                        key,
                        after.name,
                        party,
                        was,
                        now,
                        _party_reason(after, party),
                        after.pool_label,
                    )
                )
                touched = True
        f_old, f_new = _findings(before), _findings(after)
        for fk in sorted(f_new.keys() - f_old.keys()):
            appeared.append(_finding_change(after, f_new[fk]))
            touched = True
        for fk in sorted(f_old.keys() - f_new.keys()):
            resolved.append(_finding_change(before, f_old[fk]))
            touched = True
        unchanged += not touched
    return RunDiff(
        a=RunRef(a.run_id, a.started_at.isoformat(), len(a.vms)),
        b=RunRef(b.run_id, b.started_at.isoformat(), len(b.vms)),
        added=added,
        removed=removed,
        levels=tuple(levels),
        parties=tuple(parties),
        new_findings=tuple(appeared),
        resolved_findings=tuple(resolved),
        unchanged=unchanged,
    )


# -- rendering -------------------------------------------------------------------------------


def render_json(d: RunDiff) -> str:
    return json.dumps(d.as_dict(), indent=2) + "\n"


def _label(key: str, name: str | None) -> str:
    return f"{name} ({key})" if name and name not in key else key


def _summary_line(d: RunDiff) -> str:
    parts = [
        f"{len(d.added)} added",
        f"{len(d.removed)} removed",
        f"{len(d.levels)} level changes",
        f"{len(d.parties)} party status changes",
        f"{len(d.new_findings)} new findings",
        f"{len(d.resolved_findings)} resolved findings",
    ]
    worse = len(d.regressions)
    return ", ".join(parts) + f"; {worse} regression{'s' if worse != 1 else ''}"


def _direction(worse: bool) -> Text:
    return Text("worse", style="bold red") if worse else Text("better", style="green")


def render_table(d: RunDiff, width: int = 160) -> Group:
    """Rich renderables for the terminal."""
    items: list[Any] = [
        Text(f"drift {d.a.run_id} -> {d.b.run_id}: {_summary_line(d)}", style="bold")
    ]
    if not d.changed:
        items.append(Text(f"no change in {d.unchanged} VMs"))
        return Group(*items)
    if d.added or d.removed:
        t = Table(title="VMs added or removed", title_justify="left")
        for col in ("", "vm", "level", "technology"):
            t.add_column(col, overflow="fold")
        for sign, vms in (("+", d.added), ("-", d.removed)):
            for c in vms:
                t.add_row(sign, _label(c.key, c.name), c.level.value, c.technology)
        items.append(t)
    if d.levels or d.parties:
        t = Table(title="Level and party changes", title_justify="left")
        for col in ("vm", "what", "from", "to", "", "reason"):
            t.add_column(col, overflow="fold")
        for lc in d.levels:
            mark = _direction(lc.worse)
            t.add_row(
                _label(lc.key, lc.name), "level", lc.before.value, lc.after.value, mark, lc.reason
            )
        for pc in d.parties:
            mark = _direction(pc.worse)
            t.add_row(
                _label(pc.key, pc.name),
                pc.party.value,
                pc.before.value,
                pc.after.value,
                mark,
                pc.reason,
            )
        items.append(t)
    if d.new_findings or d.resolved_findings:
        t = Table(title="Findings", title_justify="left")
        for col in ("", "vm", "rule", "party", "status", "title"):
            t.add_column(col, overflow="fold")
        for what, found in (("new", d.new_findings), ("resolved", d.resolved_findings)):
            for fc in found:
                t.add_row(
                    what,
                    _label(fc.key, fc.name),
                    fc.rule_id,
                    fc.party.value,
                    fc.status.value,
                    fc.title,
                )
        items.append(t)
    return Group(*items)


def print_table(d: RunDiff, console: Console) -> None:
    console.print(render_table(d))


def _md_rows(rows: Iterable[str], header: str, total: int) -> list[str]:
    out = [header]
    shown = 0
    for row in rows:
        if shown == MARKDOWN_ROWS:
            break
        out.append(row)
        shown += 1
    if total > shown:
        out.append(f"\n…and {total - shown} more (see diff.json).")
    return out


def _md_vm(key: str, name: str | None) -> str:
    if name and name not in key:
        return f"{md_code(name, in_table=True)} {md_code(key, in_table=True)}"
    return md_code(key, in_table=True)


def render_markdown(d: RunDiff) -> str:
    """GitHub-flavoured Markdown, regressions first; cloud text escaped or in code spans."""
    lines = [
        f"### cc-auditor drift: {md_code(d.a.run_id)} → {md_code(d.b.run_id)}",
        "",
        md_text(_summary_line(d)) + ".",
        "",
    ]
    if not d.changed:
        lines.append(f"No change in {d.unchanged} VMs.")
        return "\n".join(lines) + "\n"
    worse = d.regressions
    if worse:
        lines.append(f"**Worse than the baseline ({len(worse)}):**")
        lines.append("")
        for c in worse[:MARKDOWN_ROWS]:
            what = "level" if isinstance(c, LevelChange) else c.party.value
            lines.append(f"- {_md_vm(c.key, c.name)}: {what} {c.before.value} → {c.after.value}")
        if len(worse) > MARKDOWN_ROWS:
            lines.append(f"- …and {len(worse) - MARKDOWN_ROWS} more")
        lines.append("")
    pools = d.by_node_pool()
    if pools:
        lines.append("#### By Kubernetes node pool")
        lines.append("")
        rows = [
            f"| {md_code(pool)} | {counts.get('regressions', 0)} | "
            f"{counts.get('added', 0)} / {counts.get('removed', 0)} | "
            f"{counts.get('levels', 0) + counts.get('parties', 0)} | "
            f"{counts.get('new_findings', 0)} / {counts.get('resolved_findings', 0)} |"
            for pool, counts in pools.items()
        ]
        header = (
            "| cluster/node pool | worse | nodes added / removed | level and party changes | "
            "findings new / resolved |\n|---|--:|--:|--:|--:|"
        )
        lines += _md_rows(rows, header, len(rows))
        lines.append("")
    if d.added or d.removed:
        lines.append("#### VMs added or removed")
        lines.append("")
        rows = [
            f"| {mark} | {_md_vm(c.key, c.name)} | {c.level.value} | {md_code(c.technology)} |"
            for mark, group in (("added", d.added), ("removed", d.removed))
            for c in group
        ]
        lines += _md_rows(rows, "| | VM | level | technology |\n|---|---|---|---|", len(rows))
        lines.append("")
    if d.levels or d.parties:
        lines.append("#### Level and party changes")
        lines.append("")
        rows = [
            f"| {_md_vm(c.key, c.name)} | level | {c.before.value} | {c.after.value} | "
            f"{'worse' if c.worse else 'better'} |"
            for c in d.levels
        ] + [
            f"| {_md_vm(c.key, c.name)} | {c.party.value} | {c.before.value} | {c.after.value} | "
            f"{'worse' if c.worse else 'better'} |"
            for c in d.parties
        ]
        lines += _md_rows(rows, "| VM | what | from | to | |\n|---|---|---|---|---|", len(rows))
        lines.append("")
    if d.new_findings or d.resolved_findings:
        lines.append("#### Findings")
        lines.append("")
        rows = [
            f"| {mark} | {_md_vm(c.key, c.name)} | {md_code(c.rule_id, in_table=True)} | "
            f"{c.party.value} | {c.status.value} |"
            for mark, group in (("new", d.new_findings), ("resolved", d.resolved_findings))
            for c in group
        ]
        lines += _md_rows(
            rows, "| | VM | rule | party | status |\n|---|---|---|---|---|", len(rows)
        )
        lines.append("")
    return "\n".join(lines)


def render(d: RunDiff, fmt: str) -> str:
    """One of `FORMATS` as text (the table without colour)."""
    if fmt == "json":
        return render_json(d)
    if fmt == "markdown":
        return render_markdown(d)
    if fmt == "table":
        import io

        buf = io.StringIO()
        Console(file=buf, width=160, color_system=None).print(render_table(d))
        return buf.getvalue()
    raise ValueError(f"unknown diff format {fmt!r} (known: {', '.join(FORMATS)})")
