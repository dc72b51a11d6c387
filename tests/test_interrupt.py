"""Interrupting `ccaudit scan` (SIGINT, SIGTERM, or a hard kill) never leaves a half-written run.

A real subprocess scans a slow fakecloud (latency per call); the signal arrives once raw
responses are being written. The run directory must then hold a complete, sealed result that
says `interrupted`, or (after SIGKILL) an INCOMPLETE marker that `load_run` refuses clearly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from auditor.cli import app
from auditor.run import INCOMPLETE_MARKER, RunIncompleteError, load_run
from auditor.runs.bundle import verify_bundle
from auditor.runs.spool import SPOOL_DIR
from auditor.runs.store import RunStore
from tests.conftest import DEMO_FLEET

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture(scope="module")
def slow_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slow") / "fleet"
    shutil.copytree(DEMO_FLEET, root, ignore=shutil.ignore_patterns("guest-evidence"))
    (root / "fakecloud.yaml").write_text(yaml.safe_dump({"latency_ms": 100}))
    return root


def _start(fleet: Path, store: Path, processes: int = 1) -> subprocess.Popen[bytes]:
    """`ccaudit scan` into a run store (its run directory is <store>/runs/<run-id>/), one scope
    at a time in each of `processes` (1: the scan's own process, 2: two worker processes)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "auditor.cli",
            "scan",
            "--replay",
            str(fleet),
            "--store",
            str(store),
            "--concurrency",
            str(processes),
            "--processes",
            str(processes),
            "--format",
            "json",
            "--output",
            os.devnull,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )


def _wait_for_collection(proc: subprocess.Popen[bytes], store: Path, processes: int = 1) -> Path:
    """Until scope `processes + 1`'s first response is written: with one scope at a time in
    each process, a first scope is then complete and the rest are not."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"scan ended before it was interrupted: {err.decode()[-2000:]}")
        listed = list(store.glob("runs/*/raw/**/DescribeInstances*.json"))
        if len(listed) >= processes + 1:
            (run_dir,) = {p.relative_to(store / "runs").parts[0] for p in listed}
            return store / "runs" / run_dir
        time.sleep(0.05)
    proc.kill()
    pytest.fail("scan did not start collecting within 60 s")
    raise AssertionError  # unreachable: pytest.fail raises


@pytest.mark.parametrize(
    ("sig", "code", "processes"),
    [(signal.SIGINT, 130, 1), (signal.SIGTERM, 143, 1), (signal.SIGINT, 130, 2)],
    ids=["SIGINT", "SIGTERM", "SIGINT-workers"],
)
def test_interrupted_scan_leaves_a_sealed_partial_run(
    slow_fleet: Path, tmp_path: Path, sig: signal.Signals, code: int, processes: int
) -> None:
    store = tmp_path / "store"
    proc = _start(slow_fleet, store, processes)
    run_dir = _wait_for_collection(proc, store, processes)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the scan did not stop within 60 s of the signal")
    stderr = err.decode()
    assert proc.returncode == code, stderr[-3000:]
    assert "interrupted" in stderr
    assert "Traceback" not in stderr

    # a whole result, marked interrupted, nothing half-written
    assert not (run_dir / INCOMPLETE_MARKER).exists()
    assert not list(run_dir.rglob("*.tmp"))
    assert not (run_dir / SPOOL_DIR).exists()  # the finished scopes' spool became result.json
    run = load_run(run_dir)
    assert run.coverage.interrupted is True
    assert run.coverage.complete is False
    unread = [c for c in run.coverage.scopes if c.status == "interrupted"]
    assert unread, "some scopes must have been cut off"
    interrupted_gaps = [g for g in run.coverage.gaps if g.code == "Interrupted"]
    assert {(g.provider, g.account, g.region) for g in interrupted_gaps} == {
        (c.provider, c.account, c.region) for c in unread
    }
    read = [c for c in run.coverage.scopes if c.status != "interrupted"]
    assert read, "the scope read before the signal is kept"
    assert sum(c.vms for c in read) == len(run.vms)
    # every VM's evidence is in the run
    for vm in run.vms:
        for shas in vm.evidence.values():
            assert set(shas) <= set(run.evidence)
    # sealed: the manifest lists exactly the files present
    report = verify_bundle(run_dir)
    assert report.ok, report.as_dict()
    # the store's index never lists a partial run as a scan to compare against
    assert RunStore(store).get(run.run_id) is None

    # and it renders
    rendered = CliRunner().invoke(
        app, ["report", str(run_dir), "--format", "json", "--output", str(tmp_path / "out")]
    )
    assert rendered.exit_code == 0, rendered.output
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert data["coverage"]["interrupted"] is True


def test_killed_scan_leaves_a_marked_incomplete_directory(slow_fleet: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = _start(slow_fleet, store)
    run_dir = _wait_for_collection(proc, store)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate(timeout=30)
    assert (run_dir / INCOMPLETE_MARKER).is_file()
    assert not (run_dir / "result.json").exists()
    with pytest.raises(RunIncompleteError, match="never finished"):
        load_run(run_dir)
    # rebuilding the index from the run directories skips it
    assert RunStore(store).rebuild() == 0
    assert RunStore(store).get(run_dir.name) is None
    result = CliRunner().invoke(app, ["report", str(run_dir), "--format", "json"])
    assert result.exit_code == 2
    assert "never finished" in result.output
