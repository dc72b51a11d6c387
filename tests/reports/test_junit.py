"""JUnit XML: parses with junitparser; tests, failures, skipped and errors match the run."""

from __future__ import annotations

from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Properties, Skipped, TestCase

from auditor import reports
from auditor.api import scan
from auditor.model import PROVIDER_PARTIES, AuditRun, Party, Status
from auditor.reports import junit, tables

DEMO_FLEET = Path(__file__).resolve().parents[2] / "examples" / "demo-fleet"


@pytest.fixture(scope="module")
def demo_run() -> AuditRun:
    return scan(replay=DEMO_FLEET)


def _parse(run: AuditRun) -> JUnitXml:
    files = junit.render(run)
    assert list(files) == [junit.FILE]
    return JUnitXml.fromstring(files[junit.FILE])


def _props(case: TestCase) -> dict[str, str]:
    props = case.child(Properties)
    return {p.name: p.value for p in props} if props is not None else {}


def _cases(xml: JUnitXml) -> list[TestCase]:
    return [case for suite in xml for case in suite]


def test_counts_match_the_run(demo_run: AuditRun, tmp_path: Path) -> None:
    written = reports.write(demo_run, "junit", tmp_path)
    xml = JUnitXml.fromfile(str(written[0]))
    statuses = [ps for vm in demo_run.vms for ps in vm.party_status.values()]
    scopes = demo_run.coverage.scopes
    assert xml.tests == len(demo_run.vms) * len(Party) + len(scopes)
    assert xml.failures == sum(
        ps.status is Status.CAN_ACCESS and ps.party in PROVIDER_PARTIES for ps in statuses
    )
    assert xml.skipped == sum(ps.status is Status.UNDETERMINED for ps in statuses) + sum(
        s.status == "partial" for s in scopes
    )
    assert xml.errors == sum(s.status == "failed" for s in scopes)
    assert xml.failures > 0 and xml.skipped > 0 and xml.errors > 0

    # The attributes agree with the cases themselves.
    cases = _cases(xml)
    assert len(cases) == xml.tests
    assert sum(isinstance(r, Failure) for c in cases for r in c.result) == xml.failures
    assert sum(isinstance(r, Skipped) for c in cases for r in c.result) == xml.skipped
    assert sum(isinstance(r, Error) for c in cases for r in c.result) == xml.errors


def test_one_suite_per_scope_and_case_per_vm_party(demo_run: AuditRun) -> None:
    xml = _parse(demo_run)
    expected = {f"{vm.provider}/{vm.account}" for vm in demo_run.vms} | {
        f"{s.provider}/{s.account}" for s in demo_run.coverage.scopes
    }
    names = [suite.name for suite in xml]
    assert names == sorted(expected)
    by_class: dict[str, list[TestCase]] = {}
    for case in _cases(xml):
        if case.name != junit.COVERAGE_CASE:
            by_class.setdefault(case.classname, []).append(case)
    for vm in demo_run.vms:
        cases = by_class.pop(f"{vm.provider}.{vm.account}.{vm.region}.{vm.id}")
        assert [c.name for c in cases] == [p.value for p in Party]
        for case in cases:
            props = _props(case)
            assert props["level"] == vm.level.value
            assert props["technology"] == vm.technology.value
            ps = vm.party_status[Party(case.name)]
            assert props["status"] == ps.status.value
            if ps.status is Status.CAN_ACCESS and ps.party in PROVIDER_PARTIES:
                assert isinstance(case.result[0], Failure)
                assert case.result[0].message == ps.reason
            elif ps.status is Status.UNDETERMINED:
                assert isinstance(case.result[0], Skipped)
                assert case.result[0].message == ps.reason
            else:
                assert case.is_passed
    assert not by_class


def test_image_publisher_and_cpu_vendor_pass_with_their_status(demo_run: AuditRun) -> None:
    cases = [c for c in _cases(_parse(demo_run)) if c.name in ("image_publisher", "cpu_vendor")]
    can_access = [c for c in cases if _props(c)["status"] == Status.CAN_ACCESS.value]
    assert can_access, "the demo fleet has CAN_ACCESS for the CPU vendor"
    assert all(c.is_passed for c in can_access)
    assert all(_props(c)["provider_controlled"] == "false" for c in cases)


def test_coverage_cases(demo_run: AuditRun) -> None:
    coverage = [c for c in _cases(_parse(demo_run)) if c.name == junit.COVERAGE_CASE]
    assert len(coverage) == len(demo_run.coverage.scopes)
    by_status = {s.status for s in demo_run.coverage.scopes}
    assert "failed" in by_status
    failed = [c for c in coverage if _props(c)["status"] == "failed"]
    assert failed and all(c.is_error for c in failed)
    assert all(c.is_passed for c in coverage if _props(c)["status"] == "complete")


def test_untrusted_text_stays_well_formed_xml(demo_run: AuditRun) -> None:
    vm = tables.sorted_vms(demo_run)[0]
    evil = 'x\x00\x1b"<b>&amp;</testcase>\ud800'
    run = demo_run.model_copy(
        update={
            "vms": [v.model_copy(update={"name": evil}) if v is vm else v for v in demo_run.vms]
        }
    )
    xml = _parse(run)
    names = {_props(c).get("vm_name") for c in _cases(xml)}
    assert 'x\ufffd\ufffd"<b>&amp;</testcase>\ufffd' in names
    assert xml.tests == _parse(demo_run).tests


def test_render_is_deterministic(demo_run: AuditRun) -> None:
    assert junit.render(demo_run) == junit.render(demo_run)
    shuffled = demo_run.model_copy(update={"vms": list(reversed(demo_run.vms))})
    assert junit.render(shuffled) == junit.render(demo_run)
