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
PARTY_HEADER: dict[Party, str] = {
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


def _vm_table(run: AuditRun) -> Table:
    table = Table(title=f"cc-auditor run {run.run_id}", title_justify="left", expand=False)
    for col in ("cloud", "account", "region", "vm", "type", "tech", "level"):
        table.add_column(col, no_wrap=col in ("account", "vm", "level"))
    for party in Party:
        table.add_column(PARTY_HEADER[party], justify="center")
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


def _gaps(run: AuditRun) -> Table | Text:
    if not run.coverage.gaps:
        return Text("Coverage: complete — every scope was read.", style="green")
    table = Table(title="Coverage gaps (not seen, not assumed)", title_justify="left")
    for col in ("scope", "call", "error", "affects", "message"):
        table.add_column(col, overflow="fold")
    for gap in run.coverage.gaps:
        scope = "/".join(x for x in (gap.provider, gap.account, gap.region) if x)
        what = "whole scope" if gap.affects == "scope" else (gap.resource or "VM facts")
        table.add_row(scope, gap.call, gap.code, what, gap.message)
    return table


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
    return text


def render_table(run: AuditRun) -> Group:
    """The renderable shown by `ccaudit scan --format table`."""
    return Group(_vm_table(run), Text(""), _gaps(run), Text(""), _summary(run))


def print_table(run: AuditRun, console: Console) -> None:
    console.print(render_table(run))
