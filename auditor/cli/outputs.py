"""Where a run's reports go (terminal, stdout, --output, the run directory) and its sealing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from auditor.cli.common import err_console, fail, note

if TYPE_CHECKING:
    from auditor.model import AuditRun


def emit(run: AuditRun, formats: list[str], output: Path | None, run_dir: Path | None) -> None:
    """Terminal table, stdout, --output, and the run directory, by the rules in the README.

    A format that cannot be written fails the command (exit 2): formats were checked before
    the scan (`common.formats`), so this only happens for a library that breaks while rendering.
    """
    from auditor import reports
    from auditor.reports.table import print_table

    files = [f for f in formats if f != reports.TERMINAL]
    to_stdout = len(formats) == 1 and files and output is None and reports.FORMATS[files[0]].text
    if reports.TERMINAL in formats:
        if output is not None and not files:
            output.parent.mkdir(parents=True, exist_ok=True)
            with output.open("w", encoding="utf-8") as fh:
                print_table(run, Console(file=fh, width=200, color_system=None))
        else:
            print_table(run, Console())
    for name in files:
        if name == "json":  # written a VM at a time: a large run is never whole in memory
            _emit_json(run, output, run_dir, bool(to_stdout), files)
            continue
        try:
            rendered = reports.render(run, name)
        except reports.ReportError as err:
            raise fail(f"--format {name}: {err}") from err
        if to_stdout:
            for data in rendered.values():
                sys.stdout.write(data.decode("utf-8"))
        pairs: list[tuple[Path, bytes]] = []
        if output is not None and len(files) == 1 and len(rendered) == 1 and not output.is_dir():
            pairs.append((output, next(iter(rendered.values()))))
        elif output is not None:
            pairs.extend((output / rel, data) for rel, data in rendered.items())
        if run_dir is not None:
            pairs.extend((run_dir / rel, data) for rel, data in rendered.items())
        for target, data in pairs:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            except OSError as err:
                raise fail(f"cannot write {target}: {err.strerror or err}") from err
            if not to_stdout:
                note(f"wrote {target}")


def _emit_json(
    run: AuditRun, output: Path | None, run_dir: Path | None, to_stdout: bool, files: list[str]
) -> None:
    """`emit` for the JSON report, streamed to each place it goes (the rules are emit's)."""
    from auditor.reports.json_report import FILE, write_json

    if to_stdout:
        write_json(run, sys.stdout.buffer)
        sys.stdout.flush()
    targets: list[Path] = []
    if output is not None:
        one = len(files) == 1 and not output.is_dir()
        targets.append(output if one else output / FILE)
    stored = getattr(run.vms, "path", None)  # a run read from (or just written to) a file
    if run_dir is not None and not (stored is not None and _same_file(stored, run_dir / FILE)):
        targets.append(run_dir / FILE)  # else the file holds these very bytes already
    for target in targets:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                write_json(run, out)
        except OSError as err:
            raise fail(f"cannot write {target}: {err.strerror or err}") from err
        if not to_stdout:
            note(f"wrote {target}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def seal(run_dir: Path, run: AuditRun, signing_key: Path | None) -> None:
    """Write the run's manifest (every file hashed, chained to the previous run, signed)."""
    from auditor.runs.bundle import BundleError, write_manifest

    try:
        write_manifest(run_dir, run, signing_key=signing_key)
    except (BundleError, OSError, ValueError) as err:
        raise fail(f"cannot seal {run_dir}: {err}") from err
    signed = " and signed" if signing_key else " (unsigned: give --signing-key to sign it)"
    note(f"manifest written{signed}: {run_dir / 'manifest.json'}")


def list_gaps(run: AuditRun) -> None:
    """The coverage gaps on stderr, one line each (for output modes that printed no table)."""
    if not run.coverage.gaps:
        return
    err_console.print(
        f"[yellow]collection incomplete:[/] {len(run.coverage.gaps)} gap(s):", highlight=False
    )
    for gap in run.coverage.gaps:
        scope = "/".join(x for x in (gap.provider, gap.account, gap.region) if x)
        what = gap.describe()
        first = gap.message.splitlines()[0] if gap.message else ""
        err_console.print(
            f"  - {scope}: {gap.call} {gap.code} ({what}): {first}",
            highlight=False,
            soft_wrap=True,
        )
