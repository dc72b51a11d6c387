"""Safe, cached read access to a fakecloud replay directory.

Every name that reaches the file system comes from a request (account, region, resource id),
so each path component is checked against a strict pattern and the resolved path must stay
under the replay root (no ``..``, no absolute paths, no symlink escapes). Files are bounded
in size and malformed JSON becomes a :class:`ReplayFileError` naming the file, which handlers
turn into an HTTP 500 rather than a crash.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 64 * 1024 * 1024
"""Largest replay file read (64 MiB): a guard against a runaway file, not a format limit."""

_CACHE_ENTRIES = 2048
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+=-]{0,254}")


class ReplayError(Exception):
    """A replay file or name cannot be used; ``path`` is the offending file when known."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class UnsafeNameError(ReplayError):
    """A path component would leave the replay directory or is not a plain name."""


class ReplayFileError(ReplayError):
    """A replay file exists but is unreadable, too large or not valid JSON."""


def is_safe_name(name: str) -> bool:
    """True for a single, plain path component (no separators, no leading dot)."""
    return _SAFE_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class LoadedJson:
    """A parsed replay file. ``data`` may be shared between requests: never mutate it."""

    path: Path
    relpath: str
    data: Any
    stamp: tuple[int, int, int]  # (inode, size, mtime_ns): changes when the file changes


ERROR_FILE_SHAPE = '{"status": 400-599, "code": "...", "message": "..."}'


def error_file_fields(doc: LoadedJson) -> tuple[int, str, str] | None:
    """(status, code, message) of an `.error.json` replay file; None when it is malformed."""
    data = doc.data
    ok = (
        isinstance(data, dict)
        and set(data) <= {"status", "code", "message"}
        and type(data.get("status")) is int
        and 400 <= data["status"] <= 599
        and isinstance(data.get("code"), str)
        and data["code"]
        and isinstance(data.get("message", ""), str)
    )
    if not ok:
        return None
    return int(data["status"]), str(data["code"]), str(data.get("message", ""))


def aws_accounts(replay_dir: str | Path) -> list[str]:
    """Account folders under ``<replay_dir>/aws``, sorted; none if there is no such folder."""
    return ReplayStore(replay_dir).subdirs("aws")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


class ReplayStore:
    """Read-only view of one replay directory with a small LRU cache of parsed files."""

    def __init__(self, root: str | Path, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"replay directory {root} does not exist")
        self.max_file_bytes = max_file_bytes
        self._lock = threading.Lock()
        self._cache: OrderedDict[Path, tuple[tuple[int, int, int], Any]] = OrderedDict()
        self._subdirs: dict[Path, tuple[tuple[int, int, int, int], tuple[str, ...]]] = {}

    def path(self, *parts: str) -> Path:
        """The path for these components, refusing anything that could escape the root."""
        for part in parts:
            if not is_safe_name(part):
                raise UnsafeNameError(f"not a plain file name: {part!r}")
        candidate = self.root.joinpath(*parts)
        resolved = candidate.resolve()
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise UnsafeNameError(f"{candidate} resolves outside the replay directory", candidate)
        return candidate

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, for messages that must not leak absolute paths."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def is_dir(self, *parts: str) -> bool:
        try:
            return self.path(*parts).is_dir()
        except UnsafeNameError:
            return False

    def subdirs(self, *parts: str) -> list[str]:
        """Sorted names of the plain (non-hidden) sub-folders of a folder; [] if absent.

        Cached per folder version (inode, mtime, link count and size: they change when an entry
        is added, removed or renamed), because handlers ask on every request (AWS accounts,
        Azure subscriptions).
        """
        try:
            folder = self.path(*parts) if parts else self.root
            st = folder.stat()
        except (UnsafeNameError, OSError):
            return []
        stamp = (st.st_ino, st.st_mtime_ns, st.st_nlink, st.st_size)
        with self._lock:
            hit = self._subdirs.get(folder)
        if hit is not None and hit[0] == stamp:
            return list(hit[1])
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return []
        names = sorted(e.name for e in entries if is_safe_name(e.name) and self._inside_dir(e))
        with self._lock:
            if len(self._subdirs) > _CACHE_ENTRIES:
                self._subdirs.clear()
            self._subdirs[folder] = (stamp, tuple(names))
        return names

    def _inside_dir(self, entry: os.DirEntry[str]) -> bool:
        try:
            resolved = Path(entry.path).resolve()
            return entry.is_dir() and resolved.is_relative_to(self.root)
        except OSError:
            return False

    def load_json(self, *parts: str) -> LoadedJson | None:
        """Parse the JSON file at these components; ``None`` when there is no such file."""
        path = self.path(*parts)
        rel = self.relative(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise ReplayFileError(f"{rel}: cannot read: {err.strerror}", path) from err
        if not path.is_file():
            raise ReplayFileError(f"{rel}: not a regular file", path)
        if st.st_size > self.max_file_bytes:
            raise ReplayFileError(
                f"{rel}: {st.st_size} bytes exceeds the {self.max_file_bytes}-byte limit", path
            )
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == stamp:
                self._cache.move_to_end(path)
                return LoadedJson(path, rel, hit[1], stamp)
        data = self._parse(path, rel)
        with self._lock:
            self._cache[path] = (stamp, data)
            self._cache.move_to_end(path)
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return LoadedJson(path, rel, data, stamp)

    def _parse(self, path: Path, rel: str) -> Any:
        try:
            with path.open("rb") as fh:
                raw = fh.read(self.max_file_bytes + 1)
        except OSError as err:
            raise ReplayFileError(f"{rel}: cannot read: {err.strerror}", path) from err
        if len(raw) > self.max_file_bytes:
            raise ReplayFileError(f"{rel}: exceeds the {self.max_file_bytes}-byte limit", path)
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except json.JSONDecodeError as err:
            raise ReplayFileError(
                f"{rel}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}", path
            ) from err
        except (ValueError, RecursionError) as err:
            raise ReplayFileError(f"{rel}: malformed JSON: {err}", path) from err


class PreparedCache:
    """Replay files parsed, validated and indexed once, reused until the file changes.

    Shared by the cloud handlers: `prepare(doc)` runs again only when the file's stamp (inode,
    size, mtime) differs. Bounded, least recently used out first: a fleet's per-VM files are
    each read once and must not push out the list files every request of a scope needs.
    """

    MAX_ENTRIES = 8192

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[tuple[int, int, int], Any]] = (
            OrderedDict()
        )

    def get(self, doc: LoadedJson, kind: str, prepare: Callable[[LoadedJson], Any]) -> Any:
        key = (str(doc.path), kind)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] == doc.stamp:
                self._entries.move_to_end(key)
                return hit[1]
        value = prepare(doc)
        self._put(key, doc.stamp, value)
        return value

    def _put(self, key: tuple[str, str], stamp: tuple[int, int, int], value: Any) -> None:
        with self._lock:
            self._entries[key] = (stamp, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
