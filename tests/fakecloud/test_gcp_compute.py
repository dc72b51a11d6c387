"""fakecloud's GCP handler against the real google-cloud-compute client (REST transport).

The instances are the copied fixtures in tests/data/cloud (never ../shared), spread over
several zones so that aggregatedList paging crosses zone boundaries.
"""

from __future__ import annotations

import copy
import http.client
import json
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.fakecloud import FakeCloud, FaultConfig

compute_v1 = pytest.importorskip("google.cloud.compute_v1")
from google.api_core import exceptions, retry  # noqa: E402
from google.api_core.client_options import ClientOptions  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402

from tests.fakecloud.helpers import fixture, write_json  # noqa: E402

API = "https://www.googleapis.com/compute/v1"
PROJECT = "cc-audit-demo"
SNP_ZONE = "us-central1-a"

# (fixture, zone, name): five instances in three zones, plus one zone with only a warning.
LAYOUT = [
    ("gcp_instance_sev_snp.json", SNP_ZONE, "cvm-snp-1"),
    ("gcp_instance_non_confidential.json", SNP_ZONE, "plain-1"),
    ("gcp_instance_tdx.json", "europe-west4-a", "cvm-tdx-1"),
    ("gcp_instance_non_confidential.json", "europe-west4-a", "plain-2"),
    ("gcp_instance_sev_live_migratable.json", "asia-southeast1-b", "cvm-sev-lm-1"),
]
EMPTY_ZONE = "us-east1-b"

ClientFactory = Callable[[FakeCloud], Any]


def placed(instance: dict[str, Any], zone: str, name: str) -> dict[str, Any]:
    """A fixture instance moved to ``zone`` and renamed, its URLs kept consistent."""
    text = json.dumps(instance).replace(f"zones/{SNP_ZONE}", f"zones/{zone}")
    out: dict[str, Any] = json.loads(text.replace(f'/{instance["name"]}"', f'/{name}"'))
    out["name"] = name
    return out


def aggregated(extra: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    items: dict[str, Any] = {}
    for fixture_name, zone, name in LAYOUT:
        inst = placed(fixture(fixture_name), zone, name)
        items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(inst)
    for zone, instances in (extra or {}).items():
        items.setdefault(f"zones/{zone}", {"instances": []})["instances"].extend(instances)
    items[f"zones/{EMPTY_ZONE}"] = {
        "warning": {
            "code": "NO_RESULTS_ON_PAGE",
            "message": f"There are no results for scope 'zones/{EMPTY_ZONE}' on this page.",
            "data": [{"key": "scope", "value": f"zones/{EMPTY_ZONE}"}],
        }
    }
    return {
        "kind": "compute#instanceAggregatedList",
        "id": f"projects/{PROJECT}/aggregated/instances",
        "items": items,
        "selfLink": f"{API}/projects/{PROJECT}/aggregated/instances",
    }


def gcp_replay(root: Path, agg: dict[str, Any] | None = None) -> Path:
    write_json(root, f"gcp/{PROJECT}/aggregatedList.json", agg or aggregated())
    write_json(
        root,
        f"gcp/{PROJECT}/shieldedInstanceIdentity/{SNP_ZONE}/cvm-snp-1.json",
        fixture("gcp_shielded_identity.json"),
    )
    return root


@pytest.fixture
def client() -> Iterator[ClientFactory]:
    made: list[Any] = []

    def make(fc: FakeCloud) -> Any:
        ic = compute_v1.InstancesClient(
            transport="rest",
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=fc.endpoint),
        )
        made.append(ic)
        return ic

    yield make
    for ic in made:
        ic.transport.close()


def raw_get(fc: FakeCloud, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One plain HTTP request, for what the SDK would never send."""
    parsed = urllib.parse.urlsplit(fc.endpoint)
    conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, body.decode()


# ============================================================================ instances
def test_aggregated_list_pages_across_zones(tmp_path: Path, client: ClientFactory) -> None:
    with FakeCloud(gcp_replay(tmp_path), FaultConfig(page_size=2)) as fc:
        pages = list(client(fc).aggregated_list(project=PROJECT).pages)
        log = list(fc.request_log)
    seen = [
        (key.removeprefix("zones/"), inst.name)
        for page in pages
        for key, scoped in page.items.items()
        for inst in scoped.instances
    ]
    assert len(pages) == 3
    assert [len([i for s in p.items.values() for i in s.instances]) for p in pages] == [2, 2, 1]
    assert sorted(seen) == sorted((zone, name) for _, zone, name in LAYOUT)
    assert pages[0].items[f"zones/{EMPTY_ZONE}"].warning.code == "NO_RESULTS_ON_PAGE"
    assert all(f"zones/{EMPTY_ZONE}" not in p.items for p in pages[1:])
    assert [(r.cloud, r.account, r.region, r.operation, r.status) for r in log] == [
        ("gcp", PROJECT, None, "instances.aggregatedList", 200)
    ] * 3


def test_max_results_below_page_size_sets_the_page(tmp_path: Path, client: ClientFactory) -> None:
    with FakeCloud(gcp_replay(tmp_path)) as fc:
        request = compute_v1.AggregatedListInstancesRequest(project=PROJECT, max_results=1)
        pages = list(client(fc).aggregated_list(request=request).pages)
    assert len(pages) == len(LAYOUT)


def test_confidential_fields_survive_the_round_trip(tmp_path: Path, client: ClientFactory) -> None:
    with FakeCloud(gcp_replay(tmp_path)) as fc:
        by_name = {
            inst.name: inst
            for _, scoped in client(fc).aggregated_list(project=PROJECT)
            for inst in scoped.instances
        }
    snp, tdx, legacy, plain = (
        by_name[n] for n in ("cvm-snp-1", "cvm-tdx-1", "cvm-sev-lm-1", "plain-1")
    )
    assert snp.confidential_instance_config.confidential_instance_type == "SEV_SNP"
    assert "enable_confidential_compute" not in snp.confidential_instance_config
    assert snp.scheduling.on_host_maintenance == "TERMINATE"
    assert snp.min_cpu_platform == "AMD Milan"
    assert snp.disks[0].disk_encryption_key.kms_key_name.endswith("/cryptoKeyVersions/1")
    assert tdx.confidential_instance_config.confidential_instance_type == "TDX"
    assert legacy.confidential_instance_config.enable_confidential_compute is True
    assert "confidential_instance_type" not in legacy.confidential_instance_config
    assert legacy.scheduling.on_host_maintenance == "MIGRATE"
    assert "confidential_instance_config" not in plain
    assert "disk_encryption_key" not in plain.disks[0]
    assert snp.id == int(fixture("gcp_instance_sev_snp.json")["id"])


def test_zone_list_and_get_come_from_the_same_file(tmp_path: Path, client: ClientFactory) -> None:
    with FakeCloud(gcp_replay(tmp_path), FaultConfig(page_size=1)) as fc:
        ic = client(fc)
        names = [i.name for i in ic.list(project=PROJECT, zone=SNP_ZONE)]
        other = [i.name for i in ic.list(project=PROJECT, zone="europe-west9-a")]
        got = ic.get(project=PROJECT, zone="europe-west4-a", instance="cvm-tdx-1")
        with pytest.raises(exceptions.NotFound) as missing:
            ic.get(project=PROJECT, zone=SNP_ZONE, instance="cvm-tdx-1")
        log = list(fc.request_log)
    assert names == ["cvm-snp-1", "plain-1"]
    assert other == []
    assert got.confidential_instance_config.confidential_instance_type == "TDX"
    assert f"projects/{PROJECT}/zones/{SNP_ZONE}/instances/cvm-tdx-1" in str(missing.value)
    assert [(r.operation, r.region, r.resource, r.status) for r in log] == [
        ("instances.list", SNP_ZONE, None, 200),
        ("instances.list", SNP_ZONE, None, 200),
        ("instances.list", "europe-west9-a", None, 200),
        ("instances.get", "europe-west4-a", "cvm-tdx-1", 200),
        ("instances.get", SNP_ZONE, "cvm-tdx-1", 404),
    ]


def test_unknown_enum_value_passes_through(tmp_path: Path, client: ClientFactory) -> None:
    """Compute enums are proto strings: a value newer than the SDK ("CCA_V2") arrives as is."""
    future = placed(fixture("gcp_instance_sev_snp.json"), "us-central1-b", "cvm-future-1")
    future["confidentialInstanceConfig"] = {"confidentialInstanceType": "CCA_V2"}
    future["scheduling"]["onHostMaintenance"] = "SOMETHING_NEW"
    replay = gcp_replay(tmp_path, aggregated({"us-central1-b": [future]}))
    with FakeCloud(replay) as fc:
        got = client(fc).get(project=PROJECT, zone="us-central1-b", instance="cvm-future-1")
    assert got.confidential_instance_config.confidential_instance_type == "CCA_V2"
    assert got.scheduling.on_host_maintenance == "SOMETHING_NEW"


# ============================================================================ shielded identity
def test_shielded_identity_round_trip(tmp_path: Path, client: ClientFactory) -> None:
    expected = fixture("gcp_shielded_identity.json")
    with FakeCloud(gcp_replay(tmp_path)) as fc:
        ic = client(fc)
        got = ic.get_shielded_instance_identity(
            project=PROJECT, zone=SNP_ZONE, instance="cvm-snp-1"
        )
        with pytest.raises(exceptions.NotFound) as missing:
            ic.get_shielded_instance_identity(project=PROJECT, zone=SNP_ZONE, instance="plain-1")
        log = list(fc.request_log)
    assert got.kind == "compute#shieldedInstanceIdentity"
    assert got.encryption_key.ek_pub == expected["encryptionKey"]["ekPub"]
    assert got.encryption_key.ek_cert == expected["encryptionKey"]["ekCert"]
    assert got.signing_key.ek_cert == expected["signingKey"]["ekCert"]
    assert "plain-1" in missing.value.message
    assert [(r.operation, r.account, r.region, r.resource, r.status) for r in log] == [
        ("instances.getShieldedInstanceIdentity", PROJECT, SNP_ZONE, "cvm-snp-1", 200),
        ("instances.getShieldedInstanceIdentity", PROJECT, SNP_ZONE, "plain-1", 404),
    ]


def test_identity_error_file(tmp_path: Path, client: ClientFactory) -> None:
    replay = gcp_replay(tmp_path)
    message = "Required 'compute.instances.getShieldedInstanceIdentity' permission"
    write_json(
        replay,
        f"gcp/{PROJECT}/shieldedInstanceIdentity/{SNP_ZONE}/cvm-snp-1.error.json",
        {"status": 403, "code": "PERMISSION_DENIED", "message": message},
    )
    with FakeCloud(replay) as fc, pytest.raises(exceptions.Forbidden) as err:
        client(fc).get_shielded_instance_identity(
            project=PROJECT, zone=SNP_ZONE, instance="cvm-snp-1"
        )
    assert err.value.message.endswith(message)


# ============================================================================ errors
def test_error_file_becomes_forbidden_for_every_instance_call(
    tmp_path: Path, client: ClientFactory
) -> None:
    replay = gcp_replay(tmp_path)
    message = f"Required 'compute.instances.list' permission for 'projects/{PROJECT}'"
    write_json(
        replay,
        f"gcp/{PROJECT}/aggregatedList.error.json",
        {"status": 403, "code": "PERMISSION_DENIED", "message": message},
    )
    with FakeCloud(replay) as fc:
        ic = client(fc)
        with pytest.raises(exceptions.Forbidden) as agg:
            list(ic.aggregated_list(project=PROJECT))
        with pytest.raises(exceptions.Forbidden):
            list(ic.list(project=PROJECT, zone=SNP_ZONE))
        with pytest.raises(exceptions.Forbidden):
            ic.get(project=PROJECT, zone=SNP_ZONE, instance="cvm-snp-1")
    assert message in agg.value.message
    assert agg.value.errors[0]["reason"] == "forbidden"
    assert agg.value.code == 403


@pytest.mark.parametrize(
    ("status", "code", "exc", "reason"),
    [
        (404, "NOT_FOUND", exceptions.NotFound, "notFound"),
        (429, "RESOURCE_EXHAUSTED", exceptions.TooManyRequests, "rateLimitExceeded"),
        (500, "INTERNAL", exceptions.InternalServerError, "backendError"),
        (503, "UNAVAILABLE", exceptions.ServiceUnavailable, "backendError"),
    ],
)
def test_error_file_statuses(
    tmp_path: Path,
    client: ClientFactory,
    status: int,
    code: str,
    exc: type[Exception],
    reason: str,
) -> None:
    replay = gcp_replay(tmp_path)
    write_json(
        replay,
        f"gcp/{PROJECT}/aggregatedList.error.json",
        {"status": status, "code": code, "message": "replayed"},
    )
    with FakeCloud(replay) as fc:
        with pytest.raises(exc) as err:
            list(client(fc).aggregated_list(project=PROJECT, retry=None))
        _, body = raw_get(fc, f"/compute/v1/projects/{PROJECT}/aggregated/instances")
    assert err.value.errors[0]["reason"] == reason  # type: ignore[attr-defined]
    assert body["error"] == {
        "code": status,
        "message": "replayed",
        "status": code,
        "errors": [{"message": "replayed", "domain": "global", "reason": reason}],
    }


def test_missing_project_is_permission_denied(tmp_path: Path, client: ClientFactory) -> None:
    with FakeCloud(gcp_replay(tmp_path)) as fc:
        with pytest.raises(exceptions.Forbidden) as err:
            list(client(fc).aggregated_list(project="no-such-project"))
        record = fc.request_log[-1]
    assert "Required 'compute.instances.list' permission for 'projects/no-such-project'" in str(
        err.value
    )
    assert (record.account, record.status) == ("no-such-project", 403)


def test_compute_filter_is_refused(tmp_path: Path, client: ClientFactory) -> None:
    with FakeCloud(gcp_replay(tmp_path)) as fc, pytest.raises(exceptions.BadRequest) as err:
        request = compute_v1.AggregatedListInstancesRequest(project=PROJECT, filter="name=x")
        list(client(fc).aggregated_list(request=request))
    assert "fakecloud does not support filter" in err.value.message


# ============================================================================ faults
def test_throttling_is_absorbed_by_retry(tmp_path: Path, client: ClientFactory) -> None:
    policy = retry.Retry(
        predicate=retry.if_exception_type(
            exceptions.TooManyRequests, exceptions.ServiceUnavailable
        ),
        initial=0.05,
        maximum=0.2,
        timeout=10,
    )
    with FakeCloud(gcp_replay(tmp_path), FaultConfig(throttle_first=2, page_size=2)) as fc:
        found = [
            inst.name
            for _, scoped in client(fc).aggregated_list(project=PROJECT, retry=policy)
            for inst in scoped.instances
        ]
        log = list(fc.request_log)
    assert sorted(found) == sorted(name for _, _, name in LAYOUT)
    assert [(r.status, r.fault) for r in log] == [
        (429, "throttle"),
        (429, "throttle"),
        (200, None),
        (200, None),
        (200, None),
    ]


def test_injected_5xx_without_retry(tmp_path: Path, client: ClientFactory) -> None:
    with FakeCloud(gcp_replay(tmp_path), FaultConfig(error_rate=1.0, seed=3)) as fc:
        ic = client(fc)
        for _ in range(6):
            with pytest.raises((exceptions.InternalServerError, exceptions.ServiceUnavailable)):
                ic.get(project=PROJECT, zone=SNP_ZONE, instance="cvm-snp-1", retry=None)
        log = list(fc.request_log)
    assert {(r.status, r.fault) for r in log} == {(500, "internal_error"), (503, "unavailable")}
    assert all(r.resource == "cvm-snp-1" and r.region == SNP_ZONE for r in log)


# ============================================================================ replay validation
def _with_invented_field() -> dict[str, Any]:
    """The aggregated list with a field no compute Instance has, in cvm-snp-1."""
    bad = copy.deepcopy(fixture("gcp_instance_sev_snp.json"))
    bad["confidentialInstanceConfig"] = {"confidentialInstanceTypo": "SEV_SNP"}
    agg = aggregated()
    agg["items"][f"zones/{SNP_ZONE}"]["instances"][0] = bad
    return agg


def test_instance_the_strict_parser_rejects_is_500_naming_file_and_field(
    tmp_path: Path, client: ClientFactory
) -> None:
    agg = _with_invented_field()
    with (
        FakeCloud(gcp_replay(tmp_path, agg)) as fc,
        pytest.raises(exceptions.InternalServerError) as err,
    ):
        list(client(fc).aggregated_list(project=PROJECT, retry=None))
    message = err.value.message
    assert f"gcp/{PROJECT}/aggregatedList.json" in message
    assert "confidentialInstanceTypo" in message and "cvm-snp-1" in message


def test_unchecked_replay_is_served_as_written_when_validation_is_off(
    tmp_path: Path, client: ClientFactory
) -> None:
    # benchmarks switch the check off (their fleets are clones of checked records): the file
    # is then served as it is, and the client's own parser decides (it drops unknown fields)
    agg = _with_invented_field()
    faults = FaultConfig(validate_files=False)
    with FakeCloud(gcp_replay(tmp_path, agg), faults=faults) as fc:
        pages = list(client(fc).aggregated_list(project=PROJECT, retry=None))
        assert all(r.status == 200 for r in fc.request_log)
    names = {i.name for _, scoped in pages for i in scoped.instances}
    assert "cvm-snp-1" in names


def test_malformed_replay_json_is_500_naming_the_file(
    tmp_path: Path, client: ClientFactory
) -> None:
    replay = gcp_replay(tmp_path)
    (replay / f"gcp/{PROJECT}/aggregatedList.json").write_text('{"items": {', encoding="utf-8")
    with FakeCloud(replay) as fc, pytest.raises(exceptions.InternalServerError) as err:
        client(fc).get(project=PROJECT, zone=SNP_ZONE, instance="cvm-snp-1", retry=None)
    assert f"gcp/{PROJECT}/aggregatedList.json: malformed JSON" in err.value.message


def test_project_folder_without_list_has_no_instances(
    tmp_path: Path, client: ClientFactory
) -> None:
    (tmp_path / "gcp" / "empty-project").mkdir(parents=True)
    with FakeCloud(tmp_path) as fc:
        assert list(client(fc).aggregated_list(project="empty-project")) == []


# ============================================================================ wire details
@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        (f"/compute/v1/projects/{PROJECT}/global/images", 404, "no GCP method"),
        (f"/compute/v1/projects/{PROJECT}/aggregated/instances?pageToken=junk", 400, "pageToken"),
        (f"/compute/v1/projects/{PROJECT}/aggregated/instances?bogus=1", 400, 'name "bogus"'),
        (f"/compute/v1/projects/{PROJECT}/aggregated/instances?maxResults=501", 400, "500"),
        (f"/compute/v1/projects/{PROJECT}/aggregated/instances?orderBy=name", 400, "orderBy"),
        (f"/compute/v1/projects/{PROJECT}/zones/%2E%2E/instances", 400, "'zone'"),
    ],
)
def test_bad_requests_get_google_errors(
    tmp_path: Path, path: str, status: int, needle: str
) -> None:
    with FakeCloud(gcp_replay(tmp_path)) as fc:
        got, body = raw_get(fc, path)
    assert got == status
    assert body["error"]["code"] == status and needle in body["error"]["message"]


def test_page_token_is_bound_to_its_listing(tmp_path: Path) -> None:
    replay = gcp_replay(tmp_path)
    write_json(replay, "gcp/other-project/aggregatedList.json", aggregated())
    base = "/compute/v1/projects/{}/aggregated/instances?maxResults=1"
    with FakeCloud(replay) as fc:
        _, first = raw_get(fc, base.format(PROJECT))
        token = first["nextPageToken"]
        ok, _ = raw_get(fc, base.format(PROJECT) + f"&pageToken={token}")
        other, body = raw_get(fc, base.format("other-project") + f"&pageToken={token}")
        zone, _ = raw_get(
            fc, f"/compute/v1/projects/{PROJECT}/zones/{SNP_ZONE}/instances?pageToken={token}"
        )
    assert ok == 200
    assert other == zone == 400 and body["error"]["status"] == "INVALID_ARGUMENT"


def test_dispatch_by_authorization(tmp_path: Path) -> None:
    path = f"/compute/v1/projects/{PROJECT}/zones/{SNP_ZONE}/instances/cvm-snp-1"
    sigv4 = "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-2/ec2/aws4_request, Signature=x"
    with FakeCloud(gcp_replay(tmp_path)) as fc:
        bearer, _ = raw_get(fc, path, {"Authorization": "Bearer ya29.fake"})
        aws, _ = raw_get(fc, path, {"Authorization": sigv4})
        clouds = [r.cloud for r in fc.request_log]
    assert (bearer, aws) == (200, 400)
    assert clouds == ["gcp", "unknown"]


def test_replay_without_gcp_folder_leaves_gcp_paths_unclaimed(tmp_path: Path) -> None:
    with FakeCloud(tmp_path) as fc:
        status, body = raw_get(fc, f"/compute/v1/projects/{PROJECT}/aggregated/instances")
        assert fc.request_log[-1].cloud == "unknown"
    assert status == 400 and "no cloud handler" in body
