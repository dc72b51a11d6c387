"""What every provider implements, and the helpers they share.

Providers only collect (DESIGN.md §3): they turn API responses into `VM` records with a
normalised document and keep each raw response as Evidence. No verdicts here. A failed call
becomes a `Gap` naming the call, the scope and the cloud's error, never an empty answer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from auditor.model import VM, Disk, Evidence, Gap, Source, Technology
from auditor.ratelimits import Limit
from auditor.recording import EvidenceSink, SinkClosed, jsonable

T = TypeVar("T")
R = TypeVar("R")
A = TypeVar("A")
B = TypeVar("B")
Params = ParamSpec("Params")


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
    #: seconds its calls waited for the cloud's rate limits (the CLI says so: a slow scope
    #: that is paced is not a hung one)
    paced_s: float = 0.0


def failed_scope(scope: ScopeKey, code: str, message: str) -> ScopeResult:
    """A scope that could not be read at all: one scope-wide gap (`collect / code`)."""
    return ScopeResult(
        scope=scope,
        failed=True,
        errors=[
            Gap(
                provider=scope.provider,
                account=scope.account,
                region=scope.region,
                call="collect",
                code=code,
                message=message,
                affects="scope",
            )
        ],
    )


def collect_scope(
    calls: CallPool, provider: Provider, scope: ScopeKey, sink: EvidenceSink
) -> ScopeResult | None:
    """One scope in a call slot. None if the scan was interrupted at one of its writes; a
    provider bug becomes a gap on the scope, so it never loses the other scopes."""
    from auditor.providers.pacing import PacingStopped

    try:
        result = calls.run_scope(provider.collect, scope, sink)
        if calls.pacer is not None:
            result.paced_s = calls.pacer.waited_for(scope.provider, scope.account, scope.region)
        return result
    except (SinkClosed, PacingStopped):
        return None
    except Exception as err:
        return failed_scope(scope, type(err).__name__, f"internal error while collecting: {err}")


class Provider(Protocol):
    """A cloud collector. `plan` finds scopes; `collect` reads one scope (called concurrently)."""

    name: str

    def plan(self, sink: EvidenceSink) -> Plan: ...

    def collect(self, scope: ScopeKey, sink: EvidenceSink) -> ScopeResult: ...


class WorkerState:
    """Providers go to collection worker processes (auditor.workers) by their settings and what
    planning resolved; their clients, credentials, sessions, locks and call pool stay behind
    and are made again in the worker, as they were before the first call.

    A provider lists the attributes that stay behind in `_RUNTIME` and sets them in `_fresh()`
    (which its `__init__` calls too, so both start alike).
    """

    _RUNTIME: tuple[str, ...] = ()

    def _fresh(self) -> None:
        """Set the `_RUNTIME` attributes to their unstarted values."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in (*self._RUNTIME, "pool"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fresh()


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

    def __init__(self, gap: Gap, status: int | None = None) -> None:
        self.gap = gap
        #: the HTTP status, when the cloud answered (kept to replay the error faithfully)
        self.status = status
        super().__init__(f"{gap.call}: {gap.code}: {gap.message}")


def failure_as_value(fn: Callable[Params, R]) -> Callable[Params, R | CallFailed]:
    """`fn` with its CallFailed returned instead of raised: for calls run beside a scope or
    fanned out per VM, whose failure is a gap the scope reports in its own place and order."""

    def call(*args: Params.args, **kwargs: Params.kwargs) -> R | CallFailed:
        try:
            return fn(*args, **kwargs)
        except CallFailed as failed:
            return failed

    return call


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
    meta = {
        "kind": kind,
        "source": source,
        "call": call,
        "provider": provider,
        "account": account,
        "region": region,
        "resource": resource,
        "ref": ref,
    }
    try:
        evidence = Evidence.from_json(raw, **meta)  # dates and bytes: model.json_default
    except TypeError:  # e.g. a non-string map key: the slower walk copes with anything
        evidence = Evidence.from_json(jsonable(raw), **meta)
    return sink.add(evidence)


def is_loopback(url: str | None) -> bool:
    """True for an http(s) URL whose host is localhost or a loopback address (fakecloud)."""
    import ipaddress
    from urllib.parse import urlsplit

    if not url:
        return False
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tune_session(session: Any, endpoint_url: str | None, pool_size: int) -> None:
    """Configure a `requests` session an SDK made: connection pool size, and for a loopback
    endpoint no proxy/netrc lookup in the environment on every call.

    `pool_size` 0 leaves the pool alone. Sessions that are not `requests` sessions are left
    alone too (the SDK may change its transport).
    """
    try:
        import requests
    except ImportError:  # pragma: no cover - the SDKs depend on requests
        return
    if not isinstance(session, requests.Session):
        return
    if is_loopback(endpoint_url):
        session.trust_env = False
    if pool_size > requests.adapters.DEFAULT_POOLSIZE:
        for prefix, adapter in list(session.adapters.items()):
            if type(adapter) is requests.adapters.HTTPAdapter:
                session.mount(
                    prefix,
                    requests.adapters.HTTPAdapter(
                        pool_connections=requests.adapters.DEFAULT_POOLSIZE,
                        pool_maxsize=pool_size,
                        max_retries=adapter.max_retries,
                    ),
                )


#: The rate limit a call counts against: (cloud, account or project or subscription, region,
#: operation), as `auditor.providers.pacing.Pacer.key` takes it.
PaceOf = tuple[str, str | None, str | None, str | None]
#: The limits a scan paces by ((cloud, family) -> Limit; None: the documented ones)
RateLimits = dict[tuple[str, str], Limit] | None


class CallPool:
    """Bounds the cloud calls in flight across a whole scan, and runs per-VM calls in parallel.

    `--concurrency N` means at most N calls in flight, whatever mix of scopes and per-VM calls
    (`GetInstanceTpmEkPub`, `getShieldedInstanceIdentity`, extensions) is running. A scope
    holds one slot while it lists (its pages depend on each other); `fan_out` hands the slot
    back while the scope's per-VM calls run, each in a slot of its own, so one large scope
    uses every free slot instead of calling its VMs one after another.
    """

    def __init__(self, concurrency: int, pace: bool = True, limits: RateLimits = None) -> None:
        from auditor.providers.pacing import Pacer

        self.concurrency = max(1, concurrency)
        #: Keeps each scope within its cloud's rate limits (auditor.providers.pacing): the
        #: documented ones, or `limits` (ratelimits.limits_with: the owner's). One per scan
        #: process, as each scope is read by one process.
        paced = pace and (limits is None or bool(limits))  # every family off: nothing to pace
        self.pacer: Pacer | None = Pacer(limits) if paced else None
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._holding = threading.local()
        # a thread per slot, and one per scope for a `beside` task waiting for its slot
        self._pool = ThreadPoolExecutor(max_workers=2 * self.concurrency, thread_name_prefix="call")

    def _held(self) -> int:
        return int(getattr(self._holding, "n", 0))

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one call slot (re-entrant within a thread)."""
        if self._held():
            yield
            return
        with self._slots:
            self._holding.n = 1
            try:
                yield
            finally:
                self._holding.n = 0

    def run_scope(self, fn: Callable[[A, B], R], a: A, b: B) -> R:
        """Run one scope's collection in a slot (used by collect())."""
        with self.slot():
            return fn(a, b)

    def _one(self, fn: Callable[[T], R], item: T) -> R:
        with self.slot():
            return fn(item)

    def _in_slot(self, fn: Callable[[T], R], item: T, key: Any) -> R:
        """Run one paced call in the slot `fan_out` acquired for it, its allowance taken."""
        assert self.pacer is not None
        self._holding.n = 1
        try:
            with self.pacer.prepaid(key):
                return fn(item)
        finally:
            self._holding.n = 0
            self._slots.release()

    def _release_if_cancelled(self, future: Future[Any]) -> None:
        if future.cancelled():  # close() cancelled it before it ran: its slot is free again
            self._slots.release()

    def fan_out(
        self, fn: Callable[[T], R], items: Sequence[T], pace: PaceOf | None = None
    ) -> list[R]:
        """`[fn(i) for i in items]` with each call in its own slot; results in input order.

        `fn` should turn call failures into values; anything it raises is re-raised here
        (after the other calls finished), so an interruption still stops the scope.
        When pacing, `pace` (cloud, account, region, operation) names the rate limit each
        item's call counts against: an item is handed to a thread only once it has its
        allowance and a free slot, so a scope waiting for its limit holds no thread or slot
        another scope could use, and calls leave at the pace they were allowed.
        """
        if len(items) <= 1:
            return [fn(i) for i in items]
        calls = StartedCalls(self, fn, pace)
        calls.add(items)
        return calls.results()

    def _hand_back(self) -> int:
        """Give the caller's slot back while it waits on calls that need slots; how many."""
        held = self._held()
        if held:
            self._holding.n = 0
            self._slots.release()
        return held

    def _take_back(self, held: int) -> None:
        if held:
            self._slots.acquire()
            self._holding.n = held

    def _submit(self, fn: Callable[[T], R], item: T, key: Any) -> Future[R]:
        if self.pacer is None:
            return self._pool.submit(self._one, fn, item)
        self.pacer.take(key)  # waits here, in the scope's own thread
        self._slots.acquire()  # handed over: every queued task has a thread
        try:
            future = self._pool.submit(self._in_slot, fn, item, key)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._release_if_cancelled)
        return future

    def beside(self, fn: Callable[[], R]) -> Future[R]:
        """Start `fn` (a scope's independent listings) in a slot of its own, so it overlaps
        the scope's per-VM calls instead of keeping the scope's rate limit idle before them.

        It waits for its slot in a thread of its own: the pool has a thread per slot for
        calls that hold one, and one per scope for these.
        """
        return self._pool.submit(self._in_own_slot, fn)

    def _in_own_slot(self, fn: Callable[[], R]) -> R:
        with self.slot():
            return fn()

    def join(self, future: Future[R]) -> R:
        """The result of a `beside` task, the caller's slot handed back while it waits (the
        task may need that very slot: with `--concurrency 1` it is the only one)."""
        held = self._hand_back()
        try:
            return future.result()
        finally:
            self._take_back(held)

    def close(self) -> None:
        if self.pacer is not None:  # calls waiting for a rate limit stop waiting
            self.pacer.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)


class StartedCalls(Generic[T, R]):
    """Calls of one scope started as their items arrive (see `start_calls`).

    `add` hands the caller's slot back while it waits for each call's allowance and slot,
    and takes it back before returning (the caller lists its next page in it); `results`
    waits for every call, in the order added. Without a pool each call runs as it is added.
    """

    def __init__(self, pool: CallPool | None, fn: Callable[[T], R], pace: PaceOf | None) -> None:
        self._pool = pool
        self._fn = fn
        self._key = (
            pool.pacer.key(*pace) if pool is not None and pool.pacer and pace is not None else None
        )
        #: what was added, in order: `results()` answers them one for one
        self.items: list[T] = []
        self._futures: list[Future[R]] = []

    def add(self, items: Iterable[T]) -> None:
        if self._pool is None:
            for item in items:
                done: Future[R] = Future()
                done.set_result(self._fn(item))
                self.items.append(item)
                self._futures.append(done)
            return
        held = self._pool._hand_back()
        try:
            for item in items:
                self._futures.append(self._pool._submit(self._fn, item, self._key))
                self.items.append(item)
        finally:
            self._pool._take_back(held)

    def answers(self) -> dict[T, R]:
        """`results()` keyed by item (items must be hashable and distinct)."""
        return dict(zip(self.items, self.results(), strict=True))

    def results(self) -> list[R]:
        """Every call's result in the order added; what a call raised is re-raised here,
        after the calls before it finished."""
        held = self._pool._hand_back() if self._pool is not None else 0
        try:
            # result(), not wait(): a future cancelled by close() wakes result() but not wait()
            return [f.result() for f in self._futures]
        finally:
            if self._pool is not None:
                self._pool._take_back(held)

    def settle(self) -> None:
        """Wait for the calls already started, whatever they gave (the scope's listing failed
        after some of them left: none may still write into the scope once it is reported)."""
        held = self._pool._hand_back() if self._pool is not None else 0
        try:
            for future in self._futures:
                # what a call raised (a gap value, PacingStopped) is the calls' own: the
                # listing's failure is what the caller reports
                with contextlib.suppress(BaseException):
                    future.result()
        finally:
            if self._pool is not None:
                self._pool._take_back(held)


def share_pool(providers: Sequence[Any], calls: CallPool) -> None:
    """Give every provider that takes one (a `pool` attribute) the scan's CallPool."""
    for provider in providers:
        if hasattr(provider, "pool"):
            provider.pool = calls


def beside(pool: CallPool | None, fn: Callable[[], R]) -> Future[R]:
    """`fn` started beside what the scope does next (in the CallPool), or run now without one."""
    if pool is None:
        done: Future[R] = Future()
        try:
            done.set_result(fn())
        except Exception as err:
            done.set_exception(err)
        return done
    return pool.beside(fn)


def join(pool: CallPool | None, future: Future[R]) -> R:
    """The result of what `beside` started (see CallPool.join)."""
    return future.result() if pool is None else pool.join(future)


def fan_out(
    pool: CallPool | None, fn: Callable[[T], R], items: Sequence[T], pace: PaceOf | None = None
) -> list[R]:
    """Per-VM calls through the scan's CallPool, or one after another without one."""
    if pool is None:
        return [fn(i) for i in items]
    return pool.fan_out(fn, items, pace)


class ListingFailed(Exception):
    """A page of a list call could not be opened, read or converted: `error` is why."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


P = TypeVar("P")


def read_pages(open_pages: Callable[[], Iterable[P]], convert: Callable[[P], R]) -> Iterator[R]:
    """The converted pages of a list call, each as it arrives. What the SDK (or `convert`)
    raises is ListingFailed; what the caller does with a page between two of them (start its
    VMs' calls) raises as itself, never taken for the listing's failure."""
    try:
        pages = iter(open_pages())
    except Exception as err:
        raise ListingFailed(err) from err
    while True:
        try:
            page = next(pages)
            converted = convert(page)
        except StopIteration:
            return
        except Exception as err:
            raise ListingFailed(err) from err
        yield converted


def start_calls(
    pool: CallPool | None, fn: Callable[[T], R], pace: PaceOf | None = None
) -> StartedCalls[T, R]:
    """Per-VM calls started as their items arrive (`add`), e.g. page by page while a listing
    goes on, so a scope's rate limit is spent from its first page instead of sitting idle
    until the whole listing is read; through the scan's CallPool as `fan_out`, or one after
    another without one."""
    return StartedCalls(pool, fn, pace)
