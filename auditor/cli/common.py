"""What every `ccaudit` command shares: exit codes, the error line, option types, output checks.

Kept light on purpose: the command modules import only this, typer and rich at import time, and
load the scanner, the SDKs and the reports inside the commands, so `ccaudit --help` and
`--version` answer at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from auditor.model import AuditRun, Level

EXIT_OK = 0
EXIT_BELOW_THRESHOLD = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
#: An unexpected exception: a bug in cc-auditor, never confused with a failed policy gate (1).
EXIT_INTERNAL = 70

err_console = Console(stderr=True)


class Settings:
    """Process-wide switches of the root command (`--debug`, `--quiet`)."""

    debug = False
    quiet = False


class Provider(StrEnum):
    aws = "aws"
    gcp = "gcp"
    azure = "azure"
    libvirt = "libvirt"


def provider_option(values: list[str] | None) -> list[str]:
    """`--provider AWS,gcp`: any case, comma-separated or repeated; exit 2 naming a bad one."""
    out: list[str] = []
    for value in split(values):
        name = value.lower()
        if name not in Provider.__members__:
            raise fail(f"unknown --provider {value!r} (known: {', '.join(Provider)})")
        out.append(name)
    return list(dict.fromkeys(out))


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


class LevelOpt(StrEnum):
    L0 = "L0"
    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"


def fail(message: str) -> typer.Exit:
    """The one line a user can act on, then exit 2."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def note(message: str) -> None:
    """A line on stderr, unless --quiet."""
    if not Settings.quiet:
        err_console.print(message, highlight=False, soft_wrap=True)


def split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def exit_code(run: AuditRun, fail_below: Level | None) -> int:
    """0 ok, 1 a VM below the gate (wins), 3 collection incomplete."""
    if fail_below is not None and any(vm.level.rank < fail_below.rank for vm in run.vms):
        return EXIT_BELOW_THRESHOLD
    if not run.coverage.complete:
        return EXIT_INCOMPLETE
    return EXIT_OK


def formats(values: list[str] | None) -> list[str]:
    """`--format a,b --format c` -> [a, b, c], checked against the known formats and that each
    can be written here (its library installed): exit 2 before any cloud call otherwise."""
    from auditor import reports

    chosen = list(dict.fromkeys(split(values))) or [reports.TERMINAL]
    unknown = [f for f in chosen if f not in reports.names()]
    if unknown:
        raise fail(f"unknown --format {', '.join(unknown)} (known: {', '.join(reports.names())})")
    for name in chosen:
        problem = reports.unavailable(name)
        if problem:
            raise fail(f"--format {name} cannot be written here: {problem}")
    return chosen


def writable_file(path: Path, flag: str) -> None:
    """Can `path` be written (its directory made)? Checked before collecting, so a typo in
    `--output` costs no scan; exit 2 naming the flag and the reason."""
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir() and parent != path:
            raise fail(f"cannot write {flag} {path}: {parent} is a file, not a directory")
    if path.is_dir():
        return  # a directory output: its files are checked as written
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _probe(path.parent):
            pass
    except OSError as err:
        raise fail(f"cannot write {flag} {path}: {err.strerror or err}") from err


def writable_dir(path: Path, flag: str) -> None:
    """Can files be created in directory `path` (made if missing)? exit 2 otherwise."""
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise fail(f"cannot use {flag} {path}: {parent} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with _probe(path):
            pass
    except OSError as err:
        raise fail(f"cannot use {flag} {path}: {err.strerror or err}") from err


@contextlib.contextmanager
def _probe(directory: Path) -> Iterator[IO[bytes]]:
    import tempfile

    with tempfile.TemporaryFile(dir=directory) as fh:
        yield fh


class RunDirBusy(Exception):
    """Another scan holds the run directory."""


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold `.<name>.lock` beside `run_dir` while a scan writes it: a second scan into the same
    directory (two `ccaudit demo` in one folder) is refused at once instead of mixing files.
    The lock lives outside the run so the sealed bundle never lists it."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = run_dir.parent / f".{run_dir.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise RunDirBusy(str(run_dir)) from err
        yield
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            lock.unlink()


def load_run_or_fail(ref: Path | str, store: Path | None = None) -> AuditRun:
    """A run directory, result.json, run id or `latest`; exit 2 with one line if unusable."""
    from auditor.api import load_run
    from auditor.run import run_problem
    from auditor.runs.store import StoreError

    try:
        return load_run(ref, store)
    except StoreError as err:
        raise fail(str(err).splitlines()[0]) from err
    except (OSError, ValueError) as err:
        raise fail(run_problem(ref, err)) from err


def internal_error(err: BaseException, version: str) -> None:
    """One line for a bug, the traceback only with --debug."""
    if Settings.debug:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    text = str(err).splitlines()[0] if str(err) else ""
    print(
        f"internal error in cc-auditor {version}: {type(err).__name__}"
        + (f": {text}" if text else "")
        + " - this is a bug; please file a bug report with this line, `ccaudit --version` and "
        "the command you ran (add --debug for the traceback)",
        file=sys.stderr,
    )
