"""What a compliance officer signs: the demo run exactly as `ccaudit demo` writes it.

The first page is a sign-off summary; every trust anchor a verdict rests on is shown with its
fingerprint in the report, summary.md and manifest.json; demo-anchor verdicts are counted apart;
remediation fits the VM; nothing prints the scanning machine's paths.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    with pytest.MonkeyPatch.context() as mp:  # the conftest env, for a module-scoped fixture
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", "/dev/null")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        mp.setenv("CCAUDIT_HOME", str(tmp_path_factory.mktemp("home")))
        for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            mp.delenv(var, raising=False)
        result = runner.invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _result(demo_dir: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((demo_dir / "result.json").read_text())
    return data


def test_every_anchor_a_verdict_rests_on_is_in_report_summary_and_manifest(
    demo_dir: Path,
) -> None:
    anchors = _result(demo_dir)["trust_anchors"]
    assert isinstance(anchors, list)
    used = [a for a in anchors if a["used_by"] > 0]
    stores = {a["store"] for a in used}
    assert {
        "AMD SEV-SNP roots (Milan)",
        "Intel SGX Root CA",
        "demo trust anchor, not AMD (Milan)",
        "owner key broker",
    } <= stores
    assert any(s.startswith("MAA signing keys") for s in stores)
    html = (demo_dir / "report.html").read_text()
    summary = (demo_dir / "summary.md").read_text()
    manifest = json.loads((demo_dir / "manifest.json").read_text())
    in_manifest = {fp for store in manifest["trust_anchors"].values() for fp in store.values()}
    for anchor in used:
        assert anchor["sha256"] in html, anchor
        assert anchor["sha256"] in summary, anchor
        assert anchor["sha256"] in in_manifest, anchor
    # the pinned AMD roots are listed even where no verdict used them
    pinned = [a for a in anchors if a["pinned"] and a["store"].startswith("AMD")]
    assert len(pinned) == 9 and all(a["sha256"] in html for a in pinned)


def test_demo_anchor_verdicts_are_counted_apart_with_the_caveat(demo_dir: Path) -> None:
    html = (demo_dir / "report.html").read_text()
    summary = (demo_dir / "summary.md").read_text()
    assert 'id="sign-off-demo">5 VMs verified against the' in html
    assert "**Demo caveat:** 5 VMs verified against the demo trust anchor" in summary
    assert "owner-verified against the demo trust anchor (not AMD) 5" in summary
    assert "owner-verified 2" not in summary  # never counted as strong owner verification


def test_sign_off_comes_first_and_names_the_run_fingerprint(demo_dir: Path) -> None:
    html = (demo_dir / "report.html").read_text()
    body = html[html.index("<body>") :]
    assert body.index('id="sign-off"') < body.index('id="summary"') < body.index('id="matrix"')
    digest = hashlib.sha256((demo_dir / "result.json").read_bytes()).hexdigest()
    assert f'<code class="wrap" id="result-sha256">{digest}</code>' in html
    for label in ("Judged at", "Coverage", "Rule packs", "Legal data", "What was not seen"):
        assert f"<th>{label}</th>" in html
    assert "Judged at the recording time 2026-11-22T00:00:00Z (a replay)" in html


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="needs poppler-utils (pdftotext)")
def test_pdf_starts_with_a_one_page_sign_off(demo_dir: Path) -> None:
    def page(n: int) -> str:
        return subprocess.run(
            ["pdftotext", "-layout", "-f", str(n), "-l", str(n), str(demo_dir / "report.pdf"), "-"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    first = page(1)
    assert "Sign-off summary" in first and "Run fingerprint" in first
    assert "Reviewed by:" in first
    assert "1. Executive summary" in page(2)
    text = subprocess.run(
        ["pdftotext", "-layout", str(demo_dir / "report.pdf"), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    # identifiers and headers are never split inside a word
    assert "image_publisher" in text and "image_publishe\n" not in text


def test_no_path_of_the_scanning_machine_is_printed(demo_dir: Path) -> None:
    html = (demo_dir / "report.html").read_text()
    summary = (demo_dir / "summary.md").read_text()
    fleet = str(Path(__file__).resolve().parents[2])
    for text in (html, summary):
        assert fleet not in text and str(demo_dir) not in text
    assert "evidence/guest/ (given as guest-evidence)" in html
    assert "evidence/rules/" in html and "built into cc-auditor (core.yaml)" in html


def test_remediation_fits_the_vm_and_starts_with_what_matters_most(demo_dir: Path) -> None:
    vms = {vm["name"]: vm for vm in _result(demo_dir)["vms"]}  # type: ignore[attr-defined]
    tdx = vms["claims-etl-tdx"]
    for finding in tdx["findings"]:
        assert "sev-snp-measure" not in (finding["remediation"] or ""), finding["rule_id"]
    assert any("MRTD" in (f["remediation"] or "") for f in tdx["findings"])
    plain = vms["eu-payments-batch"]  # no memory encryption: move first, then the rest
    assert plain["gdpr"]["would_change"][0].startswith("hypervisor: ")
    assert "AmdSevSnp=enabled" in plain["gdpr"]["would_change"][0]
    states = {vm["state"] for vm in vms.values()}
    html = (demo_dir / "report.html").read_text()
    assert "provisioned (Succeeded); power state not read" in html
    assert "RUNNING" in states and " · RUNNING" not in html  # one vocabulary in the report


def test_glossary_explains_the_jargon_where_it_is_used(demo_dir: Path) -> None:
    html = (demo_dir / "report.html").read_text()
    for slug in ("report-data", "tcb", "vtpm", "migrate-ma", "c5", "demo-anchor"):
        assert f'id="g-{slug}"' in html
    assert '<a class="gl" href="#g-tcb">TCB</a>' in html
    assert '<a class="gl" href="#g-use-cases">Use Case 6</a>' in html


def test_the_readme_screenshot_shows_the_current_demo(demo_dir: Path) -> None:
    """docs/report-demo.png is drawn by docs/make_report_screenshot.py, which stores the counts
    it showed beside it; a demo that reads differently now needs a new screenshot."""
    import importlib.util

    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "shot", repo / "docs" / "make_report_screenshot.py"
    )
    assert spec is not None and spec.loader is not None
    shot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shot)
    drawn = json.loads((repo / "docs" / "report-demo.json").read_text())
    assert drawn == shot.demo_counts(_result(demo_dir)), (
        "regenerate: .venv/bin/python docs/make_report_screenshot.py"
    )
    assert (repo / "docs" / "report-demo.png").stat().st_size > 10_000
