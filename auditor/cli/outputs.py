"""Where a run's reports go (terminal, stdout, --output, the run directory) and its sealing."""

from __future__ import annotations

import shutil
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
        try:
            rendered = reports.writers(run, name)
        except reports.ReportError as err:
            raise fail(f"--format {name}: {err}") from err
        pairs: list[tuple[Path, reports.Writer]] = []
        if output is not None and len(files) == 1 and len(rendered) == 1 and not output.is_dir():
            pairs.append((output, next(iter(rendered.values()))))
        elif output is not None:
            pairs.extend((output / rel, w) for rel, w in rendered.items())
        if run_dir is not None:
            # never over the file the run reads its VMs from: it holds these very bytes
            pairs.extend(
                (run_dir / rel, w)
                for rel, w in rendered.items()
                if not _read_from(run, run_dir / rel)
            )
        written: dict[int, Path] = {}  # a file made once (streamed formats are made as
        for target, write_file in pairs:  # they are written), then copied to its other places
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                made = written.get(id(write_file))
                if made is None:
                    with target.open("wb") as out:
                        write_file(out)
                    written[id(write_file)] = target
                elif made.resolve() != target.resolve():  # --output may be the run directory
                    shutil.copyfile(made, target)
            except OSError as err:
                raise fail(f"cannot write {target}: {err.strerror or err}") from err
            if not to_stdout:
                note(f"wrote {target}")
        if to_stdout:
            sys.stdout.flush()
            for write_file in rendered.values():
                made = written.get(id(write_file))
                if made is not None:  # already made for the run directory: its bytes
                    with made.open("rb") as src:
                        shutil.copyfileobj(src, sys.stdout.buffer)
                else:
                    write_file(sys.stdout.buffer)
            sys.stdout.buffer.flush()


def _read_from(run: AuditRun, target: Path) -> bool:
    """Whether `target` is the result.json a stored run reads its VMs from (auditor.runs.spool)."""
    stored = getattr(run.vms, "path", None)
    try:
        return stored is not None and Path(stored).resolve() == target.resolve()
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
