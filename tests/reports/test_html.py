"""report.html: content, self-containment, escaping, and what a real browser shows.

The structure is checked with the standard library's html.parser. The browser checks drive
Debian's headless Chromium over the DevTools protocol on a pipe (`--remote-debugging-pipe`, no
port, no websocket library). The no-network check is the DevTools Network domain itself: every
request the page makes is reported as `Network.requestWillBeSent` before it is sent, so the test
lists what the page tried to load (only its own file: URL may appear). A control page with one
http image proves the listener sees such a request. The browser also runs with
`--host-resolver-rules="MAP * ~NOTFOUND"`, so nothing could leave the machine even if a request
slipped through. Console and CSP messages are collected too: a Content-Security-Policy violation
(a wrong script or style hash) fails the test.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from auditor import reports
from auditor.assurance import LEVEL_MEANING
from auditor.model import Answer, AuditRun, Level, Party, Status
from auditor.reports import html
from auditor.reports.view import build_view
from auditor.verify.anchors import gcp_vtpm_store

from .conftest import EVIL_ID, EVIL_NAME, EVIL_URL, REPO

CHROMIUM = Path("/usr/bin/chromium")
BASH = shutil.which("bash") or "/bin/bash"
DOCS_PNG = REPO / "docs" / "report-demo.png"

# ------------------------------------------------------------------------ a tiny DOM


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    parent: Node | None = None
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        out = []
        for n in self.iter():
            if tag and n.tag != tag:
                continue
            if all(_has(n, k.rstrip("_").replace("_", "-"), v) for k, v in attrs.items()):
                out.append(n)
        return out

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag} {attrs}>"
        return found[0]

    def by_id(self, ident: str) -> Node:
        return self.find(id=ident)

    def ancestors(self) -> Iterator[Node]:
        n = self.parent
        while n is not None:
            yield n
            n = n.parent


def _has(node: Node, name: str, value: str) -> bool:
    if name == "class":
        return value in node.attrs.get("class", "").split()
    return node.attrs.get(name) == value


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag: str) -> None:
        n: Node | None = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        assert n is not None and n.parent is not None, f"stray </{tag}>"
        self.cur = n.parent

    def handle_data(self, data: str) -> None:
        self.cur.children.append(data)


def parse(text: str) -> Node:
    b = _Builder()
    b.feed(text)
    b.close()
    return b.root


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def demo_html(demo_run: AuditRun) -> str:
    files = html.render(demo_run)
    assert list(files) == [html.FILE]
    return files[html.FILE].decode("utf-8")


@pytest.fixture(scope="module")
def doc(demo_html: str) -> Node:
    return parse(demo_html)


@pytest.fixture(scope="module")
def synthetic_html(synthetic_run: AuditRun) -> str:
    return html.render(synthetic_run)[html.FILE].decode("utf-8")


def _anchors(run: AuditRun) -> dict[str, str]:
    return {v.key: v.anchor for v in build_view(run).vms}


def _scopes(run: AuditRun) -> set[tuple[str, str]]:
    out = {(vm.provider, vm.account) for vm in run.vms}
    out |= {(s.provider, s.account) for s in run.coverage.scopes}
    return out


# ------------------------------------------------------------------------ structure


def test_registered_and_self_contained_page(demo_html: str) -> None:
    assert reports.FORMATS["html"].module == "auditor.reports.html"
    assert demo_html.startswith("<!DOCTYPE html>")
    assert len(demo_html.encode()) < 400_000, "the demo report should stay small"


def test_summary_counts_by_level_and_cloud(demo_run: AuditRun, doc: Node) -> None:
    summary = doc.by_id("summary")
    assert summary.find(id="kpi-vms").text().startswith(f"{len(demo_run.vms)} VMs")
    counts = demo_run.level_counts()
    table = doc.by_id("fleet-table")
    clouds = [th.attrs["data-cloud"] for th in table.find_all("th") if "data-cloud" in th.attrs]
    assert clouds == sorted({vm.provider for vm in demo_run.vms})
    for level in Level:
        row = table.find("tr", data_level=level.value)
        cells = [td.text().strip() for td in row.find_all("td")]
        assert cells[1] == LEVEL_MEANING[level]
        per_cloud = [
            str(sum(1 for v in demo_run.vms if v.provider == c and v.level is level))
            for c in clouds
        ]
        assert cells[2 : 2 + len(clouds)] == per_cloud
        assert cells[2 + len(clouds)] == str(counts[level])


def test_gdpr_reading_per_scope(demo_run: AuditRun, doc: Node) -> None:
    readings = doc.by_id("readings").find_all("li", class_="reading")
    assert len(readings) == len(_scopes(demo_run))
    texts = [r.text() for r in readings]
    for provider, account in _scopes(demo_run):
        vms = [v for v in demo_run.vms if (v.provider, v.account) == (provider, account)]
        (text,) = [t for t in texts if f" {account}:" in t]
        assert "provider can reach plaintext:" in text
        if not vms:
            assert "undetermined, no VM of this scope could be read" in text
            continue
        yes = sum(1 for v in vms if v.gdpr.provider_can_access is Answer.YES)
        assert f"yes for {yes} of {len(vms)} VMs" in text
        assert "EDPB Recommendations 01/2020 Use Case 6" in text
        assert "C5:2026 OPS-33" in text and "C5:2026 OPS-32" in text
        if provider == "libvirt":  # the owner's host in Germany: no transfer, no cloud parent
            assert "GDPR Art. 5(1)(f), 25, 28, 32 and EDPB" in text and "44-46" not in text
            assert "host operator Example Logistik GmbH" in text
            assert "provider parent" not in text
        else:
            assert "GDPR Art. 5(1)(f), 25, 28, 32, 44-46" in text
            assert "provider parent" in text
        for vm in vms:
            for change in vm.gdpr.would_change:
                assert change.split(":", 1)[1].strip() in text, change


def test_matrix_svg_has_one_cell_per_vm_and_party(demo_run: AuditRun, doc: Node) -> None:
    matrix = doc.by_id("matrix")
    legend = {li.attrs["data-status"] for li in matrix.by_id("legend").find_all("li")}
    assert legend == {s.value for s in Status}
    anchors = _anchors(demo_run)
    rows: dict[str, list[str]] = {}
    for svg in matrix.find_all("svg", class_="mx"):
        for g in svg.find_all("g"):
            links = [a for a in g.children if isinstance(a, Node) and a.tag == "a"]
            if not links:
                continue
            cells = [
                c.attrs["class"] for c in g.children if isinstance(c, Node) and c.tag == "rect"
            ]
            rows[links[0].attrs["href"]] = cells
    assert len(rows) == len(demo_run.vms)
    assert sum(len(c) for c in rows.values()) == len(demo_run.vms) * len(Party)
    for vm in demo_run.vms:
        cells = rows[f"#{anchors[vm.key]}"]
        assert cells == [vm.parties[p].value for p in Party]


def test_vm_table_rows_carry_filter_attributes(demo_run: AuditRun, doc: Node) -> None:
    table = doc.by_id("vm-table")
    heads = [th.attrs.get("data-col") for th in table.find("thead").find_all("th")]
    assert all(heads), "every column is sortable"
    rows = table.find("tbody").find_all("tr")
    assert len(rows) == len(demo_run.vms)
    anchors = _anchors(demo_run)
    for vm, row in zip(demo_run.vms, rows, strict=True):
        assert row.attrs["data-level"] == vm.level.value
        assert row.attrs["data-cloud"] == vm.provider
        assert row.attrs["data-answer"] == vm.gdpr.provider_can_access.value
        assert row.find("a").attrs["href"] == f"#{anchors[vm.key]}"
    for ident in ("f-text", "f-level", "f-cloud", "f-answer", "f-count"):
        doc.by_id(ident)


def test_vm_sections_grouped_by_scope(demo_run: AuditRun, doc: Node) -> None:
    details = doc.by_id("details")
    groups = details.find_all("details", class_="scope")
    assert len(groups) == len(_scopes(demo_run))
    ids = {n.attrs["id"] for n in doc.iter() if "id" in n.attrs}
    for vm in demo_run.vms:
        article = doc.by_id(_anchors(demo_run)[vm.key])
        assert article.tag == "article"
        scope = next(a for a in article.ancestors() if a.tag == "details")
        assert vm.account in scope.find("summary").text()
        party_rows = article.find("table", class_="pt").find_all("tr")[1:]
        assert len(party_rows) == len(Party)
        for party, row in zip(Party, party_rows, strict=True):
            assert row.find("span", class_="st").attrs["class"].split()[1] == vm.parties[party]
            assert vm.party_status[party].reason in row.text()
        shas = {h for hashes in vm.evidence.values() for h in hashes}
        codes = {
            c.attrs["title"]: c.text() for c in article.find("table", class_="ev").find_all("code")
        }
        assert shas <= set(codes)
        assert all(codes[h] == h[:12] for h in codes)
        links = [a.attrs["href"][1:] for a in article.find_all("a")]
        changes = [link for link in links if not link.startswith("g-")]
        assert len(changes) == len(set(vm.gdpr.would_change))
        assert set(links) <= ids, "remediation and glossary links resolve"
        assert vm.level_reason in article.text()


def test_internal_links_resolve(doc: Node) -> None:
    ids = {n.attrs["id"] for n in doc.iter() if "id" in n.attrs}
    hrefs = [n.attrs["href"] for n in doc.iter() if n.tag == "a" and "href" in n.attrs]
    assert hrefs and all(h.startswith("#") and h[1:] in ids for h in hrefs)


def test_large_runs_render_vm_details_compactly(
    synthetic_run: AuditRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above html.LARGE_RUN VMs: scopes start closed, reasons are printed once per scope."""
    monkeypatch.setattr(html, "LARGE_RUN", 0)
    root = parse(html.render(synthetic_run)[html.FILE].decode())
    assert all("open" not in d.attrs for d in root.find_all("details", class_="scope"))
    ids = {n.attrs["id"] for n in root.iter() if "id" in n.attrs}
    for vm in synthetic_run.vms:
        article = root.by_id(_anchors(synthetic_run)[vm.key])
        assert "c" in article.attrs["class"].split()
        chips = article.find("p", class_="pp").find_all("a")
        assert [c.attrs["class"].split()[1] for c in chips] == [vm.parties[p] for p in Party]
        for chip in chips:
            reason = root.by_id(chip.attrs["href"][1:])
            assert reason.tag == "tr" and reason.parent is not None
        for hashes in vm.evidence.values():
            for h in hashes:
                assert article.find("code", title=h).text() == h[:12]
    hrefs = [n.attrs["href"][1:] for n in root.iter() if n.tag == "a"]
    assert set(hrefs) <= ids
    reasons = root.find_all("table", class_="reasons")
    assert reasons and "Reason with markup" in reasons[0].text()


def test_coverage_gaps_listed(demo_run: AuditRun, doc: Node) -> None:
    rows = doc.by_id("gaps-table").find("tbody").find_all("tr")
    assert len(rows) == len(demo_run.coverage.gaps) > 0
    for gap, row in zip(demo_run.coverage.gaps, rows, strict=True):
        text = row.text()
        assert gap.call in text and gap.code in text and gap.message in text
    assert "whole scope not read" in doc.by_id("gaps-table").text()


def test_method_lists_packs_tool_and_trust_anchors(demo_run: AuditRun, doc: Node) -> None:
    method = doc.by_id("method")
    packs = method.by_id("packs-table").text()
    for pack in demo_run.rule_packs:
        assert pack.sha256 in packs and pack.version in packs
    anchors = method.by_id("anchors-table").text()
    fingerprints = gcp_vtpm_store().fingerprints()
    assert fingerprints
    for fp in fingerprints.values():
        assert fp in anchors
    tool = method.by_id("tool-table").text()
    assert demo_run.tool.version in tool and demo_run.tool.python in tool
    for name, version in demo_run.tool.dependencies.items():
        assert name in tool and version in tool
    levels = method.by_id("levels-table").text()
    for level in Level:
        assert LEVEL_MEANING[level] in levels


# ------------------------------------------------------------------------ safety


URL_ATTRS = {
    "src",
    "href",
    "xlink:href",
    "action",
    "formaction",
    "poster",
    "srcset",
    "data",
    "background",
    "ping",
    "cite",
    "manifest",
    "longdesc",
    "usemap",
    "content",
}


def _assert_self_contained(text: str) -> None:
    root = parse(text)
    for node in root.iter():
        assert node.tag not in {"iframe", "object", "embed", "img", "base", "form", "frame"}
        for name, value in node.attrs.items():
            assert not name.startswith("on"), f"event handler {name} on <{node.tag}>"
            assert not re.search(r"(?i)(https?:|ftp:|javascript:|^\s*//)", value), (name, value)
            if name in URL_ATTRS and name != "content":
                assert value.startswith("#") or value == "data:,", (node.tag, name, value)
        if node.tag == "link":
            assert node.attrs.get("rel") == "icon"
        if node.tag == "script":
            assert "src" not in node.attrs
    for style in root.find_all("style"):
        css = style.text()
        assert "@import" not in css
        assert re.findall(r"url\(\s*(?!#)", css) == [], "CSS url() other than #fragment"
    for script in root.find_all("script"):
        assert not re.search(r"https?:|fetch\(|XMLHttpRequest|import\(", script.text())


def test_no_external_resources(demo_html: str, synthetic_html: str) -> None:
    _assert_self_contained(demo_html)
    _assert_self_contained(synthetic_html)
    assert "@import" not in demo_html and "url(http" not in demo_html


def test_csp_pins_the_inline_script_and_styles(doc: Node) -> None:
    meta = doc.find("meta", http_equiv="Content-Security-Policy").attrs["content"]
    directives = dict(d.strip().split(" ", 1) for d in meta.split(";"))
    assert directives["default-src"] == "'none'"
    (script,) = doc.find_all("script")
    assert directives["script-src"] == html.csp_hash(script.text())
    for style in doc.find_all("style"):
        assert html.csp_hash(style.text()) in directives["style-src"].split()


def test_untrusted_text_is_escaped(synthetic_run: AuditRun, synthetic_html: str) -> None:
    assert EVIL_NAME not in synthetic_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in synthetic_html
    assert "alert(3)</script>" not in synthetic_html
    root = parse(synthetic_html)
    assert len(root.find_all("script")) == 1
    assert root.find_all("img") == []
    assert EVIL_NAME in root.by_id("vm-table").text()
    assert EVIL_ID in root.by_id("vm-table").text()
    assert EVIL_URL in synthetic_html, "shown as text"
    assert all(EVIL_URL not in v for n in root.iter() for v in n.attrs.values())
    ids = [n.attrs["id"] for n in root.iter() if "id" in n.attrs]
    assert len(ids) == len(set(ids)), "slug collisions resolved (a/b vs a-b)"
    assert all(re.fullmatch(r"[a-z0-9-]+", i) for i in ids)


def test_synthetic_readings(synthetic_run: AuditRun, synthetic_html: str) -> None:
    root = parse(synthetic_html)
    texts = {r.attrs["data-scope"]: r.text() for r in root.find_all("li", class_="reading")}
    assert len(texts) == 4
    joined = " ".join(texts.values())
    assert "yes for 1 of 2 VMs, no for 1" in joined
    assert "Use Case 1 (1 VM)" in joined and "Use Case 6 (1 VM)" in joined
    assert "the owner (strong) for 1 of 2" in joined
    assert "undetermined for 2 of 2 VMs" in joined
    assert "undetermined for 1 of 1 VMs" in joined
    assert "undetermined, no VM of this scope could be read" in joined
    assert "shut out by owner-verified evidence (C5:2026 OPS-32) for 1 of 2" in joined
    l4 = next(v for v in synthetic_run.vms if v.name == "l4-vault")
    assert l4.level is Level.L4 and l4.gdpr.provider_can_access is Answer.NO


def _verdict_free(text: str) -> None:
    for m in re.finditer(r"(?i)compliant", text):
        context = text[max(0, m.start() - 6) : m.end() + 4]
        assert context.lower() == "azure-compliant-cvm", f"'compliant' outside evidence: {context}"


def test_never_prints_compliant_as_a_verdict(demo_guest_run: AuditRun) -> None:
    page = html.render(demo_guest_run)[html.FILE].decode()
    root = parse(page)
    assert "compliant" not in root.by_id("summary").text().lower()
    assert "compliant" not in root.by_id("method").text().lower()
    _verdict_free(page)
    assert "azure-compliant-cvm" in page, "the MAA claim stays visible as evidence detail"


def test_print_variant_has_no_script_and_no_details(demo_run: AuditRun) -> None:
    page = html.render_html(demo_run, print_mode=True)
    root = parse(page)
    assert root.find_all("script") == [] and root.find_all("details") == []
    assert root.find("span", class_="runid").text() == demo_run.run_id
    _assert_self_contained(page)


# ------------------------------------------------------------------------ a real browser


def _high_fds(*fds: int) -> tuple[int, ...]:
    """Move fds above 10, so `3<&X 4>&Y` cannot clobber one with the other (bash: dash only
    takes single-digit fds)."""
    out = []
    for fd in fds:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        out.append(high)
    return tuple(out)


class DevTools:
    """Headless Chromium driven over `--remote-debugging-pipe` (fd 3 in, fd 4 out)."""

    def __init__(self, profile: Path) -> None:
        cmd_r, self._cmd_w = _high_fds(*os.pipe())
        self._out_r, out_w = _high_fds(*os.pipe())
        args = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            [BASH, "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{out_w}', *args],
            pass_fds=(cmd_r, out_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._out_r], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg: dict[str, Any] = json.loads(raw)
        return msg

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method and e.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def open(self, url: str, width: int = 1400, height: int = 1000) -> Tab:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Network", "Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        return Tab(self, target, session)

    def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, EOFError, RuntimeError):
            self.call("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        os.close(self._cmd_w)
        os.close(self._out_r)


@dataclass
class Tab:
    browser: DevTools
    target: str
    session: str

    def js(self, expression: str) -> Any:
        result = self.browser.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def events(self, method: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.browser.events
            if e.get("method") == method and e.get("sessionId") == self.session
        ]

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events("Network.requestWillBeSent")]

    def problems(self) -> list[str]:
        out = [json.dumps(e["params"])[:300] for e in self.events("Runtime.exceptionThrown")]
        out += [
            e["params"]["entry"]["text"]
            for e in self.events("Log.entryAdded")
            if e["params"]["entry"]["level"] in ("error", "warning")
        ]
        return out

    def screenshot(self, height: int) -> bytes:
        shot = self.browser.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": 1400, "height": height, "scale": 1},
            },
            session=self.session,
        )
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})


@pytest.fixture(scope="module")
def browser() -> Iterator[DevTools]:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(
            f"headless browser checks need Chromium at {CHROMIUM} (Debian: apt install chromium)"
        )
    with tempfile.TemporaryDirectory(prefix="ccaudit-chromium-") as profile:
        dev = DevTools(Path(profile))
        try:
            yield dev
        finally:
            dev.close()


SHOT_HEIGHT = 2000


@pytest.fixture(scope="module")
def report_file(demo_run: AuditRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / html.FILE
    path.write_bytes(html.render(demo_run)[html.FILE])
    return path


VISIBLE_ROWS = "[...document.querySelectorAll('#vm-table tbody tr')].filter(r => !r.hidden)"


def test_browser_renders_and_filters_from_the_query_string(
    browser: DevTools, report_file: Path, demo_run: AuditRun
) -> None:
    tab = browser.open(report_file.as_uri() + "?filter=eu-hr-db")
    try:
        assert "provider can reach plaintext" in tab.js(
            "document.getElementById('summary').innerText"
        )
        cells = tab.js("document.querySelectorAll('#matrix svg.mx rect').length")
        assert cells == len(demo_run.vms) * len(Party)
        size = tab.js(
            "(() => { const r = document.querySelector('#matrix svg.mx rect')"
            ".getBoundingClientRect(); return [r.width, r.height]; })()"
        )
        assert size == [14, 14], "matrix cells are laid out"
        colour = tab.js("getComputedStyle(document.querySelector('#matrix rect.CAN_ACCESS')).fill")
        assert colour == "rgb(213, 94, 0)", "styles applied under the CSP"
        visible = tab.js(f"{VISIBLE_ROWS}.map(r => r.cells[0].innerText)")
        assert len(visible) == 1 and visible[0].startswith("eu-hr-db")
        assert tab.js("document.getElementById('f-count').textContent") == (
            f"1 of {len(demo_run.vms)} VMs shown"
        )
        vm = next(v for v in demo_run.vms if v.name == "eu-hr-db")
        anchor = _anchors(demo_run)[vm.key]
        height = tab.js(f"document.getElementById('{anchor}').getBoundingClientRect().height")
        assert height > 100, "the VM section is rendered"
        assert tab.problems() == []
    finally:
        tab.close()


def test_browser_filters_by_level_and_sorts(
    browser: DevTools, report_file: Path, demo_run: AuditRun
) -> None:
    tab = browser.open(report_file.as_uri() + "?level=L1&cloud=aws&answer=yes&sort=vm-desc")
    try:
        want = sorted(
            (v.name or v.id for v in demo_run.vms if v.level is Level.L1 and v.provider == "aws"),
            reverse=True,
        )
        got = tab.js(f"{VISIBLE_ROWS}.map(r => r.querySelector('a').innerText)")
        assert got == want
        tab.js(
            "document.getElementById('f-level').value = ''; "
            "document.getElementById('f-level').dispatchEvent(new Event('change'))"
        )
        assert tab.js(f"{VISIBLE_ROWS}.length") == sum(
            1 for v in demo_run.vms if v.provider == "aws"
        )
        tab.js("document.querySelector('#vm-table th[data-col=level]').click()")
        levels = tab.js(f"{VISIBLE_ROWS}.map(r => r.dataset.level)")
        assert levels == sorted(levels)
        assert tab.problems() == []
    finally:
        tab.close()


def test_browser_loads_nothing_from_the_network(
    browser: DevTools, report_file: Path, tmp_path: Path
) -> None:
    tab = browser.open(report_file.as_uri())
    try:
        tab.js("document.querySelectorAll('details').forEach(d => d.open = true); 1")
        time.sleep(0.3)
        urls = tab.requested_urls()
        assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
        assert tab.problems() == []
    finally:
        tab.close()
    # Control: the same listener does see a page that fetches over http.
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><img src="http://198.51.100.7/pixel.png">')
    tab = browser.open(control.as_uri())
    try:
        assert "http://198.51.100.7/pixel.png" in tab.requested_urls()
    finally:
        tab.close()


def test_browser_screenshot(browser: DevTools, demo_guest_run: AuditRun, tmp_path: Path) -> None:
    """The report renders in Chromium without problems at the docs screenshot's width."""
    page = tmp_path / html.FILE
    page.write_bytes(html.render(demo_guest_run)[html.FILE])
    tab = browser.open(page.as_uri(), height=SHOT_HEIGHT)
    try:
        png = tab.screenshot(SHOT_HEIGHT)
        assert tab.problems() == []
    finally:
        tab.close()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width = int.from_bytes(png[16:20], "big")
    assert width == 1400
    # docs/report-demo.png comes from docs/make_report_screenshot.py (same width, a palette)
    assert DOCS_PNG.stat().st_size < 400_000
    assert int.from_bytes(DOCS_PNG.read_bytes()[16:20], "big") == 1400
