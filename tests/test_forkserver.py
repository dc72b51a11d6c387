"""Collection workers forked from a fork server (auditor.forkserver): the SDKs are imported once
for all of them, every worker is the server's child, and a scan whose server dies still ends
with every scope read."""

from __future__ import annotations

import logging
import os
import signal
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
    return [[int(x) for x in ln.split()] for ln in path.read_text().splitlines()]


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
