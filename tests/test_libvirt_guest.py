"""A KVM guest's side: the collector's libvirt identity, disk matching by serial, and the
owner's SEV launch check and digests on the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path

from typer.testing import CliRunner

from auditor.cli import app
from auditor.guest import collector
from auditor.guest.format import binding_report_data, claims_digest, identity_string
from auditor.guest.nonces import NonceStore
from auditor.verify.disk_coverage import covered_disks
from tests.conftest import DEMO_FLEET
from tests.test_guest_collector import (
    NONCE,
    _fake_kernel,  # noqa: F401 (the fake configfs-tsm)
    _load,
    _write,
    make_tree,
)

BY_ID = "/dev/disk/by-id"
UUID = "8F2B6C1E-3D4A-4F5B-9E8D-7C6B5A4F3E21"
runner = CliRunner()
LAUNCH = DEMO_FLEET / "libvirt" / "kvm-fra-1.example.eu" / "launch-security" / "archive-sev-es.json"
SESSION = DEMO_FLEET / "demo-launch-session"
OVMF = Path(__file__).resolve().parent / "data" / "vectors" / "sev-snp-measure"


def test_collector_binds_the_smbios_uuid_lower_case(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    _write(tree.root / collector.PRODUCT_UUID, UUID + "\n")
    assert collector.run(tree.options(provider="libvirt", vm_id=None, tpm=None), io.StringIO()) == 0
    doc = _load(tree.out)
    assert doc["vm"] == {"provider": "libvirt", "id": UUID.lower(), "identity_source": "smbios"}
    identity = identity_string("libvirt", UUID)
    assert identity == f"libvirt:{UUID.lower()}"
    assert doc["report_data"] == binding_report_data(NONCE, identity, claims_digest(doc)).hex()


def test_collector_vm_id_differing_from_smbios_is_said(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    _write(tree.root / collector.PRODUCT_UUID, UUID + "\n")
    other = "11111111-2222-3333-4444-555555555555"
    options = tree.options(provider="libvirt", vm_id=other, tpm=None)
    assert collector.run(options, io.StringIO()) == collector.EXIT_OK  # bound, said why
    doc = _load(tree.out)
    assert doc["vm"]["id"] == other
    assert any("differs from the SMBIOS UUID" in e["message"] for e in doc["errors"])


def test_collector_without_smbios_or_vm_id_names_what_to_pass(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    stderr = io.StringIO()
    options = tree.options(provider="libvirt", vm_id=None, tpm=None)
    assert collector.run(options, stderr) == collector.EXIT_USAGE
    assert not tree.out.exists()  # nothing to bind a report to: no file at all
    assert "sys/class/dmi/id/product_uuid: not present" in stderr.getvalue()
    assert "--vm-id" in stderr.getvalue()


def test_nonces_for_libvirt_uuids_compare_case_insensitively(tmp_path: Path) -> None:
    store = NonceStore(tmp_path / "nonces.json")
    nonce = store.issue(UUID, "libvirt")
    ok, why = store.check(nonce, UUID.lower(), "ab" * 32)
    assert ok, why
    ok, why = store.check(nonce, "11111111-2222-3333-4444-555555555555", "ab" * 32)
    assert not ok and "was issued for VM" in why


def test_guest_luks_covers_a_libvirt_disk_only_by_its_serial() -> None:
    disks = [
        {"id": "vda", "serial": "root-1", "boot": True},
        {"id": "vdb", "serial": "data-1"},
        {"id": "vdc"},  # no <serial>: nothing the guest sees can name it
    ]
    devices = [
        {"name": "dm-0", "backing": [{"name": "vda", "serial": "root-1", "links": []}]},
        {
            "name": "dm-1",
            "backing": [{"name": "sdb", "links": [f"{BY_ID}/scsi-0QEMU_QEMU_HARDDISK_data-1"]}],
        },
        {"name": "dm-2", "backing": [{"name": "vdc", "links": [f"{BY_ID}/virtio-vdc"]}]},
        {"name": "dm-3", "backing": [{"name": "vde", "links": [f"{BY_ID}/virtio-root-1-part1"]}]},
    ]
    assert covered_disks("libvirt", disks, devices) == {0: "dm-0", 1: "dm-1"}
    assert covered_disks("aws", disks, devices) == {}


def test_cli_verify_sev_launch_with_the_demo_session() -> None:
    digest = (SESSION / "archive-sev-es.digest").read_text().strip()
    tik = str(SESSION / "archive-sev-es.tik")
    args = ["--tik", tik, "--digest", digest, "--policy", "000f", "--format", "json"]
    ok = runner.invoke(app, ["verify", "sev-launch", str(LAUNCH), *args])
    assert ok.exit_code == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert (doc["passes"], doc["authentic"], doc["sev_es"]) == (True, True, True)
    wrong = runner.invoke(
        app, ["verify", "sev-launch", str(LAUNCH), "--tik", tik, "--digest", "00" * 32]
    )
    assert wrong.exit_code == 1 and "authentic: no" in wrong.stdout
    args = ["--tik", tik, "--es", "--vcpus", "2", "--ovmf", str(OVMF / "ovmf_AmdSev_suffix.bin")]
    computed = runner.invoke(app, ["verify", "sev-launch", str(LAUNCH), *args])
    assert computed.exit_code == 1  # a different firmware than the one measured


def test_cli_verify_sev_launch_unusable_input(tmp_path: Path) -> None:
    short = tmp_path / "short.tik"
    short.write_bytes(b"x" * 15)
    tik = str(SESSION / "archive-sev-es.tik")
    cases = [
        (["--tik", str(short), "--digest", "00" * 32], "expected 16 bytes"),
        (["--tik", tik], "--digest HEX or --ovmf IMAGE"),
        (["--tik", tik, "--digest", "00" * 31], "expected 32 bytes"),
        (["--tik", tik, "--digest", "00" * 32, "--policy", "zz"], "--policy"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["verify", "sev-launch", str(LAUNCH), *extra])
        assert result.exit_code == 2, extra
        assert message in result.stderr, (extra, result.stderr)
    not_json = tmp_path / "x.json"
    not_json.write_text("{")
    args = ["--tik", tik, "--digest", "00" * 32]
    result = runner.invoke(app, ["verify", "sev-launch", str(not_json), *args])
    assert result.exit_code == 2 and "not JSON" in result.stderr


def test_cli_measure_sev_and_sev_es() -> None:
    ovmf = str(OVMF / "ovmf_AmdSev_suffix.bin")
    sev = runner.invoke(app, ["measure", "sev", "--ovmf", ovmf])
    es = runner.invoke(app, ["measure", "sev-es", "--ovmf", ovmf, "--vcpus", "2"])
    assert sev.exit_code == es.exit_code == 0
    assert len(sev.stdout.strip()) == len(es.stdout.strip()) == 64
    assert sev.stdout != es.stdout
    missing = runner.invoke(app, ["measure", "sev", "--ovmf", "/nonexistent.fd"])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
