"""The GCP half of the demo replay estate (examples/demo-fleet/gcp/) is made of real API shapes.

Every instance is parsed strictly by google-cloud-compute's proto (`Instance.from_json` rejects
unknown keys and enum values), every log entry by google-cloud-logging's `LogEntry.from_json`;
every shielded-identity certificate loads, matches its `ekPub`, is signed by the demo CA
(`gcp/DEMO_CA.pem`, not Google's) and names its instance in the Google instance-identity
extension (OID 1.3.6.1.4.1.11129.2.1.21), except the one deliberate mismatch the README
documents. Layout contract:

    gcp/<project>/aggregatedList[.error].json
    gcp/<project>/logEntries[.error].json
    gcp/<project>/shieldedInstanceIdentity/<zone>/<instance-name>[.error].json
    gcp/DEMO_CA.pem
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

compute_v1 = pytest.importorskip("google.cloud.compute_v1")
logging_types = pytest.importorskip("google.cloud.logging_v2.types")

FLEET = Path(__file__).parents[1] / "examples" / "demo-fleet"
GCP = FLEET / "gcp"
DEMO_CA = GCP / "DEMO_CA.pem"

API = "https://www.googleapis.com/compute/v1"
PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
ZONE_RE = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
INSTANCE_ID_RE = re.compile(r"^[1-9]\d{15,19}$")
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
KMS_KEY_VERSION_RE = re.compile(
    r"^projects/(?P<project>[a-z][a-z0-9-]+)/locations/(?P<location>[a-z0-9-]+)/keyRings/[\w-]+"
    r"/cryptoKeys/[\w-]+/cryptoKeyVersions/\d+$"
)
IDENTITY_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.1.21")
LOG_ID = "compute.googleapis.com%2Fshielded_vm_integrity"
INTEGRITY_EVENTS = {
    "sevLaunchAttestationReportEvent",
    "earlyBootReportEvent",
    "lateBootReportEvent",
    "clearTPMEvent",
    "setShieldedInstanceIntegrityPolicy",
    "shutdownEvent",
    "startupEvent",
    "updateShieldedInstanceConfig",
}
#: The audit's reference "now" and its 30-day log window (README: what the audit should conclude).
AUDIT_NOW = datetime(2026, 11, 22, tzinfo=UTC)
WINDOW_START = AUDIT_NOW - timedelta(days=30)

#: Documented zones per technology (reference cloud_apis.md §2.2, narrowed to the demo's picks).
SNP_ZONES = {"us-central1-a", "europe-west4-a", "asia-southeast1-a", "asia-southeast1-b"}
TDX_ZONES = {"us-central1-a", "us-central1-b", "us-central1-c", "europe-west4-a", "europe-west4-b"}

#: (project, instance) -> the story the README tells. The demo's verdict tests rely on it.
ESTATE: dict[tuple[str, str], dict[str, Any]] = {
    ("eu-claims-prod", "claims-db-snp"): {
        "type": "n2d-standard-8",
        "cic": {"confidentialInstanceType": "SEV_SNP"},
        "ohm": "TERMINATE",
        "disk_key": "cmek",
        "serial_port": False,
    },
    ("eu-claims-prod", "claims-api-sev"): {
        "type": "n2d-standard-4",
        "cic": {"enableConfidentialCompute": True},
        "ohm": "MIGRATE",
        "disk_key": "google",
        "serial_port": False,
    },
    ("eu-claims-prod", "claims-etl-tdx"): {
        "type": "c3-standard-4",
        "cic": {"confidentialInstanceType": "TDX"},
        "ohm": "TERMINATE",
        "disk_key": "csek",
        "serial_port": False,
    },
    ("eu-claims-prod", "claims-batch-plain"): {
        "type": "e2-standard-4",
        "cic": None,
        "ohm": "MIGRATE",
        "disk_key": "google",
        "serial_port": True,
    },
    ("eu-analytics-sandbox", "sandbox-notebook-sev"): {
        "type": "n2d-standard-2",
        "cic": {"confidentialInstanceType": "SEV", "enableConfidentialCompute": True},
        "ohm": "TERMINATE",
        "disk_key": "google",
        "serial_port": False,
    },
    ("eu-analytics-sandbox", "sandbox-future-cvm"): {
        "type": "c4a-standard-4",
        "cic": {"confidentialInstanceType": "CCA"},
        "ohm": "TERMINATE",
        "disk_key": "google",
        "serial_port": False,
    },
}
#: The deliberate identity mismatch: (project, instance, key) whose extension names another VM.
EK_MISMATCH = ("eu-claims-prod", "claims-api-sev", "encryptionKey")


# --------------------------------------------------------------------------- helpers


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def rel(path: Path) -> str:
    return str(path.relative_to(FLEET))


def projects() -> list[Path]:
    return sorted(p for p in GCP.iterdir() if p.is_dir()) if GCP.is_dir() else []


def json_files() -> list[Path]:
    return sorted(GCP.rglob("*.json")) if GCP.is_dir() else []


def error_files() -> list[Path]:
    return sorted(GCP.rglob("*.error.json")) if GCP.is_dir() else []


def identity_files() -> list[Path]:
    found = GCP.glob("*/shieldedInstanceIdentity/*/*.json")
    return sorted(p for p in found if not p.name.endswith(".error.json"))


def last(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def instances_of(project: Path) -> list[tuple[str, dict[str, Any]]]:
    """(zone, instance) pairs of a project's aggregatedList.json ([] if listing failed)."""
    path = project / "aggregatedList.json"
    if not path.exists():
        return []
    out = []
    for scope, scoped in load(path)["items"].items():
        zone = scope.removeprefix("zones/")
        out.extend((zone, inst) for inst in scoped.get("instances", []))
    return out


def all_instances() -> list[tuple[str, str, dict[str, Any]]]:
    return [(p.name, zone, inst) for p in projects() for zone, inst in instances_of(p)]


def inst_id(item: tuple[str, str, dict[str, Any]]) -> str:
    return f"{item[0]}/{item[2].get('name')}"


def entries_of(project: Path) -> list[dict[str, Any]]:
    path = project / "logEntries.json"
    return load(path) if path.exists() else []


def all_entries() -> list[tuple[str, int, dict[str, Any]]]:
    return [(p.name, i, e) for p in projects() for i, e in enumerate(entries_of(p))]


def rfc3339(value: str, where: str) -> datetime:
    assert isinstance(value, str) and RFC3339_RE.match(value), f"{where}: {value!r} not RFC 3339"
    # Python < 3.13 fromisoformat takes at most 6 fractional digits.
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    parsed = datetime.fromisoformat(trimmed)
    assert parsed.tzinfo is not None, f"{where}: {value!r} has no offset"
    return parsed


def der_read(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """One DER TLV at `pos`: (tag, value, next position)."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    return tag, data[pos : pos + length], pos + length


def der_children(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        tag, value, pos = der_read(data, pos)
        out.append((tag, value))
    return out


def decode_identity(value: bytes) -> dict[str, Any]:
    """Decode the instance-identity extension (layout of the fixture / go-tpm-tools)."""
    tag, body, end = der_read(value)
    assert tag == 0x30 and end == len(value), "extension is not one SEQUENCE"
    fields = der_children(body)
    tags = [t for t, _ in fields]
    assert tags == [0x0C, 0x02, 0x0C, 0x02, 0x0C, 0xA0], f"unexpected layout {tags}"
    (_, zone), (_, number), (_, project), (_, iid), (_, name), (_, wrapped) = fields
    ((stag, props),) = der_children(wrapped)
    assert stag == 0x30
    inner = der_children(props)
    assert [t for t, _ in inner] == [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5]
    explicit = [der_children(v)[0] for _, v in inner]
    assert explicit[0][0] == 0x02 and all(t == 0x01 for t, _ in explicit[1:])
    return {
        "zone": zone.decode(),
        "project_number": int.from_bytes(number, "big", signed=True),
        "project_id": project.decode(),
        "instance_id": int.from_bytes(iid, "big", signed=True),
        "instance_name": name.decode(),
        "security_version": int.from_bytes(explicit[0][1], "big", signed=True),
        "is_production": explicit[1][1] != b"\x00",
    }


def demo_ca() -> x509.Certificate:
    return x509.load_pem_x509_certificate(DEMO_CA.read_bytes())


def project_number(project: Path) -> int:
    """The project number the identity certificates of a project carry (one per project)."""
    numbers = set()
    for path in project.glob("shieldedInstanceIdentity/*/*.json"):
        if path.name.endswith(".error.json"):
            continue
        for key in ("encryptionKey", "signingKey"):
            cert = x509.load_pem_x509_certificate(load(path)[key]["ekCert"].encode())
            ext = cert.extensions.get_extension_for_oid(IDENTITY_OID).value
            numbers.add(decode_identity(ext.value)["project_number"])
    assert len(numbers) <= 1, f"{project.name}: several project numbers {numbers}"
    return numbers.pop() if numbers else 0


# --------------------------------------------------------------------------- layout


def test_fleet_exists_with_readme() -> None:
    assert GCP.is_dir(), f"missing {GCP}"
    text = (FLEET / "README.md").read_text(encoding="utf-8")
    for project in projects():
        assert project.name in text, f"README does not describe project {project.name}"
    for _, _, inst in all_instances():
        assert inst["name"] in text, f"README does not describe instance {inst['name']}"
    assert "DEMO_CA.pem" in text and "NOT GOOGLE" in text


def test_layout_contract() -> None:
    for path in sorted(GCP.rglob("*")):
        if path.is_dir():
            continue
        parts = path.relative_to(GCP).parts
        if parts == ("DEMO_CA.pem",):
            continue
        assert PROJECT_RE.match(parts[0]), f"bad project folder: {rel(path)}"
        assert path.suffix == ".json", f"unexpected file: {rel(path)}"
        stem = parts[-1].removesuffix(".json").removesuffix(".error")
        if len(parts) == 2:
            assert stem in {"aggregatedList", "logEntries"}, f"{rel(path)}: not a project call"
        else:
            assert len(parts) == 4 and parts[1] == "shieldedInstanceIdentity", rel(path)
            assert ZONE_RE.match(parts[2]), f"bad zone folder: {rel(path)}"
            assert NAME_RE.match(stem), f"bad instance name: {rel(path)}"


def test_projects() -> None:
    assert {p.name for p in projects()} == {"eu-claims-prod", "eu-analytics-sandbox"}


@pytest.mark.parametrize("project", projects(), ids=lambda p: p.name)
def test_every_project_call_is_answered(project: Path) -> None:
    files = {p.name for p in project.iterdir() if p.is_file()}
    for call in ("aggregatedList", "logEntries"):
        answers = {f"{call}.json", f"{call}.error.json"} & files
        assert len(answers) == 1, f"{project.name}: {call} needs exactly one of .json/.error.json"


@pytest.mark.parametrize("path", json_files(), ids=rel)
def test_json_is_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n", (
        f"{rel(path)}: not 2-space indented JSON with a final newline"
    )


def test_no_private_key_anywhere() -> None:
    for path in sorted(FLEET.rglob("*")):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), f"{rel(path)} holds a private key"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("path", error_files(), ids=rel)
def test_error_files(path: Path) -> None:
    err = load(path)
    assert set(err) == {"status", "code", "message"}, f"{rel(path)}: keys {sorted(err)}"
    assert isinstance(err["status"], int) and 400 <= err["status"] <= 599
    assert isinstance(err["code"], str) and re.fullmatch(r"[A-Z_]+", err["code"])
    assert isinstance(err["message"], str) and err["message"]
    if err["code"] == "PERMISSION_DENIED":
        assert err["status"] == 403
    if path.name == "logEntries.error.json":
        project = path.relative_to(GCP).parts[0]
        assert "'logging.logEntries.list'" in err["message"]
        assert f"projects/{project}" in err["message"]


def test_sandbox_logs_are_unreadable() -> None:
    path = GCP / "eu-analytics-sandbox" / "logEntries.error.json"
    assert load(path)["code"] == "PERMISSION_DENIED"


# --------------------------------------------------------------------------- instances


@pytest.mark.parametrize("project", projects(), ids=lambda p: p.name)
def test_aggregated_list_envelope(project: Path) -> None:
    path = project / "aggregatedList.json"
    if not path.exists():
        pytest.skip("listing replayed as an error")
    data = load(path)
    name = project.name
    assert set(data) == {"kind", "id", "items", "selfLink"}
    assert data["kind"] == "compute#instanceAggregatedList"
    assert data["id"] == f"projects/{name}/aggregated/instances"
    assert data["selfLink"] == f"{API}/projects/{name}/aggregated/instances"
    for scope, scoped in data["items"].items():
        assert scope.startswith("zones/") and ZONE_RE.match(scope.removeprefix("zones/")), scope
        assert set(scoped) == {"instances"} and scoped["instances"], scope
    compute_v1.InstanceAggregatedList.from_json(json.dumps(data))  # strict: unknown keys raise


@pytest.mark.parametrize("item", all_instances(), ids=inst_id)
def test_instance_parses_strictly(item: tuple[str, str, dict[str, Any]]) -> None:
    inst = compute_v1.Instance.from_json(json.dumps(item[2]))
    assert inst.name == item[2]["name"]


@pytest.mark.parametrize("item", all_instances(), ids=inst_id)
def test_instance_is_self_consistent(item: tuple[str, str, dict[str, Any]]) -> None:
    project, zone, inst = item
    name, base = inst["name"], f"{API}/projects/{project}"
    region = zone.rsplit("-", 1)[0]
    assert NAME_RE.match(name) and INSTANCE_ID_RE.match(inst["id"]), name
    assert int(inst["id"]) < 2**63, f"{name}: id exceeds int64"
    assert inst["kind"] == "compute#instance" and inst["status"] == "RUNNING"
    assert inst["zone"] == f"{base}/zones/{zone}"
    assert inst["selfLink"] == f"{base}/zones/{zone}/instances/{name}"
    assert inst["machineType"].startswith(f"{base}/zones/{zone}/machineTypes/")
    created = rfc3339(inst["creationTimestamp"], f"{name}.creationTimestamp")
    started = rfc3339(inst["lastStartTimestamp"], f"{name}.lastStartTimestamp")
    assert datetime(2026, 9, 1, tzinfo=UTC) <= created < datetime(2026, 12, 1, tzinfo=UTC), name
    assert created <= started <= AUDIT_NOW, name
    for nic in inst["networkInterfaces"]:
        assert nic["network"].startswith(f"{base}/global/networks/")
        assert nic["subnetwork"].startswith(f"{base}/regions/{region}/subnetworks/")
    boots = [d for d in inst["disks"] if d["boot"]]
    assert len(boots) == 1, f"{name}: needs exactly one boot disk"
    for i, disk in enumerate(inst["disks"]):
        assert disk["index"] == i
        assert disk["source"].startswith(f"{base}/zones/{zone}/disks/")
        assert isinstance(disk["diskSizeGb"], str) and disk["diskSizeGb"].isdigit()
        key = disk.get("diskEncryptionKey")
        if key is None:
            continue
        assert set(key) in ({"kmsKeyName"}, {"sha256"}), f"{name}: {sorted(key)}"
        if "kmsKeyName" in key:
            m = KMS_KEY_VERSION_RE.match(key["kmsKeyName"])
            assert m and m["project"] == project and m["location"] == region, key
        else:
            assert len(base64.b64decode(key["sha256"], validate=True)) == 32
    for sa in inst["serviceAccounts"]:
        m = re.fullmatch(r"(\d+)-compute@developer\.gserviceaccount\.com", sa["email"])
        if m:
            number = project_number(GCP / project)
            assert int(m[1]) == number, f"{name}: default SA of another project"
        else:
            assert sa["email"].endswith(f"@{project}.iam.gserviceaccount.com"), sa["email"]


@pytest.mark.parametrize("item", all_instances(), ids=inst_id)
def test_instance_tells_the_readme_story(item: tuple[str, str, dict[str, Any]]) -> None:
    project, _, inst = item
    story = ESTATE[(project, inst["name"])]
    assert last(inst["machineType"]) == story["type"]
    assert inst.get("confidentialInstanceConfig") == story["cic"]
    assert inst["scheduling"]["onHostMaintenance"] == story["ohm"]
    keys = [d.get("diskEncryptionKey", {}) for d in inst["disks"]]
    kinds = {"cmek" if "kmsKeyName" in k else "csek" if "sha256" in k else "google" for k in keys}
    assert kinds == {story["disk_key"]}, f"{inst['name']}: disk keys {kinds}"
    metadata = {i["key"]: i["value"] for i in inst["metadata"].get("items", [])}
    serial = metadata.get("serial-port-enable", "FALSE").upper() in ("TRUE", "1")
    assert serial is story["serial_port"]


def test_estate_is_complete() -> None:
    assert {(p, i["name"]) for p, _, i in all_instances()} == set(ESTATE)


@pytest.mark.parametrize("item", all_instances(), ids=inst_id)
def test_confidential_configuration_is_possible(item: tuple[str, str, dict[str, Any]]) -> None:
    """What the control plane reports must be a configuration GCE accepts (reference §2.2)."""
    _, zone, inst = item
    cic = inst.get("confidentialInstanceConfig")
    family = last(inst["machineType"]).split("-")[0]
    ohm = inst["scheduling"]["onHostMaintenance"]
    if cic is None:
        return
    legacy = "SEV" if cic.get("enableConfidentialCompute") else None
    kind = cic.get("confidentialInstanceType", legacy)
    boot = next(d for d in inst["disks"] if d["boot"])
    features = {f["type"] for f in boot.get("guestOsFeatures", [])}
    assert all(d["interface"] == "NVME" for d in inst["disks"]), "confidential VMs need NVMe"
    if kind == "SEV_SNP":
        assert "enableConfidentialCompute" not in cic, "demo: SNP created by type alone"
        assert family == "n2d" and inst["minCpuPlatform"] == "AMD Milan" and ohm == "TERMINATE"
        assert inst["cpuPlatform"] == "AMD Milan" and zone in SNP_ZONES
        assert "SEV_SNP_CAPABLE" in features
    elif kind == "SEV":
        assert family == "n2d" and inst["minCpuPlatform"] == "AMD Milan"
        assert "SEV_CAPABLE" in features
        if ohm == "MIGRATE":
            assert "SEV_LIVE_MIGRATABLE_V2" in features
    elif kind == "TDX":
        assert family == "c3" and "minCpuPlatform" not in inst and ohm == "TERMINATE"
        assert inst["cpuPlatform"] == "Intel Sapphire Rapids" and zone in TDX_ZONES
        assert "TDX_CAPABLE" in features
    else:  # a type the auditor does not know yet (CCA): must still parse and be Arm
        assert kind == "CCA" and boot["architecture"] == "ARM64" and ohm == "TERMINATE"


# --------------------------------------------------------------------------- shielded identity


def test_demo_ca_is_not_google() -> None:
    ca = demo_ca()
    cn = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "EK/AK CA Intermediate (DEMO - NOT GOOGLE)"
    assert ca.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca.verify_directly_issued_by(ca)


@pytest.mark.parametrize("project", projects(), ids=lambda p: p.name)
def test_identity_files_match_vtpm_instances(project: Path) -> None:
    vtpm = {
        (zone, inst["name"])
        for zone, inst in instances_of(project)
        if inst.get("shieldedInstanceConfig", {}).get("enableVtpm")
    }
    files = {
        (p.parent.name, p.name.removesuffix(".json").removesuffix(".error"))
        for p in project.glob("shieldedInstanceIdentity/*/*.json")
    }
    assert files == vtpm, f"identity files {sorted(files)} != vTPM instances {sorted(vtpm)}"


@pytest.mark.parametrize("path", identity_files(), ids=rel)
def test_identity_certificates(path: Path) -> None:
    project, _, zone, fname = path.relative_to(GCP).parts
    name = fname.removesuffix(".json")
    inst = next(i for z, i in instances_of(GCP / project) if (z, i["name"]) == (zone, name))
    data = load(path)
    assert set(data) == {"kind", "encryptionKey", "signingKey"}
    assert data["kind"] == "compute#shieldedInstanceIdentity"
    compute_v1.ShieldedInstanceIdentity.from_json(json.dumps(data))
    ca = demo_ca()
    for key, usage in (("encryptionKey", "key_encipherment"), ("signingKey", "digital_signature")):
        entry = data[key]
        assert set(entry) == {"ekCert", "ekPub"}
        cert = x509.load_pem_x509_certificate(entry["ekCert"].encode())
        pub = serialization.load_pem_public_key(entry["ekPub"].encode())
        assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 2048
        assert cert.public_key().public_numbers() == pub.public_numbers(), f"{key}: ekPub != cert"
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)  # raises if not signed by the demo CA
        subject = {a.oid: a.value for a in cert.subject}
        assert subject == {
            NameOID.LOCALITY_NAME: zone,
            NameOID.ORGANIZATION_NAME: "Google Compute Engine",
            NameOID.ORGANIZATIONAL_UNIT_NAME: project,
            NameOID.COMMON_NAME: inst["id"],
        }
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and getattr(ku.value, usage)
        other = "digital_signature" if usage == "key_encipherment" else "key_encipherment"
        assert not getattr(ku.value, other)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        created = rfc3339(inst["creationTimestamp"], name)
        assert cert.not_valid_before_utc <= created + timedelta(minutes=1)
        assert cert.not_valid_after_utc > AUDIT_NOW
        ext = cert.extensions.get_extension_for_oid(IDENTITY_OID)
        assert not ext.critical
        ident = decode_identity(ext.value.value)
        expected_id = int(inst["id"])
        if (project, name, key) == EK_MISMATCH:
            assert ident["instance_id"] != expected_id, "the documented mismatch is gone"
            ident["instance_id"] = expected_id  # everything else must still agree
        assert ident == {
            "zone": zone,
            "project_number": project_number(GCP / project),
            "project_id": project,
            "instance_id": expected_id,
            "instance_name": name,
            "security_version": 0,
            "is_production": True,
        }


def test_exactly_one_documented_mismatch() -> None:
    project, name, _ = EK_MISMATCH
    paths = list((GCP / project / "shieldedInstanceIdentity").glob(f"*/{name}.json"))
    assert len(paths) == 1
    text = (FLEET / "README.md").read_text(encoding="utf-8")
    cert = x509.load_pem_x509_certificate(load(paths[0])["encryptionKey"]["ekCert"].encode())
    ext = cert.extensions.get_extension_for_oid(IDENTITY_OID).value
    assert str(decode_identity(ext.value)["instance_id"]) in text, "README must name the wrong id"


# --------------------------------------------------------------------------- logs


@pytest.mark.parametrize("item", all_entries(), ids=lambda e: f"{e[0]}[{e[1]}]")
def test_log_entry(item: tuple[str, int, dict[str, Any]]) -> None:
    project, i, entry = item
    where = f"{project}/logEntries.json[{i}]"
    logging_types.LogEntry.from_json(json.dumps(entry))  # strict: unknown keys raise
    for key in ("insertId", "logName", "resource", "timestamp", "receiveTimestamp", "severity"):
        assert key in entry, f"{where}: missing {key}"
    assert entry["logName"] == f"projects/{project}/logs/{LOG_ID}"
    ts = rfc3339(entry["timestamp"], f"{where}.timestamp")
    assert ts <= rfc3339(entry["receiveTimestamp"], f"{where}.receiveTimestamp")
    assert entry["resource"]["type"] == "gce_instance"
    labels = entry["resource"]["labels"]
    assert set(labels) == {"instance_id", "project_id", "zone"} and labels["project_id"] == project
    by_id = {i["id"]: (z, i) for z, i in instances_of(GCP / project)}
    assert labels["instance_id"] in by_id, f"{where}: unknown instance {labels['instance_id']}"
    zone, inst = by_id[labels["instance_id"]]
    assert labels["zone"] == zone
    assert ts >= rfc3339(inst["creationTimestamp"], inst["name"]), f"{where}: before creation"
    payload = entry["jsonPayload"]
    assert payload["@type"] == "type.googleapis.com/cloud_integrity.IntegrityEvent"
    assert isinstance(payload["bootCounter"], str) and payload["bootCounter"].isdigit()
    events = set(payload) - {"@type", "bootCounter"}
    assert len(events) == 1 and events <= INTEGRITY_EVENTS, f"{where}: events {events}"
    event = events.pop()
    if event == "sevLaunchAttestationReportEvent":
        cic = inst.get("confidentialInstanceConfig") or {}
        assert cic.get("confidentialInstanceType", "SEV") == "SEV", "documented for AMD SEV only"
        assert isinstance(payload[event]["integrityEvaluationPassed"], bool)
        assert payload[event]["sevPolicy"]["debugEnabled"] is False
    elif event in ("earlyBootReportEvent", "lateBootReportEvent"):
        report = payload[event]
        passed = report["policyEvaluationPassed"]
        assert entry["severity"] == ("NOTICE" if passed else "ERROR")
        for m in report["actualMeasurements"] + report["policyMeasurements"]:
            assert re.fullmatch(r"PCR_\d+", m["pcrNum"])
            assert len(base64.b64decode(m["value"], validate=True)) == 20  # SHA-1
        same = report["actualMeasurements"] == report["policyMeasurements"]
        assert same is passed, f"{where}: pass/fail disagrees with the measurements"


@pytest.mark.parametrize("project", projects(), ids=lambda p: p.name)
def test_log_entries_ordered_and_unique(project: Path) -> None:
    entries = entries_of(project)
    stamps = [rfc3339(e["timestamp"], e["insertId"]) for e in entries]
    assert stamps == sorted(stamps), "entries:list returns timestamp order"
    assert len({e["insertId"] for e in entries}) == len(entries)


def test_claims_log_window() -> None:
    """Inside the 30-day window ending 2026-11-22: the README's entries; one older entry outside."""
    entries = entries_of(GCP / "eu-claims-prod")
    names = {i["id"]: i["name"] for _, i in instances_of(GCP / "eu-claims-prod")}

    def event(e: dict[str, Any]) -> tuple[str, str]:
        payload = e["jsonPayload"]
        kind = next(k for k in payload if k not in ("@type", "bootCounter"))
        return names[e["resource"]["labels"]["instance_id"]], kind

    inside = [e for e in entries if rfc3339(e["timestamp"], "") >= WINDOW_START]
    outside = [e for e in entries if rfc3339(e["timestamp"], "") < WINDOW_START]
    assert sorted(event(e) for e in inside) == sorted(
        [
            ("claims-api-sev", "sevLaunchAttestationReportEvent"),
            ("claims-api-sev", "earlyBootReportEvent"),
            ("claims-api-sev", "lateBootReportEvent"),
            ("claims-db-snp", "earlyBootReportEvent"),
            ("claims-db-snp", "lateBootReportEvent"),
        ]
    )
    assert all(
        e["jsonPayload"].get(k, {}).get("policyEvaluationPassed", True)
        for e in inside
        for k in ("earlyBootReportEvent", "lateBootReportEvent")
    )
    sev = next(e for e in inside if "sevLaunchAttestationReportEvent" in e["jsonPayload"])
    assert sev["jsonPayload"]["sevLaunchAttestationReportEvent"]["integrityEvaluationPassed"]
    assert len(outside) == 1, "exactly one entry older than the window"
