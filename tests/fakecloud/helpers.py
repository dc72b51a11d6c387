"""Helpers for fakecloud tests: replay directories built from the copied AWS fixtures."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data" / "cloud"
ACCOUNT = "111122223333"
REGION = "us-east-2"
INSTANCE = "i-0a1b2c3d4e5f67890"


def fixture(name: str) -> Any:
    """A copied cloud fixture from tests/data/cloud (tests never read ../shared)."""
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def write_json(root: Path, relpath: str, data: Any) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def standard_replay(root: Path) -> Path:
    """One account, one region, every AWS fixture in its replay location."""
    base = f"aws/{ACCOUNT}/{REGION}"
    write_json(root, f"{base}/DescribeInstances.json", fixture("aws_describe_instances_snp.json"))
    write_json(
        root,
        f"{base}/DescribeInstanceTypes.json",
        fixture("aws_describe_instance_types_m6a_m5.json"),
    )
    write_json(root, f"{base}/DescribeImages.json", fixture("aws_describe_images_uefi_tpm.json"))
    write_json(root, f"{base}/DescribeVolumes.json", fixture("aws_describe_volumes_encrypted.json"))
    write_json(
        root,
        f"{base}/GetInstanceTpmEkPub/{INSTANCE}.json",
        fixture("aws_get_instance_tpm_ek_pub.json"),
    )
    write_json(
        root,
        f"{base}/GetInstanceUefiData/{INSTANCE}.json",
        fixture("aws_get_instance_uefi_data.json"),
    )
    return root


def many_reservations(count: int) -> dict[str, Any]:
    """``count`` reservations of one instance each, ids i-...0001 upwards."""
    template = fixture("aws_describe_instances_snp.json")["Reservations"][0]
    out = []
    for n in range(1, count + 1):
        res = copy.deepcopy(template)
        res["ReservationId"] = f"r-{n:017x}"
        res["Instances"][0]["InstanceId"] = f"i-{n:017x}"
        out.append(res)
    return {"Reservations": out}


def assert_same(expected: Any, actual: Any, where: str = "") -> None:
    """Equality where boto3 datetimes are compared with the fixture's ISO strings."""
    if isinstance(actual, datetime):
        assert isinstance(expected, str), f"{where}: {expected!r} vs datetime"
        assert datetime.fromisoformat(expected) == actual, where
    elif isinstance(actual, dict):
        assert isinstance(expected, dict), where
        assert set(expected) == set(actual), f"{where}: keys {set(expected) ^ set(actual)}"
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(actual, list):
        assert isinstance(expected, list) and len(expected) == len(actual), where
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same(e, a, f"{where}[{i}]")
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"


def strip_meta(resp: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}
