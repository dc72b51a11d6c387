"""A scan with a run directory spools each finished scope to disk (auditor.runs.spool): what it
writes and returns must be what verifying and evaluating the whole fleet at once gives.

The whole-run path (no run directory) is the oracle: the same replay is scanned both ways
through the real SDKs and fakecloud, and result.json compared byte for byte, except the
times that say when it ran. The generated fleet's Compute Engine VMs are clones whose Shielded
VM identity responses are the same bytes in every project: one evidence item, verified by VMs
of several scopes (each VM's own verdict: the identity in the certificate is another VM's), so
which verification the item keeps depends on the order of the VMs, not of the scopes.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import pickle
import re
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from auditor.api import scan
from auditor.collect import ProgressListener
from auditor.fakecloud import FakeCloud
from auditor.model import AuditRun, Evidence, Source, Verification, result_sha256
from auditor.providers.base import ScopeResult
from auditor.recording import StoppableSink, keep_evidence, where_key
from auditor.reports.json_report import render_json
from auditor.reports.tables import COLUMNS, _cell, rows
from auditor.run import RESULT_FILE, load_run, write_run
from auditor.runs.spool import SPOOL_DIR, EvidenceSpool, StoredEvidence, StoredVMs
from auditor.verify.trust_inputs import anchor_facts, run_trust_anchors, trust_anchors_of
from benchmarks.gen_fleet import generate

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-fleet"
#: When a scan ran, and when it read each response: the only bytes two scans may differ in.
_WHEN = re.compile(rb'"(started_at|finished_at|collected_at)": "[^"]*"')


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spool") / "fleet"
    generate(root, 60, per_scope=10, page_size=4)
    return root


def _untimed(data: bytes) -> bytes:
    return _WHEN.sub(rb'"\1": "-"', data)


def _both(replay: Path, tmp_path: Path, **options: Any) -> tuple[AuditRun, bytes, AuditRun, bytes]:
    spooled_dir, whole_dir = tmp_path / "spooled", tmp_path / "whole"
    spooled = scan(replay=replay, run_dir=spooled_dir, run_id="same", **options)
    whole = scan(replay=replay, run_id="same", **options)  # no run directory: held whole
    write_run(whole, whole_dir)
    return (
        spooled,
        (spooled_dir / RESULT_FILE).read_bytes(),
        whole,
        (whole_dir / RESULT_FILE).read_bytes(),
    )


@pytest.mark.parametrize(
    ("concurrency", "processes"), [(8, 1), (2, 1), (4, 2)], ids=["threads", "few", "workers"]
)
def test_spooled_run_is_the_whole_run_byte_for_byte(
    fleet: Path, tmp_path: Path, concurrency: int, processes: int
) -> None:
    spooled, written, whole, oracle = _both(
        fleet, tmp_path, concurrency=concurrency, processes=processes
    )
    assert _untimed(written) == _untimed(oracle)
    assert len(spooled.vms) == len(whole.vms) == 60
    assert not (tmp_path / "spooled" / SPOOL_DIR).exists()  # the spool is gone once written
    # what makes the comparison mean something: one verified item shared by several scopes
    scopes_of: dict[str, set[str]] = {}
    for vm in whole.vms:
        for sha in vm.evidence.get("tpm", []):
            scopes_of.setdefault(sha, set()).add(vm.account)
    shared = [sha for sha, scopes in scopes_of.items() if len(scopes) > 1]
    assert shared and all(whole.evidence[sha].verification is not None for sha in shared)


def test_demo_fleet_spooled_is_the_whole_run(tmp_path: Path) -> None:
    # every cloud's evidence kinds (logs, extensions, disk encryption sets, EK keys)
    _, written, _, oracle = _both(DEMO, tmp_path, concurrency=4, processes=1)
    assert _untimed(written) == _untimed(oracle)


def test_the_run_returned_reads_from_result_json(fleet: Path, tmp_path: Path) -> None:
    run = scan(replay=fleet, run_dir=tmp_path / "run", run_id="r", concurrency=4, processes=1)
    path = tmp_path / "run" / RESULT_FILE
    stored = load_run(tmp_path / "run")
    assert isinstance(run.vms, StoredVMs) and isinstance(run.evidence, StoredEvidence)
    assert run.vms.path == path == run.evidence.path
    assert len(run.vms) == len(stored.vms) and len(run.evidence) == len(stored.evidence)
    assert run.vms == stored.vms and stored.vms == run.vms
    assert run.evidence == stored.evidence
    assert list(run.evidence) == sorted(stored.evidence)
    assert run.vms[0] == stored.vms[0] and run.vms[-1] == stored.vms[-1]
    assert run.vms[2:5] == stored.vms[2:5]
    sha = next(iter(stored.evidence))
    assert sha in run.evidence and run.evidence[sha] == stored.evidence[sha]
    assert "0" * 64 not in run.evidence
    # every way of writing it out gives the file's bytes
    assert run.model_dump_json(indent=2) + "\n" == path.read_text(encoding="utf-8")
    assert render_json(run) == path.read_text(encoding="utf-8")
    assert result_sha256(run) == hashlib.sha256(path.read_bytes()).hexdigest()
    # pickled or copied, it is the lists it stands for
    for other in (pickle.loads(pickle.dumps(run)), copy.deepcopy(run)):
        assert type(other.vms) is list and type(other.evidence) is dict
        assert other == stored
    assert run.level_counts() == stored.level_counts()


def test_a_failure_while_finishing_a_scope_is_raised_and_the_run_stays_incomplete(
    fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import auditor.run

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("rule engine broke")

    monkeypatch.setattr(auditor.run, "evaluate_all", broken)
    with pytest.raises(RuntimeError, match="rule engine broke"):
        scan(replay=fleet, run_dir=tmp_path / "run", concurrency=4, processes=1)
    assert not (tmp_path / "run" / RESULT_FILE).exists()
    assert (tmp_path / "run" / "INCOMPLETE").exists()
    with pytest.raises(ValueError, match="never finished"):
        load_run(tmp_path / "run")


def test_anchor_facts_count_what_the_whole_vms_count(tmp_path: Path) -> None:
    # guest evidence verified by the demo trust anchor: hardware roots, the key broker
    from auditor.verify.options import build_evidence_options
    from auditor.verify.stage import VerifyOptions
    from tests.test_guest_evidence_scan import _scan

    run = _scan(tmp_path)
    options = VerifyOptions()
    options.evidence = build_evidence_options(
        demo_trust_anchor=DEMO / "demo-trust-anchor",
        key_broker_keys=[DEMO / "demo-key-broker" / "broker.pem"],
    )
    whole = run_trust_anchors(run.vms, options)
    assert sum(a.used_by for a in whole) >= 3  # the L4 and L3 VMs, the released key
    facts = [f for vm in run.vms if (f := anchor_facts(vm)) is not None]
    assert trust_anchors_of(facts, options) == whole
    assert len(facts) < len(run.vms)  # VMs without such facts are not kept at all


# ------------------------------------------------ the spool's merge of copies and verifications
_AT = datetime(2026, 1, 1, tzinfo=UTC)
_WHERE = st.sampled_from(["a", "b", "c"])


def _copy(sha: str, account: str) -> Evidence:
    return Evidence(
        kind="k",
        source=Source.CONTROL_PLANE,
        sha256=sha,
        raw={"v": sha},
        collected_at=_AT,
        provider="gcp",
        account=account,
        ref=f"{account}/{sha}",
    )


def _verify(item: Evidence, vm: tuple[str, str, str, str]) -> None:
    # each VM's own verdict on the item, as a verifier that checks identity gives
    item.verification = Verification(verifier="t", ok=vm[3].endswith("0"), reason=vm[3])


@settings(max_examples=150, deadline=None)
@given(
    scopes=st.lists(
        st.lists(  # a scope: its VMs, each (item it verifies or only reads, copy read where)
            st.tuples(st.sampled_from(["s1", "s2", "s3"]), st.booleans(), _WHERE),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=5,
    ),
    order=st.randoms(use_true_random=False),
)
def test_spool_keeps_what_the_whole_run_keeps(
    tmp_path_factory: pytest.TempPathFactory, scopes: list[list[Any]], order: Any
) -> None:
    # scopes finish in any order, and their items arrive in any order before they finish
    vms = [
        [
            (("gcp", f"p{n}", "r", f"vm{n}-{k}{k % 2}"), sha, verifies, where)
            for k, (sha, verifies, where) in enumerate(scope)
        ]
        for n, scope in enumerate(scopes)
    ]
    # the whole run: every copy added, then every VM verified in the run's order
    whole: dict[str, Evidence] = {}
    for scope in vms:
        for _, sha, _, where in scope:
            keep_evidence(whole, _copy(sha, where))
    for vm, sha, verifies, _ in sorted(v for scope in vms for v in scope):
        if verifies:
            _verify(whole[sha], vm)
    # spooled: adds interleaved with scope finishes
    sink = StoppableSink()
    sink.spool_to(EvidenceSpool(tmp_path_factory.mktemp("spool") / "e.bin"))
    events = [("add", n, i) for n, scope in enumerate(vms) for i in range(len(scope))]
    order.shuffle(events)
    left = [len(scope) for scope in vms]
    for _kind, n, i in events:
        _, sha, _, where = vms[n][i]
        sink.add(_copy(sha, where))
        left[n] -= 1
        if left[n] == 0:  # the scope's last item arrived: it finishes
            seen: dict[str, Evidence] = {}
            last: dict[str, tuple[str, str, str, str]] = {}
            for vm, sha_, verifies, _ in sorted(vms[n]):
                item = seen.setdefault(sha_, sink.lookup(sha_))  # type: ignore[arg-type]
                if verifies:
                    _verify(item, vm)
                    last[sha_] = vm
            for sha_ in seen:
                sink.spill(sha_, seen[sha_], last.get(sha_))
    for sha in list(sink.evidence):
        sink.spill(sha, None, None)
    assert sink.spool is not None
    stored = sink.spool.stored()
    assert dict(stored.items()) == whole
    assert {k: where_key(v) for k, v in stored.items()} == {
        k: where_key(v) for k, v in whole.items()
    }


# ------------------------------------------------ a stored run read back an entry at a time
@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("stored") / "run"
    scan(replay=DEMO, run_dir=run_dir, run_id="stored", concurrency=4, processes=1)
    return run_dir / RESULT_FILE


def _whole(path: Path) -> AuditRun:
    return AuditRun.model_validate_json(path.read_bytes())


def test_load_run_reads_entries_when_asked_and_gives_the_whole_file(stored_run: Path) -> None:
    run = load_run(stored_run.parent)
    assert isinstance(run.vms, StoredVMs) and isinstance(run.evidence, StoredEvidence)
    whole = _whole(stored_run)
    assert run == whole and run.vms == whole.vms and run.evidence == whole.evidence
    assert list(run.evidence) == list(whole.evidence)
    assert result_sha256(run) == hashlib.sha256(stored_run.read_bytes()).hexdigest()
    assert render_json(run).encode() == stored_run.read_bytes()


def _rewritten(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "result.json"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "change",
    [
        "indent 4",  # another layout
        "key order",  # laid out alike, but a VM's keys in another order
        "evidence key twice",  # the same item key twice: the whole-file reader decides
        "vms twice",
        "key escaped",  # the same key written with an escape: same JSON, other bytes
    ],
)
def test_a_file_not_written_by_us_is_read_whole_as_before(
    stored_run: Path, tmp_path: Path, change: str
) -> None:
    text = stored_run.read_text(encoding="utf-8")
    if change == "indent 4":
        text = json.dumps(json.loads(text), indent=4)
    elif change == "key order":
        text = text.replace('"provider": "aws",\n      "account"', '"account"', 1).replace(
            '"account": "111122223333",\n      "region"',
            '"account": "111122223333",\n      "provider": "aws",\n      "region"',
            1,
        )
        assert json.loads(text) == json.loads(stored_run.read_text(encoding="utf-8"))
    elif change == "evidence key twice":
        opening = text.index('\n  "evidence": {\n') + len('\n  "evidence": {\n')
        first_end = text.index("\n    },\n", opening) + len("\n    },\n")
        text = text[:opening] + text[opening:first_end] + text[opening:]
    elif change == "vms twice":
        text = text.replace('\n  "evidence": {', '\n  "vms": [],\n  "evidence": {', 1)
    else:
        at = text.index('\n  "evidence": {\n') + len('\n  "evidence": {\n') + 5
        text = text[:at] + "\\u00" + format(ord(text[at]), "02x") + text[at + 1 :]
    path = _rewritten(tmp_path, text)
    run = load_run(path)
    assert type(run.vms) is list and type(run.evidence) is dict
    assert run == _whole(path)


@pytest.mark.parametrize("cut", ["missing comma", "trailing comma"])
def test_json_that_is_not_json_is_refused_as_before(
    stored_run: Path, tmp_path: Path, cut: str
) -> None:
    # laid out line by line like ours, but not JSON: the entry-at-a-time reader must not accept
    # what the whole-file reader refuses
    text = stored_run.read_text(encoding="utf-8")
    vms = text.index('\n  "vms": [\n')  # the edit is in the VMs, not in the rest of the run
    head, tail = text[:vms], text[vms:]
    if cut == "missing comma":
        tail = tail.replace("\n    },\n    {\n", "\n    }\n    {\n", 1)
    else:
        tail = tail.replace("\n    }\n  ],\n", "\n    },\n  ],\n", 1)
    assert tail != text[vms:]
    text = head + tail
    path = _rewritten(tmp_path, text)
    with pytest.raises(ValidationError, match=r"json_invalid|Invalid JSON"):
        load_run(path)


def test_a_bad_entry_gives_the_whole_file_readers_error(stored_run: Path, tmp_path: Path) -> None:
    text = stored_run.read_text(encoding="utf-8").replace('"level": "L', '"level": "L9', 1)
    path = _rewritten(tmp_path, text)
    with pytest.raises(ValidationError) as err:
        load_run(path)
    assert err.value.errors()[0]["loc"][:2] == ("vms", 0)  # names the VM, as before


def test_an_empty_run_is_read_as_stored(stored_run: Path, tmp_path: Path) -> None:
    empty = _whole(stored_run).model_copy(update={"vms": [], "evidence": {}})
    write_run(empty, tmp_path / "run")
    text = (tmp_path / "run" / RESULT_FILE).read_text(encoding="utf-8")
    assert '\n  "vms": [],\n' in text and '\n  "evidence": {},\n' in text
    loaded = load_run(tmp_path / "run")
    assert isinstance(loaded.vms, StoredVMs) and list(loaded.vms) == []
    assert loaded == empty


def test_sealing_reads_the_run_id_without_reading_the_run(stored_run: Path, tmp_path: Path) -> None:
    import shutil

    from auditor.runs.bundle import BundleError, _run_id_of, write_manifest

    assert _run_id_of(stored_run) == "stored"
    copy_dir = tmp_path / "copy"
    shutil.copytree(stored_run.parent, copy_dir)
    other = load_run(stored_run.parent).model_copy(update={"run_id": "other"})
    with pytest.raises(BundleError, match="'stored', not 'other'"):
        write_manifest(copy_dir, other)
    # another layout: the id is still found (the whole file is parsed then)
    result = copy_dir / RESULT_FILE
    result.write_text(json.dumps(json.loads(result.read_text()), indent=4), encoding="utf-8")
    assert _run_id_of(result) == "stored"
    with pytest.raises(BundleError, match="'stored', not 'other'"):
        write_manifest(copy_dir, other)


@pytest.mark.parametrize("name", ["json", "csv", "markdown", "sarif", "ocsf", "asff", "junit"])
def test_report_writers_write_what_the_whole_run_renders(stored_run: Path, name: str) -> None:
    from auditor import reports

    run = load_run(stored_run.parent)
    assert isinstance(run.vms, StoredVMs) and run.vms.in_run_order  # read a VM at a time
    written = _written(run, name)
    assert written == reports.render(_whole(stored_run), name)  # the run held as lists
    assert written and all(written.values())
    if name == "json":
        assert written["result.json"] == stored_run.read_bytes()
    if name == "csv":  # the format itself, written here with the csv module
        tables = rows(_whole(stored_run))
        for table, columns in COLUMNS.items():
            buf = io.StringIO(newline="")
            out = csv.writer(buf, lineterminator="\r\n")
            out.writerow([c.name for c in columns])
            out.writerows(
                [_cell(c, v) for c, v in zip(columns, r, strict=True)] for r in tables[table]
            )
            assert written[f"csv/{table}.csv"] == buf.getvalue().encode("utf-8")
            assert len(tables[table]) > 0


def _written(run: AuditRun, name: str) -> dict[str, bytes]:
    from auditor import reports

    written = {}
    for rel, write_file in reports.writers(run, name).items():
        out = io.BytesIO()
        write_file(out)
        written[rel] = out.getvalue()
    return written


def test_a_stored_run_out_of_order_is_reported_in_order(stored_run: Path, tmp_path: Path) -> None:
    # a tampered result.json whose entries are each valid but listed out of the run's order:
    # read a VM at a time, but sorted before a report lists them
    text = stored_run.read_text(encoding="utf-8")
    head, _, rest = text.partition('  "vms": [\n')
    body, _, tail = rest.partition("\n  ],\n")
    entries = body.split("\n    },\n")
    assert len(entries) >= 3
    entries[0], entries[-1] = entries[-1].removesuffix("\n    }"), entries[0] + "\n    }"
    swapped = head + '  "vms": [\n' + "\n    },\n".join(entries) + "\n  ],\n" + tail
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RESULT_FILE).write_text(swapped, encoding="utf-8")
    run = load_run(tmp_path / "run")
    assert isinstance(run.vms, StoredVMs) and not run.vms.in_run_order
    assert run.vms[0] == _whole(stored_run).vms[-1]  # the file's order, as it is
    digests = [
        hashlib.sha256(p.read_bytes()).hexdigest().encode()
        for p in (tmp_path / "run" / RESULT_FILE, stored_run)
    ]
    for name in ("csv", "ocsf", "sarif", "markdown", "junit"):
        # the summary also names the file it was made from by its digest (the HTML report lists
        # VMs in the file's order within each account, as before: not compared here)
        tampered = {k: v.replace(*digests) for k, v in _written(run, name).items()}
        assert tampered == _written(load_run(stored_run.parent), name)


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=4,
    ),
    vms=st.sampled_from([0, 1, 200, 201]),
)
def test_json_arrays_written_an_item_at_a_time_are_dump_json(items: list[Any], vms: int) -> None:
    from types import SimpleNamespace

    from auditor.reports import dump_json, write_json_array

    run: Any = SimpleNamespace(vms=[None] * vms)  # indented up to LARGE_RUN VMs, compact beyond
    out = io.BytesIO()
    write_json_array(iter(items), run, out)
    assert out.getvalue() == dump_json(items, run).encode("utf-8")


class _Counting(ProgressListener):
    def __init__(self) -> None:
        self.planned_scopes = 0
        self.done = 0

    def planned(self, scopes: int) -> None:
        self.planned_scopes = scopes

    def scope_done(self, result: ScopeResult) -> None:
        self.done += 1


@pytest.mark.parametrize("processes", [1, 2], ids=["threads", "workers"])
def test_a_failure_while_finishing_a_scope_stops_the_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    # a bug in a rule or verifier is raised once the scope it broke on is finished: the scopes
    # still being read stop, the rest are never started, and the run stays INCOMPLETE
    import auditor.engine
    import auditor.run

    replay = tmp_path / "fleet"
    generate(replay, 240, per_scope=4, page_size=4)  # 60 scopes

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("rule engine broke")

    monkeypatch.setattr(auditor.run, "evaluate_all", broken)
    answered: list[str] = []  # every call fakecloud answered (workers call this process too)
    handle = FakeCloud._handle

    def counted(self: FakeCloud, request: Any) -> Any:
        answered.append(request.path)
        return handle(self, request)

    monkeypatch.setattr(FakeCloud, "_handle", counted)
    progress = _Counting()
    with pytest.raises(RuntimeError, match="rule engine broke") as raised:
        scan(
            replay=replay,
            run_dir=tmp_path / "run",
            concurrency=2,
            processes=processes,
            progress=progress,
        )
    assert progress.planned_scopes == 60
    assert 1 <= progress.done <= 6  # the one that broke, and those already in flight
    assert raised.value.__suppress_context__  # the bug, not the stop it caused, is shown
    assert (tmp_path / "run" / "INCOMPLETE").exists()
    assert not (tmp_path / "run" / SPOOL_DIR).exists()
    # a whole scan makes 60 scopes' calls (430); scopes never started make none
    made = len(answered)
    answered.clear()
    monkeypatch.setattr(auditor.run, "evaluate_all", auditor.engine.evaluate_all)
    scan(replay=replay, concurrency=2, processes=processes)
    assert made < len(answered) / 8  # 22 here; 78 if unstarted scopes made their first call


def test_a_report_for_stdout_and_a_directory_is_made_once(
    stored_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: Any
) -> None:
    # `ccaudit report RUN --format junit`: printed and written into the run directory; a
    # streamed format is made as it is written, so it is made once and its file copied
    from auditor import reports
    from auditor.cli.outputs import emit

    made: list[str] = []
    writers = reports.writers

    def counting(run: AuditRun, name: str) -> dict[str, reports.Writer]:
        def once(write: reports.Writer, out: Any) -> object:
            made.append(name)
            return write(out)

        return {rel: partial(once, w) for rel, w in writers(run, name).items()}

    monkeypatch.setattr(reports, "writers", counting)
    run = load_run(stored_run.parent)
    emit(run, ["junit"], None, tmp_path / "out")
    printed = capsysbinary.readouterr().out
    assert made == ["junit"]
    assert printed == (tmp_path / "out" / "junit.xml").read_bytes()
    assert printed == reports.render(_whole(stored_run), "junit")["junit.xml"]


@pytest.mark.parametrize("name", ["csv", "ocsf", "asff", "sarif", "junit"])
def test_report_writers_of_an_empty_run_write_what_render_gives(
    stored_run: Path, name: str
) -> None:
    from auditor import reports
    from auditor.model import Coverage

    empty = _whole(stored_run).model_copy(
        update={"vms": [], "evidence": {}, "coverage": Coverage(complete=True)}
    )
    assert _written(empty, name) == reports.render(empty, name)


@pytest.fixture(scope="module")
def large_stored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # above reports.LARGE_RUN VMs: JSON reports are compact, and OSCAL is written streamed
    root = tmp_path_factory.mktemp("large")
    generate(root / "fleet", 240, per_scope=24, page_size=8)
    scan(replay=root / "fleet", run_dir=root / "run", run_id="large", concurrency=4, processes=1)
    return root / "run" / RESULT_FILE


@pytest.mark.parametrize("name", ["csv", "ocsf", "asff", "sarif", "junit", "oscal", "markdown"])
def test_report_writers_of_a_large_run_write_what_the_whole_run_renders(
    large_stored_run: Path, name: str
) -> None:
    from auditor import reports
    from auditor.reports import LARGE_RUN

    run = load_run(large_stored_run.parent)
    assert len(run.vms) > LARGE_RUN and isinstance(run.vms, StoredVMs)
    written = _written(run, name)
    assert written == reports.render(_whole(large_stored_run), name)
    assert all(len(data) > 100 for data in written.values())
