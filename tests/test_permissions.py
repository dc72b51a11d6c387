"""Least privilege: the policies in docs/permissions/ allow exactly the calls the code makes.

Full scans of the demo fleet through the real SDKs (every account, region, project and
subscription; regions and subscriptions discovered, not given) record the operations fakecloud
served. Each operation maps to the cloud's IAM action. A call the code makes that the policy
lacks would fail for users; an action the policy grants that no call needs is privilege nobody
should hand out. Both fail here, and so does an operation with no known action: adding a cloud
call means reviewing its permission.
"""

from __future__ import annotations

import json

import pytest
import yaml

from auditor.collect import collect
from auditor.fakecloud import FakeCloud
from auditor.fakecloud.replay import aws_accounts
from auditor.providers.aws import AwsProvider, AwsTarget
from auditor.providers.azure import AzureProvider
from auditor.providers.base import Provider
from auditor.providers.gcp import GcpProvider
from auditor.recording import EvidenceSink
from tests.conftest import DEMO_FLEET, REPO

PERMISSIONS = REPO / "docs" / "permissions"

#: (cloud, operation as fakecloud logs it) -> the IAM action it needs (None: needs none).
ACTION = {
    # sts:GetCallerIdentity needs no permission and cannot be denied (AWS STS documentation)
    ("aws", "GetCallerIdentity"): None,
    ("aws", "DescribeRegions"): "ec2:DescribeRegions",
    ("aws", "DescribeInstances"): "ec2:DescribeInstances",
    ("aws", "DescribeInstanceTypes"): "ec2:DescribeInstanceTypes",
    ("aws", "DescribeImages"): "ec2:DescribeImages",
    ("aws", "DescribeVolumes"): "ec2:DescribeVolumes",
    ("aws", "GetInstanceTpmEkPub"): "ec2:GetInstanceTpmEkPub",
    ("aws", "GetInstanceUefiData"): "ec2:GetInstanceUefiData",
    # instances.aggregatedList is authorised by compute.instances.list on the project
    ("gcp", "instances.aggregatedList"): "compute.instances.list",
    ("gcp", "instances.list"): "compute.instances.list",
    ("gcp", "instances.get"): "compute.instances.get",
    (
        "gcp",
        "instances.getShieldedInstanceIdentity",
    ): "compute.instances.getShieldedInstanceIdentity",
    ("gcp", "logging.entries.list"): "logging.logEntries.list",
    # a GKE node pool's instance template: what the pool declares for its nodes
    ("gcp", "instanceTemplates.get"): "compute.instanceTemplates.get",
    ("azure", "subscriptions.list"): "Microsoft.Resources/subscriptions/read",
    ("azure", "subscriptions.get"): "Microsoft.Resources/subscriptions/read",
    ("azure", "virtualMachines.listAll"): "Microsoft.Compute/virtualMachines/read",
    ("azure", "virtualMachines.list"): "Microsoft.Compute/virtualMachines/read",
    ("azure", "virtualMachines.get"): "Microsoft.Compute/virtualMachines/read",
    ("azure", "disks.list"): "Microsoft.Compute/disks/read",
    ("azure", "diskEncryptionSets.list"): "Microsoft.Compute/diskEncryptionSets/read",
    ("azure", "resourceSkus.list"): "Microsoft.Compute/skus/read",
    ("azure", "virtualMachineExtensions.list"): "Microsoft.Compute/virtualMachines/extensions/read",
    ("azure", "virtualMachineExtensions.get"): "Microsoft.Compute/virtualMachines/extensions/read",
    ("azure", "virtualMachineScaleSets.listAll"): "Microsoft.Compute/virtualMachineScaleSets/read",
    (
        "azure",
        "virtualMachineScaleSetVMs.list",
    ): "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
    (
        "azure",
        "virtualMachineScaleSetVMExtensions.list",
    ): "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/extensions/read",
}

_READ_ONLY = {
    "aws": ("Describe", "Get", "List"),
    "gcp": (".list", ".get", ".getShieldedInstanceIdentity"),
    "azure": ("/read",),
}


def _policy_actions() -> dict[str, set[str]]:
    aws = json.loads((PERMISSIONS / "aws-iam-policy.json").read_text(encoding="utf-8"))
    gcp = yaml.safe_load((PERMISSIONS / "gcp-custom-role.yaml").read_text(encoding="utf-8"))
    azure = json.loads((PERMISSIONS / "azure-custom-role.json").read_text(encoding="utf-8"))
    aws_actions: set[str] = set()
    for statement in aws["Statement"]:
        assert statement["Effect"] == "Allow" and statement["Resource"] == "*"
        actions = statement["Action"]
        aws_actions.update([actions] if isinstance(actions, str) else actions)
    assert not azure["DataActions"] and not azure["NotActions"]
    return {
        "aws": aws_actions,
        "gcp": set(gcp["includedPermissions"]),
        "azure": set(azure["Actions"]),
    }


def _demo_providers(endpoint: str) -> list[Provider]:
    # regions and subscriptions are discovered (DescribeRegions, subscriptions.list), as in a
    # default live scan; projects cannot be discovered with the calls above, so they are given
    projects = sorted(p.name for p in (DEMO_FLEET / "gcp").iterdir() if p.is_dir())
    return [
        AwsProvider(
            [AwsTarget(access_key_id=a, secret_access_key="x") for a in aws_accounts(DEMO_FLEET)],
            endpoint_url=endpoint,
        ),
        GcpProvider(projects, endpoint_url=endpoint, anonymous=True),
        AzureProvider([], endpoint_url=endpoint, replay=True),
    ]


@pytest.fixture(scope="module")
def used_operations(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str]]:
    with FakeCloud(DEMO_FLEET) as cloud:
        run = collect(_demo_providers(cloud.endpoint), EvidenceSink(), concurrency=16)
    assert len(run.vms) >= 20  # the demo fleet really was read, per-VM calls included
    ops = {(r.cloud, r.operation or "?") for r in cloud.request_log}
    # the demo has no GKE cluster: a GKE node pool's replay adds the calls its nodes need
    from tests.test_provider_gcp import PROJECT, _gke_replay

    gke = _gke_replay(tmp_path_factory.mktemp("gke"))
    with FakeCloud(gke) as cloud:
        provider = GcpProvider([PROJECT], endpoint_url=cloud.endpoint, anonymous=True)
        assert collect([provider], EvidenceSink()).vms
    ops |= {(r.cloud, r.operation or "?") for r in cloud.request_log}
    assert ("unknown", "?") not in ops, "a request fakecloud could not route"
    return ops


def test_every_operation_has_a_known_iam_action(used_operations: set[tuple[str, str]]) -> None:
    unknown = sorted(op for op in used_operations if op not in ACTION)
    assert not unknown, f"calls without a reviewed IAM action (add them to ACTION): {unknown}"


def test_policies_grant_exactly_the_actions_the_code_uses(
    used_operations: set[tuple[str, str]],
) -> None:
    needed: dict[str, set[str]] = {"aws": set(), "gcp": set(), "azure": set()}
    for cloud, op in used_operations:
        action = ACTION.get((cloud, op))
        if action is not None:
            needed[cloud].add(action)
    granted = _policy_actions()
    for cloud in needed:
        missing = needed[cloud] - granted[cloud]
        unused = granted[cloud] - needed[cloud]
        assert not missing, f"{cloud}: the code calls what the policy does not allow: {missing}"
        assert not unused, f"{cloud}: the policy grants what no call needs: {unused}"


def test_policies_are_read_only() -> None:
    for cloud, actions in _policy_actions().items():
        for action in actions:
            assert "*" not in action, f"{cloud}: wildcard {action}"
            assert any(marker in action for marker in _READ_ONLY[cloud]), (
                f"{cloud}: {action} is not a read action"
            )


def test_readme_names_every_file() -> None:
    readme = (PERMISSIONS / "README.md").read_text(encoding="utf-8")
    for path in PERMISSIONS.iterdir():
        if path.name != "README.md":
            assert path.name in readme


def test_action_table_matches_the_docs(used_operations: set[tuple[str, str]]) -> None:
    # every action the docs' README lists for a call is the one this test maps it to
    readme = (PERMISSIONS / "README.md").read_text(encoding="utf-8")
    for cloud, op in sorted(used_operations):
        action = ACTION[(cloud, op)]
        if action is not None:
            assert f"`{action}`" in readme, f"README.md does not explain {action}"
