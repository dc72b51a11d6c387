"""Collection orchestration: plan scopes per provider, read them concurrently, keep coverage.

Collection is bound by API latency, so scopes (AWS: account x region) run in a bounded thread
pool. Whatever fails is kept as a Gap on its scope, so the run can say exactly what it did not
see; nothing is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace

from auditor.heap import reading_here
from auditor.model import VM, Coverage, Gap, ScopeCoverage
from auditor.providers.base import (
    CallPool,
    Provider,
    RateLimits,
    ScopeKey,
    ScopeResult,
    collect_scope,
    share_pool,
)
from auditor.recording import EvidenceSink, SinkClosed, StoppableSink
from auditor.runs.shard import Shard
from auditor.workers import NotPortable, auto_workers, pack_providers

log = logging.getLogger(__name__)


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
    interrupted: bool = False


def _interrupted_gap(provider: str, account: str | None, region: str | None, what: str) -> Gap:
    return Gap(
        provider=provider,
        account=account,
        region=region,
        call="collect",
        code="Interrupted",
        message=f"the scan was interrupted before {what} was read",
        affects="scope",
    )


def _scope_status(result: ScopeResult) -> str:
    if result.failed:
        return "failed"
    return "partial" if result.errors else "complete"


def collect(
    providers: Sequence[Provider],
    sink: EvidenceSink,
    concurrency: int = 8,
    progress: ProgressListener | None = None,
    shard: Shard | None = None,
    processes: int | None = 1,
    limits: RateLimits = None,
    on_scope: Callable[[ScopeResult], None] | None = None,
) -> Collection:
    """Run every provider's plan, then all their scopes concurrently.

    With `shard`, every plan still runs in full (it is cheap and names the scopes), and only
    the scopes and planning gaps that shard owns are kept (auditor.runs.shard). `processes`: worker
    processes that read the scopes (auditor.workers); None chooses (`workers.auto_workers`),
    1 reads them in threads of this process. Planning always runs here. `limits`: the rate
    limits each scope is paced by (None: the documented ones; ratelimits.limits_with).
    `on_scope`: given each finished scope with its VMs, which the collection then does not
    keep (`Collection.vms` stays empty; coverage still counts them): run_audit's spool.
    """
    listener = progress or ProgressListener()
    out = Collection()
    gaps: list[Gap] = []
    work: list[tuple[Provider, ScopeKey]] = []
    for n, provider in enumerate(providers):
        listener.planning(provider.name)
        try:
            plan = provider.plan(sink)
        except (KeyboardInterrupt, SinkClosed):
            _stop(sink)
            out.interrupted = True
            for missed in providers[n:]:
                gap = _interrupted_gap(missed.name, None, None, f"{missed.name}'s scope list")
                gaps.append(gap)
                out.coverage.scopes.append(
                    ScopeCoverage(
                        provider=missed.name, account="?", status="interrupted", errors=[gap]
                    )
                )
            break
        out.calls += plan.calls
        plan_gaps = [
            g for g in plan.gaps if shard is None or shard.owns(g.provider, g.account, g.region)
        ]
        gaps.extend(plan_gaps)
        for gap in plan_gaps:
            out.coverage.scopes.append(
                ScopeCoverage(
                    provider=gap.provider,
                    account=gap.account or "?",
                    region=gap.region,
                    status="failed",
                    errors=[gap],
                )
            )
        work.extend(
            (provider, scope)
            for scope in plan.scopes
            if shard is None or shard.owns(scope.provider, scope.account, scope.region)
        )
    listener.planned(len(work))

    results: list[ScopeResult] = []
    counts: dict[ScopeKey, int] = {}

    def arrived(result: ScopeResult) -> None:
        listener.scope_done(result)
        counts[result.scope] = len(result.vms)
        if on_scope is None:
            results.append(result)
            return
        results.append(replace(result, vms=[]))
        on_scope(result)

    if not out.interrupted:
        count = auto_workers(len(work), concurrency) if processes is None else processes
        packed: bytes | None = None
        if count > 1 and len(work) > 1:
            try:
                packed = pack_providers(providers)
            except NotPortable as err:
                log.warning("collecting in this process: providers cannot go to workers (%s)", err)
        if packed is not None:
            out.interrupted = _in_workers(
                providers, packed, work, sink, concurrency, count, arrived, limits
            )
        else:
            out.interrupted = _in_threads(providers, work, sink, concurrency, arrived, limits)
    if out.interrupted:
        finished = {r.scope for r in results}
        for _, scope in work:
            if scope not in finished:
                gap = _interrupted_gap(scope.provider, scope.account, scope.region, scope.label)
                gaps.append(gap)
                out.coverage.scopes.append(
                    ScopeCoverage(
                        provider=scope.provider,
                        account=scope.account,
                        region=scope.region,
                        status="interrupted",
                        errors=[gap],
                    )
                )

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
                vms=counts.get(result.scope, 0),
                calls=result.calls,
                errors=result.errors,
            )
        )
    out.vms.sort(key=lambda vm: (vm.provider, vm.account, vm.region, vm.id))
    out.coverage.gaps = gaps
    out.coverage.complete = not gaps
    out.coverage.interrupted = out.interrupted
    return out


def _in_threads(
    providers: Sequence[Provider],
    work: Sequence[tuple[Provider, ScopeKey]],
    sink: EvidenceSink,
    concurrency: int,
    arrived: Callable[[ScopeResult], None],
    limits: RateLimits = None,
) -> bool:
    """Every scope in a thread of this process; True if interrupted (finished ones kept)."""
    reading_here(p for p, _ in work)  # their SDKs, out of the GC's way
    # `concurrency` bounds calls in flight: scopes list in a slot each, and their per-VM calls
    # fan out over the same slots (providers with a `pool` attribute get the CallPool).
    calls = CallPool(concurrency, limits=limits)
    share_pool(providers, calls)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="scope")
    futures = [pool.submit(collect_scope, calls, p, s, sink) for p, s in work]
    interrupted = stopping = False
    try:
        for fut in as_completed(futures):
            result = fut.result()
            if result is None:  # stopped at a write: the sink was closed (run_audit's spool)
                stopping = True
                break
            arrived(result)
    except KeyboardInterrupt:
        # Stop here: unstarted scopes are cancelled, running ones stop at their next write
        # (bounded by one call and its SDK retries); what finished is kept.
        _stop(sink)
        interrupted = True
        calls.close()
        pool.shutdown(wait=True, cancel_futures=True)
    except BaseException:  # `arrived` failed: stop the same way, then say why
        _stop(sink)
        stopping = True
        raise
    finally:
        calls.close()  # calls waiting for a rate limit stop waiting (none wait once all finished)
        # interrupted again while waiting: do not wait twice (threads stop at their next write)
        pool.shutdown(wait=not interrupted, cancel_futures=interrupted or stopping)
    return interrupted


def _in_workers(
    providers: Sequence[Provider],
    packed: bytes,
    work: Sequence[tuple[Provider, ScopeKey]],
    sink: EvidenceSink,
    concurrency: int,
    processes: int,
    arrived: Callable[[ScopeResult], None],
    limits: RateLimits = None,
) -> bool:
    """Every scope in worker processes (auditor.workers); True if interrupted."""
    from auditor.workers import collect_in_workers

    run = collect_in_workers(
        providers, packed, work, sink.raw_dir, concurrency, processes, sink.add, arrived, limits
    )
    if run.none_started and not run.interrupted:  # nothing was read: read it here instead
        log.warning("collecting in this process: no worker started (%s)", "; ".join(run.why))
        return _in_threads(providers, work, sink, concurrency, arrived, limits)
    if run.interrupted:
        _stop(sink)
    return run.interrupted


def _stop(sink: EvidenceSink) -> None:
    if isinstance(sink, StoppableSink):
        sink.close()
