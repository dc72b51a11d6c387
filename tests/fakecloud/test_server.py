"""The cloud-agnostic server: loopback binding, routing, raw HTTP robustness, handler seam."""

from __future__ import annotations

import http.client
import urllib.parse
from pathlib import Path

import pytest

from auditor.fakecloud import FakeCloud
from auditor.fakecloud import server as server_mod
from auditor.fakecloud.server import FakeRequest, FakeResponse, HandlerContext
from tests.fakecloud.helpers import ACCOUNT, REGION, standard_replay

AUTH = (
    f"AWS4-HMAC-SHA256 Credential={ACCOUNT}/20250114/{REGION}/ec2/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=00"
)


def _post(fc: FakeCloud, body: bytes, auth: str = AUTH) -> tuple[int, str, bytes]:
    parsed = urllib.parse.urlsplit(fc.endpoint)
    conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/",
            body=body,
            headers={
                "Authorization": auth,
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            },
        )
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::", "10.0.0.1"])
def test_non_loopback_host_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeCloud(tmp_path, host=host)


def test_localhost_and_other_loopback_addresses(tmp_path: Path) -> None:
    with FakeCloud(tmp_path, host="localhost") as fc:
        assert fc.endpoint.startswith("http://127.0.0.1:")
    with FakeCloud(tmp_path, host="127.0.0.2") as fc:
        assert fc.endpoint.startswith("http://127.0.0.2:")


def test_lifecycle(tmp_path: Path) -> None:
    fc = FakeCloud(tmp_path)
    with pytest.raises(RuntimeError):
        _ = fc.endpoint
    endpoint = fc.start()
    assert endpoint == fc.endpoint
    with pytest.raises(RuntimeError):
        fc.start()
    fc.stop()
    fc.stop()
    with pytest.raises(FileNotFoundError):
        FakeCloud(tmp_path / "missing")


def test_unknown_action_is_invalid_action(tmp_path: Path) -> None:
    with FakeCloud(standard_replay(tmp_path)) as fc:
        status, ctype, body = _post(fc, b"Action=LaunchRockets&Version=2016-11-15")
    assert status == 400 and ctype == "text/xml;charset=UTF-8"
    assert b"<Code>InvalidAction</Code>" in body and b"<Response><Errors>" in body


def test_sts_errors_use_query_error_response(tmp_path: Path) -> None:
    auth = AUTH.replace("/ec2/", "/sts/")
    with FakeCloud(standard_replay(tmp_path)) as fc:
        status, _, body = _post(fc, b"Action=AssumeRoot&Version=2011-06-15&Bogus=1", auth)
    assert status == 400
    assert b"<ErrorResponse" in body and b"<Type>Sender</Type>" in body
    assert b"<Code>UnknownParameter</Code>" in body


@pytest.mark.parametrize(
    "body",
    [
        b"Action=DescribeVolumes&VolumeId.x=1",
        b"Action=DescribeVolumes&MaxResults=abc",
        b"Action=DescribeVolumes&Action=DescribeVolumes",
        b"Action=DescribeVolumes&%ff%fe=1",
        b"Action=DescribeVolumes&Filter.1.Name.2=x",
    ],
)
def test_garbage_requests_get_4xx_and_server_survives(tmp_path: Path, body: bytes) -> None:
    with FakeCloud(standard_replay(tmp_path)) as fc:
        status, _, _ = _post(fc, body)
        ok, _, _ = _post(fc, b"Action=DescribeVolumes&Version=2016-11-15")
    assert 400 <= status < 500 and ok == 200


def test_request_without_handler_is_plain_400(tmp_path: Path) -> None:
    with FakeCloud(tmp_path) as fc:
        parsed = urllib.parse.urlsplit(fc.endpoint)
        conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
        conn.request("GET", "/compute/v1/projects/p/zones/z/instances")
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 400
        assert fc.request_log[-1].cloud == "unknown"


class _EchoHandler:
    """A stand-in for a future GCP/Azure handler."""

    cloud = "echo"

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx

    def matches(self, request: FakeRequest) -> bool:
        return request.path.startswith("/echo/")

    def handle(self, request: FakeRequest) -> FakeResponse:
        if request.path == "/echo/boom":
            raise RuntimeError("handler bug")
        return FakeResponse(
            status=200, body=request.path.encode(), content_type="text/plain", operation="echo"
        )


def test_registered_handler_gets_requests_and_bugs_become_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_mod, "_extra_factories", [])
    server_mod.register_handler(_EchoHandler)
    with FakeCloud(tmp_path) as fc:
        parsed = urllib.parse.urlsplit(fc.endpoint)
        conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
        conn.request("GET", "/echo/hello")
        first = conn.getresponse()
        assert (first.status, first.read()) == (200, b"/echo/hello")
        conn.request("GET", "/echo/boom")  # same keep-alive connection
        second = conn.getresponse()
        second.read()
        conn.close()
        assert second.status == 500
        assert [(r.cloud, r.status) for r in fc.request_log] == [("echo", 200), ("echo", 500)]
    # only what is registered is served (the package registers the clouds; here: echo alone)
    assert [h.cloud for h in fc.handlers] == ["echo"]


def test_the_package_registers_every_cloud_aws_services_first() -> None:
    import auditor.fakecloud  # noqa: F401  (registers the clouds)

    names = [f.__name__ for f in server_mod.default_handler_factories()]  # type: ignore[attr-defined]
    assert names[:4] == ["SecurityHubHandler", "AwsQueryHandler", "GcpHandler", "AzureHandler"]


def test_server_and_handlers_do_not_import_each_other() -> None:
    import ast

    from tests.conftest import REPO

    for name in ("server.py", "seam.py"):
        tree = ast.parse((REPO / "auditor" / "fakecloud" / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in imported if m.endswith("_handler")}, (name, imported)


def test_concurrent_clients(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    replay = standard_replay(tmp_path)
    with FakeCloud(replay) as fc:

        def work(_: int) -> int:
            return sum(
                _post(fc, b"Action=DescribeVolumes&Version=2016-11-15")[0] == 200 for _ in range(10)
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert sum(pool.map(work, range(8))) == 80
        assert len(fc.request_log) == 80


def test_stop_also_ends_keep_alive_connections(tmp_path: Path) -> None:
    fc = FakeCloud(standard_replay(tmp_path))
    parsed = urllib.parse.urlsplit(fc.start())
    conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=5)
    headers = {"Authorization": AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    body = b"Action=DescribeVolumes&Version=2016-11-15"
    conn.request("POST", "/", body=body, headers=headers)
    first = conn.getresponse()
    first.read()
    assert first.status == 200
    fc.stop()
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.request("POST", "/", body=body, headers=headers)
        conn.getresponse().read()
    conn.close()


def test_ipv6_loopback(tmp_path: Path) -> None:
    fc = FakeCloud(tmp_path, host="::1")
    try:
        endpoint = fc.start()
    except OSError:
        pytest.skip("IPv6 loopback is not available here")
    try:
        assert endpoint.startswith("http://[::1]:")
    finally:
        fc.stop()
