"""Regenerate docs/report-demo.png from the current demo (run from the repository root).

    .venv/bin/python docs/make_report_screenshot.py

Runs `ccaudit demo` into a temporary directory, renders its report.html in headless Chromium
(Debian's `chromium`) and writes the screenshot, plus docs/report-demo.json with the level counts
and readings it was drawn from: tests/reports/test_screenshot_is_current.py fails when the demo's
counts no longer match, so the README never shows an old run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PNG = REPO / "docs" / "report-demo.png"
COUNTS = REPO / "docs" / "report-demo.json"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def demo_counts(result: dict[str, object]) -> dict[str, dict[str, int]]:
    """Level and reading counts of a demo result.json: what the screenshot shows."""
    levels: dict[str, int] = {}
    answers: dict[str, int] = {}
    for vm in result["vms"]:  # type: ignore[attr-defined]
        levels[vm["level"]] = levels.get(vm["level"], 0) + 1
        answer = vm["gdpr"]["provider_can_access"]
        answers[answer] = answers.get(answer, 0) + 1
    return {"levels": dict(sorted(levels.items())), "answers": dict(sorted(answers.items()))}


def small_png(png: bytes) -> bytes:
    """A 256-colour palette keeps the screenshot small; text stays crisp (flat UI colours)."""
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with the dev extra (matplotlib)
        return png
    import io

    out = io.BytesIO()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return out.getvalue()


def main() -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("needs Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        subprocess.run(
            [sys.executable, "-m", "auditor.cli", "demo", "--out", str(out)],
            check=True,
            capture_output=True,
            env={"CCAUDIT_HOME": str(Path(tmp) / "home"), "PATH": "/usr/bin:/bin"},
        )
        subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={Path(tmp) / 'profile'}",
                "--window-size=1400,2000",
                f"--screenshot={PNG}",
                (out / "report.html").as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        counts = demo_counts(json.loads((out / "result.json").read_text()))
    PNG.write_bytes(small_png(PNG.read_bytes()))
    COUNTS.write_text(json.dumps(counts, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {PNG.relative_to(REPO)} and {COUNTS.relative_to(REPO)}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
