"""result.json is written and hashed a piece at a time, byte for byte what pydantic writes whole.

The run's fingerprint (SHA-256 of result.json) is quoted in every report and signed in
bundles, so the streamed bytes must never differ from `model_dump_json(indent=2)`: not for
non-ASCII text, escaped newlines, quotes in evidence keys, nor for an empty fleet.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.api import scan
from auditor.model import AuditRun, result_bytes, result_chunks, result_sha256
from auditor.run import RESULT_FILE, load_run, write_run
from tests.conftest import DEMO_FLEET


@pytest.fixture(scope="module")
def demo_run() -> AuditRun:
    return scan(replay=DEMO_FLEET)


def _whole(run: AuditRun) -> bytes:
    return (run.model_dump_json(indent=2) + "\n").encode("utf-8")


def test_streamed_result_is_the_whole_document_byte_for_byte(
    demo_run: AuditRun, tmp_path: Path
) -> None:
    assert len(demo_run.vms) > 20 and len(demo_run.evidence) > 20
    whole = _whole(demo_run)
    assert result_bytes(demo_run) == whole
    write_run(demo_run, tmp_path)
    assert (tmp_path / RESULT_FILE).read_bytes() == whole
    assert result_sha256(demo_run) == hashlib.sha256(whole).hexdigest()
    assert load_run(tmp_path) == demo_run
    # one VM or evidence entry a piece: no piece holds the document
    assert max(len(c) for c in result_chunks(demo_run)) < len(whole) / 10


def test_an_empty_run_streams_as_pydantic_writes_it(demo_run: AuditRun) -> None:
    empty = demo_run.model_copy(update={"vms": [], "evidence": {}})
    assert result_bytes(empty) == _whole(empty)
    no_evidence = demo_run.model_copy(update={"evidence": {}})
    assert result_bytes(no_evidence) == _whole(no_evidence)


_text = st.text(
    alphabet=st.sampled_from(['"', "\\", "\n", "\u2028", "é", "\U0001f600", "a", " ", "{", "]"]),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(name=_text, key=_text, reason=_text)
def test_any_text_in_a_vm_or_an_evidence_key_streams_exactly(
    demo_run: AuditRun, name: str, key: str, reason: str
) -> None:
    vm = demo_run.vms[0].model_copy(update={"name": name, "level_reason": reason})
    first_key, first = next(iter(demo_run.evidence.items()))
    run = demo_run.model_copy(
        update={"vms": [vm, demo_run.vms[1]], "evidence": {key: first, first_key + "x": first}}
    )
    assert result_bytes(run) == _whole(run)


def test_writing_the_run_names_its_fingerprint_without_serialising_it_again(
    demo_run: AuditRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import auditor.model as model

    run = demo_run.model_copy()  # a run no digest was taken of yet
    write_run(run, tmp_path)
    written = hashlib.sha256((tmp_path / RESULT_FILE).read_bytes()).hexdigest()

    def again(_: AuditRun) -> None:
        raise AssertionError("serialised a second time")

    monkeypatch.setattr(model, "result_chunks", again)
    assert result_sha256(run) == written
