"""Pacing: the scanner keeps each scope's calls within the cloud's documented rate limits.

A scan that sends as fast as its concurrency allows spends an EC2 account's request bucket (or an
Azure subscription's reads, a GCP project's per-minute quota) in seconds, then is refused, backs
off and retries, and meanwhile throttles the owner's own automation that shares the bucket. So
the scanner paces itself: before every request attempt (retries included) it takes an allowance
from its own copy of the limit for that scope and family (auditor/ratelimits.py), waiting when
there is none, so a cloud with the documented limits never has to refuse it.

The limiter is ours, not the SDKs' adaptive modes: botocore's adaptive retry limits each client
(and every scope has its own), google-api-core and azure-core have none. It is adaptive where
the documented figure is wrong for an account: a refusal that still comes (a lower limit, other
callers sharing the bucket) empties that scope's allowance and holds it for the wait the cloud
names (`Retry-After`) or one refill, after which the SDK's own retry repeats the call.

Hooks, one per SDK, all calling `Pacer.take` per attempt: botocore's `before-send` event, an
azure-core per-retry policy, and a `requests` adapter for the Google clients.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from auditor.ratelimits import DOCUMENTED, Limit, LimitKey, TokenBucket, family_of, scope_of

#: The share of each limit the scanner allows itself: calls reach the cloud in a slightly
#: different order and spacing than they were sent, and others may share the bucket.
MARGIN = 0.95


def _within(limit: Limit, margin: float) -> Limit:
    capacity = max(1, int(limit.capacity * margin))
    return Limit(limit.kind, capacity, limit.rate * margin, limit.window_s, limit.source)


class _Allowance:
    """The scanner's copy of one scope's limit: a token bucket, or for a per-interval quota a
    sliding window (at most `capacity` calls in any `window_s`, so every interval the cloud
    counts holds no more, whatever its boundaries)."""

    def __init__(self, limit: Limit, now: float) -> None:
        self.limit = limit
        self.bucket = TokenBucket(limit.capacity, limit.rate, now)
        self.sent: collections.deque[float] = collections.deque()
        self.hold_until = 0.0

    def wait_for(self, now: float) -> float:
        """0 if a call may go now (and it is counted); else how long to wait first."""
        if now < self.hold_until:
            return self.hold_until - now
        lim = self.limit
        if lim.kind == "bucket":
            return self.bucket.take(now)
        while self.sent and self.sent[0] <= now - lim.window_s:
            self.sent.popleft()
        if len(self.sent) < lim.capacity:
            self.sent.append(now)
            return 0.0
        return self.sent[0] + lim.window_s - now

    def refused(self, now: float, retry_after: float | None) -> None:
        lim = self.limit
        hold = retry_after if retry_after else (1.0 / lim.per_second)
        self.hold_until = max(self.hold_until, now + hold)
        self.bucket.tokens = 0.0


class PacingStopped(BaseException):
    """Raised in a thread waiting for an allowance when the scan stops (interrupted): a wait
    for a rate limit (up to a minute for Compute Engine) must not hold the interruption up.
    A BaseException, like `recording.SinkClosed`, so no `except Exception` turns it into a gap."""


class Pacer:
    """Per (cloud, scope, family) allowances, shared by every thread of a scan process."""

    def __init__(
        self,
        limits: dict[tuple[str, str], Limit] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        margin: float = MARGIN,
    ) -> None:
        chosen = DOCUMENTED if limits is None else limits
        self.limits = {key: _within(limit, margin) for key, limit in chosen.items()}
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._state: dict[LimitKey, _Allowance] = {}
        self._credit = threading.local()
        self._stopped = threading.Event()
        self.waited_s = 0.0
        self.waits = 0
        self.refusals = 0
        self._waited_by: dict[tuple[str, str], float] = {}  # (cloud, scope) -> seconds

    def _allowance(self, key: LimitKey, limit: Limit) -> _Allowance:
        state = self._state.get(key)
        if state is None:
            state = self._state[key] = _Allowance(limit, self.clock())
        return state

    def key(self, cloud: str, account: str | None, region: str | None, op: str | None) -> Any:
        family = family_of(cloud, op)
        if family is None or (cloud, family) not in self.limits:
            return None
        return (cloud, scope_of(cloud, account, region), family)

    @contextlib.contextmanager
    def prepaid(self, key: LimitKey | None) -> Iterator[None]:
        """This thread's next call under `key` was already allowed (`CallPool.fan_out` took
        its allowance before handing it a thread): the SDK hook does not take another."""
        self._credit.key = key
        try:
            yield
        finally:
            self._credit.key = None

    def take(self, key: LimitKey | None) -> float:
        """Wait until a call under `key` is within its limit; returns the seconds waited."""
        if key is None:
            return 0.0
        if key == getattr(self._credit, "key", None):
            self._credit.key = None  # one call only: a retry takes its own allowance
            return 0.0
        limit = self.limits[(key[0], key[2])]
        waited = 0.0
        while True:
            with self._lock:
                wait = self._allowance(key, limit).wait_for(self.clock())
                if not wait:
                    if waited:
                        self.waits += 1
                        self.waited_s += waited
                        where = (key[0], key[1])
                        self._waited_by[where] = self._waited_by.get(where, 0.0) + waited
                    return waited
            self._pause(wait)
            waited += wait

    def stop(self) -> None:
        """Wake every thread waiting for an allowance with `PacingStopped`, now and later."""
        self._stopped.set()

    def _pause(self, seconds: float) -> None:
        if self.sleep is time.sleep:
            self._stopped.wait(seconds)
        else:
            self.sleep(seconds)
        if self._stopped.is_set():
            raise PacingStopped("the scan was stopped while waiting for a rate limit")

    def refused(self, key: LimitKey | None, retry_after: float | None = None) -> None:
        """The cloud refused a call under `key` anyway: hold the scope back before the retry."""
        if key is None:
            return
        limit = self.limits[(key[0], key[2])]
        with self._lock:
            self.refusals += 1
            self._allowance(key, limit).refused(self.clock(), retry_after)

    def waited_for(self, cloud: str, account: str | None, region: str | None) -> float:
        """Seconds the calls of one scope (all its families) waited for their limits."""
        with self._lock:
            return self._waited_by.get((cloud, scope_of(cloud, account, region)), 0.0)

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {
                "paced_waits": self.waits,
                "paced_wait_s": round(self.waited_s, 2),
                "refusals_seen": self.refusals,
            }


# ---------------------------------------------------------------- the hooks, one per SDK
def pace_boto3_client(client: Any, pacer: Pacer, account: str, region: str) -> None:
    """botocore: take an allowance before every attempt; a refusal holds the scope back."""
    service = client.meta.service_model.service_name

    def before_send(request: Any = None, **kwargs: Any) -> None:
        op = _aws_operation(kwargs, request)
        pacer.take(pacer.key("aws", account, region, op))

    def needs_retry(response: Any = None, operation: Any = None, **kwargs: Any) -> None:
        if not response or not isinstance(response, tuple) or len(response) < 2:
            return
        _http, parsed = response
        code = (parsed or {}).get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        if code in ("RequestLimitExceeded", "Throttling", "ThrottlingException"):
            name = getattr(operation, "name", None)
            pacer.refused(pacer.key("aws", account, region, name))

    client.meta.events.register(f"before-send.{service}", before_send)
    client.meta.events.register(f"needs-retry.{service}", needs_retry)


def _aws_operation(kwargs: dict[str, Any], request: Any) -> str | None:
    event = str(kwargs.get("event_name", ""))  # before-send.ec2.DescribeInstances
    return event.rsplit(".", 1)[-1] if event.count(".") >= 2 else None


def azure_pacing_policy(pacer: Pacer) -> Any:
    """An azure-core per-retry policy: one allowance per attempt, per subscription."""
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class _Pacing(SansIOHTTPPolicy[Any, Any]):
        def on_request(self, request: Any) -> None:
            pacer.take(pacer.key("azure", _subscription(request.http_request.url), None, None))

        def on_response(self, request: Any, response: Any) -> None:
            http = response.http_response
            if http.status_code == 429:
                key = pacer.key("azure", _subscription(request.http_request.url), None, None)
                pacer.refused(key, _retry_after(http.headers.get("Retry-After")))

    return _Pacing()


def _subscription(url: str) -> str | None:
    parts = url.split("/subscriptions/", 1)
    return parts[1].split("/", 1)[0].split("?", 1)[0].lower() if len(parts) == 2 else None


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def google_pacing_adapter(pacer: Pacer, base: Any) -> Any:
    """A `requests` adapter for the Google clients: the project comes from the URL (Compute)
    or the request body's resourceNames (Logging); 403 rateLimitExceeded and 429 refuse."""
    import requests

    class _Pacing(requests.adapters.HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            key = _google_key(pacer, request)
            pacer.take(key)
            response = super().send(request, *args, **kwargs)
            if response.status_code == 429 or (
                response.status_code == 403 and b"rateLimitExceeded" in (response.content or b"")
            ):
                pacer.refused(key, _retry_after(response.headers.get("Retry-After")))
            return response

    return _Pacing(
        pool_connections=base._pool_connections,
        pool_maxsize=base._pool_maxsize,
        max_retries=base.max_retries,
    )


def _google_key(pacer: Pacer, request: Any) -> Any:
    url = str(request.url)
    if "/projects/" in url and "/compute/" in url:
        project = url.split("/projects/", 1)[1].split("/", 1)[0]
        return pacer.key("gcp", project, None, "compute")
    if "entries:list" in url:
        body = request.body or b""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        marker = '"projects/'
        if marker in text:
            project = text.split(marker, 1)[1].split('"', 1)[0].split("/", 1)[0]
            return pacer.key("gcp", project, None, "logging.entries.list")
    return None


def pace_requests_session(session: Any, pacer: Pacer) -> None:
    """Mount the pacing adapter on every HTTP(S) prefix of a Google client's session."""
    try:
        import requests
    except ImportError:  # pragma: no cover
        return
    if not isinstance(session, requests.Session):
        return
    for prefix, adapter in list(session.adapters.items()):
        if isinstance(adapter, requests.adapters.HTTPAdapter):
            session.mount(prefix, google_pacing_adapter(pacer, adapter))
