"""The first hour of a CI engineer: exit codes mean what the README says, errors are one line,
nothing half-written is left behind, and a scan in a log is never silent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli import EXIT_INTERNAL, app
from auditor.cli.common import run_dir_lock
from tests.conftest import DEMO_FLEET

runner = CliRunner()
AWS_ONLY = ["--replay", str(DEMO_FLEET), "--provider", "aws"]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _runs(home: Path) -> list[Path]:
    runs = home / "runs"
    return sorted(p for p in runs.iterdir()) if runs.is_dir() else []


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "home"
    monkeypatch.setenv("CCAUDIT_HOME", str(where))
    return where


# ------------------------------------------------------------------ outputs checked first


@pytest.mark.parametrize("kind", ["unwritable", "parent-is-a-file"])
def test_a_bad_output_fails_before_any_cloud_call(home: Path, tmp_path: Path, kind: str) -> None:
    if kind == "unwritable":
        target = "/proc/nope/x.json"
    else:
        (tmp_path / "afile").write_text("x")
        target = str(tmp_path / "afile" / "result.json")
    result = runner.invoke(app, ["scan", *AWS_ONLY, "--format", "json", "--output", target])
    assert result.exit_code == 2
    (line,) = _lines(result.stderr)
    assert line.startswith(f"error: cannot write --output {target}")
    assert "Traceback" not in result.output
    assert _runs(home) == []  # nothing collected, nothing half-written, nothing indexed


def test_an_internal_error_is_one_line_exit_70_and_the_traceback_only_with_debug(
    tmp_path: Path,
) -> None:
    script = textwrap.dedent(
        """
        import sys
        import auditor.cli.scan as scan

        def broken(**kw):
            raise KeyError("boom")

        scan.run_scan = broken
        from auditor.cli import main
        main()
        """
    )
    env = {"CCAUDIT_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-c", script, "scan", *AWS_ONLY, "--format", "json"]
    plain = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == EXIT_INTERNAL == 70
    (line,) = _lines(plain.stderr)
    assert line.startswith("internal error in cc-auditor") and "KeyError: 'boom'" in line
    assert "bug report" in line and "--debug" in line
    assert "Traceback" not in plain.stderr
    assert not (tmp_path / "home" / "runs").exists() or not any(
        (tmp_path / "home" / "runs").iterdir()
    )
    debug = subprocess.run(
        [*args[:3], "--debug", *args[3:]], capture_output=True, text=True, env=env, timeout=120
    )
    assert debug.returncode == 70 and "Traceback" in debug.stderr


# ------------------------------------------------------------------ no credentials


def test_no_credentials_anywhere_is_a_configuration_error_saving_nothing(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # no metadata server either
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    result = runner.invoke(app, ["scan", "--provider", "aws,gcp,azure", "--format", "json"])
    assert result.exit_code == 2, result.output
    errors = [line for line in _lines(result.stderr) if line.startswith("error:")]
    assert [e.split(":")[1].strip() for e in errors] == ["aws", "gcp", "azure"]
    assert "aws configure" in errors[0] and "--profile" in errors[0]
    assert "gcloud auth application-default login" in errors[1]
    assert "az login" in errors[2]
    assert "nothing was scanned and nothing was saved" in result.stderr
    assert len(_lines(result.stderr)) < 12  # not Azure's 20-line credential chain
    assert _runs(home) == []


# ------------------------------------------------------------------ progress and listing


def test_a_scan_in_a_log_prints_progress_and_quiet_silences_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import auditor.cli.scan as scan

    monkeypatch.setattr(scan, "PROGRESS_INTERVAL", 0.0)
    result = runner.invoke(app, ["scan", *AWS_ONLY, "--format", "json", "--no-save"])
    progress = [line for line in _lines(result.stderr) if line.startswith("progress:")]
    assert progress, result.stderr
    final = next(line for line in _lines(result.stderr) if line.startswith("collected:"))
    assert " scopes, " in final and " VMs, " in final and " calls, " in final
    quiet = runner.invoke(app, ["--quiet", "scan", *AWS_ONLY, "--format", "json", "--no-save"])
    assert not [
        line for line in _lines(quiet.stderr) if line.startswith(("progress:", "collected:"))
    ]
    json.loads(quiet.stdout)


def test_json_output_to_a_file_lists_the_gaps(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    result = runner.invoke(app, ["scan", *AWS_ONLY, "--format", "json", "--output", str(out)])
    assert result.exit_code == 3
    run = json.loads(out.read_text())
    assert f"collection incomplete: {len(run['coverage']['gaps'])} gap(s):" in result.stderr
    for gap in run["coverage"]["gaps"]:
        assert f"{gap['call']} {gap['code']}" in result.stderr
    assert "listed above" not in result.stderr


def test_every_advertised_format_can_be_written_with_the_all_extra() -> None:
    import tomllib

    from auditor import reports

    pyproject = tomllib.loads((DEMO_FLEET.parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert any(dep.startswith("junitparser") for dep in extras["reports"])
    for name in reports.FORMATS:
        assert reports.unavailable(name) is None, name


def test_a_second_scan_into_the_same_run_directory_is_refused(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    with run_dir_lock(out):
        result = runner.invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 2
    (line,) = [x for x in _lines(result.stderr) if x.startswith("error:")]
    assert f"another ccaudit scan is writing {out}" in line
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------ the small things


def test_provider_names_in_any_case(home: Path) -> None:
    result = runner.invoke(app, ["scan", "--replay", str(DEMO_FLEET), "--provider", "AWS"])
    assert result.exit_code == 3, result.output  # scanned (the demo has gaps)
    bad = runner.invoke(app, ["scan", "--replay", str(DEMO_FLEET), "--provider", "Oracle"])
    assert bad.exit_code == 2
    (line,) = _lines(bad.stderr)
    assert line == "error: unknown --provider 'Oracle' (known: aws, gcp, azure, libvirt)"


def test_an_empty_config_file_is_warned_about(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "ccaudit.yaml"
    config.write_text("# nothing here yet\n")
    result = runner.invoke(app, ["scan", *AWS_ONLY, "--config", str(config), "--no-save"])
    assert f"warning: config {config} is empty: it sets nothing" in result.stderr


def test_a_cel_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        "pack: mine\nrules:\n  - id: a.b\n    title: broken rule\n    party: hypervisor\n"
        "    effect: CAN_ACCESS\n    rationale: because\n    when: vm.technology ==\n"
    )
    result = runner.invoke(app, ["rules", "validate", str(pack)])
    assert result.exit_code == 2
    (line,) = _lines(result.stderr)
    assert line.startswith(
        f"error: {pack}: rule 'a.b': line 8: CEL error at line 1, column 17 of the expression"
    )


@pytest.mark.parametrize("command", ["report", "reverify", "diff"])
def test_a_corrupt_result_json_is_one_line(tmp_path: Path, command: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text('{"schema_version": "1", "run_id": 5}')
    args = {"report": ["report", str(run)], "reverify": ["reverify", str(run)]}.get(
        command, ["diff", str(run), str(run)]
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    (line,) = _lines(result.stderr)
    assert str(run) in line and "not a usable result.json" in line
    assert "validation error" not in result.output and "Traceback" not in result.output


def test_help_and_version_import_nothing_heavy() -> None:
    """`--help` and `--version` answer at once: the scanner, SDKs and reports are not loaded."""
    code = (
        "import sys, auditor.cli\n"
        "heavy = [m for m in ('boto3', 'pydantic', 'auditor.api', 'auditor.engine', "
        "'auditor.reports.view', 'cel') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout
