"""Collection workers forked from a fork server (auditor.forkserver): the SDKs are imported once
for all of them, every worker is the server's child, and a scan whose server dies still ends
with every scope read."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditor import forkserver
from auditor.collect import collect
from auditor.providers.base import Plan, ScopeKey, ScopeResult
from auditor.recording import EvidenceSink

pytestmark = pytest.mark.skipif(not forkserver.available(), reason="no fork on this platform")


class ProbeProvider:
    """Writes, for every scope it reads, which process read it and that process's parent."""

    name = "aws"
    sdk_modules = ("tests.forkserver_probe",)

    def __init__(self, scopes: int, seen: Path, parent: int, kill_server_on: str = "") -> None:
        self.scopes = scopes
        self.seen = str(seen)
        self.parent = parent
        self.kill_server_on = kill_server_on

    def plan(self, sink: EvidenceSink) -> Plan:
        return Plan(
            scopes=[ScopeKey("aws", f"acct-{n:02d}", "eu-west-1") for n in range(self.scopes)]
        )

    def collect(self, scope: ScopeKey, sink: EvidenceSink) -> ScopeResult:
        time.sleep(0.05)  # long enough for every worker to be asking for scopes
        with open(self.seen, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()} {os.getppid()}\n")
        if scope.account == self.kill_server_on and os.getppid() != self.parent:
            os.kill(os.getppid(), signal.SIGKILL)
        return ScopeResult(scope=scope, calls=1)


def _lines(path: Path) -> list[list[int]]:
    """The complete lines written so far (one being written is left for the next read)."""
    return [[int(x) for x in ln.split()] for ln in path.read_text().split("\n")[:-1]]


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "imported"
    path.write_text("")
    monkeypatch.setenv("CCAUDIT_PROBE_FILE", str(path))
    return path


def test_workers_are_forked_from_one_process_that_imported_the_sdks(
    probe: Path, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    provider = ProbeProvider(12, seen, os.getpid())
    out = collect([provider], EvidenceSink(), concurrency=4, processes=2)
    assert out.coverage.complete and len(out.coverage.scopes) == 12
    readers = _lines(seen)
    workers = {pid for pid, _ in readers}
    parents = {ppid for _, ppid in readers}
    assert len(readers) == 12 and len(workers) == 2 and os.getpid() not in workers
    (server,) = parents  # every worker is the fork server's child, not the scan's
    assert server != os.getpid()
    assert _lines(probe) == [[server]]  # the SDKs were imported once, by the server


def test_without_fork_each_worker_imports_the_sdks_itself(
    probe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forkserver, "available", lambda: False)
    seen = tmp_path / "seen"
    out = collect([ProbeProvider(12, seen, os.getpid())], EvidenceSink(), 4, processes=2)
    assert out.coverage.complete
    workers = {pid for pid, _ in _lines(seen)}
    assert {ppid for _, ppid in _lines(seen)} == {os.getpid()}  # started by the scan
    assert sorted(p for (p,) in _lines(probe)) == sorted(workers)


def test_a_scan_whose_fork_server_dies_still_reads_every_scope(probe: Path, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    provider = ProbeProvider(12, seen, os.getpid(), kill_server_on="acct-02")
    started = time.monotonic()
    out = collect([provider], EvidenceSink(), concurrency=4, processes=2)
    assert out.coverage.complete, out.coverage.gaps
    assert sorted(c.account for c in out.coverage.scopes) == [f"acct-{n:02d}" for n in range(12)]
    assert time.monotonic() - started < 20  # no wait for exit codes that never come


def test_a_worker_that_ended_after_its_server_has_an_unknown_exit_code() -> None:
    server = forkserver.ForkServer([])
    worker = server.fork()
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    assert worker.stdin is not None
    worker.stdin.close()  # the worker reads EOF: it ends, with no server to reap it
    assert worker.wait(timeout=10) == forkserver.UNKNOWN_EXIT
    server.close()


def test_a_fork_server_that_dies_on_start_leaves_workers_started_one_by_one(
    probe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CCAUDIT_PROBE_BREAK", "1")
    seen = tmp_path / "seen"
    with caplog.at_level(logging.INFO, logger="auditor.workers"):
        out = collect([ProbeProvider(12, seen, os.getpid())], EvidenceSink(), 4, processes=2)
    assert out.coverage.complete and len(out.coverage.scopes) == 12
    assert "starting collection workers one by one" in caplog.text
    assert "could not start" in caplog.text
    workers = {pid for pid, _ in _lines(seen)}
    assert len(workers) == 2 and {ppid for _, ppid in _lines(seen)} == {os.getpid()}
    # the server imported the probe and died; each started worker imported it again
    assert len(_lines(probe)) == 3 and workers <= {p for (p,) in _lines(probe)}


class StuckProvider(ProbeProvider):
    """Each scope says which process reads it, then waits as a call stuck in its SDK's
    retries against an unreachable cloud does (up to minutes)."""

    def collect(self, scope: ScopeKey, sink: EvidenceSink) -> ScopeResult:
        with open(self.seen, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()} {os.getppid()}\n")
        time.sleep(600)
        return ScopeResult(scope=scope, calls=1)


_KILLED_SCAN = """
import os, sys
from auditor import forkserver
if sys.argv[2] == "spawn":
    forkserver.available = lambda: False
from auditor.collect import collect
from auditor.recording import EvidenceSink
from tests.test_forkserver import StuckProvider
collect([StuckProvider(4, sys.argv[1], os.getpid())], EvidenceSink(), 4, processes=2)
"""


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_workers_of_a_killed_scan_end_at_once(tmp_path: Path, start: str) -> None:
    """A scan killed outright (SIGKILL, the OOM killer): its workers see their requests end and
    stop at once instead of finishing calls nobody will read (and their retries)."""
    seen = tmp_path / "seen"
    seen.write_text("")
    scan = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SCAN, str(seen), start],
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 60
        while len(_lines(seen)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        readers = _lines(seen)
        assert len(readers) >= 2, "the workers never started their scopes"
    finally:
        scan.kill()
        scan.wait(timeout=10)
    # the workers, and their fork server (spawned workers' parent is the scan itself)
    processes = {pid for pid, _ in readers} | ({ppid for _, ppid in readers} - {scan.pid})
    deadline = time.monotonic() + 15
    while any(forkserver._alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in processes if forkserver._alive(p)]
