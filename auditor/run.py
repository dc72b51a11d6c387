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
from auditor.collect import ProgressListener, collect
from auditor.engine import Engine
from auditor.model import AuditRun, Scope, ToolInfo, utcnow
from auditor.providers.base import Provider
from auditor.providers.guest import import_guest_evidence
from auditor.recording import EvidenceSink
from auditor.verify.stage import VerifyOptions, verify_vms

RESULT_FILE = "result.json"
RAW_DIR = "raw"
REPLAY_META = "replay.json"
_DEPENDENCIES = (
    "boto3",
    "botocore",
    "pydantic",
    "common-expression-language",
    "cryptography",
)


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
) -> AuditRun:
    """Collect, verify, evaluate every VM, and (with `run_dir`) write the run to disk.

    `as_of` is the time evidence is judged at (certificate validity, log windows): now for a
    live scan, the recording time for a replay, so a replay gives the same verdicts later.
    """
    started = utcnow()
    at = as_of or started
    rid = run_id or new_run_id()
    sink = EvidenceSink(run_dir / RAW_DIR if run_dir else None)
    if run_dir is not None:
        sink.save_meta(REPLAY_META, {"recorded_at": at.isoformat(), "run_id": rid})
        for pack in engine.packs:  # user packs travel with the run, named by their hash
            if not pack.ref.path.startswith("builtin:"):
                with contextlib.suppress(OSError):
                    sink.save_rules(f"{pack.ref.sha256}.yaml", Path(pack.ref.path).read_bytes())
        if verify_options is not None and verify_options.maa_jwks is not None:
            sink.save_collateral(
                "maa-jwks.json", json.dumps(verify_options.maa_jwks, indent=2).encode()
            )
    collection = collect(providers, sink, concurrency=concurrency, progress=progress)
    if guest_evidence is not None:
        problems = import_guest_evidence(guest_evidence, collection.vms, sink)
        collection.coverage.gaps.extend(problems)
        collection.coverage.complete = collection.coverage.complete and not problems
    verify_vms(collection.vms, sink.evidence, at, verify_options)
    results = [engine.evaluate(vm) for vm in collection.vms]
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
    )
    if run_dir is not None:
        write_run(run, run_dir)
    return run


def write_run(run: AuditRun, run_dir: Path) -> Path:
    """Write result.json atomically; returns its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RESULT_FILE
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(run.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target


def load_run(path: str | Path) -> AuditRun:
    """Read a stored run: a run directory or its result.json."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULT_FILE
    return AuditRun.model_validate_json(p.read_bytes())
