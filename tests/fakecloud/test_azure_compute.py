"""fakecloud's Azure handler against the real azure-mgmt-compute client over HTTP.

The resources are the copied fixtures in tests/data/cloud (never ../shared): five VMs in two
resource groups of one subscription and two in a second subscription, with disks, disk
encryption sets, resource SKUs and a VM extension. Bearer auth over plain http uses the policy
tweak of cloud_apis.md 4.3.
"""

from __future__ import annotations

import copy
import http.client
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.fakecloud import FakeCloud, FaultConfig

pytest.importorskip("azure.mgmt.compute")
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.mgmt.compute import ComputeManagementClient

from tests.fakecloud.helpers import fixture, write_json

SUB = "00000000-1111-2222-3333-444444444444"
SUB2 = "11111111-2222-3333-4444-555555555555"
RG = "cc-audit-rg"
OTHER_RG = "Other-RG"
SCOPE = "https://management.azure.com/.default"


def placed(item: dict[str, Any], name: str, sub: str = SUB, rg: str = RG) -> dict[str, Any]:
    """A fixture resource renamed and moved to ``sub``/``rg``, its ids kept consistent."""
    old = item["name"]
    text = json.dumps(item).replace(f"/subscriptions/{SUB}/", f"/subscriptions/{sub}/")
    text = text.replace(f"/resourceGroups/{RG}/", f"/resourceGroups/{rg}/")
    text = text.replace(old, name)
    out: dict[str, Any] = json.loads(text)
    return out


def vms_sub1() -> list[dict[str, Any]]:
    """Five VMs: the three fixtures, a copy of the CVM and one VM in another resource group."""
    listed = fixture("azure_vm_list.json")["value"]
    return [
        *copy.deepcopy(listed),
        placed(fixture("azure_vm_cvm.json"), "cvm-snp-2"),
        placed(fixture("azure_vm_cvm_tdx_vmgs_only.json"), "cvm-tdx-other", rg=OTHER_RG),
    ]


def vms_sub2() -> list[dict[str, Any]]:
    return [
        placed(fixture("azure_vm_cvm.json"), "sub2-cvm", sub=SUB2),
        placed(fixture("azure_vm_trusted_launch.json"), "sub2-tl", sub=SUB2),
    ]


def skus() -> dict[str, Any]:
    doc = fixture("azure_resource_skus_cvm.json")
    east = copy.deepcopy(doc["value"][-1])
    east["name"] = "Standard_D2s_v5"
    east["locations"] = ["EastUS"]
    east["locationInfo"][0]["location"] = "EastUS"
    doc["value"].append(east)
    return doc


def azure_replay(root: Path) -> Path:
    base = f"azure/{SUB}"
    write_json(root, f"{base}/virtualMachines.json", {"value": vms_sub1()})
    write_json(root, f"{base}/disks.json", {"value": [fixture("azure_disk_cvm_os.json")]})
    write_json(
        root, f"{base}/diskEncryptionSets.json", fixture("azure_disk_encryption_sets_cvm.json")
    )
    write_json(root, f"{base}/resourceSkus.json", skus())
    write_json(
        root,
        f"{base}/virtualMachines/cvm-snp-1/extensions.json",
        fixture("azure_vm_extensions_cvm.json"),
    )
    write_json(root, f"{base}/subscription.json", {"displayName": "CC audit demo"})
    write_json(root, f"azure/{SUB2}/virtualMachines.json", {"value": vms_sub2()})
    return root


class FakeCredential:
    """A duck-typed TokenCredential; fakecloud accepts any bearer token."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.scopes.append(scopes)
        return AccessToken("fake-token", int(time.time()) + 3600)


def raw_get(
    endpoint: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """One plain HTTP GET, for what the SDK would never send; the body parsed as JSON."""
    parsed = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers if headers is not None else BEARER)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(body or b"{}")
    finally:
        conn.close()


BEARER = {"Authorization": "Bearer fake-token"}


class LocalBearer(BearerTokenCredentialPolicy):
    """Bearer auth over plain http (fakecloud is loopback only)."""

    def on_request(self, request: Any) -> None:
        request.context.options["enforce_https"] = False
        super().on_request(request)


ClientFactory = Callable[..., Any]
VM_PATH = f"/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines"
API = "api-version=2026-04-01"


def _client_kwargs(credential: FakeCredential, retries: int) -> dict[str, Any]:
    return {
        "authentication_policy": LocalBearer(credential, SCOPE),
        "retry_total": retries,
        "retry_backoff_factor": 0.01,
        "retry_backoff_max": 0.05,
    }


@pytest.fixture
def compute() -> Iterator[ClientFactory]:
    """``compute(fc, sub=SUB, retries=0)`` -> a real ComputeManagementClient on fakecloud."""
    made: list[Any] = []

    def make(fc: FakeCloud, sub: str = SUB, retries: int = 0) -> Any:
        cred = FakeCredential()
        client = ComputeManagementClient(
            cred, sub, base_url=fc.endpoint, **_client_kwargs(cred, retries)
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def replay(tmp_path: Path) -> Path:
    return azure_replay(tmp_path)


def ops(fc: FakeCloud) -> list[tuple[str | None, str | None, int]]:
    return [(r.account, r.operation, r.status) for r in fc.request_log if r.cloud == "azure"]


# ============================================================================ listing and paging
def test_list_all_pages_with_next_link_across_subscriptions(
    replay: Path, compute: ClientFactory
) -> None:
    with FakeCloud(replay, FaultConfig(page_size=2)) as fc:
        first = [vm.name for vm in compute(fc).virtual_machines.list_all()]
        second = [vm.name for vm in compute(fc, SUB2).virtual_machines.list_all()]
        status, _, page = raw_get(fc.endpoint, f"{VM_PATH}?{API}")
        endpoint = fc.endpoint
        status_only = compute(fc).virtual_machines.list_all(
            status_only="true", expand="instanceView"
        )
        assert [vm.name for vm in status_only] == first  # accepted, no effect
    assert first == [vm["name"] for vm in vms_sub1()]
    assert second == ["sub2-cvm", "sub2-tl"]
    listed = [op for op in ops(fc) if op[1] == "virtualMachines.listAll"]
    assert listed[:4] == [(SUB, "virtualMachines.listAll", 200)] * 3 + [
        (SUB2, "virtualMachines.listAll", 200)
    ]  # 5 VMs in pages of 2, then 2 VMs in one page
    assert status == 200 and len(page["value"]) == 2
    next_link = urllib.parse.urlsplit(page["nextLink"])
    assert f"{next_link.scheme}://{next_link.netloc}" == endpoint
    assert next_link.path == VM_PATH
    query = urllib.parse.parse_qs(next_link.query)
    assert query["api-version"] == ["2026-04-01"] and query["$skiptoken"][0]


def test_resource_group_list_and_get_are_case_insensitive(
    replay: Path, compute: ClientFactory
) -> None:
    with FakeCloud(replay, FaultConfig(page_size=2)) as fc:
        client = compute(fc)
        in_rg = [vm.name for vm in client.virtual_machines.list(RG.upper())]
        other = [vm.name for vm in client.virtual_machines.list("other-rg")]
        nowhere = list(client.virtual_machines.list("no-such-rg"))
        vm = client.virtual_machines.get("CC-Audit-RG", "CVM-SNP-1", expand="instanceView")
        with pytest.raises(ResourceNotFoundError) as missing:
            client.virtual_machines.get(RG, "cvm-tdx-other")  # lives in Other-RG
    assert in_rg == ["cvm-snp-1", "cvm-tdx-1", "tl-1", "cvm-snp-2"]
    assert other == ["cvm-tdx-other"] and nowhere == []
    assert vm.name == "cvm-snp-1"
    assert missing.value.status_code == 404
    assert missing.value.error is not None and missing.value.error.code == "ResourceNotFound"
    get = next(r for r in fc.request_log if r.operation == "virtualMachines.get")
    assert (get.cloud, get.account, get.region, get.resource, get.status) == (
        "azure",
        SUB,
        "westeurope",
        "cvm-snp-1",
        200,
    )


# ============================================================================ fixtures round trip
def test_confidential_vm_fixture_round_trips(replay: Path, compute: ClientFactory) -> None:
    with FakeCloud(replay) as fc:
        vm = compute(fc).virtual_machines.get(RG, "cvm-snp-1")
    assert vm.as_dict() == fixture("azure_vm_cvm.json")
    sec = vm.security_profile
    assert sec.security_type == "ConfidentialVM"
    assert sec.uefi_settings.secure_boot_enabled is True
    assert sec.uefi_settings.v_tpm_enabled is True
    managed = vm.storage_profile.os_disk.managed_disk
    assert managed.security_profile.security_encryption_type == "DiskWithVMGuestState"
    assert managed.security_profile.disk_encryption_set.id.endswith("/diskEncryptionSets/cvm-des")
    assert vm.properties.hardware_profile.vm_size == "Standard_DC4as_v5"


def test_disks_encryption_sets_and_skus(replay: Path, compute: ClientFactory) -> None:
    with FakeCloud(replay) as fc:
        client = compute(fc)
        disks = list(client.disks.list())
        rg_disks = list(client.disks.list_by_resource_group(RG))
        one_disk = client.disks.get(RG, disks[0].name)
        sets = {d.name: d for d in client.disk_encryption_sets.list()}
        rg_sets = list(client.disk_encryption_sets.list_by_resource_group(OTHER_RG))
        west = list(client.resource_skus.list(filter="location eq 'WestEurope'"))
        everywhere = [s.name for s in client.resource_skus.list()]
        with pytest.raises(HttpResponseError) as bad_filter:
            list(client.resource_skus.list(filter="name eq 'Standard_DC4as_v5'"))
    assert [d.as_dict() for d in disks] == [fixture("azure_disk_cvm_os.json")]
    assert [d.name for d in rg_disks] == [disks[0].name] and one_disk.name == disks[0].name
    disk = disks[0]
    assert disk.security_profile.security_type == "ConfidentialVM_DiskEncryptedWithCustomerKey"
    assert disk.security_profile.secure_vm_disk_encryption_set_id.endswith("/cvm-des")
    assert sets["cvm-des"].encryption_type == "ConfidentialVmEncryptedWithCustomerKey"
    assert sets["std-des"].encryption_type == "EncryptionAtRestWithCustomerKey"
    assert sets["cvm-des"].active_key.key_url.startswith("https://cvm-kv.vault.azure.net/keys/")
    assert rg_sets == []
    capability = {
        s.name: next(
            (c.value for c in s.capabilities if c.name == "ConfidentialComputingType"), None
        )
        for s in west
    }
    assert capability == {
        "Standard_DC4as_v5": "SNP",
        "Standard_DC4es_v5": "TDX",
        "Standard_DC4as_v6": "SNP",
        "Standard_D4s_v5": None,
    }
    assert everywhere == [*capability, "Standard_D2s_v5"]
    assert bad_filter.value.status_code == 400


def test_vm_extensions(replay: Path, compute: ClientFactory) -> None:
    with FakeCloud(replay) as fc:
        client = compute(fc)
        listed = client.virtual_machine_extensions.list(RG, "cvm-snp-1").value
        none = client.virtual_machine_extensions.list(RG, "tl-1").value
        one = client.virtual_machine_extensions.get(RG, "cvm-snp-1", "guestattestation")
        with pytest.raises(ResourceNotFoundError) as missing:
            client.virtual_machine_extensions.list(RG, "no-such-vm")
    assert [e.as_dict() for e in listed] == fixture("azure_vm_extensions_cvm.json")["value"]
    ext = listed[0]
    assert (ext.properties.publisher, ext.properties.type) == (
        "Microsoft.Azure.Security.LinuxAttestation",
        "GuestAttestation",
    )
    assert one.name == "GuestAttestation"
    assert none == []
    assert missing.value.error is not None and missing.value.error.code == "ResourceNotFound"
    log = [r for r in fc.request_log if r.operation == "virtualMachineExtensions.list"]
    assert [(r.resource, r.region, r.status) for r in log] == [
        ("cvm-snp-1", "westeurope", 200),
        ("tl-1", "westeurope", 200),
        ("no-such-vm", None, 404),
    ]


def test_unknown_enum_values_reach_the_caller_as_strings(
    tmp_path: Path, compute: ClientFactory
) -> None:
    vm = fixture("azure_vm_cvm.json")
    vm["properties"]["securityProfile"]["securityType"] = "ConfidentialVMv2"
    managed = vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]
    managed["securityProfile"]["securityEncryptionType"] = "DiskWithVMGuestStateV2"
    write_json(tmp_path, f"azure/{SUB}/virtualMachines.json", {"value": [vm]})
    with FakeCloud(tmp_path) as fc:
        got = next(iter(compute(fc).virtual_machines.list_all()))
    assert got.security_profile.security_type == "ConfidentialVMv2"
    assert isinstance(got.security_profile.security_type, str)
    encryption = got.storage_profile.os_disk.managed_disk.security_profile
    assert encryption.security_encryption_type == "DiskWithVMGuestStateV2"


# ============================================================================ errors and faults
def test_replayed_authorization_failure(replay: Path, compute: ClientFactory) -> None:
    write_json(
        replay,
        f"azure/{SUB}/virtualMachines.error.json",
        {
            "status": 403,
            "code": "AuthorizationFailed",
            "message": "The client does not have authorization to perform action "
            "'Microsoft.Compute/virtualMachines/read'.",
        },
    )
    with FakeCloud(replay) as fc:
        client = compute(fc, retries=3)
        with pytest.raises(HttpResponseError) as err:
            list(client.virtual_machines.list_all())
        with pytest.raises(HttpResponseError) as ext_err:  # extensions need the VM list
            client.virtual_machine_extensions.list(RG, "cvm-snp-1")
        disks = list(client.disks.list())  # other collections are unaffected
    assert err.value.status_code == 403
    assert err.value.error is not None and err.value.error.code == "AuthorizationFailed"
    assert "Microsoft.Compute/virtualMachines/read" in str(err.value)
    assert ext_err.value.status_code == 403 and len(disks) == 1
    assert ops(fc)[0] == (SUB, "virtualMachines.listAll", 403)  # 403 is not retried


def test_throttling_is_absorbed_by_azure_core_retry(replay: Path, compute: ClientFactory) -> None:
    with FakeCloud(replay, FaultConfig(throttle_first=1)) as fc:
        started = time.monotonic()
        vm = compute(fc, retries=2).virtual_machines.get(RG, "cvm-snp-1")
        elapsed = time.monotonic() - started
        status, headers, body = raw_get(fc.endpoint, f"{VM_PATH}?{API}")  # a new fault key
    assert vm.name == "cvm-snp-1"
    assert [(r.operation, r.status, r.fault) for r in fc.request_log[:2]] == [
        ("virtualMachines.get", 429, "throttle"),
        ("virtualMachines.get", 200, None),
    ]
    assert elapsed >= 0.9  # azure-core honoured Retry-After: 1
    assert (status, headers["retry-after"], body["error"]["code"]) == (429, "1", "TooManyRequests")


def test_injected_server_errors(replay: Path, compute: ClientFactory) -> None:
    with (
        FakeCloud(replay, FaultConfig(error_rate=1.0)) as fc,
        pytest.raises(HttpResponseError) as err,
    ):
        list(compute(fc, retries=0).disks.list())
    assert err.value.status_code in (500, 503)
    assert err.value.error is not None
    assert err.value.error.code in ("InternalServerError", "ServiceUnavailable")
    assert fc.request_log[0].fault in ("internal_error", "unavailable")


def test_unknown_subscription(replay: Path, compute: ClientFactory) -> None:
    other = "99999999-0000-0000-0000-000000000000"
    with FakeCloud(replay) as fc, pytest.raises(HttpResponseError) as err:
        list(compute(fc, other).virtual_machines.list_all())
    assert err.value.status_code == 404
    assert err.value.error is not None and err.value.error.code == "SubscriptionNotFound"
    assert f"The subscription '{other}' could not be found." in str(err.value)


def test_requests_the_sdk_would_not_send(replay: Path) -> None:
    with FakeCloud(replay, FaultConfig(page_size=2)) as fc:
        no_version = raw_get(fc.endpoint, VM_PATH)
        no_bearer = raw_get(fc.endpoint, f"{VM_PATH}?{API}", headers={})
        basic = raw_get(fc.endpoint, f"{VM_PATH}?{API}", {"Authorization": "Basic eDp5"})
        vm_filter = raw_get(fc.endpoint, f"{VM_PATH}?{API}&$filter=name%20eq%20'x'")
        bad_token = raw_get(fc.endpoint, f"{VM_PATH}?{API}&$skiptoken=garbage")
        first = raw_get(fc.endpoint, f"{VM_PATH}?{API}")[2]
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(first["nextLink"]).query)
        rg_path = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute"
        foreign = raw_get(
            fc.endpoint, f"{rg_path}/virtualMachines?{API}&$skiptoken={token['$skiptoken'][0]}"
        )
        unknown_type = raw_get(fc.endpoint, f"{rg_path}/snapshots?{API}")
        lower = raw_get(
            fc.endpoint, f"/SUBSCRIPTIONS/{SUB.upper()}/providers/microsoft.compute/DISKS?{API}"
        )
    assert (no_version[0], no_version[2]["error"]["code"]) == (400, "MissingApiVersionParameter")
    assert (no_bearer[0], no_bearer[2]["error"]["code"]) == (401, "AuthenticationFailed")
    assert basic[0] == 401
    assert vm_filter[0] == 400
    assert vm_filter[2]["error"]["message"] == "fakecloud does not support $filter"
    assert (bad_token[0], bad_token[2]["error"]["code"]) == (400, "InvalidSkipToken")
    assert foreign[0] == 400  # a token is bound to the list that issued it
    assert (unknown_type[0], unknown_type[2]["error"]["code"]) == (404, "InvalidResourceType")
    assert lower[0] == 200 and len(lower[2]["value"]) == 1
    assert all(r.cloud == "azure" for r in fc.request_log)


def test_sdk_refuses_bearer_over_http_without_the_policy(replay: Path) -> None:
    """What the LocalBearer policy is for (cloud_apis.md 4.3)."""
    from azure.core.exceptions import ServiceRequestError

    with FakeCloud(replay) as fc:
        client = ComputeManagementClient(FakeCredential(), SUB, base_url=fc.endpoint, retry_total=0)
        with pytest.raises(ServiceRequestError, match="non-TLS"):
            client.virtual_machines.get(RG, "cvm-snp-1")
        client.close()
    assert fc.request_log == []


def test_missing_bearer_is_an_authentication_error(replay: Path) -> None:
    """A client without credential policy sends no Authorization: 401 AuthenticationFailed."""
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    with FakeCloud(replay) as fc:
        cred = FakeCredential()
        client = ComputeManagementClient(
            cred, SUB, base_url=fc.endpoint, authentication_policy=SansIOHTTPPolicy()
        )
        with pytest.raises(ClientAuthenticationError) as err:
            client.virtual_machines.get(RG, "cvm-snp-1")
        client.close()
    assert err.value.status_code == 401
    assert err.value.error is not None and err.value.error.code == "AuthenticationFailed"


# ============================================================================ replay validation
def test_malformed_json_is_a_500_naming_the_file(replay: Path) -> None:
    (replay / f"azure/{SUB}/disks.json").write_text('{"value": [', encoding="utf-8")
    with FakeCloud(replay) as fc:
        status, _, body = raw_get(
            fc.endpoint, f"/subscriptions/{SUB}/providers/Microsoft.Compute/disks?{API}"
        )
    assert status == 500
    assert body["error"]["code"] == "InternalServerError"
    assert f"azure/{SUB}/disks.json" in body["error"]["message"]
    assert "malformed JSON" in body["error"]["message"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda vm: vm["properties"]["securityProfile"].update(securityTyp="ConfidentialVM"),
            "properties.securityProfile.securityTyp: unknown key for SecurityProfile; "
            "did you mean 'securityType'?",
        ),
        (
            lambda vm: vm["properties"]["securityProfile"]["uefiSettings"].update(
                vTpmEnabled="true"
            ),
            "properties.securityProfile.uefiSettings.vTpmEnabled: expected a boolean",
        ),
        (lambda vm: vm.update(securityProfile={}), "securityProfile: unknown key"),
        (lambda vm: vm.pop("id"), "needs an 'id'"),
    ],
)
def test_items_are_checked_against_the_sdk_models(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], Any], expected: str
) -> None:
    vm = fixture("azure_vm_cvm.json")
    mutate(vm)
    write_json(tmp_path, f"azure/{SUB}/virtualMachines.json", {"value": [vm]})
    with FakeCloud(tmp_path) as fc:
        status, _, body = raw_get(fc.endpoint, f"{VM_PATH}?{API}")
    assert status == 500
    message = body["error"]["message"]
    assert f"azure/{SUB}/virtualMachines.json" in message and "value[0] (cvm-snp-1)" in message
    assert expected in message


def test_replay_must_not_page_itself(tmp_path: Path) -> None:
    write_json(
        tmp_path,
        f"azure/{SUB}/virtualMachines.json",
        {"value": [], "nextLink": "https://management.azure.com/x"},
    )
    with FakeCloud(tmp_path) as fc:
        status, _, body = raw_get(fc.endpoint, f"{VM_PATH}?{API}")
    assert status == 500 and "fakecloud pages lists itself" in body["error"]["message"]


def test_validation_is_skipped_without_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor.fakecloud import azure_handler

    monkeypatch.setattr(azure_handler, "_sdk_models", [None])
    assert azure_handler.model_problem("VirtualMachine", {"bogus": 1}) is None
    monkeypatch.undo()
    assert azure_handler.model_problem("VirtualMachine", {"bogus": 1}) is not None


def test_all_copied_fixtures_pass_the_model_check() -> None:
    from auditor.fakecloud.azure_handler import model_problem

    cases = [
        ("VirtualMachine", [fixture("azure_vm_cvm.json"), fixture("azure_vm_trusted_launch.json")]),
        ("VirtualMachine", fixture("azure_vm_list.json")["value"]),
        ("VirtualMachine", [fixture("azure_vm_cvm_tdx_vmgs_only.json")]),
        ("VirtualMachineInstanceView", [fixture("azure_vm_instance_view_cvm.json")]),
        ("Disk", [fixture("azure_disk_cvm_os.json")]),
        ("DiskEncryptionSet", fixture("azure_disk_encryption_sets_cvm.json")["value"]),
        ("ResourceSku", fixture("azure_resource_skus_cvm.json")["value"]),
        ("VirtualMachineExtension", fixture("azure_vm_extensions_cvm.json")["value"]),
    ]
    for model, items in cases:
        for item in items:
            assert model_problem(model, item) is None, (model, item.get("name"))


# ============================================================================ subscriptions
def _subscription_client() -> Any:
    try:
        from azure.mgmt.resource.subscriptions import SubscriptionClient
    except ImportError:
        try:
            from azure.mgmt.resource import SubscriptionClient  # azure-mgmt-resource < 24
        except ImportError:
            pytest.skip("azure-mgmt-resource(-subscriptions) with SubscriptionClient not installed")
    return SubscriptionClient


def test_subscription_listing(replay: Path) -> None:
    client_cls = _subscription_client()
    with FakeCloud(replay, FaultConfig(page_size=1)) as fc:
        cred = FakeCredential()
        client = client_cls(cred, base_url=fc.endpoint, **_client_kwargs(cred, 0))
        subs = [s.as_dict() for s in client.subscriptions.list()]
        write_json(
            replay,
            "azure/subscriptions.error.json",
            {"status": 403, "code": "AuthorizationFailed", "message": "no tenant access"},
        )
        with pytest.raises(HttpResponseError) as err:
            list(client.subscriptions.list())
        client.close()
    assert [(s["subscriptionId"], s["displayName"], s["state"]) for s in subs] == [
        (SUB, "CC audit demo", "Enabled"),
        (SUB2, SUB2, "Enabled"),
    ]
    assert subs[0]["id"] == f"/subscriptions/{SUB}"
    assert subs[0]["tenantId"] == "00000000-0000-0000-0000-000000000000"
    assert err.value.status_code == 403
    assert [r.operation for r in fc.request_log] == ["subscriptions.list"] * 3
    assert cred.scopes and cred.scopes[0] == (SCOPE,)
