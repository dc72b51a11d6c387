"""Azure's answers read as the cloud sent them (`arm_json`, `arm_pages`): through the SDK's whole
pipeline, without its model layer. The dicts must be what the models' `as_dict()` gave, and an
answer of the wrong shape must be a gap, never an empty list that reads as "nothing found"."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from auditor.engine import Engine
from auditor.fakecloud import FakeCloud, FaultConfig
from auditor.model import AuditRun, Party, Scope, Status
from auditor.providers.azure import (
    AzureProvider,
    MalformedBody,
    arm_json,
    arm_pages,
    arm_requests,
    arm_values,
    resource_group_of,
)
from auditor.rules.loader import load_packs
from auditor.run import run_audit
from tests.fakecloud.helpers import fixture
from tests.test_provider_azure import SUB
from tests.test_provider_azure_scale_sets import _with_scale_sets

pytest.importorskip("azure.mgmt.compute")

Route = Callable[[str], tuple[int, Any]]


@pytest.fixture
def arm_server() -> Iterator[Callable[[Route], str]]:
    """A loopback HTTP server answering each GET with what `route(path)` says: an ARM endpoint
    that sends what fakecloud (which checks its files against the SDK's models) never would."""
    servers: list[ThreadingHTTPServer] = []

    def start(route: Route) -> str:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, body = route(self.path)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _client(endpoint: str) -> Any:
    return AzureProvider([SUB], endpoint_url=endpoint, replay=True, retry_total=0)._compute(SUB)


def test_raw_answers_are_what_the_sdk_models_gave(tmp_path: Path) -> None:
    """Every list call the provider makes, read both ways over fakecloud (paged: one item a
    page), gives the same dicts: the SDK's model layer only ever added CPU."""
    root = _with_scale_sets(tmp_path)
    build = arm_requests()
    with FakeCloud(root, faults=FaultConfig(page_size=1)) as cloud:
        client = _client(cloud.endpoint)

        def raw(first: Any) -> list[dict[str, Any]]:
            return [item for page in arm_pages(client, first) for item in page]

        vms = raw(build.build_virtual_machines_list_all_request(SUB))
        assert len(vms) == 3
        assert vms == [v.as_dict() for v in client.virtual_machines.list_all()]
        assert raw(build.build_disks_list_request(SUB)) == [
            d.as_dict() for d in client.disks.list()
        ]
        assert raw(build.build_disk_encryption_sets_list_request(SUB)) == [
            d.as_dict() for d in client.disk_encryption_sets.list()
        ]
        where = "location eq 'westeurope'"
        skus = raw(build.build_resource_skus_list_request(SUB, filter=where))
        assert skus and skus == [s.as_dict() for s in client.resource_skus.list(filter=where)]
        sets = raw(build.build_virtual_machine_scale_sets_list_all_request(SUB))
        assert len(sets) == 2
        assert sets == [s.as_dict() for s in client.virtual_machine_scale_sets.list_all()]
        for vm in vms:
            rg, name = resource_group_of(vm["id"]), vm["name"]
            request = build.build_virtual_machine_extensions_list_request(rg, name, SUB)
            listed = client.virtual_machine_extensions.list(rg, name)
            assert arm_values(arm_json(client, request)) == [
                e.as_dict() for e in listed.value or []
            ]
        for scale_set in sets:
            rg, name = resource_group_of(scale_set["id"]), scale_set["name"]
            request = build.build_virtual_machine_scale_set_vms_list_request(rg, name, SUB)
            members = raw(request)
            assert members
            assert members == [
                m.as_dict() for m in client.virtual_machine_scale_set_vms.list(rg, name)
            ]
            for member in members:
                iid = member["instanceId"]
                request = build.build_virtual_machine_scale_set_vm_extensions_list_request(
                    rg, name, iid, SUB
                )
                listed = client.virtual_machine_scale_set_vm_extensions.list(rg, name, iid)
                assert arm_values(arm_json(client, request)) == [
                    e.as_dict() for e in listed.value or []
                ]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"value": "vm-1"}, "'value' is not a list of objects"),
        ({"value": [1, 2]}, "'value' is not a list of objects"),
        ({"value": [{"name": "a"}, "b"]}, "'value' is not a list of objects"),
        ([{"name": "a"}], "not an object"),
        ("null-ish", "not an object"),
        ({"value": [], "nextLink": 7}, "'nextLink' is not a string"),
    ],
)
def test_a_list_answer_of_the_wrong_shape_is_an_error(
    arm_server: Callable[[Route], str], body: Any, says: str
) -> None:
    client = _client(arm_server(lambda path: (200, body)))
    first = arm_requests().build_virtual_machines_list_all_request(SUB)
    with pytest.raises(MalformedBody, match=says):
        list(arm_pages(client, first))


def test_next_link_is_followed_and_an_absent_value_is_an_empty_page(
    arm_server: Callable[[Route], str],
) -> None:
    answers: dict[str, Any] = {}

    def route(path: str) -> tuple[int, Any]:
        return 200, answers["second" if "page=2" in path else "first"]

    endpoint = arm_server(route)
    answers["first"] = {"value": [{"name": "a"}], "nextLink": f"{endpoint}/next?page=2"}
    answers["second"] = {}
    client = _client(endpoint)
    pages = list(arm_pages(client, arm_requests().build_disks_list_request(SUB)))
    assert pages == [[{"name": "a"}], []]


def test_a_next_link_that_leads_back_is_an_error_not_an_endless_listing(
    arm_server: Callable[[Route], str],
) -> None:
    calls: list[str] = []
    endpoint = ""

    def route(path: str) -> tuple[int, Any]:
        calls.append(path)
        page = "b" if "page=a" in path else "a"  # first -> a -> b -> a -> ...
        return 200, {"value": [{"name": page}], "nextLink": f"{endpoint}/next?page={page}"}

    endpoint = arm_server(route)
    client = _client(endpoint)
    with pytest.raises(MalformedBody, match="leads back to a page already read"):
        list(arm_pages(client, arm_requests().build_disks_list_request(SUB)))
    # the first page, a, then b, whose link leads back to a: stopped before asking for it again
    assert [c.rpartition("?")[2] for c in calls[1:]] == ["page=a", "page=b"]


def test_an_arm_error_names_its_code_as_the_sdk_did(arm_server: Callable[[Route], str]) -> None:
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    error = {"error": {"code": "AuthorizationFailed", "message": "no Microsoft.Compute read"}}
    client = _client(arm_server(lambda path: (404 if "extensions" in path else 403, error)))
    build = arm_requests()
    with pytest.raises(HttpResponseError) as denied:
        arm_json(client, build.build_disks_list_request(SUB))
    assert denied.value.status_code == 403 and denied.value.error is not None
    assert denied.value.error.code == "AuthorizationFailed"
    with pytest.raises(ResourceNotFoundError):  # the SDK's error_map, kept
        arm_json(client, build.build_virtual_machine_extensions_list_request("rg", "vm", SUB))


def _scan(provider: AzureProvider) -> AuditRun:
    return run_audit([provider], Engine(load_packs()), Scope(providers=["azure"]))


def _fleet_route(vm: dict[str, Any], extensions: Any) -> Route:
    """One VM, nothing else in the subscription, and `extensions` as its extension list."""

    def route(path: str) -> tuple[int, Any]:
        if "/extensions" in path:
            return 200, extensions
        if "/providers/Microsoft.Compute/virtualMachines?" in path:
            return 200, {"value": [vm]}
        return 200, {"value": []}

    return route


def test_a_vm_whose_extension_answer_is_malformed_keeps_agents_unknown(
    arm_server: Callable[[Route], str], tmp_path: Path
) -> None:
    """A hostile or broken answer to one VM's extension call: the VM is reported, its guest
    agents are not cleared (no extension list is not "no extensions"), and the gap says why."""
    vm = fixture("azure_vm_cvm.json")
    endpoint = arm_server(_fleet_route(vm, {"value": "RunCommandLinux"}))
    provider = AzureProvider([SUB], endpoint_url=endpoint, replay=True, retry_total=0)
    run = _scan(provider)
    (scanned,) = run.vms
    (gap,) = [g for g in scanned.gaps if g.call == "virtualMachineExtensions.list"]
    assert gap.code == "MalformedBody" and "'value' is not a list" in gap.message
    assert scanned.parties[Party.GUEST_AGENTS] is not Status.EXCLUDED
    assert not run.coverage.complete


def test_a_malformed_vm_listing_fails_the_subscription(
    arm_server: Callable[[Route], str],
) -> None:
    endpoint = arm_server(_fleet_route({"name": "x"}, {"value": []}))
    broken = arm_server(lambda path: (200, {"value": ["cvm-snp-1"]}))
    for url, ok in ((endpoint, True), (broken, False)):
        provider = AzureProvider([SUB], endpoint_url=url, replay=True, retry_total=0)
        run = _scan(provider)
        (scope,) = run.coverage.scopes
        if ok:
            assert scope.status != "failed"
            continue
        assert scope.status == "failed" and not run.vms and not run.coverage.complete
        assert scope.errors[0].code == "MalformedBody"
        assert scope.errors[0].call == "virtualMachines.listAll"
