"""report.html: the whole run as one self-contained page a reviewer can open offline and file.

Self-contained because the file is evidence: it must read the same in ten years, on an air-gapped
machine, and must not tell anyone that it was opened. So there is no external URL at all: CSS,
the small filter/sort script and the charts (inline SVG) are inside the file, fonts are the
system's. A Content-Security-Policy meta tag pins the script and styles by hash and forbids every
fetch, so even a value that escaped escaping could not load or run anything.

The same template renders the PDF (`print_mode=True`): no script, every section expanded.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache, lru_cache
from importlib import resources

import jinja2
from markupsafe import Markup, escape

from auditor.model import AuditRun, Level

# Above LARGE_RUN VMs the report is "large": scope sections and per-scope matrices start closed
# (the browser lays out only what the reader opens) and each VM's detail is compact, its party
# reasons printed once per scope and referenced by number, so a 10,000-VM page stays usable.
from auditor.reports import LARGE_RUN
from auditor.reports.view import ReportView, build_view

FILE = "report.html"
TEMPLATE = "report.html.j2"

#: Rows per matrix SVG: one printed page holds a chunk, and the browser lays out small images.
MATRIX_ROWS = 50
#: Width of the VM-name column of the matrix, in px.
MATRIX_LABEL = 210

LEVEL_COLORS: dict[Level, str] = {
    Level.L0: "#d55e00",
    Level.L1: "#e69f00",
    Level.L2: "#56b4e9",
    Level.L3: "#009e73",
    Level.L4: "#0072b2",
}


@cache
def asset(name: str) -> str:
    """A static file from templates/ (CSS, JS), read once."""
    return (resources.files("auditor.reports") / "templates" / name).read_text(encoding="utf-8")


def csp_hash(text: str) -> str:
    """A CSP source expression allowing exactly this inline script or style."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def _clip(value: str, length: int) -> str:
    return value if len(value) <= length else value[: length - 1] + "…"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """Autoescaping everywhere: VM names, tags, error messages and evidence come from clouds."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("auditor.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["clip"] = _clip
    env.filters["gloss"] = gloss
    return env


#: Jargon in reasons -> the glossary entry that explains it (view.GLOSSARY slugs).
_GLOSSED: dict[str, str] = {
    "REPORT_DATA": "report-data",
    "VMPL0": "vmpl",
    "MIGRATE_MA": "migrate-ma",
    "MIGRATABLE": "migrate-ma",
    "TCB": "tcb",
    "MRTD": "measurement",
    "VCEK": "amd-chain",
    "VLEK": "amd-chain",
    "vTPM": "vtpm",
    "LUKS": "luks",
    "MAA": "maa",
    "OPS-33": "c5",
    "OPS-32": "c5",
    "Use Case 6": "use-cases",
    "Use Case 1": "use-cases",
    "demo trust anchor": "demo-anchor",
    "owner override": "owner-override",
}
_GLOSS_RE = re.compile("|".join(re.escape(t) for t in sorted(_GLOSSED, key=len, reverse=True)))


def gloss(text: str) -> Markup:
    """Escape `text` and link the first use of each term to the report's glossary."""
    escaped = str(escape(text))
    seen: set[str] = set()

    def link(match: re.Match[str]) -> str:
        slug = _GLOSSED[match.group(0)]
        if slug in seen:
            return match.group(0)
        seen.add(slug)
        return f'<a class="gl" href="#g-{slug}">{match.group(0)}</a>'

    return Markup(_GLOSS_RE.sub(link, escaped))


def content_security_policy(css: str, js: str, matrix_css: str) -> str:
    """Nothing may be fetched; only this report's own script and styles may run."""
    styles = " ".join(dict.fromkeys(csp_hash(s) for s in (css, matrix_css)))
    return (
        "default-src 'none'; "
        f"script-src {csp_hash(js)}; "
        f"style-src {styles}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )


def render_view(view: ReportView, *, print_mode: bool = False) -> str:
    """The page for a view; `print_mode` for WeasyPrint (no script, all sections expanded)."""
    css = asset("report.css") + (asset("pdf.css") if print_mode else "")
    js = asset("report.js")
    matrix_css = asset("matrix.css").strip()
    return (
        environment()
        .get_template(TEMPLATE)
        .render(
            v=view,
            print=print_mode,
            css=Markup(css),
            js=Markup(js),
            matrix_css=Markup(matrix_css),
            csp=content_security_policy(css, js, matrix_css),
            level_colors=LEVEL_COLORS,
            matrix_rows=MATRIX_ROWS,
            mx_label=MATRIX_LABEL,
            mx_width=MATRIX_LABEL + 16 * 9 + 30,
            compact=len(view.vms) > LARGE_RUN,
        )
    )


def render_html(run: AuditRun, *, print_mode: bool = False) -> str:
    return render_view(build_view(run), print_mode=print_mode)


def render(run: AuditRun) -> dict[str, bytes]:
    return {FILE: render_html(run).encode("utf-8")}
