"""`ccaudit diff` and `ccaudit history`: runs in the store, compared and listed."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from auditor.cli.common import fail, note


class DiffFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


StoreOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="DIR",
        help="Run store (default: $CCAUDIT_HOME or ~/.local/share/ccaudit).",
    ),
]


def diff_cmd(
    run_a: Annotated[str, typer.Argument(help="Baseline: run directory, run id or `latest`.")],
    run_b: Annotated[str, typer.Argument(help="Later run: run directory, run id or `latest`.")],
    fmt: Annotated[DiffFormat, typer.Option("--format", help="table, json or markdown.")] = (
        DiffFormat.table
    ),
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of stdout.")
    ] = None,
    fail_on_regression: Annotated[
        bool,
        typer.Option("--fail-on-regression", help="Exit 1 if anything is worse than RUN_A."),
    ] = False,
    store: StoreOpt = None,
) -> None:
    """Compare two runs: VMs added or removed, level and party changes, new or resolved findings."""
    from rich.console import Console

    from auditor.cli.steps import Policy, gate_exit, run_store
    from auditor.runs.drift import diff_runs, print_table, render
    from auditor.runs.gates import Gates
    from auditor.runs.store import StoreError

    s = run_store(store, None)
    try:
        a, b = s.load(run_a), s.load(run_b)
    except StoreError as err:
        raise fail(str(err)) from err
    d = diff_runs(a, b)
    text = render(d, fmt.value)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        note(f"wrote {output}")
    elif fmt is DiffFormat.table:
        print_table(d, Console())
    else:
        sys.stdout.write(text)
    if fail_on_regression:
        code, _ = gate_exit(b, Policy(Gates(fail_on_regression=True), run_a), d, None)
        raise typer.Exit(1 if code == 1 else 0)


def _level_counts(levels: dict[str, int]) -> str:
    return " ".join(f"{lv}:{n}" for lv, n in levels.items() if n) or "-"


def history_cmd(
    vm: Annotated[
        str | None,
        typer.Argument(help="A VM id, name or provider/account/region/id: its history."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Most recent runs to list.")] = 50,
    store: StoreOpt = None,
) -> None:
    """List the runs in the store, or one VM's level and party statuses over time."""
    from rich.console import Console
    from rich.text import Text

    from auditor.cli.steps import run_store
    from auditor.runs.store import StoreError

    s = run_store(store, None)
    try:
        if vm is None:
            records = s.runs(limit=limit)
            if as_json:
                sys.stdout.write(json.dumps([r.as_dict() for r in records], indent=2) + "\n")
                return
            console = Console()
            console.print(Text(f"Runs in {s.root}", style="bold"))
            if not records:
                note(
                    f"no runs in {s.root} yet: `ccaudit scan` and `ccaudit demo` keep theirs "
                    "there (--store or $CCAUDIT_HOME to use another store)"
                )
            for r in records:
                console.print(Text(""))
                head = Text()
                head.append(r.run_id, style="bold")
                head.append(
                    f"  {r.started_at[:19]}  {','.join(r.providers)}  "
                    f"{len(r.accounts)} accounts  {r.vms} VMs"
                )
                console.print(head)
                console.print(
                    Text(
                        f"   levels {_level_counts(r.levels)}  undetermined {r.undetermined}  "
                        f"gaps {r.gaps}  complete {'yes' if r.complete else 'no'}  "
                        f"manifest {(r.manifest_sha256 or '-')[:12]}"
                    )
                )
            return
        entries = s.vm_history(vm)
    except StoreError as err:
        raise fail(str(err)) from err
    if not entries:
        raise fail(f"no VM {vm!r} in any run of the store {s.root}")
    if as_json:
        sys.stdout.write(json.dumps([e.as_dict() for e in entries], indent=2) + "\n")
        return
    console = Console()
    console.print(Text(f"{vm} over time", style="bold"))
    for e in entries:
        console.print(Text(""))
        head = Text()
        head.append(f"{e.started_at[:19]}  {e.level}", style="bold")
        head.append(f"  {e.technology}  {e.vm_key}  run {e.run_id}")
        console.print(head)
        console.print(Text("   " + "  ".join(f"{p} {st}" for p, st in e.parties.items())))


def register(app: typer.Typer) -> None:
    app.command("diff")(diff_cmd)
    app.command("history")(history_cmd)
