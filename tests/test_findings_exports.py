"""Findings where platform teams already look: OCSF Compliance Findings (validated against the
published OCSF 1.8.0 schema), ASFF for AWS Security Hub (validated against botocore's model) and
`ccaudit export securityhub` through boto3 to fakecloud's BatchImportFindings."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import auditor
from auditor.cli import app
from auditor.fakecloud import FakeCloud, FaultConfig, SecurityHubHandler
from auditor.model import AuditRun
from auditor.reports import asff, ocsf, render
from auditor.reports.tables import failing_findings
from tests.conftest import DEMO_FLEET
from tests.ocsf_validator import validate

runner = CliRunner()
HR_ACCOUNT, US_ACCOUNT = "111122223333", "444455556666"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return auditor.demo(store=tmp_path_factory.mktemp("store"))


# -- OCSF ---------------------------------------------------------------------------------------


def test_every_ocsf_event_validates_against_the_published_schema(demo: Any) -> None:
    events = json.loads(render(demo.model, "ocsf")["ocsf-findings.json"])
    failing = list(failing_findings(demo.model))
    assert len(events) == len(failing) > 100
    problems = {p for e in events for p in validate(e)}
    assert not problems, sorted(problems)[:10]
    assert {e["class_uid"] for e in events} == {2003} and {e["type_uid"] for e in events} == {
        200301
    }
    assert {e["metadata"]["version"] for e in events} == {"1.8.0"}


def test_ocsf_keeps_the_tools_vocabulary(demo: Any) -> None:
    events = ocsf.events(demo.model)
    by_status = {e["unmapped"]["ccaudit"]["status"]: e["compliance"]["status_id"] for e in events}
    assert by_status == {"CAN_ACCESS": 3, "UNDETERMINED": 0}  # Fail, Unknown: never Pass
    assert not any(e["compliance"]["status_id"] == 1 for e in events)
    one = next(e for e in events if e["resources"][0]["name"] == "eu-payments-api")
    ccaudit = one["unmapped"]["ccaudit"]
    assert ccaudit["level"] == "L3" and ccaudit["provider_can_reach_plaintext"] == "yes"
    assert {e["cloud"]["provider"] for e in events} == {"AWS", "GCP", "Azure", "libvirt (KVM)"}
    node = next(e for e in events if e["resources"][0]["name"].startswith("aks-cvmpool"))
    assert node["resources"][0]["group"] == {
        "name": "payroll-aks/cvmpool",
        "type": "Kubernetes node pool",
    }
    with_evidence = [e for e in events if e["unmapped"]["ccaudit"]["evidence_sha256"]]
    assert with_evidence and all(
        all(len(s) == 64 for s in e["unmapped"]["ccaudit"]["evidence_sha256"])
        for e in with_evidence
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda e: e.update(cmpliance={}), "cmpliance: not an attribute"),
        (lambda e: e.pop("finding_info"), "required finding_info missing"),
        (lambda e: e.update(severity_id=7), "severity_id: 7 is not one of"),
        (lambda e: e["metadata"].update(profiles=[]), "cloud: belongs to profile cloud"),
        (lambda e: e["compliance"].update(status_id="3"), "compliance.status_id: expected"),
        (lambda e: e["resources"][0].pop("uid") and e["resources"][0].pop("name"), "at least one"),
    ],
)
def test_the_schema_check_catches_what_a_lake_would_refuse(
    demo: Any, change: Any, problem: str
) -> None:
    event = copy.deepcopy(ocsf.events(demo.model)[0])
    change(event)
    assert any(problem in p for p in validate(event)), validate(event)


# -- ASFF ---------------------------------------------------------------------------------------


def _asff_shape() -> Any:
    import botocore.session

    model = botocore.session.get_session().get_service_model("securityhub")
    return model.operation_model("BatchImportFindings").input_shape


def test_asff_findings_validate_against_botocore_and_cover_aws_only(demo: Any) -> None:
    from botocore.validate import ParamValidator

    items = asff.load(render(demo.model, "asff")["asff-findings.json"])
    aws_failing = [(v, f) for v, f in failing_findings(demo.model) if v.provider == "aws"]
    assert len(items) == len(aws_failing) > 0
    for start in range(0, len(items), 100):
        report = ParamValidator().validate({"Findings": items[start : start + 100]}, _asff_shape())
        assert not report.has_errors(), report.generate_report()
    assert {i["Compliance"]["Status"] for i in items} == {"FAILED", "NOT_AVAILABLE"}
    assert all(i["ProductArn"].endswith(f":product/{i['AwsAccountId']}/default") for i in items)
    hr = next(i for i in items if i["ProductFields"]["ccaudit/VmName"] == "eu-payments-api")
    assert hr["ProductFields"]["ccaudit/Level"] == "L3"
    assert hr["Resources"][0]["Id"] == (
        "arn:aws:ec2:eu-west-1:111122223333:instance/i-045a5d8d3c4039e06"
    )
    assert len({i["Id"] for i in items}) == len(items)  # one per VM and rule


# -- export securityhub ---------------------------------------------------------------------------


def _hub(fc: FakeCloud) -> SecurityHubHandler:
    return next(h for h in fc.handlers if isinstance(h, SecurityHubHandler))


def _export(run_dir: Path, fc: FakeCloud, account: str, *extra: str) -> Any:
    env = {
        "AWS_ACCESS_KEY_ID": account,
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    args = ["export", "securityhub", str(run_dir), "--endpoint-url", fc.endpoint, *extra]
    return runner.invoke(app, args, env=env)


def test_export_imports_the_callers_findings_and_lists_each_refusal(demo: Any) -> None:
    items = asff.findings(demo.model)
    mine = [i for i in items if i["AwsAccountId"] == HR_ACCOUNT]
    others = [i for i in items if i["AwsAccountId"] != HR_ACCOUNT]
    assert mine and others
    with FakeCloud(DEMO_FLEET) as fc:
        result = _export(demo.path, fc, HR_ACCOUNT)
        imported = _hub(fc).imported
    assert result.exit_code == 3, result.output
    assert f"imported {len(mine)} of {len(items)} findings of run {demo.run_id}" in result.output
    assert {i["Id"] for i in imported.values()} == {i["Id"] for i in mine}
    assert result.output.count("refused ") == len(others)
    assert "AccessDeniedException" in result.output
    sent = next(iter(imported.values()))
    assert sent == next(i for i in mine if i["Id"] == sent["Id"])  # exactly what asff renders


def _big_run(demo: Any) -> AuditRun:
    """The demo with one AWS VM copied 30 times: more than 100 findings in one region."""
    model: AuditRun = demo.model.model_copy(deep=True)
    base = next(v for v in model.vms if v.name == "eu-payments-batch")
    for n in range(30):
        copy_ = base.model_copy(deep=True)
        copy_.id = f"i-0{n:016x}"
        model.vms.append(copy_)
    return model


def test_export_sends_batches_of_100_and_absorbs_throttling(demo: Any, tmp_path: Path) -> None:
    run = _big_run(demo)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "result.json").write_text(run.model_dump_json())
    mine = [i for i in asff.findings(run) if i["AwsAccountId"] == HR_ACCOUNT]
    assert len(mine) > 200
    with FakeCloud(DEMO_FLEET, faults=FaultConfig(throttle_first=1)) as fc:
        result = _export(run_dir, fc, HR_ACCOUNT)
        calls = [r for r in fc.request_log if r.operation == "BatchImportFindings"]
        imported = _hub(fc).imported
    assert result.exit_code == 3, result.output  # the other account's findings are refused
    assert len(imported) == len(mine)
    accepted = [r for r in calls if r.status == 200]
    assert any(r.status == 429 for r in calls)  # throttled once, retried by botocore
    assert len(accepted) == sum(-(-n // 100) for n in _per_region(asff.findings(run)).values())


def _per_region(items: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        region = i["ProductArn"].split(":")[3]
        out[region] = out.get(region, 0) + 1
    return out


def test_export_without_credentials_is_one_line_and_exit_2(demo: Any) -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    result = runner.invoke(
        app,
        ["export", "securityhub", str(demo.path), "--endpoint-url", "http://127.0.0.1:9"],
        env=env,
    )
    assert result.exit_code == 2 and "no AWS credentials for Security Hub" in result.output


def test_fakecloud_refuses_a_malformed_batch(demo: Any) -> None:
    import boto3
    from botocore.exceptions import ClientError, ParamValidationError

    with FakeCloud(DEMO_FLEET) as fc:
        client = boto3.client(
            "securityhub",
            region_name="eu-west-1",
            endpoint_url=fc.endpoint,
            aws_access_key_id=HR_ACCOUNT,
            aws_secret_access_key="x",
        )
        finding = asff.findings(demo.model)[0]
        with pytest.raises(ClientError, match="InvalidInputException"):
            client.batch_import_findings(Findings=[finding] * 101)
        with pytest.raises(ParamValidationError):  # botocore checks first, like the service
            client.batch_import_findings(Findings=[{**finding, "Severity": "HIGH"}])
