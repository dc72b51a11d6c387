"""The clouds' documented request rate limits for the calls a scan makes: one table for both
sides, the scanner's pacing (auditor/providers/pacing.py) and fakecloud's rate-limit mode.

A real scan is held back by these, not by latency: past a limit each cloud refuses calls
(EC2 503 `RequestLimitExceeded`, ARM 429 `TooManyRequests` with `Retry-After`, Compute Engine
403 `rateLimitExceeded`, Cloud Logging 429 `RESOURCE_EXHAUSTED`), and a scanner that spends an
account's whole bucket also throttles the owner's own automation sharing it. Figures are the
documented defaults (an account may have raised ones):

- EC2 API request throttling: non-mutating actions (Describe*, Get*) share a token bucket per
  account and Region, 100 tokens, refilled at 20 per second.
- Azure Resource Manager: reads per subscription (and region of the ARM instance), a bucket of
  250 refilled at 25 per second.
- Compute Engine rate quotas: read (get and list) requests per project, 1,500 per minute,
  enforced per synchronised 60-second interval.
- Cloud Logging: entries.list requests per project, 60 per minute.

An owner whose quota was raised (or who shares an account with heavy automation) says so per
family (`ccaudit scan --rate-limit aws:ec2-read=200/40`, `rate_limits:` in ccaudit.yaml):
`limits_with` gives the table the scan then paces by.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Limit:
    """A token bucket (`capacity`, refilled at `rate` per second) or a fixed window (`capacity`
    calls per `window_s` seconds, counted per interval)."""

    kind: Literal["bucket", "window"]
    capacity: int
    rate: float = 0.0
    window_s: float = 0.0
    source: str = ""

    @property
    def written(self) -> str:
        """The limit as an owner writes it (`--rate-limit`): 200/40 or 3000/60s."""
        if self.kind == "bucket":
            return f"{self.capacity}/{self.rate:g}"
        return f"{self.capacity}/{self.window_s:g}s"

    @property
    def per_second(self) -> float:
        """The sustained rate the limit allows."""
        return self.rate if self.kind == "bucket" else self.capacity / self.window_s

    def time_for(self, calls: int) -> float:
        """The least time `calls` calls take under this limit, starting with a full allowance."""
        extra = max(0, calls - self.capacity)
        if self.kind == "bucket":
            return extra / self.rate
        return -(-extra // self.capacity) * self.window_s  # whole intervals past the first


class TokenBucket:
    """One token bucket's state, for both sides (the scanner's pacer, fakecloud's limiter)."""

    def __init__(self, capacity: int, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = float(capacity)
        self.stamp = now

    def take(self, now: float) -> float:
        """0 if a token was there (and is spent); else the seconds until one is."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0 - 1e-9:  # float refill: 1/rate seconds give one token
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.rate


#: (cloud, family) -> limit. The scope a limit counts per is in `scope_of`.
DOCUMENTED: dict[tuple[str, str], Limit] = {
    ("aws", "ec2-read"): Limit(
        "bucket", 100, rate=20.0, source="EC2 API request throttling, non-mutating actions"
    ),
    ("azure", "arm-read"): Limit(
        "bucket", 250, rate=25.0, source="Azure Resource Manager throttling, subscription reads"
    ),
    ("gcp", "compute-read"): Limit(
        "window", 1500, window_s=60.0, source="Compute Engine rate quotas, read requests"
    ),
    ("gcp", "logging-read"): Limit(
        "window", 60, window_s=60.0, source="Cloud Logging quotas, entries.list requests"
    ),
}

#: A rate limit's key: (cloud, scope it counts per, family).
LimitKey = tuple[str, str, str]


def family_of(cloud: str, operation: str | None) -> str | None:
    """Which limited family a call belongs to (None: not limited here, e.g. STS)."""
    op = operation or ""
    if cloud == "aws":
        reads = op.startswith(("Describe", "Get")) and op != "GetCallerIdentity"
        return "ec2-read" if reads else None
    if cloud == "azure":
        return "arm-read"
    if cloud == "gcp":
        return "logging-read" if "entries" in op or "logging" in op else "compute-read"
    return None


def scope_of(cloud: str, account: str | None, region: str | None) -> str:
    """What a limit counts per: EC2 account and Region, an Azure subscription, a GCP project."""
    if cloud == "aws":
        return f"{account or '?'}/{region or '?'}"
    return account or "?"


#: How an owner's limit is written, for help texts and errors.
LIMIT_FORMS = (
    "BURST/PER_SECOND for a token bucket (aws:ec2-read=200/40), CALLS/SECONDSs for calls per "
    "interval (gcp:compute-read=3000/60s), or off (not paced)"
)
_LIMIT = re.compile(r"(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(s?)")


def documented_limits() -> str:
    """Each family with its documented limit, as an owner would write it (help texts)."""
    return ", ".join(f"{c}:{f} ({limit.written})" for (c, f), limit in DOCUMENTED.items())


class LimitError(ValueError):
    """An owner's rate limit that cannot be used; the message names it and says why."""


def parse_limit(name: str, text: str) -> tuple[tuple[str, str], Limit | None]:
    """One owner's limit: `name` is CLOUD:FAMILY (`aws:ec2-read`), `text` its value in the
    family's own kind (a bucket or calls per interval) or `off`. None: not paced."""
    cloud, _, family = name.strip().lower().partition(":")
    key = (cloud, family)
    documented = DOCUMENTED.get(key)
    if documented is None:
        known = ", ".join(f"{c}:{f}" for c, f in DOCUMENTED)
        raise LimitError(f"rate limit {name!r}: no such limit (known: {known})")
    value = text.strip().lower()
    if value == "off":
        return key, None
    match = _LIMIT.fullmatch(value)
    if match is None or int(match[1]) < 1 or float(match[2]) <= 0:
        raise LimitError(f"rate limit {name}={text!r}: expected {LIMIT_FORMS}")
    calls, per, interval = int(match[1]), float(match[2]), bool(match[3])
    source = f"{documented.source}: the owner's {value}"
    if documented.kind == "bucket":
        if interval:
            raise LimitError(
                f"rate limit {name}={text!r}: {name} is a token bucket; write BURST/PER_SECOND "
                f"(documented: {documented.written})"
            )
        return key, Limit("bucket", calls, rate=per, source=source)
    if not interval:
        raise LimitError(
            f"rate limit {name}={text!r}: {name} counts calls per interval; write "
            f"CALLS/SECONDSs (documented: {documented.written})"
        )
    return key, Limit("window", calls, window_s=per, source=source)


def limits_with(owner: Mapping[str, str]) -> dict[tuple[str, str], Limit]:
    """The documented limits with the owner's own in their place (`off`: that family is not
    paced). Raises LimitError naming the first one that cannot be used."""
    limits = dict(DOCUMENTED)
    for name, text in owner.items():
        key, limit = parse_limit(name, text)
        if limit is None:
            limits.pop(key, None)
        else:
            limits[key] = limit
    return limits
