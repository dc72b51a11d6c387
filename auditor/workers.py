"""Collection in worker processes: a large scan's scopes read on every core.

One Python process parses API responses at the speed of one core (the SDKs hold the GIL while
they turn XML and JSON into objects), so a scan of many scopes is CPU-bound long before it is
latency-bound (benchmarks/RESULTS.md). `collect()` then hands its scopes to worker processes:

* each worker is forked from a fork server (`auditor.forkserver`: started afresh, it imports
  the SDKs once for every worker), or, where there is none, is `python -m auditor.workers`,
  started afresh; either way no process that has threads is forked, and the caller's script
  is not imported again, so a script or notebook that calls `auditor.scan()` needs no
  `__main__` guard;
* it gets the providers by their settings and what planning resolved
  (`auditor.providers.base.WorkerState`), never their clients; it makes its own, and an equal
  share of `--concurrency`, so the bound on calls in flight holds for the whole scan;
* it asks for a scope whenever it has room, so one slow scope never holds back the others, and
  writes raw responses into the run's `raw/` itself;
* each finished scope comes back whole (VMs, gaps, evidence items) and is reported at once.

Messages are pickles on the worker's stdin and stdout (its own stdout is sent to stderr, so a
stray print cannot break them). Interruption stays the parent's: workers ignore SIGINT and
SIGTERM, the parent tells them to stop, their scopes stop at their next write (as threads do
in one process), and what finished is kept. A worker that dies loses only the scopes it was
reading: they become gaps that name it, and the other workers take the rest. A worker whose
parent is gone (its stdin closes: killed, out of memory) ends at once, without waiting for its
calls in flight or their retries: nobody would read what they found.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from auditor import forkserver
from auditor.forkserver import ForkServer, ForkServerError
from auditor.heap import scan_heap, sdk_modules
from auditor.model import Evidence
from auditor.providers.base import (
    CallPool,
    Provider,
    RateLimits,
    ScopeKey,
    ScopeResult,
    collect_scope,
    failed_scope,
    share_pool,
)
from auditor.recording import StoppableSink

#: Scopes a worker should have at least, for a worker to pay for its start (about a second to
#: import the SDKs) and its memory (one more copy of them).
SCOPES_PER_WORKER = 8
#: Workers chosen by default at most: beyond this the API's rate limits, not the CPU, bind.
MAX_AUTO_WORKERS = 4
#: How long the parent waits for a reply at a time (a worker's death arrives as a reply too).
_POLL_S = 0.2
log = logging.getLogger(__name__)
#: A worker's exit code when its parent went away: it ends at once, its calls in flight (and
#: their SDK retries, up to minutes against an unreachable cloud) abandoned, since nobody
#: would read what they found.
ORPHANED = 4
#: How long a worker whose stdin closed after its last scope waits for its threads' last words.
_LAST_WORDS_S = 2.0
#: Parent -> worker: a scope's index, or one of these.
_END, _STOP = "end", "stop"


def auto_workers(scopes: int, concurrency: int) -> int:
    """Worker processes for `processes=None`: one per core, if every worker gets at least
    SCOPES_PER_WORKER scopes and two call slots; 1 (no workers, threads only) otherwise."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_AUTO_WORKERS, scopes // SCOPES_PER_WORKER, concurrency // 2))


class NotPortable(Exception):
    """Providers that cannot be sent to workers (a custom one holding a lock, say): the scan
    then reads their scopes in threads of its own process."""


def pack_providers(providers: Sequence[Provider]) -> bytes:
    """The providers as every worker receives them, pickled once for all of them."""
    try:
        return pickle.dumps(list(providers), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # any provider type of a user's: say why, do not fail the scan
        raise NotPortable(f"{type(err).__name__}: {err}") from err


@dataclass
class WorkerRun:
    """What the workers gave back: finished scopes, and whether the scan was interrupted."""

    #: how many scopes finished (or were lost), each given to `on_result` as it came
    finished: int = 0
    interrupted: bool = False
    #: No worker ever started (each failed before its first scope, `why` says how): nothing
    #: was read, so the caller can read the scopes itself instead.
    none_started: bool = False
    why: list[str] = field(default_factory=list)


class _Process(Protocol):
    """A started worker (`subprocess.Popen`) or a forked one (`forkserver.ForkedWorker`)."""

    stdin: IO[bytes] | None
    stdout: IO[bytes] | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


@dataclass
class _Worker:
    k: int
    proc: _Process
    reading: set[int] = field(default_factory=set)
    ended: bool = False  # sent _END (or _STOP)
    gone: bool = False  # its stdout closed

    def send(self, message: Any) -> None:
        assert self.proc.stdin is not None
        try:
            pickle.dump(message, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):  # it died: its stdout's end says so
            pass


def collect_in_workers(
    providers: Sequence[Provider],
    packed: bytes,
    work: Sequence[tuple[Provider, ScopeKey]],
    raw_dir: Path | None,
    concurrency: int,
    processes: int,
    on_evidence: Callable[[Evidence], object],
    on_result: Callable[[ScopeResult], None],
    limits: RateLimits = None,
) -> WorkerRun:
    """Read `work` in `processes` worker processes; see the module docstring.

    `packed` is `pack_providers(providers)`: what the workers unpickle.
    `on_evidence` receives every evidence item of a finished scope before `on_result` receives
    the scope. Interrupted (KeyboardInterrupt), the workers are stopped and waited for, the
    finished scopes are returned with `interrupted` set; the caller names the others.
    """
    index = {id(p): n for n, p in enumerate(providers)}
    items = [(index[id(p)], scope) for p, scope in work]
    count = max(1, min(processes, len(items)))
    shares = [concurrency // count + (1 if k < concurrency % count else 0) for k in range(count)]
    inbox: queue.Queue[tuple[int, Any]] = queue.Queue()
    server = _fork_server(providers) if count > 1 else None
    workers: list[_Worker] = []
    try:
        workers += [_start(k, inbox, server) for k in range(count)]
    except BaseException:
        for worker in workers:
            _finish(worker)
        if server is not None:
            server.close()
        raise
    session = _Session(items, workers, inbox, on_evidence, on_result)
    try:
        for worker in workers:
            worker.send((packed, items, raw_dir, max(1, shares[worker.k]), limits))
        session.run()
    except KeyboardInterrupt:
        session.run_result.interrupted = True
        for worker in workers:
            worker.ended = True
            worker.send(_STOP)
        # asked twice: do not wait for the workers' current calls
        with contextlib.suppress(KeyboardInterrupt):
            session.drain()
    finally:
        for worker in workers:
            _finish(worker)
        if server is not None:
            server.close()
    session.run_result.finished = len(session.finished)
    return session.run_result


def _fork_server(providers: Sequence[Provider]) -> ForkServer | None:
    """A fork server that imported the providers' SDKs, or None (workers are then started
    one by one, each importing them itself)."""
    if not forkserver.available():
        return None
    # the providers' own modules too, which each worker would import to unpickle them
    own = [type(p).__module__ for p in providers if type(p).__module__ != "__main__"]
    try:
        return ForkServer(list(dict.fromkeys([*sdk_modules(providers), *own])))
    except ForkServerError as err:
        log.info("starting collection workers one by one: %s", err)
        return None


def _start(k: int, inbox: queue.Queue[tuple[int, Any]], server: ForkServer | None) -> _Worker:
    proc: _Process | None = None
    if server is not None:
        try:
            proc = server.fork()
        except ForkServerError as err:
            log.info("starting collection worker %d by itself: %s", k, err)
    if proc is None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "auditor.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=forkserver.child_env(),
            start_new_session=True,  # a terminal's Ctrl-C reaches the parent only: it decides
        )
    assert proc.stdout is not None
    reader = threading.Thread(
        target=_read_replies, args=(k, proc.stdout, inbox), name=f"worker-{k}", daemon=True
    )
    reader.start()
    return _Worker(k, proc)


def _read_replies(k: int, stream: IO[bytes], inbox: queue.Queue[tuple[int, Any]]) -> None:
    """One worker's replies into the parent's inbox; ("gone",) when its stdout ends."""
    try:
        while True:
            inbox.put((k, pickle.load(stream)))
    except Exception:  # EOF, or a reply cut short by its death
        inbox.put((k, ("gone",)))


def _finish(worker: _Worker) -> None:
    if worker.proc.stdin is not None:
        with contextlib.suppress(OSError):
            worker.proc.stdin.close()
    try:
        worker.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        worker.proc.wait(timeout=10)


class _Session:
    """The parent's side: hands out scopes, keeps finished ones, notices workers that died."""

    def __init__(
        self,
        items: Sequence[tuple[int, ScopeKey]],
        workers: Sequence[_Worker],
        inbox: queue.Queue[tuple[int, Any]],
        on_evidence: Callable[[Evidence], object],
        on_result: Callable[[ScopeResult], None],
    ) -> None:
        self.items = items
        self.workers = workers
        self.inbox = inbox  # every worker's reader thread writes here
        self.on_evidence = on_evidence
        self.on_result = on_result
        self.next = 0  # the next scope to hand out
        self.finished: set[int] = set()
        self.run_result = WorkerRun()
        self.why = self.run_result.why  # why workers left early
        self.started = False  # a worker asked for a scope
        self.stopping = False

    def run(self) -> None:
        while len(self.finished) < len(self.items) and not all(w.gone for w in self.workers):
            self._take()
        if not self.started:
            self.run_result.none_started = True
            return
        if len(self.finished) < len(self.items):
            why = "; ".join(self.why) or "the collection workers ended early"
            for n in range(len(self.items)):
                self._lose(n, f"no collection worker was left to read it ({why})")

    def drain(self) -> None:
        """After _STOP: keep what still finishes until every worker's stdout has ended."""
        self.stopping = True
        while not all(w.gone for w in self.workers):
            self._take()

    def _take(self) -> None:
        try:
            k, message = self.inbox.get(timeout=_POLL_S)
        except queue.Empty:
            return
        worker = self.workers[k]
        kind = message[0]
        if kind == "ready":
            self.started = True
            self._hand_out(worker)
        elif kind == "start":
            worker.reading.add(message[1])
        elif kind == "done":
            n, result, evidence = message[1], message[2], message[3]
            worker.reading.discard(n)
            if n not in self.finished:
                self.finished.add(n)
                for item in evidence:
                    self.on_evidence(item)
                self.on_result(result)
        elif kind == "stopped":  # stopped at a write by _STOP: not finished, not failed
            worker.reading.discard(message[1])
        elif kind == "broken":  # could not start (e.g. a provider did not unpickle)
            self.why.append(f"worker {k} could not start: {message[1]}")
        elif kind == "gone":
            worker.gone = True
            code = worker.proc.poll()
            if code is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = worker.proc.wait(timeout=5)
            if not self.started and not any(w.startswith(f"worker {k} ") for w in self.why):
                self.why.append(f"worker {k} ended with exit code {code} before its first scope")
            lost = sorted(worker.reading - self.finished)
            worker.reading.clear()
            if lost and not self.stopping:
                how = f"collection worker {k} died (exit code {code})"
                self.why.append(how)
                for n in lost:
                    self._lose(n, f"{how} while reading it")

    def _hand_out(self, worker: _Worker) -> None:
        if worker.ended:
            return
        if self.next < len(self.items):
            worker.send(self.next)
            self.next += 1
        else:
            worker.ended = True
            worker.send(_END)

    def _lose(self, n: int, why: str) -> None:
        if n in self.finished:
            return
        self.finished.add(n)
        scope = self.items[n][1]
        result = failed_scope(scope, "WorkerLost", f"{scope.label} was not read: {why}")
        self.on_result(result)


# ============================================================================ in the worker
class _Replies:
    """The worker's side of the pipe: one pickle per message, from any thread."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def put(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._stream.write(data)
            self._stream.flush()


def _stop_reading(stop: threading.Event, calls: CallPool) -> None:
    """Scopes stop at their next write, and calls waiting for a rate limit stop waiting."""
    stop.set()
    if calls.pacer is not None:
        calls.pacer.stop()


def worker_main(requests: IO[bytes], replies_stream: IO[bytes]) -> int:
    """A worker process: read the scopes the parent hands out, `share` at a time."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    replies = _Replies(replies_stream)
    try:
        packed, items, raw_dir, share, limits = pickle.load(requests)
        providers = pickle.loads(packed)
        calls = CallPool(share, limits=limits)
        share_pool(providers, calls)
    except BaseException as err:  # say why: the parent must not wait for this worker
        replies.put(("broken", f"{type(err).__name__}: {err}"))
        return 2
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def read(n: int) -> None:
        provider_index, scope = items[n]
        sink = StoppableSink(raw_dir, stop.is_set)  # one per scope: its evidence goes back
        try:
            result = collect_scope(calls, providers[provider_index], scope, sink)
        except BaseException as err:  # collect_scope keeps provider errors; this is ours
            result = None
            replies.put(("broken", f"scope {scope.label}: {type(err).__name__}: {err}"))
        if result is None:
            replies.put(("stopped", n))
        else:
            replies.put(("done", n, result, list(sink.evidence.values())))
        if not stop.is_set():
            replies.put(("ready",))

    orphaned = False
    try:
        with scan_heap(providers):  # the SDKs imported first, then left out of the GC's passes
            for _ in range(share):
                replies.put(("ready",))
            ended = False  # _END: no more scopes; still read, for _STOP or the parent's end
            while True:
                try:
                    message = pickle.load(requests)
                except Exception:  # EOF: the parent is done with us, or gone
                    # done: it closes our stdin only once every scope we read was reported
                    # (what is left of our threads is a last "ready"); gone: nobody will read
                    # what the scopes in flight find
                    if not (ended and _all_end(threads, _LAST_WORDS_S)):
                        _stop_reading(stop, calls)
                        orphaned = True
                    break
                if message == _STOP:  # the scopes being read stop at their next write
                    _stop_reading(stop, calls)
                    break
                if message == _END:
                    ended = True
                elif isinstance(message, int):
                    replies.put(("start", message))
                    thread = threading.Thread(target=read, args=(message,), daemon=True)
                    threads.append(thread)
                    thread.start()
            if orphaned:  # do not wait for calls in flight and their retries: end now
                return ORPHANED
            for thread in threads:
                thread.join()
    finally:
        if not orphaned:
            calls.close()
    return 0


def _all_end(threads: Sequence[threading.Thread], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)


def main() -> int:
    """`python -m auditor.workers`: the protocol on the original stdout, prints to stderr."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        code = worker_main(sys.stdin.buffer, protocol)
    finally:
        with contextlib.suppress(OSError):
            protocol.close()
    if code == ORPHANED:  # not the interpreter's exit, which waits for the call threads
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
