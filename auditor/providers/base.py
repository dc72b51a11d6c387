"""What every provider implements, and the helpers they share.

Providers only collect (DESIGN.md §3): they turn API responses into `VM` records with a
normalised document and keep each raw response as Evidence. No verdicts here. A failed call
becomes a `Gap` naming the call, the scope and the cloud's error, never an empty answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from auditor.model import VM, Disk, Evidence, Gap, Source, Technology
from auditor.recording import EvidenceSink, jsonable


@dataclass(frozen=True)
class ScopeKey:
    """A unit of collection that can run on its own (AWS: account x region)."""

    provider: str
    account: str
    region: str | None = None

    @property
    def label(self) -> str:
        return "/".join(x for x in (self.provider, self.account, self.region) if x)


@dataclass
class Plan:
    """Scopes to collect, and the gaps met while finding them (e.g. an account not reachable)."""

    scopes: list[ScopeKey] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    calls: int = 0


@dataclass
class ScopeResult:
    """What one scope gave: its VMs, what failed, and whether anything at all was seen."""

    scope: ScopeKey
    vms: list[VM] = field(default_factory=list)
    errors: list[Gap] = field(default_factory=list)
    calls: int = 0
    failed: bool = False
    skipped: int = 0


class Provider(Protocol):
    """A cloud collector. `plan` finds scopes; `collect` reads one scope (called concurrently)."""

    name: str

    def plan(self, sink: EvidenceSink) -> Plan: ...

    def collect(self, scope: ScopeKey, sink: EvidenceSink) -> ScopeResult: ...


def make_gap(
    provider: str,
    call: str,
    code: str,
    message: str,
    account: str | None,
    region: str | None = None,
    resource: str | None = None,
    sections: Sequence[str] = (),
    affects: str = "vms",
) -> Gap:
    """A Gap in the shared shape; each provider only works out `code` and `message`."""
    return Gap(
        provider=provider,
        account=account,
        region=region,
        call=call,
        code=code,
        message=message,
        resource=resource,
        sections=list(sections),
        affects=affects,
    )


def collected_vm(
    doc: dict[str, Any],
    *,
    technology: Technology,
    disks: list[Disk],
    evidence: dict[str, list[str]],
    gaps: list[Gap],
) -> VM:
    """The VM record from its finished document: identity read from the document, and the
    gaps written into it in the one shape rules see (`vm.gaps`), for every cloud alike."""
    if gaps:
        doc["gaps"] = [{"call": g.call, "code": g.code, "message": g.message} for g in gaps]
    return VM(
        provider=doc["provider"],
        account=doc["account"],
        region=doc["region"],
        zone=doc.get("zone"),
        id=doc["id"],
        name=doc.get("name"),
        instance_type=doc.get("instance_type"),
        technology=technology,
        state=doc.get("state"),
        disks=disks,
        document=doc,
        evidence=evidence,
        gaps=gaps,
    )


class CallFailed(Exception):
    """A cloud call that failed; carries the Gap that reports it."""

    def __init__(self, gap: Gap) -> None:
        self.gap = gap
        super().__init__(f"{gap.call}: {gap.code}: {gap.message}")


def record_evidence(
    sink: EvidenceSink,
    raw: Any,
    *,
    provider: str,
    kind: str,
    call: str,
    account: str,
    region: str | None,
    resource: str | None,
    ref: str,
    source: Source = Source.CONTROL_PLANE,
) -> str:
    """Keep one raw item as Evidence (deduplicated by hash); returns its sha256."""
    return sink.add(
        Evidence.from_json(
            jsonable(raw),
            kind=kind,
            source=source,
            call=call,
            provider=provider,
            account=account,
            region=region,
            resource=resource,
            ref=ref,
        )
    )
