"""From party statuses to an assurance level and a GDPR reading, explained in words.

Levels (DESIGN.md §2) are the highest whose requirements all hold; an UNDETERMINED party never
meets a requirement, so missing evidence can only lower a level, never raise it. L4 requires
every provider-controlled party EXCLUDED, which is exactly what the reading "no" needs: the
level and the reading never contradict (L4 if and only if "no").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from auditor.jurisdiction import describe, non_eea_parent, place_of, transfer_words
from auditor.model import (
    PROVIDER_PARTIES,
    Answer,
    Finding,
    GdprReading,
    Level,
    Party,
    PartyStatus,
    Status,
    build_unchecked,
)

_CLAIMED_OR_BETTER = (Status.CLAIMED_EXCLUDED, Status.EXCLUDED)

#: What each level needs on top of the one below: (party, statuses that satisfy it).
LEVEL_REQUIREMENTS: dict[Level, tuple[tuple[Party, tuple[Status, ...]], ...]] = {
    Level.L1: ((Party.HYPERVISOR, _CLAIMED_OR_BETTER),),
    Level.L2: ((Party.ATTESTATION_SERVICE, _CLAIMED_OR_BETTER),),
    Level.L3: (
        (Party.HYPERVISOR, (Status.EXCLUDED,)),
        (Party.ATTESTATION_SERVICE, (Status.EXCLUDED,)),
    ),
    Level.L4: (
        (Party.FIRMWARE, (Status.EXCLUDED,)),
        (Party.CONTROL_PLANE, (Status.EXCLUDED,)),
        (Party.KEY_CUSTODIAN, (Status.EXCLUDED,)),
        (Party.VTPM, (Status.EXCLUDED,)),
        (Party.GUEST_AGENTS, (Status.EXCLUDED,)),
    ),
}

LEVEL_MEANING: dict[Level, str] = {
    Level.L0: "the provider can read memory: no confidential computing shown, or one without "
    "memory integrity (plain SEV, SEV-ES)",
    Level.L1: "confidential computing claimed by the control plane only",
    Level.L2: "hardware attestation exists but is verified by the provider's service or log",
    Level.L3: "the owner verified the raw hardware evidence: hypervisor and attestation "
    "service excluded; firmware, launch, key custody, vTPM or guest agents still open to the "
    "provider",
    Level.L4: "owner-verified hardware evidence, endorsed firmware and launch, debug and "
    "provider migration off, current TCB, data keys outside the provider, nothing sealed to a "
    "provider vTPM and no provider agent in the guest: no provider-controlled party can reach "
    "the plaintext",
}


def level_for(statuses: Mapping[Party, Status]) -> tuple[Level, str]:
    """The highest level reached and why the next one is not."""
    reached = Level.L0
    for level in (Level.L1, Level.L2, Level.L3, Level.L4):
        unmet = [(p, ok) for p, ok in LEVEL_REQUIREMENTS[level] if statuses[p] not in ok]
        if unmet:
            party, ok = unmet[0]
            have = statuses[party]
            need = " or ".join(s.value for s in ok)
            hint = " (evidence missing: could be higher)" if have is Status.UNDETERMINED else ""
            return reached, (
                f"{reached.value}: {LEVEL_MEANING[reached]}. {level.value} needs "
                f"{party.value} {need}; it is {have.value}{hint}."
            )
        reached = level
    return reached, f"{reached.value}: {LEVEL_MEANING[reached]}."


#: Which fix to give first: a party that can access before one that is only undetermined or
#: claimed, and among them the one the others depend on (no memory encryption makes every other
#: fix moot, so moving to a confidential VM comes first).
_STATUS_IMPACT = {Status.CAN_ACCESS: 0, Status.UNDETERMINED: 1, Status.CLAIMED_EXCLUDED: 2}
_IMPACT = {
    party: i
    for i, party in enumerate(
        (
            Party.HYPERVISOR,
            Party.ATTESTATION_SERVICE,
            Party.CONTROL_PLANE,
            Party.FIRMWARE,
            Party.KEY_CUSTODIAN,
            Party.VTPM,
            Party.GUEST_AGENTS,
        )
    )
}

_PARTY_WORDS: dict[Party, str] = {
    Party.CONTROL_PLANE: "the control plane (could launch another image)",
    Party.HYPERVISOR: "the hypervisor and host admins (could read guest memory)",
    Party.FIRMWARE: "the provider's firmware (runs inside the guest)",
    Party.ATTESTATION_SERVICE: "the provider's attestation service or logs",
    Party.VTPM: "the vTPM (provider-implemented)",
    Party.KEY_CUSTODIAN: "the disk-key custodian",
    Party.GUEST_AGENTS: "provider agents and host-provided input in the guest",
}


def host_operator(vm: Any) -> str:
    """Who runs a private-cloud host (libvirt's `operator`): it decides the jurisdiction."""
    if vm.provider != "libvirt":
        return ""
    host = vm.document.get("libvirt")
    return str(host.get("operator", "")) if isinstance(host, dict) else ""


def gdpr_reading(
    vm: Any, statuses: Mapping[Party, PartyStatus], findings: Sequence[Finding]
) -> GdprReading:
    """Can the provider reach the plaintext of this VM: yes / no / undetermined, and why.

    The legal words say what the evidence is relevant to and under which condition ("may
    apply, if ..."), never that a provision applies: the tool cannot know the processing's
    purpose, the importer's certification or the controller's transfer tool.
    """
    by_status = {p: statuses[p].status for p in PROVIDER_PARTIES}
    blocking = [p for p in PROVIDER_PARTIES if by_status[p] is not Status.EXCLUDED]
    can = [p for p in PROVIDER_PARTIES if by_status[p] is Status.CAN_ACCESS]
    if can:
        answer = Answer.YES
        parts = ", ".join(_PARTY_WORDS[p] for p in can)
        summary = f"Yes: {parts} can reach the plaintext."
    elif not blocking:
        answer = Answer.NO
        summary = "No: owner-verified hardware evidence shuts every provider-controlled party out."
    else:
        answer = Answer.UNDETERMINED
        parts = ", ".join(f"{p.value} ({by_status[p].value})" for p in blocking)
        summary = f"Undetermined: not shown excluded by owner-verified evidence: {parts}."
    jurisdiction, refs, law = _region_reading(vm.provider, vm.region, answer, host_operator(vm))
    summary = f"{summary} {law}"
    would_change: list[str] = []
    for p in sorted(blocking, key=lambda party: (_STATUS_IMPACT[by_status[party]], _IMPACT[party])):
        fixes = [
            f.remediation
            for f in findings
            if f.party is p and f.remediation and f.status is not Status.EXCLUDED
        ]
        if fixes:
            would_change.append(f"{p.value}: {fixes[0]}")
    return build_unchecked(
        GdprReading,
        {
            "provider_can_access": answer,
            "blocking_parties": blocking,
            "summary": summary,
            "region_jurisdiction": jurisdiction,
            "references": list(refs),
            "would_change": would_change,
        },
    )


@lru_cache(maxsize=4096)
def _region_reading(
    provider: str, region: str, answer: Answer, operator: str = ""
) -> tuple[str, tuple[str, ...], str]:
    """Jurisdiction words, GDPR references and the conditional legal sentence: per region."""
    place = place_of(provider, region)
    parent = non_eea_parent(provider)
    refs = [
        "GDPR Art. 5(1)(f)",
        "GDPR Art. 25(1)",
        "GDPR Art. 28(1)",
        "GDPR Art. 32(1)(a), (b) and 32(2)",
    ]
    if place.status != "EEA" or parent is not None:
        refs.append("GDPR Art. 44-46 (transfers; remote access counts as making available)")
    if parent is not None:
        refs.append("GDPR Art. 48 (third-country orders)")
    if answer is Answer.NO:
        refs.append(
            "EDPB Recommendations 01/2020 Use Case 1 (keys and plaintext out of the importer's "
            "reach): this evidence is relevant to its conditions 4-6"
        )
        law = (
            "The evidence is relevant to EDPB Recommendations 01/2020 Use Case 1 (the importer "
            "holds neither keys nor plaintext)."
        )
    elif answer is Answer.YES:
        refs.append(
            "EDPB Recommendations 01/2020 Use Case 6 (may apply: the provider can reach the data "
            "in the clear, so no technical supplementary measure is effective)"
        )
        law = (
            "If this processing involves a transfer or access from a third country, EDPB "
            "Recommendations 01/2020 Use Case 6 may apply: encryption whose keys or plaintext "
            "the provider can reach is then no effective supplementary measure."
        )
    else:
        refs.append(
            "EDPB Recommendations 01/2020 Use Case 1 or 6 (which one cannot be told until the "
            "undetermined parties are resolved)"
        )
        law = (
            "Whether EDPB Use Case 1 or Use Case 6 fits cannot be told until the undetermined "
            "parties are resolved."
        )
    words = transfer_words(provider, region)
    return describe(provider, region, operator), tuple(refs), f"{law} {words}"
