"""Terminal report: one row per VM with its level and every party, then gaps and a summary.

Rendered with rich so colours mark status; the same text stays readable without colour
(CI logs), because each status is also spelled out as a short code.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from auditor.assurance import LEVEL_MEANING
from auditor.model import AuditRun, Level, Party, Status
from auditor.reports.view import PARTY_SHORT

STATUS_CODE: dict[Status, tuple[str, str]] = {
    Status.CAN_ACCESS: ("CAN", "bold red"),
    Status.CLAIMED_EXCLUDED: ("claim", "yellow"),
    Status.EXCLUDED: ("EXCL", "bold green"),
    Status.UNDETERMINED: ("?", "magenta"),
}
LEVEL_STYLE: dict[Level, str] = {
    Level.L0: "bold red",
    Level.L1: "yellow",
    Level.L2: "cyan",
    Level.L3: "green",
    Level.L4: "bold green",
}


def _vm_table(run: AuditRun) -> Table:
    table = Table(title=f"cc-auditor run {run.run_id}", title_justify="left", expand=False)
    for col in ("cloud", "account", "region", "vm", "type", "tech", "level"):
        table.add_column(col, no_wrap=col in ("account", "vm", "level"))
    for party in Party:
        table.add_column(PARTY_SHORT[party], justify="center")
    table.add_column("provider can read", justify="center")
    for vm in run.vms:
        label = vm.id if not vm.name else f"{vm.name}\n{vm.id}"
        cells: list[Text | str] = [
            vm.provider,
            vm.account,
            vm.region,
            label,
            vm.instance_type or "?",
            vm.technology.value,
            Text(vm.level.value, style=LEVEL_STYLE[vm.level]),
        ]
        for party in Party:
            code, style = STATUS_CODE[vm.parties[party]]
            cells.append(Text(code, style=style))
        answer = vm.gdpr.provider_can_access.value
        style = {"yes": "bold red", "no": "bold green"}.get(answer, "magenta")
        cells.append(Text(answer, style=style))
        table.add_row(*cells)
    return table


def _vm_table_compact(run: AuditRun) -> Table:
    """Narrow terminals and CI logs: parties not shut out listed by status, not as a matrix."""
    table = Table(title=f"cc-auditor run {run.run_id}", title_justify="left")
    table.add_column("vm", no_wrap=True)
    table.add_column("tech")
    table.add_column("level", no_wrap=True)
    table.add_column("parties not excluded", overflow="fold")
    table.add_column("provider\ncan read", no_wrap=True)
    for vm in run.vms:
        lines = [
            vm.name or vm.id,
            vm.id if vm.name else "",
            f"{vm.provider} {vm.account}",
            vm.region,
        ]
        label = "\n".join(x for x in lines if x)
        by_status: dict[Status, list[str]] = {}
        for party in Party:
            by_status.setdefault(vm.parties[party], []).append(PARTY_SHORT[party])
        parts = Text()
        for status in (Status.CAN_ACCESS, Status.UNDETERMINED, Status.CLAIMED_EXCLUDED):
            if by_status.get(status):
                code, style = STATUS_CODE[status]
                parts.append(f"{code}: ", style=style)
                parts.append(" ".join(by_status[status]) + "\n")
        parts.rstrip()
        answer = vm.gdpr.provider_can_access.value
        style = {"yes": "bold red", "no": "bold green"}.get(answer, "magenta")
        table.add_row(
            label,
            f"{vm.technology.value}\n{vm.instance_type or '?'}",
            Text(vm.level.value, style=LEVEL_STYLE[vm.level]),
            parts,
            Text(answer, style=style),
        )
    return table


def _gaps(run: AuditRun) -> Text:
    """One entry per gap, plain enough to grep in a CI log."""
    if not run.coverage.gaps:
        return Text("Coverage: complete — every scope was read.", style="green")
    text = Text("Coverage gaps (not seen, not assumed):\n", style="bold yellow")
    for gap in run.coverage.gaps:
        scope = "/".join(x for x in (gap.provider, gap.account, gap.region) if x)
        what = "whole scope" if gap.affects == "scope" else (gap.resource or "some VM facts")
        text.append(f"  - {scope}: {gap.call} {gap.code} ({what})\n", style="yellow")
        text.append(f"      {gap.message}\n", style="dim")
    return text


def _summary(run: AuditRun) -> Text:
    counts = run.level_counts()
    text = Text()
    text.append(f"{len(run.vms)} VMs. ", style="bold")
    for level in Level:
        text.append(f"{level.value}: {counts[level]}  ", style=LEVEL_STYLE[level])
    text.append("\n")
    for level in Level:
        if counts[level]:
            text.append(f"  {level.value} = {LEVEL_MEANING[level]}\n", style="dim")
    text.append(
        "Legend: CAN = can reach the plaintext; claim = provider says excluded, not verified; "
        "EXCL = excluded by owner-verified hardware evidence; ? = undetermined "
        "(evidence missing).",
        style="dim",
    )
    for o in run.owner_overrides:
        text.append(
            f"\nOwner override: built-in veto {o.rule_id} ({o.party.value}) {o.action} by pack "
            f"{o.pack}; it changed {o.vms} VM(s), each at most 'claim' for that party.",
            style="bold magenta",
        )
    if run.judged_at is not None and run.scope.replay:
        text.append(f"\nJudged at {run.judged_at.isoformat()} (the replay's recording time).")
    return text


#: Below this terminal width the party matrix does not fit; use the compact layout.
WIDE_MIN_COLUMNS = 150


def render_table(run: AuditRun, width: int = 200) -> Group:
    """The renderable shown by `ccaudit scan --format table`."""
    vms = _vm_table(run) if width >= WIDE_MIN_COLUMNS else _vm_table_compact(run)
    return Group(vms, Text(""), _gaps(run), Text(""), _summary(run))


def print_table(run: AuditRun, console: Console) -> None:
    console.print(render_table(run, console.width))
