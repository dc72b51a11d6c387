"""Collection in worker processes (auditor.workers) gives the run that threads give.

The demo fleet is read by the real SDKs in worker processes against fakecloud on 127.0.0.1,
and compared with a run read in this process's threads: the same VMs, evidence, coverage and
raw/ bytes. Workers that die, or providers that cannot travel, lose nothing silently.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest

from auditor.api import scan
from auditor.collect import collect
from auditor.fakecloud import FakeCloud
from auditor.fakecloud.replay import aws_accounts
from auditor.model import AuditRun
from auditor.providers.aws import AwsProvider, AwsTarget
from auditor.providers.azure import AzureProvider
from auditor.providers.base import Plan, ScopeKey, ScopeResult
from auditor.providers.gcp import GcpProvider
from auditor.recording import EvidenceSink
from auditor.workers import NotPortable, auto_workers, pack_providers
from tests.conftest import DEMO_FLEET


def _without_times(run: AuditRun) -> dict[str, Any]:
    """What must not depend on how the scopes were read (collection times aside)."""
    data = run.model_dump(mode="json", include={"vms", "evidence", "coverage"})
    for item in data["evidence"].values():
        item.pop("collected_at", None)
    return data


def _raw_files(run_dir: Path) -> dict[str, Any]:
    """Every raw response, JSON parsed (map order from a protobuf map varies with each process's
    hash seed, in workers or not; evidence hashes are of canonical JSON); libvirt's XML as is."""
    raw = run_dir / "raw"
    return {
        str(p.relative_to(raw)): (
            json.loads(p.read_bytes()) if p.suffix == ".json" else p.read_bytes()
        )
        for p in sorted(raw.rglob("*"))
        if p.is_file() and p.name != "replay.json"
    }


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditRun, Path]:
    run_dir = tmp_path_factory.mktemp("threads") / "run"
    return scan(replay=DEMO_FLEET, run_dir=run_dir, processes=1), run_dir


def test_workers_give_the_run_threads_give(threaded: tuple[AuditRun, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    in_workers = scan(replay=DEMO_FLEET, run_dir=run_dir, processes=3, concurrency=6)
    in_threads, threads_dir = threaded
    assert len(in_workers.vms) == len(in_threads.vms) == 27
    assert _without_times(in_workers) == _without_times(in_threads)
    # every raw response, written by the worker that read it
    assert _raw_files(run_dir) == _raw_files(threads_dir)
    assert len(in_workers.coverage.gaps) == len(in_threads.coverage.gaps) > 0


def _planned(provider: Any) -> tuple[Any, ScopeKey]:
    return provider, provider.plan(EvidenceSink()).scopes[0]


def _demo_providers(endpoint: str) -> list[Any]:
    root = DEMO_FLEET
    aws = AwsProvider(
        [AwsTarget(access_key_id=a, secret_access_key="replay") for a in aws_accounts(root)],
        endpoint_url=endpoint,
    )
    gcp = GcpProvider(
        sorted(p.name for p in (root / "gcp").iterdir() if p.is_dir()),
        endpoint_url=endpoint,
        anonymous=True,
    )
    azure = AzureProvider(
        sorted(p.name for p in (root / "azure").iterdir() if p.is_dir()),
        endpoint_url=endpoint,
        replay=True,
    )
    return [aws, gcp, azure]


def test_providers_travel_by_settings_and_planned_state_not_clients() -> None:
    with FakeCloud(DEMO_FLEET) as fc:
        planned = [_planned(p) for p in _demo_providers(fc.endpoint)]
        providers = [p for p, _ in planned]
        aws, gcp, azure = providers
        gcp._instances_client()  # clients and credentials made in this process...
        azure._cred()
        copies = pickle.loads(pickle.dumps(providers))
        caws, cgcp, cazure = copies
        # ...stay here: the copy starts as before its first call
        assert caws._sessions == {} and cgcp._instances is None and cgcp._credentials is None
        assert cazure._credential is None and cazure._shared_transport is None
        # planned state and settings go along
        accounts = set(aws._sessions)
        assert set(caws._worker_targets) == accounts and accounts
        assert all(t.secret_access_key == "replay" for t in caws._worker_targets.values())
        assert "replay" not in repr(caws._worker_targets)  # a secret never shows in a message
        assert cgcp.projects == gcp.projects and cazure.subscriptions == azure.subscriptions
        assert cgcp._retry is not None and cgcp._retry._timeout == gcp._retry._timeout
        # and each copy reads a scope exactly as the original does
        for (original, scope), copy in zip(planned, copies, strict=True):
            a, b = original.collect(scope, EvidenceSink()), copy.collect(scope, EvidenceSink())
            assert [v.model_dump() for v in a.vms] == [v.model_dump() for v in b.vms]
            assert a.errors == b.errors and a.calls == b.calls


# ---------------------------------------------------------------------------- losing a worker
class DyingProvider:
    """A provider whose worker process ends abruptly on one scope (an OOM kill, a segfault)."""

    name = "aws"

    def __init__(self, scopes: int, doomed: str, parent: int) -> None:
        self.scopes = scopes
        self.doomed = doomed
        self.parent = parent

    def plan(self, sink: EvidenceSink) -> Plan:
        return Plan(
            scopes=[ScopeKey("aws", f"acct-{n:02d}", "eu-west-1") for n in range(self.scopes)]
        )

    def collect(self, scope: ScopeKey, sink: EvidenceSink) -> ScopeResult:
        if scope.account == self.doomed and os.getpid() != self.parent:
            os._exit(7)
        return ScopeResult(scope=scope, calls=1)


def test_a_worker_that_dies_loses_only_the_scope_it_was_reading() -> None:
    provider = DyingProvider(12, "acct-03", os.getpid())
    done: list[ScopeResult] = []

    class Listener:
        def planning(self, provider: str) -> None: ...
        def planned(self, scopes: int) -> None: ...
        def scope_done(self, result: ScopeResult) -> None:
            done.append(result)

    out = collect([provider], EvidenceSink(), concurrency=2, processes=2, progress=Listener())
    by_account = {c.account: c for c in out.coverage.scopes}
    assert len(by_account) == 12 and len(done) == 12
    lost = by_account["acct-03"]
    assert lost.status == "failed"
    (gap,) = lost.errors
    assert gap.code == "WorkerLost" and "died (exit code 7)" in gap.message
    assert "aws/acct-03/eu-west-1" in gap.message
    # the other worker read every other scope
    assert all(c.status == "complete" for a, c in by_account.items() if a != "acct-03")
    assert out.coverage.complete is False and out.coverage.gaps == [gap]


class LockedProvider(DyingProvider):
    """A provider holding a lock: it cannot be pickled, so it is read in threads."""

    def __init__(self, scopes: int) -> None:
        super().__init__(scopes, "", os.getpid())
        self._lock = threading.Lock()


def test_providers_that_cannot_travel_are_read_here_and_say_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = LockedProvider(20)
    with pytest.raises(NotPortable, match="lock"):
        pack_providers([provider])
    with caplog.at_level(logging.WARNING, logger="auditor.collect"):
        out = collect([provider], EvidenceSink(), concurrency=4, processes=2)
    assert out.coverage.complete and len(out.coverage.scopes) == 20
    assert "cannot go to workers" in caplog.text


class UnpicklableInWorker(DyingProvider):
    """Pickles here, fails to unpickle in a worker (a provider whose module is not there)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        if os.getpid() != state["parent"]:
            raise ImportError("no module named 'site_only_plugin'")
        self.__dict__.update(state)


def test_when_no_worker_starts_the_scan_reads_here_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = UnpicklableInWorker(20, "", os.getpid())
    with caplog.at_level(logging.WARNING, logger="auditor.collect"):
        out = collect([provider], EvidenceSink(), concurrency=4, processes=2)
    assert out.coverage.complete and len(out.coverage.scopes) == 20
    assert "no worker started" in caplog.text
    assert "site_only_plugin" in caplog.text


@pytest.mark.parametrize(
    ("scopes", "concurrency", "cores", "expected"),
    [
        (9, 8, 2, 1),  # the demo fleet: fewer than 8 scopes per worker
        (16, 8, 2, 2),
        (126, 32, 2, 2),  # the 10k benchmark on this machine
        (126, 32, 16, 4),  # capped
        (126, 2, 16, 1),  # every worker needs two call slots
    ],
)
def test_auto_workers(
    monkeypatch: pytest.MonkeyPatch, scopes: int, concurrency: int, cores: int, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    assert auto_workers(scopes, concurrency) == expected


def test_the_evidence_kept_for_a_content_does_not_depend_on_which_scope_finished_first() -> None:
    from auditor.model import Evidence
    from auditor.recording import keep_evidence

    same = {"InstanceType": "m6a.large"}
    a = Evidence.from_json(same, kind="api_resource", source="control_plane", account="1111")
    b = Evidence.from_json(same, kind="api_resource", source="control_plane", account="4444")
    assert a.sha256 == b.sha256
    first: dict[str, Evidence] = {}
    second: dict[str, Evidence] = {}
    for item in (a, b):
        keep_evidence(first, item)
    for item in (b, a):
        keep_evidence(second, item)
    assert first[a.sha256].account == second[a.sha256].account == "1111"
