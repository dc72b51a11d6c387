"""Fault injection for fakecloud: latency, throttling, 5xx errors, page size, rate limits.

The decision of *whether* a call is faulted is cloud-agnostic and lives here; each cloud
handler renders the fault in its own wire protocol (EC2 ``RequestLimitExceeded``, STS
``Throttling``, ...). A seeded RNG behind a lock makes a single-threaded run reproducible.

With ``rate_limits`` on, fakecloud also enforces the clouds' documented request rate limits
(auditor/ratelimits.py: token buckets per EC2 account and Region and per Azure subscription,
per-minute windows per GCP project) and refuses a call past them as that cloud does.
"""

from __future__ import annotations

import enum
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from auditor.ratelimits import DOCUMENTED, Limit, LimitKey, TokenBucket, family_of, scope_of

CONFIG_FILE_NAME = "fakecloud.yaml"
_MAX_CONFIG_BYTES = 1024 * 1024


class FakeCloudConfigError(ValueError):
    """``fakecloud.yaml`` (or a FaultConfig) is invalid; the message names the file and field."""


class CallMatch(BaseModel):
    """Which served calls a scenario applies to; a field left out matches anything.

    ``account`` is the AWS account, GCP project or Azure subscription; ``operation`` the name
    fakecloud logs (``DescribeInstances``, ``instances.aggregatedList``, ``disks.list``...).
    ``after`` leaves the first that many matching calls alone: ``after: 1`` on a list
    operation spares its first page and faults the pages after it (a listing that fails
    half way, once per-VM calls for its first page are under way).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    cloud: str | None = None
    account: str | None = None
    region: str | None = None
    operation: str | None = None
    resource: str | None = None
    after: int = Field(default=0, ge=0)

    def matches(
        self,
        cloud: str,
        account: str | None,
        region: str | None,
        operation: str | None,
        resource: str | None,
    ) -> bool:
        wanted = (self.cloud, self.account, self.region, self.operation, self.resource)
        actual = (cloud, account, region, operation, resource)
        return all(w is None or w == a for w, a in zip(wanted, actual, strict=True))


class FaultConfig(BaseModel):
    """What to inject. Fields set explicitly (constructor/CLI) override ``fakecloud.yaml``.

    Besides the random rates: ``hang`` holds the answer to matching calls for
    ``hang_seconds`` (a scope that times out on the client), ``malformed`` cuts every matching
    successful answer in half (a response that does not parse), and ``retry_after_seconds`` is
    the ``Retry-After`` a throttled Azure call carries (0 keeps throttled tests fast).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    latency_ms: float = Field(default=0.0, ge=0.0, le=600_000.0)
    throttle_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    throttle_first: int = Field(default=0, ge=0)
    seed: int = 0
    page_size: int = Field(default=50, ge=1, le=100_000)
    hang: tuple[CallMatch, ...] = Field(default=(), strict=False)
    hang_seconds: float = Field(default=30.0, ge=0.0, le=3600.0)
    malformed: tuple[CallMatch, ...] = Field(default=(), strict=False)
    retry_after_seconds: int = Field(default=1, ge=0, le=3600)
    #: Check every replay file against the SDK's own models before serving it (the default:
    #: a replay with an invented field fails loudly). Off only for generated benchmark fleets,
    #: whose records were checked once where they were cloned from, so that fakecloud's CPU
    #: on a shared machine is not charged to the scanner.
    validate_files: bool = True
    #: Enforce the documented request rate limits (auditor/ratelimits.py), refusing calls past
    #: them as each cloud does: the pace a real scan is held to.
    rate_limits: bool = False

    @model_validator(mode="after")
    def _rates_fit(self) -> FaultConfig:
        if self.throttle_rate + self.error_rate > 1.0:
            raise ValueError("throttle_rate + error_rate must not exceed 1")
        return self

    def overridden_by(self, other: FaultConfig | None) -> FaultConfig:
        """This config with the fields *explicitly set* on ``other`` taking precedence."""
        if other is None:
            return self
        merged = self.model_dump()
        merged.update({name: getattr(other, name) for name in other.model_fields_set})
        return FaultConfig(**merged)


def load_fault_config(replay_dir: Path) -> FaultConfig:
    """Read ``<replay_dir>/fakecloud.yaml`` if present; a missing file means defaults."""
    path = replay_dir / CONFIG_FILE_NAME
    if not path.is_file():
        return FaultConfig()
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise FakeCloudConfigError(f"{path}: larger than {_MAX_CONFIG_BYTES} bytes")
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as err:
        raise FakeCloudConfigError(f"{path}: cannot read: {err}") from err
    if raw is None:
        return FaultConfig()
    if not isinstance(raw, dict):
        raise FakeCloudConfigError(f"{path}: expected a mapping of fault settings at the top")
    try:
        return FaultConfig(**{str(k): v for k, v in raw.items()})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in err.errors()
        )
        raise FakeCloudConfigError(f"{path}: {problems}") from err


class Fault(enum.Enum):
    """The kinds of injected failure a handler must be able to render."""

    THROTTLE = "throttle"
    INTERNAL_ERROR = "internal_error"  # HTTP 500
    RATE_LIMIT = "rate_limit"  # past a documented request rate limit
    UNAVAILABLE = "unavailable"  # HTTP 503


FaultKey = tuple[str, str | None, str | None, str | None, str | None]
"""(cloud, account, region, operation, resource): the unit ``throttle_first`` counts per."""


class _Allowance:
    """What one limit allows one scope now: a token bucket or a fixed per-interval count."""

    def __init__(self, limit: Limit, now: float) -> None:
        self.limit = limit
        self.bucket = TokenBucket(limit.capacity, limit.rate, now)
        self.window = math.floor(now / limit.window_s) if limit.kind == "window" else 0
        self.used = 0

    def take(self, now: float) -> float:
        """0 if the call may go (and counts it); else the seconds until one may."""
        lim = self.limit
        if lim.kind == "bucket":
            return self.bucket.take(now)
        window = math.floor(now / lim.window_s)  # synchronised intervals, as Google counts
        if window != self.window:
            self.window, self.used = window, 0
        if self.used < lim.capacity:
            self.used += 1
            return 0.0
        return (window + 1) * lim.window_s - now


class RateLimiter:
    """The documented limits, enforced per scope and family; thread-safe."""

    def __init__(
        self,
        limits: dict[tuple[str, str], Limit] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = DOCUMENTED if limits is None else limits
        self.clock = clock
        self._lock = threading.Lock()
        self._state: dict[LimitKey, _Allowance] = {}
        self.served: Counter[LimitKey] = Counter()
        self.refused: Counter[LimitKey] = Counter()

    def check(self, cloud: str, account: str | None, region: str | None, op: str | None) -> float:
        """0 when the call is within its limit (and is counted); else the wait it must do."""
        family = family_of(cloud, op)
        limit = self.limits.get((cloud, family)) if family else None
        if limit is None or family is None:
            return 0.0
        key = (cloud, scope_of(cloud, account, region), family)
        with self._lock:
            now = self.clock()
            state = self._state.get(key)
            if state is None:
                state = self._state[key] = _Allowance(limit, now)
            wait = state.take(now)
            (self.refused if wait else self.served)[key] += 1
        return wait

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "rate_limited_served": sum(self.served.values()),
                "rate_limited_refused": sum(self.refused.values()),
            }


class FaultInjector:
    """Decides per call whether to inject a fault; thread-safe and seeded."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._calls: Counter[FaultKey] = Counter()
        self.limiter = RateLimiter() if config.rate_limits else None
        self._waits = threading.local()

    def retry_after(self) -> int:
        """Seconds a refused call is told to wait (Azure's `Retry-After`): the limiter's wait
        for the call this thread was just refused, else the configured value."""
        wait: float | None = getattr(self._waits, "last", None)
        if wait is None:
            return self.config.retry_after_seconds
        return max(1, math.ceil(wait))

    @property
    def latency_seconds(self) -> float:
        return self.config.latency_ms / 1000.0

    def decide(self, key: FaultKey) -> Fault | None:
        """Count the call and return the fault to inject, if any."""
        cfg = self.config
        self._waits.last = None
        if self.limiter is not None:
            wait = self.limiter.check(key[0], key[1], key[2], key[3])
            if wait:
                self._waits.last = wait
                return Fault.RATE_LIMIT
        with self._lock:
            seen = self._calls[key]
            self._calls[key] = seen + 1
            if seen < cfg.throttle_first:
                return Fault.THROTTLE
            if cfg.throttle_rate == 0.0 and cfg.error_rate == 0.0:
                return None
            draw = self._rng.random()
            if draw < cfg.throttle_rate:
                return Fault.THROTTLE
            if draw < cfg.throttle_rate + cfg.error_rate:
                return Fault.INTERNAL_ERROR if self._rng.random() < 0.5 else Fault.UNAVAILABLE
            return None
