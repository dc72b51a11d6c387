"""The core pack on vTPM evidence (`vm.hardware.vtpm`, as auditor/verify/vtpm_evidence.py writes
it): the vTPM is excluded only when bound to the verified report inside a measured paravisor; a
host vTPM's verified quote never excludes it; measured-boot mismatches and logs that do not
replay are findings that name what differs; nothing sealed to a host vTPM counts as protected.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from auditor.model import Party, Status
from tests.test_hardware_rules import LUKS_AND_BROKER, VERIFIED, _evaluate

BOUND: dict[str, Any] = {
    "present": True,
    "quote_verified": True,
    "bound_to_report": True,
    "inside_tee": True,
    "implemented_by": "paravisor",
    "event_log_replayed": True,
}
HOST: dict[str, Any] = {**BOUND, "bound_to_report": False, "inside_tee": False}
HOST["implemented_by"] = "host"


def _hw(vtpm: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(VERIFIED), "vtpm": copy.deepcopy(vtpm), **changes}


def _status(result: Any, party: Party) -> tuple[Status, list[str]]:
    ps = result.party_status[party]
    return ps.status, list(ps.rules)


def test_bound_in_a_measured_paravisor_excludes_the_vtpm() -> None:
    result = _evaluate(_hw(BOUND))
    assert _status(result, Party.VTPM) == (Status.EXCLUDED, ["vtpm.bound-in-measured-paravisor"])


def test_bound_but_unmeasured_paravisor_is_only_claimed() -> None:
    hw = _hw(BOUND)
    del hw["measurement_matched"], hw["measurement_reference"]
    status, rules = _status(_evaluate(hw), Party.VTPM)
    assert status is Status.CLAIMED_EXCLUDED and "vtpm.bound-paravisor-unmeasured" in rules


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"verified": False}, "report not verified"),
        ({"vtpm": {**BOUND, "bound_to_report": False}}, "AK not bound"),
        ({"vtpm": {**BOUND, "inside_tee": False}}, "vTPM outside the TEE"),
    ],
)
def test_nothing_short_of_the_whole_chain_excludes_the_vtpm(
    change: dict[str, Any], why: str
) -> None:
    hw = _hw(BOUND)
    hw.update(change)
    status, _ = _status(_evaluate(hw), Party.VTPM)
    assert status is not Status.EXCLUDED, why


def test_a_host_vtpm_with_a_verified_quote_keeps_the_host_in() -> None:
    hw = _hw({**HOST, "ak_certified": True, "ak_certificate_issuer": "CN=EK/AK CA Intermediate"})
    result = _evaluate(hw)
    status, rules = _status(result, Party.VTPM)
    assert status is Status.CAN_ACCESS and "vtpm.host-quote-unbound" in rules
    finding = next(f for f in result.findings if f.rule_id == "vtpm.host-quote-unbound")
    assert "AK certified by CN=EK/AK CA Intermediate" in finding.reason


def test_a_host_vtpm_holding_nothing_is_excluded_by_what_is_not_sealed() -> None:
    """Where the vTPM runs does not matter when nothing the data depends on is in it."""
    result = _evaluate(_hw(HOST), LUKS_AND_BROKER)
    assert _status(result, Party.VTPM) == (Status.EXCLUDED, ["vtpm.nothing-sealed"])


def test_boot_that_is_not_the_reference_names_the_event() -> None:
    mismatch = "EV_IPL kernel command line: 'ro init=/bin/sh', expected 'ro' (reference 'img')"
    vtpm = {
        **BOUND,
        "boot": {"secure_boot": True, "reference_matched": False, "mismatch": mismatch},
    }
    result = _evaluate(_hw(vtpm))
    status, rules = _status(result, Party.CONTROL_PLANE)
    assert status is Status.CAN_ACCESS and "control-plane.boot-not-reference" in rules
    finding = next(f for f in result.findings if f.rule_id == "control-plane.boot-not-reference")
    assert mismatch in finding.reason
    matched = {**BOUND, "boot": {"reference_matched": True, "reference": "img"}}
    assert _status(_evaluate(_hw(matched)), Party.CONTROL_PLANE)[0] is Status.EXCLUDED


def test_event_log_that_does_not_replay_is_a_firmware_finding_naming_the_pcr() -> None:
    problem = (
        "sha256 PCR 4: event-log replay of its 3 events (the last "
        "EV_EFI_BOOT_SERVICES_APPLICATION, event 9) gives 00.., the quoted value is 11.."
    )
    vtpm = {**BOUND, "event_log_replayed": False, "replay_problem": problem}
    result = _evaluate(_hw(vtpm))
    status, rules = _status(result, Party.FIRMWARE)
    assert status is Status.CAN_ACCESS and rules == ["firmware.event-log-does-not-replay"]
    finding = next(f for f in result.findings if f.rule_id == "firmware.event-log-does-not-replay")
    assert "PCR 4" in finding.reason


def test_a_key_sealed_to_a_host_vtpm_is_never_protected() -> None:
    guest = copy.deepcopy(LUKS_AND_BROKER)
    guest["disk_encryption"]["tpm_sealed"] = True
    guest["nothing_sealed_to_vtpm"] = False
    host = _evaluate(_hw(HOST), guest)
    status, rules = _status(host, Party.KEY_CUSTODIAN)
    assert status is Status.CAN_ACCESS and "keys.sealed-to-host-vtpm" in rules
    assert host.parties[Party.VTPM] is Status.CAN_ACCESS
    # the same slot sealed to a vTPM bound inside a measured paravisor is not the host's
    bound = _evaluate(_hw(BOUND), guest)
    assert bound.parties[Party.KEY_CUSTODIAN] is Status.EXCLUDED
    assert bound.parties[Party.VTPM] is Status.EXCLUDED
