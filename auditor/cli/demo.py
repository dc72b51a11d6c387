"""`ccaudit demo`: the embedded demo fleet, scanned end to end through the real SDK paths."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from auditor.cli.common import EXIT_INCOMPLETE, err_console, exit_code, fail, note, writable_dir
from auditor.cli.outputs import emit, seal
from auditor.cli.scan import _locked, run_scan
from auditor.demo_fleet import MAA_ISSUER, fleet_dir, scan_options

#: What `ccaudit demo` writes besides the terminal table.
DEMO_FORMATS = ["table", "json", "html", "pdf", "csv", "markdown"]
#: Kept for callers of the CLI module; the definitions live in auditor.demo_fleet.
DEMO_MAA_ISSUER = MAA_ISSUER
demo_fleet_dir = fleet_dir


def demo_cmd(
    out: Annotated[
        Path, typer.Option(help="Directory for the demo run (raw/, result.json, reports).")
    ] = Path("ccaudit-demo"),
    store: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Run store that indexes the demo run, so `ccaudit history` and "
            '`auditor.load_run("latest")` find it (default: $CCAUDIT_HOME or '
            "~/.local/share/ccaudit).",
        ),
    ] = None,
) -> None:
    """Audit the embedded demo fleet: fakecloud + the real cloud SDK code paths, end to end."""
    from auditor.cli import steps
    from auditor.runs.store import StoreError

    try:
        fleet = fleet_dir()
    except FileNotFoundError as err:
        raise fail(str(err)) from err
    writable_dir(out.parent if out.parent != Path("") else Path("."), "--out")
    run_store = steps.run_store(store, None)
    with _locked(out):
        previous = _previous_demo(out)
        note(f"Serving the demo fleet ({fleet}) on 127.0.0.1; scanning it with the real SDKs…")
        with tempfile.TemporaryDirectory(prefix="ccaudit-demo-state-") as state:
            run = run_scan(
                providers=[],
                run_dir=out,
                concurrency=8,
                **scan_options(Path(state), fleet),
            )
        emit(run, DEMO_FORMATS, None, out)
        seal(out, run, None)
        if previous is not None:
            with contextlib.suppress(StoreError):
                run_store.remove(previous)  # the replaced demo run is gone from disk
        steps.index(run_store, run, out)
    code = exit_code(run, None)
    err_console.print(
        f"\nThe demo run is in {out}/: report.html, report.pdf, result.json, csv/, the raw "
        f"responses in raw/, guest evidence in evidence/, and manifest.json "
        f"(check it: ccaudit bundle verify {out}). It is indexed in {run_store.root} "
        "(ccaudit history).\n"
        f"A real scan of this fleet would exit {code}"
        + (
            f" (collection incomplete: {len(run.coverage.gaps)} gaps, listed above)."
            if code == EXIT_INCOMPLETE
            else "."
        ),
        highlight=False,
    )


def _previous_demo(out: Path) -> str | None:
    """Replace a previous demo run in `out` (never mix two runs in one bundle); its run id."""
    if not out.exists() or not any(out.iterdir()):
        return None
    result = out / "result.json"
    if not result.is_file():
        raise fail(f"{out} exists and is not a previous demo run; choose another --out")
    try:
        run_id = json.loads(result.read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError):
        run_id = None
    shutil.rmtree(out)
    return str(run_id) if run_id else None


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
