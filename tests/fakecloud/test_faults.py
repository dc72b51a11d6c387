"""Fault injection through the real SDK: throttling absorbed by retries, seeded rates, config."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from auditor.fakecloud import FakeCloud, FakeCloudConfigError, FaultConfig
from auditor.fakecloud.faults import Fault, FaultInjector
from tests.fakecloud.conftest import ClientFactory
from tests.fakecloud.helpers import INSTANCE, standard_replay


@pytest.fixture
def replay(tmp_path: Path) -> Path:
    return standard_replay(tmp_path)


def test_throttle_first_is_absorbed_by_botocore_retries(
    replay: Path, client: ClientFactory
) -> None:
    with FakeCloud(replay, FaultConfig(throttle_first=1)) as fc:
        volumes = client(fc).describe_volumes()
        log = [(r.operation, r.status, r.fault) for r in fc.request_log]
    assert volumes["Volumes"] and volumes["ResponseMetadata"]["RetryAttempts"] == 1
    assert log == [("DescribeVolumes", 503, "throttle"), ("DescribeVolumes", 200, None)]


def test_throttle_first_counts_per_resource_and_sts_throttles_with_400(
    replay: Path, client: ClientFactory
) -> None:
    with FakeCloud(replay, FaultConfig(throttle_first=1)) as fc:
        with pytest.raises(ClientError) as exc:
            client(fc, "sts", retries=False).get_caller_identity()
        ec2 = client(fc, retries=False)
        with pytest.raises(ClientError) as ec2_exc:
            ec2.get_instance_uefi_data(InstanceId=INSTANCE)
        assert ec2.get_instance_uefi_data(InstanceId=INSTANCE)["UefiData"]
    sts_error = exc.value.response
    assert sts_error["Error"]["Code"] == "Throttling"
    assert sts_error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ec2_exc.value.response["Error"]["Code"] == "RequestLimitExceeded"


def _fault_pattern(replay: Path, client: ClientFactory, config: FaultConfig) -> list[str | None]:
    with FakeCloud(replay, config) as fc:
        ec2 = client(fc, retries=False)
        for _ in range(24):
            with contextlib.suppress(ClientError):
                ec2.describe_instance_types()
        return [r.fault for r in fc.request_log]


def test_throttle_rate_is_reproducible_with_a_seed(replay: Path, client: ClientFactory) -> None:
    config = FaultConfig(throttle_rate=0.5, seed=7)
    first = _fault_pattern(replay, client, config)
    again = _fault_pattern(replay, client, config)
    other = _fault_pattern(replay, client, FaultConfig(throttle_rate=0.5, seed=8))
    assert first == again
    assert first != other
    assert set(first) == {"throttle", None}


def test_error_rate_answers_500_or_503(replay: Path, client: ClientFactory) -> None:
    with FakeCloud(replay, FaultConfig(error_rate=1.0, seed=1)) as fc:
        ec2 = client(fc, retries=False)
        codes = set()
        for _ in range(12):
            with pytest.raises(ClientError) as exc:
                ec2.describe_volumes()
            err = exc.value.response
            codes.add((err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]))
        faults = {r.fault for r in fc.request_log}
    assert codes == {("InternalError", 500), ("Unavailable", 503)}
    assert faults == {"internal_error", "unavailable"}


def test_latency_is_injected(replay: Path, client: ClientFactory) -> None:
    with FakeCloud(replay, FaultConfig(latency_ms=60)) as fc:
        ec2 = client(fc)
        ec2.describe_volumes()  # connection set-up outside the measurement
        start = time.perf_counter()
        ec2.describe_volumes()
        assert time.perf_counter() - start >= 0.06


def test_yaml_config_is_read_and_overridden(replay: Path) -> None:
    (replay / "fakecloud.yaml").write_text("page_size: 3\nseed: 9\nlatency_ms: 5\n")
    with FakeCloud(replay) as fc:
        assert (fc.faults.page_size, fc.faults.seed, fc.faults.latency_ms) == (3, 9, 5.0)
    explicit = FakeCloud(replay, FaultConfig(page_size=7, latency_ms=0))
    assert (explicit.faults.page_size, explicit.faults.seed, explicit.faults.latency_ms) == (
        7,
        9,
        0.0,
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("page_size: 0\n", "page_size"),
        ("throttle_rate: 0.8\nerror_rate: 0.5\n", "must not exceed 1"),
        ("thottle_rate: 0.1\n", "thottle_rate"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("page_size: [\n", "cannot read"),
        ("seed: '3'\n", "seed"),
    ],
)
def test_invalid_yaml_config_names_file_and_field(replay: Path, text: str, needle: str) -> None:
    (replay / "fakecloud.yaml").write_text(text)
    with pytest.raises(FakeCloudConfigError) as exc:
        FakeCloud(replay)
    assert "fakecloud.yaml" in str(exc.value) and needle in str(exc.value)


def test_injector_counts_throttle_first_per_key() -> None:
    inj = FaultInjector(FaultConfig(throttle_first=2))
    key_a = ("aws", "1", "r", "Op", None)
    key_b = ("aws", "1", "r", "Op", "i-1")
    assert [inj.decide(key_a) for _ in range(3)] == [Fault.THROTTLE, Fault.THROTTLE, None]
    assert inj.decide(key_b) is Fault.THROTTLE
