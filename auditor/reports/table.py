"""Terminal report: one row per VM with its level and every party, then gaps and a summary.

Rendered with rich so colours mark status; the same text stays readable without colour
(CI logs), because each status is also spelled out as a short code.
"""

from __future__ import annotations

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from auditor.assurance import LEVEL_MEANING
from auditor.model import AuditRun, Level, Party, Status
from auditor.reports.view import PARTY_LABEL, PARTY_SHORT

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
    """Wide terminals: one row per VM, a column per party (names only: ids are in the JSON)."""
    table = Table(
        title=f"cc-auditor run {run.run_id}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
    )
    for col in ("vm", "account", "region", "tech", "level"):
        table.add_column(col, no_wrap=True)
    for party in Party:
        table.add_column(PARTY_SHORT[party], justify="center", no_wrap=True)
    table.add_column("provider can read", justify="center", no_wrap=True)
    for vm in run.vms:
        cells: list[Text | str] = [
            vm.name or vm.id,
            f"{vm.provider} {vm.account}",
            vm.region,
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


def _vm_blocks(run: AuditRun) -> Group:
    """Narrow terminals and CI logs (80 columns first): one block of whole-word lines per VM.

    Line 1: level, the reading, the VM's name and where it runs; line 2: its id, type and
    technology; line 3: its parties grouped by status. Lines wrap between words only.
    """
    parts: list[Text] = [Text(f"cc-auditor run {run.run_id}", style="bold")]
    for vm in run.vms:
        answer = vm.gdpr.provider_can_access.value
        head = Text()
        head.append(f"{vm.level.value} ", style=LEVEL_STYLE[vm.level])
        head.append(
            f"{answer:<12}", style={"yes": "bold red", "no": "bold green"}.get(answer, "magenta")
        )
        head.append(vm.name or vm.id, style="bold")
        head.append(f"  {vm.provider} {vm.account} {vm.region}")
        detail = [vm.id] if vm.name else []
        detail += [vm.instance_type or "type ?", vm.technology.value]
        lines = [head, Text("   " + "  ".join(detail))]
        by_status: dict[Status, list[str]] = {}
        for party in Party:
            by_status.setdefault(vm.parties[party], []).append(PARTY_SHORT[party])
        statuses = Text("  ")
        for status in (
            Status.CAN_ACCESS,
            Status.UNDETERMINED,
            Status.CLAIMED_EXCLUDED,
            Status.EXCLUDED,
        ):
            if by_status.get(status):
                code, style = STATUS_CODE[status]
                statuses.append(f" {code}:", style=style)
                statuses.append(" " + " ".join(by_status[status]))
        lines.append(statuses)
        parts.append(Text(""))
        parts.extend(lines)
    return Group(*parts)


def _gaps(run: AuditRun) -> Text:
    """One entry per gap, plain enough to grep in a CI log."""
    if not run.coverage.gaps:
        return Text("Coverage: complete — every scope was read.", style="green")
    text = Text("Coverage gaps (not seen, not assumed):\n", style="bold yellow")
    for gap in run.coverage.gaps:
        scope = "/".join(x for x in (gap.provider, gap.account, gap.region) if x)
        what = gap.describe()
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
        "(evidence missing). Parties: "
        + "; ".join(f"{PARTY_SHORT[p]} = {PARTY_LABEL[p]}" for p in Party)
        + ".",
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


#: Below this terminal width the party matrix does not fit; VMs are printed as blocks.
WIDE_MIN_COLUMNS = 170


def render_table(run: AuditRun, width: int = 200) -> Group:
    """The renderable shown by `ccaudit scan --format table` at this terminal width."""
    table = _vm_table(run) if width >= WIDE_MIN_COLUMNS else None
    wide = table is not None and _natural_width(table) <= width
    vms = table if wide and table is not None else _vm_blocks(run)
    return Group(vms, Text(""), _gaps(run), Text(""), _summary(run))


def _natural_width(table: Table) -> int:
    """Columns the wide table needs with every cell whole, as rich measures it."""
    from rich.measure import Measurement

    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum


def print_table(run: AuditRun, console: Console) -> None:
    console.print(render_table(run, console.width))
