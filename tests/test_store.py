"""The run store: index contents, run references, VM history, and concurrent writers."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.api import scan
from auditor.cli import app
from auditor.model import AuditRun, Level, Status
from auditor.run import load_run, write_run
from auditor.runs.store import RunStore, StoreError, default_store_dir, scope_key
from tests.conftest import DEMO_FLEET, REPO


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> AuditRun:
    return scan(replay=DEMO_FLEET, store=tmp_path_factory.mktemp("seed-store"))


#: When the test runs "happened": fixed, so ordering never depends on today's date.
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _variant(run: AuditRun, run_id: str, days: int = 0, **scope: object) -> AuditRun:
    """A copy of `run` with another id and scope, started `days` after T0."""
    return run.model_copy(
        update={
            "run_id": run_id,
            "scope": run.scope.model_copy(update=scope),
            "started_at": T0 + timedelta(days=days),
        },
        deep=True,
    )


def _save(store: RunStore, run: AuditRun) -> Path:
    where = store.run_dir(run.run_id)
    write_run(run, where)
    (where / "manifest.json").write_text(json.dumps({"run_id": run.run_id}), encoding="utf-8")
    store.add(run, where)
    return where


def test_scan_into_store_indexes_counts_scope_and_manifest(
    demo_run: AuditRun, tmp_path: Path
) -> None:
    store = RunStore(tmp_path / "s")
    run = scan(replay=DEMO_FLEET, store=store)
    where = store.runs_dir / run.run_id
    assert load_run(where).run_id == run.run_id
    record = store.get(run.run_id)
    assert record is not None and record.path == where
    assert record.levels == {lv.value: n for lv, n in run.level_counts().items()}
    assert record.vms == len(run.vms) == 27
    expected_undetermined = sum(
        1 for vm in run.vms for s in vm.parties.values() if s is Status.UNDETERMINED
    )
    assert record.undetermined == expected_undetermined > 0
    assert record.complete is False and record.gaps == len(run.coverage.gaps)
    manifest = hashlib.sha256((where / "manifest.json").read_bytes()).hexdigest()
    assert record.manifest_sha256 == manifest
    assert record.scope_key == scope_key(run.scope)
    assert set(record.providers) == {"aws", "gcp", "azure", "libvirt"}


def test_index_uses_wal_and_a_busy_timeout(demo_run: AuditRun, tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    _save(store, _variant(demo_run, "r1"))
    conn = sqlite3.connect(store.index_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_references_resolve_by_path_id_prefix_and_latest(
    demo_run: AuditRun, tmp_path: Path
) -> None:
    store = RunStore(tmp_path)
    early = _variant(demo_run, "20260101T000000Z-aaaaaa")
    late = _variant(demo_run, "20260102T000000Z-bbbbbb", days=365)
    other = _variant(demo_run, "20260103T000000Z-cccccc", days=730, regions=["eu-west-1"])
    paths = {r.run_id: _save(store, r) for r in (early, late, other)}
    assert store.resolve(early.run_id) == paths[early.run_id]
    assert store.resolve("20260102") == paths[late.run_id]  # unique prefix
    assert store.resolve(str(paths[early.run_id])) == paths[early.run_id]
    with pytest.raises(StoreError, match="ambiguous"):
        store.resolve("2026010")
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.resolve("nope")
    # latest: newest overall, or newest of the same scope (the regional run is another scope)
    assert store.resolve("latest") == paths[other.run_id]
    assert store.resolve("latest", early.scope) == paths[late.run_id]
    assert store.resolve("latest", early.scope, exclude=late.run_id) == paths[early.run_id]
    with pytest.raises(StoreError, match="no earlier run of this scope"):
        store.resolve("latest", other.scope, exclude=other.run_id)
    assert [r.run_id for r in store.runs()] == [other.run_id, late.run_id, early.run_id]


def test_vm_history_follows_a_vm_across_runs(demo_run: AuditRun, tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    first = _variant(demo_run, "20260101T000000Z-aaaaaa")
    second = _variant(demo_run, "20260102T000000Z-bbbbbb", days=365)
    vm = next(v for v in second.vms if v.level is Level.L1)
    vm.level = Level.L0
    vm.parties[next(iter(vm.parties))] = Status.CAN_ACCESS
    for r in (first, second):
        _save(store, r)
    for ref in (vm.id, vm.name, vm.key):
        assert ref is not None
        history = store.vm_history(ref)
        assert [h.run_id for h in history] == [first.run_id, second.run_id]
        assert [h.level for h in history] == ["L1", "L0"]
    assert store.vm_history("i-does-not-exist") == []


def test_rebuild_recreates_a_lost_index(demo_run: AuditRun, tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    for i in range(3):
        _save(store, _variant(demo_run, f"run{i}"))
    for f in tmp_path.glob("index.sqlite*"):
        f.unlink()
    fresh = RunStore(tmp_path)
    assert fresh.runs() == []
    assert fresh.rebuild() == 3
    assert sorted(r.run_id for r in fresh.runs()) == ["run0", "run1", "run2"]


def test_default_store_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CCAUDIT_HOME", str(tmp_path / "home"))
    assert default_store_dir() == tmp_path / "home"
    monkeypatch.delenv("CCAUDIT_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_dir() == tmp_path / "xdg" / "ccaudit"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_store_dir() == tmp_path / "user" / ".local" / "share" / "ccaudit"


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from auditor.run import load_run, write_run
    from auditor.runs.store import RunStore

    store = RunStore({store!r})
    seed = load_run({seed!r})
    for i in range({count}):
        run = seed.model_copy(update={{"run_id": f"{{sys.argv[1]}}-{{i:03d}}"}})
        where = store.run_dir(run.run_id)
        write_run(run, where)
        store.add(run, where)
    """
)


def test_two_processes_writing_the_same_store(demo_run: AuditRun, tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(demo_run.model_dump_json(), encoding="utf-8")
    store_dir = tmp_path / "store"
    count = 25
    code = _WRITER.format(repo=str(REPO), store=str(store_dir), seed=str(seed), count=count)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, name], stderr=subprocess.PIPE)
        for name in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()
    store = RunStore(store_dir)
    records = store.runs()
    assert len(records) == 2 * count
    assert {r.run_id for r in records} == {f"{n}-{i:03d}" for n in "ab" for i in range(count)}
    for r in records:
        assert load_run(r.path).run_id == r.run_id
    conn = sqlite3.connect(store.index_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        vm_rows = conn.execute("SELECT COUNT(*) FROM vm_runs").fetchone()[0]
    finally:
        conn.close()
    assert vm_rows == 2 * count * len(demo_run.vms)


def test_two_concurrent_cli_scans_are_both_indexed_and_loadable(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    cmd = [
        sys.executable,
        "-c",
        "from auditor.cli import main; main()",
        "scan",
        "--replay",
        str(DEMO_FLEET),
        "--store",
        str(store_dir),
        "--format",
        "json",
        "--output",
    ]
    procs = [
        subprocess.Popen([*cmd, str(tmp_path / f"{n}.json")], cwd=REPO, stderr=subprocess.PIPE)
        for n in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 3, err.decode()  # the demo fleet has coverage gaps
    ids = {json.loads((tmp_path / f"{n}.json").read_text())["run_id"] for n in ("a", "b")}
    store = RunStore(store_dir)
    assert {r.run_id for r in store.runs()} == ids
    for run_id in ids:
        assert load_run(store.resolve(run_id)).run_id == run_id
        assert (store.runs_dir / run_id / "manifest.json").is_file()


def test_history_cli_lists_runs_and_a_vms_levels(demo_run: AuditRun, tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    _save(store, _variant(demo_run, "20260101T000000Z-aaaaaa"))
    runner = CliRunner()
    listed = runner.invoke(app, ["history", "--store", str(tmp_path)])
    assert listed.exit_code == 0 and "20260101T000000Z-aaaaaa" in listed.stdout
    vm = demo_run.vms[0]
    shown = runner.invoke(app, ["history", vm.id, "--store", str(tmp_path), "--json"])
    assert shown.exit_code == 0, shown.stderr
    (entry,) = json.loads(shown.stdout)
    assert entry["level"] == vm.level.value and entry["vm_key"] == vm.key
    assert entry["parties"] == {p.value: s.value for p, s in vm.parties.items()}
    missing = runner.invoke(app, ["history", "i-nope", "--store", str(tmp_path)])
    assert missing.exit_code == 2 and "no VM 'i-nope'" in missing.stderr


def test_scan_with_an_unknown_baseline_fails_before_scanning(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["scan", "--replay", str(DEMO_FLEET), "--store", str(tmp_path), "--baseline", "nope"],
    )
    assert result.exit_code == 2
    assert "--baseline" in result.stderr and "nope" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing was scanned or saved
