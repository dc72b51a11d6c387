"""Per-VM calls start page by page while a scope's listing goes on (start_calls).

A scope under a rate limit (an Azure subscription's read bucket, a Compute Engine project's
per-minute quota) would otherwise sit idle for the whole listing, then queue every per-VM
call behind it. These tests run the real SDKs against fakecloud with small pages and read
fakecloud's request log: which calls were answered before the listing's last page, and what
a listing that fails half way leaves behind.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from auditor.engine import Engine
from auditor.fakecloud.faults import CallMatch, FaultConfig
from auditor.fakecloud.server import FakeCloud, RequestRecord
from auditor.model import AuditRun, Scope
from auditor.providers.base import CallPool, StartedCalls, start_calls
from auditor.rules.loader import load_packs
from auditor.run import run_audit
from benchmarks.gen_fleet import generate
from benchmarks.run import replay_providers

PAGE = 3
#: (cloud, the scope's listing, its per-VM call)
LISTINGS = {
    "aws": ("DescribeInstances", "GetInstanceTpmEkPub"),
    "gcp": ("instances.aggregatedList", "instances.getShieldedInstanceIdentity"),
    "azure": ("virtualMachines.listAll", "virtualMachineExtensions.list"),
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline") / "fleet"
    generate(root, 60, per_scope=10, page_size=PAGE)  # 2 scopes a cloud, 4 pages each
    return root


def _scan(root: Path, faults: FaultConfig, concurrency: int = 4) -> tuple[AuditRun, FakeCloud]:
    with FakeCloud(root, faults) as cloud:
        providers = replay_providers(root, cloud.endpoint, concurrency)
        run = run_audit(
            providers,
            Engine(load_packs([])),
            Scope(providers=[p.name for p in providers]),
            concurrency=concurrency,
            processes=1,
        )
    return run, cloud


def _by_scope(log: list[RequestRecord], cloud: str) -> dict[str | None, list[str | None]]:
    out: dict[str | None, list[str | None]] = {}
    for record in log:
        if record.cloud == cloud:
            key = record.account if cloud != "aws" else f"{record.account}/{record.region}"
            out.setdefault(key, []).append(record.operation)
    return out


@pytest.mark.parametrize("concurrency", [4, 1], ids=["concurrency-4", "concurrency-1"])
def test_per_vm_calls_are_answered_before_the_listing_ends(fleet: Path, concurrency: int) -> None:
    # with --concurrency 1 too: the scope hands its only slot to its first page's calls
    # and takes it back for the next page, without a deadlock
    run, cloud = _scan(fleet, FaultConfig(page_size=PAGE), concurrency)
    assert len(run.vms) == 60 and run.coverage.complete, run.coverage.gaps
    for name, (listing, per_vm) in LISTINGS.items():
        scopes = {k: ops for k, ops in _by_scope(cloud.request_log, name).items() if listing in ops}
        assert len(scopes) == 2
        for scope, ops in scopes.items():
            pages = [i for i, op in enumerate(ops) if op == listing]
            calls = [i for i, op in enumerate(ops) if op == per_vm]
            assert len(pages) >= 3, (scope, ops)
            # the first page's VMs were called before the last page was asked for
            assert calls and calls[0] < pages[-1], (name, scope, ops)


def test_a_listing_that_fails_half_way_fails_its_scope_after_its_calls_finish(
    fleet: Path,
) -> None:
    # the second page of one scope's listing in each cloud does not parse: per-VM calls for
    # the first page are already out; the scope is failed with the listing's gap, none of
    # its VMs is kept (a half-read scope would look complete), and the other scope of each
    # cloud is read in full
    clean, _ = _scan(fleet, FaultConfig(page_size=PAGE))
    accounts = {
        name: sorted({vm.account for vm in clean.vms if vm.provider == name}) for name in LISTINGS
    }
    aws_scopes = sorted({(vm.account, vm.region) for vm in clean.vms if vm.provider == "aws"})
    broken = {
        "aws": CallMatch(
            cloud="aws",
            account=aws_scopes[0][0],
            region=aws_scopes[0][1],
            operation="DescribeInstances",
            after=1,
        ),
        "gcp": CallMatch(
            cloud="gcp", account=accounts["gcp"][0], operation=LISTINGS["gcp"][0], after=1
        ),
        "azure": CallMatch(
            cloud="azure", account=accounts["azure"][0], operation=LISTINGS["azure"][0], after=1
        ),
    }
    run, cloud = _scan(fleet, FaultConfig(page_size=PAGE, malformed=tuple(broken.values())))
    assert not run.coverage.complete
    for name, match in broken.items():
        listing, per_vm = LISTINGS[name]
        ops = [
            r
            for r in cloud.request_log
            if r.cloud == name
            and r.account == match.account
            and (match.region is None or r.region == match.region)
        ]
        assert [r.fault for r in ops if r.operation == listing][:2] == [None, "malformed"]
        # the first page's calls were made (and answered) before the scope gave up
        assert any(r.operation == per_vm for r in ops), [r.operation for r in ops]
        scope = next(
            c
            for c in run.coverage.scopes
            if c.provider == name and c.account == match.account and c.region == match.region
        )
        assert scope.status == "failed", scope
        gaps = [
            g
            for g in run.coverage.gaps
            if g.provider == name and g.account == match.account and g.affects == "scope"
        ]
        assert len(gaps) == 1 and listing.split(".")[-1] in gaps[0].call, gaps
        assert not [
            vm
            for vm in run.vms
            if vm.provider == name
            and vm.account == match.account
            and (match.region is None or vm.region == match.region)
        ]
    # the scopes not broken are there in full
    kept = {vm.key for vm in run.vms}
    assert len(kept) == 60 - sum(
        1
        for vm in clean.vms
        if any(
            vm.provider == name
            and vm.account == m.account
            and (m.region is None or vm.region == m.region)
            for name, m in broken.items()
        )
    )


# ---------------------------------------------------------------- StartedCalls alone
def test_started_calls_answer_in_the_order_added_with_or_without_a_pool() -> None:
    order: list[int] = []
    lock = threading.Lock()

    def call(i: int) -> int:
        with lock:
            order.append(i)
        return i * 10

    direct: StartedCalls[int, int] = start_calls(None, call)
    direct.add([1, 2])
    assert order == [1, 2]  # without a pool each call runs as it is added
    direct.add(iter([3]))
    assert direct.results() == [10, 20, 30] and direct.answers() == {1: 10, 2: 20, 3: 30}

    pool = CallPool(2)
    try:
        with pool.slot():  # a scope listing in its slot
            started = start_calls(pool, call, ("gcp", "p", None, "compute"))
            started.add(range(5))
            assert pool._held() == 1  # its slot taken back for the next page
            started.add(range(5, 8))
            assert started.results() == [i * 10 for i in range(8)]
            assert started.items == list(range(8))
            assert pool._held() == 1
    finally:
        pool.close()


def test_settle_waits_for_started_calls_and_keeps_what_they_raised_to_them() -> None:
    release = threading.Event()
    finished: list[int] = []

    def call(i: int) -> int:
        release.wait(5)
        if i == 1:
            raise KeyboardInterrupt  # not the caller's: settle must not raise it
        finished.append(i)
        return i

    pool = CallPool(3)
    try:
        started = start_calls(pool, call, None)
        started.add([0, 1, 2])
        threading.Timer(0.05, release.set).start()
        started.settle()
        assert sorted(finished) == [0, 2]  # every call had ended when settle returned
        with pytest.raises(KeyboardInterrupt):
            started.results()  # results() does raise it
    finally:
        pool.close()
