"""Fault scenarios through the real SDKs: throttling, 5xx, denied scopes, a hung scope and a
response that does not parse. The scan must finish, keep every VM it could see, name every gap
with its scope, call and code, exit 3, and give the full result once the faults are gone."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from auditor.api import recorded_at
from auditor.cli import EXIT_INCOMPLETE, app, exit_code
from auditor.engine import Engine
from auditor.fakecloud import FakeCloud
from auditor.model import AuditRun, Scope
from auditor.providers.aws import AwsProvider, AwsTarget
from auditor.providers.azure import AzureProvider
from auditor.providers.base import Provider
from auditor.providers.gcp import GcpProvider
from auditor.rules.loader import load_packs
from auditor.run import run_audit
from auditor.runs.reverify import compare_runs
from tests.conftest import DEMO_FLEET

AWS_DENIED = ("aws", "111122223333", "us-east-2")
AWS_HUNG = ("aws", "444455556666", "eu-west-1")
GCP_DENIED = ("gcp", "eu-analytics-sandbox", None)
AZURE_DENIED = ("azure", "d29c65b4-8023-4624-a090-dd5ecb9a3e8e", None)
MALFORMED_VM = "claims-db-snp"
SEED = 11

#: (provider, account, region, call, code) of every gap the faulted scan must report, no more.
EXPECTED_GAPS = {
    (*AWS_DENIED, "ec2:DescribeInstances", "UnauthorizedOperation"),
    (*AWS_HUNG, "ec2:DescribeInstances", "ReadTimeoutError"),
    (*GCP_DENIED, "compute.instances.aggregatedList", "PERMISSION_DENIED"),
    (*AZURE_DENIED, "virtualMachines.listAll", "AuthorizationFailed"),
}


def _error_file(root: Path, rel: str, status: int, code: str, message: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": status, "code": code, "message": message}))


@pytest.fixture(scope="module")
def clean_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo fleet without its recorded permission errors: every scope readable."""
    root = tmp_path_factory.mktemp("clean") / "fleet"
    shutil.copytree(DEMO_FLEET, root, ignore=shutil.ignore_patterns("guest-evidence"))
    for error in root.rglob("*.error.json"):
        error.unlink()
    return root


def _faulted(clean: Path, target: Path, hang: bool = True) -> Path:
    shutil.copytree(clean, target)
    # one scope permanently denied per cloud, in each cloud's own words
    _error_file(
        target,
        "aws/111122223333/us-east-2/DescribeInstances.error.json",
        403,
        "UnauthorizedOperation",
        "You are not authorized to perform this operation.",
    )
    _error_file(
        target,
        "gcp/eu-analytics-sandbox/aggregatedList.error.json",
        403,
        "PERMISSION_DENIED",
        "Required 'compute.instances.list' permission for 'projects/eu-analytics-sandbox'",
    )
    _error_file(
        target,
        f"azure/{AZURE_DENIED[1]}/virtualMachines.error.json",
        403,
        "AuthorizationFailed",
        "The client does not have authorization to perform action "
        "'Microsoft.Compute/virtualMachines/read'.",
    )
    config: dict[str, Any] = {
        "throttle_rate": 0.2,
        "error_rate": 0.05,
        "seed": SEED,
        "retry_after_seconds": 0,
        "malformed": [
            {
                "cloud": "gcp",
                "operation": "instances.getShieldedInstanceIdentity",
                "resource": MALFORMED_VM,
            }
        ],
    }
    if hang:
        config["hang"] = [
            {
                "cloud": "aws",
                "account": AWS_HUNG[1],
                "region": AWS_HUNG[2],
                "operation": "DescribeInstances",
            }
        ]
        config["hang_seconds"] = 1.5
    (target / "fakecloud.yaml").write_text(yaml.safe_dump(config))
    return target


@pytest.fixture
def fast_aws_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's throttling backoff starts at 1 s and is not configurable; shrink it here only."""
    from botocore.retries import standard

    scales = dict(standard.ExponentialBackoff._DEFAULT_BACKOFF_CONFIG)
    scales.update(throttling_base_scale=0.01, non_throttling_base_scale=0.01)
    monkeypatch.setattr(standard.ExponentialBackoff, "_DEFAULT_BACKOFF_CONFIG", scales)


def _providers(root: Path, endpoint: str) -> list[Provider]:
    aws = AwsProvider(
        [AwsTarget(access_key_id=a, secret_access_key="replay") for a in _dirs(root, "aws")],
        endpoint_url=endpoint,
        read_timeout=0.2,
        connect_timeout=2,
    )
    gcp = GcpProvider(
        _dirs(root, "gcp"),
        endpoint_url=endpoint,
        anonymous=True,
        as_of=recorded_at(root),
        retry_initial=0.01,
        retry_maximum=0.05,
        retry_timeout=30,
        call_timeout=5,
    )
    azure = AzureProvider(
        _dirs(root, "azure"), endpoint_url=endpoint, replay=True, retry_backoff=0.01
    )
    return [aws, gcp, azure]


def _dirs(root: Path, cloud: str) -> list[str]:
    return sorted(p.name for p in (root / cloud).iterdir() if p.is_dir())


def _audit(root: Path, processes: int = 1) -> tuple[AuditRun, FakeCloud]:
    with FakeCloud(root) as cloud:
        run = run_audit(
            _providers(root, cloud.endpoint),
            Engine(load_packs()),
            Scope(providers=["aws", "gcp", "azure"]),
            # one call at a time per process: the seeded fault sequence is reproducible
            concurrency=processes,
            processes=processes,
            as_of=recorded_at(root),
        )
    return run, cloud


def _gap_keys(run: AuditRun) -> set[tuple[Any, ...]]:
    return {(g.provider, g.account, g.region, g.call, g.code) for g in run.coverage.gaps}


def _in(vm_scope: tuple[str, str, str | None], denied: tuple[str, str, str | None]) -> bool:
    provider, account, region = denied
    return vm_scope[:2] == (provider, account) and region in (None, vm_scope[2])


@pytest.mark.usefixtures("fast_aws_backoff")
def test_faulted_scan_keeps_what_it_saw_and_names_every_gap(
    clean_fleet: Path, tmp_path: Path
) -> None:
    clean, _ = _audit(clean_fleet)
    assert clean.coverage.complete, clean.coverage.gaps

    faulted_root = _faulted(clean_fleet, tmp_path / "faulted")
    faulted, cloud = _audit(faulted_root)

    # the faults really happened, in every cloud, and the SDKs' retries absorbed the transient
    faults = Counter((r.cloud, r.fault) for r in cloud.request_log if r.fault)
    for name in ("aws", "gcp", "azure"):
        assert faults[(name, "throttle")] > 0, faults
    assert sum(n for (_, f), n in faults.items() if f in ("internal_error", "unavailable")) > 0
    assert faults[("aws", "hang")] >= 1 and faults[("gcp", "malformed")] == 1

    # every gap named with scope, call and code; throttling and 5xx left none
    malformed = [
        g
        for g in faulted.coverage.gaps
        if g.call == "compute.instances.getShieldedInstanceIdentity"
    ]
    assert [(g.account, g.resource) for g in malformed] == [("eu-claims-prod", MALFORMED_VM)]
    assert (
        _gap_keys(faulted) - {(g.provider, g.account, g.region, g.call, g.code) for g in malformed}
        == EXPECTED_GAPS
    )
    assert all(g.message for g in faulted.coverage.gaps)
    failed = {
        (c.provider, c.account, c.region) for c in faulted.coverage.scopes if c.status == "failed"
    }
    assert failed == {AWS_DENIED, AWS_HUNG, GCP_DENIED, AZURE_DENIED}

    # no VM it could see is lost: only the VMs of the failed scopes are missing
    lost = {vm.key for vm in clean.vms} - {vm.key for vm in faulted.vms}
    assert {vm.key for vm in faulted.vms} <= {vm.key for vm in clean.vms}
    assert lost == {
        vm.key
        for vm in clean.vms
        if any(_in((vm.provider, vm.account, vm.region), d) for d in failed)
    }
    assert len(faulted.vms) == len(clean.vms) - 8
    # the VM whose identity response did not parse is kept, with that section unknown
    (vm,) = [v for v in faulted.vms if v.name == MALFORMED_VM]
    assert [g.call for g in vm.gaps] == ["compute.instances.getShieldedInstanceIdentity"]

    assert exit_code(faulted, None) == EXIT_INCOMPLETE

    # the faults removed: the full result, identical to the clean run
    (faulted_root / "fakecloud.yaml").unlink()
    for error in faulted_root.rglob("*.error.json"):
        error.unlink()
    again, _ = _audit(faulted_root)
    assert again.coverage.complete
    assert compare_runs(clean, again) == []


def test_faulted_scan_in_worker_processes_names_the_same_gaps(
    clean_fleet: Path, tmp_path: Path
) -> None:
    # the same faults, the scopes read by two worker processes (where botocore's throttling
    # backoff is its own 1 s base: fewer calls throttled would not test anything)
    faulted, cloud = _audit(_faulted(clean_fleet, tmp_path / "faulted"), processes=2)
    assert sum(1 for r in cloud.request_log if r.fault == "throttle") > 0
    malformed = {
        (g.provider, g.account, g.region, g.call, g.code)
        for g in faulted.coverage.gaps
        if g.call == "compute.instances.getShieldedInstanceIdentity"
    }
    assert len(malformed) == 1
    assert _gap_keys(faulted) - malformed == EXPECTED_GAPS
    failed = {
        (c.provider, c.account, c.region) for c in faulted.coverage.scopes if c.status == "failed"
    }
    assert failed == {AWS_DENIED, AWS_HUNG, GCP_DENIED, AZURE_DENIED}
    clean, _ = _audit(clean_fleet)
    assert {vm.key for vm in faulted.vms} == {
        vm.key
        for vm in clean.vms
        if not any(_in((vm.provider, vm.account, vm.region), d) for d in failed)
    }


def test_same_seed_same_faults(clean_fleet: Path, tmp_path: Path, fast_aws_backoff: None) -> None:
    root = _faulted(clean_fleet, tmp_path / "f", hang=False)
    first, c1 = _audit(root)
    second, c2 = _audit(root)
    faults = [(r.cloud, r.operation, r.resource, r.fault) for r in c1.request_log]
    assert faults == [(r.cloud, r.operation, r.resource, r.fault) for r in c2.request_log]
    assert _gap_keys(first) == _gap_keys(second)


def test_cli_exits_3_and_lists_the_gaps(
    clean_fleet: Path, tmp_path: Path, fast_aws_backoff: None
) -> None:
    root = _faulted(clean_fleet, tmp_path / "f", hang=False)
    out = tmp_path / "result.json"
    # one call at a time, as _audit: with several in flight, which call meets which of the
    # seeded faults depends on timing, and a call may meet more throttles than it retries
    argv = ["scan", "--replay", str(root), "--no-save", "--concurrency", "1"]
    result = CliRunner().invoke(app, [*argv, "--format", "json", "--output", str(out)])
    assert result.exit_code == EXIT_INCOMPLETE, result.output
    data = json.loads(out.read_text())
    codes = {(g["provider"], g["call"], g["code"]) for g in data["coverage"]["gaps"]}
    assert ("aws", "ec2:DescribeInstances", "UnauthorizedOperation") in codes
    assert ("gcp", "compute.instances.aggregatedList", "PERMISSION_DENIED") in codes
    assert ("azure", "virtualMachines.listAll", "AuthorizationFailed") in codes
    throttled = [
        g
        for g in data["coverage"]["gaps"]
        if g["code"] in ("RequestLimitExceeded", "TooManyRequests")
    ]
    assert not throttled, throttled


def test_fault_config_rejects_unknown_match_fields(tmp_path: Path) -> None:
    from auditor.fakecloud import FakeCloudConfigError
    from auditor.fakecloud.faults import load_fault_config

    (tmp_path / "fakecloud.yaml").write_text("hang: [{clooud: aws}]\n")
    with pytest.raises(FakeCloudConfigError, match="clooud"):
        load_fault_config(tmp_path)
