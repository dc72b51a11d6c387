"""The demo replay estate (examples/demo-fleet/) is made of responses boto3 could really return.

Every `<Operation>.json` and per-resource file is walked against botocore's output shape for that
operation (every key a member, enums in range, types right, timestamps ISO-8601) and also fed to
botocore's Stubber; the files agree with each other the way one AWS estate would (volumes,
instance types, AMIs and NitroTPM EK keys referenced by DescribeInstances exist); error files
have the replay format. Layout contract: aws/<account-id>/<region>/<Operation>.json,
aws/<account-id>/<region>/<Operation>/<resource-id>.json, <Operation>.error.json.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("botocore")

import botocore.session
from botocore import xform_name
from botocore.model import Shape
from botocore.stub import Stubber
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

FLEET = Path(__file__).parents[1] / "examples" / "demo-fleet"
AWS = FLEET / "aws"

#: Operations the AWS provider calls per region; the only names allowed in the replay tree.
REGION_OPERATIONS = {
    "DescribeInstances",
    "DescribeInstanceTypes",
    "DescribeImages",
    "DescribeVolumes",
}
PER_RESOURCE_OPERATIONS = {"GetInstanceTpmEkPub"}

ACCOUNT_RE = re.compile(r"^\d{12}$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{17}$")
VOLUME_ID_RE = re.compile(r"^vol-[0-9a-f]{17}$")
AMI_ID_RE = re.compile(r"^ami-[0-9a-f]{17}$")
KMS_ARN_RE = re.compile(
    r"^arn:aws:kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):key/"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)


# --------------------------------------------------------------------------- helpers


@cache
def ec2_model() -> Any:
    return botocore.session.get_session().get_service_model("ec2")


def output_shape(operation: str) -> Shape:
    return ec2_model().operation_model(operation).output_shape


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def region_dirs() -> list[Path]:
    return sorted(p for p in AWS.glob("*/*") if p.is_dir())


def response_files() -> list[Path]:
    """Every replayed success response: region-level and per-resource."""
    return sorted(p for p in AWS.rglob("*.json") if not p.name.endswith(".error.json"))


def error_files() -> list[Path]:
    return sorted(AWS.rglob("*.error.json"))


def operation_of(path: Path) -> str:
    """The EC2 operation a replay file answers (per-resource files: their folder's name)."""
    parts = path.relative_to(AWS).parts
    if len(parts) == 3:  # account/region/Operation[.error].json
        return parts[2].removesuffix(".json").removesuffix(".error")
    assert len(parts) == 4, path  # account/region/Operation/resource-id.json
    return parts[2]


def rel(path: Path) -> str:
    return str(path.relative_to(FLEET))


def tag(resource: dict[str, Any], key: str) -> str | None:
    return next((t["Value"] for t in resource.get("Tags", []) if t["Key"] == key), None)


def validate(shape: Shape, value: Any, where: str) -> None:
    """Assert `value` is what botocore's parser could produce for `shape` (dates as ISO text)."""
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(value, dict), f"{where}: expected an object for {shape.name}"
        for key, item in value.items():
            assert key in shape.members, (
                f"{where}: {key!r} is not a member of {shape.name} "
                f"(members: {', '.join(sorted(shape.members))})"
            )
            validate(shape.members[key], item, f"{where}.{key}")
    elif kind == "list":
        assert isinstance(value, list), f"{where}: expected a list ({shape.name})"
        for i, item in enumerate(value):
            validate(shape.member, item, f"{where}[{i}]")
    elif kind == "map":
        assert isinstance(value, dict), f"{where}: expected a map ({shape.name})"
        for key, item in value.items():
            validate(shape.key, key, f"{where}<key>")
            validate(shape.value, item, f"{where}[{key!r}]")
    elif kind == "string":
        assert isinstance(value, str), f"{where}: expected a string, got {value!r}"
        if shape.enum:
            assert value in shape.enum, f"{where}: {value!r} not in {shape.name} {shape.enum}"
    elif kind in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), (
            f"{where}: expected an integer, got {value!r}"
        )
    elif kind == "boolean":
        assert isinstance(value, bool), f"{where}: expected a boolean, got {value!r}"
    elif kind in ("double", "float"):
        assert isinstance(value, int | float) and not isinstance(value, bool), (
            f"{where}: expected a number, got {value!r}"
        )
    elif kind == "timestamp":
        assert isinstance(value, str), f"{where}: expected an ISO-8601 string, got {value!r}"
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pytest.fail(f"{where}: {value!r} is not an ISO-8601 timestamp")
        assert parsed.tzinfo is not None, f"{where}: timestamp {value!r} has no UTC offset"
    elif kind == "blob":
        assert isinstance(value, str), f"{where}: expected base64 text"
        base64.b64decode(value, validate=True)
    else:  # pragma: no cover - a shape type this walker does not know
        pytest.fail(f"{where}: unhandled shape type {kind}")


def region_data(region_dir: Path) -> dict[str, Any]:
    """Parsed success responses of one account/region, by operation (absent when failed)."""
    return {
        op: load(region_dir / f"{op}.json")
        for op in REGION_OPERATIONS
        if (region_dir / f"{op}.json").exists()
    }


def instances(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for r in data["DescribeInstances"]["Reservations"] for i in r["Instances"]]


# --------------------------------------------------------------------------- layout


def test_fleet_exists_with_readme() -> None:
    assert AWS.is_dir(), f"missing {AWS}"
    readme = FLEET / "README.md"
    assert readme.is_file()
    text = readme.read_text(encoding="utf-8")
    for account in (p.name for p in AWS.iterdir()):
        assert account in text, f"README does not describe account {account}"


def test_layout_contract() -> None:
    """Under aws/: only <account>/<region>/<Operation>[.error].json and per-resource folders."""
    for path in sorted(AWS.rglob("*")):
        if path.is_dir():
            continue
        parts = path.relative_to(AWS).parts
        assert ACCOUNT_RE.match(parts[0]), f"bad account folder: {rel(path)}"
        assert REGION_RE.match(parts[1]), f"bad region folder: {rel(path)}"
        assert path.suffix == ".json", f"unexpected file: {rel(path)}"
        if len(parts) == 3:
            op = parts[2].removesuffix(".json").removesuffix(".error")
            assert op in REGION_OPERATIONS, f"{rel(path)}: not a per-region scanner call"
        else:
            assert len(parts) == 4, f"too deep: {rel(path)}"
            assert parts[2] in PER_RESOURCE_OPERATIONS, f"{rel(path)}: unknown per-resource call"
            assert INSTANCE_ID_RE.match(parts[3].removesuffix(".json").removesuffix(".error"))
    # Account-level calls and DescribeRegions are synthesised by the fake endpoint.
    assert not list(AWS.rglob("DescribeRegions*")) and not list(AWS.rglob("GetCallerIdentity*"))


def test_accounts_and_regions() -> None:
    got = {(p.parent.name, p.name) for p in region_dirs()}
    assert got == {
        ("111122223333", "eu-west-1"),
        ("111122223333", "us-east-2"),
        ("444455556666", "eu-west-1"),
        ("444455556666", "us-east-2"),
    }


@pytest.mark.parametrize("path", response_files() + error_files(), ids=rel)
def test_json_is_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n", (
        f"{rel(path)}: not 2-space indented JSON with a final newline"
    )


@pytest.mark.parametrize("region_dir", region_dirs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_scanner_call_is_answered(region_dir: Path) -> None:
    """Each per-region call has exactly one answer (success or error) unless listing failed."""
    listing_failed = (region_dir / "DescribeInstances.error.json").exists()
    files = {p.name for p in region_dir.iterdir()}
    if listing_failed:
        assert files == {"DescribeInstances.error.json"}, (
            f"{region_dir}: the scanner stops when DescribeInstances fails; other files are dead"
        )
        return
    for op in REGION_OPERATIONS:
        answers = {f"{op}.json", f"{op}.error.json"} & files
        assert len(answers) == 1, f"{region_dir}: {op} needs exactly one of .json/.error.json"


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("path", response_files(), ids=rel)
def test_response_matches_botocore_output_shape(path: Path) -> None:
    op = operation_of(path)
    data = load(path)
    assert isinstance(data, dict)
    assert "ResponseMetadata" not in data, f"{rel(path)}: drop ResponseMetadata"
    validate(output_shape(op), data, f"{rel(path)}:{op}")


@pytest.mark.parametrize("path", response_files(), ids=rel)
def test_response_accepted_by_stubber(path: Path) -> None:
    """Second opinion: botocore's own response validation (raises on unknown keys/bad types)."""
    region = path.relative_to(AWS).parts[1]
    client = botocore.session.get_session().create_client(
        "ec2", region_name=region, aws_access_key_id="demo", aws_secret_access_key="demo"
    )
    stubber = Stubber(client)
    stubber.add_response(xform_name(operation_of(path)), load(path))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("path", error_files(), ids=rel)
def test_error_files(path: Path) -> None:
    err = load(path)
    assert set(err) == {"status", "code", "message"}, f"{rel(path)}: keys {sorted(err)}"
    assert isinstance(err["status"], int) and 400 <= err["status"] <= 599
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    if err["code"] == "UnauthorizedOperation":
        account = path.relative_to(AWS).parts[0]
        assert err["status"] == 403
        assert f"ec2:{operation_of(path)}" in err["message"]
        assert f"arn:aws:sts::{account}:assumed-role/" in err["message"]


# --------------------------------------------------------------------------- consistency


@pytest.mark.parametrize(
    "region_dir",
    [d for d in region_dirs() if (d / "DescribeInstances.json").exists()],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
class TestRegionConsistency:
    def test_owner_and_placement(self, region_dir: Path) -> None:
        account, region = region_dir.parent.name, region_dir.name
        data = region_data(region_dir)
        for res in data["DescribeInstances"]["Reservations"]:
            assert res["OwnerId"] == account
        for inst in instances(data):
            iid = inst["InstanceId"]
            assert INSTANCE_ID_RE.match(iid), iid
            assert inst["Placement"]["AvailabilityZone"].startswith(region), iid
            assert inst["PrivateDnsName"].endswith(f".{region}.compute.internal"), iid
            for eni in inst["NetworkInterfaces"]:
                assert eni["OwnerId"] == account
                assert eni["VpcId"] == inst["VpcId"] and eni["SubnetId"] == inst["SubnetId"]
            assert tag(inst, "Name"), f"{iid} has no Name tag"
            assert datetime.fromisoformat(inst["LaunchTime"]).year == 2026

    def test_instance_types_listed_exactly(self, region_dir: Path) -> None:
        data = region_data(region_dir)
        used = {i["InstanceType"] for i in instances(data)}
        listed = [t["InstanceType"] for t in data["DescribeInstanceTypes"]["InstanceTypes"]]
        assert len(listed) == len(set(listed)), "duplicate instance types"
        assert set(listed) == used, f"DescribeInstanceTypes {sorted(listed)} != used {sorted(used)}"

    def test_images_listed_exactly(self, region_dir: Path) -> None:
        data = region_data(region_dir)
        used = {i["ImageId"] for i in instances(data)}
        listed = [img["ImageId"] for img in data["DescribeImages"]["Images"]]
        assert all(AMI_ID_RE.match(a) for a in listed)
        assert len(listed) == len(set(listed)), "duplicate images"
        assert set(listed) == used, f"DescribeImages {sorted(listed)} != used {sorted(used)}"

    def test_volumes_exist_and_agree(self, region_dir: Path) -> None:
        account, region = region_dir.parent.name, region_dir.name
        data = region_data(region_dir)
        if "DescribeVolumes" not in data:
            # Partial permissions: volumes unreadable, but the instances still name them.
            assert (region_dir / "DescribeVolumes.error.json").exists()
            for inst in instances(data):
                for bdm in inst["BlockDeviceMappings"]:
                    assert VOLUME_ID_RE.match(bdm["Ebs"]["VolumeId"]), inst["InstanceId"]
            return
        volumes = {v["VolumeId"]: v for v in data["DescribeVolumes"]["Volumes"]}
        inst_by_id = {i["InstanceId"]: i for i in instances(data)}
        for inst in inst_by_id.values():
            for bdm in inst["BlockDeviceMappings"]:
                vid = bdm["Ebs"]["VolumeId"]
                assert vid in volumes, f"{inst['InstanceId']}: {vid} missing from DescribeVolumes"
                vol = volumes[vid]
                assert vol["State"] == "in-use"
                assert vol["AvailabilityZone"] == inst["Placement"]["AvailabilityZone"]
                att = [a for a in vol["Attachments"] if a["InstanceId"] == inst["InstanceId"]]
                assert len(att) == 1 and att[0]["Device"] == bdm["DeviceName"], vid
        for vid, vol in volumes.items():
            assert VOLUME_ID_RE.match(vid), vid
            for att in vol["Attachments"]:
                assert att["InstanceId"] in inst_by_id, f"{vid} attached to unknown instance"
            if not vol["Attachments"]:
                assert vol["State"] == "available", f"{vid}: unattached but {vol['State']}"
            if vol["Encrypted"]:
                m = KMS_ARN_RE.match(vol.get("KmsKeyId", ""))
                assert m, f"{vid}: encrypted without a KMS key ARN"
                assert (m["region"], m["account"]) == (region, account), vid
            else:
                assert "KmsKeyId" not in vol, vid

    def test_tpm_ek_files(self, region_dir: Path) -> None:
        data = region_data(region_dir)
        tpm = {i["InstanceId"] for i in instances(data) if i.get("TpmSupport") == "v2.0"}
        ek_dir = region_dir / "GetInstanceTpmEkPub"
        files = {p.name.removesuffix(".json").removesuffix(".error") for p in ek_dir.glob("*.json")}
        assert files == tpm, f"EK files {sorted(files)} != NitroTPM instances {sorted(tpm)}"
        for iid in tpm:
            path = ek_dir / f"{iid}.json"
            if not path.exists():  # an .error.json answer is also a valid replay
                continue
            ek = load(path)
            assert ek["InstanceId"] == iid
            assert (ek["KeyType"], ek["KeyFormat"]) == ("rsa-2048", "der")
            key = load_der_public_key(base64.b64decode(ek["KeyValue"], validate=True))
            assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048

    def test_confidential_computing_story_is_coherent(self, region_dir: Path) -> None:
        """What the control plane says must be possible: SNP on capable types, UEFI, TPM AMIs."""
        data = region_data(region_dir)
        types = {t["InstanceType"]: t for t in data["DescribeInstanceTypes"]["InstanceTypes"]}
        images = {img["ImageId"]: img for img in data["DescribeImages"]["Images"]}
        for inst in instances(data):
            itype, image = types[inst["InstanceType"]], images[inst["ImageId"]]
            assert inst["BootMode"] == image["BootMode"], inst["InstanceId"]
            if inst["CpuOptions"].get("AmdSevSnp") == "enabled":
                assert "amd-sev-snp" in itype["ProcessorInfo"].get("SupportedFeatures", [])
                assert inst["CurrentInstanceBootMode"] == "uefi"
                assert not inst["HibernationOptions"]["Configured"]
                assert not inst["EnclaveOptions"]["Enabled"]
            if inst.get("TpmSupport") == "v2.0":
                assert image.get("TpmSupport") == "v2.0"
                assert itype["NitroTpmSupport"] == "supported"
            else:
                assert image.get("TpmSupport") != "v2.0", inst["InstanceId"]
