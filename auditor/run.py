"""One audit, end to end: collect -> evaluate -> AuditRun, and the run directory on disk.

A run directory holds `raw/` (every API response, in the replay layout) and `result.json` (the
AuditRun). `load_run` reads it back, so any report can be re-rendered from a stored run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import platform
import queue
import secrets
import shutil
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from auditor._version import __version__
from auditor.collect import ProgressListener, collect
from auditor.engine import Engine, evaluate_all
from auditor.heap import scan_heap
from auditor.model import (
    AuditRun,
    Evidence,
    Gap,
    OwnerOverride,
    ResultSpans,
    Scope,
    ToolInfo,
    VMResult,
    remember_digest,
    utcnow,
    write_result,
)
from auditor.providers.base import Provider, RateLimits, ScopeResult
from auditor.providers.guest import import_guest_evidence
from auditor.recording import SinkClosed, StoppableSink
from auditor.runs.shard import Shard
from auditor.runs.spool import (
    SPOOL_DIR,
    EvidenceSpool,
    ResultSpool,
    StoredEvidence,
    StoredVMs,
    read_stored,
    vm_order,
)
from auditor.verify.stage import VerifyOptions, verified_items, verify_vms
from auditor.verify.trust_inputs import anchor_facts, run_trust_anchors, trust_anchors_of

RESULT_FILE = "result.json"
RAW_DIR = "raw"
REPLAY_META = "replay.json"
#: The nonce store as the scan left it, under evidence/collateral/ (read by reverify).
NONCE_COLLATERAL = "nonces.json"
#: Present while a scan writes its run directory; removed once result.json is in place.
INCOMPLETE_MARKER = "INCOMPLETE"
#: The guest-evidence gap code for a file that names no scanned VM.
NO_MATCHING_VM = "NoMatchingVM"
_DEPENDENCIES = (
    "boto3",
    "botocore",
    "pydantic",
    "common-expression-language",
    "cryptography",
)


class ScanInterrupted(KeyboardInterrupt):
    """The scan was interrupted (SIGINT/SIGTERM); `run` is the partial run that was kept.

    A KeyboardInterrupt, so that code not expecting it still stops. `run.coverage` says
    `interrupted: true`, `complete: false`, and names every scope not read as a gap.
    """

    def __init__(self, run: AuditRun, run_dir: Path | None) -> None:
        super().__init__(f"scan interrupted; partial run {run.run_id}")
        self.run = run
        self.run_dir = run_dir


class RunIncompleteError(ValueError):
    """A run directory whose scan never finished writing it (killed before result.json)."""


def new_run_id() -> str:
    """Sortable and unique: UTC time plus randomness."""
    return utcnow().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def tool_info() -> ToolInfo:
    deps: dict[str, str] = {}
    for name in _DEPENDENCIES:
        try:
            deps[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ToolInfo(version=__version__, python=platform.python_version(), dependencies=deps)


def run_audit(
    providers: Sequence[Provider],
    engine: Engine,
    scope: Scope,
    run_dir: Path | None = None,
    concurrency: int = 8,
    progress: ProgressListener | None = None,
    run_id: str | None = None,
    as_of: datetime | None = None,
    guest_evidence: Path | None = None,
    verify_options: VerifyOptions | None = None,
    shard: Shard | None = None,
    processes: int | None = None,
    rate_limits: RateLimits = None,
) -> AuditRun:
    """Collect, verify, evaluate every VM, and (with `run_dir`) write the run to disk.

    `as_of` is the time evidence is judged at (certificate validity, log windows): now for a
    live scan, the recording time for a replay, so a replay gives the same verdicts later.
    `shard` reads only that shard's scopes (auditor.runs.shard). `processes`: collection worker
    processes (auditor.workers); None chooses by the number of scopes and cores. `rate_limits`:
    what each scope is paced by (None: the documented limits; ratelimits.limits_with).

    Interrupted (KeyboardInterrupt, which the CLI also raises for SIGTERM) while collecting,
    the VMs of the scopes already read are evaluated, the run is written with
    `coverage.interrupted` and the unread scopes as gaps, and `ScanInterrupted` is raised.
    Until result.json is written the run directory holds an INCOMPLETE marker, so a scan
    killed outright leaves a directory that says so (`load_run` refuses it).
    """
    started = utcnow()
    at = as_of or started
    rid = run_id or new_run_id()
    sink = StoppableSink(run_dir / RAW_DIR if run_dir else None)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / INCOMPLETE_MARKER).write_text(
            f"run {rid}: the scan did not finish writing this directory\n", encoding="utf-8"
        )
        sink.save_meta(REPLAY_META, {"recorded_at": at.isoformat(), "run_id": rid})
        for pack in engine.packs:  # user packs travel with the run, named by their hash
            if not pack.ref.path.startswith("builtin:"):
                with contextlib.suppress(OSError):
                    sink.save_rules(f"{pack.ref.sha256}.yaml", Path(pack.ref.path).read_bytes())
        if verify_options is not None and verify_options.maa_jwks is not None:
            sink.save_collateral(
                "maa-jwks.json", json.dumps(verify_options.maa_jwks, indent=2).encode()
            )
    # what exists left out of the collector's passes; the SDKs too, if scopes are read here
    with scan_heap():
        # With a run directory, each scope's results and evidence go to disk as it finishes;
        # guest evidence files are matched against the whole fleet first: such a scan holds it.
        spool = None
        if run_dir is not None and guest_evidence is None:
            spool = _ScopeSpool(run_dir, sink, engine, at, verify_options)
        try:
            collection = collect(
                providers,
                sink,
                concurrency=concurrency,
                progress=progress,
                shard=shard,
                processes=processes,
                limits=rate_limits,
                on_scope=spool.submit if spool is not None else None,
            )
        finally:
            if spool is not None:
                spool.close()  # every scope that finished is verified, evaluated and spooled
        if guest_evidence is not None and not collection.interrupted:
            problems = import_guest_evidence(guest_evidence, collection.vms, sink)
            if shard is not None:
                problems = [_in_shard_words(g, shard) for g in problems]
            collection.coverage.gaps.extend(problems)
            collection.coverage.complete = collection.coverage.complete and not problems
        if spool is None:
            verify_vms(collection.vms, sink.evidence, at, verify_options)
            results: Sequence[VMResult] = evaluate_all(engine, collection.vms)
            evidence: Mapping[str, Evidence] = dict(sorted(sink.evidence.items()))
            overrides = _overrides_used(engine, _count_overrides(results, Counter()))
            anchors = run_trust_anchors(collection.vms, verify_options)
        else:
            results, evidence = spool.stored()
            overrides = _overrides_used(engine, spool.overrides)
            anchors = trust_anchors_of(spool.anchor_facts, verify_options)
        if run_dir is not None and verify_options is not None:
            _save_trust_inputs(sink, verify_options)  # the nonces as verification left them
        if not scope.accounts:
            accounts = {s.account for s in collection.coverage.scopes}
            scope = scope.model_copy(update={"accounts": sorted(accounts)})
        run = AuditRun(
            tool=tool_info(),
            run_id=rid,
            started_at=started,
            finished_at=utcnow(),
            scope=scope,
            rule_packs=[p.ref for p in engine.packs],
            coverage=collection.coverage,
            vms=[],
            evidence={},
            owner_overrides=overrides,
            trust_anchors=anchors,
            judged_at=at,
        ).model_copy(update={"vms": results, "evidence": evidence})  # not validated again
        if run_dir is not None:
            run = _write_run(run, run_dir, read_back=spool is not None)
            if spool is not None:
                spool.remove()
        if collection.interrupted:
            raise ScanInterrupted(run, run_dir)
        return run


class _ScopeSpool:
    """A scan with a run directory: each scope, as it finishes, is verified and evaluated in
    a thread of its own, and its results and evidence go to the spool (auditor.runs.spool), so the
    scan holds only the scopes in flight. What is spooled is what verifying and evaluating the
    whole fleet at once gives (tests/test_spooled_run.py), in the same order."""

    def __init__(
        self,
        run_dir: Path,
        sink: StoppableSink,
        engine: Engine,
        at: datetime,
        options: VerifyOptions | None,
    ) -> None:
        self.folder = run_dir / SPOOL_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sink = sink
        self.engine = engine
        self.at = at
        self.options = options
        self.evidence = EvidenceSpool(self.folder / "evidence.bin")
        self.results = ResultSpool(self.folder / "vms.bin")
        sink.spool_to(self.evidence)
        self.overrides: Counter[str] = Counter()
        self.anchor_facts: list[dict[str, Any]] = []
        self._queue: queue.Queue[ScopeResult | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="spool-scopes", daemon=True)
        self._thread.start()

    def submit(self, result: ScopeResult) -> None:
        if self._error is not None:  # the collection stops here; close() says why
            raise SinkClosed("finishing an earlier scope failed")
        self._queue.put(result)

    def close(self) -> None:
        """Wait for every scope submitted; a failure while finishing one is raised here (in
        place of the SinkClosed that stopped the collection), and the spool is removed."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            self.remove()
            raise self._error from None

    def _work(self) -> None:
        while (result := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._finish(result)
                except BaseException as err:  # raised by close(), in the scan's thread
                    self._error = err
                    # a bug in a rule or verifier: the scopes still being read stop at their
                    # next write, so the scan does not make the rest of its calls for nothing
                    self.sink.close()

    def _finish(self, result: ScopeResult) -> None:
        vms = sorted(result.vms, key=vm_order)
        looked = _LookedUp(self.sink)
        verify_vms(vms, looked, self.at, self.options)
        # in this process: forking evaluation workers while collecting threads run could copy
        # a lock one of them holds; this thread overlaps collection anyway
        results = evaluate_all(self.engine, vms, workers=1)
        _count_overrides(results, self.overrides)
        self.anchor_facts.extend(f for vm in vms if (f := anchor_facts(vm)) is not None)
        scope = result.scope
        self.results.add((scope.provider, scope.account, scope.region or ""), results)
        verifier = {sha: vm_order(vm) for vm in vms for sha in verified_items(vm, looked)}
        referenced = (sha for vm in vms for shas in vm.evidence.values() for sha in shas)
        for sha in dict.fromkeys(referenced):
            self.sink.spill(sha, looked.seen.get(sha), verifier.get(sha))

    def stored(self) -> tuple[StoredVMs, StoredEvidence]:
        """Every result and evidence item, from the spool files (the rest of memory first)."""
        for sha in list(self.sink.evidence):
            self.sink.spill(sha, None, None)
        return self.results.stored(), self.evidence.stored()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class _LookedUp(Mapping[str, Evidence]):
    """The sink's evidence as one scope's verification sees it: each item read once (from
    memory or the spool), and which object that was, so its verification can be spilled."""

    def __init__(self, sink: StoppableSink) -> None:
        self.sink = sink
        self.seen: dict[str, Evidence] = {}

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self.seen:
            found = self.sink.lookup(key)
            if found is None:
                return default
            self.seen[key] = found
        return self.seen[key]

    def __getitem__(self, key: str) -> Evidence:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(self.seen)

    def __len__(self) -> int:
        return len(self.seen)


def _count_overrides(results: Sequence[VMResult], counts: Counter[str]) -> Counter[str]:
    for vm in results:
        counts.update(vm.overrides)
    return counts


def _overrides_used(engine: Engine, counts: Mapping[str, int]) -> list[OwnerOverride]:
    """The owner's overrides of built-in vetoes, each with the number of VMs it changed."""
    return [
        override.model_copy(update={"vms": counts.get(rule_id, 0)})
        for rule_id, override in sorted(engine.overrides.items())
    ]


def _in_shard_words(gap: Gap, shard: Shard) -> Gap:
    """A guest file matching no VM of *this shard* may match one of another: say so; `ccaudit
    merge` keeps the gap only if no shard matched the file."""
    if gap.code != NO_MATCHING_VM:
        return gap
    return gap.model_copy(update={"message": f"{gap.message} (shard {shard.label})"})


def _save_trust_inputs(sink: StoppableSink, options: VerifyOptions) -> None:
    """What the owner trusted and the nonces as the scan left them, for an offline reverify."""
    for name, data in sorted(options.collateral.items()):
        sink.save_collateral(name, data)
    store = options.nonce_store
    path = getattr(store, "path", None)
    if isinstance(path, Path) and path.is_file():
        with contextlib.suppress(OSError):
            sink.save_collateral(NONCE_COLLATERAL, path.read_bytes())


def write_run(run: AuditRun, run_dir: Path) -> Path:
    """Write result.json atomically; returns its path."""
    _write_run(run, run_dir, read_back=False)
    return run_dir / RESULT_FILE


def _write_run(run: AuditRun, run_dir: Path, read_back: bool) -> AuditRun:
    """Write result.json atomically. `read_back`: the run returned reads its VMs and evidence
    from the file written (auditor.runs.spool), not from where they were before."""
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RESULT_FILE
    tmp = target.with_suffix(".json.tmp")
    spans: ResultSpans = ([], {})
    with tmp.open("wb") as out:  # a piece at a time: never the whole document in memory
        digest = write_result(run, out, spans if read_back else None)
    tmp.replace(target)
    marker = run_dir / INCOMPLETE_MARKER
    if marker.exists():
        marker.unlink()
    if not read_back:
        return run
    vms, evidence = spans
    keys = list(evidence)
    run = run.model_copy(
        update={
            "vms": StoredVMs(target, vms, getattr(run.vms, "in_run_order", False)),
            "evidence": StoredEvidence(target, keys, [evidence[k] for k in keys]),
        }
    )
    remember_digest(run, digest)
    return run


def run_problem(path: Path | str, err: BaseException) -> str:
    """One line for a run that cannot be read: the file and its first problem, never a dump."""
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "document"
        return f"{path}: not a usable result.json: {where}: {first['msg']}"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"{path}: not a usable run: {text}"


def load_run(path: str | Path) -> AuditRun:
    """Read a stored run: a run directory or its result.json.

    Its VMs and evidence are read from the file when asked (auditor.runs.spool.read_stored:
    every entry validated once, one at a time), so comparing with or reporting on a large
    run does not hold it whole; a file not laid out as cc-auditor writes it is read whole."""
    p = Path(path)
    if p.is_dir():
        if not (p / RESULT_FILE).is_file() and (p / INCOMPLETE_MARKER).is_file():
            raise RunIncompleteError(
                f"{p}: the scan that wrote this run directory never finished (no {RESULT_FILE}; "
                f"{INCOMPLETE_MARKER} marker present)"
            )
        p = p / RESULT_FILE
    stored = read_stored(p)
    if stored is not None:
        return stored
    return AuditRun.model_validate_json(p.read_bytes())
