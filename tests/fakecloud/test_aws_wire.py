"""Real boto3 over HTTP against fakecloud: the EC2/STS wire protocol and replay semantics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import botocore.parsers
import botocore.session
import pytest
from botocore.exceptions import ClientError

from auditor.fakecloud import FakeCloud, FaultConfig
from auditor.fakecloud.aws_wire import render_response
from tests.fakecloud.conftest import ClientFactory
from tests.fakecloud.helpers import (
    ACCOUNT,
    DATA,
    INSTANCE,
    REGION,
    assert_same,
    fixture,
    many_reservations,
    standard_replay,
    strip_meta,
    write_json,
)

BASE = f"aws/{ACCOUNT}/{REGION}"


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    resp = exc.value.response
    return (
        resp["Error"]["Code"],
        resp["ResponseMetadata"]["HTTPStatusCode"],
        resp["Error"].get("Message", ""),
    )


@pytest.fixture
def replay(tmp_path: Path) -> Path:
    return standard_replay(tmp_path)


# ---------------------------------------------------------------------------- round trips
ROUND_TRIPS = [
    ("aws_describe_instances_snp.json", "describe_instances", {}),
    ("aws_describe_instances_non_snp.json", "describe_instances", {}),
    ("aws_describe_instance_types_m6a_m5.json", "describe_instance_types", {}),
    ("aws_describe_images_uefi_tpm.json", "describe_images", {}),
    ("aws_describe_volumes_encrypted.json", "describe_volumes", {}),
    (
        "aws_get_instance_tpm_ek_pub.json",
        "get_instance_tpm_ek_pub",
        {"InstanceId": INSTANCE, "KeyType": "rsa-2048", "KeyFormat": "der"},
    ),
    (
        "aws_get_instance_tpm_ek_pub_ecc.json",
        "get_instance_tpm_ek_pub",
        {"InstanceId": INSTANCE, "KeyType": "ecc-sec-p384", "KeyFormat": "der"},
    ),
    ("aws_get_instance_uefi_data.json", "get_instance_uefi_data", {"InstanceId": INSTANCE}),
]


@pytest.mark.parametrize(("name", "method", "params"), ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS])
def test_fixture_round_trips_through_xml(
    tmp_path: Path, client: ClientFactory, name: str, method: str, params: dict[str, Any]
) -> None:
    data = fixture(name)
    op = "".join(part.capitalize() for part in method.split("_"))  # describe_x -> DescribeX
    rel = f"{BASE}/{op}/{INSTANCE}.json" if "InstanceId" in params else f"{BASE}/{op}.json"
    write_json(tmp_path, rel, data)
    with FakeCloud(tmp_path) as fc:
        got = strip_meta(getattr(client(fc), method)(**params))
    assert_same(data, got)


def test_snp_flag_present_only_on_snp_instance(tmp_path: Path, client: ClientFactory) -> None:
    write_json(
        tmp_path, f"{BASE}/DescribeInstances.json", fixture("aws_describe_instances_snp.json")
    )
    write_json(
        tmp_path,
        f"aws/{ACCOUNT}/eu-west-1/DescribeInstances.json",
        fixture("aws_describe_instances_non_snp.json"),
    )
    with FakeCloud(tmp_path) as fc:
        snp = client(fc).describe_instances()["Reservations"][0]["Instances"][0]
        plain = client(fc, region="eu-west-1").describe_instances()["Reservations"][0]
    assert snp["CpuOptions"]["AmdSevSnp"] == "enabled"
    assert "AmdSevSnp" not in plain["Instances"][0]["CpuOptions"]


@pytest.mark.parametrize(
    ("json_name", "xml_name", "operation"),
    [
        (
            "aws_describe_instances_snp.json",
            "aws_describe_instances_snp.wire.xml",
            "DescribeInstances",
        ),
        (
            "aws_get_instance_tpm_ek_pub.json",
            "aws_get_instance_tpm_ek_pub.wire.xml",
            "GetInstanceTpmEkPub",
        ),
    ],
)
def test_rendered_xml_parses_like_shipped_wire_xml(
    json_name: str, xml_name: str, operation: str
) -> None:
    model = botocore.session.get_session().get_service_model("ec2")
    op = model.operation_model(operation)
    request_id = "00000000-1111-2222-3333-444444444444"
    ours = render_response(op, fixture(json_name), request_id)
    shipped = (DATA / xml_name).read_bytes()
    parser = botocore.parsers.create_parser("ec2")

    def parse(body: bytes) -> Any:
        return parser.parse({"body": body, "headers": {}, "status_code": 200}, op.output_shape)

    assert parse(ours) == parse(shipped)
    assert ours.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert (
        f'<{operation}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'.encode() in ours
    )


def test_xml_escaping_and_empty_lists(tmp_path: Path, client: ClientFactory) -> None:
    data = fixture("aws_describe_volumes_encrypted.json")
    data["Volumes"][0]["Tags"] = [{"Key": "Name", "Value": "a<b>&\"c'\r\n"}]
    data["Volumes"][0]["Attachments"] = []
    write_json(tmp_path, f"{BASE}/DescribeVolumes.json", data)
    with FakeCloud(tmp_path) as fc:
        got = client(fc).describe_volumes()["Volumes"][0]
    assert got["Tags"] == [{"Key": "Name", "Value": "a<b>&\"c'\r\n"}]
    assert got["Attachments"] == []


def test_list_without_file_is_empty_and_well_formed(replay: Path, client: ClientFactory) -> None:
    (replay / BASE / "DescribeVolumes.json").unlink()
    with FakeCloud(replay) as fc:
        assert strip_meta(client(fc).describe_volumes()) == {"Volumes": []}


def test_account_level_operation_falls_back_to_account_file(
    tmp_path: Path, client: ClientFactory
) -> None:
    (tmp_path / BASE).mkdir(parents=True)
    write_json(
        tmp_path, f"aws/{ACCOUNT}/GetEbsEncryptionByDefault.json", {"EbsEncryptionByDefault": True}
    )
    with FakeCloud(tmp_path) as fc:
        ec2 = client(fc)
        assert ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is True
        write_json(
            tmp_path, f"{BASE}/GetEbsEncryptionByDefault.json", {"EbsEncryptionByDefault": False}
        )
        assert ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
        with pytest.raises(ClientError) as exc:
            ec2.get_ebs_default_kms_key_id()
    code, status, message = _error(exc)
    assert (code, status) == ("UnsupportedOperation", 400)
    assert "GetEbsDefaultKmsKeyId.json" in message


# ---------------------------------------------------------------------------- pagination
def test_paginator_walks_pages_of_configured_size(tmp_path: Path, client: ClientFactory) -> None:
    write_json(tmp_path, f"{BASE}/DescribeInstances.json", many_reservations(5))
    with FakeCloud(tmp_path, FaultConfig(page_size=2)) as fc:
        pages = list(client(fc).get_paginator("describe_instances").paginate())
        log = [r for r in fc.request_log if r.operation == "DescribeInstances"]
    assert [len(p["Reservations"]) for p in pages] == [2, 2, 1]
    assert "NextToken" in pages[0] and "NextToken" not in pages[-1]
    ids = [r["Instances"][0]["InstanceId"] for p in pages for r in p["Reservations"]]
    assert ids == [f"i-{n:017x}" for n in range(1, 6)]
    assert len(log) == 3 and all(r.status == 200 for r in log)


def test_max_results_and_page_size_take_the_smaller(tmp_path: Path, client: ClientFactory) -> None:
    types = fixture("aws_describe_instance_types_m6a_m5.json")["InstanceTypes"]
    write_json(tmp_path, f"{BASE}/DescribeInstanceTypes.json", {"InstanceTypes": types * 6})
    with FakeCloud(tmp_path, FaultConfig(page_size=4)) as fc:
        ec2 = client(fc)
        assert len(ec2.describe_instance_types(MaxResults=5)["InstanceTypes"]) == 4
    with FakeCloud(tmp_path) as fc:  # default page_size 50: MaxResults decides
        pages = list(
            client(fc)
            .get_paginator("describe_instance_types")
            .paginate(PaginationConfig={"PageSize": 5})
        )
    assert [len(p["InstanceTypes"]) for p in pages] == [5, 5, 2]
    names = [t["InstanceType"] for p in pages for t in p["InstanceTypes"]]
    assert names == ["m6a.large", "m5.large"] * 6


@pytest.mark.parametrize(
    "token", ["garbage", "fc1.!!!", "fc1.eyJvcCI6IkRlc2NyaWJlVm9sdW1lcyIsIm9mZnNldCI6MX0"]
)
def test_malformed_next_token_is_invalid_parameter(
    replay: Path, client: ClientFactory, token: str
) -> None:
    with FakeCloud(replay) as fc, pytest.raises(ClientError) as exc:
        client(fc).describe_instances(NextToken=token)  # the last one is DescribeVolumes' token
    assert _error(exc)[:2] == ("InvalidParameterValue", 400)


# ---------------------------------------------------------------------------- identifier filters
def test_instance_ids_filter_drops_empty_reservations(
    tmp_path: Path, client: ClientFactory
) -> None:
    write_json(tmp_path, f"{BASE}/DescribeInstances.json", many_reservations(4))
    wanted = ["i-00000000000000003", "i-00000000000000001"]
    with FakeCloud(tmp_path) as fc:
        ec2 = client(fc)
        got = ec2.describe_instances(InstanceIds=wanted)["Reservations"]
        assert [r["Instances"][0]["InstanceId"] for r in got] == sorted(wanted)
        with pytest.raises(ClientError) as exc:
            ec2.describe_instances(InstanceIds=["i-00000000000000001", "i-0deadbeef0000000"])
    assert _error(exc) == (
        "InvalidInstanceID.NotFound",
        400,
        "The instance ID 'i-0deadbeef0000000' does not exist",
    )


@pytest.mark.parametrize(
    ("method", "param", "known", "result_key", "code"),
    [
        (
            "describe_instance_types",
            "InstanceTypes",
            "m6a.large",
            "InstanceTypes",
            "InvalidInstanceType",
        ),
        ("describe_images", "ImageIds", "ami-0c0b74d29acd0cd97", "Images", "InvalidAMIID.NotFound"),
        (
            "describe_volumes",
            "VolumeIds",
            "vol-0d1e2f3a4b5c6d7e8",
            "Volumes",
            "InvalidVolume.NotFound",
        ),
    ],
)
def test_identifier_filters_and_unknown_ids(
    replay: Path,
    client: ClientFactory,
    method: str,
    param: str,
    known: str,
    result_key: str,
    code: str,
) -> None:
    with FakeCloud(replay) as fc:
        call = getattr(client(fc), method)
        got = call(**{param: [known]})[result_key]
        assert len(got) == 1
        with pytest.raises(ClientError) as exc:
            call(**{param: [known, "nope-123"]})
    got_code, status, message = _error(exc)
    assert (got_code, status) == (code, 400)
    assert "nope-123" in message


def test_filters_are_refused_not_ignored(replay: Path, client: ClientFactory) -> None:
    with FakeCloud(replay) as fc, pytest.raises(ClientError) as exc:
        client(fc).describe_instance_types(
            Filters=[{"Name": "processor-info.supported-features", "Values": ["amd-sev-snp"]}]
        )
    assert _error(exc) == (
        "InvalidParameterValue",
        400,
        "fakecloud does not support filter processor-info.supported-features",
    )


# ---------------------------------------------------------------------------- per-resource calls
def test_get_instance_tpm_ek_pub_per_resource(replay: Path, client: ClientFactory) -> None:
    with FakeCloud(replay) as fc:
        ec2 = client(fc)
        ek = ec2.get_instance_tpm_ek_pub(InstanceId=INSTANCE, KeyType="rsa-2048", KeyFormat="der")
        assert ek["KeyValue"] == fixture("aws_get_instance_tpm_ek_pub.json")["KeyValue"]
        with pytest.raises(ClientError) as missing:
            ec2.get_instance_tpm_ek_pub(
                InstanceId="i-0000000000000dead", KeyType="rsa-2048", KeyFormat="der"
            )
        with pytest.raises(ClientError) as traversal:
            ec2.get_instance_tpm_ek_pub(InstanceId="../../x", KeyType="rsa-2048", KeyFormat="der")
        record = fc.request_log[0]
    assert _error(missing)[:2] == ("InvalidInstanceID.NotFound", 400)
    assert _error(traversal)[:2] == ("InvalidInstanceID.Malformed", 400)
    assert (record.operation, record.resource, record.status) == (
        "GetInstanceTpmEkPub",
        INSTANCE,
        200,
    )


# ---------------------------------------------------------------------------- error files
def test_error_file_reaches_boto3_as_client_error(replay: Path, client: ClientFactory) -> None:
    write_json(
        replay,
        f"{BASE}/DescribeVolumes.error.json",
        {"status": 403, "code": "UnauthorizedOperation", "message": "You are not authorized."},
    )
    write_json(
        replay,
        f"{BASE}/GetInstanceUefiData/{INSTANCE}.error.json",
        {"status": 400, "code": "UnsupportedOperation", "message": "no UEFI data"},
    )
    with FakeCloud(replay) as fc:
        ec2 = client(fc)
        with pytest.raises(ClientError) as exc:
            ec2.describe_volumes()
        with pytest.raises(ClientError) as per_resource:
            ec2.get_instance_uefi_data(InstanceId=INSTANCE)
    assert _error(exc) == ("UnauthorizedOperation", 403, "You are not authorized.")
    assert _error(per_resource) == ("UnsupportedOperation", 400, "no UEFI data")


def test_malformed_json_is_500_naming_the_file(replay: Path, client: ClientFactory) -> None:
    (replay / BASE / "DescribeImages.json").write_text('{"Images": [', encoding="utf-8")
    with FakeCloud(replay) as fc:
        ec2 = client(fc, retries=False)
        with pytest.raises(ClientError) as exc:
            ec2.describe_images()
        assert ec2.describe_volumes()["Volumes"]  # the server is still serving
    code, status, message = _error(exc)
    assert (code, status) == ("InternalError", 500)
    assert f"{BASE}/DescribeImages.json" in message and "malformed JSON" in message


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ({"status": "403", "code": "X"}, "DescribeVolumes.error.json"),
        ({"status": 200, "code": "X", "message": ""}, "DescribeVolumes.error.json"),
    ],
)
def test_invalid_error_file_is_500(
    replay: Path, client: ClientFactory, content: Any, needle: str
) -> None:
    write_json(replay, f"{BASE}/DescribeVolumes.error.json", content)
    with FakeCloud(replay) as fc, pytest.raises(ClientError) as exc:
        client(fc, retries=False).describe_volumes()
    code, status, message = _error(exc)
    assert (code, status) == ("InternalError", 500) and needle in message


def test_unknown_key_in_replay_file_is_an_error(replay: Path, client: ClientFactory) -> None:
    data = fixture("aws_describe_instances_snp.json")
    cpu = data["Reservations"][0]["Instances"][0]["CpuOptions"]
    cpu["AmdSevSNP"] = cpu.pop("AmdSevSnp")
    write_json(replay, f"{BASE}/DescribeInstances.json", data)
    with FakeCloud(replay) as fc, pytest.raises(ClientError) as exc:
        client(fc, retries=False).describe_instances()
    code, status, message = _error(exc)
    assert (code, status) == ("InternalError", 500)
    assert "DescribeInstances.json" in message
    assert "Reservations[0].Instances[0].CpuOptions.AmdSevSNP" in message


def test_wrong_type_in_replay_file_is_an_error(replay: Path, client: ClientFactory) -> None:
    data = fixture("aws_describe_volumes_encrypted.json")
    data["Volumes"][0]["Size"] = "8"
    write_json(replay, f"{BASE}/DescribeVolumes.json", data)
    with FakeCloud(replay) as fc, pytest.raises(ClientError) as exc:
        client(fc, retries=False).describe_volumes()
    assert "Volumes[0].Size: expected an integer" in _error(exc)[2]


# ---------------------------------------------------------------------------- accounts and regions
def test_access_key_selects_account(tmp_path: Path, client: ClientFactory) -> None:
    other = "444455556666"
    write_json(tmp_path, f"{BASE}/DescribeInstances.json", many_reservations(1))
    write_json(tmp_path, f"aws/{other}/{REGION}/DescribeInstances.json", many_reservations(3))
    with FakeCloud(tmp_path) as fc:
        assert fc.aws_accounts() == [ACCOUNT, other]
        one = client(fc, key=ACCOUNT).describe_instances()["Reservations"]
        three = client(fc, key=other).describe_instances()["Reservations"]
        assert client(fc, "sts", key=other).get_caller_identity()["Account"] == other
        with pytest.raises(ClientError) as ec2_exc:
            client(fc, key="testing").describe_instances()
        with pytest.raises(ClientError) as sts_exc:
            client(fc, "sts", key="testing").get_caller_identity()
    assert (len(one), len(three)) == (1, 3)
    assert _error(ec2_exc)[:2] == ("AuthFailure", 401)
    assert _error(sts_exc)[:2] == ("InvalidClientTokenId", 403)


def test_single_account_accepts_any_access_key(replay: Path, client: ClientFactory) -> None:
    with FakeCloud(replay) as fc:
        ident = client(fc, "sts", key="testing").get_caller_identity()
        assert client(fc, key="testing").describe_volumes()["Volumes"]
    assert strip_meta(ident) == {
        "UserId": "testing",
        "Account": ACCOUNT,
        "Arn": f"arn:aws:iam::{ACCOUNT}:user/ccaudit-replay",
    }


def test_caller_identity_from_file(replay: Path, client: ClientFactory) -> None:
    ident = {"UserId": "AIDAEXAMPLE", "Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:user/x"}
    write_json(replay, f"aws/{ACCOUNT}/GetCallerIdentity.json", ident)
    with FakeCloud(replay) as fc:
        assert strip_meta(client(fc, "sts", region="us-east-1").get_caller_identity()) == ident


def test_region_without_folder_is_auth_failure(replay: Path, client: ClientFactory) -> None:
    with FakeCloud(replay) as fc, pytest.raises(ClientError) as exc:
        client(fc, region="ap-southeast-4").describe_instances()
    code, status, message = _error(exc)
    assert (code, status) == ("AuthFailure", 401)
    assert "ap-southeast-4" in message


def test_describe_regions_synthesised_and_filtered(replay: Path, client: ClientFactory) -> None:
    (replay / f"aws/{ACCOUNT}/eu-west-1").mkdir()
    with FakeCloud(replay) as fc:
        ec2 = client(fc, region="us-east-1")  # no folder: region discovery still works
        regions = ec2.describe_regions()["Regions"]
        only = ec2.describe_regions(RegionNames=["eu-west-1"])["Regions"]
        with pytest.raises(ClientError) as exc:
            ec2.describe_regions(RegionNames=["xx-nowhere-1"])
    assert sorted(r["RegionName"] for r in regions) == ["eu-west-1", REGION]
    assert {
        "RegionName": "eu-west-1",
        "Endpoint": "ec2.eu-west-1.amazonaws.com",
        "OptInStatus": "opt-in-not-required",
    } in regions
    assert [r["RegionName"] for r in only] == ["eu-west-1"]
    assert _error(exc)[:2] == ("InvalidParameterValue", 400)


def test_describe_regions_from_file(replay: Path, client: ClientFactory) -> None:
    recorded = {
        "Regions": [{"RegionName": "eu-central-2", "Endpoint": "x", "OptInStatus": "opted-in"}]
    }
    write_json(replay, f"aws/{ACCOUNT}/DescribeRegions.json", recorded)
    with FakeCloud(replay) as fc:
        assert strip_meta(client(fc).describe_regions()) == recorded


def test_dry_run_answers_like_ec2(replay: Path, client: ClientFactory) -> None:
    with FakeCloud(replay) as fc, pytest.raises(ClientError) as exc:
        client(fc).describe_volumes(DryRun=True)
    assert _error(exc)[:2] == ("DryRunOperation", 412)


def test_raw_boto3_dump_with_response_metadata_is_accepted(
    replay: Path, client: ClientFactory
) -> None:
    ek = fixture("aws_get_instance_tpm_ek_pub.json")
    dump = {**ek, "ResponseMetadata": {"RequestId": "x", "HTTPStatusCode": 200}}
    write_json(replay, f"{BASE}/GetInstanceTpmEkPub/{INSTANCE}.json", dump)
    with FakeCloud(replay) as fc:
        got = client(fc).get_instance_tpm_ek_pub(
            InstanceId=INSTANCE, KeyType="rsa-2048", KeyFormat="der"
        )
    assert strip_meta(got) == ek
