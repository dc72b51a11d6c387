"""The libvirt provider: the real binding on libvirt's `test:///` driver, replays, verdicts, CLI.

libvirt's test driver loads a whole host from one XML file (domains included) and answers
through the same libvirt-python calls a qemu:///system connection does. Debian 12's libvirt 9.0
test driver accepts SEV (and SEV-ES) domains but rejects `sev-snp` and `tdx` launch security
(added in libvirt 10.5 and later): those kinds are loaded only where the installed libvirt
can, and otherwise covered by the replay tests below (the parsing layer the demo uses).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from auditor.api import ScanError, scan
from auditor.cli import app
from auditor.config import load_config
from auditor.model import AuditRun, Level, Party, Status, VMResult
from auditor.providers.libvirt import Connection
from tests.conftest import DEMO_FLEET

DEMO_HOST = DEMO_FLEET / "libvirt" / "kvm-fra-1.example.eu"
runner = CliRunner()

try:
    import libvirt

    LIBVIRT_VERSION = libvirt.getVersion()
except ImportError:  # the optional extra is not installed
    libvirt = None
    LIBVIRT_VERSION = 0

needs_libvirt = pytest.mark.skipif(
    libvirt is None and not os.environ.get("CCAUDIT_REQUIRE_LIBVIRT"),
    reason="libvirt-python not installed (pip install -e '.[libvirt]'; CI installs it)",
)
SNP_TDX_REASON = (
    f"libvirt {LIBVIRT_VERSION // 1_000_000}.{LIBVIRT_VERSION // 1000 % 1000}'s test driver "
    "rejects sev-snp and tdx launch security (libvirt >= 10.5 loads them)"
)


def _domain(
    name: str, uuid: str, launch: str = "", devices: str = "", os_extra: str = "", state: int = 1
) -> str:
    """A domain for the test driver; `state` is its virDomainState (test:runstate, 3: paused)."""
    return f"""
  <domain type='kvm' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <test:runstate>{state}</test:runstate>
    <name>{name}</name>
    <uuid>{uuid}</uuid>
    <memory unit='KiB'>2097152</memory>
    <vcpu>2</vcpu>
    <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>{os_extra}</os>
    {launch}
    <devices>{devices}</devices>
  </domain>"""


AGENT = "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
SWTPM = "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>"
HOST_LUKS = (
    "<disk type='file' device='disk'><source file='/img/plain.qcow2'><encryption format='luks'>"
    "<secret type='passphrase' uuid='0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f'/></encryption>"
    "</source><target dev='vda' bus='virtio'/></disk>"
)
GUEST_DISK = (
    "<disk type='file' device='disk'><source file='/img/x.qcow2'/>"
    "<target dev='vda' bus='virtio'/><serial>root-1</serial></disk>"
)
STATELESS = (
    "<loader readonly='yes' type='rom' stateless='yes'>/usr/share/OVMF/OVMF.amdsev.fd</loader>"
)
STATEFUL = "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"

SEV_DEBUG_AGENT = _domain(
    "sev-debug-agent",
    "4dea22b3-1d52-d8f3-2516-782e98ab3fa0",
    "<launchSecurity type='sev'><cbitpos>47</cbitpos><reducedPhysBits>1</reducedPhysBits>"
    "<policy>0x0000</policy></launchSecurity>",
    GUEST_DISK + AGENT,
    STATEFUL,
)
SEV_ES_QUIET = _domain(
    "sev-es-quiet",
    "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
    "<launchSecurity type='sev' kernelHashes='yes'><cbitpos>47</cbitpos>"
    "<reducedPhysBits>1</reducedPhysBits><policy>0x000f</policy></launchSecurity>",
    GUEST_DISK,
    STATELESS,
)
PLAIN = _domain("plain", "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6", "", HOST_LUKS + SWTPM, STATEFUL)
SNP = _domain(
    "snp",
    "8f2b6c1e-3d4a-4f5b-9e8d-7c6b5a4f3e21",
    "<launchSecurity type='sev-snp'><cbitpos>51</cbitpos><reducedPhysBits>1</reducedPhysBits>"
    "<policy>0x00030000</policy></launchSecurity>",
    GUEST_DISK,
    STATELESS,
)
TDX_DEBUG = _domain(
    "tdx-debug",
    "2c4e6a8b-0d1f-4a3b-8c5d-6e7f8a9b0c1d",
    "<launchSecurity type='tdx'><policy>0x10000001</policy></launchSecurity>",
    GUEST_DISK + AGENT,
    STATEFUL,
)


def _node(tmp_path: Path, *domains: str) -> str:
    path = tmp_path / "node.xml"
    path.write_text(
        "<node><cpu><mhz>3000</mhz><model>EPYC-Milan</model></cpu>" + "".join(domains) + "</node>"
    )
    return f"test://{path}"


def _by_name(run: AuditRun) -> dict[str, VMResult]:
    return {vm.name or vm.id: vm for vm in run.vms}


def _findings(vm: VMResult) -> set[str]:
    return {f.rule_id for f in vm.findings if f.status is not Status.UNDETERMINED}


def _live(tmp_path: Path, *domains: str, **kw: Any) -> AuditRun:
    return scan(
        provider="libvirt",
        connect=[_node(tmp_path, *domains)],
        location="Germany",
        operator="Ops team",
        **kw,
    )


# -- the real binding on the test driver --------------------------------------------------------


@needs_libvirt
def test_test_driver_host_gives_each_kind_its_verdict(tmp_path: Path) -> None:
    run = _live(tmp_path, SEV_DEBUG_AGENT, SEV_ES_QUIET, PLAIN, run_dir=tmp_path / "run")
    vms = _by_name(run)
    assert set(vms) == {"sev-debug-agent", "sev-es-quiet", "plain"}
    assert {vm.provider for vm in vms.values()} == {"libvirt"}
    assert {vm.account for vm in vms.values()} == {"localhost"}  # a test:/// URI has no host
    assert {vm.region for vm in vms.values()} == {"Germany"}

    debug = vms["sev-debug-agent"]
    assert debug.technology.value == "SEV" and debug.level is Level.L0
    assert debug.id == "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
    # plain SEV: no integrity; and the policy lets the host debug and send it
    assert debug.parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    assert {
        "hypervisor.sev-without-integrity",
        "hypervisor.domain-policy-allows-debug",
        "control-plane.domain-policy-allows-migration",
        "agents.qemu-guest-agent",
    } <= _findings(debug)
    assert debug.parties[Party.GUEST_AGENTS] is Status.CAN_ACCESS

    quiet = vms["sev-es-quiet"]
    assert quiet.technology.value == "SEV_ES" and quiet.level is Level.L0
    assert quiet.parties[Party.HYPERVISOR] is Status.CAN_ACCESS  # SEV-ES is never scored as SNP
    assert "hypervisor.domain-policy-allows-debug" not in _findings(quiet)
    assert "control-plane.domain-policy-allows-migration" not in _findings(quiet)
    # no agent channel, no console, no share: only the XML says so
    assert quiet.parties[Party.GUEST_AGENTS] is Status.CLAIMED_EXCLUDED
    assert quiet.document["libvirt"]["firmware"]["stateless"] is True

    plain = vms["plain"]
    assert plain.technology.value == "NONE" and plain.level is Level.L0
    assert plain.parties[Party.VTPM] is Status.CAN_ACCESS  # swtpm on the host
    assert plain.parties[Party.KEY_CUSTODIAN] is Status.CAN_ACCESS  # LUKS opened by the host
    assert {"vtpm.provider-implemented", "keys.provider-held"} <= _findings(plain)
    assert plain.gdpr.region_jurisdiction == "Germany: Germany (EEA); host operator Ops team"
    # read-only: domain capabilities refused, said once per host and on each VM's platform facts
    gaps = [g for g in run.coverage.gaps if g.call == "virConnectGetDomainCapabilities"]
    assert len(gaps) == 1 and gaps[0].code == "VIR_ERR_OPERATION_DENIED"
    assert "read only" in gaps[0].message.lower()
    assert [[g.sections for g in vm.gaps] for vm in vms.values()] == [[["platform"]]] * 3

    # the recording replays to the same verdicts, with no libvirt involved
    raw = tmp_path / "run" / "raw" / "libvirt" / "localhost"
    assert (raw / "capabilities.xml").is_file() and (raw / "domains" / "plain.xml").is_file()
    assert json.loads((raw / "domcapabilities.error.json").read_text())["code"] == (
        "VIR_ERR_OPERATION_DENIED"
    )
    host = json.loads((raw / "host.json").read_text())
    assert host["location"] == "Germany" and host["states"]["plain"] == "running"
    again = scan(replay=tmp_path / "run")
    assert {vm.name: (vm.level, vm.parties) for vm in again.vms} == {
        vm.name: (vm.level, vm.parties) for vm in run.vms
    }


@needs_libvirt
def test_read_write_reads_launch_security_of_a_paused_domain_or_names_the_gap(
    tmp_path: Path,
) -> None:
    # started paused: the launch window, in which the launch measurement is read
    paused = SEV_ES_QUIET.replace("<test:runstate>1<", "<test:runstate>3<")
    uri = _node(tmp_path, paused, PLAIN)
    run = scan(provider="libvirt", connect=[uri], libvirt_read_write=True)
    vms = _by_name(run)
    es = vms["sev-es-quiet"]
    assert es.state == "paused"
    calls = {(g.call, g.resource) for g in run.coverage.gaps}
    # libvirt 9.0's test driver does not implement it: a gap on that VM's attestation facts
    assert ("virDomainGetLaunchSecurityInfo", "sev-es-quiet") in calls
    assert [g.sections for g in es.gaps if g.call == "virDomainGetLaunchSecurityInfo"] == [
        ["attestation"]
    ]
    assert not any(g.resource == "plain" for g in run.coverage.gaps)  # running: not asked
    # read-write reaches domain capabilities, which this driver does not implement either
    (caps,) = [g for g in run.coverage.gaps if g.call == "virConnectGetDomainCapabilities"]
    assert caps.code == "VIR_ERR_NO_SUPPORT"


@needs_libvirt
@pytest.mark.skipif(LIBVIRT_VERSION < 10_005_000, reason=SNP_TDX_REASON)
def test_test_driver_snp_and_tdx(tmp_path: Path) -> None:  # pragma: no cover - newer libvirt
    vms = _by_name(_live(tmp_path, SNP, TDX_DEBUG))
    assert vms["snp"].technology.value == "SEV_SNP"
    assert vms["snp"].parties[Party.HYPERVISOR] is Status.CLAIMED_EXCLUDED
    assert vms["tdx-debug"].parties[Party.HYPERVISOR] is Status.CAN_ACCESS


@needs_libvirt
def test_unreachable_host_is_a_scope_gap_not_an_empty_host(tmp_path: Path) -> None:
    run = scan(provider="libvirt", connect=[f"test://{tmp_path}/missing.xml"])
    assert run.vms == []
    (gap,) = run.coverage.gaps
    assert (gap.call, gap.affects, gap.account) == ("connect", "scope", "localhost")
    assert run.coverage.complete is False


def test_connection_host_names_the_replay_folder() -> None:
    assert Connection("qemu+ssh://root@kvm1.example.eu:2222/system").host == "kvm1.example.eu"
    assert Connection("qemu:///system").host == "localhost"
    assert Connection("test:///default").host == "localhost"


# -- replays: every kind, and hostile ones ------------------------------------------------------


def _host(tmp_path: Path, **domains: str | None) -> Path:
    """The demo host copied into a replay, with domains replaced (None: removed)."""
    root = tmp_path / "replay"
    host = root / "libvirt" / DEMO_HOST.name
    shutil.copytree(DEMO_HOST, host)
    for name, xml in domains.items():
        path = host / "domains" / f"{name}.xml"
        if xml is None:
            path.unlink()
        else:
            path.write_text(xml)
    return root


def _demo_scan(root: Path, tmp_path: Path, evidence: Path | None = None) -> AuditRun:
    state = tmp_path / "state"
    if not state.exists():
        shutil.copytree(DEMO_FLEET / "audit-state", state)
    return scan(
        replay=root,
        guest_evidence=evidence,
        rules=[DEMO_FLEET / "reference-measurements.yaml"],
        demo_trust_anchor=DEMO_FLEET / "demo-trust-anchor",
        key_broker_keys=[DEMO_FLEET / "demo-key-broker" / "broker.pem"],
        nonce_state=state,
    )


def _ledger_evidence(tmp_path: Path) -> Path:
    folder = tmp_path / "evidence"
    folder.mkdir(exist_ok=True)
    shutil.copy(DEMO_FLEET / "guest-evidence" / "ledger-db-snp.json", folder)
    return folder


def test_demo_host_replays_with_its_four_verdicts(tmp_path: Path) -> None:
    run = _demo_scan(_host(tmp_path), tmp_path, _ledger_evidence(tmp_path))
    vms = _by_name(run)
    assert {n: (vm.level.value, vm.gdpr.provider_can_access.value) for n, vm in vms.items()} == {
        "ledger-db-snp": ("L4", "no"),
        "archive-sev-es": ("L0", "yes"),
        "bi-sev-debug": ("L0", "yes"),
        "ci-runner": ("L0", "yes"),
    }
    ledger = vms["ledger-db-snp"]
    assert ledger.gdpr.blocking_parties == []
    assert ledger.parties[Party.HYPERVISOR] is Status.EXCLUDED
    assert ledger.parties[Party.KEY_CUSTODIAN] is Status.EXCLUDED  # the owner's broker
    assert ledger.hardware_evidence is not None
    # both virtio disks are LUKS in the guest, identified by their <serial>
    assert [d.get("guest_encrypted") for d in ledger.document["disks"]] == [True, True]
    archive = vms["archive-sev-es"]
    assert archive.state == "paused"
    recorded = archive.document["attestation"]["launch_measurement"]
    assert recorded["verified"] is False and recorded["policy"] == "0xf"
    assert vms["ci-runner"].parties[Party.VTPM] is Status.CAN_ACCESS
    assert "agents.host-share-into-guest" in _findings(vms["ci-runner"])
    assert run.coverage.gaps == []


def test_domain_policy_debug_vetoes_even_a_verified_snp_report(tmp_path: Path) -> None:
    """The report says DEBUG=0 (the demo signs it so) but the domain was defined with DEBUG:
    the XML's veto stands, the report does not lift it."""
    xml = (DEMO_HOST / "domains" / "ledger-db-snp.xml").read_text()
    debug = xml.replace("<policy>0x00030000</policy>", "<policy>0x000b0000</policy>")
    root = _host(tmp_path, **{"ledger-db-snp": debug})
    run = _demo_scan(root, tmp_path, _ledger_evidence(tmp_path))
    ledger = _by_name(run)["ledger-db-snp"]
    assert ledger.parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    assert "hypervisor.domain-policy-allows-debug" in _findings(ledger)
    assert ledger.level is not Level.L4 and ledger.gdpr.provider_can_access.value == "yes"


def test_snp_domain_xml_alone_never_excludes_the_hypervisor(tmp_path: Path) -> None:
    run = _demo_scan(_host(tmp_path), tmp_path, None)
    ledger = _by_name(run)["ledger-db-snp"]
    assert ledger.parties[Party.HYPERVISOR] is Status.CLAIMED_EXCLUDED
    assert ledger.level is Level.L1
    assert not any(s is Status.EXCLUDED for s in ledger.parties.values())


def test_evidence_of_one_domain_does_not_vouch_for_another(tmp_path: Path) -> None:
    """The ledger's evidence file moved onto another SNP domain (same XML, another UUID)."""
    xml = (DEMO_HOST / "domains" / "ledger-db-snp.xml").read_text()
    twin = xml.replace("ledger-db-snp", "ledger-twin").replace(
        "8f2b6c1e-3d4a-4f5b-9e8d-7c6b5a4f3e21", "8f2b6c1e-3d4a-4f5b-9e8d-7c6b5a4f3e22"
    )
    evidence = _ledger_evidence(tmp_path)
    doc = json.loads((evidence / "ledger-db-snp.json").read_text())
    doc["vm"]["id"] = "8f2b6c1e-3d4a-4f5b-9e8d-7c6b5a4f3e22"
    (evidence / "ledger-db-snp.json").write_text(json.dumps(doc))
    run = _demo_scan(_host(tmp_path, **{"ledger-twin": twin}), tmp_path, evidence)
    twin_vm = _by_name(run)["ledger-twin"]
    assert not any(s is Status.EXCLUDED for s in twin_vm.parties.values())
    assert twin_vm.level.rank <= Level.L1.rank
    ledger = _by_name(run)["ledger-db-snp"]
    assert not any(s is Status.EXCLUDED for s in ledger.parties.values())


def test_tdx_domain_with_debug_from_replay(tmp_path: Path) -> None:
    run = _demo_scan(_host(tmp_path, **{"tdx-debug": TDX_DEBUG}), tmp_path)
    vm = _by_name(run)["tdx-debug"]
    assert vm.technology.value == "TDX"
    assert vm.parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    assert {"hypervisor.domain-policy-allows-debug", "agents.qemu-guest-agent"} <= _findings(vm)


@pytest.mark.parametrize(
    ("xml", "code"),
    [
        ("<domain><name>broken", "Malformed"),
        (
            '<!DOCTYPE d [<!ENTITY a "x">]><domain><name>&a;</name></domain>',
            "Malformed",
        ),
    ],
)
def test_tampered_domain_xml_is_a_gap_never_a_verdict(tmp_path: Path, xml: str, code: str) -> None:
    run = _demo_scan(_host(tmp_path, **{"ci-runner": xml}), tmp_path)
    assert "ci-runner" not in _by_name(run)
    (gap,) = [g for g in run.coverage.gaps if g.resource == "ci-runner"]
    assert (gap.call, gap.code) == ("virDomainGetXMLDesc", code)
    assert run.coverage.complete is False


def test_replay_host_without_capabilities_is_a_scope_gap(tmp_path: Path) -> None:
    root = _host(tmp_path)
    (root / "libvirt" / DEMO_HOST.name / "capabilities.xml").unlink()
    run = _demo_scan(root, tmp_path)
    assert run.vms == []
    (gap,) = run.coverage.gaps
    assert gap.call == "virConnectGetCapabilities" and gap.affects == "scope"


def test_replayed_launch_info_error_is_a_gap_on_that_vm(tmp_path: Path) -> None:
    root = _host(tmp_path)
    folder = root / "libvirt" / DEMO_HOST.name / "launch-security"
    (folder / "archive-sev-es.json").unlink()
    (folder / "archive-sev-es.error.json").write_text(
        json.dumps({"status": 403, "code": "VIR_ERR_OPERATION_DENIED", "message": "read only"})
    )
    run = _demo_scan(root, tmp_path)
    archive = _by_name(run)["archive-sev-es"]
    assert [(g.call, g.code, g.sections) for g in archive.gaps] == [
        ("virDomainGetLaunchSecurityInfo", "VIR_ERR_OPERATION_DENIED", ["attestation"])
    ]


# -- CLI, config, API -----------------------------------------------------------------------------


def test_cli_needs_connect_for_a_live_scan() -> None:
    result = runner.invoke(app, ["scan", "--provider", "libvirt", "--no-save"])
    assert result.exit_code == 2
    assert "--provider libvirt needs --connect URI" in result.stderr


def test_connect_and_replay_do_not_mix(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="--connect cannot be combined with --replay"):
        scan(provider="libvirt", replay=_host(tmp_path), connect=["qemu:///system"])


def test_cli_replay_of_the_demo_host_as_json(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = runner.invoke(
        app,
        [
            "scan",
            "--replay",
            str(_host(tmp_path)),
            "--format",
            "json",
            "--output",
            str(out),
            "--no-save",
        ],
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert sorted(vm["name"] for vm in data["vms"]) == [
        "archive-sev-es",
        "bi-sev-debug",
        "ci-runner",
        "ledger-db-snp",
    ]
    assert {vm["region"] for vm in data["vms"]} == {"Germany"}


def test_config_file_libvirt_section(tmp_path: Path) -> None:
    path = tmp_path / "ccaudit.yaml"
    path.write_text(
        "scope:\n  libvirt:\n    connect: [qemu+ssh://kvm1.example.eu/system]\n"
        "    location: Germany\n    operator: Ops team\n    read_write: true\n"
    )
    opts = load_config(path).scan_options()
    assert opts["provider"] == ["libvirt"] or opts.get("providers") == ["libvirt"]
    assert opts["connect"] == ["qemu+ssh://kvm1.example.eu/system"]
    assert (opts["location"], opts["operator"], opts["libvirt_read_write"]) == (
        "Germany",
        "Ops team",
        True,
    )
