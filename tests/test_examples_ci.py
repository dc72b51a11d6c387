"""examples/ci/: valid YAML, and every `ccaudit` command in them parses with the real CLI.

The workflows run in other people's CI, where a renamed flag would only show up as a red job
weeks later; so each `ccaudit ...` line is split like a shell would and parsed by the actual
click command (options, types, choices), without running it.
"""

from __future__ import annotations

import importlib
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from auditor.cli import app
from tests.conftest import REPO

CI = REPO / "examples" / "ci"
GITHUB = CI / "github-actions.yml"
GITLAB = CI / "gitlab-ci.yml"


def _shell_lines(script: str) -> list[str]:
    """Logical lines of a shell script: `\\` continuations joined."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines():
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        out.append((pending + stripped).strip())
        pending = ""
    return out


def _ccaudit_commands(scripts: list[str]) -> list[list[str]]:
    commands = []
    for script in scripts:
        for line in _shell_lines(script):
            if line.startswith("ccaudit "):
                commands.append(shlex.split(line)[1:])
    return commands


def _github_scripts(workflow: dict[str, Any]) -> list[str]:
    return [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]


def _gitlab_scripts(pipeline: dict[str, Any]) -> list[str]:
    return [
        line
        for job in pipeline.values()
        if isinstance(job, dict)
        for key in ("before_script", "script", "after_script")
        for line in job.get(key, [])
    ]


def _protected(ctx: Any) -> list[str]:
    """The subcommand and its arguments, held back by a group's parse (name varies by click)."""
    for name in ("_protected_args", "protected_args"):
        if isinstance(value := getattr(ctx, name, None), list):
            return value
    return []


def _parse(args: list[str]) -> Any:
    """Parse `ccaudit ARGS` down to the leaf command (a click context, typer's vendored click);
    raises click's UsageError wherever the real CLI would refuse the line."""
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("ccaudit", list(args), resilient_parsing=False)
    while hasattr(command, "resolve_command"):  # a group: descend into the subcommand
        name, sub, rest = command.resolve_command(ctx, [*_protected(ctx), *ctx.args])
        assert sub is not None, f"no ccaudit subcommand {name!r}"
        command = sub
        ctx = sub.make_context(name or "", rest, parent=ctx, resilient_parsing=False)
    return ctx


@pytest.fixture(scope="module")
def github() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(GITHUB.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def gitlab() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(GITLAB.read_text(encoding="utf-8"))
    return data


def test_github_workflow_is_scheduled_and_uploads_reports(github: dict[str, Any]) -> None:
    triggers = github.get("on", github.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    assert triggers["schedule"][0]["cron"]
    steps = [s for job in github["jobs"].values() for s in job["steps"]]
    uses = {s.get("uses", "").split("@")[0]: s for s in steps}
    sarif = importlib.import_module("auditor.reports.sarif").FILE
    html = importlib.import_module("auditor.reports.html").FILE
    assert uses["github/codeql-action/upload-sarif"]["with"]["sarif_file"].endswith(sarif)
    assert uses["actions/upload-artifact"]["with"]["path"].endswith(html)
    summary = "\n".join(_github_scripts(github))
    assert "diff.md" in summary and "$GITHUB_STEP_SUMMARY" in summary
    assert github["permissions"]["security-events"] == "write"


def test_gitlab_job_is_scheduled_and_keeps_artifacts(gitlab: dict[str, Any]) -> None:
    job = gitlab["ccaudit"]
    assert any("schedule" in r["if"] for r in job["rules"])
    junit = importlib.import_module("auditor.reports.junit").FILE
    assert job["artifacts"]["reports"]["junit"].endswith(junit)
    assert job["allow_failure"]["exit_codes"] == [3]


def test_every_ccaudit_command_parses_with_the_real_cli(
    github: dict[str, Any], gitlab: dict[str, Any]
) -> None:
    commands = _ccaudit_commands(_github_scripts(github)) + _ccaudit_commands(
        _gitlab_scripts(gitlab)
    )
    assert len(commands) >= 4
    used = set()
    for args in commands:
        ctx = _parse(args)
        used.add(ctx.command.name)
        if ctx.command.name == "scan":
            params = ctx.params
            assert params["config"] == Path("ccaudit.yaml")
            assert params["baseline"] == "latest" and params["fail_on_regression"] is True
    assert used == {"scan", "history"}


def _usage_error(args: list[str]) -> str:
    with pytest.raises(Exception) as info:
        _parse(args)
    assert "UsageError" in {c.__name__ for c in type(info.value).__mro__}, info.value
    return str(info.value)


def test_the_checker_rejects_what_the_cli_would_reject() -> None:
    assert "--no-such-flag" in _usage_error(["scan", "--no-such-flag"])
    assert "integer" in _usage_error(["scan", "--max-undetermined", "many"])
    assert "no-such-command" in _usage_error(["no-such-command"])
    assert _parse(["diff", "a", "b", "--format", "markdown"]).params["fmt"].value == "markdown"


def test_shell_continuations_are_joined() -> None:
    lines = _shell_lines("set +e\nccaudit scan --a \\\n  --b c\necho done\n")
    assert [line.split() for line in lines] == [
        ["set", "+e"],
        ["ccaudit", "scan", "--a", "--b", "c"],
        ["echo", "done"],
    ]
