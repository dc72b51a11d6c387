"""AWS Security Finding Format (ASFF) for AWS Security Hub: `asff-findings.json`, and what
`ccaudit export securityhub` sends through `BatchImportFindings`.

One finding per AWS VM and failing rule (CAN_ACCESS or UNDETERMINED), as in SARIF and OCSF. ASFF
belongs to Security Hub, which holds findings of AWS resources in AWS accounts: the VMs of
Google Cloud and Azure are in the OCSF and SARIF exports, not here. The finding is the tool's,
never "compliant": `Compliance.Status` is FAILED for CAN_ACCESS and NOT_AVAILABLE for
UNDETERMINED (PASSED is never written), and `ProductFields` carry the party, its status, the
VM's level, the reading ("can the provider reach the plaintext?"), the run and the SHA-256 of
every evidence item behind the finding. The product is the account's own default integration
(`product/<account>/default`) in the VM's region, where Security Hub receives it. The shapes
are checked in the tests against botocore's model of `BatchImportFindings`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any, BinaryIO

from auditor.model import AuditRun, Finding, Severity, Status, VMResult
from auditor.reports import dump_json, write_json_array
from auditor.reports.tables import failing_findings

FILE = "asff-findings.json"
SCHEMA_VERSION = "2018-10-08"
FINDING_TYPE = (
    "Software and Configuration Checks/Industry and Regulatory Standards/"
    "Confidential computing (GDPR Art. 32, EDPB 01/2020)"
)
LABEL: dict[Severity, str] = {
    Severity.INFO: "INFORMATIONAL",
    Severity.LOW: "LOW",
    Severity.MEDIUM: "MEDIUM",
    Severity.HIGH: "HIGH",
    Severity.CRITICAL: "CRITICAL",
}
COMPLIANCE: dict[Status, str] = {Status.CAN_ACCESS: "FAILED", Status.UNDETERMINED: "NOT_AVAILABLE"}
#: Security Hub's limits on the fields this writes.
MAX_TITLE, MAX_DESCRIPTION, MAX_TEXT, MAX_FIELD = 256, 1024, 512, 2048
MAX_REQUIREMENTS = 32


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _time(run: AuditRun) -> str:
    return run.finished_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _tags(vm: VMResult) -> dict[str, str]:
    tags = vm.document.get("tags")
    items = list(tags.items())[:50] if isinstance(tags, dict) else []
    return {str(k)[:128]: str(v)[:256] for k, v in items}


def product_arn(region: str, account: str) -> str:
    return f"arn:aws:securityhub:{region}:{account}:product/{account}/default"


def finding(run: AuditRun, vm: VMResult, f: Finding) -> dict[str, Any]:
    """The ASFF finding of one failing finding on one AWS VM."""
    when = _time(run)
    out: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": f"ccaudit/{vm.key}/{f.rule_id}",
        "ProductArn": product_arn(vm.region, vm.account),
        "GeneratorId": f"ccaudit/{f.rule_id}",
        "AwsAccountId": vm.account,
        "Types": [FINDING_TYPE],
        "CreatedAt": when,
        "UpdatedAt": when,
        "Severity": {"Label": LABEL[f.severity], "Original": f.severity.value},
        "Title": _clip(f.title, MAX_TITLE),
        "Description": _clip(f.reason or f.title, MAX_DESCRIPTION),
        "ProductName": "cc-auditor",
        "CompanyName": "cc-auditor",
        "ProductFields": {
            "ccaudit/RunId": run.run_id,
            "ccaudit/RuleId": f.rule_id,
            "ccaudit/Party": f.party.value,
            "ccaudit/Status": f.status.value,
            "ccaudit/Level": vm.level.value,
            "ccaudit/ProviderCanReachPlaintext": vm.gdpr.provider_can_access.value,
            "ccaudit/EvidenceSha256": _clip(",".join(f.evidence), MAX_FIELD),
        },
        "Resources": [
            {
                "Type": "AwsEc2Instance",
                "Id": f"arn:aws:ec2:{vm.region}:{vm.account}:instance/{vm.id}",
                "Partition": "aws",
                "Region": vm.region,
                "Tags": _tags(vm),
            }
        ],
        "Compliance": {
            "Status": COMPLIANCE[f.status],
            "RelatedRequirements": [r[:256] for r in f.references[:MAX_REQUIREMENTS]],
        },
        "RecordState": "ACTIVE",
        "Workflow": {"Status": "NEW"},
    }
    if vm.name:
        out["ProductFields"]["ccaudit/VmName"] = vm.name[:MAX_FIELD]
    if vm.pool_label:
        out["ProductFields"]["ccaudit/NodePool"] = vm.pool_label[:MAX_FIELD]
    if f.remediation:
        out["Remediation"] = {"Recommendation": {"Text": _clip(f.remediation, MAX_TEXT)}}
    return out


def findings(run: AuditRun) -> list[dict[str, Any]]:
    return [finding(run, vm, f) for vm, f in failing_findings(run) if vm.provider == "aws"]


def render(run: AuditRun) -> dict[str, bytes]:
    return {FILE: dump_json(findings(run), run).encode("utf-8")}


def writers(run: AuditRun) -> dict[str, Callable[[BinaryIO], object]]:
    """The same file written a finding at a time (reports.writers)."""
    return {FILE: partial(_write, run)}


def _write(run: AuditRun, out: BinaryIO) -> None:
    aws = (finding(run, vm, f) for vm, f in failing_findings(run) if vm.provider == "aws")
    write_json_array(aws, run, out)


def load(data: bytes) -> list[dict[str, Any]]:
    """An `asff-findings.json` read back (a JSON array of findings)."""
    doc = json.loads(data)
    if not isinstance(doc, list) or not all(isinstance(x, dict) for x in doc):
        raise ValueError("not an ASFF findings file (a JSON array of findings)")
    return doc
