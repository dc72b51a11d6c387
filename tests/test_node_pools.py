"""Kubernetes clusters and node pools as platform teams see them: the demo's AKS cluster in the
DataFrames, the report, the summary and `diff`."""

from __future__ import annotations

import json
from typing import Any

import pytest

import auditor
from auditor.model import AuditRun, Level, Party, Status
from auditor.reports.view import build_view
from auditor.runs.drift import diff_runs, render_markdown


@pytest.fixture(scope="module")
def demo() -> Any:
    return auditor.demo(save=False)


def test_the_vm_table_carries_cluster_and_node_pool(demo: Any) -> None:
    vms = demo.vms
    nodes = vms[vms["cluster"].notna()]
    assert set(nodes["name"]) == {
        "aks-cvmpool-31416926-vmss_0",
        "aks-cvmpool-31416926-vmss_1",
        "aks-nodepool1-27182818-vmss_0",
    }
    per_pool = nodes.groupby(["cluster", "node_pool"], observed=True)["level"].agg(list)
    assert sorted(per_pool.loc[("payroll-aks", "cvmpool")]) == ["L1", "L1"]
    assert list(per_pool.loc[("payroll-aks", "nodepool1")]) == ["L0"]
    assert vms[vms["cluster"].isna()]["node_pool"].isna().all()  # plain VMs: no pool


def test_the_report_groups_node_pools_with_what_each_declares(demo: Any) -> None:
    view = build_view(demo.model)
    pools = {(p.cluster, p.node_pool): p for p in view.fleet.pools}
    assert set(pools) == {("payroll-aks", "cvmpool"), ("payroll-aks", "nodepool1")}
    cvm = pools[("payroll-aks", "cvmpool")]
    assert (cvm.platform, cvm.nodes, cvm.declared, cvm.unlike_pool) == ("AKS", 2, "SEV_SNP", 0)
    assert cvm.levels == ((Level.L1, 2),)
    node = next(v for v in view.vms if v.name == "aks-cvmpool-31416926-vmss_1")
    assert node.pool == "payroll-aks/cvmpool"


def test_diff_counts_changes_per_node_pool(demo: Any) -> None:
    before: AuditRun = demo.model
    after = before.model_copy(deep=True)
    node = next(v for v in after.vms if v.name == "aks-cvmpool-31416926-vmss_0")
    node.level = Level.L0
    # a new dict: nodes configured alike share one evaluated result (the engine's reuse)
    node.parties = {**node.parties, Party.HYPERVISOR: Status.CAN_ACCESS}
    d = diff_runs(before, after)
    assert d.by_node_pool() == {
        "payroll-aks/cvmpool": {"levels": 1, "parties": 1, "regressions": 2}
    }
    doc = json.loads(json.dumps(d.as_dict()))
    assert doc["level_changes"][0]["node_pool"] == "payroll-aks/cvmpool"
    assert doc["by_node_pool"]["payroll-aks/cvmpool"]["regressions"] == 2
    text = render_markdown(d)
    assert "#### By Kubernetes node pool" in text
    assert "| `payroll-aks/cvmpool` | 2 | 0 / 0 | 2 | 0 / 0 |" in text
    # a change on a plain VM is not grouped
    plain = after.model_copy(deep=True)
    vm = next(v for v in plain.vms if v.name == "payroll-web-tl")
    vm.level = Level.L1
    assert "payroll-web-tl" not in json.dumps(diff_runs(after, plain).by_node_pool())
