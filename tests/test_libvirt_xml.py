"""libvirt's XML and typed parameters, parsed as the libvirt documentation writes them.

The domain XML here follows libvirt.org/formatdomain.html (`<launchSecurity>` for SEV, SEV-SNP
and TDX, `<loader stateless>`, `<tpm>` backends, `<disk>` `<encryption>`, the guest-agent
`<channel>`, `<shmem>`, virtiofs `<filesystem>`), the domain capabilities XML
formatdomaincaps.html (`<sev>`, `<launchSecurity>` sectype enum) and the typed parameters of
virDomainGetLaunchSecurityInfo and virNodeGetSEVInfo (libvirt-domain.h / libvirt-host.h). No
libvirt is needed: this is the layer replays and the demo run on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from auditor.model import Technology
from auditor.providers.libvirt_xml import (
    MAX_XML_BYTES,
    HostFacts,
    LibvirtXmlError,
    document,
    launch_measurement,
    parse_capabilities,
    parse_domain,
    parse_domain_capabilities,
    sev_platform,
)
from auditor.verify.measurement import MeasurementError, expected_sev_launch_digest
from auditor.verify.sev_launch import (
    SevLaunchError,
    check_launch,
    make_launch_info,
    parse_launch_info,
)

OVMF = Path(__file__).resolve().parent / "data" / "vectors" / "sev-snp-measure"
OVMF_FILE = OVMF / "ovmf_AmdSev_suffix.bin"


def domain(
    launch: str = "",
    devices: str = "",
    os_extra: str = "",
    name: str = "vm1",
    extra: str = "",
) -> str:
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>4DEA22B3-1D52-D8F3-2516-782E98AB3FA0</uuid>
  <memory unit='GiB'>4</memory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-9.2'>hvm</type>
    {os_extra}
  </os>
  <devices>
    {devices}
  </devices>
  {launch}
  {extra}
</domain>"""


def sev(policy: str, kind: str = "sev", attrs: str = "") -> str:
    body = "<cbitpos>51</cbitpos><reducedPhysBits>1</reducedPhysBits>" if kind != "tdx" else ""
    return f"<launchSecurity type='{kind}'{attrs}>{body}<policy>{policy}</policy></launchSecurity>"


HOST = HostFacts(
    host="kvm1.example.eu", uri="qemu+ssh://kvm1.example.eu/system", location="Germany", operator=""
)


# -- launch security and its policy ---------------------------------------------------------


@pytest.mark.parametrize(
    ("launch", "technology", "facts"),
    [
        # SEV policy bits: NODBG 0, NOKS 1, ES 2, NOSEND 3 (AMD SEV API, guest policy)
        (sev("0x0000"), Technology.SEV, {"debug": True, "migration": True, "key_sharing": True}),
        (sev("0x0001"), Technology.SEV, {"debug": False, "migration": True}),
        (sev("0x000f"), Technology.SEV_ES, {"debug": False, "migration": False}),
        (sev("0x0005"), Technology.SEV_ES, {"debug": False, "migration": True}),
        # SNP guest policy: SMT 16, reserved-1 17, MIGRATE_MA 18, DEBUG 19
        (sev("0x00030000", "sev-snp"), Technology.SEV_SNP, {"debug": False, "migration": False}),
        (sev("0x000b0000", "sev-snp"), Technology.SEV_SNP, {"debug": True, "migration": False}),
        (sev("0x00070000", "sev-snp"), Technology.SEV_SNP, {"debug": False, "migration": True}),
        # TD attributes: DEBUG 0, SEPT_VE_DISABLE 28, MIGRATABLE 29
        (sev("0x10000000", "tdx"), Technology.TDX, {"debug": False, "migration": False}),
        (sev("0x10000001", "tdx"), Technology.TDX, {"debug": True, "migration": False}),
        (sev("0x30000000", "tdx"), Technology.TDX, {"debug": False, "migration": True}),
    ],
)
def test_launch_security_technology_and_policy(
    launch: str, technology: Technology, facts: dict[str, bool]
) -> None:
    dom = parse_domain(domain(launch))
    assert dom.launch_security is not None
    assert dom.launch_security.technology is technology
    policy = dom.launch_security.policy_facts()
    assert {k: policy[k] for k in facts} == facts
    doc, tech = document(HOST, dom, "running", None)
    assert tech is technology and doc["technology"] == technology.value
    assert doc["cc"]["policy"] == policy and doc["cc"]["raw_flag"] == dom.launch_security.type


def test_no_launch_security_is_no_technology_and_unknown_type_is_unknown() -> None:
    doc, tech = document(HOST, parse_domain(domain()), "running", None)
    assert tech is Technology.NONE and "policy" not in doc["cc"]
    dom = parse_domain(domain("<launchSecurity type='s390-pv'/>"))
    doc, tech = document(HOST, dom, "running", None)
    assert tech is Technology.UNKNOWN and "technology" not in doc
    assert dom.launch_security is not None and dom.launch_security.policy_facts() == {"raw": None}


def test_firmware_stateless_loader_kernel_hashes_and_direct_boot() -> None:
    dom = parse_domain(
        domain(
            sev("0x0003", attrs=" kernelHashes='yes'"),
            os_extra="<loader type='rom' stateless='yes'>/usr/share/OVMF/OVMF.amdsev.fd</loader>"
            "<kernel>/boot/vmlinuz</kernel><initrd>/boot/initrd.img</initrd>"
            "<cmdline>root=/dev/vda1 ro</cmdline>",
        )
    )
    assert dom.firmware == {
        "mode": "uefi",
        "loader": "/usr/share/OVMF/OVMF.amdsev.fd",
        "loader_type": "rom",
        "stateless": True,
        "nvram": False,
        "kernel": "/boot/vmlinuz",
        "initrd": "/boot/initrd.img",
        "cmdline": "root=/dev/vda1 ro",
    }
    doc, _ = document(HOST, dom, "running", None)
    assert doc["libvirt"]["kernel_hashes"] is True
    assert doc["boot"] == {"mode": "uefi", "secure_boot": False}
    stateful = parse_domain(
        domain(
            os_extra="<loader readonly='yes' secure='yes' type='pflash'>/x/OVMF_CODE.ms.fd"
            "</loader><nvram>/var/lib/libvirt/qemu/nvram/vm1_VARS.fd</nvram>"
        )
    )
    assert stateful.firmware["nvram"] is True and stateful.firmware["secure_boot"] is True
    assert "stateless" not in stateful.firmware
    bios = parse_domain(domain())
    assert bios.firmware == {"mode": "legacy-bios", "nvram": False}


@pytest.mark.parametrize(
    ("tpm", "expected"),
    [
        (
            "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>",
            {"present": True, "model": "tpm-crb", "backend": "emulator"},
        ),
        (
            "<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/>"
            "</backend></tpm>",
            {"present": True, "model": "tpm-tis", "backend": "passthrough"},
        ),
        ("", {"present": False}),
    ],
)
def test_tpm_emulated_on_the_host_is_the_providers(tpm: str, expected: dict[str, Any]) -> None:
    doc, _ = document(HOST, parse_domain(domain(devices=tpm)), "running", None)
    assert {k: doc["tpm"].get(k) for k in expected} == expected
    if expected["present"]:  # swtpm or the host's TPM: whoever runs the host holds its state
        assert doc["tpm"]["implemented_by"] == "provider"


def test_disks_host_encryption_serials_and_cdroms() -> None:
    devices = """
    <disk type='file' device='disk'>
      <source file='/img/root.qcow2'>
        <encryption format='luks'>
          <secret type='passphrase' uuid='0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f'/>
        </encryption>
      </source>
      <target dev='vda' bus='virtio'/><serial>root-1</serial>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/vg/data'/><target dev='vdb' bus='virtio'/>
      <encryption format='luks'><secret type='passphrase' usage='data'/></encryption>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='pool/image'/><target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda'/></disk>
    """
    dom = parse_domain(domain(devices=devices))
    assert dom.disks == [
        {
            "id": "vda",
            "device": "/img/root.qcow2",
            "serial": "root-1",
            "boot": True,
            "encrypted": True,
            "custody": "provider_key",
            "encryption_type": "luks",
        },
        {
            "id": "vdb",
            "device": "/dev/vg/data",
            "boot": False,
            "encrypted": True,
            "custody": "provider_key",
            "encryption_type": "luks",
        },
        {"id": "vdc", "device": "pool/image", "boot": False, "encrypted": False, "custody": "none"},
    ]


def test_guest_agent_channel_and_host_paths() -> None:
    devices = """
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>
    <filesystem type='mount'>
      <driver type='virtiofs'/><source dir='/srv'/><target dir='srv'/>
    </filesystem>
    <shmem name='ivshmem0'><model type='ivshmem-plain'/><size unit='M'>4</size></shmem>
    <graphics type='vnc' port='-1'/>
    <serial type='pty'><target port='0'/></serial>
    <memballoon model='virtio'/>
    """
    dom = parse_domain(
        domain(devices=devices, extra="<memoryBacking><access mode='shared'/></memoryBacking>")
    )
    assert dom.guest_agent is True and dom.memballoon == "virtio"
    assert dom.host_paths == [
        "shared memory device ivshmem0",
        "virtiofs share srv",
        "guest memory backed as shared with the host",
        "vnc console",
        "serial console",
    ]
    doc, _ = document(HOST, dom, "running", None)
    assert doc["agents"]["vm_agent"] is True and doc["console"]["serial_port_enabled"] is True
    quiet = parse_domain(
        domain(devices="<channel type='unix'><target type='virtio' name='org.x'/></channel>")
    )
    assert quiet.guest_agent is False and quiet.host_paths == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<domain><name>x</name>", "not XML"),
        ("<capabilities/>", "root element <capabilities>, expected <domain>"),
        ("<domain><uuid>1</uuid></domain>", "no <name>"),
        (
            '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            "<domain><name>&b;</name></domain>",
            "DOCTYPE or entity",
        ),
        ("<domain><name>" + "x" * (MAX_XML_BYTES + 1) + "</name></domain>", "larger than"),
    ],
)
def test_xml_libvirt_would_not_write_is_refused(text: str, message: str) -> None:
    with pytest.raises(LibvirtXmlError, match="domain XML: .*" + message.split("<")[0]):
        parse_domain(text)


# -- host capabilities ------------------------------------------------------------------------


def test_domain_capabilities_sev_and_launch_security_types() -> None:
    caps = """<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path><domain>kvm</domain>
    <features>
      <sev supported='yes'><cbitpos>51</cbitpos><reducedPhysBits>1</reducedPhysBits>
        <maxGuests>410</maxGuests><maxESGuests>99</maxESGuests></sev>
      <launchSecurity supported='yes'><enum name='sectype'><value>sev</value>
        <value>sev-snp</value></enum></launchSecurity>
    </features></domainCapabilities>"""
    assert parse_domain_capabilities(caps) == {
        "sev_supported": True,
        "cbitpos": 51,
        "max_guests": 410,
        "sev_es_supported": True,
        "launch_security_types": ["sev", "sev-snp"],
        "snp_supported": True,
        "tdx_supported": False,
    }
    intel = """<domainCapabilities><features><sev supported='no'/>
      <launchSecurity supported='yes'><enum name='sectype'><value>tdx</value></enum>
      </launchSecurity></features></domainCapabilities>"""
    assert parse_domain_capabilities(intel) == {
        "sev_supported": False,
        "launch_security_types": ["tdx"],
        "snp_supported": False,
        "tdx_supported": True,
    }
    # libvirt 9.0 lists no launchSecurity element: SNP support is then not stated at all
    old = "<domainCapabilities><features><sev supported='yes'/></features></domainCapabilities>"
    assert parse_domain_capabilities(old) == {"sev_supported": True}


def test_host_capabilities_cpu_and_sev_platform_info() -> None:
    caps = """<capabilities><host><cpu><arch>x86_64</arch><model>EPYC-Milan</model>
      <vendor>AMD</vendor></cpu></host></capabilities>"""
    assert parse_capabilities(caps) == {
        "arch": "x86_64",
        "cpu_model": "EPYC-Milan",
        "cpu_vendor": "AMD",
    }
    info = {"pdh": "UERI", "cert-chain": "Q0hBSU4=", "cbitpos": 51, "max-guests": 15, "x": 1}
    assert sev_platform(info) == {
        "sev_pdh_sha256": hashlib.sha256(b"UERI").hexdigest(),
        "sev_cert_chain_sha256": hashlib.sha256(b"Q0hBSU4=").hexdigest(),
        "sev_cbitpos": 51,
        "sev_max_guests": 15,
    }


# -- the SEV launch measurement ---------------------------------------------------------------

TIK = bytes(range(16))
DIGEST = hashlib.sha256(b"ovmf").digest()
MNONCE = bytes(range(100, 116))


def _spec_measure(tik: bytes, policy: int, digest: bytes, mnonce: bytes) -> bytes:
    """LAUNCH_MEASURE as the AMD SEV API spells it, written out independently of the module."""
    api_major, api_minor, build = 1, 55, 21
    message = (
        bytes([0x04, api_major, api_minor, build]) + policy.to_bytes(4, "little") + digest + mnonce
    )
    return hmac.new(tik, message, hashlib.sha256).digest()


def _info(policy: int = 0x000F, measure: bytes | None = None) -> dict[str, Any]:
    measure = measure if measure is not None else _spec_measure(TIK, policy, DIGEST, MNONCE)
    return {
        "sev-measurement": base64.b64encode(measure + MNONCE).decode(),
        "sev-api-major": 1,
        "sev-api-minor": 55,
        "sev-build-id": 21,
        "sev-policy": policy,
    }


def test_launch_measurement_checks_against_the_spec_layout() -> None:
    assert make_launch_info(DIGEST, TIK, MNONCE, 0x000F, (1, 55, 21)) == _info()
    result = check_launch(_info(), DIGEST, TIK, expected_policy=0x000F)
    assert result.passes and result.authentic
    assert [c.name for c in result.checks] == [
        "measure",
        "policy_debug",
        "policy_send",
        "policy_expected",
    ]
    assert result.facts()["sev_es"] is True and result.facts()["policy"] == "0x000f"


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({"tik": bytes(16)}, {"measure"}),
        ({"digest": hashlib.sha256(b"other firmware").digest()}, {"measure"}),
        # the host reports a policy other than the one that was measured
        ({"info": {"sev-policy": 0x0007}}, {"measure", "policy_send", "policy_expected"}),
        ({"info": {"sev-api-minor": 56}}, {"measure"}),
        ({"info": {"sev-build-id": 22}}, {"measure"}),
        ({"mnonce": bytes(16)}, {"measure"}),
        ({"expected_policy": 0x0007}, {"policy_expected"}),
    ],
)
def test_launch_measurement_refuses_each_change(change: dict[str, Any], failed: set[str]) -> None:
    info = _info()
    if "mnonce" in change:
        measure = base64.b64decode(info["sev-measurement"])[:32]
        info["sev-measurement"] = base64.b64encode(measure + change["mnonce"]).decode()
    info.update(change.get("info", {}))
    result = check_launch(
        info,
        change.get("digest", DIGEST),
        change.get("tik", TIK),
        change.get("expected_policy", 0x000F),
    )
    assert {c.name for c in result.checks if not c.ok} == failed
    assert not result.passes
    assert result.authentic is ("measure" not in failed)


def test_a_policy_that_allows_debug_or_sending_never_passes_even_when_authentic() -> None:
    for policy, failed in ((0x0000, {"policy_debug", "policy_send"}), (0x0007, {"policy_send"})):
        result = check_launch(_info(policy), DIGEST, TIK)
        assert result.authentic and not result.passes
        assert {c.name for c in result.checks if not c.ok} == failed


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ({}, "no sev-measurement"),
        ({"sev-measurement": "not base64!"}, "not base64"),
        ({"sev-measurement": base64.b64encode(bytes(47)).decode()}, "47 bytes"),
        ({"sev-measurement": base64.b64encode(bytes(48)).decode()}, "sev-policy"),
        (
            {"sev-measurement": base64.b64encode(bytes(48)).decode(), "sev-policy": 1},
            "sev-api-major",
        ),
        (
            {
                "sev-measurement": base64.b64encode(bytes(48)).decode(),
                "sev-policy": 1,
                "sev-api-major": 300,
            },
            "sev-api-major",
        ),
    ],
)
def test_launch_information_that_is_not_a_secure_processor_answer(
    info: dict[str, Any], message: str
) -> None:
    with pytest.raises(SevLaunchError, match=message):
        parse_launch_info(info)
    recorded = launch_measurement(info)
    assert recorded["verified"] is False and message.split()[0] in recorded["problem"]


def test_scan_records_the_measurement_and_never_calls_it_verified() -> None:
    recorded = launch_measurement(_info())
    assert recorded["measurement"] == _spec_measure(TIK, 0x000F, DIGEST, MNONCE).hex()
    assert recorded["mnonce"] == MNONCE.hex() and recorded["verified"] is False
    doc, _ = document(HOST, parse_domain(domain(sev("0x000f"))), "paused", recorded)
    assert doc["attestation"]["source"] == "libvirt getLaunchSecurityInfo"
    assert doc["attestation"]["provider_verdict"] == "none"
    assert doc["state"] == "paused"


def test_expected_sev_and_sev_es_launch_digests() -> None:
    # SEV measures the firmware image as loaded: SHA-256 of the OVMF file
    assert expected_sev_launch_digest("sev", OVMF_FILE) == (
        hashlib.sha256(OVMF_FILE.read_bytes()).hexdigest()
    )
    one = expected_sev_launch_digest("sev-es", OVMF_FILE, vcpus=1)
    two = expected_sev_launch_digest("sev-es", OVMF_FILE, vcpus=2)
    assert len({one, two, expected_sev_launch_digest("sev", OVMF_FILE)}) == 3  # VMSAs count
    with pytest.raises(MeasurementError, match="only measured with a kernel"):
        expected_sev_launch_digest("sev", OVMF_FILE, append="console=ttyS0")
    with pytest.raises(MeasurementError, match="unknown SEV mode"):
        expected_sev_launch_digest("snp", OVMF_FILE)
    with pytest.raises(MeasurementError, match="not a readable file"):
        expected_sev_launch_digest("sev", OVMF / "missing.fd")
