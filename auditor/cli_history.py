"""`ccaudit diff`, `ccaudit history`, and the scan's config, baseline, store and gate steps.

Kept apart from `auditor.cli` so the scan command only calls these steps in order:
config -> (scan) -> baseline diff -> seal -> index in the store -> config outputs -> gates.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from auditor import reports
from auditor.config import Config, ConfigError, load_config
from auditor.drift import RunDiff, diff_runs, print_table, render
from auditor.gates import GateResult, Gates, evaluate, exit_code
from auditor.model import AuditRun, Level
from auditor.store import LATEST, RunStore, StoreError

EXIT_USAGE = 2
DIFF_JSON = "diff.json"
DIFF_MD = "diff.md"

err_console = Console(stderr=True)


class DiffFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def _note(message: str) -> None:
    err_console.print(message, highlight=False, soft_wrap=True)


# -- steps of `ccaudit scan` -------------------------------------------------------------------


def load_cli_config(path: Path | None) -> Config | None:
    """The `--config` file, validated (exit 2 with file, line and key on any problem)."""
    if path is None:
        return None
    try:
        return load_config(path)
    except ConfigError as err:
        raise _fail(f"invalid config\n{err}") from err


def run_store(store: Path | None, config: Config | None) -> RunStore:
    """`--store`, else the config's `store`, else $CCAUDIT_HOME or ~/.local/share/ccaudit."""
    if store is not None:
        return RunStore(store)
    if config is not None and config.store is not None:
        return RunStore(config.path(config.store))
    return RunStore()


@dataclass
class Policy:
    """What the scan's flags and config ask for after the run: baseline and gates."""

    gates: Gates
    baseline: str | None
    baseline_run: AuditRun | None = None


def policy(
    config: Config | None,
    *,
    fail_below: str | None,
    fail_on_regression: bool | None,
    max_undetermined: int | None,
    baseline: str | None,
    store: RunStore,
) -> Policy:
    """Flags over config; a named baseline is read now so a typo fails before the scan."""
    t = config.thresholds if config is not None else None
    below = fail_below or (t.fail_below if t else None)
    regression = (
        fail_on_regression if fail_on_regression is not None else bool(t and t.fail_on_regression)
    )
    limit = (
        max_undetermined if max_undetermined is not None else (t.max_undetermined if t else None)
    )
    ref = baseline or (config.baseline if config is not None else None)
    if regression and ref is None:
        raise _fail("--fail-on-regression needs a baseline: --baseline RUN (or `latest`)")
    gates = Gates(
        fail_below=Level(below) if below else None,
        fail_below_scopes={k: Level(v) for k, v in (t.fail_below_scopes if t else {}).items()},
        fail_on_regression=regression,
        max_undetermined=limit,
    )
    chosen = Policy(gates=gates, baseline=ref)
    if ref is not None and ref != LATEST:
        try:
            chosen.baseline_run = store.load(ref)
        except StoreError as err:
            raise _fail(f"--baseline: {err}") from err
    return chosen


def compare(run: AuditRun, chosen: Policy, store: RunStore) -> tuple[RunDiff | None, str | None]:
    """The diff against the baseline (for `latest`: the newest earlier run of this scope)."""
    if chosen.baseline is None:
        return None, None
    base = chosen.baseline_run
    if base is None:
        try:
            base = store.load(store.resolve(LATEST, run.scope, exclude=run.run_id))
        except StoreError as err:
            note = f"baseline latest: {err}; nothing to compare with (first run of this scope)"
            _note(note)
            return None, note
    if base.run_id == run.run_id:
        raise _fail(f"--baseline {chosen.baseline} is this run ({run.run_id})")
    return diff_runs(base, run), None


def write_diff(d: RunDiff, run_dir: Path | None) -> None:
    """Print the diff (stderr) and keep diff.json and diff.md in the run directory."""
    print_table(d, err_console)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / DIFF_JSON).write_text(render(d, "json"), encoding="utf-8")
        (run_dir / DIFF_MD).write_text(render(d, "markdown"), encoding="utf-8")
        _note(f"wrote {run_dir / DIFF_JSON} and {run_dir / DIFF_MD}")


def index(store: RunStore, run: AuditRun, run_dir: Path | None) -> None:
    """Record a saved run in the store's index (a failure is a warning: the run is on disk)."""
    if run_dir is None:
        return
    try:
        store.add(run, run_dir)
    except StoreError as err:
        err_console.print(f"[yellow]warning:[/] run not indexed: {err}", highlight=False)


def write_outputs(run: AuditRun, config: Config | None) -> None:
    """The config's `outputs`: each format to its path (csv and parquet: into a directory)."""
    if config is None:
        return
    for name, target in config.output_paths().items():
        try:
            rendered = reports.render(run, name)
        except reports.ReportError as err:
            err_console.print(f"[yellow]warning:[/] {err}", highlight=False, soft_wrap=True)
            continue
        for rel, data in rendered.items():
            path = target if len(rendered) == 1 else target / Path(rel).name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            _note(f"wrote {path}")


def gate_exit(
    run: AuditRun, chosen: Policy, d: RunDiff | None, note: str | None
) -> tuple[int, list[GateResult]]:
    """Evaluate the gates, print one line each, and the exit code (1 wins over 3)."""
    results = evaluate(run, chosen.gates, d, note)
    for r in results:
        style = "green" if r.passed else "bold red"
        err_console.print(f"[{style}]{r.line()}[/]", highlight=False, soft_wrap=True)
    return exit_code(run, results), results


# -- `ccaudit diff` and `ccaudit history` ------------------------------------------------------


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
    s = run_store(store, None)
    try:
        a, b = s.load(run_a), s.load(run_b)
    except StoreError as err:
        raise _fail(str(err)) from err
    d = diff_runs(a, b)
    text = render(d, fmt.value)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        _note(f"wrote {output}")
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
    s = run_store(store, None)
    try:
        if vm is None:
            records = s.runs(limit=limit)
            if as_json:
                sys.stdout.write(json.dumps([r.as_dict() for r in records], indent=2) + "\n")
                return
            table = Table(title=f"Runs in {s.root}", title_justify="left")
            for col in (
                "run id",
                "started",
                "providers",
                "accounts",
                "VMs",
                "levels",
                "undet.",
                "gaps",
                "complete",
                "manifest",
            ):
                table.add_column(col, overflow="fold", no_wrap=col in ("run id", "started"))
            for r in records:
                table.add_row(
                    r.run_id,
                    r.started_at[:19],
                    ",".join(r.providers),
                    str(len(r.accounts)),
                    str(r.vms),
                    _level_counts(r.levels),
                    str(r.undetermined),
                    str(r.gaps),
                    "yes" if r.complete else "no",
                    (r.manifest_sha256 or "-")[:12],
                )
            Console().print(table)
            return
        entries = s.vm_history(vm)
    except StoreError as err:
        raise _fail(str(err)) from err
    if not entries:
        raise _fail(f"no VM {vm!r} in any run of the store {s.root}")
    if as_json:
        sys.stdout.write(json.dumps([e.as_dict() for e in entries], indent=2) + "\n")
        return
    parties = list(dict.fromkeys(p for e in entries for p in e.parties))
    table = Table(title=f"{vm} over time", title_justify="left")
    for col in ("run id", "started", "VM", "technology", "level", *parties):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(
            e.run_id,
            e.started_at[:19],
            e.vm_key,
            e.technology,
            e.level,
            *(e.parties.get(p, "-") for p in parties),
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("diff")(diff_cmd)
    app.command("history")(history_cmd)


__all__: Sequence[str] = (
    "compare",
    "gate_exit",
    "index",
    "load_cli_config",
    "policy",
    "register",
    "run_store",
    "write_diff",
    "write_outputs",
)
