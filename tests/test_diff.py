"""Drift between runs: what is listed, what counts as worse, and the three renderings."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.api import scan
from auditor.cli import app
from auditor.model import AuditRun, Finding, Level, Party, Severity, Status
from auditor.run import write_run
from auditor.runs.drift import STATUS_RANK, diff_runs, is_worse, render
from auditor.runs.gates import Gates, evaluate, exit_code
from tests.conftest import DEMO_FLEET


@pytest.fixture(scope="module")
def base() -> AuditRun:
    return scan(replay=DEMO_FLEET)


def _copy(run: AuditRun, run_id: str) -> AuditRun:
    return run.model_copy(update={"run_id": run_id}, deep=True)


def _changed(base: AuditRun) -> AuditRun:
    """A later run: one VM gone, one new, one level down, one party better, a new finding."""
    after = _copy(base, "after")
    removed = after.vms.pop(0)
    newcomer = after.vms[0].model_copy(update={"id": "i-new", "name": "brand-new"}, deep=True)
    after.vms.append(newcomer)
    down = next(v for v in after.vms if v.level is Level.L1)
    up = next(v for v in after.vms if v.level is Level.L0 and v is not newcomer)
    down.level = Level.L0
    down.parties[Party.HYPERVISOR] = Status.CAN_ACCESS
    up.parties[Party.CPU_VENDOR] = Status.EXCLUDED
    up.findings.append(
        Finding(
            rule_id="test.new-rule",
            party=Party.CPU_VENDOR,
            status=Status.EXCLUDED,
            title="a new finding",
            reason="test",
            severity=Severity.INFO,
        )
    )
    assert removed.key not in {v.key for v in after.vms}
    return after


def test_same_run_has_no_changes(base: AuditRun) -> None:
    d = diff_runs(base, _copy(base, "again"))
    assert not d.changed and d.regressions == ()
    assert d.unchanged == len(base.vms)


def test_diff_names_every_kind_of_change(base: AuditRun) -> None:
    after = _changed(base)
    d = diff_runs(base, after)
    assert [c.key for c in d.added] == [after.vms[-1].key]
    assert [c.key for c in d.removed] == [base.vms[0].key]
    (level,) = d.levels
    assert (level.before, level.after, level.worse) == (Level.L1, Level.L0, True)
    by_party = {(c.key, c.party): c for c in d.parties}
    hyper = by_party[(level.key, Party.HYPERVISOR)]
    assert hyper.after is Status.CAN_ACCESS and hyper.worse
    better = [c for c in d.parties if c.party is Party.CPU_VENDOR]
    assert len(better) == 1 and not better[0].worse
    assert [f.rule_id for f in d.new_findings] == ["test.new-rule"]
    assert {c.key for c in d.regressions} == {level.key}
    assert d.unchanged == len(base.vms) - 1 - 2  # minus the removed one and the two changed


def test_resolved_findings(base: AuditRun) -> None:
    after = _copy(base, "after")
    vm = next(v for v in after.vms if v.findings)
    gone = vm.findings.pop()
    d = diff_runs(base, after)
    assert [(f.key, f.rule_id) for f in d.resolved_findings] == [(vm.key, gone.rule_id)]
    assert not d.new_findings and not d.regressions


@pytest.mark.parametrize(("before", "after"), list(itertools.permutations(Status, 2)))
def test_worse_follows_the_documented_order(before: Status, after: Status) -> None:
    order = [Status.EXCLUDED, Status.CLAIMED_EXCLUDED, Status.UNDETERMINED, Status.CAN_ACCESS]
    assert is_worse(before, after) == (order.index(after) > order.index(before))
    assert sorted(STATUS_RANK, key=STATUS_RANK.__getitem__, reverse=True) == order


def test_losing_the_providers_claim_to_missing_evidence_is_a_regression() -> None:
    assert is_worse(Status.CLAIMED_EXCLUDED, Status.UNDETERMINED)
    assert is_worse(Status.UNDETERMINED, Status.CAN_ACCESS)
    assert not is_worse(Status.UNDETERMINED, Status.CLAIMED_EXCLUDED)


def test_json_and_markdown(base: AuditRun) -> None:
    after = _changed(base)
    hostile = after.vms[-1]
    hostile.name = "evil | [click](https://x.example) @team"
    d = diff_runs(base, after)
    data = json.loads(render(d, "json"))
    assert data["summary"]["added"] == 1 and data["summary"]["regressions"] == 2
    assert data["baseline"]["run_id"] == base.run_id and data["run"]["run_id"] == "after"
    assert {c["worse"] for c in data["party_changes"]} == {True, False}
    md = render(d, "markdown")
    assert md.startswith("### cc-auditor drift")
    assert "**Worse than the baseline (2):**" in md
    row = next(line for line in md.splitlines() if "evil" in line)
    # the cloud-supplied name sits in a code span (no link, no mention) with its pipe escaped
    assert "`evil \\| [click](https://x.example) @team`" in row
    # the added-VMs table has 4 cells, so 5 unescaped pipes: the name's pipe adds no cell
    assert len(re.findall(r"(?<!\\)\|", row)) == 5
    assert "1 level changes" in render(d, "table")


def test_markdown_rows_are_capped(base: AuditRun) -> None:
    after = _copy(base, "after")
    after.vms = []
    many = _copy(base, "many")
    many.vms = [base.vms[0].model_copy(update={"id": f"i-{i:04d}"}, deep=True) for i in range(120)]
    md = render(diff_runs(after, many), "markdown")
    assert "…and 70 more" in md
    assert len(md) < 65536


def test_gate_fails_on_regression_and_explains(base: AuditRun) -> None:
    d = diff_runs(base, _changed(base))
    (gate,) = evaluate(_changed(base), Gates(fail_on_regression=True), d)
    assert not gate.passed and "2 worse than baseline" in gate.reason
    assert exit_code(_changed(base), [gate]) == 1
    (ok,) = evaluate(base, Gates(fail_on_regression=True), diff_runs(base, _copy(base, "x")))
    assert ok.passed
    # incomplete collection alone is 3; a failed gate wins over it
    assert exit_code(base, [ok]) == 3


def test_per_scope_threshold_wins_over_the_global_one(base: AuditRun) -> None:
    aws = {v.account for v in base.vms if v.provider == "aws"}
    account = sorted(aws)[0]
    gates = Gates(fail_below=Level.L0, fail_below_scopes={f"aws/{account}": Level.L1})
    (gate,) = evaluate(base, gates)
    below = [v for v in base.vms if v.account == account and v.level is Level.L0]
    assert below and not gate.passed
    assert f"{len(below)} VM(s) below" in gate.reason and f"aws/{account}" in gate.reason
    (relaxed,) = evaluate(base, Gates(fail_below=Level.L0, fail_below_scopes={"gcp": Level.L0}))
    assert relaxed.passed


def test_max_undetermined_gate(base: AuditRun) -> None:
    n = sum(1 for v in base.vms for s in v.parties.values() if s is Status.UNDETERMINED)
    assert n > 0
    (at,) = evaluate(base, Gates(max_undetermined=n))
    (under,) = evaluate(base, Gates(max_undetermined=n - 1))
    assert at.passed and not under.passed
    assert f"{n} UNDETERMINED" in under.reason


def test_diff_command(base: AuditRun, tmp_path: Path) -> None:
    write_run(base, tmp_path / "a")
    write_run(_changed(base), tmp_path / "b")
    runner = CliRunner()
    args = ["diff", str(tmp_path / "a"), str(tmp_path / "b")]
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "worse" in table.stdout
    out = tmp_path / "d.md"
    md = runner.invoke(app, [*args, "--format", "markdown", "--output", str(out)])
    assert md.exit_code == 0 and out.read_text().startswith("### cc-auditor drift")
    js = runner.invoke(app, [*args, "--format", "json"])
    assert json.loads(js.stdout)["summary"]["removed"] == 1
    gate = runner.invoke(app, [*args, "--fail-on-regression"])
    assert gate.exit_code == 1 and "fail-on-regression: FAILED" in gate.stderr
    same = runner.invoke(app, ["diff", args[1], args[1], "--fail-on-regression"])
    assert same.exit_code == 0 and "fail-on-regression: passed" in same.stderr
    bad = runner.invoke(app, ["diff", str(tmp_path / "a"), "nope", "--store", str(tmp_path)])
    assert bad.exit_code == 2
