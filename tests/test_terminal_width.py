"""Terminal output fits 80, 120 and 200 columns: no line longer than the terminal, no word split,
no cell cut (`…`). CI logs are 80 columns; what a reader greps for (names, ids, accounts,
regions, party codes) must stay whole."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from auditor.cli import app
from auditor.model import AuditRun
from auditor.reports.table import print_table
from auditor.reports.view import PARTY_SHORT

WIDTHS = (80, 120, 200)
runner = CliRunner()


def _rendered(run: AuditRun, width: int) -> str:
    out = io.StringIO()
    print_table(run, Console(file=out, width=width, color_system=None))
    return out.getvalue()


def _whole_tokens(text: str) -> set[str]:
    return set(re.split(r"\s+", text))


def _check(text: str, width: int, words: set[str]) -> None:
    lines = text.splitlines()
    too_long = [line for line in lines if len(line.rstrip()) > width]
    assert not too_long, too_long[:3]
    assert "…" not in text
    tokens = _whole_tokens(text)
    split = sorted(w for w in words if w and len(w) <= width - 6 and w not in tokens)
    assert not split, f"split or missing at {width} columns: {split[:10]}"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> AuditRun:
    import auditor

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", "/dev/null")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            mp.delenv(var, raising=False)
        return auditor.demo(save=False).model


@pytest.mark.parametrize("width", WIDTHS)
def test_scan_table_fits(demo_run: AuditRun, width: int) -> None:
    text = _rendered(demo_run, width)
    words = {vm.name or vm.id for vm in demo_run.vms}
    words |= {vm.account for vm in demo_run.vms} | {vm.region for vm in demo_run.vms}
    words |= set(PARTY_SHORT.values()) | {vm.level.value for vm in demo_run.vms}
    if width < 170:  # the block layout shows ids and types too
        words |= {vm.id for vm in demo_run.vms} | {vm.instance_type or "" for vm in demo_run.vms}
    _check(text, width, words)
    assert text.count("\n") < 25 * len(demo_run.vms)  # not one letter per line


@pytest.mark.parametrize("width", WIDTHS)
def test_rules_list_fits(width: int) -> None:
    result = runner.invoke(app, ["rules", "list"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0
    from auditor.rules.loader import load_packs

    rules = [c.rule for p in load_packs() for c in p.rules]
    words = {r.id for r in rules} | {r.party.value for r in rules} | {r.effect.value for r in rules}
    _check(result.stdout, width, words)
    assert result.stdout.count("\n") < 4 * len(rules) + 10


@pytest.mark.parametrize("width", WIDTHS)
def test_history_fits(tmp_path: Path, width: int) -> None:
    import auditor

    store = tmp_path / "store"
    run = auditor.demo(store=store)
    result = runner.invoke(app, ["history", "--store", str(store)], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    _check(result.stdout, width, {run.run_id, "complete"})
    vm = runner.invoke(
        app, ["history", "eu-hr-db", "--store", str(store)], env={"COLUMNS": str(width)}
    )
    assert vm.exit_code == 0, vm.output
    _check(vm.stdout, width, {"hypervisor", "EXCLUDED", "key_custodian", "L4"})
