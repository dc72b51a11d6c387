"""The scheduled-scan scenario: scan, the fleet drifts, scan again against the baseline.

Between the two scans one AWS VM loses SEV-SNP in the replay (L1 -> L0, a regression) and one
Azure VM gains verified evidence: its guest-collected MAA token appears in the guest evidence
directory and verifies against the pinned issuer and keys (L1 -> L2, an improvement). The second
scan runs from the same ccaudit.yaml (`baseline: latest`, `fail_on_regression: true`): its diff
names both VMs and the regression gate exits 1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from auditor.cli import DEMO_MAA_ISSUER, app
from auditor.runs.store import RunStore
from tests.conftest import DEMO_FLEET

LOSES_SNP = "eu-payments-api"
GAINS_EVIDENCE = "payroll-db-cvm"
INSTANCES = Path("aws/111122223333/eu-west-1/DescribeInstances.json")


def _disable_snp(fleet: Path, name: str) -> None:
    path = fleet / INSTANCES
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    hits = 0
    for reservation in data["Reservations"]:
        for inst in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
            if tags.get("Name") == name:
                assert inst["CpuOptions"]["AmdSevSnp"] == "enabled"
                inst["CpuOptions"]["AmdSevSnp"] = "disabled"
                hits += 1
    assert hits == 1
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def test_scheduled_scan_detects_drift_and_fails_on_regression(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(DEMO_FLEET, fleet)
    guest = tmp_path / "guest-evidence"
    guest.mkdir()
    config = tmp_path / "ccaudit.yaml"
    config.write_text(
        f"""
scope:
  replay: fleet
guest_evidence: guest-evidence
maa:
  issuers: ["{DEMO_MAA_ISSUER}"]
  jwks: fleet/maa-demo-jwks.json
store: store
baseline: latest
outputs:
  markdown: out/summary.md
thresholds:
  fail_on_regression: true
""",
        encoding="utf-8",
    )
    runner = CliRunner()

    first = runner.invoke(app, ["scan", "--config", str(config)])
    # no earlier run of this scope: nothing to regress from; the demo's gaps make it 3
    assert first.exit_code == 3, first.stderr
    assert "gate fail-on-regression: passed" in first.stderr
    assert "first run of this scope" in first.stderr

    _disable_snp(fleet, LOSES_SNP)
    shutil.copy(DEMO_FLEET / "guest-evidence" / f"{GAINS_EVIDENCE}.jwt", guest)

    second = runner.invoke(app, ["scan", "--config", str(config)])
    assert second.exit_code == 1, second.stderr
    assert "gate fail-on-regression: FAILED" in second.stderr
    assert LOSES_SNP in second.stderr

    store = RunStore(tmp_path / "store")
    newest, oldest = store.runs()
    diff = json.loads((newest.path / "diff.json").read_text(encoding="utf-8"))
    assert diff["baseline"]["run_id"] == oldest.run_id
    levels = {c["name"]: c for c in diff["level_changes"]}
    assert set(levels) == {LOSES_SNP, GAINS_EVIDENCE}
    assert (levels[LOSES_SNP]["from"], levels[LOSES_SNP]["to"]) == ("L1", "L0")
    assert levels[LOSES_SNP]["worse"] is True
    assert (levels[GAINS_EVIDENCE]["from"], levels[GAINS_EVIDENCE]["to"]) == ("L1", "L2")
    assert levels[GAINS_EVIDENCE]["worse"] is False
    hypervisor = [
        c for c in diff["party_changes"] if c["name"] == LOSES_SNP and c["party"] == "hypervisor"
    ]
    assert hypervisor and hypervisor[0]["to"] == "CAN_ACCESS" and hypervisor[0]["worse"]
    assert diff["summary"]["regressions"] >= 2  # the level and at least the hypervisor

    # the improvement rests on evidence this tool verified, new since the baseline
    from auditor.run import load_run

    run = load_run(newest.path)
    vm = next(v for v in run.vms if v.name == GAINS_EVIDENCE)
    verified = [
        run.evidence[h]
        for hashes in vm.evidence.values()
        for h in hashes
        if run.evidence[h].verification is not None
    ]
    assert any(e.kind == "maa_token" and e.verification and e.verification.ok for e in verified)

    markdown = (newest.path / "diff.md").read_text(encoding="utf-8")
    assert LOSES_SNP in markdown and GAINS_EVIDENCE in markdown
    assert "Worse than the baseline" in markdown
    # the diff files are sealed into the run's manifest with everything else
    manifest = json.loads((newest.path / "manifest.json").read_text(encoding="utf-8"))
    assert "diff.json" in json.dumps(manifest) and "diff.md" in json.dumps(manifest)
    assert (tmp_path / "out" / "summary.md").is_file()

    history = runner.invoke(app, ["history", LOSES_SNP, "--store", str(store.root), "--json"])
    assert [e["level"] for e in json.loads(history.stdout)] == ["L1", "L0"]
