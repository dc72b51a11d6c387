"""The steps around a scan: config, store, baseline, diff, index, config outputs, gates.

The scan command calls them in order: config -> (scan) -> baseline diff -> seal -> index in
the store -> config outputs -> gates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auditor import reports
from auditor.cli.common import err_console, fail, note
from auditor.config import Config, ConfigError, load_config
from auditor.model import AuditRun, Level
from auditor.runs.drift import RunDiff, diff_runs, print_table, render
from auditor.runs.gates import GateResult, Gates, evaluate, exit_code
from auditor.runs.store import LATEST, RunStore, StoreError

DIFF_JSON = "diff.json"
DIFF_MD = "diff.md"


# -- steps of `ccaudit scan` -------------------------------------------------------------------


def load_cli_config(path: Path | None) -> Config | None:
    """The `--config` file, validated (exit 2 with file, line and key on any problem)."""
    if path is None:
        return None
    try:
        config = load_config(path)
    except ConfigError as err:
        raise fail(f"invalid config\n{err}") from err
    if config.is_empty:
        err_console.print(
            f"[yellow]warning:[/] config {path} is empty: it sets nothing (docs/config.md)",
            highlight=False,
            soft_wrap=True,
        )
    return config


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
        raise fail("--fail-on-regression needs a baseline: --baseline RUN (or `latest`)")
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
            raise fail(f"--baseline: {err}") from err
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
            why = f"baseline latest: {err}; nothing to compare with (first run of this scope)"
            note(why)
            return None, why
    if base.run_id == run.run_id:
        raise fail(f"--baseline {chosen.baseline} is this run ({run.run_id})")
    return diff_runs(base, run), None


def write_diff(d: RunDiff, run_dir: Path | None) -> None:
    """Print the diff (stderr) and keep diff.json and diff.md in the run directory."""
    print_table(d, err_console)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / DIFF_JSON).write_text(render(d, "json"), encoding="utf-8")
        (run_dir / DIFF_MD).write_text(render(d, "markdown"), encoding="utf-8")
        note(f"wrote {run_dir / DIFF_JSON} and {run_dir / DIFF_MD}")


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
            rendered = reports.writers(run, name)
        except reports.ReportError as err:
            err_console.print(f"[yellow]warning:[/] {err}", highlight=False, soft_wrap=True)
            continue
        for rel, write_file in rendered.items():
            path = target if len(rendered) == 1 else target / Path(rel).name
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                write_file(out)
            note(f"wrote {path}")


def gate_exit(
    run: AuditRun, chosen: Policy, d: RunDiff | None, why: str | None
) -> tuple[int, list[GateResult]]:
    """Evaluate the gates, print one line each, and the exit code (1 wins over 3)."""
    results = evaluate(run, chosen.gates, d, why)
    for r in results:
        style = "green" if r.passed else "bold red"
        err_console.print(f"[{style}]{r.line()}[/]", highlight=False, soft_wrap=True)
    return exit_code(run, results), results
