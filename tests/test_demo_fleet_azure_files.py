"""The Azure half of the demo replay estate (examples/demo-fleet/azure/) is made of real API shapes.

Every file is an ARM list body (`{"value": [...]}`, camelCase wire JSON) as the REST API returns
it. Each item is deserialized with azure-mgmt-compute's model for it (`VirtualMachine`, `Disk`,
`DiskEncryptionSet`, `ResourceSku`, `VirtualMachineExtension`) and its key fields are read
through the SDK. The SDK's models are lenient (unknown keys are kept silently), so every item is
also walked against the model's REST field names: an unknown or misspelt key fails, and so does an
enum value the SDK does not know, except the one the README documents (`ConfidentialVMv2`). The
files must agree with each other (disk, encryption-set and SKU references, extension folders) and
are finally listed through the real `ComputeManagementClient` from a loopback server. Layout
contract:

    azure/<subscription-id>/subscription.json                              {"displayName": ...}
    azure/<subscription-id>/virtualMachines[.error].json                    virtualMachines.listAll
    azure/<subscription-id>/disks[.error].json                              disks.list
    azure/<subscription-id>/diskEncryptionSets[.error].json                 diskEncryptionSets.list
    azure/<subscription-id>/resourceSkus[.error].json                       resourceSkus.list
    azure/<subscription-id>/virtualMachines/<vm-name>/extensions[.error].json
    azure/<subscription-id>/virtualMachineScaleSets.json                    (payroll only)
    azure/<subscription-id>/virtualMachineScaleSets/<ss>/virtualMachines.json
    azure/<subscription-id>/virtualMachineScaleSets/<ss>/virtualMachines/<instance>/extensions.json
"""

from __future__ import annotations

import datetime
import enum
import json
import re
import threading
import typing
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

compute_models = pytest.importorskip("azure.mgmt.compute.models")
model_base = pytest.importorskip("azure.mgmt.compute._utils.model_base")
_models_module = pytest.importorskip("azure.mgmt.compute.models._models")

FLEET = Path(__file__).parents[1] / "examples" / "demo-fleet"
AZURE = FLEET / "azure"

PAYROLL = "ab4bd4af-8843-4e36-bac0-04fdd527ff09"
RESEARCH = "d29c65b4-8023-4624-a090-dd5ecb9a3e8e"
LEGAL = "91a5edc1-d385-4ad9-819c-5ca468501fc2"
DISPLAY_NAMES = {
    PAYROLL: "contoso-payroll-prod",
    RESEARCH: "contoso-research-dev",
    LEGAL: "contoso-legal-archive",
}
LOCATIONS = {"westeurope", "northeurope", "germanywestcentral"}
CALLS = ("virtualMachines", "disks", "diskEncryptionSets", "resourceSkus")
MODEL_OF = {
    "virtualMachines": "VirtualMachine",
    "disks": "Disk",
    "diskEncryptionSets": "DiskEncryptionSet",
    "resourceSkus": "ResourceSku",
    "extensions": "VirtualMachineExtension",
    "virtualMachineScaleSets": "VirtualMachineScaleSet",
    "scaleSetVMs": "VirtualMachineScaleSetVM",
    "scaleSetVMExtensions": "VirtualMachineScaleSetVMExtension",
}
#: The AKS cluster in the payroll subscription: scale set -> its instances' ids.
SCALE_SETS = {"aks-cvmpool-31416926-vmss": ["0", "1"], "aks-nodepool1-27182818-vmss": ["0"]}

GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,62}[a-z0-9]$")
RG_RE = re.compile(r"^rg-[a-z0-9-]+$")
OS_DISK_RE = re.compile(r"^(?P<vm>[a-z][a-z0-9-]+)_OsDisk_1_[0-9a-f]{32}$")
ARM_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{1,7}\+00:00$")
RESOURCE_ID_RE = re.compile(
    r"^/subscriptions/(?P<sub>[0-9a-f-]{36})/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/(?P<type>[A-Za-z.]+/[A-Za-z]+)/(?P<name>[^/]+)$"
)
KEY_URL_RE = re.compile(
    r"^https://(?P<vault>[a-z0-9-]{3,24})\.(?:vault\.azure\.net|managedhsm\.azure\.net)"
    r"/keys/(?P<key>[A-Za-z0-9-]+)/(?P<version>[0-9a-f]{32})$"
)
VAULT_ID_RE = re.compile(
    r"^/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+/providers/Microsoft\.KeyVault"
    r"/(?P<kind>vaults|managedHSMs)/(?P<vault>[a-z0-9-]+)$"
)

#: The one enum value the SDK does not know, on purpose (README: undetermined, not standard).
UNKNOWN_ENUM_VALUES = {
    ("research-gpu-cvm", "properties.securityProfile.securityType", "ConfidentialVMv2"),
}

#: Enums the SDK keeps for backward compatibility only: most current values are missing from them.
#: VM sizes are checked against resourceSkus.json instead.
OPEN_ENUMS = {"VirtualMachineSizeTypes"}

#: Extensions this estate uses: name -> (publisher, type).
EXTENSION_TYPES = {
    "GuestAttestation": ("Microsoft.Azure.Security.LinuxAttestation", "GuestAttestation"),
    "AzureMonitorLinuxAgent": ("Microsoft.Azure.Monitor", "AzureMonitorLinuxAgent"),
    "RunCommandLinux": ("Microsoft.CPlat.Core", "RunCommandLinux"),
    "AzurePolicyforLinux": ("Microsoft.GuestConfiguration", "ConfigurationforLinux"),
}

#: VM security encryption type (+ customer DES?) -> the OS disk resource's securityType.
DISK_SECURITY_TYPE = {
    ("DiskWithVMGuestState", True): "ConfidentialVM_DiskEncryptedWithCustomerKey",
    ("DiskWithVMGuestState", False): "ConfidentialVM_DiskEncryptedWithPlatformKey",
    ("VMGuestStateOnly", False): "ConfidentialVM_VMGuestStateOnlyEncryptedWithPlatformKey",
    ("NonPersistedTPM", False): "ConfidentialVM_NonPersistedTPM",
}

#: (subscription, vm) -> the story the README tells.
ESTATE: dict[tuple[str, str], dict[str, Any]] = {
    (PAYROLL, "payroll-db-cvm"): {
        "size": "Standard_DC4as_v5",
        "location": "westeurope",
        "security_type": "ConfidentialVM",
        "os_encryption": "DiskWithVMGuestState",
        "capability": "SNP",
        "disk_encryption": ["EncryptionAtRestWithPlatformKey", "EncryptionAtRestWithCustomerKey"],
        "customer_key": True,
        "encryption_at_host": None,
        "extensions": ["GuestAttestation"],
    },
    (PAYROLL, "payroll-batch-tdx"): {
        "size": "Standard_DC4es_v5",
        "location": "westeurope",
        "security_type": "ConfidentialVM",
        "os_encryption": "VMGuestStateOnly",
        "capability": "TDX",
        "disk_encryption": ["EncryptionAtRestWithPlatformKey"],
        "customer_key": False,
        "encryption_at_host": None,
        "extensions": ["AzureMonitorLinuxAgent"],
    },
    (PAYROLL, "payroll-web-tl"): {
        "size": "Standard_D4s_v5",
        "location": "westeurope",
        "security_type": "TrustedLaunch",
        "os_encryption": None,
        "capability": None,
        "disk_encryption": ["EncryptionAtRestWithPlatformKey"],
        "customer_key": False,
        "encryption_at_host": True,
        "extensions": ["AzurePolicyforLinux"],
    },
    (PAYROLL, "payroll-jump-std"): {
        "size": "Standard_B2s",
        "location": "germanywestcentral",
        "security_type": None,  # no securityProfile at all: Standard
        "os_encryption": None,
        "capability": None,
        "disk_encryption": ["EncryptionAtRestWithPlatformKey"],
        "customer_key": False,
        "encryption_at_host": None,
        "extensions": ["RunCommandLinux", "AzureMonitorLinuxAgent"],
    },
    (RESEARCH, "research-nb-cvm"): {
        "size": "Standard_EC4as_v5",
        "location": "northeurope",
        "security_type": "ConfidentialVM",
        "os_encryption": "NonPersistedTPM",
        "capability": "SNP",
        "disk_encryption": ["EncryptionAtRestWithPlatformKey"],
        "customer_key": False,
        "encryption_at_host": None,
        "extensions": [],
    },
    (RESEARCH, "research-gpu-cvm"): {
        "size": "Standard_NCC40ads_H100_v5",
        "location": "westeurope",
        "security_type": "ConfidentialVMv2",
        "os_encryption": "VMGuestStateOnly",
        "capability": "SNP",
        "disk_encryption": ["EncryptionAtRestWithPlatformKey"],
        "customer_key": False,
        "encryption_at_host": None,
        "extensions": [],
    },
}


# --------------------------------------------------------------------------- helpers


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def rel(path: Path) -> str:
    return str(path.relative_to(FLEET))


def subscriptions() -> list[Path]:
    return sorted(p for p in AZURE.iterdir() if p.is_dir()) if AZURE.is_dir() else []


def readable() -> list[Path]:
    return [s for s in subscriptions() if (s / "virtualMachines.json").exists()]


def json_files() -> list[Path]:
    return sorted(AZURE.rglob("*.json")) if AZURE.is_dir() else []


def error_files() -> list[Path]:
    return sorted(AZURE.rglob("*.error.json")) if AZURE.is_dir() else []


def values(sub: Path, call: str) -> list[dict[str, Any]]:
    path = sub / f"{call}.json"
    return load(path)["value"] if path.exists() else []


def extensions_of(sub: Path, vm_name: str) -> list[dict[str, Any]]:
    path = sub / "virtualMachines" / vm_name / "extensions.json"
    return load(path)["value"] if path.exists() else []


def items() -> list[tuple[str, str, int, dict[str, Any]]]:
    """(subscription, kind, index, item) for every item of every list file."""
    out = []
    for sub in subscriptions():
        for call in CALLS:
            out.extend((sub.name, call, i, v) for i, v in enumerate(values(sub, call)))
        for path in sorted(sub.glob("virtualMachines/*/extensions.json")):
            out.extend((sub.name, "extensions", i, v) for i, v in enumerate(load(path)["value"]))
        sets = values(sub, "virtualMachineScaleSets")
        out.extend((sub.name, "virtualMachineScaleSets", i, v) for i, v in enumerate(sets))
        for path in sorted(sub.glob("virtualMachineScaleSets/*/virtualMachines.json")):
            out.extend((sub.name, "scaleSetVMs", i, v) for i, v in enumerate(load(path)["value"]))
        for path in sorted(sub.glob("virtualMachineScaleSets/*/virtualMachines/*/extensions.json")):
            found = load(path)["value"]
            out.extend((sub.name, "scaleSetVMExtensions", i, v) for i, v in enumerate(found))
    return out


def item_id(item: tuple[str, str, int, dict[str, Any]]) -> str:
    return f"{DISPLAY_NAMES.get(item[0], item[0])}/{item[1]}/{item[3].get('name', item[2])}"


def all_vms() -> list[tuple[Path, dict[str, Any]]]:
    return [(sub, vm) for sub in readable() for vm in values(sub, "virtualMachines")]


def vm_id(item: tuple[Path, dict[str, Any]]) -> str:
    return f"{DISPLAY_NAMES[item[0].name]}/{item[1]['name']}"


def parse_id(resource_id: str) -> dict[str, str]:
    m = RESOURCE_ID_RE.match(resource_id)
    assert m, f"not an ARM resource id: {resource_id}"
    return m.groupdict()


def model(kind: str) -> Any:
    return getattr(compute_models, MODEL_OF[kind])


def os_managed(vm: dict[str, Any]) -> dict[str, Any]:
    return vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]


# ------------------------------------------------------------- strict key walk (the SDK is lenient)


def rest_fields(cls: type) -> dict[str, Any]:
    """REST name -> type annotation for a TypeSpec-generated model (azure-mgmt-compute >= 38)."""
    cls()  # the model computes its rest-field table on first instantiation
    namespace = dict(vars(_models_module))
    namespace["_models"] = compute_models
    hints = typing.get_type_hints(cls, globalns=namespace)
    table = cls._attr_to_rest_field  # type: ignore[attr-defined]
    return {rf._rest_name: hints.get(attr) for attr, rf in table.items()}


def walk(
    cls: type, data: Any, path: str, errors: list[str], unknown: list[tuple[str, str]]
) -> None:
    if not isinstance(data, dict):
        errors.append(f"{path}: expected an object for {cls.__name__}")
        return
    fields = rest_fields(cls)
    for key, value in data.items():
        if key not in fields:
            errors.append(f"{path}.{key}: not a REST field of {cls.__name__}")
            continue
        check(fields[key], value, f"{path}.{key}", errors, unknown)


def check(
    tp: Any, value: Any, path: str, errors: list[str], unknown: list[tuple[str, str]]
) -> None:
    if value is None:
        return
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            check(members[0], value, path, errors, unknown)
            return
        enums = [a for a in members if isinstance(a, type) and issubclass(a, enum.Enum)]
        if str in members and len(enums) == 1 and len(members) == 2:  # an extensible enum
            if not isinstance(value, str):
                errors.append(f"{path}: expected a string")
            elif enums[0].__name__ in OPEN_ENUMS:
                pass
            elif value not in {e.value for e in enums[0]}:
                unknown.append((path, value))
            return
        errors.append(f"{path}: unhandled union {tp}")
        return
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for i, v in enumerate(value):
            check(args[0], v, f"{path}[{i}]", errors, unknown)
        return
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object")
            return
        for k, v in value.items():
            check(args[1], v, f"{path}[{k}]", errors, unknown)
        return
    if isinstance(tp, type) and model_base._is_model(tp):
        walk(tp, value, path, errors, unknown)
        return
    if tp is typing.Any:
        return
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    elif tp is datetime.datetime:
        ok = isinstance(value, str) and bool(ARM_TIME_RE.match(value))
    else:
        errors.append(f"{path}: unhandled type {tp!r}")
        return
    if not ok:
        errors.append(f"{path}: {value!r} is not a {getattr(tp, '__name__', tp)}")


def test_walker_rejects_unknown_keys_and_values() -> None:
    """The walk catches what VirtualMachine(...) silently accepts."""
    bad = {"properties": {"securityProfile": {"securityTyp": "ConfidentialVM"}, "vmId": 5}}
    compute_models.VirtualMachine(bad)  # the SDK itself does not complain
    errors: list[str] = []
    unknown: list[tuple[str, str]] = []
    walk(compute_models.VirtualMachine, bad, "vm", errors, unknown)
    assert any("securityTyp" in e for e in errors) and any("vmId" in e for e in errors)
    walk(compute_models.Disk, {"properties": {"encryption": {"type": "Foo"}}}, "d", [], unknown)
    assert unknown == [("d.properties.encryption.type", "Foo")]


# --------------------------------------------------------------------------- layout


def test_layout_contract() -> None:
    assert AZURE.is_dir(), f"missing {AZURE}"
    for path in sorted(AZURE.rglob("*")):
        parts = path.relative_to(AZURE).parts
        assert GUID_RE.match(parts[0]), f"top level holds subscription folders only: {rel(path)}"
        if path.is_dir():
            continue
        assert path.suffix == ".json", f"unexpected file: {rel(path)}"
        stem = parts[-1].removesuffix(".json").removesuffix(".error")
        if len(parts) == 2:
            calls = (*CALLS, "subscription", "virtualMachineScaleSets")
            assert stem in calls, f"{rel(path)}: not a subscription call"
            assert parts[-1] != "subscription.error.json", rel(path)
        elif parts[1] == "virtualMachineScaleSets":
            assert parts[0] == PAYROLL and parts[2] in SCALE_SETS, rel(path)
            if len(parts) == 4:
                assert stem == "virtualMachines", rel(path)
            else:
                assert len(parts) == 6 and parts[3] == "virtualMachines", rel(path)
                assert parts[4] in SCALE_SETS[parts[2]] and stem == "extensions", rel(path)
        else:
            assert len(parts) == 4 and parts[1] == "virtualMachines", rel(path)
            assert NAME_RE.match(parts[2]), f"bad VM folder: {rel(path)}"
            assert stem == "extensions", rel(path)


def test_subscriptions() -> None:
    assert {s.name for s in subscriptions()} == set(DISPLAY_NAMES)
    assert {s.name for s in readable()} == {PAYROLL, RESEARCH}
    for sub in readable():
        assert load(sub / "subscription.json") == {"displayName": DISPLAY_NAMES[sub.name]}


@pytest.mark.parametrize("sub", readable(), ids=lambda s: DISPLAY_NAMES[s.name])
def test_every_subscription_call_is_answered(sub: Path) -> None:
    files = {p.name for p in sub.iterdir() if p.is_file()}
    for call in CALLS:
        answers = {f"{call}.json", f"{call}.error.json"} & files
        assert len(answers) == 1, f"{sub.name}: {call} needs exactly one of .json/.error.json"


def test_unreadable_subscription_has_only_the_listing_error() -> None:
    files = sorted(p.relative_to(AZURE / LEGAL) for p in (AZURE / LEGAL).rglob("*"))
    assert files == [Path("virtualMachines.error.json")]


@pytest.mark.parametrize("path", json_files(), ids=rel)
def test_json_is_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n", (
        f"{rel(path)}: not 2-space indented JSON with a final newline"
    )


@pytest.mark.parametrize("path", json_files(), ids=rel)
def test_list_bodies(path: Path) -> None:
    if path.name.endswith(".error.json") or path.name == "subscription.json":
        return
    body = load(path)
    assert set(body) == {"value"} and isinstance(body["value"], list), rel(path)


def test_readme_describes_the_estate() -> None:
    text = (FLEET / "README.md").read_text(encoding="utf-8")
    for sub, name in DISPLAY_NAMES.items():
        assert sub in text and name in text, f"README does not describe subscription {name}"
    for _, vm in all_vms():
        assert vm["name"] in text, f"README does not describe VM {vm['name']}"
    assert "\n## Microsoft Azure (`azure/`)\n" in text
    assert "\n## Google Cloud (`gcp/`)\n" in text, "the GCP part must stay"
    assert "\n| Account | Region | Instance |" in text, "the AWS part must stay"
    assert "ConfidentialVMv2" in text and "AuthorizationFailed" in text


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("path", error_files(), ids=rel)
def test_error_files(path: Path) -> None:
    err = load(path)
    assert set(err) == {"status", "code", "message"}, f"{rel(path)}: keys {sorted(err)}"
    assert isinstance(err["status"], int) and 400 <= err["status"] <= 599
    assert isinstance(err["code"], str) and re.fullmatch(r"[A-Z][A-Za-z]+", err["code"])
    assert isinstance(err["message"], str) and err["message"]
    sub = path.relative_to(AZURE).parts[0]
    if err["code"] == "AuthorizationFailed":
        assert err["status"] == 403
        m = re.fullmatch(
            r"The client '(?P<client>[0-9a-f-]{36})' with object id '(?P<oid>[0-9a-f-]{36})' does"
            r" not have authorization to perform action '(?P<action>Microsoft\.Compute/[A-Za-z/]+"
            r"/read)' over scope '(?P<scope>/subscriptions/[0-9a-f-]{36})' or the scope is"
            r" invalid\. If access was recently granted, please refresh your credentials\.",
            err["message"],
        )
        assert m, f"{rel(path)}: not ARM's AuthorizationFailed message"
        assert GUID_RE.match(m["client"]) and GUID_RE.match(m["oid"])
        assert m["scope"] == f"/subscriptions/{sub}"
        call = path.name.removesuffix(".error.json")
        assert m["action"] == f"Microsoft.Compute/{call}/read"


def test_legal_archive_listing_is_denied() -> None:
    err = load(AZURE / LEGAL / "virtualMachines.error.json")
    assert (err["status"], err["code"]) == (403, "AuthorizationFailed")


# --------------------------------------------------------------------------- strict models


@pytest.mark.parametrize("item", items(), ids=item_id)
def test_item_matches_the_sdk_model(item: tuple[str, str, int, dict[str, Any]]) -> None:
    sub, kind, _, data = item
    cls = model(kind)
    errors: list[str] = []
    unknown: list[tuple[str, str]] = []
    walk(cls, data, "", errors, unknown)
    assert not errors, errors
    allowed = {(p, v) for name, p, v in UNKNOWN_ENUM_VALUES if name == data.get("name")}
    found = {(p.removeprefix("."), v) for p, v in unknown}
    assert found == allowed, f"enum values the SDK does not know: {sorted(found - allowed)}"
    obj = cls(data)
    assert obj.name == data["name"]
    if kind in ("scaleSetVMs", "scaleSetVMExtensions"):
        assert obj.id.startswith(f"/subscriptions/{sub}/resourceGroups/MC_")
        assert obj.location in LOCATIONS
    elif kind != "resourceSkus":
        parent, _, child = obj.id.partition("/extensions/")
        assert parse_id(parent)["sub"] == sub and obj.id.endswith(f"/{obj.name}")
        assert (child == obj.name) is (kind == "extensions")
        assert obj.location in LOCATIONS


def test_every_unknown_enum_value_is_in_the_estate() -> None:
    names = {data.get("name") for _, _, _, data in items()}
    assert {name for name, _, _ in UNKNOWN_ENUM_VALUES} <= names


@pytest.mark.parametrize("item", all_vms(), ids=vm_id)
def test_vm_through_the_sdk(item: tuple[Path, dict[str, Any]]) -> None:
    sub, raw = item
    story = ESTATE[(sub.name, raw["name"])]
    vm = compute_models.VirtualMachine(raw)
    assert vm.type == "Microsoft.Compute/virtualMachines"
    assert parse_id(vm.id)["type"] == "Microsoft.Compute/virtualMachines"
    assert RG_RE.match(parse_id(vm.id)["rg"])
    assert vm.hardware_profile.vm_size == story["size"]
    assert vm.location == story["location"]
    assert vm.provisioning_state == "Succeeded"
    assert isinstance(vm.time_created, datetime.datetime) and vm.time_created.tzinfo
    assert datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC) <= vm.time_created
    assert vm.time_created < datetime.datetime(2026, 11, 22, tzinfo=datetime.UTC)
    profile = vm.security_profile
    if story["security_type"] is None:
        assert profile is None, f"{vm.name}: Standard VMs here carry no securityProfile"
    else:
        assert profile.security_type == story["security_type"]
        assert isinstance(profile.security_type, str)
        assert profile.uefi_settings.secure_boot_enabled is True
        assert profile.uefi_settings.v_tpm_enabled is True
        assert profile.encryption_at_host == story["encryption_at_host"]
    if story["security_type"] == "ConfidentialVMv2":
        known = {e.value for e in compute_models.SecurityTypes}
        assert profile.security_type not in known, "the unknown type is now known: update README"
    os_disk = vm.storage_profile.os_disk
    assert os_disk.os_type == "Linux" and os_disk.create_option == "FromImage"
    managed = os_disk.managed_disk
    sec = managed.security_profile
    if story["os_encryption"] is None:
        assert sec is None
    else:
        assert sec.security_encryption_type == story["os_encryption"]
        assert (sec.disk_encryption_set is not None) is (story["customer_key"])
    confidential = story["security_type"] not in (None, "Standard", "TrustedLaunch")
    assert (sec is not None) is confidential, "securityEncryptionType is for Confidential VMs only"
    for data_disk in vm.storage_profile.data_disks:
        assert data_disk.managed_disk.security_profile is None, "no confidential data disks"
    assert vm.os_profile.linux_configuration.provision_vm_agent is True
    assert vm.os_profile.allow_extension_operations is True
    image = vm.storage_profile.image_reference
    if confidential:
        assert image.sku in ("22_04-lts-cvm", "cvm"), f"{vm.name}: not a CVM image"
    nic = vm.network_profile.network_interfaces[0]
    assert parse_id(nic.id)["rg"] == parse_id(vm.id)["rg"]


@pytest.mark.parametrize("item", all_vms(), ids=vm_id)
def test_vm_id_is_a_guid(item: tuple[Path, dict[str, Any]]) -> None:
    value = item[1]["properties"]["vmId"]
    assert GUID_RE.match(value) and str(uuid.UUID(value)) == value, value


def test_vm_ids_are_unique() -> None:
    ids = [vm["properties"]["vmId"] for _, vm in all_vms()]
    assert len(ids) == len(set(ids)), "guest evidence is matched by vmId: it must be unique"
    disk_ids = [d["properties"]["uniqueId"] for sub in readable() for d in values(sub, "disks")]
    assert len(disk_ids) == len(set(disk_ids))
    assert not set(ids) & set(disk_ids)


def test_estate_is_complete() -> None:
    assert {(sub.name, vm["name"]) for sub, vm in all_vms()} == set(ESTATE)


# --------------------------------------------------------------------------- cross-file


@pytest.mark.parametrize("sub", readable(), ids=lambda s: DISPLAY_NAMES[s.name])
def test_disks_match_vms(sub: Path) -> None:
    disks = {d["id"]: d for d in values(sub, "disks")}
    sets = {s["id"]: s for s in values(sub, "diskEncryptionSets")}
    attached: set[str] = set()
    for raw in values(sub, "virtualMachines"):
        story = ESTATE[(sub.name, raw["name"])]
        storage = raw["properties"]["storageProfile"]
        refs = [(storage["osDisk"], True)] + [(d, False) for d in storage["dataDisks"]]
        kinds = []
        for ref, boot in refs:
            managed = ref["managedDisk"]
            assert managed["id"] in disks, f"{raw['name']}: disk {managed['id']} not in disks.json"
            assert parse_id(managed["id"])["name"] == ref["name"]
            attached.add(managed["id"])
            disk = compute_models.Disk(disks[managed["id"]])
            assert disk.managed_by == raw["id"]
            assert disk.location == raw["location"]
            assert (disk.zones or []) == raw.get("zones", [])
            assert disk.disk_size_gb == ref["diskSizeGB"]
            assert disk.disk_size_bytes == disk.disk_size_gb * 2**30
            assert disk.sku.name == managed["storageAccountType"]
            assert disk.disk_state == "Attached" and disk.provisioning_state == "Succeeded"
            assert GUID_RE.match(disk.unique_id)
            assert disk.time_created >= compute_models.VirtualMachine(raw).time_created
            kinds.append(disk.encryption.type)
            # server-side encryption: the disk's set is the VM's managedDisk.diskEncryptionSet
            sse_set = (managed.get("diskEncryptionSet") or {}).get("id")
            assert disk.encryption.disk_encryption_set_id == sse_set
            if sse_set:
                assert disk.encryption.type != "EncryptionAtRestWithPlatformKey"
                assert sets[sse_set]["properties"]["encryptionType"] == disk.encryption.type
            else:
                assert disk.encryption.type == "EncryptionAtRestWithPlatformKey"
            # confidential encryption (OS disk only)
            sec = managed.get("securityProfile")
            if boot:
                m = OS_DISK_RE.match(ref["name"])
                assert m and m["vm"] == raw["name"], ref["name"]
                assert disk.os_type == "Linux" and disk.hyper_v_generation == "V2"
            if sec is None:
                expected = (
                    "TrustedLaunch" if boot and story["security_type"] == "TrustedLaunch" else None
                )
                actual = disk.security_profile.security_type if disk.security_profile else None
                assert actual == expected, f"{ref['name']}: disk securityType {actual}"
                continue
            assert boot, "confidential encryption applies to the OS disk only"
            cvm_set = (sec.get("diskEncryptionSet") or {}).get("id")
            key = (sec["securityEncryptionType"], cvm_set is not None)
            assert disk.security_profile.security_type == DISK_SECURITY_TYPE[key]
            assert disk.security_profile.secure_vm_disk_encryption_set_id == cvm_set
            if cvm_set:
                des = compute_models.DiskEncryptionSet(sets[cvm_set])
                assert des.encryption_type == "ConfidentialVmEncryptedWithCustomerKey"
        assert sorted(set(kinds)) == sorted(story["disk_encryption"]), raw["name"]
    assert attached == set(disks), f"disks attached to no VM: {sorted(set(disks) - attached)}"


@pytest.mark.parametrize("sub", readable(), ids=lambda s: DISPLAY_NAMES[s.name])
def test_encryption_sets(sub: Path) -> None:
    used = set()
    for d in values(sub, "disks"):
        props = d["properties"]
        used.add(props["encryption"].get("diskEncryptionSetId"))
        used.add((props.get("securityProfile") or {}).get("secureVMDiskEncryptionSetId"))
    used.discard(None)
    sets = values(sub, "diskEncryptionSets")
    assert {s["id"] for s in sets} == used, "every encryption set is used, every used one listed"
    for raw in sets:
        des = compute_models.DiskEncryptionSet(raw)
        assert des.type == "Microsoft.Compute/diskEncryptionSets"
        assert des.provisioning_state == "Succeeded"
        assert des.identity.type == "SystemAssigned" and GUID_RE.match(des.identity.principal_id)
        key = des.active_key
        url = KEY_URL_RE.match(key.key_url)
        vault = VAULT_ID_RE.match(key.source_vault.id)
        assert url and vault, f"{des.name}: key {key.key_url} in {key.source_vault.id}"
        assert url["vault"] == vault["vault"], "the key URL names another vault"
        host = "vault.azure.net" if vault["kind"] == "vaults" else "managedhsm.azure.net"
        assert host in key.key_url
        assert parse_id(key.source_vault.id)["sub"] == sub.name
        disks = [
            d
            for d in values(sub, "disks")
            if des.id
            in (
                d["properties"]["encryption"].get("diskEncryptionSetId"),
                (d["properties"].get("securityProfile") or {}).get("secureVMDiskEncryptionSetId"),
            )
        ]
        assert disks and all(d["location"] == des.location for d in disks)


@pytest.mark.parametrize("sub", readable(), ids=lambda s: DISPLAY_NAMES[s.name])
def test_skus_match_vms(sub: Path) -> None:
    skus = {s["name"]: compute_models.ResourceSku(s) for s in values(sub, "resourceSkus")}
    assert len(skus) == len(values(sub, "resourceSkus")), "one entry per size"
    used = set()
    for raw in values(sub, "virtualMachines"):
        story = ESTATE[(sub.name, raw["name"])]
        size, location = raw["properties"]["hardwareProfile"]["vmSize"], raw["location"]
        used.add(size)
        assert size in skus, f"{raw['name']}: size {size} not in resourceSkus.json"
        sku = skus[size]
        assert sku.resource_type == "virtualMachines" and sku.size == size.removeprefix("Standard_")
        assert location in sku.locations
        info = next(i for i in sku.location_info if i.location == location)
        assert set(raw.get("zones", [])) <= set(info.zones)
        caps = {c.name: c.value for c in sku.capabilities}
        assert all(isinstance(v, str) for v in caps.values()), "capability values are strings"
        assert caps.get("ConfidentialComputingType") == story["capability"]
        assert "V2" in caps["HyperVGenerations"].split(",")
        if story["encryption_at_host"]:
            assert caps["EncryptionAtHostSupported"] == "True"
    assert set(skus) == used, "resourceSkus.json lists the sizes in use"
    for sku in skus.values():
        assert set(sku.locations) <= LOCATIONS and sku.restrictions == []
        assert [i.location for i in sku.location_info] == sku.locations


@pytest.mark.parametrize("sub", readable(), ids=lambda s: DISPLAY_NAMES[s.name])
def test_extension_folders_match_vms(sub: Path) -> None:
    folders = {p.name for p in (sub / "virtualMachines").iterdir() if p.is_dir()}
    assert folders == {vm["name"] for vm in values(sub, "virtualMachines")}


@pytest.mark.parametrize("item", all_vms(), ids=vm_id)
def test_extensions(item: tuple[Path, dict[str, Any]]) -> None:
    sub, raw = item
    listed = extensions_of(sub, raw["name"])
    assert [e["name"] for e in listed] == ESTATE[(sub.name, raw["name"])]["extensions"]
    for data in listed:
        ext = compute_models.VirtualMachineExtension(data)
        assert ext.type == "Microsoft.Compute/virtualMachines/extensions"
        assert ext.id == f"{raw['id']}/extensions/{ext.name}"
        assert ext.location == raw["location"]
        # `ext.type` is the resource type; the handler type is `properties.type`
        assert (ext.publisher, ext.properties.type) == EXTENSION_TYPES[ext.name]
        assert re.fullmatch(r"\d+\.\d+", ext.type_handler_version)
        assert ext.provisioning_state == "Succeeded"
        assert "protectedSettings" not in data["properties"], "GET never returns secrets"


# --------------------------------------------------------------------------- the real client


class _ArmReplay(BaseHTTPRequestHandler):
    """A minimal ARM replay of the fleet: the list calls the Azure collector makes."""

    routes: typing.ClassVar[dict[str, str]] = {
        "providers/microsoft.compute/virtualmachines": "virtualMachines",
        "providers/microsoft.compute/disks": "disks",
        "providers/microsoft.compute/diskencryptionsets": "diskEncryptionSets",
        "providers/microsoft.compute/skus": "resourceSkus",
    }

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        sub = AZURE / parts[1]
        tail = "/".join(parts[2:]).lower()
        if tail in self.routes:
            path = sub / self.routes[tail]
        elif len(parts) == 9 and parts[-1] == "extensions":
            path = sub / "virtualMachines" / parts[7] / "extensions"
        else:
            self._send(404, {"error": {"code": "NotFound", "message": self.path}})
            return
        error = path.with_name(path.name + ".error.json")
        if error.exists():
            err = load(error)
            self._send(err["status"], {"error": {"code": err["code"], "message": err["message"]}})
            return
        body = load(path.with_name(path.name + ".json"))
        flt = parse_qs(url.query).get("$filter", [""])[0]
        m = re.fullmatch(r"location eq '([a-z0-9]+)'", flt)
        if m:
            body = {"value": [s for s in body["value"] if m[1] in s.get("locations", [])]}
        self._send(200, body)


@pytest.fixture(scope="module")
def arm_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ArmReplay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _client(endpoint: str, sub: str) -> Any:
    import time

    from azure.core.credentials import AccessToken
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy
    from azure.mgmt.compute import ComputeManagementClient

    class Token:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("fake-token", int(time.time()) + 3600)

    class LocalBearer(BearerTokenCredentialPolicy):
        def on_request(self, request: Any) -> None:
            request.context.options["enforce_https"] = False
            super().on_request(request)

    scope = "https://management.azure.com/.default"
    return ComputeManagementClient(
        Token(),
        sub,
        base_url=endpoint,
        authentication_policy=LocalBearer(Token(), scope),
        retry_total=0,
    )


@pytest.mark.parametrize("sub", readable(), ids=lambda s: DISPLAY_NAMES[s.name])
def test_the_real_client_reads_the_fleet(arm_endpoint: str, sub: Path) -> None:
    client = _client(arm_endpoint, sub.name)
    vms = list(client.virtual_machines.list_all())
    assert [vm.name for vm in vms] == [v["name"] for v in values(sub, "virtualMachines")]
    raw_vms = values(sub, "virtualMachines")
    assert [vm.vm_id for vm in vms] == [v["properties"]["vmId"] for v in raw_vms]
    assert {d.name for d in client.disks.list()} == {d["name"] for d in values(sub, "disks")}
    sets = list(client.disk_encryption_sets.list())
    assert {s.name for s in sets} == {s["name"] for s in values(sub, "diskEncryptionSets")}
    for vm in vms:
        skus = list(client.resource_skus.list(filter=f"location eq '{vm.location}'"))
        by_name = {s.name: s for s in skus}
        assert vm.hardware_profile.vm_size in by_name
        rg = parse_id(vm.id)["rg"]
        exts = client.virtual_machine_extensions.list(rg, vm.name).value or []
        assert [e.name for e in exts] == [e["name"] for e in extensions_of(sub, vm.name)]
        assert vm.as_dict() == next(v for v in raw_vms if v["name"] == vm.name), "lossless"


def test_the_real_client_sees_the_denied_listing(arm_endpoint: str) -> None:
    from azure.core.exceptions import HttpResponseError

    client = _client(arm_endpoint, LEGAL)
    with pytest.raises(HttpResponseError) as caught:
        list(client.virtual_machines.list_all())
    assert caught.value.status_code == 403
    assert caught.value.error is not None and caught.value.error.code == "AuthorizationFailed"
