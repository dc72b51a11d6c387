"""report.pdf: the HTML report, paged, as PDF/A-3b with the run's result.json embedded.

PDF/A-3b because the file is meant to be filed: archival PDF with embedded fonts, and PDF/A-3
allows the machine-readable result to travel inside the human-readable one (ISO 19005-3, an
associated file with relationship `Data`). A reviewer can detach result.json and re-run or diff
it; the page header carries the run id and the footer "Page N of M", so a printed page is never
detached from its run.

Reproducible: the PDF identifier and every date (document metadata, the attachment's dates) are
derived from the run, not from the clock, so rendering the same run twice with the same
WeasyPrint and fonts gives the same bytes.

WeasyPrint needs Pango. If it or its system libraries are missing, `render` raises ReportError
saying so; the CLI then still writes the HTML report.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from auditor.model import AuditRun
from auditor.reports import ReportError
from auditor.reports.html import render_html
from auditor.reports.json_report import FILE as JSON_FILE
from auditor.reports.json_report import render_json

FILE = "report.pdf"
PDF_VARIANT = "pdf/a-3b"
ATTACHMENT_DESCRIPTION = (
    "cc-auditor result.json: the complete AuditRun this report renders (every VM, party status, "
    "finding and evidence item)"
)


def _weasyprint() -> Any:
    """Import WeasyPrint lazily: a JSON or HTML report must not need Pango."""
    try:
        import weasyprint  # type: ignore[import-untyped]
    except (ImportError, OSError) as err:
        raise ReportError(
            "PDF needs WeasyPrint and its system libraries (Pango, HarfBuzz, fonts): "
            f"{type(err).__name__}: {err}. Install `cc-auditor[reports]` and the Debian packages "
            "libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core; the HTML report is unaffected."
        ) from err
    return weasyprint


def available() -> str | None:
    """None when WeasyPrint and its system libraries load; the reason otherwise."""
    try:
        _weasyprint()
    except ReportError as err:
        return str(err)
    return None


def identifier(run: AuditRun) -> bytes:
    """The PDF file identifier: a hash of the run, so it is stable and names this run only."""
    return hashlib.sha256(f"cc-auditor/{run.run_id}".encode()).hexdigest()[:32].encode("ascii")


def render_pdf(run: AuditRun) -> bytes:
    weasyprint = _weasyprint()
    page = render_html(run, print_mode=True)
    finished = run.finished_at
    attachment = weasyprint.Attachment(
        string=render_json(run).encode("utf-8"),
        name=JSON_FILE,
        description=ATTACHMENT_DESCRIPTION,
        created=finished,
        modified=finished,
        relationship="Data",
    )
    # WeasyPrint logs every CSS property it does not implement; that is not the user's concern.
    logger = logging.getLogger("weasyprint")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        document = weasyprint.HTML(string=page, base_url=None)
        pdf: bytes = document.write_pdf(
            pdf_variant=PDF_VARIANT,
            attachments=[attachment],
            pdf_identifier=identifier(run),
        )
    except OSError as err:
        raise ReportError(f"PDF rendering failed in WeasyPrint's system libraries: {err}") from err
    finally:
        logger.setLevel(level)
    return pdf


def render(run: AuditRun) -> dict[str, bytes]:
    return {FILE: render_pdf(run)}
