"""OSCAL assessment-results: valid (trestle, and `oscal` if installed), evidence-bearing, stable."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import reports
from auditor.api import scan
from auditor.model import AuditRun, Party, Status
from auditor.reports import oscal

DEMO_FLEET = Path(__file__).resolve().parents[2] / "examples" / "demo-fleet"
DEMO_MAA_ISSUER = "https://ccaudit-demo-maa.example"
EVIL_NAME = (
    ' evil\n"}], "injected": true, "x": [{"a": "</script><script>alert(1)</script> '
    "[click](javascript:alert(1)) **bold** {{ insert: param, ac-1_prm_1 }} \\ \u2028\t\x00 "
)


@pytest.fixture(scope="module")
def run() -> AuditRun:
    """The demo fleet as `ccaudit demo` scans it: with the guest MAA token (a verified item)."""
    return scan(
        replay=DEMO_FLEET,
        guest_evidence=DEMO_FLEET / "guest-evidence",
        maa_issuers=[DEMO_MAA_ISSUER],
        maa_jwks=DEMO_FLEET / "maa-demo-jwks.json",
    )


@pytest.fixture(scope="module")
def rendered(run: AuditRun) -> bytes:
    files = oscal.render(run)
    assert list(files) == [oscal.FILE]
    return files[oscal.FILE]


@pytest.fixture(scope="module")
def ar(rendered: bytes) -> dict[str, Any]:
    doc = json.loads(rendered)
    assert list(doc) == ["assessment-results"]
    result: dict[str, Any] = doc["assessment-results"]
    return result


def _props(obj: dict[str, Any], name: str) -> list[str]:
    return [p["value"] for p in obj.get("props", []) if p["name"] == name]


def _prop(obj: dict[str, Any], name: str) -> str:
    values = _props(obj, name)
    assert len(values) == 1, (name, values)
    return values[0]


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, val in node.items():
            yield key, val
            yield from _walk(val)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _trestle_validate(doc: dict[str, Any]) -> None:
    from trestle.oscal.assessment_results import AssessmentResults

    validate = getattr(AssessmentResults, "model_validate", None) or AssessmentResults.parse_obj
    validate(doc["assessment-results"])


def _oscal_validate(text: str) -> None:
    oscal_pkg = pytest.importorskip("oscal")
    loaded = oscal_pkg.OSCAL.loads(text)
    assert loaded, "oscal could not load the document"
    assert loaded.is_valid, loaded.validation_errors


def test_registered_format(run: AuditRun, rendered: bytes) -> None:
    assert reports.render(run, "oscal") == {oscal.FILE: rendered}
    assert rendered.endswith(b"\n")


def test_validates_with_compliance_trestle(ar: dict[str, Any]) -> None:
    _trestle_validate({"assessment-results": ar})


def test_trestle_rejects_a_broken_document(ar: dict[str, Any]) -> None:
    """The validator is not a no-op: a state outside the enum fails."""
    from pydantic import ValidationError

    broken = json.loads(json.dumps(ar))
    broken["results"][0]["findings"][0]["target"]["status"]["state"] = "compliant"
    with pytest.raises(ValidationError):
        _trestle_validate({"assessment-results": broken})


@pytest.mark.parametrize("version", [oscal.OSCAL_VERSION, "1.2.1"])
def test_validates_with_oscal_package(ar: dict[str, Any], version: str) -> None:
    doc = json.loads(json.dumps(ar))
    doc["metadata"]["oscal-version"] = version
    _oscal_validate(json.dumps({"assessment-results": doc}))


def test_metadata_and_result(run: AuditRun, ar: dict[str, Any]) -> None:
    meta = ar["metadata"]
    assert meta["title"] == f"cc-auditor confidential-computing audit {run.run_id}"
    assert meta["last-modified"] == oscal._ts(run.finished_at)
    assert meta["last-modified"].endswith("Z")
    assert meta["version"] == run.tool.version
    assert meta["oscal-version"] == oscal.OSCAL_VERSION
    assert _prop(meta, "run-id") == run.run_id
    [result] = ar["results"]
    name = json.dumps([run.run_id, "result"])
    assert result["uuid"] == str(uuid.uuid5(oscal.UUID_NAMESPACE, name))
    assert result["start"] == oscal._ts(run.started_at)
    assert result["end"] == oscal._ts(run.finished_at)
    assert result["reviewed-controls"]["control-selections"] == [
        {
            "description": "All objectives of the rule packs listed in the metadata.",
            "include-all": {},
        }
    ]
    refs = _props(result["reviewed-controls"], "reference")
    assert any(r.startswith("GDPR Art. 32") for r in refs)
    assert any(r.startswith("C5:2026") for r in refs)
    # import-ap points at the plan placeholder in back-matter, which names the rule packs
    plan_uuid = ar["import-ap"]["href"].removeprefix("#")
    plan = next(r for r in ar["back-matter"]["resources"] if r["uuid"] == plan_uuid)
    assert _props(plan, "rule-pack-sha256") == [p.sha256 for p in run.rule_packs]
    # every prop is in the cc-auditor namespace and named by a lowercase token
    for key, val in _walk(ar):
        if key == "props":
            for p in val:
                assert p["ns"] == oscal.NS
                assert p["name"] == p["name"].lower()


def test_observations_carry_evidence(run: AuditRun, ar: dict[str, Any]) -> None:
    result = ar["results"][0]
    items = {i["uuid"]: i for i in result["local-definitions"]["inventory-items"]}
    seen: set[tuple[str, str]] = set()
    methods: set[str] = set()
    for obs in result["observations"]:
        if "relevant-evidence" not in obs:
            continue  # a coverage gap
        [evidence] = obs["relevant-evidence"]
        sha = _prop(evidence, "sha256")
        ev = run.evidence[sha]  # the hash exists in the run
        assert _prop(evidence, "kind") == ev.kind
        assert _prop(evidence, "source") == ev.source.value
        assert _prop(evidence, "call") == ev.call
        assert evidence["description"]
        assert obs["collected"] == oscal._ts(ev.collected_at)
        assert obs["methods"] == (["TEST"] if ev.verification is not None else ["EXAMINE"])
        methods.update(obs["methods"])
        [subject] = obs["subjects"]
        assert subject["type"] == "inventory-item"
        vm_key = _prop(obs, "vm-key")
        assert _prop(items[subject["subject-uuid"]], "vm-key") == vm_key
        seen.add((vm_key, sha))
    expected = {
        (vm.key, sha)
        for vm in run.vms
        for sha in [
            *(s for shas in vm.evidence.values() for s in shas),
            *(s for ps in vm.party_status.values() for s in ps.evidence),
        ]
    }
    assert seen == expected
    assert methods == {"TEST", "EXAMINE"}  # the verified MAA token and EK certificates are TEST


def test_evidence_resources_hash_only_exact_files(run: AuditRun, ar: dict[str, Any]) -> None:
    resources = ar["back-matter"]["resources"]
    hashed = [r for r in resources if any("hashes" in link for link in r.get("rlinks", []))]
    assert hashed, "the guest MAA token is stored byte for byte and hashed"
    for res in hashed:
        [link] = res["rlinks"]
        sha = _prop(res, "sha256")
        assert run.evidence[sha].encoding == "base64"
        assert link["href"].startswith("evidence/guest/")
        assert link["hashes"] == [{"algorithm": "SHA-256", "value": sha}]
    json_items = [r for r in resources if _props(r, "encoding") == ["json"]]
    assert json_items
    assert all(link["href"].startswith("raw/") for r in json_items for link in r["rlinks"])


def test_findings_carry_rules_and_party_statuses(run: AuditRun, ar: dict[str, Any]) -> None:
    result = ar["results"][0]
    obs_sha = {
        o["uuid"]: _prop(o["relevant-evidence"][0], "sha256")
        for o in result["observations"]
        if "relevant-evidence" in o
    }
    findings = {(_prop(f, "vm-key"), f["target"]["target-id"]): f for f in result["findings"]}
    assert len(findings) == len(result["findings"]) == len(run.vms) * (len(Party) + 1)
    for vm in run.vms:
        for party, status in vm.parties.items():
            f = findings[(vm.key, party.value)]
            target = f["target"]
            assert target["type"] == "objective-id"
            assert _prop(f, "party") == party.value
            assert _prop(f, "party-status") == status.value
            assert _prop(target, "party-status") == status.value
            assert _prop(f, "level") == vm.level.value
            satisfied = "satisfied" if status is Status.EXCLUDED else "not-satisfied"
            assert target["status"]["state"] == satisfied
            rule_ids = _props(f, "rule-id")
            assert set(vm.party_status[party].rules) <= set(rule_ids)
            assert {x.rule_id for x in vm.findings if x.party == party} <= set(rule_ids)
            related = {
                obs_sha.get(r["observation-uuid"]) for r in f.get("related-observations", [])
            }
            assert set(vm.party_status[party].evidence) <= related
        gdpr = findings[(vm.key, oscal.GDPR_OBJECTIVE)]
        assert _prop(gdpr, "provider-can-access") == vm.gdpr.provider_can_access.value
        assert _props(gdpr, "blocking-party") == [p.value for p in vm.gdpr.blocking_parties]
    # rule props come in groups: id, status and severity of one rule share a group
    some = findings[(run.vms[0].key, Party.HYPERVISOR.value)]
    groups = {p["group"] for p in some["props"] if p["name"] == "rule-id"}
    for group in groups:
        names = [p["name"] for p in some["props"] if p.get("group") == group]
        assert names == ["rule-id", "rule-status", "rule-severity"]


def test_coverage_gaps_are_observations_and_risks(run: AuditRun, ar: dict[str, Any]) -> None:
    result = ar["results"][0]
    assert not run.coverage.complete
    gap_obs = {o["uuid"]: o for o in result["observations"] if "relevant-evidence" not in o}
    risks = {r["uuid"]: r for r in result["risks"]}
    # coverage gaps, plus VM-level evidence problems (e.g. a report not bound to its VM)
    every_gap = {oscal._gap_key(g): g for g in run.coverage.gaps}
    every_gap.update({oscal._gap_key(g): g for vm in run.vms for g in vm.gaps})
    assert len(gap_obs) == len(risks) == len(every_gap)
    assert {_prop(o, "call") for o in gap_obs.values()} == {g.call for g in every_gap.values()}
    for risk in risks.values():
        assert risk["status"] == "open"
        [rel] = risk["related-observations"]
        assert rel["observation-uuid"] in gap_obs
    scope_gaps = [o for o in gap_obs.values() if _prop(o, "affects") == "scope"]
    assert scope_gaps and all("subjects" not in o for o in scope_gaps)
    # a VM whose key custodian is UNDETERMINED because DescribeVolumes was denied
    vm = next(v for v in run.vms if v.parties[Party.KEY_CUSTODIAN] is Status.UNDETERMINED)
    f = next(
        f
        for f in result["findings"]
        if _prop(f, "vm-key") == vm.key and f["target"]["target-id"] == "key_custodian"
    )
    assert f["target"]["status"] == {
        "state": "not-satisfied",
        "reason": "other",
        "remarks": f["target"]["status"]["remarks"],
    }
    assert _prop(f, "undetermined") == "true"
    assert [r["risk-uuid"] for r in f["related-risks"]]
    assert all(r["risk-uuid"] in risks for r in f["related-risks"])
    assert any(r["observation-uuid"] in gap_obs for r in f["related-observations"])


def test_uuids_unique_and_references_resolve(ar: dict[str, Any]) -> None:
    defined = [val for key, val in _walk(ar) if key == "uuid"]
    assert len(defined) == len(set(defined))
    known = set(defined)
    refs = [
        val
        for key, val in _walk(ar)
        if key in ("observation-uuid", "risk-uuid", "subject-uuid", "actor-uuid")
    ]
    assert refs and set(refs) <= known
    hrefs = [val for key, val in _walk(ar) if key == "href" and val.startswith("#")]
    assert hrefs and {h[1:] for h in hrefs} <= known
    for u in known:
        assert uuid.UUID(u).version == 5


def test_deterministic(run: AuditRun, rendered: bytes) -> None:
    assert oscal.render(run)[oscal.FILE] == rendered
    stored = AuditRun.model_validate_json(run.model_dump_json())
    assert oscal.render(stored)[oscal.FILE] == rendered
    other = run.model_copy(update={"run_id": run.run_id + "-other"})
    doc, again = json.loads(rendered), json.loads(oscal.render(other)[oscal.FILE])
    assert doc["assessment-results"]["uuid"] != again["assessment-results"]["uuid"]
    # inventory items keep their identity across runs
    items = doc["assessment-results"]["results"][0]["local-definitions"]["inventory-items"]
    items2 = again["assessment-results"]["results"][0]["local-definitions"]["inventory-items"]
    assert [i["uuid"] for i in items] == [i["uuid"] for i in items2]


def test_malicious_vm_name_stays_data(run: AuditRun, ar: dict[str, Any]) -> None:
    evil = run.model_copy(deep=True)
    evil.vms[0].name = EVIL_NAME
    text = oscal.render(evil)[oscal.FILE].decode("utf-8")
    doc = json.loads(text)
    _trestle_validate(doc)
    _oscal_validate(text)
    res = doc["assessment-results"]
    assert not any(key == "injected" for key, _ in _walk(res))
    assert {k: len(v) for k, v in res["results"][0].items() if isinstance(v, list)} == {
        k: len(v) for k, v in ar["results"][0].items() if isinstance(v, list)
    }
    item = res["results"][0]["local-definitions"]["inventory-items"][0]
    stored = _prop(item, "vm-name")
    assert stored == oscal.value(EVIL_NAME)
    assert "\n" not in stored and "\u2028" not in stored and "\x00" not in stored
    assert stored.startswith("\\u0020evil\\u000a")
    assert json.loads('"' + stored.replace('"', '\\"') + '"') == EVIL_NAME  # reversible
    # in Markdown fields the name cannot open a tag, a link, emphasis or an insert
    titles = [
        f["title"] for f in res["results"][0]["findings"] if _prop(f, "vm-key") == evil.vms[0].key
    ]
    for title in titles:
        assert "\n" not in title
        assert "\\<script\\>" in title and "\\[click\\]" in title and "\\{\\{" in title
        assert "\\*\\*bold\\*\\*" in title
        assert "<script>" not in title


def test_text_helpers() -> None:
    assert oscal.value("eu-hr-db") == "eu-hr-db"
    assert oscal.value("") is None
    assert oscal.value(" a\tb ") == "\\u0020a\\u0009b\\u0020"
    assert oscal.value("a\\b\n") == "a\\\\b\\u000a"
    assert oscal.md("api_resource _x_") == "api_resource \\_x\\_"
    assert oscal.md('<b>"q"</b> [l](u)') == '\\<b\\>\\"q\\"\\</b\\> \\[l\\](u)'
    assert oscal.md_block("1. item") == "1\\. item"
    assert oscal.md_block("- item") == "\\- item"


def test_naive_times_are_utc() -> None:
    from datetime import datetime

    assert oscal._ts(datetime(2026, 11, 20, 10, 0, 0)) == "2026-11-20T10:00:00Z"


def _md_walk(s: str) -> str:
    """`oscal.md` character by character, as the OSCAL rules state it (the reference)."""
    out = []
    for i, c in enumerate(s):
        if c in oscal._MARKDOWN_SPECIAL:
            out.append("\\" + c)
        elif c == "_":
            inner = 0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()
            out.append(c if inner else "\\_")
        elif oscal._unsafe(c):
            out.append(oscal._escape_char(c))
        else:
            out.append(c)
    return "".join(out)


_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(max_codepoint=127),
        st.sampled_from(list("_*[\\ \t\n\u00e9\u200b\u2028\ufeff\U0001f600")),
    ),
    max_size=40,
)


@settings(max_examples=500, deadline=None)
@given(_TEXT)
def test_text_fast_paths_equal_the_character_walk(text: str) -> None:
    # ids, titles and reasons take the ASCII fast paths; any text must come out the same
    assert oscal.md(text) == _md_walk(text)
    assert oscal._all_safe(text) == (not any(oscal._unsafe(c) for c in text))
    if text and oscal._all_safe(text) and text == text.strip(" ") and "\\" not in text:
        assert oscal.value(text) == text
