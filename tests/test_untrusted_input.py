"""Untrusted input never crashes the tool: every file format it reads, fuzzed.

Replay files, guest evidence files (ccaudit-guest-evidence JSON and MAA tokens), rule packs,
ccaudit.yaml, fakecloud.yaml, MAA signing keys and stored runs come from outside. For any
bytes, each loader either returns its result or raises its own typed error naming the file;
inside a scan, a bad file becomes a gap naming it. Never a RecursionError, KeyError or
traceback.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from auditor.api import scan
from auditor.cli import app
from auditor.config import MAX_CONFIG_BYTES, Config, ConfigError, load_config
from auditor.fakecloud.faults import FakeCloudConfigError, FaultConfig, load_fault_config
from auditor.fakecloud.replay import LoadedJson, ReplayError, ReplayStore
from auditor.guest.format import FORMAT, GuestEvidenceError, parse_evidence_file
from auditor.model import AuditRun, Gap
from auditor.providers.guest import import_guest_evidence
from auditor.recording import EvidenceSink
from auditor.rules.loader import MAX_PACK_BYTES, RulePack, RulePackError, load_pack
from auditor.run import load_run
from auditor.verify.maa import load_jwks
from tests.conftest import DEMO_FLEET

DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
DEEP_YAML = b"a: " + b"[" * 5_000 + b"]" * 5_000
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="ccaudit-fuzz-"))


# ----------------------------------------------------------------------------- guest files
@FUZZ
@given(st.binary(max_size=4096))
@example(DEEP_JSON)
@example(b"\xff\xfe\x00")
@example(b'{"format": "ccaudit-guest-evidence/1", "nonce": 5}')
def test_guest_evidence_file_any_bytes(data: bytes) -> None:
    try:
        doc = parse_evidence_file(data)
    except GuestEvidenceError as err:
        assert str(err)
    else:
        assert isinstance(doc, dict) and doc["format"] == FORMAT


def _valid_guest_doc() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "collector_version": "0.1.0",
        "collected_at": "2026-12-01T08:00:00Z",
        "nonce": "ab" * 32,
        "vm": {"provider": "azure", "id": "ffe6e4c3-a5d4-44db-96de-52253ebab8ca"},
        "report_data": "00" * 64,
        "tee": {"provider": "sev_guest", "generation": 1, "outblob": "AAAA"},
        "errors": [],
    }


@FUZZ
@given(
    st.sampled_from(
        ["format", "nonce", "vm", "tee", "tpm", "ccel", "disk_encryption", "report_data", "errors"]
    ),
    json_values,
)
def test_guest_evidence_fields_of_any_type(field: str, value: Any) -> None:
    doc = _valid_guest_doc()
    doc[field] = value
    try:
        parse_evidence_file(json.dumps(doc).encode())
    except GuestEvidenceError as err:
        assert str(err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["x.json", "x.jwt", "x.txt"]),
    st.one_of(
        st.binary(max_size=2048),
        json_values.map(lambda v: json.dumps(v).encode()),
        json_values.map(
            lambda v: (
                b"e30." + base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=") + b".c2ln"
            )
        ),
    ),
)
@example("x.json", DEEP_JSON)
@example("x.jwt", b"e30." + base64.urlsafe_b64encode(DEEP_JSON).rstrip(b"=") + b".c2ln")
def test_guest_evidence_import_turns_bad_files_into_gaps(name: str, data: bytes) -> None:
    folder = _scratch()
    try:
        (folder / name).write_bytes(data)
        gaps = import_guest_evidence(folder, [], EvidenceSink())
    finally:
        shutil.rmtree(folder)
    # no VM was scanned, so every file is a gap, and the gap names it
    assert gaps and all(isinstance(g, Gap) for g in gaps)
    assert all(name in (g.resource or "") or name in g.message for g in gaps)


# ----------------------------------------------------------------------------- rule packs
@FUZZ
@given(st.binary(max_size=2048))
@example(DEEP_YAML)
@example(b"rules: !!python/object/apply:os.system ['true']")
@example(b"\xff\xfe")
def test_rule_pack_any_bytes(data: bytes) -> None:
    folder = _scratch()
    try:
        path = folder / "pack.yaml"
        path.write_bytes(data)
        try:
            pack = load_pack(path)
        except RulePackError as err:
            assert str(path) in str(err)
        else:
            assert isinstance(pack, RulePack)
    finally:
        shutil.rmtree(folder)


@FUZZ
@given(
    st.text(max_size=80),
    st.sampled_from(["hypervisor", "vtpm", "nobody", ""]),
    st.sampled_from(["CAN_ACCESS", "CLAIMED_EXCLUDED", "EXCLUDED", "UNDETERMINED", "maybe"]),
)
@example("vm.technology == ", "hypervisor", "CAN_ACCESS")
@example("(" * 2000 + ")" * 2000, "hypervisor", "CAN_ACCESS")
@example("vm.tpm.present && size(vm.disks) > 0", "vtpm", "CLAIMED_EXCLUDED")
def test_rule_pack_with_any_condition(when: str, party: str, effect: str) -> None:
    folder = _scratch()
    try:
        path = folder / "pack.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "pack": "fuzz",
                    "version": "1",
                    "rules": [
                        {
                            "id": "fuzz.rule",
                            "title": "fuzzed",
                            "party": party,
                            "effect": effect,
                            "when": when,
                            "severity": "low",
                            "rationale": "fuzzed",
                        }
                    ],
                }
            )
        )
        try:
            load_pack(path)
        except RulePackError as err:
            assert str(path) in str(err)
    finally:
        shutil.rmtree(folder)


def test_rule_pack_size_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_PACK_BYTES + 1))
    with pytest.raises(RulePackError, match="larger than"):
        load_pack(path)


# ----------------------------------------------------------------------------- fakecloud.yaml
@FUZZ
@given(st.one_of(st.binary(max_size=1024), json_values.map(lambda v: yaml.safe_dump(v).encode())))
@example(DEEP_YAML)
@example(b"hang: [{cloud: aws, account: 1}]\nthrottle_rate: 2\n")
def test_fault_config_any_bytes(data: bytes) -> None:
    folder = _scratch()
    try:
        (folder / "fakecloud.yaml").write_bytes(data)
        try:
            config = load_fault_config(folder)
        except FakeCloudConfigError as err:
            assert "fakecloud.yaml" in str(err)
        else:
            assert isinstance(config, FaultConfig)
    finally:
        shutil.rmtree(folder)


def test_fault_config_size_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "fakecloud.yaml").write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(FakeCloudConfigError, match="larger than"):
        load_fault_config(tmp_path)


# ----------------------------------------------------------------------------- ccaudit.yaml
@FUZZ
@given(st.one_of(st.binary(max_size=1024), json_values.map(lambda v: yaml.safe_dump(v).encode())))
@example(DEEP_YAML)
@example(b"version: 1\nscope: {aws: {profiles: 5}}\n")
@example(b"\xff\xfe")
def test_config_any_bytes(data: bytes) -> None:
    folder = _scratch()
    try:
        path = folder / "ccaudit.yaml"
        path.write_bytes(data)
        try:
            config = load_config(path)
        except ConfigError as err:
            assert str(path) in str(err)
        else:
            assert isinstance(config, Config)
    finally:
        shutil.rmtree(folder)


def test_config_size_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "ccaudit.yaml"
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)


# ----------------------------------------------------------------------------- replay files
@FUZZ
@given(st.binary(max_size=4096))
@example(DEEP_JSON)
@example(b"NaN")
@example(b'{"a": Infinity}')
def test_replay_file_any_bytes(data: bytes) -> None:
    folder = _scratch()
    try:
        (folder / "aws" / "1").mkdir(parents=True)
        (folder / "aws" / "1" / "DescribeInstances.json").write_bytes(data)
        try:
            loaded = ReplayStore(folder).load_json("aws", "1", "DescribeInstances.json")
        except ReplayError as err:
            assert "aws/1/DescribeInstances.json" in str(err)
        else:
            assert isinstance(loaded, LoadedJson)
    finally:
        shutil.rmtree(folder)


def test_replay_file_size_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_bytes(b"[" + b"0," * 600 + b"0]")
    with pytest.raises(ReplayError, match="limit"):
        ReplayStore(tmp_path, max_file_bytes=1000).load_json("big.json")


# each costs azure-core's status retries (500 is retryable), so only one of each family
GARBAGE = {
    "too-deep": DEEP_JSON,
    "wrong-items": b'{"value": [1, "two", null]}',
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_scan_of_a_replay_with_a_bad_file_is_a_gap_naming_it(kind: str, tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    shutil.copytree(
        DEMO_FLEET / "azure" / "ab4bd4af-8843-4e36-bac0-04fdd527ff09",
        root / "azure" / "ab4bd4af-8843-4e36-bac0-04fdd527ff09",
    )
    shutil.copy(DEMO_FLEET / "replay.json", root / "replay.json")
    rel = "azure/ab4bd4af-8843-4e36-bac0-04fdd527ff09/disks.json"
    (root / rel).write_bytes(GARBAGE[kind])
    run = scan(replay=root)
    assert not run.coverage.complete
    disk_gaps = [g for g in run.coverage.gaps if g.call == "disks.list"]
    assert disk_gaps, run.coverage.gaps
    if kind == "too-deep":  # fakecloud names the replay file it could not read
        assert any("disks.json" in g.message for g in disk_gaps), disk_gaps
    # the VMs themselves were still read (and the scale-set instances, whose disks are not listed)
    assert len([v for v in run.vms if "scale_set" not in v.document["azure"]]) == 4
    assert len(run.vms) == 7


# ----------------------------------------------------------------------------- keys and runs
@FUZZ
@given(st.one_of(st.binary(max_size=2048), json_values.map(lambda v: json.dumps(v).encode())))
@example(DEEP_JSON)
def test_jwks_any_bytes(data: bytes) -> None:
    try:
        doc = load_jwks(data)
    except ValueError as err:
        assert str(err)
    else:
        assert isinstance(doc["keys"], list)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=2048), json_values.map(lambda v: json.dumps(v).encode())))
@example(DEEP_JSON)
def test_stored_run_any_bytes(data: bytes) -> None:
    folder = _scratch()
    try:
        (folder / "result.json").write_bytes(data)
        try:
            run = load_run(folder)
        except ValueError as err:
            assert str(err)
        else:
            assert isinstance(run, AuditRun)
    finally:
        shutil.rmtree(folder)


def test_report_on_a_corrupt_run_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_bytes(DEEP_JSON)
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--format", "json"])
    assert result.exit_code == 2
    assert "cannot read run" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
