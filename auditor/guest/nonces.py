"""The audit's nonce store: which challenges were issued, to which VM, and which evidence used them.

Freshness of guest evidence rests on this file. `ccaudit guest challenge` records a random nonce
for one VM; the scan later accepts an evidence file only if its nonce was issued here, for the
same VM, recently, and not already consumed by a different evidence file. The store is one JSON
file, `<state>/nonces.json`, rewritten atomically (temp file + `os.replace`) under an exclusive
`flock` on a lock file, so concurrent challenges from several shells lose nothing.

Standard library only: the guest package must import without the auditor's dependencies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditor.guest.format import NONCE_BYTES, UUID_IDS

STORE_FORMAT = "ccaudit-nonces/1"
STORE_FILE = "nonces.json"
DEFAULT_MAX_AGE = timedelta(days=30)
MAX_STORE_BYTES = 64 * 1024 * 1024

_HEX = re.compile(r"^[0-9a-f]{64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class NonceStoreError(ValueError):
    """The nonce store cannot be read or updated (corrupt file, unknown nonce, bad argument)."""


@dataclass(frozen=True)
class NonceRecord:
    """One issued challenge and the evidence files (by SHA-256) that have presented it."""

    vm_id: str
    provider: str | None
    issued_at: datetime
    used_by: list[str] = field(default_factory=list)


def default_state_dir() -> Path:
    """`$CCAUDIT_HOME`, else `$XDG_DATA_HOME/ccaudit`, else `~/.local/share/ccaudit`: the
    same directory as the run store (auditor.runs.store), so one audit state holds both."""
    home = os.environ.get("CCAUDIT_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg).expanduser() / "ccaudit"
    return Path.home() / ".local" / "share" / "ccaudit"


def normalise_nonce(nonce_hex: str) -> str | None:
    """Lower-case 64-hex form of a nonce, or None when it is not one."""
    value = nonce_hex.strip().lower()
    return value if _HEX.match(value) else None


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _same_vm(record: NonceRecord, vm_id: str) -> bool:
    if record.provider in UUID_IDS:  # Azure vmIds, libvirt domain UUIDs: case-insensitive
        return record.vm_id.strip().lower() == vm_id.strip().lower()
    return record.vm_id.strip() == vm_id.strip()


class NonceStore:
    """The nonce file at `path` (normally `default_state_dir() / "nonces.json"`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @classmethod
    def default(cls) -> NonceStore:
        return cls(default_state_dir() / STORE_FILE)

    # -- public API -------------------------------------------------------------------------

    def issue(self, vm_id: str, provider: str | None = None, now: datetime | None = None) -> str:
        """Record a fresh 32-byte nonce for `vm_id` and return it as 64 hex characters."""
        if not vm_id.strip():
            raise NonceStoreError("a nonce must be issued for a VM id, got an empty one")
        issued = _utc(now)
        with self._locked():
            entries = self._read()
            nonce = secrets.token_bytes(NONCE_BYTES).hex()
            while nonce in entries:  # astronomically unlikely; never overwrite a record
                nonce = secrets.token_bytes(NONCE_BYTES).hex()
            entries[nonce] = {
                "vm_id": vm_id.strip(),
                "provider": provider.lower() if provider else None,
                "issued_at": _timestamp(issued),
                "used_by": [],
            }
            self._write(entries)
        return nonce

    def lookup(self, nonce_hex: str) -> NonceRecord | None:
        """The record for a nonce, or None when this store never issued it."""
        nonce = normalise_nonce(nonce_hex)
        if nonce is None:
            return None
        raw = self._read().get(nonce)
        return None if raw is None else _record(nonce, raw, self.path)

    def mark_used(self, nonce_hex: str, evidence_sha256: str) -> None:
        """Remember that the evidence file with this SHA-256 presented the nonce."""
        nonce = normalise_nonce(nonce_hex)
        digest = evidence_sha256.strip().lower()
        if not _SHA256.match(digest):
            raise NonceStoreError(f"evidence SHA-256 must be 64 hex characters, got {digest!r}")
        with self._locked():
            entries = self._read()
            if nonce is None or nonce not in entries:
                raise NonceStoreError(f"nonce {nonce_hex[:16]}... is unknown to {self.path}")
            used = entries[nonce].setdefault("used_by", [])
            if digest not in used:
                used.append(digest)
                self._write(entries)

    def check(
        self,
        nonce_hex: str,
        vm_id: str,
        evidence_sha256: str,
        max_age: timedelta = DEFAULT_MAX_AGE,
        now: datetime | None = None,
    ) -> tuple[bool, str]:
        """Is this nonce a fresh challenge for `vm_id`, not consumed by other evidence?"""
        record = self.lookup(nonce_hex)
        if record is None:
            return False, "stale: nonce unknown to this audit state"
        if not _same_vm(record, vm_id):
            return False, f"nonce was issued for VM {record.vm_id}, not {vm_id}"
        age = _utc(now) - record.issued_at
        issued = _timestamp(record.issued_at)
        if age < timedelta(0):
            return False, (
                f"not yet issued: nonce issued {issued}, after the time the evidence is judged "
                f"at ({_timestamp(_utc(now))})"
            )
        if age > max_age:
            return False, f"stale: nonce issued {issued}, older than {_days(max_age)}"
        digest = evidence_sha256.strip().lower()
        others = [used for used in record.used_by if used != digest]
        if others:
            return False, f"reused: nonce already used by evidence sha256 {others[0]}"
        return True, f"fresh nonce issued {issued} for {record.vm_id}"

    # -- file handling ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                data = fh.read(MAX_STORE_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise NonceStoreError(f"cannot read {self.path}: {err.strerror}") from err
        if len(data) > MAX_STORE_BYTES:
            raise NonceStoreError(f"{self.path} is larger than {MAX_STORE_BYTES} bytes")
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, ValueError) as err:
            raise NonceStoreError(f"{self.path} is not JSON: {err}") from err
        if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT:
            raise NonceStoreError(f"{self.path} is not a {STORE_FORMAT} file")
        entries = doc.get("nonces")
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise NonceStoreError(f"{self.path}: 'nonces' must map nonces to objects")
        return entries

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        doc = {"format": STORE_FORMAT, "nonces": entries}
        payload = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _days(delta: timedelta) -> str:
    if delta.total_seconds() % 86400 == 0:
        days = int(delta.total_seconds() // 86400)
        return f"{days} day" if days == 1 else f"{days} days"
    return str(delta)


def _record(nonce: str, raw: dict[str, Any], path: Path) -> NonceRecord:
    try:
        issued_at = datetime.strptime(str(raw["issued_at"]), "%Y-%m-%dT%H:%M:%SZ")
        vm_id = raw["vm_id"]
        provider = raw.get("provider")
        used_by = raw.get("used_by", [])
    except (KeyError, ValueError) as err:
        raise NonceStoreError(f"{path}: record for nonce {nonce[:16]}... is malformed") from err
    if not isinstance(vm_id, str) or not (provider is None or isinstance(provider, str)):
        raise NonceStoreError(f"{path}: record for nonce {nonce[:16]}... is malformed")
    if not isinstance(used_by, list) or not all(isinstance(u, str) for u in used_by):
        raise NonceStoreError(f"{path}: used_by of nonce {nonce[:16]}... must be a list of hashes")
    return NonceRecord(
        vm_id=vm_id,
        provider=provider,
        issued_at=issued_at.replace(tzinfo=UTC),
        used_by=list(used_by),
    )
