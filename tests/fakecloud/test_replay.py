"""Replay directory access: confinement, size bound, malformed JSON, account listing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditor.fakecloud.replay import (
    ReplayFileError,
    ReplayStore,
    UnsafeNameError,
    aws_accounts,
)


def test_aws_accounts_lists_plain_folders(tmp_path: Path) -> None:
    assert aws_accounts(tmp_path) == []
    for name in ("222222222222", "111111111111", ".hidden"):
        (tmp_path / "aws" / name).mkdir(parents=True)
    (tmp_path / "aws" / "README.json").write_text("{}")
    assert aws_accounts(tmp_path) == ["111111111111", "222222222222"]


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/etc", "", ".env", "a\\b", "x\x00"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeNameError):
        ReplayStore(tmp_path).path("aws", name)


def test_symlink_escape_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    root = tmp_path / "replay"
    root.mkdir()
    os.symlink(outside, root / "aws")
    store = ReplayStore(root)
    with pytest.raises(UnsafeNameError):
        store.load_json("aws", "secret.json")
    assert store.subdirs() == []


def test_size_limit_and_malformed_json(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_text('{"a": "' + "x" * 200 + '"}')
    (tmp_path / "bad.json").write_text("{'single': 1}")
    (tmp_path / "nan.json").write_text('{"a": NaN}')
    store = ReplayStore(tmp_path, max_file_bytes=100)
    with pytest.raises(ReplayFileError, match=r"big\.json.*limit"):
        store.load_json("big.json")
    with pytest.raises(ReplayFileError, match=r"bad\.json: malformed JSON at line 1"):
        store.load_json("bad.json")
    with pytest.raises(ReplayFileError, match=r"nan\.json"):
        store.load_json("nan.json")
    assert store.load_json("absent.json") is None


def test_cache_notices_changed_files(tmp_path: Path) -> None:
    store = ReplayStore(tmp_path)
    path = tmp_path / "a.json"
    path.write_text('{"v": 1}')
    first = store.load_json("a.json")
    assert first is not None and first.data == {"v": 1} and first.relpath == "a.json"
    path.write_text('{"v": 22}')
    second = store.load_json("a.json")
    assert second is not None and second.data == {"v": 22}
