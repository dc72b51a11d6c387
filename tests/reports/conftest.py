"""Runs for the human-readable reports: the demo fleet, and a small hostile synthetic run.

`demo_run` is scanned once per session (about 3 s) and shared by the HTML, PDF and Markdown
tests. `synthetic_run` is built in memory from the model and the real level/GDPR functions, so
the edge cases (an L4 VM the provider cannot read, an undetermined VM, ids whose slugs collide,
a scope with no VM, markup in every cloud-supplied field) need no fakecloud.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from auditor.api import scan
from auditor.assurance import gdpr_reading, level_for
from auditor.model import (
    AuditRun,
    Coverage,
    Evidence,
    Finding,
    Gap,
    Party,
    PartyStatus,
    RulePackRef,
    Scope,
    ScopeCoverage,
    Severity,
    Source,
    Status,
    Technology,
    ToolInfo,
    Verification,
    VMResult,
)

REPO = Path(__file__).resolve().parents[2]
DEMO_FLEET = REPO / "examples" / "demo-fleet"
DEMO_MAA_ISSUER = "https://ccaudit-demo-maa.example"

EVIL_NAME = "<script>alert(1)</script>"
EVIL_ID = 'i-evil"><img src=x onerror=alert(2)>'
EVIL_TEXT = "</td></table><script>alert(3)</script> [click](javascript:alert(4)) | `tick` @everyone"
EVIL_URL = "http://evil.example/pixel.png"


@pytest.fixture(scope="session")
def demo_run() -> AuditRun:
    """The demo fleet as the cloud APIs show it (no guest evidence)."""
    return scan(replay=DEMO_FLEET)


@pytest.fixture(scope="session")
def demo_guest_run() -> AuditRun:
    """The demo fleet as `ccaudit demo` scans it: with the guest's verified MAA token."""
    return scan(
        replay=DEMO_FLEET,
        guest_evidence=DEMO_FLEET / "guest-evidence",
        maa_issuers=[DEMO_MAA_ISSUER],
        maa_jwks=DEMO_FLEET / "maa-demo-jwks.json",
    )


T0 = datetime(2026, 11, 1, 9, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 1, 9, 0, 42, tzinfo=UTC)


def _evidence(kind: str, source: Source, payload: object, **kw: object) -> Evidence:
    return Evidence.from_json(payload, kind=kind, source=source, collected_at=T0, **kw)


def _vm(
    *,
    provider: str,
    account: str,
    region: str,
    vm_id: str,
    name: str | None,
    statuses: dict[Party, Status],
    evidence: list[Evidence],
    reason: str = "",
    remediation: str | None = None,
    gaps: list[Gap] | None = None,
) -> VMResult:
    hashes = [e.sha256 for e in evidence]
    party_status = {
        p: PartyStatus(
            party=p,
            status=s,
            reason=reason or f"{p.value} is {s.value} in the synthetic run.",
            rules=[f"synthetic.{p.value}"],
            evidence=hashes[:1],
        )
        for p, s in statuses.items()
    }
    findings = [
        Finding(
            rule_id=f"synthetic.{p.value}",
            party=p,
            status=s,
            title=f"{p.value} {s.value}",
            reason=reason or f"{p.value} {s.value}",
            severity=Severity.MEDIUM,
            evidence=hashes[:1],
            remediation=remediation or f"Fix {p.value} (synthetic remediation).",
        )
        for p, s in statuses.items()
        if s is not Status.EXCLUDED
    ]
    level, level_reason = level_for(statuses)
    gdpr = gdpr_reading(SimpleNamespace(provider=provider, region=region), party_status, findings)
    return VMResult(
        provider=provider,
        account=account,
        region=region,
        zone=None,
        id=vm_id,
        name=name,
        instance_type="m6a.large",
        technology=Technology.SEV_SNP,
        state="running",
        document={},
        evidence={"cc": hashes},
        gaps=gaps or [],
        level=level,
        level_reason=level_reason,
        parties=statuses,
        party_status=party_status,
        findings=findings,
        gdpr=gdpr,
    )


def _all(status: Status) -> dict[Party, Status]:
    return dict.fromkeys(Party, status)


@pytest.fixture(scope="session")
def synthetic_run() -> AuditRun:
    """Five VMs in three AWS accounts plus one unreadable Azure subscription."""
    api = _evidence(
        "api_resource",
        Source.CONTROL_PLANE,
        {"note": EVIL_TEXT},
        call=f"ec2:DescribeInstances {EVIL_TEXT}",
        provider="aws",
        account="111111111111",
        region="eu-west-1",
        ref=EVIL_URL,
    )
    report = _evidence(
        "snp_report",
        Source.HARDWARE,
        {"report": "synthetic"},
        call="guest-evidence",
        provider="aws",
        account="111111111111",
        region="eu-west-1",
    )
    report.verification = Verification(
        verifier="snp.verify_report",
        ok=True,
        checks=[{"name": "signature", "ok": True, "reason": f"VCEK signature ok {EVIL_TEXT}"}],
        reason="all checks passed",
    )
    gap_vm = Gap(
        provider="aws",
        account="222222222222",
        region="eu-west-1",
        call="ec2:DescribeVolumes",
        code="UnauthorizedOperation",
        message=f"denied {EVIL_TEXT}",
        sections=["disks"],
    )
    gap_scope = Gap(
        provider="azure",
        account="00000000-dead-beef-0000-000000000000",
        call="virtualMachines.listAll",
        code="AuthorizationFailed",
        message=f"no access {EVIL_TEXT} {EVIL_URL}",
        affects="scope",
    )
    l4 = _all(Status.EXCLUDED)
    l4[Party.IMAGE_PUBLISHER] = Status.CAN_ACCESS
    l4[Party.CPU_VENDOR] = Status.CAN_ACCESS
    undetermined = _all(Status.EXCLUDED)
    undetermined[Party.KEY_CUSTODIAN] = Status.UNDETERMINED
    undetermined[Party.VTPM] = Status.CLAIMED_EXCLUDED
    vms = [
        _vm(
            provider="aws",
            account="111111111111",
            region="eu-west-1",
            vm_id=EVIL_ID,
            name=EVIL_NAME,
            statuses=_all(Status.CAN_ACCESS),
            evidence=[api],
            reason=f"Reason with markup {EVIL_TEXT}",
            remediation=f"Remediate {EVIL_TEXT} see {EVIL_URL}",
        ),
        _vm(
            provider="aws",
            account="111111111111",
            region="eu-west-1",
            vm_id="i-owner-verified",
            name="l4-vault",
            statuses=l4,
            evidence=[report],
        ),
        _vm(
            provider="aws",
            account="222222222222",
            region="eu-west-1",
            vm_id="a/b",
            name="slash",
            statuses=undetermined,
            evidence=[report],
            gaps=[gap_vm],
        ),
        _vm(
            provider="aws",
            account="222222222222",
            region="eu-west-1",
            vm_id="a-b",
            name="dash",
            statuses=_all(Status.CLAIMED_EXCLUDED),
            evidence=[api],
        ),
        _vm(
            provider="aws",
            account="333333333333",
            region="us-east-1",
            vm_id="i-us",
            name=None,
            statuses=_all(Status.UNDETERMINED),
            evidence=[],
        ),
    ]
    return AuditRun(
        tool=ToolInfo(version="0.0.0-test", python="3.11.0", dependencies={"pydantic": "2.0"}),
        run_id="20261101T090000Z-synth",
        started_at=T0,
        finished_at=T1,
        scope=Scope(providers=["aws", "azure"]),
        rule_packs=[
            RulePackRef(
                name="synthetic", version="1", sha256="ab" * 32, path="builtin:x.yaml", rules=9
            )
        ],
        coverage=Coverage(
            complete=False,
            scopes=[
                ScopeCoverage(
                    provider="aws", account="111111111111", region="eu-west-1", status="complete"
                ),
                ScopeCoverage(
                    provider="aws",
                    account="222222222222",
                    region="eu-west-1",
                    status="partial",
                    errors=[gap_vm],
                ),
                ScopeCoverage(
                    provider="azure",
                    account="00000000-dead-beef-0000-000000000000",
                    status="failed",
                    errors=[gap_scope],
                ),
            ],
            gaps=[gap_vm, gap_scope],
        ),
        vms=vms,
        evidence={e.sha256: e for e in (api, report)},
    )
