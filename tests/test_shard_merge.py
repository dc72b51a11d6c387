"""`--shard K/N` and `ccaudit merge`: N shard runs of the demo fleet merged equal one run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.api import ScanError, scan
from auditor.cli import DEMO_MAA_ISSUER, app
from auditor.model import AuditRun, Evidence, result_bytes
from auditor.recording import keep_evidence
from auditor.run import RESULT_FILE, load_run
from auditor.runs.bundle import verify_bundle, write_manifest
from auditor.runs.merge import MERGE_FILE, MergeError, merge_runs
from auditor.runs.reverify import compare_runs
from auditor.runs.shard import Shard, ShardError, parse_shard, shard_of
from auditor.runs.spool import StoredVMs, vm_order
from benchmarks.gen_fleet import generate
from tests.conftest import DEMO_FLEET

GUEST = DEMO_FLEET / "guest-evidence"
JWKS = DEMO_FLEET / "maa-demo-jwks.json"
SHARDS = 4


def _scan(run_dir: Path | None, shard: str | None = None, **extra: object) -> AuditRun:
    return scan(
        replay=DEMO_FLEET,
        guest_evidence=GUEST,
        maa_issuers=[DEMO_MAA_ISSUER],
        maa_jwks=JWKS,
        run_dir=run_dir,
        shard=shard,
        **extra,  # type: ignore[arg-type]
    )


def _gap_keys(run: AuditRun) -> set[tuple[object, ...]]:
    return {
        (g.provider, g.account, g.region, g.call, g.code, g.resource) for g in run.coverage.gaps
    }


def _scope_keys(run: AuditRun) -> list[tuple[object, ...]]:
    return sorted(
        (c.provider, c.account, c.region or "", c.status, c.vms, c.calls)
        for c in run.coverage.scopes
    )


@pytest.fixture(scope="module")
def shard_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditRun, list[Path]]:
    base = tmp_path_factory.mktemp("shards")
    whole = _scan(base / "whole")
    dirs = []
    for k in range(1, SHARDS + 1):
        target = base / f"shard-{k}"
        run = _scan(target, f"{k}/{SHARDS}")
        write_manifest(target, run)
        dirs.append(target)
    return whole, dirs


# ----------------------------------------------------------------------------- shard choice
@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "a/b", "2", "-1/4", "1/4/2", "", "1/99999"])
def test_bad_shard_spec_is_refused_with_the_value(text: str) -> None:
    with pytest.raises(ShardError) as err:
        parse_shard(text)
    assert repr(text) in str(err.value)


def test_shard_spec_parses() -> None:
    assert parse_shard(" 2 / 4 ") == Shard(2, 4)
    assert parse_shard("1/1").label == "1/1"


def test_every_scope_is_in_exactly_one_shard_whatever_the_order() -> None:
    keys = [("aws", f"{a:012d}", r) for a in range(30) for r in ("eu-west-1", "us-east-2")]
    keys += [("gcp", f"project-{p}", None) for p in range(20)]
    shuffled = list(keys)
    random.Random(7).shuffle(shuffled)
    owners = {k: shard_of(*k, 5) for k in keys}
    assert {k: shard_of(*k, 5) for k in shuffled} == owners
    for key in keys:
        assert sum(Shard(i, 5).owns(*key) for i in range(1, 6)) == 1
    # roughly balanced: no shard is empty with 80 scopes over 5 shards
    assert set(owners.values()) == {1, 2, 3, 4, 5}


def test_shard_assignment_is_stable_across_releases() -> None:
    # a scope that moved shard between versions would be read twice or never by mixed fleets
    assert shard_of("aws", "111122223333", "eu-west-1", 4) == _pinned("aws|111122223333|eu-west-1")
    assert shard_of("gcp", "eu-payroll-prod", None, 4) == _pinned("gcp|eu-payroll-prod|")


def _pinned(key: str) -> int:
    return {"aws|111122223333|eu-west-1": 3, "gcp|eu-payroll-prod|": 1}[key]


def test_scan_refuses_bad_shard_before_any_call() -> None:
    with pytest.raises(ScanError, match="--shard"):
        scan(replay=DEMO_FLEET, shard="3/2")


# ----------------------------------------------------------------------------- shard runs
def test_shard_runs_split_the_scopes_without_overlap(
    shard_runs: tuple[AuditRun, list[Path]],
) -> None:
    whole, dirs = shard_runs
    runs = [load_run(d) for d in dirs]
    assert [r.scope.shard for r in runs] == [f"{k}/{SHARDS}" for k in range(1, SHARDS + 1)]
    seen = [(c.provider, c.account, c.region) for r in runs for c in r.coverage.scopes]
    assert len(seen) == len(set(seen))
    assert sorted(seen, key=str) == sorted(
        ((c.provider, c.account, c.region) for c in whole.coverage.scopes), key=str
    )
    assert sum(len(r.vms) for r in runs) == len(whole.vms)
    assert sum(1 for r in runs if r.vms) >= 2  # the demo fleet really is split


def test_four_shards_merged_equal_one_unsharded_run(
    shard_runs: tuple[AuditRun, list[Path]], tmp_path: Path
) -> None:
    whole, dirs = shard_runs
    merged = merge_runs(dirs, tmp_path / "merged")
    run = merged.run
    # same VMs, levels, party statuses, findings and evidence hashes per VM, same rule packs
    assert compare_runs(whole, run) == []
    assert [vm.key for vm in run.vms] == [vm.key for vm in whole.vms]
    assert set(run.evidence) == set(whole.evidence)
    assert _scope_keys(run) == _scope_keys(whole)
    assert _gap_keys(run) == _gap_keys(whole)
    assert run.coverage.complete is whole.coverage.complete
    assert run.scope.shard is None
    assert run.scope.providers == whole.scope.providers
    assert run.scope.accounts == whole.scope.accounts
    # the guest token matched a VM in one shard only: no spurious NoMatchingVM gap survives
    assert not any(g.code == "NoMatchingVM" for g in run.coverage.gaps)
    # one sealed run directory, readable and replayable
    assert load_run(tmp_path / "merged").run_id == run.run_id
    report = verify_bundle(tmp_path / "merged")
    assert report.ok, report.as_dict()
    record = json.loads((tmp_path / "merged" / MERGE_FILE).read_text())
    assert sorted(m["shard"] for m in record["merged_from"]) == [
        f"{k}/{SHARDS}" for k in range(1, SHARDS + 1)
    ]
    assert all(m["manifest_sha256"] for m in record["merged_from"])
    replayed = scan(replay=tmp_path / "merged")
    assert [vm.key for vm in replayed.vms] == [vm.key for vm in whole.vms]


def test_missing_shard_is_a_gap_not_a_complete_run(
    shard_runs: tuple[AuditRun, list[Path]], tmp_path: Path
) -> None:
    _, dirs = shard_runs
    run = merge_runs(dirs[:-1], tmp_path / "partial").run
    missing = [g for g in run.coverage.gaps if g.code == "MissingShard"]
    assert [g.message.split()[1] for g in missing] == [f"{SHARDS}/{SHARDS}"]
    assert run.coverage.complete is False


def test_overlapping_runs_are_refused(
    shard_runs: tuple[AuditRun, list[Path]], tmp_path: Path
) -> None:
    _, dirs = shard_runs
    unsharded = tmp_path / "whole"
    run = _scan(unsharded)
    write_manifest(unsharded, run)
    with pytest.raises(MergeError, match="overlapping scopes"):
        merge_runs([dirs[0], unsharded], tmp_path / "out1")
    with pytest.raises(MergeError, match="given twice"):
        merge_runs([dirs[0], dirs[0]], tmp_path / "out2")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


def test_different_rule_packs_are_refused(
    shard_runs: tuple[AuditRun, list[Path]], tmp_path: Path
) -> None:
    _, dirs = shard_runs
    pack = tmp_path / "extra.yaml"
    pack.write_text(
        "pack: extra\nversion: '1'\nrules:\n"
        "  - id: extra.region\n    title: Region recorded\n    party: control_plane\n"
        "    effect: CLAIMED_EXCLUDED\n    when: vm.region == 'nowhere'\n    severity: low\n"
        "    rationale: test pack\n",
        encoding="utf-8",
    )
    other = tmp_path / "other"
    _scan(other, f"{SHARDS}/{SHARDS}", rules=[pack])
    with pytest.raises(MergeError, match="different rule packs"):
        merge_runs([*dirs[:-1], other], tmp_path / "out")


def test_tampered_shard_is_refused(shard_runs: tuple[AuditRun, list[Path]], tmp_path: Path) -> None:
    _, dirs = shard_runs
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dirs[0], copy)
    raw = sorted((copy / "raw").rglob("*.json"))[-1]
    raw.write_text(raw.read_text() + " ")
    with pytest.raises(MergeError, match="manifest does not match"):
        merge_runs([copy, *dirs[1:]], tmp_path / "out")


def test_cli_shard_and_merge(shard_runs: tuple[AuditRun, list[Path]], tmp_path: Path) -> None:
    whole, dirs = shard_runs
    runner = CliRunner()
    bad = runner.invoke(app, ["scan", "--replay", str(DEMO_FLEET), "--shard", "5/4", "--no-save"])
    assert bad.exit_code == 2
    assert "5/4" in bad.output
    out = tmp_path / "merged"
    result = runner.invoke(app, ["merge", *map(str, dirs), "--output", str(out)])
    # the demo fleet has permission gaps, so the merged run is incomplete: exit 3
    assert result.exit_code == 3, result.output
    merged = load_run(out)
    assert [vm.key for vm in merged.vms] == [vm.key for vm in whole.vms]
    assert verify_bundle(out).ok
    refused = runner.invoke(app, ["merge", str(dirs[0]), str(dirs[0]), "--output", str(out)])
    assert refused.exit_code == 2


# ----------------------------------------------------------------------------- examples
SCALE_OUT = DEMO_FLEET.parent / "scale-out"


def test_kubernetes_indexed_job_runs_every_shard() -> None:
    import yaml

    job = yaml.safe_load((SCALE_OUT / "kubernetes" / "scan-shards.yaml").read_text())
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    container = spec["template"]["spec"]["containers"][0]
    shards = int(next(e["value"] for e in container["env"] if e["name"] == "SHARDS"))
    assert spec["completions"] == spec["parallelism"] == shards
    script = container["args"][0]
    assert "JOB_COMPLETION_INDEX + 1" in script and '--shard "$K/$SHARDS"' in script
    merge = yaml.safe_load((SCALE_OUT / "kubernetes" / "merge-job.yaml").read_text())
    assert "ccaudit merge" in merge["spec"]["template"]["spec"]["containers"][0]["args"][0]


def test_github_matrix_runs_every_shard_then_merges() -> None:
    import yaml

    flow = yaml.safe_load((SCALE_OUT / "github-actions" / "ccaudit-sharded.yml").read_text())
    shards = int(flow["env"]["SHARDS"])
    assert flow["jobs"]["scan"]["strategy"]["matrix"]["shard"] == list(range(1, shards + 1))
    scan_steps = " ".join(str(s.get("run", "")) for s in flow["jobs"]["scan"]["steps"])
    assert '--shard "${{ matrix.shard }}/$SHARDS"' in scan_steps
    merge = flow["jobs"]["merge"]
    assert merge["needs"] == "scan"
    assert "ccaudit merge" in " ".join(str(s.get("run", "")) for s in merge["steps"])


def test_store_compares_a_shard_only_with_the_same_shard() -> None:
    from auditor.model import Scope
    from auditor.runs.store import scope_key

    one = Scope(providers=["aws"], accounts=["111122223333"], shard="1/4")
    two = one.model_copy(update={"shard": "2/4"})
    whole = one.model_copy(update={"shard": None})
    assert len({scope_key(one), scope_key(two), scope_key(whole)}) == 3
    assert "shard" not in scope_key(whole)  # unsharded runs keep the keys they always had


@pytest.mark.parametrize("order", ["given", "reversed"])
def test_merge_writes_what_merging_the_whole_runs_gives(tmp_path: Path, order: str) -> None:
    # the merge reads each shard's VMs and evidence from its result.json as it writes (never
    # the merged run whole); the oracle merges the shards held whole, as the merge used to.
    # The generated fleet's Compute Engine clones share identity items across projects, so
    # items are in several shards, read in different places, verified by different VMs.
    replay = tmp_path / "fleet"
    generate(replay, 120, per_scope=6, page_size=4)
    dirs = [tmp_path / f"shard{k}" for k in (1, 2, 3)]
    for k, run_dir in enumerate(dirs, start=1):
        scan(replay=replay, run_dir=run_dir, shard=f"{k}/3", concurrency=4, processes=1)
    if order == "reversed":
        dirs.reverse()
    result = merge_runs(dirs, tmp_path / "merged", run_id="merged")
    written = (tmp_path / "merged" / RESULT_FILE).read_bytes()

    wholes = [AuditRun.model_validate_json((d / RESULT_FILE).read_bytes()) for d in dirs]
    evidence: dict[str, Evidence] = {}
    for whole in wholes:
        for item in whole.evidence.values():
            keep_evidence(evidence, item)
    vms = sorted((vm for whole in wholes for vm in whole.vms), key=vm_order)
    shell = AuditRun.model_validate_json(written)
    oracle = shell.model_copy(update={"vms": vms, "evidence": dict(sorted(evidence.items()))})
    assert written == result_bytes(oracle)
    assert len(vms) == 120

    shared = [sha for sha in evidence if sum(sha in whole.evidence for whole in wholes) > 1]
    assert shared  # what makes the comparison mean something
    first_given = {
        sha: next(w.evidence[sha] for w in wholes if sha in w.evidence) for sha in shared
    }
    kept_later = [sha for sha in shared if evidence[sha].account != first_given[sha].account]
    if order == "reversed":
        assert kept_later  # the copy kept is not simply the first shard's
    assert isinstance(result.run.vms, StoredVMs) and result.run.vms.in_run_order
    assert result.run.vms == vms
