"""SARIF 2.1.0 (OASIS errata01), shaped for GitHub code scanning.

One result per VM and rule whose finding is failing: CAN_ACCESS (a party the rule names can
reach the plaintext) or UNDETERMINED (the evidence needed to decide is missing). EXCLUDED and
CLAIMED_EXCLUDED findings give no result.

Rules (`tool.driver.rules`) are built from the findings in the run, one per rule id, so the
document is a pure function of the run: `shortDescription` is the rule title,
`fullDescription` the title, the rule's rationale, the party and the legal references, `help`
the remediation (one line per provider when they differ), and
`properties.tags` the references as tags (`gdpr-art-32`, `edpb-01-2020-uc6`, `c5-ops-32`) plus
the party. `properties["security-severity"]` maps the rule severity to GitHub's scale
(critical 9.5, high 8.0, medium 5.5, low 3.0, info 1.0) and `defaultConfiguration.level` to
SARIF levels (critical/high: error, medium: warning, low/info: note). An UNDETERMINED result is
at most a warning: missing evidence is not a shown access.

Cloud resources have no source file, so each result points at a stable per-VM path
`inventory/<provider>/<account>/<region>/<vm id>.json` (line 1), names the VM in
`logicalLocations` (`<provider>/<account>/<region>/<id>`, kind `resource`), and carries
`partialFingerprints["ccauditFinding/v1"]` = sha256 of `<vm key>|<rule id>`: GitHub cannot
fingerprint a non-source file and would otherwise open a new alert on every upload. The
sha256 of each evidence item behind the finding is in the result's `properties.evidence`.

`invocations[0].executionSuccessful` is true only when coverage is complete; every coverage
gap is listed in its properties and as a tool execution notification.

GitHub rejects a run of more than 25,000 results (and shows the top 5,000 by severity), which
a fleet of a few thousand VMs exceeds. A larger run keeps the MAX_RESULTS most severe results
(errors, then warnings, then notes; by security severity within each) and says how many it
left out, in a tool execution notification and in the run's properties (`resultsLeftOut`,
`resultsTotal`): every finding stays in result.json, the CSV/Parquet tables and the HTML
report.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from auditor.model import PROVIDER_PARTIES, AuditRun, Finding, Gap, Severity, Status, VMResult
from auditor.reports import dump_json
from auditor.reports.tables import sorted_vms

FILE = "results.sarif"
TOOL_NAME = "cc-auditor"
SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
FINGERPRINT = "ccauditFinding/v1"
FAILING = (Status.CAN_ACCESS, Status.UNDETERMINED)
MAX_TAGS = 20  # GitHub keeps at most 20 tags per rule
#: GitHub code scanning's hard limit of results per run: a larger run is rejected whole.
MAX_RESULTS = 25_000
_LEVEL_RANK = {"error": 0, "warning": 1, "note": 2}

SECURITY_SEVERITY: dict[Severity, str] = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "1.0",
}
LEVEL: dict[Severity, str] = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}

_GDPR = re.compile(r"^GDPR Art\. ?(\d+)")
_EDPB = re.compile(r"^EDPB Recommendations (\d+)/(\d+)(?:.*?Use Case (\d+))?")
_C5 = re.compile(r"^C5:\d+ ([A-Za-z]+)-(\d+)")


def reference_tag(reference: str) -> str | None:
    """A short tag for a legal reference ("GDPR Art. 32(1)(a)" -> "gdpr-art-32"), or None."""
    if m := _GDPR.match(reference):
        return f"gdpr-art-{m.group(1)}"
    if m := _EDPB.match(reference):
        base = f"edpb-{m.group(1)}-{m.group(2)}"
        return f"{base}-uc{m.group(3)}" if m.group(3) else base
    if m := _C5.match(reference):
        return f"c5-{m.group(1).lower()}-{m.group(2)}"
    return None


def result_level(finding: Finding) -> str:
    level = LEVEL[finding.severity]
    if finding.status is Status.UNDETERMINED and level == "error":
        return "warning"
    return level


def fingerprint(vm: VMResult, rule_id: str) -> str:
    return hashlib.sha256(f"{vm.key}|{rule_id}".encode()).hexdigest()


def artifact_uri(vm: VMResult) -> str:
    """The stable per-VM path alerts are anchored to (each segment percent-encoded)."""
    parts = ("inventory", vm.provider, vm.account, vm.region, f"{vm.id}.json")
    return "/".join(quote(p, safe="") for p in parts)


def _escape(text: str) -> str:
    """Plain SARIF message text: brackets would otherwise start an embedded link (§3.11.6)."""
    return text.replace("[", "\\[").replace("]", "\\]")


def _rule_name(rule_id: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in re.split(r"[^A-Za-z0-9]+", rule_id) if w)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _tags(finding: Finding) -> list[str]:
    tags = ["security", "confidential-computing", f"party-{finding.party.value}"]
    if finding.party in PROVIDER_PARTIES:
        tags.append("provider-controlled")
    for ref in finding.references:
        tag = reference_tag(ref)
        if tag and tag not in tags:
            tags.append(tag)
    return tags[:MAX_TAGS]


def _help(finding: Finding, remediations: dict[str, str]) -> dict[str, str]:
    texts = sorted(set(remediations.values()))
    if not texts:
        rem_text = rem_md = "No remediation is recorded for this rule."
    elif len(texts) == 1:
        rem_text = rem_md = texts[0]
    else:
        rem_text = "\n".join(f"{p}: {t}" for p, t in remediations.items())
        rem_md = "\n".join(f"- **{p}**: {t}" for p, t in remediations.items())
    refs = finding.references
    ref_text = "; ".join(refs) if refs else "none recorded"
    ref_md = "\n".join(f"- {r}" for r in refs) if refs else "- none recorded"
    text = (
        f"{rem_text}\n\nParty: {finding.party.value}.\n"
        f"Evidence relevant to (not a compliance verdict): {ref_text}"
    )
    markdown = (
        f"**Remediation**\n\n{rem_md}\n\n**Party**: `{finding.party.value}`\n\n"
        f"**Evidence relevant to** (not a compliance verdict)\n\n{ref_md}\n"
    )
    return {"text": text, "markdown": markdown}


def _rule(finding: Finding, remediations: dict[str, str]) -> dict[str, Any]:
    refs = "; ".join(finding.references) if finding.references else "no reference recorded"
    why = f" {_sentence(finding.rationale)}" if finding.rationale else ""
    full = (
        f"{_sentence(finding.title)}{why} Party: {finding.party.value}. "
        f"Evidence relevant to: {refs}."
    )
    return {
        "id": finding.rule_id,
        "name": _rule_name(finding.rule_id),
        "shortDescription": {"text": finding.title},
        "fullDescription": {"text": full},
        "help": _help(finding, remediations),
        "defaultConfiguration": {"level": LEVEL[finding.severity]},
        "properties": {
            "tags": _tags(finding),
            "security-severity": SECURITY_SEVERITY[finding.severity],
            "severity": finding.severity.value,
            "party": finding.party.value,
            "references": list(finding.references),
        },
    }


def _vm_label(vm: VMResult) -> str:
    return f"{vm.name} ({vm.key})" if vm.name else vm.key


def _message(vm: VMResult, finding: Finding) -> str:
    if finding.status is Status.CAN_ACCESS:
        what = f"{finding.party.value} can reach the plaintext"
    else:
        what = f"whether {finding.party.value} can reach the plaintext is undetermined"
    return _escape(f"{_vm_label(vm)}: {what}: {_sentence(finding.reason)}")


def _result(vm: VMResult, finding: Finding, rule_index: int) -> dict[str, Any]:
    return {
        "ruleId": finding.rule_id,
        "ruleIndex": rule_index,
        "level": result_level(finding),
        "message": {"text": _message(vm, finding)},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": artifact_uri(vm)},
                    "region": {"startLine": 1},
                },
                "logicalLocations": [
                    {
                        "name": vm.name or vm.id,
                        "fullyQualifiedName": vm.key,
                        "kind": "resource",
                    }
                ],
            }
        ],
        "partialFingerprints": {FINGERPRINT: fingerprint(vm, finding.rule_id)},
        "properties": {
            "party": finding.party.value,
            "status": finding.status.value,
            "severity": finding.severity.value,
            "evidence": list(finding.evidence),
            "vm": {
                "provider": vm.provider,
                "account": vm.account,
                "region": vm.region,
                "id": vm.id,
                "name": vm.name,
                "level": vm.level.value,
                "technology": vm.technology.value,
            },
        },
    }


def _gap_text(gap: Gap) -> str:
    where = "/".join(p for p in (gap.provider, gap.account, gap.region) if p)
    return f"{gap.call} failed in {where}: {gap.code}: {gap.message}"


def _most_severe(ranks: Sequence[tuple[int, float]], limit: int) -> list[int]:
    """Indexes of the `limit` most severe candidates (by level, then security severity, as
    `_rank` gives them), in their original order."""
    if len(ranks) <= limit:
        return list(range(len(ranks)))
    return sorted(sorted(range(len(ranks)), key=lambda i: (*ranks[i], i))[:limit])


def _rank(finding: Finding) -> tuple[int, float]:
    return (_LEVEL_RANK[result_level(finding)], -float(SECURITY_SEVERITY[finding.severity]))


def _left_out_text(left_out: int, total: int, limit: int) -> str:
    return (
        f"{left_out} of {total} results left out: GitHub code scanning accepts at most "
        f"{limit} results per run, so this run keeps the most severe; every finding is in "
        "result.json, the CSV and Parquet findings tables and the HTML report"
    )


def _invocation(run: AuditRun, left_out: int = 0, total: int = 0) -> dict[str, Any]:
    gaps = [g.model_dump(mode="json") for g in run.coverage.gaps]
    notifications = [
        {
            "level": "error" if g.affects == "scope" else "warning",
            "message": {"text": _escape(_gap_text(g))},
            "descriptor": {"id": g.code or "gap"},
        }
        for g in run.coverage.gaps
    ]
    if left_out:
        notifications.append(
            {
                "level": "warning",
                "message": {"text": _left_out_text(left_out, total, total - left_out)},
                "descriptor": {"id": "ResultsLeftOut"},
            }
        )
    invocation: dict[str, Any] = {
        "executionSuccessful": run.coverage.complete,
        "startTimeUtc": run.started_at.isoformat().replace("+00:00", "Z"),
        "endTimeUtc": run.finished_at.isoformat().replace("+00:00", "Z"),
        "properties": {
            "coverageComplete": run.coverage.complete,
            "gaps": gaps,
            "scopes": [s.model_dump(mode="json", exclude={"errors"}) for s in run.coverage.scopes],
        },
    }
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    return invocation


def document(run: AuditRun, max_results: int = MAX_RESULTS) -> dict[str, Any]:
    """The SARIF log as a JSON-ready dict (at most `max_results` results, see above)."""
    # One pass over the VMs keeps per rule its first finding and remediations, and per
    # candidate result only the VM's place, its rule and its rank: a stored run
    # (auditor.runs.spool) is then never held whole; the VMs of the results kept are read again.
    vms = sorted_vms(run)
    first: dict[str, Finding] = {}
    remediations: dict[str, dict[str, str]] = {}
    candidates: list[tuple[int, str]] = []  # (the VM's place, the rule)
    ranks: list[tuple[int, float]] = []
    for n, vm in enumerate(vms):
        for f in vm.findings:
            first.setdefault(f.rule_id, f)
            if f.remediation:
                remediations.setdefault(f.rule_id, {}).setdefault(vm.provider, f.remediation)
        seen: set[str] = set()
        for f in sorted(vm.findings, key=lambda f: f.rule_id):
            if f.status not in FAILING or f.rule_id in seen:
                continue
            seen.add(f.rule_id)
            candidates.append((n, f.rule_id))
            ranks.append(_rank(f))
    rule_ids = sorted(first)
    index = {rid: i for i, rid in enumerate(rule_ids)}
    rules = [_rule(first[rid], dict(sorted(remediations.get(rid, {}).items()))) for rid in rule_ids]
    kept = _most_severe(ranks, max_results)
    results = [_kept_result(vms, *candidates[i], index) for i in kept]
    left_out = len(candidates) - len(kept)
    properties: dict[str, Any] = {
        "runId": run.run_id,
        "schemaVersion": run.schema_version,
        "rulePacks": [p.model_dump(mode="json") for p in run.rule_packs],
    }
    if left_out:
        properties.update(resultsLeftOut=left_out, resultsTotal=len(candidates))

    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL_NAME,
                        "version": run.tool.version,
                        "rules": rules,
                    }
                },
                "invocations": [_invocation(run, left_out, len(candidates))],
                "results": results,
                "properties": properties,
            }
        ],
    }


def _kept_result(
    vms: Sequence[VMResult], n: int, rule: str, index: dict[str, int]
) -> dict[str, Any]:
    """A result kept: its VM read again, and its first failing finding of that rule."""
    vm = vms[n]
    finding = next(f for f in vm.findings if f.rule_id == rule and f.status in FAILING)
    return _result(vm, finding, index[rule])


def render_sarif(run: AuditRun) -> str:
    return dump_json(document(run), run)


def render(run: AuditRun) -> dict[str, bytes]:
    return {FILE: render_sarif(run).encode("utf-8")}
