"""Combine shard runs (`ccaudit scan --shard K/N`) into one run: `ccaudit merge RUN_DIR...`.

Scale-out stays on engines people already run (a Kubernetes Indexed Job, a CI matrix): each
runs one shard and this joins their run directories. The merge re-evaluates nothing: VMs,
verdicts and evidence are taken as each shard recorded them, which is sound only when every
shard judged with the same rule packs and tool, and read disjoint scopes. Anything else is
refused with a MergeError naming the runs. Coverage of every shard is kept, and a shard that
was not given becomes a gap, so a merge of 3 of 4 shards never reads as complete.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from auditor.model import (
    PROVIDER_NAMES,
    AuditRun,
    Coverage,
    Evidence,
    Gap,
    OwnerOverride,
    Scope,
    ScopeCoverage,
    TrustAnchor,
    VMResult,
    nested_json,
)
from auditor.recording import where_key
from auditor.run import (
    NO_MATCHING_VM,
    RAW_DIR,
    REPLAY_META,
    load_run,
    new_run_id,
    write_run,
)
from auditor.runs.shard import ShardError, parse_shard
from auditor.runs.spool import VmOrder, vm_order

#: Written beside result.json: which runs were merged, and files they disagreed on.
MERGE_FILE = "merge.json"
_COPIED = (RAW_DIR, "evidence")
_SHARD_NOTE = re.compile(r" \(shard \d+/\d+\)$")
_PROVIDER_ORDER = PROVIDER_NAMES


class MergeError(Exception):
    """Runs that cannot be merged into one (different rule packs, overlapping scopes, ...)."""


@dataclass
class MergeResult:
    """The merged run, where it was written, and what the inputs disagreed on."""

    run: AuditRun
    run_dir: Path
    conflicts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Input:
    path: Path
    run: AuditRun


def _load(paths: Sequence[Path]) -> list[_Input]:
    from auditor.runs.bundle import MANIFEST_FILE, verify_bundle

    inputs: list[_Input] = []
    for path in paths:
        run_dir = Path(path)
        if not run_dir.is_dir():
            raise MergeError(f"{run_dir}: not a run directory")
        try:
            run = load_run(run_dir)
        except (OSError, ValueError) as err:
            raise MergeError(f"{run_dir}: cannot read the run: {err}") from err
        if (run_dir / MANIFEST_FILE).is_file():
            report = verify_bundle(run_dir)
            failed = [c for c in report.checks if c.name in ("manifest", "files") and not c.ok]
            if failed:
                reasons = "; ".join(c.reason for c in failed)
                raise MergeError(f"{run_dir}: its manifest does not match its files: {reasons}")
        inputs.append(_Input(run_dir, run))
    return inputs


def _scope_key(c: ScopeCoverage) -> tuple[str, str, str]:
    return (c.provider, c.account, c.region or "")


def _check_compatible(inputs: list[_Input]) -> list[tuple[int, int]]:
    """Refuse what cannot be one run: the message names the runs and what differs."""
    first = inputs[0]
    ids: dict[str, Path] = {}
    for item in inputs:
        if item.run.run_id in ids:
            raise MergeError(
                f"run {item.run.run_id} given twice ({ids[item.run.run_id]} and {item.path})"
            )
        ids[item.run.run_id] = item.path

    def packs(run: AuditRun) -> list[str]:
        return [f"{p.name} {p.version} sha256:{p.sha256}" for p in run.rule_packs]

    for item in inputs[1:]:
        if packs(item.run) != packs(first.run):
            raise MergeError(
                "the runs used different rule packs, so their verdicts are not comparable: "
                f"{first.path} used [{'; '.join(packs(first.run))}], "
                f"{item.path} used [{'; '.join(packs(item.run))}]"
            )
        if item.run.tool.version != first.run.tool.version:
            raise MergeError(
                f"the runs were made by different cc-auditor versions: {first.path} by "
                f"{first.run.tool.version}, {item.path} by {item.run.tool.version}"
            )
        for name in ("log_window_days", "maa_issuers"):
            a, b = getattr(first.run.scope, name), getattr(item.run.scope, name)
            if a != b:
                raise MergeError(
                    f"the runs were judged with different settings: scope.{name} is {a!r} in "
                    f"{first.path} and {b!r} in {item.path}"
                )

    owner: dict[tuple[str, str, str], Path] = {}
    vm_owner: dict[VmOrder, Path] = {}
    places: list[tuple[VmOrder, int, int]] = []
    for k, item in enumerate(inputs):
        for cov in item.run.coverage.scopes:
            key = _scope_key(cov)
            if key in owner:
                where = "/".join(k for k in key if k)
                raise MergeError(
                    f"overlapping scopes: {where} was read by both {owner[key]} and {item.path}"
                )
            owner[key] = item.path
        for n, vm in enumerate(item.run.vms):
            vkey = vm_order(vm)
            if vkey in vm_owner:
                raise MergeError(
                    f"overlapping scopes: VM {'/'.join(vkey)} is in both {vm_owner[vkey]} and "
                    f"{item.path}"
                )
            vm_owner[vkey] = item.path
            places.append((vkey, k, n))
    return [(k, n) for _, k, n in sorted(places)]


def _shard_gaps(inputs: list[_Input]) -> list[Gap]:
    """A gap for each shard of N that was not given; refuse mixed N or a shard given twice."""
    shards: dict[int, Path] = {}
    count: int | None = None
    for item in inputs:
        label = item.run.scope.shard
        if label is None:
            continue
        try:
            shard = parse_shard(label)
        except ShardError as err:
            raise MergeError(f"{item.path}: {err}") from err
        if count is not None and shard.count != count:
            raise MergeError(
                f"the runs are shards of different splits: {item.path} is {label}, "
                f"others are of {count}"
            )
        count = shard.count
        if shard.index in shards:
            raise MergeError(
                f"overlapping scopes: shard {label} given twice ({shards[shard.index]} and "
                f"{item.path})"
            )
        shards[shard.index] = item.path
    if count is None:
        return []
    providers = sorted({p for i in inputs for p in i.run.scope.providers})
    return [
        Gap(
            provider=",".join(providers) or "?",
            call="merge",
            code="MissingShard",
            message=f"shard {k}/{count} was not merged: the scopes it owns were not read",
            affects="scope",
        )
        for k in range(1, count + 1)
        if k not in shards
    ]


def _merged_gaps(inputs: list[_Input]) -> list[Gap]:
    """Every gap of every run; a guest file matching no VM is kept only if no shard matched
    it (a shard only sees its own VMs, so another shard may have attached the file)."""
    out: list[Gap] = []
    unmatched: dict[str, list[Gap]] = {}
    sharded = [i for i in inputs if i.run.scope.shard is not None]
    for item in inputs:
        for gap in item.run.coverage.gaps:
            if (
                item.run.scope.shard is not None
                and gap.provider == "guest"
                and gap.code == NO_MATCHING_VM
            ):
                unmatched.setdefault(gap.resource or gap.message, []).append(gap)
            else:
                out.append(gap)
    for gaps in unmatched.values():
        if len(gaps) == len(sharded):
            first = gaps[0]
            out.append(first.model_copy(update={"message": _SHARD_NOTE.sub("", first.message)}))
    return out


def _merged_scope(inputs: list[_Input]) -> Scope:
    first = inputs[0].run.scope
    providers = {p for i in inputs for p in i.run.scope.providers}
    ordered = [p for p in _PROVIDER_ORDER if p in providers]
    ordered += sorted(providers - set(_PROVIDER_ORDER))
    return first.model_copy(
        update={
            "providers": ordered,
            "accounts": sorted({a for i in inputs for a in i.run.scope.accounts}),
            "regions": sorted({r for i in inputs for r in i.run.scope.regions}),
            "shard": None,
        }
    )


def _copy_tree(src: Path, dst: Path, rel_root: str, conflicts: list[str]) -> None:
    """Copy files under src into dst; a file already there with other bytes keeps the first
    copy and is listed as a conflict (e.g. an account-level response read by every shard)."""
    for path in sorted(src.rglob("*")):
        if path.is_symlink():
            raise MergeError(f"{path}: symbolic link in a run directory; refusing to copy it")
        if not path.is_file():
            continue
        rel = path.relative_to(src)
        target = dst / rel
        if target.exists():
            if target.read_bytes() != path.read_bytes():
                conflicts.append(f"{rel_root}/{rel.as_posix()}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def _merged_overrides(inputs: Sequence[_Input]) -> list[OwnerOverride]:
    """One entry per overridden veto, with the VMs it changed in every shard."""
    merged: dict[str, OwnerOverride] = {}
    for item in inputs:
        for override in item.run.owner_overrides:
            seen = merged.get(override.rule_id)
            merged[override.rule_id] = (
                override
                if seen is None
                else seen.model_copy(update={"vms": seen.vms + override.vms})
            )
    return [merged[k] for k in sorted(merged)]


def _merged_anchors(inputs: Sequence[_Input]) -> list[TrustAnchor]:
    """Every shard's anchors, once each (by store and fingerprint), their uses added up."""
    merged: dict[tuple[str, str], TrustAnchor] = {}
    for item in inputs:
        for anchor in item.run.trust_anchors:
            key = (anchor.store, anchor.sha256)
            seen = merged.get(key)
            merged[key] = (
                anchor
                if seen is None
                else seen.model_copy(update={"used_by": seen.used_by + anchor.used_by})
            )
    return list(merged.values())


def merge_runs(
    run_dirs: Sequence[str | Path],
    output: str | Path,
    signing_key: str | Path | None = None,
    run_id: str | None = None,
) -> MergeResult:
    """Merge run directories into `output` (new or empty): result.json, raw/ and evidence/ of
    every run, merge.json, and a new manifest (signed with `signing_key` if given).

    Raises MergeError when the runs cannot be one run; nothing is written then.
    """
    if not run_dirs:
        raise MergeError("no run directories to merge")
    inputs = _load([Path(p) for p in run_dirs])
    places = _check_compatible(inputs)  # where each VM is, in the merged run's order
    out_dir = Path(output)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MergeError(f"{out_dir} exists and is not empty; choose a new --output directory")
    missing = _shard_gaps(inputs)
    gaps = _merged_gaps(inputs) + missing

    scopes = sorted(
        (c for i in inputs for c in i.run.coverage.scopes),
        key=lambda c: (c.provider, c.account, c.region or ""),
    )
    first = inputs[0].run
    run = AuditRun(
        tool=first.tool,
        run_id=run_id or new_run_id(),
        started_at=min(i.run.started_at for i in inputs),
        finished_at=max(i.run.finished_at for i in inputs),
        scope=_merged_scope(inputs),
        rule_packs=first.rule_packs,
        coverage=Coverage(
            complete=not gaps,
            scopes=scopes,
            gaps=gaps,
            interrupted=any(i.run.coverage.interrupted for i in inputs),
        ),
        vms=[],
        evidence={},
        owner_overrides=_merged_overrides(inputs),
        trust_anchors=_merged_anchors(inputs),
        judged_at=first.judged_at,
    ).model_copy(  # each shard's VMs and evidence read from its result.json as it is written
        update={
            "vms": _MergedVMs([i.run.vms for i in inputs], places),
            "evidence": _MergedEvidence([i.run.evidence for i in inputs]),
        }
    )

    conflicts: list[str] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in inputs:
        for sub in _COPIED:
            if (item.path / sub).is_dir():
                _copy_tree(item.path / sub, out_dir / sub, sub, conflicts)
    raw = out_dir / RAW_DIR
    if raw.is_dir():  # when the responses were recorded: the earliest shard's time
        recorded = _earliest_recorded(inputs)
        meta = {"recorded_at": recorded, "run_id": run.run_id} if recorded else None
        if meta is not None:
            (raw / REPLAY_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        conflicts = [c for c in conflicts if c != f"{RAW_DIR}/{REPLAY_META}"]
    listed = sorted(set(conflicts))
    record = {
        "run_id": run.run_id,
        "merged_from": [
            {
                "run_id": i.run.run_id,
                "shard": i.run.scope.shard,
                "path": str(i.path),
                "manifest_sha256": _manifest_sha(i.path),
            }
            for i in inputs
        ],
        "conflicts": listed,
    }
    (out_dir / MERGE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    write_run(run, out_dir)
    run = load_run(out_dir)  # the merged run as written, read from it when asked
    from auditor.runs.bundle import BundleError, write_manifest

    try:
        write_manifest(out_dir, run, signing_key=Path(signing_key) if signing_key else None)
    except (BundleError, OSError, ValueError) as err:
        raise MergeError(f"cannot seal {out_dir}: {err}") from err
    return MergeResult(run=run, run_dir=out_dir, conflicts=listed)


class _MergedVMs(Sequence[VMResult]):
    """The shards' VMs in the merged run's order, each read from its shard when asked; as
    `result.json` entries (`chunks`), the very bytes the shard holds when it is stored."""

    def __init__(self, parts: list[Sequence[VMResult]], places: list[tuple[int, int]]) -> None:
        self._parts = parts
        self._places = places

    def __len__(self) -> int:
        return len(self._places)

    @overload
    def __getitem__(self, index: int) -> VMResult: ...

    @overload
    def __getitem__(self, index: slice) -> list[VMResult]: ...

    def __getitem__(self, index: int | slice) -> VMResult | list[VMResult]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        k, n = self._places[index]
        return self._parts[k][n]

    def chunks(self) -> Iterator[bytes]:
        for k, n in self._places:
            yield _entry(self._parts[k], n)


class _MergedEvidence(Mapping[str, Evidence]):
    """Every shard's evidence by SHA-256, in key order, each item read when asked. Of copies
    in several shards the first by where it was read is kept: the choice one unsharded run
    makes (recording.keep_evidence)."""

    def __init__(self, parts: list[Mapping[str, Evidence]]) -> None:
        self._parts = parts
        chosen: dict[str, int] = {}
        wheres: dict[str, str] = {}  # of the copy kept, once a second copy was seen
        for k, part in enumerate(parts):
            for key in part:
                kept = chosen.get(key)
                if kept is None:
                    chosen[key] = k
                    continue
                if key not in wheres:
                    wheres[key] = where_key(parts[kept][key])
                where = where_key(part[key])
                if where < wheres[key]:
                    chosen[key], wheres[key] = k, where
        self._chosen = dict(sorted(chosen.items()))

    def __len__(self) -> int:
        return len(self._chosen)

    def __iter__(self) -> Iterator[str]:
        return iter(self._chosen)

    def __getitem__(self, key: str) -> Evidence:
        return self._parts[self._chosen[key]][key]

    def chunks(self) -> Iterator[tuple[str, bytes]]:
        for key, k in self._chosen.items():
            yield key, _entry(self._parts[k], key)


def _entry(part: Any, at: Any) -> bytes:
    """An entry of a shard's VMs or evidence as result.json holds it (read, when stored)."""
    chunk = getattr(part, "chunk", None)
    return chunk(at) if chunk is not None else nested_json(part[at])


def _earliest_recorded(inputs: list[_Input]) -> str | None:
    times: list[str] = []
    for item in inputs:
        meta = item.path / RAW_DIR / REPLAY_META
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            times.append(str(data["recorded_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return min(times) if times else None


def _manifest_sha(run_dir: Path) -> str | None:
    from auditor.runs.bundle import MANIFEST_FILE, manifest_sha256

    if not (run_dir / MANIFEST_FILE).is_file():
        return None
    return manifest_sha256(run_dir)


__all__ = ["MERGE_FILE", "MergeError", "MergeResult", "merge_runs"]
