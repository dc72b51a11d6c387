"""Deterministic slices of a scan's scope, so N machines can each read a part (`--shard K/N`).

A scope (provider, account, region) belongs to shard K of N when SHA-256 of its key, read as a
big-endian integer, is K-1 modulo N. The hash depends on nothing but the key: the same scope
lands in the same shard on every machine, every run and in any listing order, and adding an
account moves only that account's scopes. Gaps met while planning (an account that cannot be
reached) are owned the same way, so the merged shards report each of them exactly once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MAX_SHARDS = 10_000
_SPEC = re.compile(r"^\s*(\d{1,6})\s*/\s*(\d{1,6})\s*$")


class ShardError(ValueError):
    """A `--shard` value that is not K/N with 1 <= K <= N."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ShardError(f"shard count must be between 1 and {MAX_SHARDS}, not {self.count}")
        if not 1 <= self.index <= self.count:
            raise ShardError(f"shard index must be between 1 and {self.count}, not {self.index}")

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, provider: str, account: str | None, region: str | None) -> bool:
        """Whether the scope (provider, account, region) is this shard's."""
        return shard_of(provider, account, region, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """`"K/N"` -> Shard(K, N); ShardError naming the value otherwise."""
    match = _SPEC.match(text)
    if match is None:
        raise ShardError(f"--shard {text!r}: expected K/N, e.g. 2/4 (1-based)")
    try:
        return Shard(int(match.group(1)), int(match.group(2)))
    except ShardError as err:
        raise ShardError(f"--shard {text!r}: {err}") from err


def shard_of(provider: str, account: str | None, region: str | None, count: int) -> int:
    """The 1-based shard of `count` that owns this scope key."""
    key = "\x00".join((provider, account or "", region or "")).encode("utf-8")
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest, "big") % count + 1
