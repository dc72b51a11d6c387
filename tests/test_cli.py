"""`ccaudit` end to end: demo, scan exit codes, JSON contract, rule commands, fakecloud serve."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli import app
from auditor.model import Party
from tests.conftest import DEMO_FLEET

runner = CliRunner()

VM_KEYS = {
    "provider",
    "account",
    "region",
    "id",
    "name",
    "instance_type",
    "technology",
    "level",
    "parties",
    "findings",
    "gdpr",
}


def _scan(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["scan", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def demo_json(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("demo") / "r.json"
    code, _, _ = _scan(
        "--replay", str(DEMO_FLEET), "--format", "json", "--output", str(out), "--no-save"
    )
    assert code == 3
    data: dict[str, object] = json.loads(out.read_text())
    return data


def test_json_contract(demo_json: dict[str, object]) -> None:
    assert {"tool", "run_id", "rule_packs", "coverage", "vms"} <= set(demo_json)
    vms = demo_json["vms"]
    assert isinstance(vms, list) and len(vms) == 27
    assert {vm["provider"] for vm in vms} == {"aws", "gcp", "azure", "libvirt"}
    for vm in vms:
        assert set(vm) >= VM_KEYS
        assert set(vm["parties"]) == {p.value for p in Party}
        assert vm["technology"] in {"NONE", "SEV", "SEV_ES", "SEV_SNP", "TDX", "UNKNOWN"}
        assert vm["gdpr"]["provider_can_access"] in {"yes", "no", "undetermined"}
        assert isinstance(vm["gdpr"]["blocking_parties"], list)
        for f in vm["findings"]:
            assert {"rule_id", "status", "reason", "evidence"} <= set(f)
    coverage = demo_json["coverage"]
    assert isinstance(coverage, dict) and coverage["complete"] is False
    packs = demo_json["rule_packs"]
    assert isinstance(packs, list) and len(packs[0]["sha256"]) == 64


def test_demo_fleet_verdicts(demo_json: dict[str, object]) -> None:
    vms = {vm["name"]: vm for vm in demo_json["vms"]}  # type: ignore[attr-defined]
    snp = ["eu-hr-db", "eu-payments-api", "us-payments-api-dr", "an-feature-store"]
    for name in snp:
        assert vms[name]["level"] == "L1", name
        assert vms[name]["parties"]["hypervisor"] == "CLAIMED_EXCLUDED"
    for name in ["eu-payments-batch", "eu-hr-reports-legacy", "us-ops-bastion"]:
        assert vms[name]["level"] == "L0", name
        assert vms[name]["parties"]["hypervisor"] == "CAN_ACCESS"
    # volumes unreadable in 444455556666/eu-west-1: keys undetermined, not passed
    assert vms["an-feature-store"]["parties"]["key_custodian"] == "UNDETERMINED"
    for vm in vms.values():
        assert "EXCLUDED" not in vm["parties"].values()
    gaps = demo_json["coverage"]["gaps"]  # type: ignore[index]
    assert {(g["account"], g["region"], g["call"]) for g in gaps} == {
        ("444455556666", "eu-west-1", "ec2:DescribeVolumes"),
        ("444455556666", "us-east-2", "ec2:DescribeInstances"),
        ("eu-analytics-sandbox", None, "logging.entries.list"),
        ("91a5edc1-d385-4ad9-819c-5ca468501fc2", None, "virtualMachines.listAll"),
    }


def test_demo_fleet_azure_verdicts(demo_json: dict[str, object]) -> None:
    vms = {vm["name"]: vm for vm in demo_json["vms"]}  # type: ignore[attr-defined]
    cvm = vms["payroll-db-cvm"]  # no guest evidence passed to this scan: a claim only
    assert (cvm["technology"], cvm["level"]) == ("SEV_SNP", "L1")
    assert cvm["parties"]["vtpm"] == "CLAIMED_EXCLUDED"
    assert "keys.confidential-disk-key-with-provider" in {f["rule_id"] for f in cvm["findings"]}
    assert vms["payroll-batch-tdx"]["technology"] == "TDX"
    tl = vms["payroll-web-tl"]
    assert tl["level"] == "L0"
    assert "hypervisor.trusted-launch-is-not-confidential" in {f["rule_id"] for f in tl["findings"]}
    jump = vms["payroll-jump-std"]
    assert "agents.run-command" in {f["rule_id"] for f in jump["findings"]}
    assert vms["research-gpu-cvm"]["parties"]["hypervisor"] == "UNDETERMINED"


def test_demo_fleet_gcp_verdicts(demo_json: dict[str, object]) -> None:
    vms = {vm["name"]: vm for vm in demo_json["vms"]}  # type: ignore[attr-defined]
    snp = vms["claims-db-snp"]  # created with confidentialInstanceType alone
    assert (snp["technology"], snp["level"]) == ("SEV_SNP", "L1")
    sev = vms["claims-api-sev"]
    # Google's launch log passed, but SEV has no memory integrity: never above SNP or TDX
    assert sev["technology"] == "SEV" and sev["level"] == "L0"
    assert sev["parties"]["hypervisor"] == "CAN_ACCESS"
    assert sev["parties"]["attestation_service"] == "CLAIMED_EXCLUDED"
    rules = {f["rule_id"] for f in sev["findings"]}
    assert {
        "hypervisor.sev-without-integrity",
        "control-plane.live-migration",
        "vtpm.ek-names-other-instance",
    } <= rules
    assert vms["claims-etl-tdx"]["technology"] == "TDX"
    plain = vms["claims-batch-plain"]
    assert plain["level"] == "L0"
    assert "agents.serial-console" in {f["rule_id"] for f in plain["findings"]}
    assert vms["sandbox-future-cvm"]["technology"] == "UNKNOWN"
    assert vms["sandbox-future-cvm"]["parties"]["hypervisor"] == "UNDETERMINED"
    assert vms["sandbox-notebook-sev"]["parties"]["attestation_service"] == "UNDETERMINED"


def test_fail_below_wins_over_incomplete() -> None:
    code, out, err = _scan("--replay", str(DEMO_FLEET), "--fail-below", "L1", "--no-save")
    assert code == 1
    assert "Coverage gaps" in out and "ec2:DescribeInstances" in out
    assert "collection incomplete" in err


def test_incomplete_collection_exits_3_when_gate_passes() -> None:
    code, out, _ = _scan("--replay", str(DEMO_FLEET), "--fail-below", "L0", "--no-save")
    assert code == 3
    assert "UnauthorizedOperation" in out


def test_complete_scan_exits_0(tmp_path: Path) -> None:
    replay = tmp_path / "replay"
    shutil.copytree(DEMO_FLEET / "aws" / "111122223333", replay / "aws" / "111122223333")
    run_dir = tmp_path / "run"
    code, out, err = _scan("--replay", str(replay), "--run-dir", str(run_dir))
    assert code == 0, err
    assert "Coverage: complete" in out
    assert (run_dir / "result.json").is_file()
    assert (
        run_dir / "raw" / "aws" / "111122223333" / "eu-west-1" / "DescribeInstances.json"
    ).is_file()
    code, _, _ = _scan("--replay", str(replay), "--no-save", "--fail-below", "L1")
    assert code == 1


def test_default_run_dir_is_named_by_run_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCAUDIT_HOME", str(tmp_path / "store"))  # the default run store
    code, _, _ = _scan("--replay", str(DEMO_FLEET))
    assert code == 3
    (run_dir,) = (tmp_path / "store" / "runs").iterdir()
    data = json.loads((run_dir / "result.json").read_text())
    assert data["run_id"] == run_dir.name


def test_bad_rule_pack_exits_2_with_file_and_rule(tmp_path: Path) -> None:
    pack = tmp_path / "bad.yaml"
    pack.write_text(
        "pack: bad\nrules:\n  - {id: my.rule, title: broken, party: vtpm, effect: CAN_ACCESS,"
        " when: 'vm.tpm.present ==', rationale: r r}\n"
    )
    code, _, err = _scan("--replay", str(DEMO_FLEET), "--rules", str(pack), "--no-save")
    assert code == 2
    assert "bad.yaml" in err and "my.rule" in err and "column" in err


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    code, _, err = _scan("--replay", str(tmp_path / "nope"), "--no-save")
    assert code == 2 and "not found" in err
    code, _, err = _scan("--replay", str(tmp_path), "--no-save")
    assert code == 2 and "not a replay directory" in err
    code, _, _ = _scan("--fail-below", "L9")
    assert code == 2
    code, _, _ = _scan("--provider", "oracle")
    assert code == 2


def test_demo_writes_run(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    result = runner.invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    data = json.loads((out / "result.json").read_text())
    assert len(data["vms"]) == 27
    assert "would exit 3" in result.stderr
    # the demo passes its guest evidence: a demo-signed MAA token for payroll-db-cvm
    cvm = next(vm for vm in data["vms"] if vm["name"] == "payroll-db-cvm")
    assert cvm["document"]["attestation"]["token"]["verified"] is True
    assert (cvm["level"], cvm["parties"]["attestation_service"]) == ("L2", "CLAIMED_EXCLUDED")
    assert "eu-hr-db" in result.stdout


def test_rules_commands(tmp_path: Path) -> None:
    listed = runner.invoke(app, ["rules", "list", "--format", "json"])
    assert listed.exit_code == 0
    ids = {r["id"] for r in json.loads(listed.stdout)}
    assert {"hypervisor.snp-or-tdx-claimed", "keys.provider-held"} <= ids
    good = tmp_path / "good.yaml"
    good.write_text(
        "pack: mine\nrules:\n  - {id: mine.one, title: region check, party: control_plane,"
        " effect: CAN_ACCESS, when: 'vm.region.startsWith(\"us-\")', rationale: our rule}\n"
    )
    ok = runner.invoke(app, ["rules", "validate", str(good)])
    assert ok.exit_code == 0 and "1 rules" in ok.stdout
    fields = runner.invoke(app, ["rules", "fields"])
    assert fields.exit_code == 0 and "disks" in fields.stdout


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("ccaudit ")


def test_fakecloud_serve_and_scan_with_endpoint_url(tmp_path: Path) -> None:
    """`ccaudit fakecloud serve` in its own process; `scan --endpoint-url` against it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor.cli", "fakecloud", "serve", str(DEMO_FLEET)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fakecloud serving"), line + (
            proc.stderr.read() if proc.stderr else ""
        )
        endpoint = line.strip().rsplit(" ", 1)[-1]
        assert endpoint.startswith("http://127.0.0.1:")
        printed = [proc.stdout.readline().strip() for _ in range(3)]
        command = next(c for c in printed if c.startswith("AWS_ACCESS_KEY_ID=111122223333"))
        # run exactly what it printed: VAR=value words, then the ccaudit command
        words = shlex.split(command)
        env = {**os.environ}
        while "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        assert words[:2] == ["ccaudit", "scan"]
        assert "--regions" in words and "eu-west-1,us-east-2" in words
        done = subprocess.run(
            [sys.executable, "-m", "auditor.cli", *words[1:], "--format", "json", "--no-save"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert {vm["region"] for vm in data["vms"]} == {"eu-west-1", "us-east-2"}
        assert len(data["vms"]) == 6
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bad_fakecloud_config_in_replay_exits_2(tmp_path: Path) -> None:
    replay = tmp_path / "replay"
    shutil.copytree(DEMO_FLEET / "aws", replay / "aws")
    (replay / "fakecloud.yaml").write_text("page_size: 0\n")
    code, _, err = _scan("--replay", str(replay), "--no-save")
    assert code == 2
    assert "fakecloud.yaml" in err and "page_size" in err


def test_signed_bundle_verify_tamper_and_reverify(tmp_path: Path) -> None:
    key = tmp_path / "audit.key"
    made = runner.invoke(app, ["keys", "create", str(key)])
    assert made.exit_code == 0 and "BEGIN PUBLIC KEY" in made.stdout
    runs = tmp_path / "runs"
    run_dir = runs / "one"
    replay = tmp_path / "replay"
    shutil.copytree(DEMO_FLEET / "aws" / "111122223333", replay / "aws" / "111122223333")
    code, _, err = _scan(
        "--replay",
        str(replay),
        "--run-dir",
        str(run_dir),
        "--signing-key",
        str(key),
        "--format",
        "json,csv",
    )
    assert code == 0, err
    assert (run_dir / "manifest.sig").is_file() and (run_dir / "csv" / "vms.csv").is_file()
    pub = tmp_path / "audit.key.pub"
    ok = runner.invoke(app, ["bundle", "verify", str(run_dir), "--public-key", str(pub)])
    assert ok.exit_code == 0, ok.stdout
    again = runner.invoke(app, ["reverify", str(run_dir)])
    assert again.exit_code == 0 and "reproduced" in again.stdout
    other = tmp_path / "other.key"
    runner.invoke(app, ["keys", "create", str(other)])
    wrong = runner.invoke(
        app, ["bundle", "verify", str(run_dir), "--public-key", str(tmp_path / "other.key.pub")]
    )
    assert wrong.exit_code == 1 and "FAIL" in wrong.stdout
    target = next((run_dir / "raw").rglob("DescribeVolumes.json"))
    data = bytearray(target.read_bytes())
    data[10] ^= 1
    target.write_bytes(bytes(data))
    tampered = runner.invoke(app, ["bundle", "verify", str(run_dir), "--json"])
    assert tampered.exit_code == 1
    report = json.loads(tampered.stdout)
    assert any("DescribeVolumes.json" in p["path"] for p in report["problems"])
