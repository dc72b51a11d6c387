"""The nonce store: issue, lookup, freshness checks, atomic concurrent updates."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditor.guest.nonces import (
    STORE_FILE,
    NonceStore,
    NonceStoreError,
    default_state_dir,
)

T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)
SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.fixture
def store(tmp_path: Path) -> NonceStore:
    return NonceStore(tmp_path / "state" / STORE_FILE)


def test_issue_records_a_fresh_32_byte_nonce(store: NonceStore) -> None:
    first = store.issue("i-0123456789abcdef0", "aws", now=T0)
    second = store.issue("i-0123456789abcdef0", "aws", now=T0)
    assert len(bytes.fromhex(first)) == 32
    assert first != second
    record = store.lookup(first)
    assert record is not None
    assert (record.vm_id, record.provider, record.issued_at, record.used_by) == (
        "i-0123456789abcdef0",
        "aws",
        T0,
        [],
    )
    assert store.lookup(first.upper()) == record


def test_lookup_of_unknown_or_malformed_nonce_is_none(store: NonceStore) -> None:
    store.issue("vm-1", now=T0)
    assert store.lookup("00" * 32) is None
    assert store.lookup("not hex") is None


def test_check_accepts_a_fresh_nonce_for_its_vm(store: NonceStore) -> None:
    nonce = store.issue("vm-1", "gcp", now=T0)
    ok, reason = store.check(nonce, "vm-1", SHA_A, now=T0 + timedelta(hours=1))
    assert ok
    assert reason == "fresh nonce issued 2026-12-01T08:00:00Z for vm-1"


def test_check_rejects_unknown_nonce_as_stale(store: NonceStore) -> None:
    assert store.check("11" * 32, "vm-1", SHA_A) == (
        False,
        "stale: nonce unknown to this audit state",
    )


def test_check_rejects_nonce_issued_for_another_vm(store: NonceStore) -> None:
    nonce = store.issue("vm-1", now=T0)
    ok, reason = store.check(nonce, "vm-2", SHA_A, now=T0)
    assert not ok
    assert "vm-1" in reason and "vm-2" in reason


def test_azure_vm_ids_compare_case_insensitively(store: NonceStore) -> None:
    nonce = store.issue("0F3A5C2E-1111-2222-3333-444455556666", "azure", now=T0)
    ok, _ = store.check(nonce, "0f3a5c2e-1111-2222-3333-444455556666", SHA_A, now=T0)
    assert ok
    other = store.issue("Vm-Name", "aws", now=T0)
    assert not store.check(other, "vm-name", SHA_A, now=T0)[0]


def test_check_rejects_expired_nonce(store: NonceStore) -> None:
    nonce = store.issue("vm-1", now=T0)
    assert store.check(nonce, "vm-1", SHA_A, now=T0 + timedelta(days=30))[0]
    ok, reason = store.check(nonce, "vm-1", SHA_A, now=T0 + timedelta(days=30, seconds=1))
    assert not ok
    assert reason.startswith("stale:") and "30 days" in reason
    ok, _ = store.check(
        nonce, "vm-1", SHA_A, max_age=timedelta(hours=1), now=T0 + timedelta(hours=2)
    )
    assert not ok


def test_check_rejects_reuse_by_a_different_evidence_file(store: NonceStore) -> None:
    nonce = store.issue("vm-1", now=T0)
    store.mark_used(nonce, SHA_A)
    store.mark_used(nonce, SHA_A)  # idempotent
    record = store.lookup(nonce)
    assert record is not None and record.used_by == [SHA_A]
    assert store.check(nonce, "vm-1", SHA_A, now=T0)[0]  # the same file, re-imported
    ok, reason = store.check(nonce, "vm-1", SHA_B, now=T0)
    assert not ok
    assert reason.startswith("reused") and SHA_A in reason


def test_mark_used_of_unknown_nonce_or_bad_hash_fails(store: NonceStore) -> None:
    nonce = store.issue("vm-1", now=T0)
    with pytest.raises(NonceStoreError, match="unknown"):
        store.mark_used("22" * 32, SHA_A)
    with pytest.raises(NonceStoreError, match="SHA-256"):
        store.mark_used(nonce, "xyz")


def test_store_file_is_json_and_rewritten_atomically(store: NonceStore) -> None:
    nonce = store.issue("vm-1", "aws", now=T0)
    doc = json.loads(store.path.read_text())
    assert doc["format"] == "ccaudit-nonces/1"
    assert doc["nonces"][nonce]["vm_id"] == "vm-1"
    leftovers = [p.name for p in store.path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_corrupt_store_is_a_typed_error_not_overwritten(store: NonceStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    with pytest.raises(NonceStoreError, match="not JSON"):
        store.issue("vm-1")
    assert store.path.read_text() == "{not json"
    store.path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(NonceStoreError, match="ccaudit-nonces/1"):
        store.lookup("00" * 32)


def test_default_state_dir_follows_ccaudit_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CCAUDIT_HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home"
    monkeypatch.delenv("CCAUDIT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / ".local" / "share" / "ccaudit"


def _issue_many(
    path: str, vm: str, count: int, start: Any, queue: multiprocessing.Queue[list[str]]
) -> None:
    store = NonceStore(Path(path))
    start.wait(30)
    queue.put([store.issue(vm) for _ in range(count)])


def test_concurrent_issue_from_two_processes_loses_nothing(store: NonceStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[str]] = ctx.Queue()
    start = ctx.Event()
    workers = [
        ctx.Process(target=_issue_many, args=(str(store.path), vm, 100, start, queue))
        for vm in ("vm-a", "vm-b")
    ]
    for worker in workers:
        worker.start()
    start.set()
    issued = queue.get(timeout=60) + queue.get(timeout=60)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    stored = json.loads(store.path.read_text())["nonces"]
    assert len(issued) == 200
    assert set(stored) == set(issued)
    assert [stored[n]["vm_id"] for n in issued].count("vm-a") == 100


def test_a_nonce_issued_after_the_judging_time_is_refused(tmp_path: Path) -> None:
    """A negative age (the evidence judged before the nonce existed) is never fresh."""
    from datetime import UTC, datetime

    store = NonceStore(tmp_path / "nonces.json")
    nonce = store.issue("i-1", "aws", now=datetime(2026, 11, 23, tzinfo=UTC))
    ok, why = store.check(nonce, "i-1", "ab" * 32, now=datetime(2026, 11, 22, tzinfo=UTC))
    assert not ok
    assert why == (
        "not yet issued: nonce issued 2026-11-23T00:00:00Z, after the time the evidence is "
        "judged at (2026-11-22T00:00:00Z)"
    )
    assert store.check(nonce, "i-1", "ab" * 32, now=datetime(2026, 11, 23, tzinfo=UTC))[0]
