"""fakecloud's Cloud Logging ``entries:list`` against the real google-cloud-logging HTTP client.

The integrity entries are the copied fixtures in tests/data/cloud (2023 and 2025); one entry
of another log and instance, and one written "an hour ago", show what the filter keeps.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditor.fakecloud import FakeCloud, FaultConfig
from auditor.fakecloud.gcp_handler import GcpError, compile_filter, parse_rfc3339

gcl = pytest.importorskip("google.cloud.logging")
from google.api_core import exceptions, retry  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402

from tests.fakecloud.helpers import fixture, write_json  # noqa: E402

PROJECT = "cc-audit-demo"
INSTANCE_ID = "6524697943022743941"
INTEGRITY = f"projects/{PROJECT}/logs/compute.googleapis.com%2Fshielded_vm_integrity"
SYSLOG = f"projects/{PROJECT}/logs/syslog"
WINDOW = 'timestamp>="2023-01-01T00:00:00Z" AND timestamp<"2026-01-01T00:00:00Z"'


def entries(recent: bool = False) -> list[dict[str, Any]]:
    """Three integrity entries (2023, 2025, 2025), one syslog line; optionally one recent."""
    out = [
        fixture("gcp_log_sev_launch_attestation.json"),
        *fixture("gcp_log_shielded_boot_integrity.json"),
        {
            "insertId": "9",
            "logName": SYSLOG,
            "resource": {
                "type": "gce_instance",
                "labels": {"instance_id": "42", "project_id": PROJECT, "zone": "us-central1-a"},
            },
            "textPayload": "hello",
            "timestamp": "2025-01-14T09:12:50Z",
        },
    ]
    if recent:
        now = datetime.now(UTC) - timedelta(hours=1)
        fresh = dict(out[1], insertId="10", timestamp=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        out.append(fresh)
    return out


def log_replay(root: Path, recent: bool = False) -> Path:
    write_json(root, f"gcp/{PROJECT}/logEntries.json", entries(recent))
    return root


Lister = Callable[..., list[Any]]


def lister(fc: FakeCloud, project: str = PROJECT) -> Lister:
    """``list_entries`` of a real HTTP-transport client, collected into a list."""
    client = gcl.Client(
        project=project,
        credentials=AnonymousCredentials(),
        _use_grpc=False,
        client_options={"api_endpoint": fc.endpoint},
    )

    def run(**kwargs: Any) -> list[Any]:
        kwargs.setdefault("resource_names", [f"projects/{project}"])
        return list(client.list_entries(**kwargs))

    return run


def raw_post(fc: FakeCloud, body: Any) -> tuple[int, Any]:
    parsed = urllib.parse.urlsplit(fc.endpoint)
    conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        conn.request("POST", "/v2/entries:list", body=data)
        resp = conn.getresponse()
        payload = json.loads(resp.read())
    finally:
        conn.close()
    return resp.status, payload


# ============================================================================ through the client
def test_explicit_window_finds_old_entries_in_order(tmp_path: Path) -> None:
    with FakeCloud(log_replay(tmp_path)) as fc:
        found = lister(fc)(filter_=f'logName="{INTEGRITY}" AND {WINDOW}')
        newest_first = lister(fc)(filter_=WINDOW, order_by=gcl.DESCENDING)
        record = fc.request_log[0]
    assert [e.insert_id for e in found] == ["0", "1", "2"]
    assert [sorted(set(e.payload) - {"@type", "bootCounter"}) for e in found] == [
        ["sevLaunchAttestationReportEvent"],
        ["earlyBootReportEvent"],
        ["lateBootReportEvent"],
    ]
    assert found[0].resource.labels["instance_id"] == INSTANCE_ID
    assert [e.insert_id for e in newest_first] == ["2", "9", "1", "0"]
    assert (record.cloud, record.account, record.region, record.operation, record.status) == (
        "gcp",
        PROJECT,
        None,
        "logging.entries.list",
        200,
    )


def test_client_default_24h_window_hides_old_entries(tmp_path: Path) -> None:
    """google-cloud-logging adds timestamp>="<now-24h>" when the filter has no timestamp."""
    with FakeCloud(log_replay(tmp_path)) as fc:
        default = lister(fc)(filter_=f'logName="{INTEGRITY}"')
    with FakeCloud(log_replay(tmp_path / "recent", recent=True)) as fc:
        recent = lister(fc)(filter_=f'logName="{INTEGRITY}"')
        windowed = lister(fc)(filter_=f'logName="{INTEGRITY}" AND {WINDOW}')
    assert default == []
    assert [e.insert_id for e in recent] == ["10"]
    assert [e.insert_id for e in windowed] == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (f'resource.labels.instance_id="{INSTANCE_ID}" AND {WINDOW}', ["0", "1", "2"]),
        (f'resource.labels.instance_id="42" AND {WINDOW}', ["9"]),
        (f'logName="{SYSLOG}" AND resource.type="gce_instance" AND {WINDOW}', ["9"]),
        (f'logName="{urllib.parse.unquote(INTEGRITY)}" AND {WINDOW}', ["0", "1", "2"]),
        (f'(logName="{SYSLOG}" OR logName="{INTEGRITY}") AND {WINDOW}', ["0", "1", "9", "2"]),
        (f'resource.type="gce_subnetwork" AND {WINDOW}', []),
        ('timestamp>="2025-01-14T09:12:44.101034551Z" AND timestamp<"2025-01-14T09:12:45Z"',
         ["1"]),
        ('timestamp>="2025-01-14T09:12:44.101034551Z" AND timestamp<"2026-01-01T00:00:00Z"',
         ["1", "9", "2"]),
        ('timestamp>"2025-01-14T09:12:44.101034Z" AND timestamp<="2025-01-14T09:13:02.441902Z"',
         ["9", "2"]),
        ('timestamp<"2024-01-01T00:00:00+01:00"', ["0"]),
    ],
)  # fmt: skip
def test_filter_clauses(tmp_path: Path, flt: str, expected: list[str]) -> None:
    with FakeCloud(log_replay(tmp_path)) as fc:
        assert [e.insert_id for e in lister(fc)(filter_=flt)] == expected


@pytest.mark.parametrize(
    "clause",
    [
        "severity>=ERROR",
        'severity="ERROR"',
        'jsonPayload.bootCounter="0"',
        f'logName:"{INTEGRITY}"',
        f'NOT logName="{INTEGRITY}"',
        f'logName="{INTEGRITY}" OR logName="{SYSLOG}"',
        f'(logName="{INTEGRITY}" AND resource.type="gce_instance")',
        'timestamp="2025-01-14T09:12:44Z"',
        "resource.labels.instance_id=42",
    ],
)
def test_unsupported_clause_is_refused_by_name(tmp_path: Path, clause: str) -> None:
    with FakeCloud(log_replay(tmp_path)) as fc, pytest.raises(exceptions.BadRequest) as err:
        lister(fc)(filter_=f"{clause} AND {WINDOW}")
    named = clause[1:-1] if clause.startswith("(") else clause  # a group names its inside
    assert f"Unsupported filter clause '{named}'" in err.value.message


def test_bad_timestamp_in_filter_is_refused(tmp_path: Path) -> None:
    with FakeCloud(log_replay(tmp_path)) as fc, pytest.raises(exceptions.BadRequest) as err:
        lister(fc)(filter_='timestamp>="yesterday"')
    assert "'yesterday' is not an RFC 3339 timestamp" in err.value.message


def test_pages_are_min_of_page_size_and_fault_config(tmp_path: Path) -> None:
    with FakeCloud(log_replay(tmp_path), FaultConfig(page_size=3)) as fc:
        ids = [e.insert_id for e in lister(fc)(filter_=WINDOW, page_size=1)]
        calls_small = len(fc.request_log)
        ids_big = [e.insert_id for e in lister(fc)(filter_=WINDOW, page_size=1000)]
        calls_big = len(fc.request_log) - calls_small
    assert ids == ids_big == ["0", "1", "9", "2"]
    assert (calls_small, calls_big) == (4, 2)


def test_error_file_becomes_forbidden(tmp_path: Path) -> None:
    replay = log_replay(tmp_path)
    message = f"Permission 'logging.logEntries.list' denied on resource 'projects/{PROJECT}'."
    write_json(
        replay,
        f"gcp/{PROJECT}/logEntries.error.json",
        {"status": 403, "code": "PERMISSION_DENIED", "message": message},
    )
    with FakeCloud(replay) as fc, pytest.raises(exceptions.Forbidden) as err:
        lister(fc)(filter_=WINDOW)
    assert err.value.message.endswith(message)
    assert err.value.errors[0]["reason"] == "forbidden"


def test_missing_project_is_permission_denied(tmp_path: Path) -> None:
    with FakeCloud(log_replay(tmp_path)) as fc, pytest.raises(exceptions.Forbidden) as err:
        lister(fc, "no-such-project")(filter_=WINDOW)
    assert "'projects/no-such-project' (or it may not exist)" in err.value.message


def test_project_folder_without_entries_has_none(tmp_path: Path) -> None:
    (tmp_path / "gcp" / "quiet-project").mkdir(parents=True)
    with FakeCloud(tmp_path) as fc:
        assert lister(fc, "quiet-project")(filter_=WINDOW) == []


def test_throttling_then_retry(tmp_path: Path) -> None:
    """The HTTP client does not retry entries:list itself; a Retry around the fetch does."""
    policy = retry.Retry(
        predicate=retry.if_exception_type(exceptions.TooManyRequests),
        initial=0.05,
        maximum=0.2,
        timeout=10,
    )
    with FakeCloud(log_replay(tmp_path), FaultConfig(throttle_first=1)) as fc:
        run = lister(fc)
        with pytest.raises(exceptions.TooManyRequests) as err:
            run(filter_=WINDOW)
        found = policy(lambda: run(filter_=WINDOW))()
        log = [(r.status, r.fault) for r in fc.request_log]
    assert err.value.errors[0]["reason"] == "rateLimitExceeded"
    assert len(found) == 4
    assert log == [(429, "throttle"), (200, None)]


# ============================================================================ wire details
@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"resourceNames": [f"projects/{PROJECT}"], "pageToken": "junk"}, "page_token"),
        ({"resourceNames": [f"projects/{PROJECT}"], "projectIds": [PROJECT]}, '"projectIds"'),
        ({"resourceNames": [f"projects/{PROJECT}"], "orderBy": "severity"}, "orderBy"),
        ({"resourceNames": [f"projects/{PROJECT}"], "pageSize": -1}, "page_size"),
        ({"resourceNames": ["organizations/1"]}, "projects/<p>"),
        ({"filter": WINDOW}, "resource_names"),
        (b"{not json", "Invalid JSON payload"),
        ({"resourceNames": [f"projects/{PROJECT}"], "filter": 'logName="x'}, "unterminated"),
        ({"resourceNames": [f"projects/{PROJECT}"], "filter": '(logName="x"'}, "unbalanced"),
    ],
)
def test_bad_requests_get_400(tmp_path: Path, body: Any, needle: str) -> None:
    with FakeCloud(log_replay(tmp_path)) as fc:
        status, payload = raw_post(fc, body)
    assert status == 400 and payload["error"]["status"] == "INVALID_ARGUMENT"
    assert needle in payload["error"]["message"]


def test_page_token_is_bound_to_the_filter(tmp_path: Path) -> None:
    base = {"resourceNames": [f"projects/{PROJECT}"], "pageSize": 1, "filter": WINDOW}
    with FakeCloud(log_replay(tmp_path)) as fc:
        _, first = raw_post(fc, base)
        token = first["nextPageToken"]
        ok, second = raw_post(fc, {**base, "pageToken": token})
        bad, _ = raw_post(fc, {**base, "pageToken": token, "filter": f"{WINDOW} "})
    assert ok == 200 and second["entries"][0]["insertId"] == "1"
    assert bad == 400


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda e: e.update(timestamp="last tuesday"), "[0].timestamp"),
        (lambda e: e.update(severityy="ERROR"), 'no field named "severityy"'),
    ],
)
def test_bad_replay_entries_are_500_naming_the_file(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], needle: str
) -> None:
    data = entries()
    mutate(data[0])
    write_json(tmp_path, f"gcp/{PROJECT}/logEntries.json", data)
    with FakeCloud(tmp_path) as fc, pytest.raises(exceptions.InternalServerError) as err:
        lister(fc)(filter_=WINDOW)
    assert f"gcp/{PROJECT}/logEntries.json" in err.value.message and needle in err.value.message


# ============================================================================ units
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-14T09:12:44.101034551Z", datetime(2025, 1, 14, 9, 12, 44, 101034, UTC)),
        ("2025-01-14T09:12:44Z", datetime(2025, 1, 14, 9, 12, 44, tzinfo=UTC)),
        ("2025-01-14T10:12:44.5+01:00", datetime(2025, 1, 14, 9, 12, 44, 500000, UTC)),
        ("2025-01-14T09:12:44.000001+0000", datetime(2025, 1, 14, 9, 12, 44, 1, UTC)),
        ("2025-01-14", None),
        ("2025-13-14T09:12:44Z", None),
        ("2025-01-14T09:12:44+25:00", None),
    ],
)
def test_parse_rfc3339(text: str, expected: datetime | None) -> None:
    assert parse_rfc3339(text) == expected


def test_escaped_quotes_in_values() -> None:
    entry = {"logName": 'projects/p/logs/a"b', "resource": {"type": "x"}}
    ts = datetime(2025, 1, 1, tzinfo=UTC)
    assert compile_filter(r'logName="projects/p/logs/a\"b"')(entry, ts)
    assert not compile_filter(r'logName="projects/p/logs/a\"c"')(entry, ts)
    assert compile_filter("")(entry, ts)
    with pytest.raises(GcpError):
        compile_filter('logName="a" and resource.type="x"')
