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


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-workers"])
def test_collect_benchmark_matches_its_manifest(work: Path, processes: int) -> None:
    # with two worker processes, --concurrency still bounds the calls in flight of the scan
    result = bench_collect(
        50, latency_ms=5.0, concurrency=4, page_size=4, per_scope=10, work=work, processes=processes
    )
    assert result["processes"] == processes
    assert result["vms"] == 50
    assert result["gaps"] == 0
    assert result["call_errors"] == 0
    # the bound is computed from the manifest: it must count exactly the calls made
    assert result["calls_served"] == result["calls_expected"]
    assert 0 < result["max_in_flight"] <= 4
    assert result["lower_bound_s"] > 0 and result["ratio"] >= 1.0  # never faster than the bound


def test_evaluate_benchmark_evaluates_distinct_clones(work: Path) -> None:
    result = bench_evaluate(60, workers=1, work=work)
    assert result["vms"] == 60
    assert result["rules"] > 10
    assert result["vms_per_s"] > 0


def test_evaluate_benchmark_without_reuse_in_workers(work: Path) -> None:
    # the path target 3 is measured on: every VM decided afresh, the rules in forked workers
    result = bench_evaluate(60, workers=2, work=work, reuse=False)
    assert result["vms"] == 60 and result["cases"] == 60
    assert result["workers"] == 2 and result["vms_per_s"] > 0


# ---------------------------------------------------------------- the performance changes
def test_call_pool_keeps_order_and_bounds_calls_in_flight() -> None:
    import threading
    import time

    from auditor.providers.base import CallPool

    pool = CallPool(3)
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def call(i: int) -> int:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.01)
        with lock:
            state["now"] -= 1
        return i * i

    try:
        # a scope holds a slot while it lists, and hands it back while its VMs fan out
        with pool.slot():
            assert pool.fan_out(call, list(range(20))) == [i * i for i in range(20)]
    finally:
        pool.close()
    assert state["max"] == 3


def test_call_pool_reraises_what_a_call_raises() -> None:
    from auditor.providers.base import CallPool

    def boom(i: int) -> int:
        if i == 2:
            raise KeyboardInterrupt  # an interruption must not be swallowed by the fan-out
        return i

    pool = CallPool(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.fan_out(boom, [0, 1, 2, 3])
    finally:
        pool.close()


def _vms(work: Path, n: int) -> list[object]:
    from benchmarks.run import sample_vms

    return list(sample_vms(n, work))


def test_evaluate_all_equals_one_by_one_in_process_and_in_workers(work: Path) -> None:
    from auditor.engine import Engine, evaluate_all
    from auditor.rules.loader import load_packs

    vms = _vms(work, 40)
    engine = Engine(load_packs([]))
    expected = [engine.evaluate(vm).model_dump() for vm in vms]
    assert [r.model_dump() for r in evaluate_all(engine, vms)] == expected
    assert [r.model_dump() for r in evaluate_all(engine, vms, workers=2)] == expected


def test_rules_reading_vm_otherwise_than_by_section_see_the_whole_document(
    work: Path, tmp_path: Path
) -> None:
    from auditor.engine import Engine
    from auditor.rules.loader import load_packs

    pack = tmp_path / "pack.yaml"
    pack.write_text(
        """
pack: bench-check
version: "1"
rules:
  - id: custom.by-index
    title: reads a section the built-in rules do not read, by index
    party: hypervisor
    effect: CAN_ACCESS
    when: 'vm["provider"] == "aws"'
    severity: low
    rationale: test
""",
        encoding="utf-8",
    )
    engine = Engine(load_packs([pack]))
    assert engine._read is None  # the CEL context gets the whole document
    aws = next(vm for vm in _vms(work, 40) if getattr(vm, "provider", "") == "aws")
    result = engine.evaluate(aws)
    assert "custom.by-index" in {f.rule_id for f in result.findings}
    assert Engine(load_packs([]))._read is not None  # the built-in pack reads by section


def test_snp_benchmark_verifies_every_report_and_measures_its_bound() -> None:
    from benchmarks.run import bench_snp

    result = bench_snp(40, chips=2)
    assert result["verified_ok"] == 40
    assert result["chains"] == 2
    assert result["signature_ms"] > 0
    # the whole verification can never be cheaper than its signature alone (noise aside)
    assert 0 < result["fraction_of_bound"] < 1.5


def test_reports_benchmark_renders_every_format(work: Path) -> None:
    from benchmarks.run import REPORT_FORMATS, bench_reports

    result = bench_reports(30, work)
    assert result["vms"] == 30
    assert list(result["formats"]) == list(REPORT_FORMATS)
    assert all(r["size_mib"] >= 0 and r["render_s"] >= 0 for r in result["formats"].values())


def test_ratelimit_benchmark_scans_under_the_documented_limits(work: Path) -> None:
    # a small fleet stays within every limit: nothing refused, nothing lost, and the
    # rate-limit bound is worked out per scope and family from the manifest
    result = bench_collect(
        60, latency_ms=2.0, concurrency=4, page_size=4, per_scope=20, work=work, rate_limits=True
    )
    assert result["benchmark"] == "ratelimit"
    assert result["vms"] == 60 and result["gaps"] == 0
    assert result["refused"] == 0 and result["calls_lost"] == 0
    assert result["calls_served"] == result["calls_expected"]
    assert result["rate_limit_bound_s"] == 0.0  # 20 VMs a scope: within every first allowance
    assert set(result["answered_per_5s"]) == {"aws", "gcp", "azure"}
    assert len(result["scopes_finished_s"]) == result["scopes"]


def test_rate_limit_bound_is_the_slowest_scope_under_its_own_limit() -> None:
    from benchmarks.run import rate_limit_bound

    manifest = {
        "limited": [
            {"cloud": "aws", "scope": "1/eu-west-1", "family": "ec2-read", "calls": 300},
            {"cloud": "azure", "scope": "s", "family": "arm-read", "calls": 1250},
            {"cloud": "gcp", "scope": "p", "family": "compute-read", "calls": 1501},
        ]
    }
    bound, slowest = rate_limit_bound(manifest)
    # EC2: (300-100)/20 = 10 s; ARM: (1250-250)/25 = 40 s; Compute: one more interval = 60 s
    assert bound == 60.0 and slowest["cloud"] == "gcp"


def test_cost_benchmark_sets_scanner_cpu_against_the_sdk_floor(work: Path) -> None:
    from benchmarks.run import bench_cost

    result = bench_cost(40, repeat=1, passes=1, processes=1, work=work)
    (run,) = result["runs"]
    assert run["floor_cpu_s"] > 0 and run["scanner_cpu_s"] > 0
    # both figures are rounded to 0.01 s, and a 40-VM fleet's are a few tenths: allow for it
    rounding = 0.005 / run["scanner_cpu_s"] + 0.005 / run["floor_cpu_s"]
    expected = run["scanner_cpu_s"] / run["floor_cpu_s"]
    assert run["ratio"] == pytest.approx(expected, rel=rounding + 0.005)
    assert result["ratio_min"] == result["ratio_max"] == run["ratio"]
