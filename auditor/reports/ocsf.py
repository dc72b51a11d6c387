"""OCSF 1.8.0 Compliance Finding events (class 2003): what AWS Security Lake and other security
data lakes ingest, and what Prowler emits.

One event per VM and failing rule (CAN_ACCESS: a party can reach the plaintext; UNDETERMINED:
the evidence to decide is missing), as in SARIF and ASFF. The tool's vocabulary is kept, never
"compliant": `compliance.status_id` is Fail (3) for CAN_ACCESS and Unknown (0) for UNDETERMINED,
`compliance.status_detail` says which, in words; the party, its status, the VM's level and its
reading ("can the provider reach the plaintext?") and the SHA-256 of every evidence item behind
the finding travel in `unmapped.ccaudit`. The `cloud` profile carries the provider, account and
region. The document is a JSON array of events, validated in the tests against the published
OCSF schema (tests/data/ocsf).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, BinaryIO

from auditor._version import __version__
from auditor.model import AuditRun, Finding, Severity, Status, VMResult
from auditor.reports import dump_json, write_json_array
from auditor.reports.tables import failing_findings

FILE = "ocsf-findings.json"
OCSF_VERSION = "1.8.0"
CLASS_UID = 2003  # Compliance Finding
CATEGORY_UID = 2  # Findings
ACTIVITY_CREATE = 1
SEVERITY_ID: dict[Severity, int] = {
    Severity.INFO: 1,
    Severity.LOW: 2,
    Severity.MEDIUM: 3,
    Severity.HIGH: 4,
    Severity.CRITICAL: 5,
}
CLOUD_PROVIDER = {"aws": "AWS", "gcp": "GCP", "azure": "Azure", "libvirt": "libvirt (KVM)"}
#: compliance.status_id: Fail (3) where a party can reach the plaintext, Unknown (0) where the
#: evidence to decide is missing. Pass (1) is never written: only failing findings are exported.
COMPLIANCE_STATUS: dict[Status, tuple[int, str]] = {
    Status.CAN_ACCESS: (3, "Fail"),
    Status.UNDETERMINED: (0, "Unknown"),
}


def _millis(run: AuditRun) -> int:
    return int(run.finished_at.timestamp() * 1000)


def event(run: AuditRun, vm: VMResult, f: Finding) -> dict[str, Any]:
    """The Compliance Finding event of one failing finding on one VM."""
    status_id, status = COMPLIANCE_STATUS[f.status]
    when = _millis(run)
    detail = (
        f"{f.party.value} can reach the plaintext"
        if f.status is Status.CAN_ACCESS
        else f"{f.party.value} undetermined: the evidence to decide is missing"
    )
    resource: dict[str, Any] = {
        "uid": vm.id,
        "name": vm.name or vm.id,
        "type": "Virtual Machine",
        "region": vm.region,
        "data": {"key": vm.key, "instance_type": vm.instance_type, "technology": vm.technology},
    }
    if vm.zone:
        resource["zone"] = vm.zone
    if vm.provider == "aws":
        resource["cloud_partition"] = "aws"
    if vm.pool_label:
        resource["group"] = {"name": vm.pool_label, "type": "Kubernetes node pool"}
    out: dict[str, Any] = {
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Compliance Finding",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Compliance Finding: Create",
        "severity_id": SEVERITY_ID[f.severity],
        "severity": f.severity.value.capitalize(),
        "status_id": 1,
        "status": "New",
        "time": when,
        "message": f.reason,
        "metadata": {
            "version": OCSF_VERSION,
            "profiles": ["cloud"],
            "product": {
                "name": "cc-auditor",
                "vendor_name": "cc-auditor",
                "version": __version__,
            },
            "uid": f"{run.run_id}/{vm.key}/{f.rule_id}",
            "log_name": run.run_id,
        },
        "cloud": {
            "provider": CLOUD_PROVIDER.get(vm.provider, vm.provider),
            "region": vm.region,
            "account": {"uid": vm.account, "type": "account" if vm.provider == "aws" else None},
        },
        "finding_info": {
            "uid": f"ccaudit/{vm.key}/{f.rule_id}",
            "title": f.title,
            "desc": f.rationale or f.title,
            "created_time": when,
            "types": ["Confidential computing", f.party.value],
            "product_uid": "cc-auditor",
        },
        "compliance": {
            "control": f.rule_id,
            "standards": ["GDPR", "EDPB Recommendations 01/2020"],
            "requirements": list(f.references),
            "status_id": status_id,
            "status": status,
            "status_detail": detail,
        },
        "resources": [resource],
        "unmapped": {
            "ccaudit": {
                "run_id": run.run_id,
                "party": f.party.value,
                "status": f.status.value,
                "level": vm.level.value,
                "provider_can_reach_plaintext": vm.gdpr.provider_can_access.value,
                "evidence_sha256": list(f.evidence),
            }
        },
    }
    if out["cloud"]["account"]["type"] is None:
        del out["cloud"]["account"]["type"]
    if f.remediation:
        out["remediation"] = {"desc": f.remediation}
    return out


def events(run: AuditRun) -> list[dict[str, Any]]:
    return [event(run, vm, f) for vm, f in failing_findings(run)]


def render(run: AuditRun) -> dict[str, bytes]:
    return {FILE: dump_json(events(run), run).encode("utf-8")}


def writers(run: AuditRun) -> dict[str, Callable[[BinaryIO], object]]:
    """The same file written a finding at a time (reports.writers)."""
    return {FILE: partial(_write, run)}


def _write(run: AuditRun, out: BinaryIO) -> None:
    write_json_array((event(run, vm, f) for vm, f in failing_findings(run)), run, out)
