"""The AWS provider through real boto3, over HTTP, against fakecloud on 127.0.0.1."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditor.engine import Engine
from auditor.fakecloud import FakeCloud, FaultConfig
from auditor.model import AuditRun, Level, Party, Scope, Source, Status, Technology, canonical_json
from auditor.providers.aws import AwsProvider, AwsTarget, parse_timestamp
from auditor.rules.loader import load_packs
from auditor.run import load_run, run_audit
from tests.fakecloud.helpers import ACCOUNT, INSTANCE, REGION, fixture, standard_replay, write_json

BASE = f"aws/{ACCOUNT}/{REGION}"


def _replay(root: Path, instances: dict[str, Any] | None = None) -> Path:
    """Every AWS fixture in its replay place; optionally other DescribeInstances data."""
    standard_replay(root)
    if instances is not None:
        write_json(root, f"{BASE}/DescribeInstances.json", instances)
    return root


def _audit(
    root: Path,
    faults: FaultConfig | None = None,
    run_dir: Path | None = None,
    regions: list[str] | None = None,
) -> tuple[AuditRun, FakeCloud]:
    with FakeCloud(root, faults=faults) as cloud:
        provider = AwsProvider(
            [AwsTarget(access_key_id=ACCOUNT, secret_access_key="x")],
            regions=regions or [REGION],
            endpoint_url=cloud.endpoint,
        )
        run = run_audit([provider], Engine(load_packs()), Scope(providers=["aws"]), run_dir=run_dir)
    return run, cloud


def _ops(cloud: FakeCloud) -> list[str]:
    return [r.operation or "" for r in cloud.request_log]


def test_snp_instance_collected_with_every_fact(tmp_path: Path) -> None:
    run, _ = _audit(_replay(tmp_path))
    assert run.coverage.complete, run.coverage.gaps
    (vm,) = run.vms
    assert (vm.provider, vm.account, vm.region, vm.id) == ("aws", ACCOUNT, REGION, INSTANCE)
    assert vm.technology is Technology.SEV_SNP
    doc = vm.document
    assert doc["cc"]["raw_flag"] == "enabled"
    assert doc["platform"]["snp_supported"] is True
    assert doc["boot"]["mode"] == "uefi"
    assert doc["tpm"]["present"] is True
    ek = doc["tpm"]["ek"]
    assert ek["source"] == "control_plane" and ek["certificate"] is False
    assert ek["valid"] is True and ek["algorithm"] == "RSA-2048"
    assert all(d["encrypted"] and d["custody"] == "provider_kms" for d in doc["disks"])
    assert doc["disks"]
    # verdicts: claimed by the control plane only
    assert vm.level is Level.L1
    assert vm.parties[Party.HYPERVISOR] is Status.CLAIMED_EXCLUDED
    assert vm.parties[Party.KEY_CUSTODIAN] is Status.CAN_ACCESS
    assert vm.parties[Party.VTPM] is Status.CAN_ACCESS
    assert Status.EXCLUDED not in vm.parties.values()


def test_evidence_is_raw_control_plane_data_with_recomputable_hash(tmp_path: Path) -> None:
    run, _ = _audit(_replay(tmp_path))
    vm = run.vms[0]
    (sha,) = vm.evidence["technology"]
    ev = run.evidence[sha]
    assert ev.source is Source.CONTROL_PLANE and ev.call == "ec2:DescribeInstances"
    assert ev.raw["CpuOptions"]["AmdSevSnp"] == "enabled"
    assert hashlib.sha256(canonical_json(ev.raw)).hexdigest() == sha
    ek_shas = vm.evidence["tpm"]
    assert any(run.evidence[s].kind == "ek_public_key" for s in ek_shas)
    by_rule = {f.rule_id: f for f in vm.findings}
    for rule_id in (
        "hypervisor.snp-or-tdx-claimed",
        "keys.provider-held",
        "vtpm.ek-control-plane-only",
    ):
        assert by_rule[rule_id].evidence, rule_id
    # findings that rest on the absence of hardware evidence cite nothing
    assert by_rule["firmware.provider-unverified"].evidence == []
    assert vm.document["attestation"]["provider_verdict"] == "none"
    assert vm.parties[Party.ATTESTATION_SERVICE] is Status.CAN_ACCESS
    for finding in vm.findings:
        assert all(s in run.evidence for s in finding.evidence)


def test_absent_amdsevsnp_means_disabled(tmp_path: Path) -> None:
    run, _ = _audit(_replay(tmp_path, fixture("aws_describe_instances_non_snp.json")))
    (vm,) = run.vms
    assert vm.technology is Technology.NONE
    assert vm.level is Level.L0
    assert vm.parties[Party.HYPERVISOR] is Status.CAN_ACCESS


def test_unknown_snp_value_is_undetermined_not_none(tmp_path: Path) -> None:
    data = fixture("aws_describe_instances_snp.json")
    data["Reservations"][0]["Instances"][0]["CpuOptions"]["AmdSevSnp"] = "enabled"
    root = _replay(tmp_path, data)
    # a future enum value: patch the replay file directly (fakecloud validates enums loosely)
    path = root / BASE / "DescribeInstances.json"
    path.write_text(path.read_text().replace('"enabled"', '"enabled-v2"'))
    run, _ = _audit(root)
    (vm,) = run.vms
    assert vm.technology is Technology.UNKNOWN
    assert vm.parties[Party.HYPERVISOR] is Status.UNDETERMINED


def _many(count: int) -> dict[str, Any]:
    template = fixture("aws_describe_instances_snp.json")["Reservations"][0]
    out = []
    for n in range(count):
        res = copy.deepcopy(template)
        res["ReservationId"] = f"r-{n:017x}"
        inst = res["Instances"][0]
        inst["InstanceId"] = f"i-{n:017x}"
        inst["TpmSupport"] = None
        del inst["TpmSupport"]
        out.append(res)
    return {"Reservations": out}


def test_pagination_across_pages(tmp_path: Path) -> None:
    run, cloud = _audit(_replay(tmp_path, _many(7)), faults=FaultConfig(page_size=2))
    assert len(run.vms) == 7
    assert _ops(cloud).count("DescribeInstances") == 4
    assert run.coverage.complete


def test_error_file_gives_gap_and_undetermined_party(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    (root / BASE / "DescribeVolumes.json").unlink()
    write_json(
        root,
        f"{BASE}/DescribeVolumes.error.json",
        {"status": 403, "code": "UnauthorizedOperation", "message": "no ec2:DescribeVolumes"},
    )
    run, _ = _audit(root)
    assert not run.coverage.complete
    (gap,) = run.coverage.gaps
    assert (gap.call, gap.code, gap.region) == (
        "ec2:DescribeVolumes",
        "UnauthorizedOperation",
        REGION,
    )
    (vm,) = run.vms
    assert "disks" not in vm.document
    keys = vm.party_status[Party.KEY_CUSTODIAN]
    assert keys.status is Status.UNDETERMINED
    assert "ec2:DescribeVolumes failed" in keys.reason
    assert run.coverage.scopes[0].status == "partial"


def test_failed_region_is_listed_and_others_collected(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    write_json(
        root,
        f"aws/{ACCOUNT}/eu-west-1/DescribeInstances.error.json",
        {"status": 403, "code": "UnauthorizedOperation", "message": "explicit deny"},
    )
    run, _ = _audit(root, regions=[REGION, "eu-west-1"])
    assert len(run.vms) == 1
    failed = [s for s in run.coverage.scopes if s.status == "failed"]
    assert [(s.region, s.errors[0].affects) for s in failed] == [("eu-west-1", "scope")]


def test_throttling_is_absorbed_by_sdk_retries(tmp_path: Path) -> None:
    run, cloud = _audit(_replay(tmp_path), faults=FaultConfig(throttle_first=1))
    assert run.coverage.complete, run.coverage.gaps
    assert len(run.vms) == 1 and run.vms[0].level is Level.L1
    statuses = [r.status for r in cloud.request_log if r.operation == "DescribeInstances"]
    assert statuses[0] == 503 and statuses[-1] == 200


def test_missing_ek_is_a_gap_but_vtpm_stays_provider(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    (root / BASE / "GetInstanceTpmEkPub" / f"{INSTANCE}.json").unlink()
    run, _ = _audit(root)
    (vm,) = run.vms
    assert "ek" not in vm.document["tpm"]
    assert [g.call for g in vm.gaps] == ["ec2:GetInstanceTpmEkPub"]
    assert vm.parties[Party.VTPM] is Status.CAN_ACCESS  # NitroTPM is the provider's either way


def test_malformed_ek_key_is_recorded_not_trusted(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    ek = fixture("aws_get_instance_tpm_ek_pub.json")
    ek["KeyValue"] = "bm90IGEga2V5"
    write_json(root, f"{BASE}/GetInstanceTpmEkPub/{INSTANCE}.json", ek)
    run, _ = _audit(root)
    ek_doc = run.vms[0].document["tpm"]["ek"]
    assert ek_doc["valid"] is False and "does not parse" in ek_doc["error"]


def test_volume_missing_from_response_makes_keys_undetermined(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    write_json(root, f"{BASE}/DescribeVolumes.json", {"Volumes": []})
    run, _ = _audit(root)
    (vm,) = run.vms
    assert vm.parties[Party.KEY_CUSTODIAN] is Status.UNDETERMINED
    assert {g.code for g in vm.gaps} == {"NotReturned"}


def test_unencrypted_volume_is_a_veto(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    vols = fixture("aws_describe_volumes_encrypted.json")
    vols["Volumes"][0]["Encrypted"] = False
    vols["Volumes"][0].pop("KmsKeyId", None)
    write_json(root, f"{BASE}/DescribeVolumes.json", vols)
    run, _ = _audit(root)
    keys = run.vms[0].party_status[Party.KEY_CUSTODIAN]
    assert keys.status is Status.CAN_ACCESS and "keys.unencrypted-disk" in keys.rules


def test_terminated_instances_are_skipped(tmp_path: Path) -> None:
    data = _many(2)
    data["Reservations"][1]["Instances"][0]["State"] = {"Code": 48, "Name": "terminated"}
    run, _ = _audit(_replay(tmp_path, data))
    assert [vm.id for vm in run.vms] == [f"i-{0:017x}"]


def test_unknown_profile_is_a_gap_not_a_crash(tmp_path: Path) -> None:
    provider = AwsProvider([AwsTarget(profile="no-such-profile")], regions=[REGION])
    run = run_audit([provider], Engine(load_packs()), Scope(providers=["aws"]))
    assert run.vms == []
    (gap,) = run.coverage.gaps
    assert gap.code == "ProfileNotFound" and gap.affects == "scope"
    assert not run.coverage.complete


def test_regions_from_describe_regions(tmp_path: Path) -> None:
    root = _replay(tmp_path)
    write_json(root, f"aws/{ACCOUNT}/eu-west-1/DescribeInstances.json", {"Reservations": []})
    with FakeCloud(root) as cloud:
        provider = AwsProvider(
            [AwsTarget(access_key_id=ACCOUNT, secret_access_key="x")], endpoint_url=cloud.endpoint
        )
        run = run_audit([provider], Engine(load_packs()), Scope(providers=["aws"]))
    assert sorted(s.region or "" for s in run.coverage.scopes) == ["eu-west-1", REGION]
    assert run.coverage.complete


def test_run_directory_replays_to_the_same_result(tmp_path: Path) -> None:
    first_dir = tmp_path / "run1"
    first, _ = _audit(_replay(tmp_path / "replay"), run_dir=first_dir)
    raw = first_dir / "raw"
    assert (raw / BASE / "DescribeInstances.json").is_file()
    assert (raw / BASE / "GetInstanceTpmEkPub" / f"{INSTANCE}.json").is_file()
    second, _ = _audit(raw)
    assert [v.model_dump(exclude={"findings"}) for v in first.vms] == [
        v.model_dump(exclude={"findings"}) for v in second.vms
    ]
    assert set(first.evidence) == set(second.evidence)
    stored = load_run(first_dir)
    assert stored == first
    assert json.loads((first_dir / "result.json").read_text())["run_id"] == first.run_id


def test_recorded_errors_replay_as_errors(tmp_path: Path) -> None:
    from auditor.api import scan
    from tests.conftest import DEMO_FLEET

    run = scan(replay=DEMO_FLEET, run_dir=tmp_path / "run")
    again = scan(replay=tmp_path / "run")
    assert run.coverage.gaps and [g.model_dump() for g in run.coverage.gaps] == [
        g.model_dump() for g in again.coverage.gaps
    ]
    assert [(v.id, v.level, v.parties) for v in run.vms] == [
        (v.id, v.level, v.parties) for v in again.vms
    ]


def test_an_ami_missing_from_the_region_loses_only_its_own_facts(tmp_path: Path) -> None:
    """EC2 fails a whole DescribeImages when one id does not exist (InvalidAMIID.NotFound):
    the id is dropped, the call repeated, and only the VM that used it has a gap."""
    many = _many(2)
    ghost = "ami-0ffffffffffffffff"
    many["Reservations"][1]["Instances"][0]["ImageId"] = ghost
    root = _replay(tmp_path, many)
    run, cloud = _audit(root, run_dir=tmp_path / "run")
    first, second = sorted(run.vms, key=lambda v: v.id)
    assert "image" in first.document and first.document["image"]["id"]
    assert "image" not in second.document
    (gap,) = [g for g in second.gaps if g.call == "ec2:DescribeImages"]
    assert gap.code == "NotFound" and gap.resource == ghost
    assert "InvalidAMIID.NotFound" in gap.message and "not shared with this account" in gap.message
    assert not [g for g in first.gaps if g.call == "ec2:DescribeImages"]
    assert _ops(cloud).count("DescribeImages") == 2  # once with both ids, once without the ghost
    raw = tmp_path / "run" / "raw" / BASE
    assert (raw / "DescribeImages.json").is_file()
    assert not (raw / "DescribeImages.error.json").exists()  # the replay reads as the retry did


# ---------------------------------------------------------------------------- timestamps
_OFFSETS = st.sampled_from(["Z", "+00:00", "+02:00", "-05:30", "+14:00"])


@given(
    when=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    digits=st.integers(min_value=0, max_value=7),
    offset=_OFFSETS,
)
def test_iso_timestamps_parse_as_botocore_parses_them(
    when: datetime, digits: int, offset: str
) -> None:
    """The standard library reads EC2's ISO 8601 timestamps to the same instant, offset and
    `isoformat()` (what a recorded response holds) as botocore's dateutil path."""
    from botocore.utils import parse_timestamp as botocore_parse

    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{when.microsecond:06d}{when.microsecond % 10}"[:digits]
    text += offset
    ours, theirs = parse_timestamp(text), botocore_parse(text)
    assert ours == theirs and ours.isoformat() == theirs.isoformat()
    assert ours.utcoffset() == theirs.utcoffset()


def test_other_timestamps_are_left_to_botocore() -> None:
    from botocore.utils import parse_timestamp as botocore_parse

    for value in ("1700000000", 1700000000, "Sun, 06 Nov 1994 08:49:37 GMT", "2026-11-12T05:47:29"):
        assert parse_timestamp(value).isoformat() == botocore_parse(value).isoformat()
    with pytest.raises(ValueError, match="Invalid timestamp"):
        parse_timestamp("2026-13-45Tnot a time")


def test_sessions_parse_timestamps_with_it(tmp_path: Path) -> None:
    session = AwsProvider([AwsTarget(access_key_id="a", secret_access_key="b")])._session(
        AwsTarget(access_key_id="a", secret_access_key="b")
    )
    factory = session._session.get_component("response_parser_factory")
    assert factory.create_parser("ec2")._timestamp_parser is parse_timestamp
