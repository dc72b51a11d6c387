"""report.pdf: PDF/A-3b that poppler opens, paged with run id and "Page N of M", result.json inside.

Checked with poppler-utils (`pdfinfo`, `pdfdetach`, `pdftotext`), the tools an auditor would use,
rather than with the library that wrote the file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from auditor import reports
from auditor.model import AuditRun
from auditor.reports import ReportError, pdf
from auditor.reports.json_report import render_json

pytest.importorskip("weasyprint", reason="PDF needs WeasyPrint (the reports extra)")
POPPLER = ("pdfinfo", "pdfdetach", "pdftotext")
pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in POPPLER), reason="needs poppler-utils (pdfinfo, pdfdetach)"
)


def _run(*args: str | Path) -> str:
    return subprocess.run(
        [str(a) for a in args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


@pytest.fixture(scope="module")
def demo_pdf(demo_run: AuditRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = pdf.render(demo_run)
    assert list(files) == [pdf.FILE]
    path = tmp_path_factory.mktemp("pdf") / pdf.FILE
    path.write_bytes(files[pdf.FILE])
    return path


def _info(path: Path) -> dict[str, str]:
    out = {}
    for line in _run("pdfinfo", path).splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def test_pdfinfo_opens_a_paged_a4_document(demo_pdf: Path, demo_run: AuditRun) -> None:
    info = _info(demo_pdf)
    assert int(info["Pages"]) > 1
    assert "A4" in info["Page size"]
    assert demo_run.run_id in info["Title"]
    assert info["Producer"].startswith("WeasyPrint")


def test_result_json_is_attached_and_equals_the_run(
    demo_pdf: Path, demo_run: AuditRun, tmp_path: Path
) -> None:
    listing = _run("pdfdetach", "-list", demo_pdf)
    assert re.search(r"^1: result\.json$", listing, re.M), listing
    out = tmp_path / "attached.json"
    _run("pdfdetach", "-save", "1", "-o", out, demo_pdf)
    data = out.read_bytes()
    assert data == render_json(demo_run).encode("utf-8")
    assert AuditRun.model_validate_json(data) == demo_run


def test_pdfa_3b_declared_in_xmp(demo_pdf: Path, demo_run: AuditRun) -> None:
    xmp = _run("pdfinfo", "-meta", demo_pdf)
    assert 'pdfaid:part="3"' in xmp
    assert 'pdfaid:conformance="B"' in xmp
    finished = demo_run.finished_at.strftime("%Y-%m-%dT%H:%M:%S")
    assert f"<xmp:CreateDate>{finished}" in xmp, "dates come from the run, not the clock"


def test_header_has_run_id_and_footer_page_n_of_m(demo_pdf: Path, demo_run: AuditRun) -> None:
    pages = int(_info(demo_pdf)["Pages"])
    first = _run("pdftotext", "-layout", "-f", "1", "-l", "1", demo_pdf, "-")
    last = _run("pdftotext", "-layout", "-f", str(pages), "-l", str(pages), demo_pdf, "-")
    assert f"Run {demo_run.run_id}" in first
    assert f"Page 1 of {pages}" in first
    assert f"Page {pages} of {pages}" in last
    assert f"Run {demo_run.run_id}" in last


def test_same_content_as_the_html(demo_pdf: Path, demo_run: AuditRun) -> None:
    text = " ".join(_run("pdftotext", demo_pdf, "-").split())
    assert "Executive summary" in text and "Who can reach the plaintext" in text
    assert "provider can reach plaintext: yes" in text
    for pack in demo_run.rule_packs:
        assert pack.sha256[:32] in text.replace(" ", "")
    for gap in demo_run.coverage.gaps:
        assert gap.code in text
    assert "compliant" not in text.lower()


def test_reproducible_bytes(synthetic_run: AuditRun) -> None:
    first = pdf.render_pdf(synthetic_run)
    assert first == pdf.render_pdf(synthetic_run)
    assert pdf.identifier(synthetic_run) in first


def test_missing_weasyprint_is_a_report_error(
    synthetic_run: AuditRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "weasyprint", None)
    with pytest.raises(ReportError, match="WeasyPrint"):
        reports.render(synthetic_run, "pdf")


def test_broken_system_libraries_are_a_report_error(
    synthetic_run: AuditRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    import weasyprint

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("cannot load library 'libpango-1.0-0'")

    monkeypatch.setattr(weasyprint, "HTML", broken)
    with pytest.raises(ReportError, match="libpango"):
        pdf.render(synthetic_run)
