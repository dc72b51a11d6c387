"""Which Kubernetes cluster and node pool a VM serves, from what each cloud records on it.

Confidential Kubernetes is how many teams adopt confidential computing, and they think in
clusters and node pools, not VMs. The clouds record membership on the node VMs themselves:

- GKE: the labels `goog-k8s-cluster-name`, `goog-k8s-node-pool-name`,
  `goog-k8s-cluster-location` on every node instance;
- AKS: the scale set's tags `aks-managed-cluster-name`, `aks-managed-cluster-rg`,
  `aks-managed-poolName` (else the node resource group, `MC_<rg>_<cluster>_<region>`);
- EKS: the instance tags `eks:cluster-name` and `eks:nodegroup-name` (managed node groups), or
  `kubernetes.io/cluster/<name>` = `owned` (self-managed nodes).

`kubernetes_section` returns the VM document's `kubernetes` section (absent for other VMs), so
rules, reports, the DataFrames and `diff` can group by cluster and node pool. Where the cloud
also records what the pool *declares* (the scale set's model, the node pool's instance
template), the provider adds `declared_technology`; a node that disagrees is a finding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_AKS_NODE_RG = re.compile(r"^MC_(?P<rg>.+)_(?P<cluster>[^_]+)_(?P<region>[^_]+)$", re.IGNORECASE)
_EKS_OWNED = re.compile(r"^kubernetes\.io/cluster/(?P<cluster>.+)$")


def _section(
    platform: str, source: str, cluster: Any, node_pool: Any, **extra: Any
) -> dict[str, Any] | None:
    if cluster is None and node_pool is None:
        return None
    out: dict[str, Any] = {"platform": platform, "source": source}
    if cluster is not None:
        out["cluster"] = str(cluster)
    if node_pool is not None:
        out["node_pool"] = str(node_pool)
    out.update({k: str(v) for k, v in extra.items() if v is not None})
    return out


def gke(labels: Mapping[str, Any]) -> dict[str, Any] | None:
    """A GKE node's cluster and node pool, from its instance labels."""
    return _section(
        "gke",
        "instance labels",
        labels.get("goog-k8s-cluster-name"),
        labels.get("goog-k8s-node-pool-name"),
        cluster_location=labels.get("goog-k8s-cluster-location"),
    )


def aks(tags: Mapping[str, Any], node_resource_group: str) -> dict[str, Any] | None:
    """An AKS node's cluster and node pool, from its scale set's tags (or resource group)."""
    pool = tags.get("aks-managed-poolName")
    cluster = tags.get("aks-managed-cluster-name")
    cluster_rg = tags.get("aks-managed-cluster-rg")
    match = _AKS_NODE_RG.match(node_resource_group or "")
    if cluster is None and match is not None and pool is not None:
        cluster, cluster_rg = match.group("cluster"), cluster_rg or match.group("rg")
    return _section("aks", "scale set tags", cluster, pool, cluster_resource_group=cluster_rg)


def eks(tags: Mapping[str, Any]) -> dict[str, Any] | None:
    """An EKS node's cluster and node group, from its instance tags."""
    cluster = tags.get("eks:cluster-name")
    if cluster is None:
        owned = [
            m.group("cluster")
            for key, value in tags.items()
            if (m := _EKS_OWNED.match(str(key))) and str(value) in ("owned", "shared")
        ]
        cluster = owned[0] if len(owned) == 1 else None
    return _section("eks", "instance tags", cluster, tags.get("eks:nodegroup-name"))
