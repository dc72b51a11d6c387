"""libvirt's XML, read into the VM document: the parsing half of the libvirt provider.

libvirt answers in XML (domain XML, host capabilities, domain capabilities) plus a typed-parameter
map for `getLaunchSecurityInfo`. This module turns what one host returned into the same VM
document the clouds fill, with no libvirt binding involved, so replays and the demo need no
libvirt on the machine. Facts follow the libvirt domain format documentation
(libvirt.org/formatdomain.html: `<launchSecurity>`, `<os>`/`<loader>`, `<tpm>`, `<disk>` with
`<encryption>`, `<channel>`, `<memballoon>`, `<shmem>`, `<filesystem>`, `<graphics>`) and the
AMD SEV API (guest policy bits), the SEV-SNP ABI (guest policy) and Intel's TD attributes.

On a private cloud the parties keep their meaning, with the owner's own administrators in the
`hypervisor` and `control_plane` roles: whoever runs the host and its libvirt.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from auditor.model import Technology
from auditor.verify.sev_launch import SevLaunchError, parse_launch_info

PROVIDER = "libvirt"
MAX_XML_BYTES = 4 * 1024 * 1024

#: SEV guest policy (AMD SEV API, section 3): bit -> meaning.
SEV_POLICY_BITS = {0: "NODBG", 1: "NOKS", 2: "ES", 3: "NOSEND", 4: "DOMAIN", 5: "SEV"}
#: SEV-SNP guest policy (SNP ABI, GUEST_POLICY): the bits that judge a party.
SNP_SMT, SNP_MIGRATE_MA, SNP_DEBUG, SNP_SINGLE_SOCKET = 16, 18, 19, 20
#: TD attributes (Intel TDX module ABI): DEBUG is bit 0, MIGRATABLE bit 29.
TDX_DEBUG, TDX_SEPT_VE_DISABLE, TDX_MIGRATABLE = 0, 28, 29
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


class LibvirtXmlError(ValueError):
    """XML libvirt would not have written (malformed, oversized, not the expected element)."""


def _parse(text: str, root: str, what: str) -> ET.Element:
    if len(text.encode("utf-8", "replace")) > MAX_XML_BYTES:
        raise LibvirtXmlError(f"{what}: larger than {MAX_XML_BYTES} bytes")
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise LibvirtXmlError(f"{what}: a DOCTYPE or entity declaration (libvirt writes none)")
    try:
        element = ET.fromstring(text)
    except ET.ParseError as err:
        raise LibvirtXmlError(f"{what}: not XML: {err}") from err
    if element.tag != root:
        raise LibvirtXmlError(f"{what}: root element <{element.tag}>, expected <{root}>")
    return element


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


def _yes(value: str | None) -> bool | None:
    return None if value is None else value.strip().lower() in ("yes", "on", "true")


@dataclass
class LaunchSecurity:
    """`<launchSecurity>`: the confidential-computing technology and its guest policy."""

    type: str  # sev | sev-snp | tdx | s390-pv | (anything else, kept as given)
    policy: int | None = None
    cbitpos: int | None = None
    reduced_phys_bits: int | None = None
    kernel_hashes: bool | None = None
    has_session: bool = False  # SEV: the owner's launch session blob (dhCert + session)

    @property
    def technology(self) -> Technology:
        if self.type == "sev":
            es = self.policy is not None and bool(self.policy >> 2 & 1)
            return Technology.SEV_ES if es else Technology.SEV
        if self.type == "sev-snp":
            return Technology.SEV_SNP
        if self.type == "tdx":
            return Technology.TDX
        return Technology.UNKNOWN

    def policy_facts(self) -> dict[str, Any]:
        """What the policy allows the host: debugging and migration (None: not stated)."""
        p = self.policy
        if p is None:
            return {"raw": None}
        facts: dict[str, Any] = {"raw": f"0x{p:x}"}
        if self.type == "sev":
            facts["debug"] = not bool(p & 1)  # NODBG clear: the host can debug the guest
            facts["key_sharing"] = not bool(p >> 1 & 1)
            facts["migration"] = not bool(p >> 3 & 1)  # NOSEND clear: it can be sent
            facts["bits"] = [name for bit, name in SEV_POLICY_BITS.items() if p >> bit & 1]
        elif self.type == "sev-snp":
            facts["debug"] = bool(p >> SNP_DEBUG & 1)
            facts["migration"] = bool(p >> SNP_MIGRATE_MA & 1)  # a migration agent allowed
            facts["smt"] = bool(p >> SNP_SMT & 1)
            facts["single_socket"] = bool(p >> SNP_SINGLE_SOCKET & 1)
        elif self.type == "tdx":
            facts["debug"] = bool(p >> TDX_DEBUG & 1)
            facts["migration"] = bool(p >> TDX_MIGRATABLE & 1)
            facts["sept_ve_disable"] = bool(p >> TDX_SEPT_VE_DISABLE & 1)
        return facts


@dataclass
class DomainFacts:
    name: str
    uuid: str
    virt_type: str
    memory_kib: int | None
    vcpus: int | None
    firmware: dict[str, Any]
    launch_security: LaunchSecurity | None
    tpm: dict[str, Any]
    disks: list[dict[str, Any]] = field(default_factory=list)
    guest_agent: bool = False
    host_paths: list[str] = field(default_factory=list)  # ways the host reaches into the guest
    memballoon: str | None = None


def parse_domain(text: str) -> DomainFacts:
    """Domain XML (virDomainGetXMLDesc) -> the facts this tool judges."""
    dom = _parse(text, "domain", "domain XML")
    name = (dom.findtext("name") or "").strip()
    if not name:
        raise LibvirtXmlError("domain XML: no <name>")
    uuid = (dom.findtext("uuid") or "").strip().lower()
    memory = dom.find("memory")
    mem_kib = _int(memory.text) if memory is not None else None
    if memory is not None and mem_kib is not None:
        unit = (memory.get("unit") or "KiB").lower()
        mem_kib = mem_kib * {"mib": 1024, "gib": 1024 * 1024, "b": 1}.get(unit, 1)
        if unit == "b":
            mem_kib //= 1024
    return DomainFacts(
        name=name,
        uuid=uuid,
        virt_type=dom.get("type", ""),
        memory_kib=mem_kib,
        vcpus=_int(dom.findtext("vcpu")),
        firmware=_firmware(dom),
        launch_security=_launch_security(dom.find("launchSecurity")),
        tpm=_tpm(dom.find("devices/tpm")),
        disks=_disks(dom),
        guest_agent=any(
            _attr(ch.find("target"), "name") == GUEST_AGENT_CHANNEL
            for ch in dom.findall("devices/channel")
        ),
        host_paths=_host_paths(dom),
        memballoon=_attr(dom.find("devices/memballoon"), "model"),
    )


def _attr(element: ET.Element | None, name: str) -> str | None:
    return element.get(name) if element is not None else None


def _firmware(dom: ET.Element) -> dict[str, Any]:
    os_el = dom.find("os")
    out: dict[str, Any] = {}
    if os_el is None:
        return out
    loader = os_el.find("loader")
    firmware = os_el.get("firmware")
    out["mode"] = "uefi" if firmware == "efi" or loader is not None else "legacy-bios"
    if loader is not None:
        out["loader"] = (loader.text or "").strip()
        out["loader_type"] = loader.get("type")
        out["secure_boot"] = _yes(loader.get("secure"))
        out["stateless"] = _yes(loader.get("stateless"))
    out["nvram"] = os_el.find("nvram") is not None
    for key in ("kernel", "initrd", "cmdline"):
        value = os_el.findtext(key)
        if value:
            out[key] = value.strip()[:4096]
    return {k: v for k, v in out.items() if v is not None}


def _launch_security(element: ET.Element | None) -> LaunchSecurity | None:
    if element is None:
        return None
    return LaunchSecurity(
        type=element.get("type", ""),
        policy=_int(element.findtext("policy")),
        cbitpos=_int(element.findtext("cbitpos")),
        reduced_phys_bits=_int(element.findtext("reducedPhysBits")),
        kernel_hashes=_yes(element.get("kernelHashes")),
        has_session=element.find("session") is not None and element.find("dhCert") is not None,
    )


def _tpm(element: ET.Element | None) -> dict[str, Any]:
    if element is None:
        return {"present": False}
    backend = element.find("backend")
    kind = backend.get("type") if backend is not None else None
    # emulator: swtpm on the host holds the state; passthrough: the host's own TPM
    return {
        "present": True,
        "model": element.get("model"),
        "backend": kind,
        "implemented_by": "provider",
        "persistent_state": _yes(backend.get("persistent_state")) if backend is not None else None,
    }


def _disks(dom: ET.Element) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, disk in enumerate(dom.findall("devices/disk")):
        if disk.get("device", "disk") not in ("disk", "lun"):
            continue  # cdrom, floppy: not where data lives
        source = disk.find("source")
        target = disk.find("target")
        where = None
        if source is not None:
            where = (
                source.get("file")
                or source.get("dev")
                or source.get("name")
                or source.get("volume")
            )
        encryption = disk.find("encryption")
        if encryption is None and source is not None:
            encryption = source.find("encryption")
        entry: dict[str, Any] = {
            "id": (target.get("dev") if target is not None else None) or f"disk{n}",
            "device": where,
            "serial": (disk.findtext("serial") or "").strip() or None,
            "boot": n == 0,
            "encrypted": encryption is not None,
            "custody": "none",
        }
        if encryption is not None:
            # libvirt/QEMU open the volume on the host with a secret the host holds
            entry.update(custody="provider_key", encryption_type=encryption.get("format"))
        out.append({k: v for k, v in entry.items() if v is not None})
    return out


def _host_paths(dom: ET.Element) -> list[str]:
    """Devices through which the host reaches into guest memory or the guest itself."""
    paths: list[str] = []
    for shmem in dom.findall("devices/shmem"):
        paths.append(f"shared memory device {shmem.get('name', '?')}")
    for fs in dom.findall("devices/filesystem"):
        driver = fs.find("driver")
        if driver is not None and driver.get("type") == "virtiofs":
            target = fs.find("target")
            paths.append(f"virtiofs share {target.get('dir') if target is not None else '?'}")
    access = dom.find("memoryBacking/access")
    if access is not None and access.get("mode") == "shared":
        paths.append("guest memory backed as shared with the host")
    for graphics in dom.findall("devices/graphics"):
        paths.append(f"{graphics.get('type', 'graphics')} console")
    if dom.find("devices/serial") is not None or dom.find("devices/console") is not None:
        paths.append("serial console")
    return paths


def parse_domain_capabilities(text: str) -> dict[str, Any]:
    """domcapabilities XML -> which launch-security technologies the host offers."""
    caps = _parse(text, "domainCapabilities", "domain capabilities XML")
    out: dict[str, Any] = {}
    sev = caps.find("features/sev")
    if sev is not None:
        out["sev_supported"] = _yes(sev.get("supported")) is True
        for key, tag in (("cbitpos", "cbitpos"), ("max_guests", "maxGuests")):
            value = _int(sev.findtext(tag))
            if value is not None:
                out[key] = value
        es = _int(sev.findtext("maxESGuests"))
        if es is not None:
            out["sev_es_supported"] = es > 0
    launch = caps.find("features/launchSecurity")
    if launch is not None and _yes(launch.get("supported")):
        kinds = {v.text for v in launch.findall("enum[@name='sectype']/value") if v.text}
        out["launch_security_types"] = sorted(kinds)
        out["snp_supported"] = "sev-snp" in kinds
        out["tdx_supported"] = "tdx" in kinds
        out.setdefault("sev_supported", "sev" in kinds)
    tdx = caps.find("features/tdx")
    if tdx is not None:
        out["tdx_supported"] = _yes(tdx.get("supported")) is True
    return out


def parse_capabilities(text: str) -> dict[str, Any]:
    """Host capabilities XML -> the host's CPU (model, vendor) and architecture."""
    caps = _parse(text, "capabilities", "capabilities XML")
    cpu = caps.find("host/cpu")
    out: dict[str, Any] = {}
    if cpu is not None:
        for key in ("arch", "model", "vendor"):
            value = cpu.findtext(key)
            if value:
                out[f"cpu_{key}" if key != "arch" else "arch"] = value.strip()
    return out


def launch_measurement(info: dict[str, Any]) -> dict[str, Any]:
    """getLaunchSecurityInfo's typed parameters -> the SEV launch measurement, as recorded.

    Checking it needs the launch session's TIK, which only the guest owner holds
    (auditor/verify/sev_launch.py), so a scan records it and never calls it verified.
    """
    try:
        launch = parse_launch_info(info)
    except SevLaunchError as err:
        return {"problem": str(err), "verified": False}
    return {
        "measurement": launch.measure.hex(),
        "mnonce": launch.mnonce.hex(),
        "firmware": f"{launch.api_major}.{launch.api_minor}",
        "build_id": launch.build_id,
        "policy": f"0x{launch.policy:x}",
        "verified": False,
        "check": "ccaudit verify sev-launch, with the launch session's TIK",
    }


def sev_platform(info: dict[str, Any]) -> dict[str, Any]:
    """virNodeGetSEVInfo -> what the host's secure processor says about itself.

    The PDH and its certificate chain (PEK, OCA, CEK) are what a guest owner encrypts the launch
    session to; they are recorded by digest, for the owner to compare with the chain their
    session was built for (sevctl verifies the chain itself).
    """
    out: dict[str, Any] = {}
    for key, name in (("pdh", "sev_pdh_sha256"), ("cert-chain", "sev_cert_chain_sha256")):
        value = info.get(key)
        if isinstance(value, str) and value:
            out[name] = hashlib.sha256(value.encode("ascii", "replace")).hexdigest()
    for key in ("cbitpos", "reduced-phys-bits", "max-guests", "max-es-guests"):
        value = info.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            out[f"sev_{key.replace('-', '_')}"] = value
    cpu0 = info.get("cpu0-id")
    if isinstance(cpu0, str) and cpu0:
        out["sev_cpu0_id"] = cpu0[:200]
    return out


@dataclass
class HostFacts:
    """One libvirt host: who runs it, where, and what it offers."""

    host: str
    uri: str
    location: str  # the country the owner says the host is in ("" if not given)
    operator: str  # who runs the host ("" if not given: the owner)
    libvirt_version: str | None = None
    hypervisor_version: str | None = None
    capabilities: dict[str, Any] = field(default_factory=dict)
    domain_capabilities: dict[str, Any] | None = None  # None: could not be read


#: virDomainState -> the word reports use.
DOMAIN_STATES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}


def _size(dom: DomainFacts) -> str:
    """A domain's size as one token, like a cloud's instance type: `4vCPU/16GiB`."""
    mib = (dom.memory_kib or 0) // 1024
    memory = f"{mib // 1024}GiB" if mib and mib % 1024 == 0 else f"{mib}MiB"
    return f"{dom.vcpus or '?'}vCPU/{memory}"


def document(
    host: HostFacts,
    dom: DomainFacts,
    state: str | None,
    launch: dict[str, Any] | None,
) -> tuple[dict[str, Any], Technology]:
    """The VM document of one domain (the sections rules read), and its technology."""
    ls = dom.launch_security
    technology = Technology.NONE if ls is None else ls.technology
    policy = ls.policy_facts() if ls is not None else {}
    cc: dict[str, Any] = {
        "claimed_by": "control_plane",
        "raw_flag": ls.type if ls is not None else None,
        "technology": technology.value if technology is not Technology.UNKNOWN else None,
        "basis": "libvirt launchSecurity",
    }
    if ls is not None:
        cc["policy"] = policy
    size = _size(dom)
    doc: dict[str, Any] = {
        "provider": PROVIDER,
        "account": host.host,
        "region": host.location or host.host,
        "id": dom.uuid or dom.name,
        "name": dom.name,
        "instance_type": size,
        "state": state,
        "tags": {},
        "cc": {k: v for k, v in cc.items() if v is not None},
        "boot": {
            "mode": dom.firmware.get("mode", "legacy-bios"),
            "secure_boot": dom.firmware.get("secure_boot") is True,
        },
        "tpm": {k: v for k, v in dom.tpm.items() if v is not None},
        "disks": dom.disks,
        "agents": {
            # the QEMU guest agent: the host can run commands and read files in the guest
            "vm_agent": dom.guest_agent,
            "run_command": False,  # the guest agent's guest-exec: agents.qemu-guest-agent
            "extension_operations_allowed": False,
            "extensions": [],
        },
        # no metadata service: nothing host-provided is fetched by the guest over the network
        "metadata_service": {"enabled": False},
        "console": {"serial_port_enabled": "serial console" in dom.host_paths},
        "attestation": {"provider_verdict": "none", "source": "none"},
        "libvirt": {
            "host": host.host,
            "uri": host.uri,
            "operator": host.operator or "the owner (no operator configured)",
            "location": host.location or None,
            "libvirt_version": host.libvirt_version,
            "hypervisor_version": host.hypervisor_version,
            "virt_type": dom.virt_type,
            "firmware": dom.firmware,
            "host_paths": dom.host_paths,
            "memballoon": dom.memballoon,
            "kernel_hashes": ls.kernel_hashes if ls is not None else None,
            "launch_session": ls.has_session if ls is not None else False,
            **host.capabilities,
        },
    }
    if host.domain_capabilities is not None:
        dc = host.domain_capabilities
        doc["platform"] = {
            "snp_supported": dc.get("snp_supported"),
            "sev_supported": dc.get("sev_supported"),
            "tdx_supported": dc.get("tdx_supported"),
            "hypervisor": host.hypervisor_version,
        }
        doc["platform"] = {k: v for k, v in doc["platform"].items() if v is not None}
    if launch:
        doc["attestation"] = {
            "provider_verdict": "none",
            "source": "libvirt getLaunchSecurityInfo",
            "launch_measurement": launch,
        }
    if technology is not Technology.UNKNOWN:
        doc["technology"] = technology.value
    doc["libvirt"] = {k: v for k, v in doc["libvirt"].items() if v is not None}
    return doc, technology
