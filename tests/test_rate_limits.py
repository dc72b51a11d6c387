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
from auditor.collect import ProgressListener
from auditor.engine import Engine
from auditor.fakecloud import FakeCloud, FaultConfig
from auditor.fakecloud.faults import RateLimiter
from auditor.model import AuditRun, Scope
from auditor.providers.base import ScopeResult
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
    # two calls per 2 s interval: unpaced, a project's listing and its 4 identity calls,
    # spread out by a loaded machine over at most two intervals, put three in one (two per
    # 0.25 s did not always); paced at one per 2 s, a call that arrives late keeps a spare
    ("gcp", "compute-read"): Limit("window", 2, window_s=2.0),
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


#: The owner's word that nothing is limited: the scan does not pace at all
UNPACED = {f"{cloud}:{family}": "off" for cloud, family in ratelimits.DOCUMENTED}


class _Scopes(ProgressListener):
    def __init__(self) -> None:
        self.done: list[ScopeResult] = []

    def scope_done(self, result: ScopeResult) -> None:
        self.done.append(result)


def _scan(
    root: Path,
    rate_limits: dict[str, str] | None = None,
    processes: int = 1,
    progress: ProgressListener | None = None,
) -> tuple[AuditRun, FakeCloud]:
    with FakeCloud(root, faults=FaultConfig(rate_limits=True, retry_after_seconds=0)) as cloud:
        run = run_audit(
            _patient(_providers(root, cloud.endpoint)),
            Engine(load_packs()),
            Scope(providers=["aws", "gcp", "azure"]),
            concurrency=8,
            processes=processes,
            as_of=recorded_at(root),
            rate_limits=ratelimits.limits_with(rate_limits) if rate_limits else None,
            progress=progress,
        )
    return run, cloud


def _refused(cloud: FakeCloud) -> list[Any]:
    return [r for r in cloud.request_log if r.fault == "rate_limit"]


@pytest.mark.usefixtures("small_limits", "fast_aws_backoff")
def test_unpaced_scan_is_refused_and_still_loses_nothing(readable: Path) -> None:
    run, cloud = _scan(readable, UNPACED)
    refused = _refused(cloud)
    by_cloud = {r.cloud for r in refused}
    assert {"aws", "azure", "gcp"} <= by_cloud  # every cloud refused in its own words
    statuses = {(r.cloud, r.status) for r in refused}
    assert ("gcp", 403) in statuses and ("azure", 429) in statuses and ("aws", 503) in statuses
    # Compute Engine's 403 rateLimitExceeded is retried, never reported as a missing permission
    assert run.coverage.gaps == []
    assert len(run.vms) == 27 - 4  # the demo without its KVM host


@pytest.mark.usefixtures("small_limits", "fast_aws_backoff")
def test_paced_scan_is_never_refused(readable: Path) -> None:
    scopes = _Scopes()
    run, cloud = _scan(readable, progress=scopes)
    assert _refused(cloud) == []
    assert run.coverage.gaps == [] and len(run.vms) == 27 - 4
    # each scope says how long it waited for its limits (the CLI shows it: paced, not hung)
    waited = {r.scope.label: r.paced_s for r in scopes.done}
    assert sum(waited.values()) > 0.1, waited
    assert all(s >= 0 for s in waited.values())


def _written(limits: dict[tuple[str, str], Limit]) -> dict[str, str]:
    """Limits as an owner writes them (--rate-limit, rate_limits: in ccaudit.yaml)."""
    return {f"{cloud}:{family}": limit.written for (cloud, family), limit in limits.items()}


@pytest.mark.usefixtures("small_limits", "fast_aws_backoff")
def test_the_owners_limits_reach_scopes_read_in_worker_processes(readable: Path) -> None:
    # Collection workers are processes of their own: the tightened table is this process's
    # only, so paced by the documented limits they are refused; given the same limits as
    # the owner's, they keep to them.
    run, cloud = _scan(readable, processes=2)
    assert {r.cloud for r in _refused(cloud)} >= {"aws", "azure"}
    assert run.coverage.gaps == [] and len(run.vms) == 27 - 4
    run, cloud = _scan(readable, _written(END_TO_END), processes=2)
    assert _refused(cloud) == []
    assert run.coverage.gaps == [] and len(run.vms) == 27 - 4


@pytest.mark.usefixtures("small_limits", "fast_aws_backoff")
def test_a_limit_set_above_the_clouds_own_is_refused_there_only(readable: Path) -> None:
    # The owner says EC2 allows far more than it does: the scan trusts the owner for EC2
    # (refused, retried, nothing lost) and keeps the documented pace everywhere else.
    run, cloud = _scan(readable, {"aws:ec2-read": "500/500"})
    assert {r.cloud for r in _refused(cloud)} == {"aws"}
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


# -- the owner's own limits (a raised quota) -------------------------------------------------------


def test_an_owners_limits_replace_the_documented_ones_family_by_family() -> None:
    limits = ratelimits.limits_with(
        {" AWS:ec2-read": " 200 / 40 ", "gcp:compute-read": "3000/60s", "azure:arm-read": "OFF"}
    )
    ec2 = limits[("aws", "ec2-read")]
    assert (ec2.kind, ec2.capacity, ec2.rate) == ("bucket", 200, 40.0)
    assert "the owner's 200 / 40" in ec2.source
    gce = limits[("gcp", "compute-read")]
    assert (gce.kind, gce.capacity, gce.window_s) == ("window", 3000, 60.0)
    assert limits[("gcp", "logging-read")] == ratelimits.DOCUMENTED[("gcp", "logging-read")]
    assert ("azure", "arm-read") not in limits
    clock = Clock()
    pacer = Pacer(limits, clock=clock, sleep=clock.sleep)
    assert pacer.key("azure", "sub", None, "virtualMachines.listAll") is None  # off: unpaced
    key = pacer.key("aws", "1", "eu-west-1", "DescribeInstances")
    for _ in range(190 + 38):  # 95 % of the owner's bucket, then 95 % of its rate
        pacer.take(key)
    assert clock.now - 1000.0 == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("aws:ec2", "200/40", "no such limit (known: aws:ec2-read, azure:arm-read"),
        (
            "aws:ec2-read",
            "3000/60s",
            "is a token bucket; write BURST/PER_SECOND (documented: 100/20)",
        ),
        ("gcp:compute-read", "3000/60", "counts calls per interval; write CALLS/SECONDSs"),
        ("azure:arm-read", "0/25", "expected BURST/PER_SECOND"),
        ("azure:arm-read", "250/0", "expected BURST/PER_SECOND"),
        ("azure:arm-read", "fast", "expected BURST/PER_SECOND"),
        ("azure:arm-read", "-5/2", "expected BURST/PER_SECOND"),
    ],
)
def test_an_owners_limit_that_cannot_be_used_is_named(name: str, value: str, says: str) -> None:
    with pytest.raises(ratelimits.LimitError) as err:
        ratelimits.limits_with({name: value})
    assert says in str(err.value) and name in str(err.value)


def test_scan_refuses_an_unusable_limit_before_any_call(tmp_path: Path) -> None:
    from auditor.api import ScanError, scan

    with pytest.raises(ScanError, match="gcp:compute-read"):
        scan(replay=DEMO_FLEET, rate_limits={"gcp:compute-read": "5/2"})


def test_cli_rate_limit_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from auditor.cli import app

    runner = CliRunner()
    base = ["scan", "--replay", str(DEMO_FLEET), "--provider", "aws", "--no-save"]
    bad = runner.invoke(app, [*base, "--rate-limit", "aws:ec2-read"])
    assert bad.exit_code == 2 and "expected CLOUD:FAMILY=LIMIT" in bad.output
    wrong = runner.invoke(app, [*base, "--rate-limit", "aws:ec2-read=100/60s"])
    assert wrong.exit_code == 2 and "aws:ec2-read is a token bucket" in wrong.output
    ok = runner.invoke(app, [*base, "--rate-limit", "aws:ec2-read=50/10", "--format", "json"])
    assert ok.exit_code in (0, 3), ok.output  # the demo's AWS has a denied scope: 3


def test_cli_progress_says_how_long_scopes_waited_for_their_limits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from rich.console import Console

    from auditor.cli.scan import CliProgress
    from auditor.providers.base import ScopeKey

    def done(account: str, paced: float) -> ScopeResult:
        return ScopeResult(scope=ScopeKey("azure", account), calls=10, paced_s=paced)

    with CliProgress(Console(file=io.StringIO(), force_terminal=False), interval=0) as progress:
        progress.planned(3)
        progress.scope_done(done("sub-a", 0.2))
        progress.scope_done(done("sub-b", 41.6))
        progress.scope_done(done("sub-c", 12.0))
    err = capsys.readouterr().err
    assert "3/3 scopes, 0 VMs, 30 calls, 0 scope errors, 54 s waiting for rate limits" in err
    assert "scopes waited 54 s in all" in err and "(most: azure/sub-b, 42 s)" in err
    with CliProgress(Console(file=io.StringIO(), force_terminal=False), interval=0) as progress:
        progress.scope_done(done("sub-a", 0.2))  # under a second: not worth a word
    assert "rate limits" not in capsys.readouterr().err
