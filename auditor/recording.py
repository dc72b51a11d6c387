"""Keeps every raw API response, in the replay layout, and the Evidence items made from them.

What a scan read is written under the run's `raw/` exactly as fakecloud serves it, so
`ccaudit scan --replay RUN_DIR` re-runs the audit on the same bytes. Thread-safe: providers
collect scopes concurrently.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

from auditor.model import Evidence, json_default
from auditor.runs.spool import EvidenceSpool, VmOrder

EVIDENCE_DIR = "evidence"
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=,-]{0,254}$")


_PLAIN = (str, int, float, bool, type(None))


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of an SDK response: datetimes as ISO-8601, bytes as base64."""
    if type(value) in _PLAIN:  # most leaves: one type check instead of four isinstance calls
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _dumps(data: Any) -> str:
    """Compact JSON of a response (indent=2 would make `json` use its pure-Python encoder)."""
    try:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=json_default)
    except TypeError:  # e.g. a non-string map key: walk it first
        return json.dumps(jsonable(data), ensure_ascii=False, separators=(",", ":"))


def _where(evidence: Evidence) -> tuple[str, ...]:
    return tuple(
        value or ""
        for value in (
            evidence.provider,
            evidence.account,
            evidence.region,
            evidence.ref,
            evidence.call,
            evidence.resource,
        )
    )


def where_key(evidence: Evidence) -> str:
    """`_where` as one string that sorts the same (its parts hold no NUL), for the spool."""
    return "\x00".join(_where(evidence))


def keep_evidence(
    store: dict[str, Evidence], evidence: Evidence, spool: EvidenceSpool | None = None
) -> None:
    """Add `evidence` to `store` (by sha256). Of two items with the same content (an image or
    instance type seen in two accounts) the first by where it was read is kept, so a run's
    evidence never depends on which scope, thread or worker finished first. An item already
    in `spool` (a finished scope's) is compared by where it was read too."""
    kept = store.get(evidence.sha256)
    if kept is None and spool is not None and (spooled := spool.where(evidence.sha256)):
        if where_key(evidence) < spooled:
            store[evidence.sha256] = evidence  # replaces the spooled copy when it is spilled
        return
    if kept is None or _where(evidence) < _where(kept):
        store[evidence.sha256] = evidence


def raw_path(*parts: str) -> str:
    """A relative path in the replay layout; refuses components that could escape it."""
    for part in parts:
        if not _SAFE_PART.match(part) or part in (".", ".."):
            raise ValueError(f"unsafe path component in evidence path: {part!r}")
    return "/".join(parts)


class EvidenceSink:
    """Collects Evidence (deduplicated by sha256) and writes raw responses under `raw_dir`."""

    def __init__(self, raw_dir: Path | None = None) -> None:
        self.raw_dir = raw_dir
        self.evidence: dict[str, Evidence] = {}
        self.spool: EvidenceSpool | None = None
        self._lock = threading.Lock()
        self._made: set[str] = set()

    def save_raw(self, relpath: str, data: Any) -> str:
        """Write one response (`<relpath>.json`); returns the path relative to raw/."""
        ref = f"{relpath}.json"
        self._write(ref, data)
        return ref

    def save_bytes(self, ref: str, data: bytes) -> str:
        """Write one answer byte for byte at `ref` (XML, say), relative to raw/."""
        self._put(ref, data)
        return ref

    def save_error(self, relpath: str, status: int, code: str, message: str) -> str:
        """Write a failed call as `<relpath>.error.json`, which fakecloud replays as that error."""
        ref = f"{relpath}.error.json"
        self._write(ref, {"status": status, "code": code, "message": message})
        return ref

    def save_meta(self, name: str, data: Any) -> None:
        """A file beside the cloud folders (replay.json: when the responses were recorded)."""
        self._write(name, data)

    def save_guest(self, name: str, data: bytes) -> str:
        """A guest evidence file, byte for byte, under evidence/guest/<relative path>."""
        return self._save_evidence("guest", name, data)

    def save_collateral(self, name: str, data: bytes) -> str:
        """Verification collateral (signing keys, certificates) under evidence/collateral/."""
        return self._save_evidence("collateral", name, data)

    def save_rules(self, name: str, data: bytes) -> str:
        """A user rule pack the run used, under evidence/rules/<sha256>.yaml."""
        return self._save_evidence("rules", name, data)

    def _save_evidence(self, kind: str, name: str, data: bytes) -> str:
        rel = f"{EVIDENCE_DIR}/{kind}/{raw_path(*name.split('/'))}"
        if self.raw_dir is not None:
            target = self.raw_dir.parent / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return rel

    def _write(self, ref: str, data: Any) -> None:
        if self.raw_dir is not None:
            self._put(ref, (_dumps(data) + "\n").encode("utf-8"))

    def _put(self, ref: str, data: bytes) -> None:
        """Write `data` at `ref` under raw/ whole or not at all (a temporary file renamed).

        With plain strings and `os` calls: a scan writes one file per call (8,000 at 10k VMs),
        and pathlib's objects cost as much CPU as the kernel's work (benchmarks/RESULTS.md)."""
        if self.raw_dir is None:
            return
        target = f"{self.raw_dir}/{ref}"
        folder = target.rpartition("/")[0]
        if folder not in self._made:  # one mkdir per folder, not per response
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        tmp = f"{target}.tmp"
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, target)

    def add(self, evidence: Evidence) -> str:
        with self._lock:
            keep_evidence(self.evidence, evidence, self.spool)
        return evidence.sha256

    # ------------------------------------------------------------ with a spool (auditor.runs.spool)
    def spool_to(self, spool: EvidenceSpool) -> None:
        """From now on items of finished scopes go to `spool` (`spill`), not memory."""
        self.spool = spool

    def lookup(self, sha: str) -> Evidence | None:
        """The item kept for `sha`, in memory or spooled (then read back into memory, so that
        what the verify stage writes on it is spilled with it)."""
        with self._lock:
            kept = self.evidence.get(sha)
            if kept is None and self.spool is not None and sha in self.spool:
                kept = self.evidence[sha] = self.spool.load(sha)
            return kept

    def spill(self, sha: str, verified: Evidence | None, verifier: VmOrder | None) -> None:
        """Move the item kept for `sha` to the spool, once its scope is verified.

        `verified` is the object the scope's VMs verified and `verifier` the last of them in
        the run's order (None: none verified it). The item written is the copy kept (the first
        by where it was read) with the verification of the last VM in the run's order that
        verified it, here or in a scope spilled before: what verifying the whole run at once
        leaves on it.
        """
        spool = self.spool
        assert spool is not None
        with self._lock:
            kept = self.evidence.get(sha)
            if kept is None and (sha not in spool or verifier is None):
                return  # nothing new: the spooled copy stands
            earlier = spool.verifier(sha)
            spooled = spool.load(sha) if kept is None or earlier is not None else None
            item = kept if kept is not None else spooled
            assert item is not None
            verification = item.verification
            last = None
            if earlier is not None and spooled is not None:
                last, verification = earlier, spooled.verification
            if verifier is not None and verified is not None and (last is None or verifier > last):
                last, verification = verifier, verified.verification
            if verification is not item.verification:
                item = item.model_copy(update={"verification": verification})
            spool.put(item, where_key(item), last)
            if kept is not None:
                del self.evidence[sha]


class SinkClosed(BaseException):
    """Raised in a collecting thread that writes after an interruption closed the sink.

    A BaseException so that the providers' `except Exception` (which turns call failures into
    gaps) lets it through: the thread stops at its next write instead of finishing its scope.
    """


class StoppableSink(EvidenceSink):
    """An EvidenceSink that refuses every write once `close()` is called (on interruption).

    Scopes still in flight when a scan is interrupted stop at their next write, so nothing is
    added to the run directory or to the evidence after the partial result is decided.
    `stopped`, if given, is asked at every write too (a collection worker's view of its
    parent's stop flag, auditor.workers).
    """

    def __init__(
        self, raw_dir: Path | None = None, stopped: Callable[[], bool] | None = None
    ) -> None:
        super().__init__(raw_dir)
        self._closed = False
        self._stopped = stopped

    def close(self) -> None:
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed or (self._stopped is not None and self._stopped()):
            self._closed = True
            raise SinkClosed("the scan was interrupted")

    def _write(self, ref: str, data: Any) -> None:
        self._check_open()
        super()._write(ref, data)

    def _save_evidence(self, kind: str, name: str, data: bytes) -> str:
        self._check_open()
        return super()._save_evidence(kind, name, data)

    def add(self, evidence: Evidence) -> str:
        with self._lock:
            self._check_open()
            keep_evidence(self.evidence, evidence, self.spool)
        return evidence.sha256
