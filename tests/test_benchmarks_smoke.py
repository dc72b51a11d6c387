"""A tiny run of the benchmark code (50 VMs, no latency), so benchmarks/ never rots.

Not a timing test: it checks that the generator writes a fleet the real SDKs scan without a
gap, that its manifest predicts the calls the scanner really makes (the benchmark's lower
bound rests on that), and that the scan keeps to its concurrency.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.gen_fleet import MANIFEST, generate
from benchmarks.run import bench_collect, bench_evaluate


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


def test_generated_fleet_has_every_vm_once_over_many_scopes(tmp_path: Path) -> None:
    manifest = generate(tmp_path / "fleet", 50, per_scope=10, page_size=4)
    assert manifest["vms"] == 50
    assert json.loads((tmp_path / "fleet" / MANIFEST).read_text()) == manifest
    assert {c: v["vms"] for c, v in manifest["by_cloud"].items()} == {
        "aws": 17,
        "gcp": 17,
        "azure": 16,
    }
    assert all(v["scopes"] >= 2 for v in manifest["by_cloud"].values())
    # page size 4 over ~8 VMs per scope: listings take several dependent pages
    assert manifest["longest_chain"] > 3


def test_collect_benchmark_matches_its_manifest(work: Path) -> None:
    result = bench_collect(50, latency_ms=0.0, concurrency=4, page_size=4, per_scope=10, work=work)
    assert result["vms"] == 50
    assert result["gaps"] == 0
    assert result["call_errors"] == 0
    # the bound is computed from the manifest: it must count exactly the calls made
    assert result["calls_served"] == result["calls_expected"]
    assert 0 < result["max_in_flight"] <= 4
    assert result["lower_bound_s"] == 0.0  # no latency: no bound, no ratio
    assert result["ratio"] is None


def test_evaluate_benchmark_evaluates_distinct_clones(work: Path) -> None:
    result = bench_evaluate(60, workers=1, work=work)
    assert result["vms"] == 60
    assert result["rules"] > 10
    assert result["vms_per_s"] > 0
