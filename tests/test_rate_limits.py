"""The clouds' request rate limits: fakecloud enforces them as each cloud does, and the scanner
paces itself so that they are never hit, through the real SDKs.

The documented limits are large (an EC2 bucket of 100, a Compute Engine minute of 1,500), so
these tests shrink them (the same table feeds both sides) to make the demo fleet's few calls
per scope cross them.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from auditor import ratelimits
from auditor.api import recorded_at
from auditor.engine import Engine
from auditor.fakecloud import FakeCloud, FaultConfig
from auditor.fakecloud.faults import RateLimiter
from auditor.model import AuditRun, Scope
from auditor.providers.gcp import rate_quota_exceeded
from auditor.providers.pacing import Pacer
from auditor.ratelimits import Limit
from auditor.rules.loader import load_packs
from auditor.run import run_audit
from tests.conftest import DEMO_FLEET
from tests.test_faults import (
    _providers,
    fast_aws_backoff,  # noqa: F401 (fixture)
)

SMALL = {
    ("aws", "ec2-read"): Limit("bucket", 2, rate=40.0),
    ("azure", "arm-read"): Limit("bucket", 2, rate=40.0),
    ("gcp", "compute-read"): Limit("window", 2, window_s=0.25),
    ("gcp", "logging-read"): Limit("window", 1, window_s=0.25),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# -- the limits themselves ------------------------------------------------------------------------


def test_documented_limits_and_their_least_time() -> None:
    ec2 = ratelimits.DOCUMENTED[("aws", "ec2-read")]
    assert (ec2.capacity, ec2.rate) == (100, 20.0)
    assert ec2.time_for(100) == 0 and ec2.time_for(300) == 10.0
    arm = ratelimits.DOCUMENTED[("azure", "arm-read")]
    assert arm.time_for(1250) == 40.0
    gce = ratelimits.DOCUMENTED[("gcp", "compute-read")]
    assert gce.time_for(1500) == 0 and gce.time_for(1501) == 60.0 and gce.time_for(4000) == 120.0
    assert ratelimits.family_of("aws", "GetCallerIdentity") is None
    assert ratelimits.family_of("aws", "GetInstanceTpmEkPub") == "ec2-read"
    assert ratelimits.family_of("gcp", "logging.entries.list") == "logging-read"
    assert ratelimits.scope_of("aws", "1111", "eu-west-1") == "1111/eu-west-1"


def test_fakecloud_bucket_refuses_past_capacity_and_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(SMALL, clock=clock)
    calls = [limiter.check("aws", "1", "eu-west-1", "DescribeInstances") for _ in range(3)]
    assert calls[:2] == [0.0, 0.0] and calls[2] == pytest.approx(1 / 40)
    # another Region, another bucket; STS is not in the EC2 bucket
    assert limiter.check("aws", "1", "us-east-2", "DescribeVolumes") == 0.0
    assert limiter.check("aws", "1", "eu-west-1", "GetCallerIdentity") == 0.0
    clock.sleep(1 / 40)
    assert limiter.check("aws", "1", "eu-west-1", "DescribeInstances") == 0.0
    assert limiter.stats() == {"rate_limited_served": 4, "rate_limited_refused": 1}


def test_fakecloud_window_counts_per_synchronised_interval() -> None:
    clock = Clock()  # 1000.0 is the start of an interval of 0.25 s
    limiter = RateLimiter(SMALL, clock=clock)
    op = "instances.getShieldedInstanceIdentity"
    assert [limiter.check("gcp", "p", None, op) for _ in range(2)] == [0.0, 0.0]
    assert limiter.check("gcp", "p", None, op) == pytest.approx(0.25)
    clock.sleep(0.1)
    assert limiter.check("gcp", "p", None, op) == pytest.approx(0.15)  # same interval
    clock.sleep(0.15)
    assert limiter.check("gcp", "p", None, op) == 0.0  # the next interval
    assert limiter.check("gcp", "p", None, "logging.entries.list") == 0.0  # its own quota


def test_pacer_never_lets_a_scope_exceed_its_limit() -> None:
    clock = Clock()
    pacer = Pacer(SMALL, clock=clock, sleep=clock.sleep, margin=1.0)
    server = RateLimiter(SMALL, clock=clock)
    key = pacer.key("aws", "1", "eu-west-1", "DescribeInstances")
    for _ in range(50):
        pacer.take(key)
        assert server.check("aws", "1", "eu-west-1", "DescribeInstances") == 0.0
    # 50 calls at 40 per second after a burst of 2: at least 1.2 s of waiting
    assert clock.now - 1000.0 == pytest.approx(48 / 40)
    window = pacer.key("gcp", "p", None, "compute")
    for _ in range(9):  # a sliding window keeps every synchronised interval within its quota
        pacer.take(window)
        assert server.check("gcp", "p", None, "instances.get") == 0.0
    assert server.stats()["rate_limited_refused"] == 0


def test_pacer_keeps_a_margin_below_the_documented_limit() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)  # the documented limits, 95 % of them
    key = pacer.key("aws", "1", "eu-west-1", "DescribeInstances")
    for _ in range(95 + 19):
        pacer.take(key)
    assert clock.now - 1000.0 == pytest.approx(1.0)  # 95 at once, then 19 per second


def test_a_refusal_holds_the_scope_for_the_named_wait() -> None:
    clock = Clock()
    pacer = Pacer(SMALL, clock=clock, sleep=clock.sleep)
    key = pacer.key("azure", "sub", None, None)
    pacer.refused(key, retry_after=3.0)
    assert pacer.take(key) == pytest.approx(3.0)
    assert pacer.stats()["refusals_seen"] == 1


# -- end to end, real SDKs against fakecloud --


#: Slow enough that an unpaced scan meets a refusal in every cloud however loaded the machine is.
END_TO_END = {
    **SMALL,
    ("aws", "ec2-read"): Limit("bucket", 2, rate=8.0),
    ("azure", "arm-read"): Limit("bucket", 2, rate=8.0),
}


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, limit in END_TO_END.items():
        monkeypatch.setitem(ratelimits.DOCUMENTED, key, limit)


@pytest.fixture(scope="module")
def readable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rl") / "fleet"
    shutil.copytree(DEMO_FLEET, root, ignore=shutil.ignore_patterns("guest-evidence", "libvirt"))
    for error in root.rglob("*.error.json"):
        error.unlink()
    return root


def _patient(providers: list[Any]) -> list[Any]:
    """Azure with retries enough for the tightened bucket: unpaced, eight threads refused
    together all retry after the same one-second Retry-After."""
    from auditor.providers.azure import AzureProvider

    return [
        AzureProvider(
            p.subscriptions,
            endpoint_url=p.endpoint_url,
            replay=True,
            retry_backoff=0.01,
            retry_total=30,
            retry_status=30,  # azure-core stops status retries (429) at 3 otherwise
        )
        if isinstance(p, AzureProvider)
        else p
        for p in providers
    ]


def _scan(root: Path, pace: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[AuditRun, FakeCloud]:
    if not pace:
        import auditor.providers.base as base

        original = base.CallPool.__init__

        def unpaced(self: Any, concurrency: int, pace: bool = True) -> None:
            original(self, concurrency, pace=False)

        monkeypatch.setattr(base.CallPool, "__init__", unpaced)
    with FakeCloud(root, faults=FaultConfig(rate_limits=True, retry_after_seconds=0)) as cloud:
        run = run_audit(
            _patient(_providers(root, cloud.endpoint)),
            Engine(load_packs()),
            Scope(providers=["aws", "gcp", "azure"]),
            concurrency=8,
            processes=1,
            as_of=recorded_at(root),
        )
    return run, cloud


@pytest.mark.usefixtures("small_limits", "fast_aws_backoff")
def test_unpaced_scan_is_refused_and_still_loses_nothing(
    readable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, cloud = _scan(readable, pace=False, monkeypatch=monkeypatch)
    refused = [r for r in cloud.request_log if r.fault == "rate_limit"]
    by_cloud = {r.cloud for r in refused}
    assert {"aws", "azure", "gcp"} <= by_cloud  # every cloud refused in its own words
    statuses = {(r.cloud, r.status) for r in refused}
    assert ("gcp", 403) in statuses and ("azure", 429) in statuses and ("aws", 503) in statuses
    # Compute Engine's 403 rateLimitExceeded is retried, never reported as a missing permission
    assert run.coverage.gaps == []
    assert len(run.vms) == 27 - 4  # the demo without its KVM host


@pytest.mark.usefixtures("small_limits", "fast_aws_backoff")
def test_paced_scan_is_never_refused(readable: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, cloud = _scan(readable, pace=True, monkeypatch=monkeypatch)
    assert [r for r in cloud.request_log if r.fault == "rate_limit"] == []
    assert run.coverage.gaps == [] and len(run.vms) == 27 - 4


def test_a_403_is_a_rate_quota_only_when_google_says_so() -> None:
    from google.api_core import exceptions as gexc

    def forbidden(reason: str) -> Exception:
        response = requests.Response()
        response.status_code = 403
        response._content = json.dumps(
            {"error": {"code": 403, "message": "m", "errors": [{"reason": reason}]}}
        ).encode()
        response.request = requests.Request("GET", "http://x/").prepare()
        return gexc.from_http_response(response)

    assert rate_quota_exceeded(forbidden("rateLimitExceeded"))
    assert not rate_quota_exceeded(forbidden("forbidden"))
    assert not rate_quota_exceeded(ValueError("rateLimitExceeded"))


# -- the call pool: a scope waiting for its limit holds nothing another scope needs --


def test_paced_fan_out_waits_in_its_scope_not_in_the_pool() -> None:
    import threading

    from auditor.providers.base import CallPool

    released = threading.Event()
    clock = Clock()

    def sleep(seconds: float) -> None:  # scope A's limit holds until the test lets it go
        released.wait(10)
        clock.sleep(seconds)

    pool = CallPool(2)
    pool.pacer = Pacer(
        {("azure", "arm-read"): Limit("bucket", 1, rate=0.001)},
        clock=clock,
        sleep=sleep,
        margin=1.0,
    )
    pacer = pool.pacer
    key = pacer.key("azure", "sub-a", None, None)
    hook_waits: list[float] = []

    def call_a(i: int) -> int:
        hook_waits.append(pacer.take(key))  # what the SDK hook does: prepaid, no second wait
        return i

    a_result: list[list[int]] = []
    a = threading.Thread(
        target=lambda: a_result.append(
            pool.fan_out(call_a, [1, 2, 3], ("azure", "sub-a", None, None))
        )
    )
    try:
        a.start()
        # scope B (another cloud) runs all its calls while A waits for its allowance
        b = pool.fan_out(
            lambda i: i * 10, list(range(8)), ("aws", "1", "eu-west-1", "GetCallerIdentity")
        )
        assert b == [i * 10 for i in range(8)]
        assert a.is_alive() and not a_result
        released.set()
        a.join(10)
        assert a_result == [[1, 2, 3]]
        assert hook_waits == [0.0, 0.0, 0.0]  # each call took exactly one allowance
        assert clock.now - 1000.0 == pytest.approx(2 / 0.001)
    finally:
        released.set()
        pool.close()


def test_beside_runs_with_or_without_a_pool() -> None:
    from auditor.providers.base import CallPool, beside

    assert beside(None, lambda: 7).result() == 7
    failed = beside(None, lambda: 1 // 0)
    assert isinstance(failed.exception(), ZeroDivisionError)
    pool = CallPool(1)
    try:
        with pool.slot():  # the scope holds the only slot while its listing runs beside
            side = beside(pool, lambda: "listed")
            assert pool.fan_out(lambda i: i, [1, 2], ("aws", "1", "r", "GetInstanceTpmEkPub")) == [
                1,
                2,
            ]
        assert side.result(5) == "listed"
    finally:
        pool.close()


def test_a_scope_with_one_slot_joins_its_side_listing_without_deadlock() -> None:
    import threading

    from auditor.providers.base import CallPool, beside, fan_out, join

    pool = CallPool(1)  # --concurrency 1: the scope holds the only slot
    out: list[Any] = []

    def scope() -> None:
        with pool.slot():
            side = beside(pool, lambda: "listed")
            one = fan_out(pool, lambda i: i, [1], ("aws", "1", "r", "GetInstanceTpmEkPub"))
            out.append((one, join(pool, side)))
            with pool.slot():  # the scope has its slot back (re-entrant)
                pass

    thread = threading.Thread(target=scope, daemon=True)
    try:
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "the scope waited for a slot it held itself"
        assert out == [([1], "listed")]
    finally:
        pool.close()


def test_stopping_the_scan_wakes_a_call_waiting_for_its_rate_limit() -> None:
    import threading
    import time

    from auditor.providers.base import CallPool
    from auditor.providers.pacing import PacingStopped

    pool = CallPool(2)  # the real clock and sleep: a wait of a minute for the next interval
    pool.pacer = Pacer({("gcp", "compute-read"): Limit("window", 1, window_s=60.0)}, margin=1.0)
    outcome: list[BaseException | list[int]] = []

    def scope() -> None:
        try:
            outcome.append(pool.fan_out(lambda i: i, [1, 2, 3], ("gcp", "p", None, "compute")))
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=scope, daemon=True)
    thread.start()
    time.sleep(0.3)  # the first call went; the second waits for the next 60 s interval
    assert thread.is_alive() and not outcome
    started = time.monotonic()
    pool.close()  # what an interruption does
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert len(outcome) == 1 and isinstance(outcome[0], PacingStopped)


def test_azure_retries_status_answers_as_often_as_it_is_told(readable: Path) -> None:
    # azure-core counts 429/5xx retries apart from its total: RETRY_STATUS says how many, and
    # a call throttled that many times in a row is still answered, one more time is a gap
    from auditor.providers.azure import RETRY_STATUS, AzureProvider

    subs = sorted(p.name for p in (readable / "azure").iterdir() if p.is_dir())
    for throttled_first, gaps in ((RETRY_STATUS, False), (RETRY_STATUS + 1, True)):
        faults = FaultConfig(throttle_first=throttled_first, retry_after_seconds=0)
        with FakeCloud(readable, faults=faults) as cloud:
            azure = AzureProvider(subs, endpoint_url=cloud.endpoint, replay=True, retry_backoff=0)
            run = run_audit(
                [azure],
                Engine(load_packs()),
                Scope(providers=["azure"]),
                as_of=recorded_at(readable),
            )
        per_call = Counter(
            (r.account, r.operation, r.resource) for r in cloud.request_log if r.fault
        )
        if not gaps:  # every call throttled exactly that often, then answered
            assert per_call and set(per_call.values()) == {throttled_first}
        assert bool(run.coverage.gaps) is gaps
