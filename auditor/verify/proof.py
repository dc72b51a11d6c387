"""The one fact that gates EXCLUDED: does this VM have verified, bound, fresh hardware evidence?

DESIGN.md §2: a party is EXCLUDED only because hardware-signed evidence, verified by this tool
against pinned vendor roots, bound to this audit's nonce, this VM and the guest's claims, and
fresh, shows it. The verify stage (auditor/verify/stage.py) decides that from exactly one
guest evidence file and records it here, once, with `record_proof`; the engine asks
`has_verified_hardware` before any rule may set EXCLUDED, whatever its pack says. Nothing else
writes the proof: a provider, a replayed API response or a rule pack cannot.
"""

from __future__ import annotations

from typing import Any

#: Document facts that only the verify stage writes (from the one verified evidence file).
STAGE_SECTIONS = ("hardware", "guest")
_DISK_FACTS = ("guest_encrypted", "guest_device")


def clear_hardware_facts(vm: Any) -> None:
    """Remove every fact the verify stage alone may write, before it decides afresh."""
    vm.hardware_evidence = None
    doc = vm.document
    for section in STAGE_SECTIONS:
        doc.pop(section, None)
    tpm = doc.get("tpm")
    if isinstance(tpm, dict):
        tpm.pop("event_log", None)
    for disk in doc.get("disks") or []:
        if isinstance(disk, dict):
            for key in _DISK_FACTS:
                disk.pop(key, None)


def record_proof(vm: Any, evidence_sha256: str, hardware: dict[str, Any]) -> None:
    """Record that the guest evidence file `evidence_sha256` verified, bound and fresh for `vm`.

    Call only with a file whose report is authentic, bound and fresh (its `hardware` facts say
    so); the verify stage is the only caller.
    """
    if not (
        hardware.get("authentic") is True
        and hardware.get("bound") is True
        and hardware.get("fresh") is True
        and hardware.get("verified") is True
    ):
        raise ValueError("record_proof: the hardware report is not authentic, bound and fresh")
    vm.hardware_evidence = evidence_sha256
    vm.document["hardware"] = dict(hardware, evidence_sha256=evidence_sha256)


def has_verified_hardware(vm: Any) -> bool:
    """True only for a VM whose proof the verify stage recorded and whose document agrees."""
    sha = getattr(vm, "hardware_evidence", None)
    if not sha:
        return False
    hardware = vm.document.get("hardware")
    return (
        isinstance(hardware, dict)
        and hardware.get("verified") is True
        and hardware.get("evidence_sha256") == sha
    )
