"""The built-in pack on hardware evidence: only verified, bound, fresh reports raise a party.

These run the real engine and the shipped core pack over VM documents shaped as the verify stage
writes them (auditor/verify/evidence.py), so each rule's reading of `vm.hardware` and
`vm.guest` is pinned: L3 and L4 are reachable, and nothing short of verified evidence raises.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from auditor.engine import Engine
from auditor.model import VM, Answer, Level, Party, Status, Technology
from auditor.rules.loader import load_packs
from auditor.verify.proof import record_proof

ENGINE = Engine(load_packs())

BASE: dict[str, Any] = {
    "provider": "aws",
    "account": "111122223333",
    "region": "eu-west-1",
    "id": "i-0d83016e1898302ed",
    "technology": "SEV_SNP",
    "platform": {"snp_supported": True},
    "tpm": {"present": False},
    "disks": [{"id": "vol-1", "boot": True, "encrypted": True, "custody": "customer_kms"}],
    "metadata_service": {"enabled": False},
    "agents": {"extensions": [], "run_command": False, "vm_agent": False},
    "attestation": {"provider_verdict": "none"},
    "image": {"owned_by_account": True},
}

VERIFIED: dict[str, Any] = {
    "present": True,
    "technology": "SEV_SNP",
    "authentic": True,
    "bound": True,
    "fresh": True,
    "verified": True,
    "trust_anchor": "AMD",
    "demo_anchor": False,
    "debug": False,
    "migrate_ma": False,
    "measurement": "ab" * 48,
    "measurement_matched": True,
    "measurement_reference": "ovmf-2026.10",
    "tcb_below_minimum": False,
    "tcb_current": True,
    "tcb_bulletins": [],
    "claims_bound": True,
    "reason": "genuine AMD-signed report, bound to this VM and this audit's nonce",
}
LUKS_AND_BROKER: dict[str, Any] = {
    "evidence_file": True,
    "claims_used": True,
    "disk_encryption": {
        "root_encrypted": True,
        "all_disks_covered": True,
        "tpm_sealed": False,
        "devices": [{"name": "dm-0", "type": "LUKS2", "tpm_tokens": 0}],
    },
    "key_release": {"present": True, "verified": True, "broker": "kbs.example.eu"},
    "agents": {"provider_agents": [], "cloud_init": False},
    "nothing_sealed_to_vtpm": True,
}


def _evaluate(
    hardware: dict[str, Any] | None = None,
    guest: dict[str, Any] | None = None,
    covered: bool | None = None,
    disks: list[dict[str, Any]] | None = None,
) -> Any:
    """Evaluate BASE as the verify stage would leave it: `covered` marks the disks a guest
    dm-crypt device covers (default: all of them when the guest claims a LUKS root)."""
    doc = copy.deepcopy(BASE)
    if disks is not None:
        doc["disks"] = copy.deepcopy(disks)
    if guest is not None:
        doc["guest"] = guest
        if covered is None:
            covered = bool((guest.get("disk_encryption") or {}).get("root_encrypted"))
        for disk in doc["disks"]:
            disk.setdefault("guest_encrypted", covered)
    vm = VM(
        provider="aws",
        account=doc["account"],
        region=doc["region"],
        id=doc["id"],
        technology=Technology.SEV_SNP,
        document=doc,
        evidence={"hardware": ["cd" * 32], "disks": ["ef" * 32]},
    )
    if hardware is not None and hardware.get("verified") is True:
        record_proof(vm, "cd" * 32, hardware)
    elif hardware is not None:
        vm.document["hardware"] = hardware
    return ENGINE.evaluate(vm)


def test_control_plane_claim_alone_is_l1() -> None:
    result = _evaluate()
    assert result.level is Level.L1
    assert result.parties[Party.HYPERVISOR] is Status.CLAIMED_EXCLUDED


def test_verified_report_reaches_l3_but_not_l4_while_keys_stay_with_provider() -> None:
    result = _evaluate(VERIFIED)
    assert result.parties[Party.HYPERVISOR] is Status.EXCLUDED
    assert result.parties[Party.ATTESTATION_SERVICE] is Status.EXCLUDED
    assert result.parties[Party.FIRMWARE] is Status.EXCLUDED
    assert result.parties[Party.CONTROL_PLANE] is Status.EXCLUDED
    assert result.parties[Party.KEY_CUSTODIAN] is Status.CAN_ACCESS
    assert result.level is Level.L3
    assert "key_custodian" in result.level_reason
    reason = result.party_status[Party.HYPERVISOR].reason
    assert "Owner-verified hardware report" in reason


def test_luks_without_broker_receipt_is_only_claimed() -> None:
    guest = {"evidence_file": True, "disk_encryption": {"root_encrypted": True, "devices": []}}
    result = _evaluate(VERIFIED, guest)
    assert result.parties[Party.KEY_CUSTODIAN] is Status.CLAIMED_EXCLUDED
    assert result.level is Level.L3


def test_everything_verified_is_l4_and_gdpr_no() -> None:
    result = _evaluate(VERIFIED, LUKS_AND_BROKER)
    assert result.parties[Party.KEY_CUSTODIAN] is Status.EXCLUDED
    assert result.parties[Party.VTPM] is Status.EXCLUDED
    assert result.parties[Party.GUEST_AGENTS] is Status.EXCLUDED
    assert result.level is Level.L4
    assert result.gdpr.provider_can_access is Answer.NO
    assert result.gdpr.blocking_parties == []
    assert result.gdpr.summary.startswith(
        "No: owner-verified hardware evidence shuts every provider-controlled party out. The "
        "evidence is relevant to EDPB Recommendations 01/2020 Use Case 1"
    )
    broker = [f for f in result.findings if f.rule_id == "keys.broker-release-verified"]
    assert broker and "kbs.example.eu" in broker[0].reason


@pytest.mark.parametrize(
    ("change", "party", "rule"),
    [
        (
            {"agents": {"provider_agents": ["amazon-ssm-agent"], "cloud_init": False}},
            Party.GUEST_AGENTS,
            "agents.guest-runs-provider-agent",
        ),
        (
            {"agents": {"provider_agents": [], "cloud_init": True}},
            Party.GUEST_AGENTS,
            "agents.cloud-init-consumed-metadata",
        ),
        ({"nothing_sealed_to_vtpm": False}, Party.VTPM, None),
    ],
)
def test_one_missing_piece_misses_no_for_one_named_reason(
    change: dict[str, Any], party: Party, rule: str | None
) -> None:
    result = _evaluate(VERIFIED, {**LUKS_AND_BROKER, **change})
    assert result.level is Level.L3
    assert result.gdpr.provider_can_access is not Answer.NO
    assert result.gdpr.blocking_parties == [party]
    assert f"L4 needs {party.value} EXCLUDED" in result.level_reason
    if rule is not None:
        assert result.party_status[party].rules == [rule]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"bound": False, "verified": False}, "not bound"),
        ({"fresh": False, "verified": False}, "stale nonce"),
        ({"authentic": False, "verified": False}, "does not verify"),
    ],
)
def test_unusable_evidence_raises_nothing(change: dict[str, Any], why: str) -> None:
    hardware = {**VERIFIED, **change, "reason": why}
    result = _evaluate(hardware, LUKS_AND_BROKER)
    assert result.level is Level.L1, why
    for party in Party:
        assert result.parties[party] is not Status.EXCLUDED, (party, why)
    note = [f for f in result.findings if f.rule_id == "attestation.evidence-not-usable"]
    assert note and why in note[0].reason


def test_debug_on_a_bound_report_vetoes_hypervisor() -> None:
    result = _evaluate({**VERIFIED, "debug": True})
    assert result.parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    assert "hypervisor.hardware-debug" in result.party_status[Party.HYPERVISOR].rules
    assert result.level is Level.L0


def test_debug_in_a_report_of_another_vm_is_not_held_against_this_one() -> None:
    hardware = {**VERIFIED, "debug": True, "bound": False, "verified": False}
    result = _evaluate(hardware)
    assert result.parties[Party.HYPERVISOR] is Status.CLAIMED_EXCLUDED


def test_unknown_debug_state_leaves_hypervisor_undetermined() -> None:
    hardware = {k: v for k, v in VERIFIED.items() if k != "debug"}
    result = _evaluate(hardware)
    assert result.parties[Party.HYPERVISOR] is Status.UNDETERMINED


def test_tcb_below_minimum_names_the_bulletin_and_blocks_l4() -> None:
    hardware = {
        **VERIFIED,
        "tcb_below_minimum": True,
        "tcb_bulletins": ["AMD-SB-3019"],
        "tcb_summary": "microcode 68 < 219 (AMD-SB-3019, CVE-2024-56161)",
    }
    result = _evaluate(hardware, LUKS_AND_BROKER)
    assert result.parties[Party.FIRMWARE] is Status.CAN_ACCESS
    assert result.level is Level.L3
    finding = next(f for f in result.findings if f.rule_id == "firmware.tcb-below-minimum")
    assert "AMD-SB-3019" in finding.reason


def test_measurement_mismatch_keeps_firmware_and_control_plane() -> None:
    hardware = {**VERIFIED, "measurement_matched": False}
    del hardware["measurement_reference"]
    result = _evaluate(hardware, LUKS_AND_BROKER)
    assert result.parties[Party.FIRMWARE] is Status.CAN_ACCESS
    assert result.parties[Party.CONTROL_PLANE] is Status.CAN_ACCESS
    assert result.level is Level.L3


def test_no_reference_given_is_not_a_match() -> None:
    hardware = {k: v for k, v in VERIFIED.items() if not k.startswith("measurement_")}
    result = _evaluate(hardware, LUKS_AND_BROKER)
    assert result.parties[Party.FIRMWARE] is Status.CAN_ACCESS
    assert result.level is Level.L3


def test_migration_agent_blocks_l4() -> None:
    result = _evaluate({**VERIFIED, "migrate_ma": True}, LUKS_AND_BROKER)
    assert result.parties[Party.CONTROL_PLANE] is Status.CAN_ACCESS
    assert result.level is Level.L3


def test_demo_anchor_is_named_next_to_every_verdict_it_supports() -> None:
    hardware = {
        **VERIFIED,
        "trust_anchor": "demo trust anchor, not AMD",
        "demo_anchor": True,
        "caveat": "demo trust anchor, not AMD",
    }
    result = _evaluate(hardware, LUKS_AND_BROKER)
    assert result.level is Level.L4
    assert "demo trust anchor, not AMD" in result.level_reason
    for party, status in result.party_status.items():
        if status.status is Status.EXCLUDED:
            assert "demo trust anchor, not AMD" in status.reason, party


TDX_VERIFIED: dict[str, Any] = {
    **{k: v for k, v in VERIFIED.items() if not k.startswith("tcb_")},
    "technology": "TDX",
    "signer": "pck",
    "tcb_bulletins": [],
}


def test_tdx_without_collateral_has_no_tcb_status_so_firmware_is_undetermined() -> None:
    """Unknown is never current: without TDX collateral L4 is out of reach, and says why."""
    result = _evaluate(TDX_VERIFIED, LUKS_AND_BROKER)
    assert result.parties[Party.HYPERVISOR] is Status.EXCLUDED
    assert result.parties[Party.FIRMWARE] is Status.UNDETERMINED
    assert result.level is Level.L3
    assert "firmware" in result.level_reason and "evidence missing" in result.level_reason
    reason = result.party_status[Party.FIRMWARE].reason
    assert "tcb_current" in reason


def test_tdx_with_a_current_tcb_reaches_l4() -> None:
    hardware = {**TDX_VERIFIED, "tcb_current": True, "tcb_below_minimum": False}
    assert _evaluate(hardware, LUKS_AND_BROKER).level is Level.L4


def test_tdx_out_of_date_tcb_is_a_veto() -> None:
    hardware = {
        **TDX_VERIFIED,
        "tcb_current": False,
        "tcb_below_minimum": True,
        "tcb_summary": "TDX TCB status OutOfDate",
    }
    result = _evaluate(hardware, LUKS_AND_BROKER)
    assert result.parties[Party.FIRMWARE] is Status.CAN_ACCESS
    finding = next(f for f in result.findings if f.rule_id == "firmware.tcb-below-minimum")
    assert "OutOfDate" in finding.reason


def test_migratable_td_is_a_veto_on_the_control_plane() -> None:
    hardware = {**TDX_VERIFIED, "tcb_current": True, "migrate_ma": True}
    result = _evaluate(hardware, LUKS_AND_BROKER)
    assert result.parties[Party.CONTROL_PLANE] is Status.CAN_ACCESS
    assert "control-plane.migration-agent-allowed" in (
        result.party_status[Party.CONTROL_PLANE].rules
    )
    assert result.level is Level.L3


def test_tdx_migratable_bit_is_parsed_from_td_attributes() -> None:
    from auditor.verify.tdx import td_attributes_facts

    assert td_attributes_facts(1 << 29)["migratable"] is True
    assert td_attributes_facts(1 << 28)["migratable"] is False


def test_plaintext_data_disk_not_covered_by_guest_encryption_keeps_its_veto() -> None:
    disks = [
        {
            "id": "vol-1",
            "boot": True,
            "encrypted": True,
            "custody": "none",
            "guest_encrypted": True,
        },
        {
            "id": "vol-2",
            "boot": False,
            "encrypted": False,
            "custody": "none",
            "guest_encrypted": False,
        },
    ]
    result = _evaluate(VERIFIED, LUKS_AND_BROKER, disks=disks)
    assert result.party_status[Party.KEY_CUSTODIAN].rules == ["keys.unencrypted-disk"]
    assert result.level is Level.L3
