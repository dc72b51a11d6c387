"""README.md works as printed: every shell and Python block runs, every link resolves.

Blocks run in a scratch directory (with `examples/` linked in, as from a clone's root), with a
throwaway run store, offline. Only a block marked `<!-- readme-test: skip (why) -->` is left
out: the quick start, which sets up the machine and which CI runs itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
_BLOCK = re.compile(
    r"(?P<mark><!-- readme-test: skip[^>]*-->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S
)
_LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)#\s]+)(?:#[^)]*)?\)")


def _blocks(lang: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return [
        m.group("body")
        for m in _BLOCK.finditer(text)
        if m.group("lang") == lang and not m.group("mark")
    ]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    where = tmp_path_factory.mktemp("readme")
    (where / "examples").symlink_to(REPO / "examples")
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(where / "home"),
        "CCAUDIT_HOME": str(where / "store"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "NO_PROXY": "127.0.0.1,localhost",
        "COLUMNS": "100",
    }
    return where, env


def test_readme_has_blocks_to_run() -> None:
    assert len(_blocks("sh")) >= 1 and len(_blocks("python")) >= 1


def test_every_shell_block_runs_as_printed(scratch: tuple[Path, dict[str, str]]) -> None:
    where, env = scratch
    for block in _blocks("sh"):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if not command:
                continue
            done = subprocess.run(
                ["bash", "-c", f"set -o pipefail; {command}"],
                cwd=where,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_every_python_block_runs_as_printed(scratch: tuple[Path, dict[str, str]]) -> None:
    where, env = scratch
    for block in _blocks("python"):
        done = subprocess.run(
            [sys.executable, "-c", block],
            cwd=where,
            env={**env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{block}\n{done.stderr[-3000:]}"
        assert "True" in done.stdout  # load_run("latest") found the run auditor.demo() kept


@pytest.mark.parametrize(
    "doc",
    [README, *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "examples").rglob("*.md"))],
    ids=lambda p: str(Path(p).relative_to(REPO)),
)
def test_every_relative_link_resolves(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    broken = [
        target
        for target in _LINK.findall(text)
        if not (doc.parent / target).exists() and not target.startswith("<")
    ]
    assert not broken, broken


def test_readme_stays_short_and_starts_with_what_the_tool_is() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    first = next(i for i, line in enumerate(lines) if line.startswith("## "))
    assert lines[first] == "## Quick start"
    assert any(line and not line.startswith("#") for line in lines[1:first])
    assert os.path.basename(README) == "README.md"
