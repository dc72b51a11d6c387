"""summary.md: short, link-free GitHub Markdown: counts, readings per scope, lowest VMs, gaps."""

from __future__ import annotations

import re

from auditor import reports
from auditor.model import AuditRun, Level
from auditor.reports import markdown

from .conftest import EVIL_NAME


def _md(run: AuditRun) -> str:
    files = markdown.render(run)
    assert list(files) == [markdown.FILE]
    return files[markdown.FILE].decode("utf-8")


def _outside_code(text: str) -> str:
    """The text with every code span removed (CommonMark: matching backtick runs)."""
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text, flags=re.S)


def _cells(row: str) -> list[str]:
    return re.split(r"(?<!\\)\|", row.strip().strip("|"))


def _tables(text: str) -> list[list[str]]:
    tables: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def test_registered_as_a_text_format() -> None:
    assert reports.FORMATS["markdown"].module == "auditor.reports.markdown"
    assert reports.FORMATS["markdown"].text


def test_counts_by_level(demo_run: AuditRun) -> None:
    text = _md(demo_run)
    assert f"**{len(demo_run.vms)} VMs**" in text
    lowest = demo_run.lowest_level()
    assert lowest is not None and f"Lowest assurance level: **{lowest.value}**" in text
    counts = demo_run.level_counts()
    for level in Level:
        (row,) = [line for line in text.splitlines() if line.startswith(f"| {level.value} |")]
        assert _cells(row)[-1].strip() == str(counts[level])


def test_reading_per_scope_lowest_vms_and_gaps(demo_run: AuditRun) -> None:
    text = _md(demo_run)
    scopes = {(v.provider, v.account) for v in demo_run.vms}
    scopes |= {(s.provider, s.account) for s in demo_run.coverage.scopes}
    readings = [line for line in text.splitlines() if "provider can reach plaintext:" in line]
    assert len(readings) == len(scopes)
    for _provider, account in scopes:
        assert any(f"`{account}`" in r for r in readings), account
    assert "Use Case 6" in text and "OPS-33" in text
    assert "## Lowest VMs (10 of 27)" in text
    for gap in demo_run.coverage.gaps:
        assert f"`{gap.call}` `{gap.code}`" in text
    assert "## Coverage gaps" in text


def test_gfm_tables_are_well_formed(demo_run: AuditRun, synthetic_run: AuditRun) -> None:
    for run in (demo_run, synthetic_run):
        tables = _tables(_md(run))
        # fleet and lowest VMs, and node pools where the run has Kubernetes nodes
        assert len(tables) == 2 + any(vm.pool_label for vm in run.vms)
        for table in tables:
            width = len(_cells(table[0]))
            assert re.fullmatch(r"\|(-+:?\|)+", table[1].replace("--:", "-:"))
            assert all(len(_cells(row)) == width for row in table), table


def test_no_links_no_markup_from_cloud_text(synthetic_run: AuditRun) -> None:
    text = _md(synthetic_run)
    assert EVIL_NAME not in _outside_code(text)
    assert f"`{EVIL_NAME}`" in text
    prose = _outside_code(text)
    assert "<" not in prose and ">" not in prose
    assert not re.search(r"\]\(", prose), "no link syntax"
    assert not re.search(r"(?<!\\)@\w", prose), "no @mention"
    assert not re.search(r"(?i)https?://|www\.\w", prose), "no autolink"


def test_never_a_compliant_verdict(demo_run: AuditRun, demo_guest_run: AuditRun) -> None:
    for run in (demo_run, demo_guest_run):
        assert "compliant" not in _md(run).lower()


def test_stays_short_for_many_scopes(demo_run: AuditRun) -> None:
    vms = [
        vm.model_copy(update={"account": f"acct-{i:03d}", "id": f"{vm.id}-{i}"})
        for i in range(60)
        for vm in demo_run.vms[:5]
    ]
    big = demo_run.model_copy(update={"vms": vms})
    text = _md(big)
    assert len(text) < 65_536, "fits a GitHub comment"
    assert "more scopes: see report.html" in text
    assert "## Lowest VMs (10 of 300)" in text
