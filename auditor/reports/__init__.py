"""Report formats: each a pure function of an AuditRun, registered by name.

A format renders to one or more files (`{relative name: bytes}`), so CSV can give three tables
and HTML one page. Modules are imported only when their format is asked for: pandas or
WeasyPrint are not loaded for a JSON report.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from auditor.model import AuditRun

Rendered = dict[str, bytes]
#: Above this many VMs a run is "large": JSON documents are written compact (an indent makes
#: `json` use its pure-Python encoder, several times slower: 4 s instead of 0.8 s for the OSCAL
#: document of 1,000 VMs) and the HTML report starts folded (auditor.reports.html).
LARGE_RUN = 200


def dump_json(document: object, run: AuditRun) -> str:
    """A JSON report: indented for people up to LARGE_RUN VMs, compact beyond."""
    if len(run.vms) <= LARGE_RUN:
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_json_array(items: Iterable[object], run: AuditRun, out: BinaryIO) -> None:
    """`dump_json(list(items), run)`, byte for byte, written an item at a time (the findings
    exports of a large run: never the whole array in memory). An indented item's own lines
    are its only line breaks (`json` escapes those inside strings), so indenting them by two
    places it in the array as `json.dumps` of the whole list does."""
    indent = len(run.vms) <= LARGE_RUN
    first = True
    for item in items:
        if indent:
            body = json.dumps(item, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            piece = ("[\n  " if first else ",\n  ") + body
        else:
            body = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
            piece = ("[" if first else ",") + body
        out.write(piece.encode("utf-8"))
        first = False
    out.write(b"[]\n" if first else b"\n]\n" if indent else b"]\n")


@dataclass(frozen=True)
class ReportFormat:
    name: str
    module: str
    description: str
    text: bool  # can be printed to a terminal

    def renderer(self) -> Callable[[AuditRun], Rendered]:
        fn: Callable[[AuditRun], Rendered] = importlib.import_module(self.module).render
        return fn


FORMATS: dict[str, ReportFormat] = {
    f.name: f
    for f in (
        ReportFormat("json", "auditor.reports.json_report", "result.json: the whole run", True),
        ReportFormat("html", "auditor.reports.html", "report.html: self-contained report", False),
        ReportFormat("pdf", "auditor.reports.pdf", "report.pdf: PDF/A-3b, result attached", False),
        ReportFormat("csv", "auditor.reports.tables", "csv/: vms, parties, findings", False),
        ReportFormat("parquet", "auditor.reports.parquet", "parquet/: the same tables", False),
        ReportFormat("sarif", "auditor.reports.sarif", "results.sarif: SARIF 2.1.0", True),
        ReportFormat("junit", "auditor.reports.junit", "junit.xml: a test per VM and party", True),
        ReportFormat("oscal", "auditor.reports.oscal", "oscal-assessment-results.json", True),
        ReportFormat("markdown", "auditor.reports.markdown", "summary.md: for CI pages", True),
        ReportFormat(
            "ocsf", "auditor.reports.ocsf", "ocsf-findings.json: OCSF Compliance Findings", True
        ),
        ReportFormat(
            "asff", "auditor.reports.asff", "asff-findings.json: AWS Security Hub (ASFF)", True
        ),
    )
}
TERMINAL = "table"


class ReportError(Exception):
    """A format that cannot be produced here (unknown, or a missing system library)."""


def names() -> list[str]:
    return [TERMINAL, *FORMATS]


def unavailable(name: str) -> str | None:
    """Why a format cannot be written on this machine (a package or system library missing),
    or None: asked before a scan so that a run never ends without the report it promised."""
    fmt = FORMATS.get(name)
    if fmt is None:
        return None
    try:
        module = importlib.import_module(fmt.module)
    except ImportError as err:
        return f"it needs a package that is not installed ({err}); install cc-auditor[all]"
    check: Callable[[], str | None] | None = getattr(module, "available", None)
    return check() if check is not None else None


def _format(name: str) -> ReportFormat:
    fmt = FORMATS.get(name)
    if fmt is None:
        raise ReportError(f"unknown format {name!r} (known: {', '.join(names())})")
    return fmt


def _missing(name: str, err: ImportError) -> ReportError:
    return ReportError(f"format {name} needs a package that is not installed: {err}")


def render(run: AuditRun, name: str) -> Rendered:
    fmt = _format(name)
    try:
        return fmt.renderer()(run)
    except ImportError as err:
        raise _missing(name, err) from err


#: What writes one file of a report into an open binary file.
Writer = Callable[[BinaryIO], object]


def writers(run: AuditRun, name: str) -> dict[str, Writer]:
    """Each file of a format (`{relative name: writer}`), for writing where it goes. A format
    module with a `writers` function writes a piece at a time (JSON: a VM at a time, so a large
    run is never whole in memory); the others are rendered first."""
    fmt = _format(name)
    try:
        streamed = getattr(importlib.import_module(fmt.module), "writers", None)
    except ImportError as err:
        raise _missing(name, err) from err
    if streamed is not None:
        found: dict[str, Writer] = streamed(run)
        return found
    return {rel: partial(_put, data) for rel, data in render(run, name).items()}


def _put(data: bytes, out: BinaryIO) -> None:
    out.write(data)


def write(run: AuditRun, name: str, directory: Path) -> list[Path]:
    """Write one format into `directory`; returns the files written."""
    written: list[Path] = []
    for rel, write_file in writers(run, name).items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        with tmp.open("wb") as out:
            write_file(out)
        tmp.replace(target)
        written.append(target)
    return written
