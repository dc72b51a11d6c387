"""The verify stage: run each verifier on the evidence it applies to, between collect and evaluate.

Results are recorded twice: on the Evidence item (`verification`, with every check and reason,
for the bundle) and as facts in the VM document (for rules). Providers never verify; the engine
never parses certificates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from auditor.model import VM, Evidence, Verification
from auditor.verify.anchors import gcp_vtpm_store
from auditor.verify.gce_identity import Expected, verify_ek_certificate

GCE_EK_KIND = "shielded_instance_identity"


def _verify_gce_ek(vm: VM, ev: Evidence, at: datetime) -> None:
    raw: Mapping[str, Any] = ev.raw if isinstance(ev.raw, dict) else {}
    enc = raw.get("encryptionKey") or {}
    zone = vm.zone or ""
    result = verify_ek_certificate(
        str(enc.get("ekCert") or ""),
        enc.get("ekPub"),
        gcp_vtpm_store(),
        at,
        Expected(
            project_id=vm.account,
            instance_id=vm.id,
            instance_name=vm.name or "",
            zone=zone,
        ),
    )
    ev.verification = Verification(
        verifier="gce_identity.verify_ek_certificate",
        ok=result.ok,
        checks=[c.as_dict() for c in result.checks],
        reason=result.reason,
    )
    tpm = vm.document.setdefault("tpm", {})
    tpm["ek"] = {
        "present": True,
        "source": "control_plane",
        "certificate": True,
        "chain_verified": bool(result.check("chain")),
        "identity_match": bool(result.check("identity")),
        "key_binding": result.check("key_binding") is not False,
        "verified": result.ok,
        "reason": result.reason,
    }
    if result.root_fingerprint:
        tpm["ek"]["root_sha256"] = result.root_fingerprint


def verify_vms(vms: Iterable[VM], evidence: Mapping[str, Evidence], at: datetime) -> None:
    """Verify every VM's verifiable evidence in place (document facts + Evidence.verification)."""
    for vm in vms:
        for sha in vm.evidence.get("tpm", []):
            ev = evidence.get(sha)
            if ev is not None and ev.kind == GCE_EK_KIND:
                _verify_gce_ek(vm, ev, at)
