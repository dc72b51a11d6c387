"""Collection orchestration: plan scopes per provider, read them concurrently, keep coverage.

Collection is bound by API latency, so scopes (AWS: account x region) run in a bounded thread
pool. Whatever fails is kept as a Gap on its scope, so the run can say exactly what it did not
see; nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from auditor.model import VM, Coverage, Gap, ScopeCoverage
from auditor.providers.base import Provider, ScopeKey, ScopeResult
from auditor.recording import EvidenceSink


class ProgressListener:
    """Receives collection progress; the CLI renders it, the API ignores it by default."""

    def planning(self, provider: str) -> None:
        """A provider starts finding its scopes."""

    def planned(self, scopes: int) -> None:
        """The number of scopes to collect is known."""

    def scope_done(self, result: ScopeResult) -> None:
        """One scope finished (successfully or not)."""


@dataclass
class Collection:
    vms: list[VM] = field(default_factory=list)
    coverage: Coverage = field(default_factory=lambda: Coverage(complete=True))
    calls: int = 0


def _scope_status(result: ScopeResult) -> str:
    if result.failed:
        return "failed"
    return "partial" if result.errors else "complete"


def collect(
    providers: Sequence[Provider],
    sink: EvidenceSink,
    concurrency: int = 8,
    progress: ProgressListener | None = None,
) -> Collection:
    """Run every provider's plan, then all their scopes concurrently."""
    listener = progress or ProgressListener()
    out = Collection()
    gaps: list[Gap] = []
    work: list[tuple[Provider, ScopeKey]] = []
    for provider in providers:
        listener.planning(provider.name)
        plan = provider.plan(sink)
        out.calls += plan.calls
        gaps.extend(plan.gaps)
        for gap in plan.gaps:
            out.coverage.scopes.append(
                ScopeCoverage(
                    provider=gap.provider,
                    account=gap.account or "?",
                    region=gap.region,
                    status="failed",
                    errors=[gap],
                )
            )
        work.extend((provider, scope) for scope in plan.scopes)
    listener.planned(len(work))

    results: list[ScopeResult] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="scope") as pool:
        futures = {pool.submit(p.collect, s, sink): (p, s) for p, s in work}
        for fut in as_completed(futures):
            provider, scope = futures[fut]
            try:
                result = fut.result()
            except Exception as err:  # a provider bug must not lose the other scopes
                result = ScopeResult(
                    scope=scope,
                    failed=True,
                    errors=[
                        Gap(
                            provider=scope.provider,
                            account=scope.account,
                            region=scope.region,
                            call="collect",
                            code=type(err).__name__,
                            message=f"internal error while collecting: {err}",
                            affects="scope",
                        )
                    ],
                )
            results.append(result)
            listener.scope_done(result)

    results.sort(key=lambda r: (r.scope.provider, r.scope.account, r.scope.region or ""))
    for result in results:
        out.calls += result.calls
        out.vms.extend(result.vms)
        gaps.extend(result.errors)
        out.coverage.scopes.append(
            ScopeCoverage(
                provider=result.scope.provider,
                account=result.scope.account,
                region=result.scope.region,
                status=_scope_status(result),
                vms=len(result.vms),
                calls=result.calls,
                errors=result.errors,
            )
        )
    out.vms.sort(key=lambda vm: (vm.provider, vm.account, vm.region, vm.id))
    out.coverage.gaps = gaps
    out.coverage.complete = not gaps
    return out
