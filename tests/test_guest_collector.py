"""The in-VM collector against a fake sysfs/configfs tree, fake metadata services and the CLI.

The fake kernel (`FakeKernelTsm`) does what configfs-tsm does on `mkdir` and on a write to
`inblob`: it fills the entry from real vectors (go-sev-guest SNP report, go-tdx-guest GCE quote)
and increments `generation`; it can also play a concurrent writer. The metadata services are
loopback `http.server` fakes that refuse requests without the header the real service demands.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from auditor._version import __version__
from auditor.cli import app
from auditor.guest import __main__ as guest_main
from auditor.guest import collector, diskcrypt
from auditor.guest.format import (
    binding_report_data,
    claims_digest,
    expected_report_data,
    identity_string,
    parse_evidence_file,
)
from auditor.guest.nonces import STORE_FILE, NonceStore
from auditor.guest.tsm import ConfigfsTsm
from tests.metadata_fake import (
    AWS_DOCUMENT,
    AWS_INSTANCE,
    AWS_PKCS7,
    AWS_TOKEN,
    AZURE_ATTESTED,
    AZURE_VM_ID,
    GCP_INSTANCE,
    GCP_TOKEN,
)

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "tests" / "data" / "vectors"
SNP_REPORT = VECTORS / "go-sev-guest" / "attestation.bin"
SNP_VCEK = VECTORS / "go-sev-guest" / "vcek.testcer"
TDX_QUOTE = VECTORS / "go-tdx-guest" / "cos-113-tdx-quote.dat"
CCEL_TABLE = VECTORS / "go-tdx-guest" / "ccel_table.dat"
CCEL_DATA = VECTORS / "go-tdx-guest" / "ccel_data.dat"
EVENT_LOG = VECTORS / "go-tpm-tools" / "ubuntu-2404-amd-sevsnp.bin"

NONCE = bytes(range(32))
LUKS_UUID = "3f1c9a5e-2b7d-4e61-9a0c-5d8e7f6a1b2c"
DATA_LUKS_UUID = "8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d"
VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
CMDLINE = "BOOT_IMAGE=/vmlinuz-6.8.0 root=/dev/mapper/root ro console=ttyS0"

runner = CliRunner()


# -- the fake kernel ----------------------------------------------------------------------------


class FakeKernelTsm(ConfigfsTsm):
    """configfs-tsm as the kernel behaves, driven by `<configfs>/.fake-kernel/`.

    `outblob`, `auxblob`, `provider` there are what the entry will show; `races` is how many
    attempts see a concurrent writer (one extra generation bump each). Every entry's inblob is
    appended to `inblob-log` when the entry is removed.
    """

    def __init__(self, configfs: Path) -> None:
        super().__init__(configfs)
        self.kernel = Path(configfs) / ".fake-kernel"

    def create_entry(self) -> Path:
        entry = super().create_entry()
        (entry / "generation").write_text("0\n")
        (entry / "inblob").write_bytes(b"")
        for name in ("outblob", "auxblob", "provider"):
            if (self.kernel / name).exists():
                shutil.copyfile(self.kernel / name, entry / name)
        return entry

    def write_attribute(self, entry: Path, name: str, data: bytes) -> None:
        super().write_attribute(entry, name, data)
        bump = 1
        races = self.kernel / "races"
        if races.exists() and int(races.read_text()) > 0:
            races.write_text(str(int(races.read_text()) - 1))
            bump += 1
        generation = int((entry / "generation").read_text()) + bump
        (entry / "generation").write_text(f"{generation}\n")

    def remove_entry(self, entry: Path) -> None:
        with (self.kernel / "inblob-log").open("ab") as log:
            log.write((entry / "inblob").read_bytes())
        shutil.rmtree(entry)


@pytest.fixture(autouse=True)
def _fake_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector, "ConfigfsTsm", FakeKernelTsm)


def cert_table(entries: list[tuple[uuid.UUID, bytes]]) -> bytes:
    """An SNP extended-report certificate table: {GUID, offset, length}..., zero entry, certs."""
    header_len = 24 * (len(entries) + 1)
    table, blobs, offset = b"", b"", header_len
    for guid, blob in entries:
        table += guid.bytes_le + struct.pack("<II", offset, len(blob))
        blobs += blob
        offset += len(blob)
    return table + bytes(24) + blobs


# -- the fake filesystem ------------------------------------------------------------------------


@dataclass
class Tree:
    root: Path
    configfs: Path
    out: Path

    @property
    def kernel(self) -> Path:
        return self.configfs / ".fake-kernel"

    def inblob_log(self) -> bytes:
        return (self.kernel / "inblob-log").read_bytes()

    def options(self, **overrides: Any) -> collector.CollectOptions:
        args: dict[str, Any] = {
            "nonce": NONCE.hex(),
            "out": self.out,
            "root": self.root,
            "configfs": self.configfs,
            "provider": "none",
            "vm_id": "vm-1",
        }
        args.update(overrides)
        return collector.make_options(**args)

    def argv(self, *extra: str) -> list[str]:
        base = ["--nonce", NONCE.hex(), "--out", str(self.out), "--root", str(self.root)]
        return [*base, "--configfs", str(self.configfs), *extra]


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)


def luks2_header(tokens: dict[str, Any] | None = None, version: int = 2) -> bytes:
    """A LUKS header as cryptsetup writes it: binary header, then the JSON area at 4096."""
    import struct

    meta = json.dumps({"keyslots": {"0": {"type": "luks2"}}, "tokens": tokens or {}}).encode()
    size = 16384
    head = b"LUKS\xba\xbe" + struct.pack(">HQ", version, size)
    return head.ljust(4096, b"\0") + meta.ljust(size - 4096, b"\0")


SYSTEMD_TPM2 = {"0": {"type": "systemd-tpm2", "keyslots": ["1"]}}


def _block(
    root: Path,
    name: str,
    devnum: str,
    *,
    dm: tuple[str, str] | None = None,
    slaves: tuple[str, ...] = (),
    parts: dict[str, str] | None = None,
) -> None:
    base = root / "sys" / "block" / name
    _write(base / "dev", devnum + "\n")
    if dm is not None:
        _write(base / "dm" / "name", dm[0] + "\n")
        _write(base / "dm" / "uuid", dm[1] + "\n")
    (base / "slaves").mkdir(parents=True, exist_ok=True)
    for slave in slaves:
        (base / "slaves" / slave).mkdir()
    for part, part_devnum in (parts or {}).items():
        _write(base / part / "dev", part_devnum + "\n")


def _mountinfo(devnum: str, source: str) -> str:
    return (
        "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
        f"28 1 {devnum} / / rw,relatime shared:1 - ext4 {source} rw\n"
        "29 28 0:6 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=4012k\n"
        "30 28 252:1 / /boot rw,relatime shared:3 - ext4 /dev/vda1 rw\n"
    )


ROOT_SERIAL = "vol0abc1234567890de"
ROOT_LINK = f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{ROOT_SERIAL}"


def luks_root_layout(root: Path) -> None:
    """/ on dm-0 = LUKS2 on vda2; vda is an EBS volume (serial and by-id link)."""
    _write(root / "proc" / "self" / "mountinfo", _mountinfo("253:0", "/dev/mapper/root"))
    _block(root, "vda", "252:0", parts={"vda1": "252:1", "vda2": "252:2"})
    _write(root / "sys" / "block" / "vda" / "device" / "serial", ROOT_SERIAL + "  \n")
    link = root / ROOT_LINK.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to("../../vda")
    (link.parent / "nvme-part-link").symlink_to("../../vda2")  # a partition's link: not the disk
    _write(root / "dev" / "vda2", luks2_header())
    _block(
        root,
        "dm-0",
        "253:0",
        dm=("root", f"CRYPT-LUKS2-{LUKS_UUID.replace('-', '')}-root"),
        slaves=("vda2",),
    )


def lvm_on_luks_layout(root: Path) -> None:
    """/ on dm-2 (LVM vg-root) on dm-0 (LUKS2 on vda3); dm-3 a LUKS2 data disk; dm-4 verity."""
    _write(root / "proc" / "self" / "mountinfo", _mountinfo("253:2", "/dev/mapper/vg-root"))
    _block(root, "vda", "252:0", parts={"vda1": "252:1", "vda2": "252:2", "vda3": "252:3"})
    _block(root, "vdb", "252:16")
    luks = f"CRYPT-LUKS2-{LUKS_UUID.replace('-', '')}-luks-{LUKS_UUID}"
    _block(root, "dm-0", "253:0", dm=(f"luks-{LUKS_UUID}", luks), slaves=("vda3",))
    _block(root, "dm-1", "253:1", dm=("vg-swap", "LVM-abcdefswap"), slaves=("dm-0",))
    _block(root, "dm-2", "253:2", dm=("vg-root", "LVM-abcdefroot"), slaves=("dm-0",))
    data = f"CRYPT-LUKS2-{DATA_LUKS_UUID.replace('-', '')}-data"
    _block(root, "dm-3", "253:3", dm=("data", data), slaves=("vdb",))
    _block(root, "dm-4", "253:4", dm=("usr", "CRYPT-VERITY-0123456789abcdef-usr"), slaves=("vda2",))
    _write(root / "dev" / "vda3", luks2_header(SYSTEMD_TPM2))  # the root key is TPM-sealed
    _write(root / "dev" / "vdb", luks2_header(version=1))


def make_tree(tmp_path: Path, variant: str) -> Tree:
    root, configfs = tmp_path / "root", tmp_path / "configfs"
    root.mkdir()
    (configfs / "tsm" / "report").mkdir(parents=True)
    kernel = configfs / ".fake-kernel"
    kernel.mkdir()
    _write(root / "proc" / "cmdline", CMDLINE + "\n")
    if variant == "snp":
        _write(kernel / "provider", "sev_guest\n")
        _write(kernel / "outblob", SNP_REPORT.read_bytes())
        _write(kernel / "auxblob", cert_table([(VCEK_GUID, SNP_VCEK.read_bytes())]))
        _write(root / "sys/kernel/security/tpm0/binary_bios_measurements", EVENT_LOG.read_bytes())
        luks_root_layout(root)
    elif variant == "tdx":
        _write(kernel / "provider", "tdx_guest\n")
        _write(kernel / "outblob", TDX_QUOTE.read_bytes())
        _write(root / "sys/firmware/acpi/tables/CCEL", CCEL_TABLE.read_bytes())
        _write(root / "sys/firmware/acpi/tables/data/CCEL", CCEL_DATA.read_bytes())
        lvm_on_luks_layout(root)
    else:
        raise AssertionError(variant)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    return Tree(root, configfs, out_dir / "evidence.json")


def _load(path: Path) -> dict[str, Any]:
    return parse_evidence_file(path.read_bytes())


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _error_sources(doc: dict[str, Any]) -> set[str]:
    return {e["source"] for e in doc["errors"]}


# -- full collections ---------------------------------------------------------------------------


def test_snp_collection_with_luks_root(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    stderr = io.StringIO()
    assert collector.run(tree.options(), stderr) == collector.EXIT_OK
    doc = _load(tree.out)
    binding = binding_report_data(NONCE, identity_string("unknown", "vm-1"), claims_digest(doc))
    assert doc["claims_sha256"] == claims_digest(doc).hex()
    assert tree.inblob_log() == binding
    assert doc["report_data"] == binding.hex()
    assert doc["nonce"] == NONCE.hex()
    assert doc["collector_version"] == __version__
    assert doc["vm"] == {"provider": "unknown", "id": "vm-1", "identity_source": "none"}
    tee = doc["tee"]
    assert (tee["provider"], tee["generation"]) == ("sev_guest", 1)
    assert _b64(tee["outblob"]) == SNP_REPORT.read_bytes()
    aux = _b64(tee["auxblob"])
    assert aux[:16] == VCEK_GUID.bytes_le and SNP_VCEK.read_bytes() in aux
    assert _b64(doc["tpm"]["event_log"]) == EVENT_LOG.read_bytes()
    assert "ccel" not in doc
    assert {"tdx ccel table", "tdx ccel event log"} <= _error_sources(doc)
    assert doc["disk_encryption"] == {
        "root_device": "dm-0",
        "devices": [
            {
                "name": "dm-0",
                "uuid": f"CRYPT-LUKS2-{LUKS_UUID.replace('-', '')}-root",
                "type": "LUKS2",
                "holds_root": True,
                "backing": [{"name": "vda", "serial": ROOT_SERIAL, "links": [ROOT_LINK]}],
                "tpm_tokens": 0,
            }
        ],
    }
    assert doc["kernel_cmdline"] == CMDLINE
    assert list((tree.configfs / "tsm" / "report").iterdir()) == []  # entry removed
    assert "TEE report: sev_guest, 1184 bytes, with certificate table" in stderr.getvalue()


def test_tdx_collection_with_lvm_on_luks(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "tdx")
    assert collector.run(tree.options(vm_id="vm-tdx"), io.StringIO()) == collector.EXIT_OK
    doc = _load(tree.out)
    assert tree.inblob_log() == expected_report_data(doc, "unknown:vm-tdx")
    assert doc["tee"]["provider"] == "tdx_guest"
    assert _b64(doc["tee"]["outblob"]) == TDX_QUOTE.read_bytes()
    assert "auxblob" not in doc["tee"]
    assert _b64(doc["ccel"]["table"]) == CCEL_TABLE.read_bytes()
    assert _b64(doc["ccel"]["data"]) == CCEL_DATA.read_bytes()
    assert "tpm" not in doc
    sources = _error_sources(doc)
    assert "vtpm event log" in sources
    assert not any("auxblob" in s for s in sources)  # TDX has none; not a gap
    disk = doc["disk_encryption"]
    assert disk["root_device"] == "dm-2"
    assert [(d["name"], d["type"], d["holds_root"]) for d in disk["devices"]] == [
        ("dm-0", "LUKS2", True),
        ("dm-3", "LUKS2", False),
    ]
    # LUKS on a partition (vda3) sits on the whole disk vda; the data LUKS on vdb
    assert [d["backing"] for d in disk["devices"]] == [[{"name": "vda"}], [{"name": "vdb"}]]
    # the root's key slot is sealed to the TPM (systemd-tpm2); LUKS1 has no tokens
    assert [d["tpm_tokens"] for d in disk["devices"]] == [1, 0]


def test_snp_without_certificate_table_names_the_gap(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    (tree.kernel / "auxblob").unlink()
    assert collector.run(tree.options(), io.StringIO()) == collector.EXIT_OK
    doc = _load(tree.out)
    assert "auxblob" not in doc["tee"]
    assert "configfs-tsm auxblob" in _error_sources(doc)


def test_concurrent_writer_is_detected_and_retried(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    (tree.kernel / "races").write_text("1")
    assert collector.run(tree.options(), io.StringIO()) == collector.EXIT_OK
    doc = _load(tree.out)
    assert doc["tee"]["generation"] == 3  # 0 -> 2 (raced, retried) -> 3 (ours alone)
    assert "configfs-tsm" not in _error_sources(doc)


def test_persistent_concurrent_writer_gives_up_with_partial_file(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    (tree.kernel / "races").write_text("99")
    stderr = io.StringIO()
    assert collector.run(tree.options(), stderr) == collector.EXIT_PARTIAL
    doc = _load(tree.out)
    assert "tee" not in doc
    [error] = [e for e in doc["errors"] if e["source"] == "configfs-tsm"]
    assert "concurrent writer" in error["message"] and "0->2" in error["message"]
    assert "tpm" in doc  # the rest is still collected
    assert list((tree.configfs / "tsm" / "report").iterdir()) == []
    assert "TEE report: none" in stderr.getvalue()


def test_nothing_available_still_writes_a_valid_partial_file(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    out = tmp_path / "e.json"
    options = collector.make_options(
        nonce=NONCE.hex(),
        out=out,
        root=root,
        configfs=tmp_path / "no-configfs",
        provider="none",
        vm_id="vm-1",
    )
    assert collector.run(options, io.StringIO()) == collector.EXIT_PARTIAL
    doc = _load(out)
    for key in ("tee", "tpm", "ccel", "disk_encryption", "kernel_cmdline"):
        assert key not in doc
    assert {
        "configfs-tsm",
        "vtpm event log",
        "tdx ccel table",
        "tdx ccel event log",
        "disk encryption",
        "kernel command line",
    } <= _error_sources(doc)
    [tsm_error] = [e["message"] for e in doc["errors"] if e["source"] == "configfs-tsm"]
    assert "no-configfs" in tsm_error


def test_output_is_written_atomically_and_private(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    tree.out.write_text("old")
    assert collector.run(tree.options(), io.StringIO()) == collector.EXIT_OK
    assert [p.name for p in tree.out.parent.iterdir()] == ["evidence.json"]
    assert tree.out.stat().st_mode & 0o777 == 0o600
    assert _load(tree.out)["format"] == "ccaudit-guest-evidence/2"


def test_key_release_token_is_included_or_named_in_errors(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    token = "eyJhbGciOiJFUzI1NiJ9.eyJrZXkiOiJyZWxlYXNlZCJ9.c2lnbmF0dXJl"
    good = tmp_path / "release.jws"
    good.write_text(token + "\n")
    collector.run(tree.options(key_release=good), io.StringIO())
    assert _load(tree.out)["key_release"] == token
    bad = tmp_path / "bad.jws"
    bad.write_text("not a token")
    collector.run(tree.options(key_release=bad), io.StringIO())
    doc = _load(tree.out)
    assert "key_release" not in doc
    assert "key release" in _error_sources(doc)


# -- root device resolution ---------------------------------------------------------------------


def test_root_from_proc_mounts_when_mountinfo_is_absent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    luks_root_layout(root)
    (root / "proc" / "self" / "mountinfo").unlink()
    _write(root / "proc" / "mounts", "proc /proc proc rw 0 0\n/dev/mapper/root / ext4 rw 0 0\n")
    section, problems = diskcrypt.disk_encryption(root)
    assert problems == []
    assert section["root_device"] == "dm-0"
    assert section["devices"][0]["holds_root"] is True


def test_plain_partition_root_has_no_crypt_devices(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _write(root / "proc" / "self" / "mountinfo", _mountinfo("252:1", "/dev/vda1"))
    _block(root, "vda", "252:0", parts={"vda1": "252:1"})
    section, problems = diskcrypt.disk_encryption(root)
    assert (section, problems) == ({"root_device": "vda1", "devices": []}, [])


def test_root_mount_unescapes_octal_fields(tmp_path: Path) -> None:
    _write(tmp_path / "proc" / "mounts", "/dev/disk\\040one / ext4 rw 0 0\n")
    assert diskcrypt.root_mount(tmp_path) == (None, "/dev/disk one")


def test_unmapped_root_is_a_problem_not_a_guess(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _write(root / "proc" / "self" / "mountinfo", _mountinfo("8:1", "/dev/sda1"))
    _block(root, "vda", "252:0")
    section, problems = diskcrypt.disk_encryption(root)
    assert "root_device" not in section
    assert problems and problems[0][0] == "root device"


@pytest.mark.parametrize(
    ("dm_uuid", "expected"),
    [
        ("CRYPT-LUKS2-3f1c9a5e2b7d4e619a0c5d8e7f6a1b2c-root", "LUKS2"),
        ("CRYPT-LUKS1-abc-root", "LUKS1"),
        ("CRYPT-PLAIN-swap", "PLAIN"),
        ("CRYPT-VERITY-abc-usr", None),
        ("CRYPT-INTEGRITY-abc", None),
        ("LVM-abcdef", None),
        ("", None),
    ],
)
def test_crypt_type_from_dm_uuid(dm_uuid: str, expected: str | None) -> None:
    assert diskcrypt.crypt_type(dm_uuid) == expected


@pytest.mark.parametrize(
    ("cloud", "vm_id", "source", "document", "header"),
    [
        (
            "aws",
            AWS_INSTANCE,
            "aws-instance-identity-document",
            AWS_DOCUMENT,
            ("X-Aws-Ec2-Metadata-Token", AWS_TOKEN),
        ),
        ("gcp", GCP_INSTANCE, "gcp-identity-token", GCP_TOKEN, ("Metadata-Flavor", "Google")),
        ("azure", AZURE_VM_ID, "azure-imds-attested", AZURE_ATTESTED, ("Metadata", "true")),
    ],
    ids=["aws", "gcp", "azure"],
)
def test_identity_from_each_cloud_metadata_service(
    tmp_path: Path,
    metadata_server: Any,
    cloud: str,
    vm_id: str,
    source: str,
    document: bytes,
    header: tuple[str, str],
) -> None:
    fake = metadata_server(cloud)
    tree = make_tree(tmp_path, "snp")
    stderr = io.StringIO()
    options = tree.options(provider=cloud, vm_id=None, metadata_url=[f"{cloud}={fake.url}"])
    assert collector.run(options, stderr) == collector.EXIT_OK
    doc = _load(tree.out)
    assert (doc["vm"]["provider"], doc["vm"]["id"], doc["vm"]["identity_source"]) == (
        cloud,
        vm_id,
        source,
    )
    assert _b64(doc["vm"]["identity_document"]) == document
    binding = expected_report_data(doc, identity_string(cloud, vm_id))
    assert tree.inblob_log() == binding and doc["report_data"] == binding.hex()
    gets = [r for r in fake.requests if r.method == "GET"]
    assert gets and all(r.headers.get(header[0]) == header[1] for r in gets)
    assert not any("X-Forwarded-For" in r.headers for r in fake.requests)
    assert not [e for e in doc["errors"] if "metadata" in e["source"]]
    # The IMDSv2 session token is a credential: never in the file, never printed.
    assert AWS_TOKEN not in tree.out.read_text() and AWS_TOKEN not in stderr.getvalue()


def test_aws_imdsv2_token_request_and_signature(tmp_path: Path, metadata_server: Any) -> None:
    fake = metadata_server("aws")
    tree = make_tree(tmp_path, "snp")
    collector.run(tree.options(provider="aws", vm_id=None, metadata_url=[fake.url]), io.StringIO())
    [put] = [r for r in fake.requests if r.method == "PUT"]
    assert put.path == "/latest/api/token"
    assert int(put.headers["X-Aws-Ec2-Metadata-Token-Ttl-Seconds"]) > 0
    doc = _load(tree.out)
    assert _b64(doc["vm"]["identity_signature"]) == AWS_PKCS7


def test_azure_vm_id_binding_is_lower_case(tmp_path: Path, metadata_server: Any) -> None:
    fake = metadata_server("azure")
    tree = make_tree(tmp_path, "snp")
    collector.run(
        tree.options(provider="azure", vm_id=None, metadata_url=[fake.url]), io.StringIO()
    )
    doc = _load(tree.out)
    assert tree.inblob_log() == expected_report_data(doc, f"azure:{AZURE_VM_ID.lower()}")


def test_auto_probes_until_a_service_answers(tmp_path: Path, metadata_server: Any) -> None:
    fake = metadata_server("azure")
    tree = make_tree(tmp_path, "snp")
    options = tree.options(provider="auto", vm_id=None, metadata_url=[fake.url])
    assert collector.run(options, io.StringIO()) == collector.EXIT_OK
    doc = _load(tree.out)
    assert doc["vm"]["provider"] == "azure"
    paths = [r.path for r in fake.requests]
    assert paths[0] == "/latest/api/token"  # AWS probed first, refused
    assert paths[1] == "/computeMetadata/v1/instance/id"  # then GCP, refused
    assert "/metadata/instance/compute/vmId" in paths
    assert not [e for e in doc["errors"] if "metadata" in e["source"]]


def test_gcp_probe_needs_the_google_flavor_header(tmp_path: Path, metadata_server: Any) -> None:
    """A service answering GCE paths without `Metadata-Flavor: Google` is not GCE."""
    fake = metadata_server("azure")
    tree = make_tree(tmp_path, "snp")
    options = tree.options(provider="gcp", vm_id="vm-fallback", metadata_url=[fake.url])
    collector.run(options, io.StringIO())
    doc = _load(tree.out)
    assert (doc["vm"]["provider"], doc["vm"]["id"]) == ("gcp", "vm-fallback")
    assert "gcp metadata service" in _error_sources(doc)


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_no_metadata_service_and_no_vm_id_is_unusable(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    stderr = io.StringIO()
    options = tree.options(provider="auto", vm_id=None, metadata_url=[_closed_port_url()])
    assert collector.run(options, stderr) == collector.EXIT_USAGE
    assert not tree.out.exists()
    assert "--vm-id" in stderr.getvalue()
    assert not (tree.kernel / "inblob-log").exists()  # nothing requested without a binding


def test_no_metadata_service_with_vm_id_binds_it_and_names_the_gaps(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    options = tree.options(provider="auto", vm_id="vm-9", metadata_url=[_closed_port_url()])
    assert collector.run(options, io.StringIO()) == collector.EXIT_OK
    doc = _load(tree.out)
    assert doc["vm"] == {"provider": "unknown", "id": "vm-9", "identity_source": "none"}
    assert {"aws metadata service", "gcp metadata service", "azure metadata service"} <= (
        _error_sources(doc)
    )


def test_vm_id_disagreeing_with_metadata_is_reported(tmp_path: Path, metadata_server: Any) -> None:
    fake = metadata_server("aws")
    tree = make_tree(tmp_path, "snp")
    options = tree.options(provider="aws", vm_id="i-0ffffffffffffffff", metadata_url=[fake.url])
    collector.run(options, io.StringIO())
    doc = _load(tree.out)
    assert doc["vm"]["id"] == AWS_INSTANCE
    [error] = [e for e in doc["errors"] if e["source"] == "vm identity"]
    assert "i-0ffffffffffffffff" in error["message"]


# -- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nonce": "abc"}, "64 hex"),
        ({"provider": "none", "vm_id": None}, "--vm-id"),
        ({"provider": "ibm"}, "--provider"),
        ({"metadata_url": ["ftp://x"]}, "--metadata-url"),
    ],
)
def test_unusable_arguments(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    tree = make_tree(tmp_path, "snp")
    with pytest.raises(collector.UsageError, match=message):
        tree.options(**overrides)


def test_out_must_be_a_file_in_an_existing_directory(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    with pytest.raises(collector.UsageError, match="directory"):
        tree.options(out=tree.out.parent)
    with pytest.raises(collector.UsageError, match="does not exist"):
        tree.options(out=tmp_path / "missing" / "e.json")
    with pytest.raises(collector.UsageError, match="key-release"):
        tree.options(key_release=tmp_path / "absent.jws")


def test_metadata_url_applies_to_all_clouds_or_one() -> None:
    urls = collector._metadata_urls(["http://127.0.0.1:1/", "gcp=http://127.0.0.1:2"])
    assert urls == {
        "aws": "http://127.0.0.1:1",
        "gcp": "http://127.0.0.1:2",
        "azure": "http://127.0.0.1:1",
    }


def test_python_m_main_collects_and_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = make_tree(tmp_path, "tdx")
    assert guest_main.main(["collect", *tree.argv("--provider", "none", "--vm-id", "x")]) == 0
    assert _load(tree.out)["tee"]["provider"] == "tdx_guest"
    bad = tree.argv("--provider", "none")
    assert guest_main.main(["collect", *bad]) == 2
    assert "--vm-id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        guest_main.main(["collect", *tree.argv("--provider", "oracle")])
    assert exit_info.value.code == 2


# -- import isolation ---------------------------------------------------------------------------

FORBIDDEN = (
    "pydantic",
    "typer",
    "click",
    "rich",
    "yaml",
    "boto3",
    "botocore",
    "google",
    "azure",
    "jinja2",
    "cel",
)


def test_guest_package_imports_nothing_beyond_the_standard_library() -> None:
    code = (
        "import sys, json\n"
        "import auditor.guest.collector, auditor.guest.nonces, auditor.guest.__main__\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    modules = json.loads(out)
    tops = {m.split(".")[0] for m in modules}
    assert not tops & set(FORBIDDEN), tops & set(FORBIDDEN)
    ours = {m for m in modules if m.startswith("auditor")}
    assert ours <= {"auditor", "auditor._version"} | {
        m for m in ours if m.startswith("auditor.guest")
    }


def test_collector_runs_from_the_package_alone_without_site_packages(tmp_path: Path) -> None:
    """A copy of auditor/{__init__,_version}.py + auditor/guest, run with `python -S`."""
    lib = tmp_path / "lib" / "auditor"
    (lib / "guest").mkdir(parents=True)
    for name in ("__init__.py", "_version.py"):
        shutil.copy(REPO / "auditor" / name, lib / name)
    for source in (REPO / "auditor" / "guest").glob("*.py"):
        shutil.copy(source, lib / "guest" / source.name)
    root = tmp_path / "root"
    _write(root / "proc" / "cmdline", CMDLINE)
    out = tmp_path / "evidence.json"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(tmp_path / "lib")}
    args = ["collect", "--nonce", NONCE.hex(), "--out", str(out), "--root", str(root)]
    args += ["--configfs", str(tmp_path / "none"), "--provider", "none", "--vm-id", "vm-1"]
    result = subprocess.run(
        [sys.executable, "-S", "-m", "auditor.guest", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == collector.EXIT_PARTIAL, result.stderr
    doc = _load(out)
    assert doc["kernel_cmdline"] == CMDLINE and "tee" not in doc


# -- ccaudit guest ... --------------------------------------------------------------------------


def test_cli_challenge_json_records_the_nonce(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "guest",
            "challenge",
            "--vm",
            "i-0abc",
            "--provider",
            "aws",
            "--state",
            str(tmp_path),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["identity"] == "aws:i-0abc"
    record = NonceStore(tmp_path / STORE_FILE).lookup(doc["nonce"])
    assert record is not None and (record.vm_id, record.provider) == ("i-0abc", "aws")
    assert doc["command"][doc["command"].index("--nonce") + 1] == doc["nonce"]
    assert doc["command"][doc["command"].index("--provider") + 1] == "aws"


def test_cli_challenge_text_uses_ccaudit_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCAUDIT_HOME", str(tmp_path / "home"))
    result = runner.invoke(app, ["guest", "challenge", "--vm", "vm-7"])
    assert result.exit_code == 0, result.output
    nonce = result.stdout.split("nonce: ", 1)[1].split()[0]
    assert NonceStore(tmp_path / "home" / STORE_FILE).lookup(nonce) is not None
    assert f"python3 -m auditor.guest collect --nonce {nonce}" in result.stdout


def test_cli_challenge_then_collect_then_check(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = runner.invoke(
        app, ["guest", "challenge", "--vm", "vm-1", "--state", str(state), "--format", "json"]
    )
    nonce = json.loads(result.stdout)["nonce"]
    tree = make_tree(tmp_path, "snp")
    argv = tree.argv("--provider", "none", "--vm-id", "vm-1")
    argv[argv.index("--nonce") + 1] = nonce
    collected = runner.invoke(app, ["guest", "collect", *argv])
    assert collected.exit_code == 0, collected.output
    doc = _load(tree.out)
    assert tree.inblob_log() == expected_report_data(doc, "unknown:vm-1")
    digest = hashlib.sha256(tree.out.read_bytes()).hexdigest()
    store = NonceStore(state / STORE_FILE)
    assert store.check(doc["nonce"], doc["vm"]["id"], digest)[0]
    store.mark_used(doc["nonce"], digest)
    assert not store.check(doc["nonce"], doc["vm"]["id"], "c" * 64)[0]


def test_cli_collect_partial_and_usage_exit_codes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    (tree.kernel / "outblob").unlink()
    (tree.kernel / "provider").unlink()
    partial = runner.invoke(
        app, ["guest", "collect", *tree.argv("--provider", "none", "--vm-id", "v")]
    )
    assert partial.exit_code == 3, partial.output
    assert "configfs-tsm" in _error_sources(_load(tree.out))
    bad = runner.invoke(app, ["guest", "collect", "--nonce", "zz", "--out", str(tree.out)])
    assert bad.exit_code == 2
    assert "64 hex" in bad.stderr


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ({}, 0),
        (SYSTEMD_TPM2, 1),
        ({"0": {"type": "clevis", "jwe": {"protected": "eyJjbGV2aXMiOnsicGluIjoidHBtMiJ9fQ"}}}, 1),
        ({"0": {"type": "clevis", "jwe": {"protected": "eyJjbGV2aXMiOnsicGluIjoidGFuZyJ9fQ"}}}, 0),
        ({"0": {"type": "systemd-fido2"}, "1": {"type": "systemd-tpm2"}}, 1),
    ],
)
def test_luks2_tokens_sealed_to_a_tpm_are_counted(
    tmp_path: Path, tokens: dict[str, Any], expected: int
) -> None:
    path = tmp_path / "dev"
    path.write_bytes(luks2_header(tokens))
    assert diskcrypt.luks_tpm_tokens(path) == expected


def test_unreadable_luks_header_is_a_named_problem(tmp_path: Path) -> None:
    root = tmp_path / "root"
    luks_root_layout(root)
    (root / "dev" / "vda2").write_bytes(b"not a luks header")
    section, problems = diskcrypt.disk_encryption(root)
    assert "tpm_tokens" not in section["devices"][0]
    assert problems == [("LUKS header of dm-0", "/dev/vda2: not a LUKS header")]


def test_provider_agents_and_cloud_init_are_read_from_proc_and_run(tmp_path: Path) -> None:
    from auditor.guest import agents

    root = tmp_path / "root"
    _write(root / "proc" / "1" / "comm", "systemd\n")
    _write(root / "proc" / "812" / "comm", "amazon-ssm-agen\n")  # comm is cut at 15 bytes
    _write(root / "proc" / "812" / "cmdline", b"/usr/bin/amazon-ssm-agent\0")
    _write(root / "proc" / "913" / "comm", "python3\n")
    _write(root / "proc" / "913" / "cmdline", b"/usr/bin/python3\0-u\0/usr/sbin/waagent\0-daemon\0")
    _write(root / "proc" / "self" / "comm", "x\n")  # not a pid
    section, problems = agents.agents_section(root)
    assert problems == []
    assert section == {
        "provider_agents": ["amazon-ssm-agent", "waagent"],
        "cloud_init": {"ran": False},
    }
    _write(root / "run" / "cloud-init" / "result.json", '{"v1": {"datasource": "DataSourceEc2"}}')
    assert agents.cloud_init(root) == {
        "ran": True,
        "source": "/run/cloud-init/result.json",
        "datasource": "DataSourceEc2",
    }
