"""One audit, end to end: collect -> evaluate -> AuditRun, and the run directory on disk.

A run directory holds `raw/` (every API response, in the replay layout) and `result.json` (the
AuditRun). `load_run` reads it back, so any report can be re-rendered from a stored run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import platform
import secrets
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from auditor._version import __version__
from auditor.collect import ProgressListener, StoppableSink, collect
from auditor.engine import Engine, evaluate_all
from auditor.model import (
    AuditRun,
    Gap,
    OwnerOverride,
    Scope,
    ToolInfo,
    VMResult,
    utcnow,
    write_result,
)
from auditor.providers.base import Provider, RateLimits
from auditor.providers.guest import import_guest_evidence
from auditor.shard import Shard
from auditor.verify.stage import VerifyOptions, verify_vms
from auditor.verify.trust_inputs import run_trust_anchors

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
    `shard` reads only that shard's scopes (auditor.shard). `processes`: collection worker
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
    collection = collect(
        providers,
        sink,
        concurrency=concurrency,
        progress=progress,
        shard=shard,
        processes=processes,
        limits=rate_limits,
    )
    if guest_evidence is not None and not collection.interrupted:
        problems = import_guest_evidence(guest_evidence, collection.vms, sink)
        if shard is not None:
            problems = [_in_shard_words(g, shard) for g in problems]
        collection.coverage.gaps.extend(problems)
        collection.coverage.complete = collection.coverage.complete and not problems
    verify_vms(collection.vms, sink.evidence, at, verify_options)
    if run_dir is not None and verify_options is not None:
        _save_trust_inputs(sink, verify_options)
    results = evaluate_all(engine, collection.vms)
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
        vms=results,
        evidence=dict(sorted(sink.evidence.items())),
        owner_overrides=_overrides_used(engine, results),
        trust_anchors=run_trust_anchors(collection.vms, verify_options),
        judged_at=at,
    )
    if run_dir is not None:
        write_run(run, run_dir)
    if collection.interrupted:
        raise ScanInterrupted(run, run_dir)
    return run


def _overrides_used(engine: Engine, results: Sequence[VMResult]) -> list[OwnerOverride]:
    """The owner's overrides of built-in vetoes, each with the number of VMs it changed."""
    counts: dict[str, int] = {}
    for vm in results:
        for rule_id in vm.overrides:
            counts[rule_id] = counts.get(rule_id, 0) + 1
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
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RESULT_FILE
    tmp = target.with_suffix(".json.tmp")
    with tmp.open("wb") as out:  # a piece at a time: never the whole document in memory
        write_result(run, out)
    tmp.replace(target)
    marker = run_dir / INCOMPLETE_MARKER
    if marker.exists():
        marker.unlink()
    return target


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
    """Read a stored run: a run directory or its result.json."""
    p = Path(path)
    if p.is_dir():
        if not (p / RESULT_FILE).is_file() and (p / INCOMPLETE_MARKER).is_file():
            raise RunIncompleteError(
                f"{p}: the scan that wrote this run directory never finished (no {RESULT_FILE}; "
                f"{INCOMPLETE_MARKER} marker present)"
            )
        p = p / RESULT_FILE
    return AuditRun.model_validate_json(p.read_bytes())
