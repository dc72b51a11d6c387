"""ccaudit.yaml: parsing, clear errors, the published JSON Schema, and flags over config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

import auditor
from auditor import reports
from auditor.api import scan
from auditor.cli import app
from auditor.config import (
    OUTPUT_FORMATS,
    ConfigError,
    config_schema,
    config_schema_text,
    load_config,
    parse_config,
)
from tests.conftest import DEMO_FLEET, REPO

EXAMPLE = REPO / "examples" / "ccaudit.yaml"
SCHEMA_FILE = REPO / "docs" / "ccaudit.schema.json"
HEX = "ab" * 48


def test_published_schema_is_current() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == config_schema_text(), (
        "docs/ccaudit.schema.json is stale: python -m auditor.config > docs/ccaudit.schema.json"
    )


def test_example_config_is_valid_by_loader_and_by_schema() -> None:
    config = load_config(EXAMPLE)
    jsonschema.Draft202012Validator.check_schema(config_schema())
    jsonschema.validate(yaml.safe_load(EXAMPLE.read_text()), config_schema())
    opts = config.scan_options()
    assert opts["provider"] == ["aws", "gcp", "azure"]
    assert opts["regions"] == ["eu-west-1", "eu-central-1"]
    # relative paths resolve against the file's directory, not the working directory
    assert opts["rules"] == [EXAMPLE.parent / "policy" / "our-policy.yaml"]
    assert config.output_paths()["sarif"] == EXAMPLE.parent / "out" / "ccaudit.sarif"
    (ref,) = opts["reference_measurements"]
    assert ref["technology"] == "SEV_SNP" and len(ref["measurement"]) == 96


def test_output_formats_match_the_report_registry() -> None:
    assert set(OUTPUT_FORMATS) == set(reports.FORMATS)


def test_schema_rejects_what_the_loader_rejects() -> None:
    bad = {"scope": {"aws": {"regoins": ["eu-west-1"]}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, config_schema())
    with pytest.raises(ConfigError):
        parse_config(yaml.safe_dump(bad))


def test_errors_name_file_line_and_key_path(tmp_path: Path) -> None:
    path = tmp_path / "ccaudit.yaml"
    path.write_text(
        "scope:\n"
        "  aws:\n"
        "    regoins: [eu-west-1]\n"
        "thresholds:\n"
        "  fail_below: L7\n"
        "reference_measurements:\n"
        "  - name: fw\n"
        "    technology: SEV_SNP\n"
        "    measurement: abc\n"
        "outputs:\n"
        "  docx: out.docx\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert f"{path}: line 3: scope.aws.regoins: unknown key" in text
    assert "line 5: thresholds.fail_below:" in text and "'L4'" in text
    assert "line 9: reference_measurements[0].measurement: must be 96 hex digits" in text
    assert "outputs.docx: not an allowed key" in text
    assert len(info.value.problems) == 4


def test_bad_yaml_and_non_mapping_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"x.yaml: line 3: not valid YAML"):
        parse_config("scope:\n  aws: {a: b\n  gcp: c: d\n", "x.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_config("- a\n- b\n", "x.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Path("/nonexistent/ccaudit.yaml"))


def test_per_scope_threshold_keys_are_checked() -> None:
    ok = parse_config("thresholds: {fail_below_scopes: {aws: L1, gcp/my-project: L2}}")
    assert dict(ok.thresholds.fail_below_scopes) == {"aws": "L1", "gcp/my-project": "L2"}
    with pytest.raises(ConfigError, match="fail_below_scopes"):
        parse_config("thresholds: {fail_below_scopes: {oracle: L1}}")


def test_measurements_are_normalised_and_technology_checked() -> None:
    c = parse_config(
        f"reference_measurements: [{{name: a, technology: TDX, measurement: '{HEX.upper()}'}}]"
    )
    assert c.reference_measurements[0].measurement == HEX
    with pytest.raises(ConfigError, match="technology"):
        parse_config(f"reference_measurements: [{{name: a, technology: SEV, measurement: {HEX}}}]")


def _demo_config(tmp_path: Path, extra: str = "") -> Path:
    fleet = tmp_path / "fleet"
    shutil.copytree(DEMO_FLEET, fleet)
    path = tmp_path / "ccaudit.yaml"
    path.write_text(
        "scope:\n  replay: fleet\n  aws: {}\n"
        f"store: store\noutputs:\n  markdown: out/summary.md\n  csv: out/csv\n{extra}",
        encoding="utf-8",
    )
    return path


def test_api_scan_takes_the_config_and_flags_override_it(tmp_path: Path) -> None:
    path = _demo_config(tmp_path)
    run = scan(config=path)
    assert run.scope.providers == ["aws"]  # the config chose aws only, out of three clouds
    stored = list((tmp_path / "store" / "runs").iterdir())
    assert [p.name for p in stored] == [run.run_id]
    again = scan(["gcp"], config=path)  # an explicit argument wins over the file
    assert again.scope.providers == ["gcp"]
    nb_run = auditor.scan(config=path)  # the notebook face knows where the config kept it
    assert nb_run.path == tmp_path / "store" / "runs" / nb_run.run_id
    assert (nb_run.path / "manifest.json").is_file()


def test_cli_scan_with_config_writes_outputs_and_applies_thresholds(tmp_path: Path) -> None:
    path = _demo_config(tmp_path, "thresholds:\n  fail_below: L1\n")
    result = CliRunner().invoke(app, ["scan", "--config", str(path)])
    assert result.exit_code == 1, result.stderr
    assert "gate fail-below: FAILED" in result.stderr
    assert (tmp_path / "out" / "summary.md").read_text().startswith("#")
    assert (tmp_path / "out" / "csv" / "vms.csv").is_file()
    # the flag overrides the file's threshold: L0 passes, and the AWS demo is incomplete (3)
    result = CliRunner().invoke(app, ["scan", "--config", str(path), "--fail-below", "L0"])
    assert result.exit_code == 3, result.stderr
    assert "gate fail-below: passed" in result.stderr
    runs = json.loads(
        CliRunner().invoke(app, ["history", "--json", "--store", str(tmp_path / "store")]).stdout
    )
    assert len(runs) == 2 and all(r["providers"] == ["aws"] for r in runs)


def test_cli_reports_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "ccaudit.yaml"
    path.write_text("thresholds:\n  max_undetermined: -1\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["scan", "--config", str(path), "--no-save"])
    assert result.exit_code == 2
    assert "line 2: thresholds.max_undetermined" in result.stderr


def test_rate_limits_in_the_file_and_flags_over_them_family_by_family() -> None:
    from auditor.api import _with_config

    text = (
        "rate_limits:\n  aws:ec2-read: 200/40\n  azure:arm-read: off\n"
        "  gcp:compute-read: 3000/60s\n"
    )
    cfg = parse_config(text, "ccaudit.yaml")  # YAML's unquoted off (false) is "off"
    assert cfg.scan_options()["rate_limits"] == {
        "aws:ec2-read": "200/40",
        "azure:arm-read": "off",
        "gcp:compute-read": "3000/60s",
    }
    args = _with_config({"config": cfg, "rate_limits": {"aws:ec2-read": "50/10"}})
    assert args["rate_limits"] == {
        "aws:ec2-read": "50/10",
        "azure:arm-read": "off",
        "gcp:compute-read": "3000/60s",
    }
    with pytest.raises(ConfigError, match=r"line 3: rate_limits: .*counts calls per interval"):
        parse_config("version: 1\nrate_limits:\n  gcp:compute-read: 3000/60\n", "ccaudit.yaml")
    with pytest.raises(ConfigError, match="no such limit"):
        parse_config("rate_limits:\n  aws:s3: 1/1\n", "ccaudit.yaml")
