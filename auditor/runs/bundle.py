"""A run directory as a tamper-evident evidence bundle: manifest, signature, chain.

An auditor reading a report must be able to show, later and without trusting us, that the
evidence behind it is the evidence that was collected (reference gdpr.md §3.2-3.4). So a sealed
run directory carries:

* `manifest.json`: the SHA-256 and size of every file in the run (`raw/` API responses,
  `evidence/` guest files and collateral, `result.json`, reports...), the tool, dependency and
  rule-pack versions, the pinned trust anchors and the scope, as canonical JSON so its own
  SHA-256 is well defined;
* `manifest.sig` (optional): a detached Ed25519 signature over the exact manifest bytes, with
  the public key it claims, so the bundle can be checked against a key the auditor trusts;
* a hash-chain link (`previous`): the run id and manifest SHA-256 of the run before it, as
  AWS CloudTrail digests do, so a deleted or rewritten earlier run is detectable.

`verify_bundle` checks all three; `auditor.runs.reverify` re-runs verification and evaluation
offline from the bundle's own `raw/` and `evidence/` and lists every difference with the stored
`result.json`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from auditor.model import AuditRun, canonical_json
from auditor.run import RESULT_FILE
from auditor.verify.anchors import TrustStore, gcp_vtpm_store

__all__ = [
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "BundleError",
    "BundleReport",
    "Check",
    "FileProblem",
    "Manifest",
    "create_keypair",
    "find_previous",
    "key_fingerprint",
    "manifest_sha256",
    "verify_bundle",
    "write_manifest",
]

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
MANIFEST_FORMAT = "cc-auditor-manifest"
MANIFEST_VERSION = 1
SIGNATURE_ALG = "Ed25519"
#: Files a manifest cannot list: itself and the signature over it.
_SEAL_FILES = frozenset({MANIFEST_FILE, SIGNATURE_FILE})
_CHUNK = 1024 * 1024
#: Where reverify looks for the run's guest evidence and for copies of custom rule packs.
GUEST_DIR = "evidence/guest"
RULES_DIR = "evidence/rules"
COLLATERAL_DIR = "evidence/collateral"

#: Every pinned trust store a run may have verified against. Recorded in the manifest so a
#: later reader knows which roots the verdicts rested on. Add new stores here.
TRUST_STORES: tuple[Callable[[], TrustStore], ...] = (gcp_vtpm_store,)


class BundleError(Exception):
    """A bundle cannot be written or read: a symlink, a bad key, a missing run, ..."""


# --------------------------------------------------------------------------- manifest model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ManifestFile(_Strict):
    """One file of the bundle: a run-relative POSIX path, its SHA-256 and size in bytes."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class ManifestTool(_Strict):
    name: str
    version: str
    python: str
    dependencies: dict[str, str] = Field(default_factory=dict)


class ManifestRulePack(_Strict):
    name: str
    version: str
    sha256: str


class PreviousLink(_Strict):
    """The hash-chain link: which run came before, and the SHA-256 of its manifest.json."""

    run_id: str
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(_Strict):
    """manifest.json, version 1. Written as canonical JSON (sorted keys, no whitespace)."""

    format: str
    version: int
    run_id: str
    created: datetime
    files: list[ManifestFile]
    tool: ManifestTool
    rule_packs: list[ManifestRulePack]
    trust_anchors: dict[str, dict[str, str]]
    scope: dict[str, Any]
    previous: PreviousLink | None = None

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))


class _Signature(_Strict):
    """manifest.sig: a detached signature over the exact manifest.json bytes."""

    alg: str
    public_key: str
    public_key_sha256: str
    signature: str


# --------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def manifest_sha256(run_dir: Path) -> str:
    """SHA-256 of a run's manifest.json bytes: what the next run's `previous` link records."""
    return hashlib.sha256((run_dir / MANIFEST_FILE).read_bytes()).hexdigest()


def safe_relpath(rel: str) -> bool:
    """A listed path must stay inside the run dir, so a forged manifest cannot point outside."""
    if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        return False
    parts = PurePosixPath(rel).parts
    return all(p not in ("", ".", "..") for p in parts) and "/".join(parts) == rel


def _scan_files(run_dir: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Every regular file under run_dir (relative POSIX path -> path) and what is not one.

    Symlinks are never followed: a link could put a file from outside the run into the bundle
    or change what a listed path means after sealing. They, and sockets or FIFOs, come back
    as problems for the caller to refuse or report.
    """
    files: dict[str, Path] = {}
    problems: list[tuple[str, str]] = []
    stack = [(run_dir, "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = f"{prefix}{entry.name}"
                if not prefix and entry.name in _SEAL_FILES:
                    continue
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    problems.append((rel, "is a symlink (a bundle holds regular files only)"))
                elif stat.S_ISDIR(mode):
                    stack.append((Path(entry.path), rel + "/"))
                elif stat.S_ISREG(mode):
                    files[rel] = Path(entry.path)
                else:
                    problems.append((rel, "not a regular file"))
    return files, problems


def _trust_anchors(run: AuditRun | None = None) -> dict[str, dict[str, str]]:
    """{store: {subject or key id: SHA-256}}: every anchor the run's verdicts may rest on.

    The run's own list (result.json `trust_anchors`: pinned AMD, Intel, Google and Microsoft
    roots, and the owner's MAA keys, endorsement root, key-broker keys, demo anchor) when it
    has one; the pinned stores otherwise (runs written before it was recorded).
    """
    if run is not None and run.trust_anchors:
        out: dict[str, dict[str, str]] = {}
        for anchor in run.trust_anchors:
            label = anchor.subject + (f" [{anchor.role}]" if anchor.role else "")
            out.setdefault(anchor.store, {})[label] = anchor.sha256
        return out
    # Some pinned roots have subject attributes longer than X.520 allows; cryptography warns
    # when printing them, which says nothing about the bundle.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {store.name: store.fingerprints() for store in (f() for f in TRUST_STORES)}


def pinned_fingerprints(anchors: Mapping[str, Mapping[str, str]]) -> set[str]:
    return {fp for store in anchors.values() for fp in store.values()}


def read_manifest(run_dir: Path) -> Manifest:
    try:
        data = (run_dir / MANIFEST_FILE).read_bytes()
    except OSError as err:
        raise BundleError(f"{run_dir / MANIFEST_FILE}: {err.strerror or err}") from err
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "manifest"
        raise BundleError(f"{MANIFEST_FILE} does not parse: {where}: {first['msg']}") from err
    if manifest.format != MANIFEST_FORMAT or manifest.version != MANIFEST_VERSION:
        raise BundleError(
            f"{MANIFEST_FILE} is {manifest.format!r} version {manifest.version}, "
            f"this tool reads {MANIFEST_FORMAT!r} version {MANIFEST_VERSION}"
        )
    seen: set[str] = set()
    for entry in manifest.files:
        if not safe_relpath(entry.path) or entry.path in _SEAL_FILES:
            raise BundleError(f"{MANIFEST_FILE} lists an unsafe path: {entry.path!r}")
        if entry.path in seen:
            raise BundleError(f"{MANIFEST_FILE} lists {entry.path} twice")
        seen.add(entry.path)
    return manifest


def _same_providers(a: Iterable[Any], b: Iterable[Any]) -> bool:
    return sorted(str(x) for x in a) == sorted(str(x) for x in b)


def find_previous(run_dir: Path, run: AuditRun) -> Path | None:
    """The default previous run: the newest earlier sealed run beside `run_dir`.

    Candidates are the other directories of `run_dir.parent` that hold a manifest.json which
    parses and has the same `scope.providers` (in any order); "newest earlier" orders them by
    (manifest `created`, run id) and keeps those before this run's (finished_at, run id), so
    resealing an old run never links it to a later one. A store with an explicit `latest`
    pointer will replace this directory scan.
    """
    here = run_dir.resolve()
    mine = (run.finished_at, run.run_id)
    best: tuple[tuple[datetime, str], Path] | None = None
    try:
        siblings = list(here.parent.iterdir())
    except OSError:
        return None
    for candidate in siblings:
        if candidate == here or candidate.is_symlink() or not candidate.is_dir():
            continue
        if not (candidate / MANIFEST_FILE).is_file():
            continue
        try:
            other = read_manifest(candidate)
        except BundleError:
            continue
        if other.run_id == run.run_id:
            continue
        if not _same_providers(other.scope.get("providers") or [], run.scope.providers):
            continue
        order = (other.created, other.run_id)
        try:
            if order >= mine or (best is not None and order <= best[0]):
                continue
        except TypeError:  # naive vs aware datetimes in a hand-made manifest
            continue
        best = (order, candidate)
    return best[1] if best else None


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as err:
        raise BundleError(f"signing key {path}: {err.strerror or err}") from err
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise BundleError(f"signing key {path}: not an unencrypted PEM private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"signing key {path}: not an Ed25519 key")
    return key


def _load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as err:
        raise BundleError(f"public key {path}: {err.strerror or err}") from err
    except (ValueError, UnsupportedAlgorithm) as err:
        raise BundleError(f"public key {path}: not a PEM public key: {err}") from err
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"public key {path}: not an Ed25519 key")
    return key


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key: how a report names the key that signed it."""
    return hashlib.sha256(_raw_public(key)).hexdigest()


def _write_atomic(target: Path, data: bytes) -> None:
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


# --------------------------------------------------------------------------- writing


def write_manifest(
    run_dir: Path,
    run: AuditRun,
    signing_key: Path | None = None,
    previous: Path | None = None,
) -> Path:
    """Seal `run_dir`: write manifest.json (and manifest.sig with `signing_key`); return its path.

    Every file in the run directory is listed, not a chosen subset, so nothing can be added or
    removed later without `verify_bundle` naming it. Symlinks and special files are refused
    (BundleError) rather than skipped: skipping would leave unsealed content in the bundle.

    `previous` is the run directory this run follows; without it the newest earlier sealed run
    beside this one with the same providers is used (`find_previous`), and none means this run
    starts a chain. A stale manifest.sig is removed when resealing without a key, because it
    would no longer match. Resealing a run that a later run already links to breaks that link.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BundleError(f"run directory not found: {run_dir}")
    _check_result_matches(run_dir, run)
    files, problems = _scan_files(run_dir)
    if problems:
        raise BundleError(f"cannot seal {run_dir}: " + "; ".join(f"{r}: {w}" for r, w in problems))
    entries = [
        ManifestFile(path=rel, sha256=sha256_file(p), size=p.stat().st_size)
        for rel, p in sorted(files.items())
    ]
    link = _previous_link(run_dir, run, previous)
    manifest = Manifest(
        format=MANIFEST_FORMAT,
        version=MANIFEST_VERSION,
        run_id=run.run_id,
        created=run.finished_at,
        files=entries,
        tool=ManifestTool.model_validate(run.tool.model_dump(mode="json")),
        rule_packs=[
            ManifestRulePack(name=p.name, version=p.version, sha256=p.sha256)
            for p in run.rule_packs
        ],
        trust_anchors=_trust_anchors(run),
        scope=run.scope.model_dump(mode="json"),
        previous=link,
    )
    key = _load_private_key(signing_key) if signing_key is not None else None
    data = manifest.to_bytes()
    target = run_dir / MANIFEST_FILE
    _write_atomic(target, data)
    sig_path = run_dir / SIGNATURE_FILE
    if key is None:
        with contextlib.suppress(FileNotFoundError):
            sig_path.unlink()
    else:
        public = key.public_key()
        sig = _Signature(
            alg=SIGNATURE_ALG,
            public_key=base64.b64encode(_raw_public(public)).decode("ascii"),
            public_key_sha256=key_fingerprint(public),
            signature=base64.b64encode(key.sign(data)).decode("ascii"),
        )
        _write_atomic(sig_path, canonical_json(sig.model_dump()) + b"\n")
    return target


def _check_result_matches(run_dir: Path, run: AuditRun) -> None:
    """Refuse to seal a directory whose result.json is another run: the manifest would lie."""
    result = run_dir / RESULT_FILE
    if not result.is_file():
        return
    try:
        stored = _run_id_of(result)
    except (OSError, ValueError, AttributeError) as err:
        raise BundleError(f"{result}: unreadable: {err}") from err
    if stored != run.run_id:
        raise BundleError(f"{result} is run {stored!r}, not {run.run_id!r}")


def _run_id_of(result: Path) -> Any:
    """The run id a result.json names, from its top-level line as cc-auditor writes it (the id
    comes before the VMs), so sealing a large run does not parse all of it; a file laid out
    otherwise is parsed whole."""
    field = b'  "run_id": '
    with result.open("rb") as f:
        for line in f:
            if line.startswith(field):
                return json.loads(line[len(field) :].rstrip(b"\n").removesuffix(b","))
            if line.startswith(b'  "vms": '):
                break
    return json.loads(result.read_bytes()).get("run_id")


def _previous_link(run_dir: Path, run: AuditRun, previous: Path | None) -> PreviousLink | None:
    if previous is None:
        previous = find_previous(run_dir, run)
        if previous is None:
            return None
    elif Path(previous).resolve() == run_dir.resolve():
        raise BundleError("a run cannot be its own previous run")
    other = read_manifest(Path(previous))
    if other.run_id == run.run_id:
        raise BundleError(f"previous run {previous} has this run's id {run.run_id}")
    return PreviousLink(run_id=other.run_id, manifest_sha256=manifest_sha256(Path(previous)))


def create_keypair(private_path: Path) -> str:
    """Create an Ed25519 signing key; return the public key as PEM text.

    The private key is PEM PKCS#8, unencrypted, created with mode 0600 and never over an
    existing file (an overwritten key would orphan every bundle it signed). The public key is
    written beside it as `<name>.pub` (SubjectPublicKeyInfo PEM), for auditors to pin.
    """
    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists() or p.is_symlink():
            raise BundleError(f"{p} already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(private_path, flags, 0o600)
    except OSError as err:
        raise BundleError(f"cannot create {private_path}: {err.strerror or err}") from err
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # umask can only narrow it, but be explicit
        f.write(pem)
    try:
        fd = os.open(public_path, flags, 0o644)
    except OSError as err:
        raise BundleError(f"cannot create {public_path}: {err.strerror or err}") from err
    with os.fdopen(fd, "wb") as f:
        f.write(public_pem)
    return public_pem.decode("ascii")


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Check:
    """One named check. `ok` is None when it did not run (no key given, previous run absent):
    a check that was not made must never read as a pass."""

    name: str
    ok: bool | None
    reason: str

    @property
    def ran(self) -> bool:
        return self.ok is not None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "reason": self.reason}


@dataclass(frozen=True)
class FileProblem:
    """A file that does not match the manifest. `kind`: changed, missing, unlisted, not_regular."""

    path: str
    kind: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "reason": self.reason}


@dataclass
class BundleReport:
    """All checks on one bundle; `ok` only when every check that ran passed and the manifest
    and file checks did run."""

    run_dir: Path
    run_id: str | None = None
    checks: list[Check] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        required = {"manifest", "files"}
        ran_ok = {c.name for c in self.checks if c.ok is True}
        return required <= ran_ok and not any(c.ok is False for c in self.checks)

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "run_id": self.run_id,
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
            "problems": [p.as_dict() for p in self.problems],
        }


def verify_bundle(
    run_dir: Path, public_key: Path | None = None, previous: Path | None = None
) -> BundleReport:
    """Check a sealed run: manifest, every file, signature, link to the previous run.

    Never raises for a bad bundle: each problem becomes a failed check that names the file or
    run, because the reader is an auditor who needs to know what is wrong, not a traceback.
    Without `public_key` the signature is reported present or absent and *not checked*; a
    signature is only worth something against a key the reader obtained independently.
    """
    run_dir = Path(run_dir)
    report = BundleReport(run_dir=run_dir)
    try:
        manifest = read_manifest(run_dir)
    except BundleError as err:
        report.checks.append(Check("manifest", False, str(err)))
        return report
    report.run_id = manifest.run_id
    report.checks.append(
        Check("manifest", True, f"{MANIFEST_FILE} of run {manifest.run_id} parses")
    )
    report.problems = _file_problems(run_dir, manifest)
    if report.problems:
        reason = "; ".join(p.reason for p in report.problems)
        report.checks.append(Check("files", False, reason))
    else:
        report.checks.append(
            Check("files", True, f"all {len(manifest.files)} listed files match, none unlisted")
        )
    report.checks.append(_signature_check(run_dir, public_key))
    report.checks.append(_chain_check(run_dir, manifest, previous))
    return report


def _file_problems(run_dir: Path, manifest: Manifest) -> list[FileProblem]:
    problems: list[FileProblem] = []
    try:
        found, odd = _scan_files(run_dir)
    except OSError as err:
        return [FileProblem(".", "missing", f"cannot read {run_dir}: {err}")]
    for rel, what in odd:
        problems.append(FileProblem(rel, "not_regular", f"{rel}: {what}"))
    for entry in manifest.files:
        path = found.pop(entry.path, None)
        if path is None:
            if not any(p.path == entry.path for p in problems):
                problems.append(
                    FileProblem(entry.path, "missing", f"{entry.path}: listed but missing")
                )
            continue
        size = path.stat().st_size
        digest = sha256_file(path) if size == entry.size else None
        if size != entry.size:
            problems.append(
                FileProblem(
                    entry.path,
                    "changed",
                    f"{entry.path}: changed (size {entry.size} recorded, now {size})",
                )
            )
        elif digest != entry.sha256:
            problems.append(
                FileProblem(
                    entry.path,
                    "changed",
                    f"{entry.path}: changed (sha256 {entry.sha256} recorded, now {digest})",
                )
            )
    for rel in sorted(found):
        problems.append(FileProblem(rel, "unlisted", f"{rel}: not listed in {MANIFEST_FILE}"))
    return sorted(problems, key=lambda p: p.path)


def _signature_check(run_dir: Path, public_key: Path | None) -> Check:
    sig_path = run_dir / SIGNATURE_FILE
    if not sig_path.is_file():
        if public_key is None:
            return Check("signature", None, f"no {SIGNATURE_FILE}: the bundle is unsigned")
        return Check("signature", False, f"no {SIGNATURE_FILE}: the bundle is unsigned")
    try:
        sig = _Signature.model_validate_json(sig_path.read_bytes())
        if sig.alg != SIGNATURE_ALG:
            raise ValueError(f"algorithm {sig.alg!r}, expected {SIGNATURE_ALG}")
        signature = base64.b64decode(sig.signature, validate=True)
    except (OSError, ValueError, binascii.Error) as err:
        reason = f"{SIGNATURE_FILE} unreadable: {err}"
        return Check("signature", None if public_key is None else False, reason)
    if public_key is None:
        return Check(
            "signature",
            None,
            f"{SIGNATURE_FILE} present (names key sha256 {sig.public_key_sha256}); "
            "not checked: no public key given",
        )
    try:
        key = _load_public_key(public_key)
    except BundleError as err:
        return Check("signature", False, str(err))
    given = key_fingerprint(key)
    try:
        key.verify(signature, (run_dir / MANIFEST_FILE).read_bytes())
    except InvalidSignature:
        return Check(
            "signature",
            False,
            f"signature does not verify with the given public key (sha256 {given}); "
            f"{SIGNATURE_FILE} names key sha256 {sig.public_key_sha256}",
        )
    except OSError as err:
        return Check("signature", False, f"cannot read {MANIFEST_FILE}: {err}")
    return Check("signature", True, f"Ed25519 signature verifies with key sha256 {given}")


def _locate_previous(run_dir: Path, run_id: str) -> Path | None:
    parent = run_dir.resolve().parent
    if safe_relpath(run_id) and "/" not in run_id:
        direct = parent / run_id
        if direct.is_dir() and not direct.is_symlink() and (direct / MANIFEST_FILE).is_file():
            return direct
    try:
        siblings = sorted(parent.iterdir())
    except OSError:
        return None
    for candidate in siblings:
        if candidate.is_symlink() or not (candidate / MANIFEST_FILE).is_file():
            continue
        try:
            if read_manifest(candidate).run_id == run_id:
                return candidate
        except BundleError:
            continue
    return None


def _chain_check(run_dir: Path, manifest: Manifest, previous: Path | None) -> Check:
    link = manifest.previous
    if link is None:
        if previous is not None:
            return Check(
                "chain",
                False,
                f"a previous run was given ({previous}) but run {manifest.run_id} records none",
            )
        return Check("chain", None, "no previous run recorded: this run starts its chain")
    where = Path(previous) if previous is not None else _locate_previous(run_dir, link.run_id)
    if where is None:
        return Check(
            "chain",
            None,
            f"previous run {link.run_id} not found beside {run_dir}; link not checked",
        )
    try:
        other = read_manifest(where)
    except BundleError as err:
        return Check(
            "chain",
            False,
            f"broken link: run {manifest.run_id} follows run {link.run_id}, "
            f"whose manifest at {where} is unusable: {err}",
        )
    if other.run_id != link.run_id:
        return Check(
            "chain",
            False,
            f"broken link: run {manifest.run_id} follows run {link.run_id}, "
            f"but {where} holds run {other.run_id}",
        )
    now = manifest_sha256(where)
    if now != link.manifest_sha256:
        return Check(
            "chain",
            False,
            f"broken link: run {manifest.run_id} records run {link.run_id}'s manifest sha256 "
            f"{link.manifest_sha256}, but {where / MANIFEST_FILE} now hashes to {now}",
        )
    return Check(
        "chain", True, f"follows run {link.run_id} (manifest sha256 {link.manifest_sha256})"
    )
