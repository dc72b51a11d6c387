"""The data model: the contract between collect, verify, evaluate and report.

Everything a report shows comes from these classes, and every fact carries who says so
(`Evidence.source`). The model is versioned (`SCHEMA_VERSION`) and round-trips through JSON, so a
stored run can be re-rendered or compared without the clouds that produced it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, BinaryIO, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_serializer,
)
from pydantic_core import to_json

SCHEMA_VERSION = "1"


class Party(StrEnum):
    """Who could reach the plaintext. Ids are used verbatim in JSON, reports and rules."""

    CONTROL_PLANE = "control_plane"
    HYPERVISOR = "hypervisor"
    FIRMWARE = "firmware"
    ATTESTATION_SERVICE = "attestation_service"
    VTPM = "vtpm"
    KEY_CUSTODIAN = "key_custodian"
    GUEST_AGENTS = "guest_agents"
    IMAGE_PUBLISHER = "image_publisher"
    CPU_VENDOR = "cpu_vendor"


#: Parties the cloud provider controls: the GDPR reading asks whether all of them are shut out.
PROVIDER_PARTIES: tuple[Party, ...] = (
    Party.CONTROL_PLANE,
    Party.HYPERVISOR,
    Party.FIRMWARE,
    Party.ATTESTATION_SERVICE,
    Party.VTPM,
    Party.KEY_CUSTODIAN,
    Party.GUEST_AGENTS,
)


class Status(StrEnum):
    """How far a party is shut out of a VM, and on whose word."""

    CAN_ACCESS = "CAN_ACCESS"
    CLAIMED_EXCLUDED = "CLAIMED_EXCLUDED"
    EXCLUDED = "EXCLUDED"
    UNDETERMINED = "UNDETERMINED"


class Level(StrEnum):
    """Assurance level of a VM (DESIGN.md §2); ordered L0 < L4."""

    L0 = "L0"
    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"

    @property
    def rank(self) -> int:
        return int(self.value[1])


class Technology(StrEnum):
    """Memory-encryption technology of a VM. UNKNOWN: the evidence did not say (never NONE)."""

    NONE = "NONE"
    SEV = "SEV"
    SEV_ES = "SEV_ES"
    SEV_SNP = "SEV_SNP"
    TDX = "TDX"
    UNKNOWN = "UNKNOWN"


class Source(StrEnum):
    """Who vouches for a piece of evidence."""

    CONTROL_PLANE = "control_plane"
    PROVIDER_LOG = "provider_log"
    PROVIDER_ATTESTATION_SERVICE = "provider_attestation_service"
    HARDWARE = "hardware"
    GUEST = "guest"


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Answer(StrEnum):
    """The GDPR question: can the provider reach the plaintext?"""

    YES = "yes"
    NO = "no"
    UNDETERMINED = "undetermined"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, use_enum_values=False)


_M = TypeVar("_M", bound=BaseModel)
_ALL_FIELDS: dict[type[BaseModel], set[str]] = {}


def build_unchecked(cls: type[_M], values: dict[str, Any]) -> _M:
    """An instance of `cls` from `values` without validation, for the engine's hot path.

    Only for values already of the field types (the engine's results are made of validated
    VMs and rule-pack data): validating 100k results again costs more than evaluating them
    (benchmarks/RESULTS.md). `values` must name every field; it becomes the instance's dict.
    """
    names = _ALL_FIELDS.get(cls)
    if names is None:
        names = _ALL_FIELDS[cls] = set(cls.model_fields)
    if values.keys() != names:  # a missing or misspelt field would be silent: refuse it
        raise ValueError(f"{cls.__name__}: fields {sorted(names ^ set(values))} differ")
    return _unchecked(cls, values, names)


def unchecked_builder(cls: type[_M]) -> Callable[[dict[str, Any]], _M]:
    """`build_unchecked` for one class, checking only the number of fields: for call sites that
    build millions of objects from one dict literal (the engine's findings and statuses).

    The literal's names are checked once by `build_unchecked` on the first call, and by the
    tests that validate engine results (tests/test_engine_memo.py).
    """
    names = set(cls.model_fields)
    count = len(names)
    first = True

    def build(values: dict[str, Any]) -> _M:
        nonlocal first
        if first:
            first = False
            return build_unchecked(cls, values)
        if len(values) != count:
            raise ValueError(f"{cls.__name__}: {len(values)} fields given, {count} expected")
        return _unchecked(cls, values, names)

    return build


_new = object.__new__
_set = object.__setattr__


def _unchecked(cls: type[_M], values: dict[str, Any], names: set[str]) -> _M:
    model: _M = _new(cls)
    _set(model, "__dict__", values)
    # One shared set naming every field: assignments only add names already in it.
    _set(model, "__pydantic_fields_set__", names)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


def canonical_json(value: Any) -> bytes:
    """The byte form hashed for JSON evidence: sorted keys, no whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=json_default
    ).encode("utf-8")


def json_default(value: Any) -> Any:
    """What JSON gets for the non-JSON leaves of SDK responses: ISO-8601 dates, base64 bytes.

    The `json` encoder calls it only for values it cannot encode itself, so SDK responses are
    made JSON in C instead of by a walk in Python.
    """
    if isinstance(value, date):  # datetime included
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Verification(_Model):
    """Outcome of verifying one evidence item (filled by auditor.verify, see the evidence issue)."""

    verifier: str
    ok: bool
    checks: list[dict[str, Any]] = Field(default_factory=list)
    reason: str = ""


class PackedJson:
    """JSON evidence held as its canonical bytes, parsed when read.

    A fleet's evidence is hundreds of MiB as Python objects and a tenth of that as compact
    JSON, and a scan reads most of it only once more, to write result.json. Equal to the value
    it holds (parsed or packed), so runs compare as before.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def value(self) -> Any:
        return json.loads(self.data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedJson):
            return self.data == other.data
        return bool(self.value() == other)

    __hash__ = None  # type: ignore[assignment]  # equal to dicts and lists: not hashable

    def __repr__(self) -> str:
        return f"PackedJson({len(self.data)} bytes)"


class Evidence(_Model):
    """One raw fact exactly as received, with who says so and how it was collected.

    `raw` holds JSON as received, or base64 text for binary evidence (`encoding="base64"`).
    `sha256` is over `canonical_json(raw)` for JSON and over the decoded bytes for binary, so a
    third party can recompute it from the bundle.
    """

    # Evidence made by `from_json` keeps its JSON packed (`PackedJson`): reading `raw` parses
    # it, serialising writes the parsed value.

    kind: str
    source: Source
    sha256: str
    encoding: str = "json"
    # the default said in the schema too: a field serializer (below) hides it there otherwise
    raw: Any = Field(default=None, json_schema_extra={"default": None})
    collected_at: datetime
    call: str | None = None
    provider: str | None = None
    account: str | None = None
    region: str | None = None
    resource: str | None = None
    ref: str | None = Field(default=None, description="path of the raw response in the run's raw/")
    verification: Verification | None = None

    @classmethod
    def from_json(cls, raw: Any, **kw: Any) -> Evidence:
        kw.setdefault("collected_at", utcnow())
        data = canonical_json(raw)  # canonical once: the stored JSON re-encodes to these bytes
        return cls(raw=PackedJson(data), sha256=hashlib.sha256(data).hexdigest(), **kw)

    @field_serializer("raw", mode="wrap")
    def _raw_value(self, value: Any, handler: SerializerFunctionWrapHandler) -> Any:
        return handler(value.value() if isinstance(value, PackedJson) else value)

    @classmethod
    def from_bytes(cls, data: bytes, **kw: Any) -> Evidence:
        kw.setdefault("collected_at", utcnow())
        return cls(
            raw=base64.b64encode(data).decode("ascii"),
            encoding="base64",
            sha256=hashlib.sha256(data).hexdigest(),
            **kw,
        )


def _read_raw(self: Evidence) -> Any:
    value = self.__dict__.get("raw")
    return value.value() if isinstance(value, PackedJson) else value


def _write_raw(self: Evidence, value: Any) -> None:
    self.__dict__["raw"] = value


# `Evidence.raw` reads the parsed value whether it is held packed or not (a data descriptor
# comes before the instance's __dict__, where pydantic keeps the field).
setattr(Evidence, "raw", property(_read_raw, _write_raw))  # noqa: B010


class Disk(_Model):
    """A disk attached to a VM and who holds its key.

    `custody` vocabulary (shared by all clouds): `none` (unencrypted), `provider_key` (platform
    key), `provider_kms` (a key in the provider's KMS/HSM whose manager is not known),
    `customer_kms` (customer-managed key, still in the provider's KMS/HSM), `customer_supplied`
    (key sent with each request), `guest` (encrypted inside the guest), `unknown`.
    """

    id: str
    device: str | None = None
    boot: bool = False
    size_gb: int | None = None
    encrypted: bool | None = None
    custody: str = "unknown"
    kms_key: str | None = None


#: Every provider cc-auditor reads: the three clouds and libvirt (KVM hosts of a private cloud).
PROVIDER_NAMES = ("aws", "gcp", "azure", "libvirt")

#: Gap.affects when a listing failed: some VMs of the scope were never seen.
SOME_VMS = "some-vms"


class Gap(_Model):
    """Something the scan could not see, and why. Listed, never dropped."""

    provider: str
    account: str | None = None
    region: str | None = None
    call: str
    code: str
    message: str
    resource: str | None = None
    sections: list[str] = Field(
        default_factory=list, description="VM document sections this gap leaves empty"
    )
    affects: str = Field(
        default="vms",
        description="`scope`: no VM of the scope was seen; `some-vms`: a listing failed, so "
        "VMs of the scope were not seen (`resource` names which: scale sets, a zone); `vms`: "
        "some facts of its VMs missing",
    )

    def describe(self) -> str:
        """What the gap leaves unseen, in the words every report uses."""
        if self.affects == "scope":
            return "whole scope not read"
        if self.affects == SOME_VMS:
            return f"VMs not seen: {self.resource or 'a listing failed'}"
        if self.resource:
            return f"resource {self.resource}"
        if self.sections:
            return "VM facts missing: " + ", ".join(self.sections)
        return "some VM facts missing"


class VM(_Model):
    """A VM as collected: identity, the normalised document rules read, and its evidence.

    `document` is what CEL rules see as `vm`; a fact the provider could not collect is absent
    from it (rules then yield UNDETERMINED), never filled with a default.
    `evidence` maps each top-level document section to the sha256 of the evidence behind it.
    """

    provider: str
    account: str
    region: str
    zone: str | None = None
    id: str
    name: str | None = None
    instance_type: str | None = None
    technology: Technology = Technology.UNKNOWN
    state: str | None = None
    disks: list[Disk] = Field(default_factory=list)
    document: dict[str, Any] = Field(default_factory=dict)
    evidence: dict[str, list[str]] = Field(default_factory=dict)
    gaps: list[Gap] = Field(default_factory=list)
    hardware_evidence: str | None = Field(
        default=None,
        description="SHA-256 of the one guest evidence file whose hardware report verified "
        "against pinned vendor roots, bound to this audit's nonce, this VM and the guest's "
        "claims, and fresh: the only thing that lets a party be EXCLUDED (set by the verify "
        "stage alone)",
    )

    @property
    def key(self) -> str:
        """Stable identity across runs: provider/account/region/id."""
        return f"{self.provider}/{self.account}/{self.region}/{self.id}"

    @property
    def cluster(self) -> str | None:
        """The Kubernetes cluster this VM is a node of (document `kubernetes`), if any."""
        section = self.document.get("kubernetes")
        value = section.get("cluster") if isinstance(section, dict) else None
        return str(value) if value is not None else None

    @property
    def node_pool(self) -> str | None:
        """Its node pool (GKE, AKS) or managed node group (EKS), if the cloud records one."""
        section = self.document.get("kubernetes")
        value = section.get("node_pool") if isinstance(section, dict) else None
        return str(value) if value is not None else None

    @property
    def pool_label(self) -> str | None:
        """`cluster/node pool` for grouping and display ("?" for the half not recorded)."""
        if self.cluster is None and self.node_pool is None:
            return None
        return f"{self.cluster or '?'}/{self.node_pool or '?'}"


class PartyStatus(_Model):
    """The status of one party on one VM, with the reason in words and what decided it."""

    party: Party
    status: Status
    reason: str
    rules: list[str] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)
    override: str | None = Field(
        default=None,
        description="an owner override that changed this status: a built-in veto the owner's "
        "rule pack disabled or replaced, which applied here (the status is then at most "
        "CLAIMED_EXCLUDED)",
    )


class Finding(_Model):
    """One rule's outcome on one VM: matched (status = its effect) or undetermined."""

    rule_id: str
    party: Party
    status: Status
    title: str
    reason: str
    severity: Severity
    rationale: str = ""
    evidence: list[str] = Field(default_factory=list)
    remediation: str | None = None
    references: list[str] = Field(default_factory=list)


class GdprReading(_Model):
    """Can the provider reach the plaintext? Evidence relevant to GDPR, never a verdict."""

    provider_can_access: Answer
    blocking_parties: list[Party] = Field(default_factory=list)
    summary: str
    region_jurisdiction: str
    references: list[str] = Field(default_factory=list)
    would_change: list[str] = Field(default_factory=list)


class VMResult(VM):
    """A VM with its verdict: party statuses, level, findings and GDPR reading."""

    level: Level
    level_reason: str
    parties: dict[Party, Status]
    party_status: dict[Party, PartyStatus]
    findings: list[Finding] = Field(default_factory=list)
    gdpr: GdprReading
    overrides: list[str] = Field(
        default_factory=list,
        description="ids of built-in vetoes an owner override switched off where they applied",
    )


class RulePackRef(_Model):
    """A rule pack used by a run, identified by its SHA-256 so the run is reproducible."""

    name: str
    version: str
    sha256: str
    path: str
    rules: int


class OwnerOverride(_Model):
    """A built-in veto the owner's rule pack disabled or replaced: a visible owner decision.

    It never yields EXCLUDED: a party whose overridden veto applies is at most CLAIMED_EXCLUDED.
    """

    rule_id: str
    party: Party
    action: str = Field(description="`disabled` or `replaced`")
    pack: str
    pack_sha256: str
    title: str = ""
    vms: int = Field(default=0, description="VMs whose verdict the override changed")


class TrustAnchor(_Model):
    """A root or key a verdict of the run may rest on, with its fingerprint and origin."""

    store: str = Field(description="the trust store: AMD SEV-SNP roots, Intel SGX Root CA, ...")
    subject: str = Field(description="certificate subject, or key id")
    role: str = Field(description="`root`, `intermediate`, `signing key` or `broker key`")
    sha256: str = Field(description="SHA-256 of the DER certificate or SubjectPublicKeyInfo")
    source: str = Field(description="where it came from")
    pinned: bool = Field(description="shipped and pinned in cc-auditor (else: given by the owner)")
    demo: bool = Field(default=False, description="the demo trust anchor: not AMD")
    used_by: int = Field(default=0, description="VMs whose evidence it verified in this run")


class ScopeCoverage(_Model):
    """One collection scope (AWS: account x region) and whether it was read completely."""

    provider: str
    account: str
    region: str | None = None
    status: str = Field(
        description="`complete`, `partial` (some calls failed), `failed` or `interrupted`"
    )
    vms: int = 0
    calls: int = 0
    errors: list[Gap] = Field(default_factory=list)


class Coverage(_Model):
    """What was scanned, what failed and why."""

    complete: bool
    scopes: list[ScopeCoverage] = Field(default_factory=list)
    gaps: list[Gap] = Field(default_factory=list)
    interrupted: bool = Field(
        default=False,
        description="the scan was stopped (SIGINT/SIGTERM): scopes not read are `interrupted`",
    )


class ToolInfo(_Model):
    name: str = "cc-auditor"
    version: str
    python: str
    dependencies: dict[str, str] = Field(default_factory=dict)


class Scope(_Model):
    """What the user asked to scan."""

    providers: list[str]
    accounts: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    replay: str | None = None
    endpoint_url: str | None = None
    guest_evidence: str | None = None
    log_window_days: int | None = None
    maa_issuers: list[str] = Field(default_factory=list)
    maa_jwks: str | None = Field(
        default=None, description="run-relative path of the MAA signing keys used (collateral)"
    )
    shard: str | None = Field(
        default=None, description="`K/N` when only shard K of N of the scopes was read"
    )
    reference_measurements: list[dict[str, str]] = Field(
        default_factory=list,
        description="launch measurements the owner trusts: {name, measurement (hex)}",
    )
    demo_trust_anchor: bool = Field(
        default=False,
        description="the demo fleet's self-made AMD chain was trusted (demo mode only, not AMD)",
    )


class AuditRun(_Model):
    """One immutable audit: serialisable, with tool and rule-pack versions and coverage."""

    schema_version: str = SCHEMA_VERSION
    tool: ToolInfo
    run_id: str
    started_at: datetime
    finished_at: datetime
    scope: Scope
    rule_packs: list[RulePackRef]
    coverage: Coverage
    vms: list[VMResult]
    evidence: dict[str, Evidence] = Field(default_factory=dict)
    owner_overrides: list[OwnerOverride] = Field(
        default_factory=list,
        description="built-in vetoes the owner's rule packs disabled or replaced",
    )
    trust_anchors: list[TrustAnchor] = Field(
        default_factory=list,
        description="every root and key the run's verifiers trusted, and how many VMs each "
        "verified",
    )
    judged_at: datetime | None = Field(
        default=None,
        description="the time evidence was judged at (validity, freshness, log windows): the "
        "scan time, or a replay's recording time",
    )

    # VMs and evidence read from disk (auditor.runs.spool) are a Sequence and a Mapping: dumped as
    # the list and dict they stand for.
    @field_serializer("vms")
    def _vms_value(self, value: Any) -> list[VMResult]:
        return value if isinstance(value, list) else list(value)

    @field_serializer("evidence")
    def _evidence_value(self, value: Any) -> dict[str, Evidence]:
        return value if isinstance(value, dict) else dict(value.items())

    def level_counts(self) -> dict[Level, int]:
        counts = dict.fromkeys(Level, 0)
        for vm in self.vms:
            counts[vm.level] += 1
        return counts

    def lowest_level(self) -> Level | None:
        return min((vm.level for vm in self.vms), key=lambda lv: lv.rank, default=None)


def result_bytes(run: AuditRun) -> bytes:
    """result.json exactly as written: the bytes its SHA-256 (the run's fingerprint) is of."""
    return b"".join(result_chunks(run))


def result_chunks(run: AuditRun) -> Iterator[bytes]:
    """result.json a piece at a time, byte for byte `run.model_dump_json(indent=2)` and a
    newline: one VM or one evidence entry is serialised at once, so writing or hashing a
    large fleet's run never holds the whole document (hundreds of MiB at 10k VMs) in memory.

    The run without its VMs and evidence is serialised whole; each VM and evidence entry is
    serialised alone and indented to its place (JSON strings hold no raw newline, so
    re-indenting line by line is exact). VMs and evidence read from disk (auditor.runs.spool) are
    copied as the bytes they are stored as, which are these."""
    for _, chunk in _result_parts(run):
        yield chunk


#: Where each VM (in order) and each evidence item (by key) is in a result.json written with
#: `write_result(..., spans=...)`: (offset, length) of its value.
ResultSpans = tuple[list[tuple[int, int]], dict[str, tuple[int, int]]]


def _result_parts(run: AuditRun) -> Iterator[tuple[str | None, bytes]]:
    """result.json's pieces; a VM's is tagged "" and an evidence item's with its key."""
    shell = run.model_copy(update={"vms": [], "evidence": {}}).model_dump_json(indent=2)
    vms_at = shell.index(_EMPTY_VMS)
    evidence_at = shell.index(_EMPTY_EVIDENCE)
    yield None, (shell[:vms_at] + _EMPTY_VMS[:-2]).encode("utf-8")
    stored_vms = getattr(run.vms, "chunks", None)
    vms = stored_vms() if stored_vms is not None else (nested_json(vm) for vm in run.vms)
    yield from _members((("", b"", vm) for vm in vms), b"[", b"]")
    yield None, (shell[vms_at + len(_EMPTY_VMS) : evidence_at] + _EMPTY_EVIDENCE[:-2]).encode()
    stored_evidence = getattr(run.evidence, "chunks", None)
    items: Iterator[tuple[str, bytes]] = (
        stored_evidence()
        if stored_evidence is not None
        else ((key, nested_json(ev)) for key, ev in run.evidence.items())
    )
    yield from _members(((key, to_json(key) + b": ", value) for key, value in items), b"{", b"}")
    yield None, (shell[evidence_at + len(_EMPTY_EVIDENCE) :] + "\n").encode("utf-8")


def nested_json(model: BaseModel) -> bytes:
    """A model as `model_dump_json(indent=2)` writes it as the value of a top-level field."""
    return model.model_dump_json(indent=2).replace("\n", _NESTED).encode("utf-8")


def _members(
    entries: Iterator[tuple[str, bytes, bytes]], opening: bytes, closing: bytes
) -> Iterator[tuple[str | None, bytes]]:
    """A top-level array or object of already indented entries, as pydantic lays it out
    (an empty one on a single line). An entry is (tag, key prefix or b"", value); the value
    is its own piece, tagged."""
    first = True
    for tag, prefix, value in entries:
        yield None, (opening if first else b",") + b"\n    " + prefix
        yield tag, value
        first = False
    yield None, opening + closing if first else b"\n  " + closing


#: Where result_chunks splices the VMs and the evidence into the rest of the run.
_EMPTY_VMS = '\n  "vms": []'
_EMPTY_EVIDENCE = '\n  "evidence": {}'
_NESTED = "\n    "  # a top-level field's value nests two levels deeper: four more spaces


#: The last run whose digest was taken, and the digest: reports of one run ask once per format,
#: and serialising a large fleet costs seconds. Held by reference, so an id is never reused.
_LAST_DIGEST: list[tuple[AuditRun, str]] = []


def result_sha256(run: AuditRun) -> str:
    """SHA-256 of result.json for this run (the run is immutable once built)."""
    if _LAST_DIGEST and _LAST_DIGEST[0][0] is run:
        return _LAST_DIGEST[0][1]
    return write_result(run, None)


def write_result(run: AuditRun, out: BinaryIO | None, spans: ResultSpans | None = None) -> str:
    """Write result.json to `out` (None: nowhere) a piece at a time and return its SHA-256,
    remembered for `result_sha256`: the reports of a scan that just wrote its run do not
    serialise the whole run again to name its fingerprint. `spans`, if given, receives where
    each VM and evidence item is in what was written (auditor.runs.spool reads them back)."""
    hasher = hashlib.sha256()
    at = 0
    for tag, chunk in _result_parts(run):
        hasher.update(chunk)
        if out is not None:
            out.write(chunk)
        if spans is not None and tag is not None:
            if tag:
                spans[1][tag] = (at, len(chunk))
            else:
                spans[0].append((at, len(chunk)))
        at += len(chunk)
    digest = hasher.hexdigest()
    remember_digest(run, digest)
    return digest


def remember_digest(run: AuditRun, digest: str) -> None:
    """`result_sha256(run)` is `digest` (a run re-pointed at the result.json just written)."""
    _LAST_DIGEST[:] = [(run, digest)]
