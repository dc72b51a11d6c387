"""The collector's settings during a scan (auditor.heap): applied for the scan, restored after."""

from __future__ import annotations

import gc
import importlib.abc
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.api import scan
from auditor.collect import ProgressListener
from auditor.fakecloud import FakeCloud
from auditor.heap import SCAN_THRESHOLDS, import_sdks, scan_heap
from auditor.providers.aws import AwsProvider

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-fleet"


@pytest.fixture(autouse=True)
def _default_collector() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_the_scan_setting_is_applied_inside_and_restored_after() -> None:
    gc.set_threshold(1234, 5, 6)
    with scan_heap():
        assert gc.get_threshold() == SCAN_THRESHOLDS
        assert gc.get_freeze_count() > 0  # what existed is out of the collector's passes
    assert gc.get_threshold() == (1234, 5, 6)
    assert gc.get_freeze_count() == 0  # moved back: nothing is kept from collection


def test_restored_after_a_failure_too() -> None:
    with pytest.raises(ZeroDivisionError), scan_heap():
        _ = 1 / 0
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_overlapping_scans_restore_when_the_last_ends() -> None:
    first_in, second_out = threading.Event(), threading.Event()
    seen: list[tuple[int, int, int]] = []

    def first() -> None:
        with scan_heap():
            first_in.set()
            second_out.wait(10)
            seen.append(gc.get_threshold())  # the other scan ended: still the scan's setting

    thread = threading.Thread(target=first)
    thread.start()
    assert first_in.wait(10)
    with scan_heap():
        assert gc.get_threshold() == SCAN_THRESHOLDS
    second_out.set()
    thread.join(10)
    assert seen == [SCAN_THRESHOLDS]
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_a_process_that_froze_its_own_objects_keeps_them_frozen() -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    with scan_heap():
        assert gc.get_threshold() == SCAN_THRESHOLDS
    assert gc.get_freeze_count() >= frozen > 0  # not unfrozen behind the caller's back


def test_the_providers_sdks_are_imported_and_a_missing_or_broken_one_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Fake:
        sdk_modules = ("json.tool", "no_such_sdk_module_here", "broken_sdk_module_here", "uuid")

    class Broken(importlib.abc.MetaPathFinder):  # an SDK that fails while it is imported
        def find_spec(self, name: str, *args: Any) -> Any:
            if name == "broken_sdk_module_here":
                raise AttributeError("a broken install")
            return None

    monkeypatch.delitem(sys.modules, "json.tool", raising=False)
    monkeypatch.delitem(sys.modules, "uuid", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    import_sdks([Fake(), object()])  # an object naming none is fine too
    assert "json.tool" in sys.modules and "uuid" in sys.modules  # the rest still imported
    assert "no_such_sdk_module_here" not in sys.modules
    assert "botocore.session" in AwsProvider.sdk_modules


def test_a_scan_runs_under_the_setting_and_gives_it_back(tmp_path: Path) -> None:
    during: list[tuple[int, int, int]] = []

    class Watch(ProgressListener):
        def planned(self, scopes: int) -> None:
            during.append(gc.get_threshold())

    run = scan(replay=DEMO, run_dir=tmp_path / "run", progress=Watch(), processes=1)
    assert len(run.vms) > 0
    assert during == [SCAN_THRESHOLDS]
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


_WHICH_PROCESS_IMPORTS = """
import gc, json, sys
from pathlib import Path
from auditor.collect import ProgressListener
from auditor.engine import Engine
from auditor.model import Scope
from auditor.rules.loader import load_packs
from auditor.run import run_audit
from benchmarks.run import replay_providers

seen = {}

class Watch(ProgressListener):
    def planned(self, scopes):
        seen["planned"] = (gc.get_freeze_count(), "google.cloud.compute_v1" in sys.modules)

    def scope_done(self, result):
        seen.setdefault("read", (gc.get_freeze_count(), "google.cloud.compute_v1" in sys.modules))

providers = replay_providers(Path(sys.argv[1]), sys.argv[2], 4)
run = run_audit(
    providers, Engine(load_packs([])), Scope(providers=[p.name for p in providers]),
    processes=int(sys.argv[3]), progress=Watch(),
)
assert run.vms
seen["after"] = (gc.get_freeze_count(), "google.cloud.compute_v1" in sys.modules)
print(json.dumps(seen))
"""


@pytest.mark.parametrize("processes", [1, 2])
def test_the_scans_own_process_imports_the_sdks_only_to_read_scopes_itself(
    processes: int,
) -> None:
    """With collection workers the scan's process never calls Compute Engine, so it does not
    import that SDK (a CPU-second, 120 MiB); reading scopes itself, it imports it and takes it
    out of the collector's passes before the first scope. A fresh interpreter scans the demo
    served by fakecloud from this process (fakecloud itself checks files with the SDKs)."""
    with FakeCloud(DEMO) as cloud:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _WHICH_PROCESS_IMPORTS,
                str(DEMO),
                cloud.endpoint,
                str(processes),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    planned_frozen, planned_gcp = seen["planned"]
    read_frozen, read_gcp = seen["read"]
    assert not planned_gcp  # planning the demo's projects needs no Compute Engine client
    if processes == 1:
        assert read_gcp and read_frozen > planned_frozen
    else:
        assert not read_gcp and not seen["after"][1]
