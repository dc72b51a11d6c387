"""The run store: every saved run directory plus an SQLite index, for history and baselines.

A scheduled scan needs "the previous run of this scope" without anyone keeping paths, and a
reviewer needs "how did this VM look over the last months" without opening every result.json.
So runs live under `<store>/runs/<run-id>/` (a run saved elsewhere with `--run-dir` is indexed
with its path) and `<store>/index.sqlite` holds one row per run (time, scope, counts per level,
undetermined party statuses, gaps, complete flag, manifest hash) and one row per VM and run
(level, technology, party statuses).

The index is a cache of the run directories, which stay the evidence: `rebuild` recreates it
from them. Several scans may write the same store at once (two CI jobs, a cron and a person):
run directories never collide (run ids are unique), and the index uses SQLite's WAL journal, a
busy timeout and one short `BEGIN IMMEDIATE` transaction per run, so writers queue instead of
failing or corrupting it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from auditor.model import AuditRun, Level, Scope

__all__ = [
    "LATEST",
    "STORE_ENV",
    "RunRecord",
    "RunStore",
    "StoreError",
    "VMHistoryEntry",
    "default_store_dir",
    "scope_key",
]

STORE_ENV = "CCAUDIT_HOME"
INDEX_FILE = "index.sqlite"
RUNS_DIR = "runs"
RESULT_FILE = "result.json"
MANIFEST_FILE = "manifest.json"
LATEST = "latest"
#: Seconds a writer waits for another writer's transaction before giving up.
BUSY_TIMEOUT_S = 60.0
_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    providers TEXT NOT NULL,
    accounts TEXT NOT NULL,
    regions TEXT NOT NULL,
    vms INTEGER NOT NULL,
    l0 INTEGER NOT NULL, l1 INTEGER NOT NULL, l2 INTEGER NOT NULL,
    l3 INTEGER NOT NULL, l4 INTEGER NOT NULL,
    undetermined INTEGER NOT NULL,
    gaps INTEGER NOT NULL,
    complete INTEGER NOT NULL,
    manifest_sha256 TEXT,
    path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_scope_time ON runs (scope_key, started_at);
CREATE TABLE IF NOT EXISTS vm_runs (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    vm_key TEXT NOT NULL,
    provider TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    vm_id TEXT NOT NULL,
    name TEXT,
    technology TEXT NOT NULL,
    level TEXT NOT NULL,
    parties TEXT NOT NULL,
    PRIMARY KEY (run_id, vm_key)
);
CREATE INDEX IF NOT EXISTS vm_runs_id ON vm_runs (vm_id);
CREATE INDEX IF NOT EXISTS vm_runs_key ON vm_runs (vm_key);
"""


class StoreError(Exception):
    """A run reference that resolves to nothing, or a store that cannot be read or written."""


def default_store_dir() -> Path:
    """$CCAUDIT_HOME, else $XDG_DATA_HOME/ccaudit, else ~/.local/share/ccaudit."""
    if home := os.environ.get(STORE_ENV):
        return Path(home).expanduser()
    if xdg := os.environ.get("XDG_DATA_HOME"):
        return Path(xdg).expanduser() / "ccaudit"
    return Path.home() / ".local" / "share" / "ccaudit"


def scope_key(scope: Scope) -> str:
    """What makes two runs comparable for `latest`: the same providers, accounts and regions
    (and shard: shard 2/4 is compared with the last 2/4, never with another shard)."""
    key: dict[str, object] = {
        "providers": sorted(scope.providers),
        "accounts": sorted(scope.accounts),
        "regions": sorted(scope.regions),
    }
    if scope.shard is not None:
        key["shard"] = scope.shard
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class RunRecord:
    """One indexed run."""

    run_id: str
    started_at: str
    finished_at: str
    scope_key: str
    providers: tuple[str, ...]
    accounts: tuple[str, ...]
    regions: tuple[str, ...]
    vms: int
    levels: dict[str, int]
    undetermined: int
    gaps: int
    complete: bool
    manifest_sha256: str | None
    path: Path

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "providers": list(self.providers),
            "accounts": list(self.accounts),
            "regions": list(self.regions),
            "vms": self.vms,
            "levels": dict(self.levels),
            "undetermined": self.undetermined,
            "gaps": self.gaps,
            "complete": self.complete,
            "manifest_sha256": self.manifest_sha256,
            "path": str(self.path),
        }


@dataclass(frozen=True)
class VMHistoryEntry:
    """One VM in one run: its level and party statuses then."""

    run_id: str
    started_at: str
    vm_key: str
    name: str | None
    technology: str
    level: str
    parties: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "vm_key": self.vm_key,
            "name": self.name,
            "technology": self.technology,
            "level": self.level,
            "parties": dict(self.parties),
        }


def _manifest_hash(run_dir: Path) -> str | None:
    try:
        return hashlib.sha256((run_dir / MANIFEST_FILE).read_bytes()).hexdigest()
    except OSError:
        return None


class RunStore:
    """A store directory: `runs/<run-id>/` run directories and `index.sqlite`."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_dir()
        self.runs_dir = self.root / RUNS_DIR
        self.index_path = self.root / INDEX_FILE
        self._ready = False

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # -- the index ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if not write and not self.index_path.is_file():
            raise StoreError(f"no run store index at {self.index_path} (no run saved there yet)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"cannot open the run store index {self.index_path}: {err}") from err
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._ready:
                # switching a new index to WAL needs an exclusive lock SQLite will not wait
                # for, so processes creating the index at once take turns on a lock file
                with _file_lock(self.index_path.with_name(self.index_path.name + ".lock")):
                    self._init(conn)
            yield conn
        except sqlite3.Error as err:
            raise StoreError(f"run store index {self.index_path}: {err}") from err
        finally:
            conn.close()

    def _init(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.index_path}: cannot switch the index to WAL (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise StoreError(
                f"{self.index_path} was written by a newer cc-auditor (index v{version})"
            )
        if version < _SCHEMA_VERSION:
            # idempotent statements: two processes creating the index at once both succeed
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        self._ready = True

    def _stored_path(self, run_dir: Path) -> str:
        resolved = run_dir.resolve()
        try:
            return resolved.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(resolved)

    def _path(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    def run_dir(self, run_id: str) -> Path:
        """Where a new run with this id is kept inside the store."""
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise StoreError(f"not a usable run id: {run_id!r}")
        return self.runs_dir / run_id

    def add(self, run: AuditRun, run_dir: str | Path) -> RunRecord:
        """Index a saved run (after its manifest is written, so its hash is recorded)."""
        where = Path(run_dir)
        counts = run.level_counts()
        undetermined = sum(
            1 for vm in run.vms for status in vm.parties.values() if status.value == "UNDETERMINED"
        )
        row = (
            run.run_id,
            run.started_at.isoformat(),
            run.finished_at.isoformat(),
            scope_key(run.scope),
            json.dumps(sorted(run.scope.providers)),
            json.dumps(sorted(run.scope.accounts)),
            json.dumps(sorted(run.scope.regions)),
            len(run.vms),
            *(counts[lv] for lv in Level),
            undetermined,
            len(run.coverage.gaps),
            int(run.coverage.complete),
            _manifest_hash(where),
            self._stored_path(where),
        )
        vm_rows = [
            (
                run.run_id,
                vm.key,
                vm.provider,
                vm.account,
                vm.region,
                vm.id,
                vm.name,
                vm.technology.value,
                vm.level.value,
                json.dumps({p.value: s.value for p, s in vm.parties.items()}, sort_keys=True),
            )
            for vm in run.vms
        ]
        with self._connect(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM vm_runs WHERE run_id = ?", (run.run_id,))
                conn.execute(
                    "INSERT OR REPLACE INTO runs VALUES (" + ",".join("?" * len(row)) + ")", row
                )
                conn.executemany(
                    "INSERT INTO vm_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", vm_rows
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        record = self.get(run.run_id)
        assert record is not None
        return record

    def remove(self, run_id: str) -> bool:
        """Forget a run in the index (its directory is left as it is); True if it was there."""
        if not self.index_path.is_file():
            return False
        with self._connect(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM vm_runs WHERE run_id = ?", (run_id,))
            gone = conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount
            conn.execute("COMMIT")
        return bool(gone)

    def rebuild(self) -> int:
        """Index every run directory under runs/ (after the index was lost); returns the count."""
        from auditor.run import load_run

        count = 0
        for result in sorted(self.runs_dir.glob(f"*/{RESULT_FILE}")):
            try:
                run = load_run(result)
            except (OSError, ValueError):
                continue
            self.add(run, result.parent)
            count += 1
        return count

    # -- reading -----------------------------------------------------------------------------

    def _record(self, row: sqlite3.Row | tuple[object, ...]) -> RunRecord:
        r = list(row)
        return RunRecord(
            run_id=str(r[0]),
            started_at=str(r[1]),
            finished_at=str(r[2]),
            scope_key=str(r[3]),
            providers=tuple(json.loads(str(r[4]))),
            accounts=tuple(json.loads(str(r[5]))),
            regions=tuple(json.loads(str(r[6]))),
            vms=int(str(r[7])),
            levels={lv.value: int(str(r[8 + i])) for i, lv in enumerate(Level)},
            undetermined=int(str(r[13])),
            gaps=int(str(r[14])),
            complete=bool(r[15]),
            manifest_sha256=str(r[16]) if r[16] is not None else None,
            path=self._path(str(r[17])),
        )

    def runs(self, scope: str | None = None, limit: int | None = None) -> list[RunRecord]:
        """Indexed runs, newest first; `scope`: only those with this `scope_key`."""
        if not self.index_path.is_file():
            return []
        sql = "SELECT * FROM runs"
        args: list[object] = []
        if scope is not None:
            sql += " WHERE scope_key = ?"
            args.append(scope)
        sql += " ORDER BY started_at DESC, run_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._connect() as conn:
            return [self._record(r) for r in conn.execute(sql, args).fetchall()]

    def get(self, run_id: str) -> RunRecord | None:
        if not self.index_path.is_file():
            return None
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return self._record(row) if row is not None else None

    def latest(self, scope: Scope | None = None, exclude: str | None = None) -> RunRecord | None:
        """The newest run (of the same scope as `scope`, if given), other than `exclude`."""
        for record in self.runs(scope_key(scope) if scope is not None else None):
            if record.run_id != exclude:
                return record
        return None

    def resolve(
        self, ref: str | Path, scope: Scope | None = None, exclude: str | None = None
    ) -> Path:
        """A run directory from a path, a run id (or unique prefix of one), or `latest`.

        `latest` is the newest indexed run of `scope` (any scope when None) other than `exclude`.
        """
        text = str(ref)
        if text == LATEST:
            record = self.latest(scope, exclude)
            if record is None:
                what = "of this scope " if scope is not None else ""
                raise StoreError(f"no earlier run {what}in the store {self.root}")
            return record.path
        path = Path(text).expanduser()
        if path.is_dir() or (path.is_file() and path.name.endswith(".json")):
            return path
        if "/" not in text and self.index_path.is_file():
            record = self.get(text)
            if record is not None:
                return record.path
            with self._connect() as conn:
                rows = conn.execute(
                    "SELECT * FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY run_id",
                    (text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
                ).fetchall()
            if len(rows) == 1:
                return self._record(rows[0]).path
            if len(rows) > 1:
                ids = ", ".join(str(r[0]) for r in rows[:5])
                raise StoreError(f"run id prefix {text!r} is ambiguous: {ids}")
        if "/" not in text and (self.runs_dir / text).is_dir():
            return self.runs_dir / text
        raise StoreError(
            f"no run {text!r}: not a run directory, and no run with that id in the store "
            f"{self.root}"
        )

    def load(self, ref: str | Path, scope: Scope | None = None) -> AuditRun:
        """The run a reference names (see `resolve`)."""
        from auditor.run import load_run, run_problem

        where = self.resolve(ref, scope)
        try:
            return load_run(where)
        except (OSError, ValueError) as err:
            raise StoreError(f"cannot read run: {run_problem(where, err)}") from err

    def vm_history(self, vm: str) -> list[VMHistoryEntry]:
        """Oldest first: every indexed run that saw the VM (by id, name or provider/.../id key)."""
        if not self.index_path.is_file():
            return []
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT v.run_id, r.started_at, v.vm_key, v.name, v.technology, v.level, "
                "v.parties FROM vm_runs v JOIN runs r ON r.run_id = v.run_id "
                "WHERE v.vm_id = ? OR v.vm_key = ? OR v.name = ? "
                "ORDER BY r.started_at, v.run_id, v.vm_key",
                (vm, vm, vm),
            ).fetchall()
        return [
            VMHistoryEntry(
                run_id=str(r[0]),
                started_at=str(r[1]),
                vm_key=str(r[2]),
                name=str(r[3]) if r[3] is not None else None,
                technology=str(r[4]),
                level=str(r[5]),
                parties=dict(json.loads(str(r[6]))),
            )
            for r in rows
        ]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) held for the block; released when the file closes."""
    import fcntl

    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
