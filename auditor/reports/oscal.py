"""OSCAL assessment-results (JSON): the run for GRC tools, with every evidence hash.

One document per run, a pure function of the AuditRun: two renders of the same run are
byte-identical. OSCAL version `OSCAL_VERSION`; the output validates with compliance-trestle
(structure) and the `oscal` package (metaschema constraints).

Layout (NIST OSCAL assessment-results model):

* `metadata`: title `cc-auditor confidential-computing audit <run id>`, `last-modified` = run
  end, `version` = tool version, props with the run id and rule packs.
* `import-ap`: `#<uuid>` of a back-matter resource that stands for the assessment plan. There is
  no separate OSCAL plan: the plan is the rule packs (name, version, SHA-256) and the scope,
  which that resource lists as props. The reference resolves inside the document.
* one `result` (`start`/`end` = the run's), with `local-definitions` holding the tool as a
  component and every VM as an inventory item, and `reviewed-controls` = include-all, the legal
  hooks the rules cite as `reference` props (evidence *relevant to* them, never a verdict).
* `observations`: one per (VM, evidence item the VM's document, party statuses or findings
  use). `subjects` = the VM's inventory item; `relevant-evidence` carries the evidence SHA-256,
  kind, source, call and verification as props and links (`#uuid`) to a back-matter resource
  whose rlink points at the raw response in the run directory (`raw/...` or `evidence/...`).
  `methods` is `TEST` when cc-auditor ran a verifier on the item itself (signatures, certificate
  chains; the outcome is the `verification-ok` prop) and `EXAMINE` for API and log responses
  read as given. `collected` = the evidence's collected_at.
* `findings`: one per (VM, party), `target` = `objective-id` with `target-id` = the party id
  (objective: "this party cannot reach the plaintext"), `satisfied` only when the party is
  EXCLUDED (owner-verified): CLAIMED_EXCLUDED is the provider's word and is `not-satisfied`
  with reason `other`, like UNDETERMINED. The party status, level, and the rules behind it
  (`rule-id` / `rule-status` / `rule-severity` props paired by `group`) are props. A party is
  the unit because it is what the status model decides; a party with several rules keeps them
  all in one finding, and a party without rules (the CPU vendor) still gets one. One more
  finding per VM, `target-id` `provider-plaintext-access`, carries the GDPR reading
  (satisfied only when the provider cannot reach the plaintext).
* coverage gaps: each is an observation (subjects: the VMs it leaves incomplete) and an open
  `risk`; findings left UNDETERMINED by missing evidence point at them
  (`related-observations`, `related-risks`) and carry an `undetermined` prop.
* `back-matter`: the plan placeholder and one resource per evidence item. An rlink has a
  SHA-256 `hashes` entry only when the linked file is the evidence byte for byte (binary
  evidence stored under `evidence/`); JSON evidence is hashed over its canonical form, which is
  not the raw response file, so its hash stays a prop.

Props use the namespace `NS`, a URN that names cc-auditor's prop vocabulary and is never
fetched. UUIDs are version-5: `uuid5(UUID_NAMESPACE, json([run_id, kind, key...]))`, so every
object is tied to the run; the tool component and the VM inventory items leave out the run id
(`json(["component", name])`, `json(["inventory-item", vm key])`) so a VM keeps one identity
across runs, as OSCAL asks of inventory items.

Text from clouds, rule packs and users (VM names, reasons, error messages) stays data: prop
values that are not valid OSCAL strings (control characters, line breaks, outer whitespace) are
written like the body of a JSON string literal (`\\n` -> `\\u000a`, `\\` -> `\\\\`), and text
inside Markdown (titles, descriptions, remarks) is backslash-escaped so that no `*`, `[`, `<`,
`{{ insert }}` or `"` becomes markup.
"""

from __future__ import annotations

import json
import posixpath
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from itertools import chain
from typing import Any, BinaryIO
from urllib.parse import quote

from auditor.model import (
    PROVIDER_PARTIES,
    Answer,
    AuditRun,
    Evidence,
    Finding,
    Gap,
    Party,
    Severity,
    Status,
    VMResult,
)
from auditor.reports import LARGE_RUN, dump_json

FILE = "oscal-assessment-results.json"
OSCAL_VERSION = "1.1.3"
#: Namespace of every cc-auditor prop; a name, never dereferenced.
NS = "urn:cc-auditor:oscal"
UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, NS)
#: `target-id` of the per-VM GDPR finding.
GDPR_OBJECTIVE = "provider-plaintext-access"

JSON = dict[str, Any]

#: Characters that can start markup in OSCAL's Markdown (CommonMark plus `"` for <q>, `^`/`~`
#: for sup/sub and `{{ insert }}`); `(`, `)` and `!` only act next to `[`, which is escaped.
_MARKDOWN_SPECIAL = frozenset('\\`*[]{}<>&|~^#"')
_LIST_START = re.compile(r"^(\d{1,9})([.)])")
_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}
_REASON = {
    Status.EXCLUDED: "pass",
    Status.CAN_ACCESS: "fail",
    Status.CLAIMED_EXCLUDED: "other",
    Status.UNDETERMINED: "other",
}
_OBJECTIVE_TITLE = "cannot reach the plaintext or its keys"


def render(run: AuditRun) -> dict[str, bytes]:
    return {FILE: render_json(run).encode("utf-8")}


def render_json(run: AuditRun) -> str:
    return dump_json(build(run), run)


def build(run: AuditRun) -> JSON:
    """The document as a dict: `{"assessment-results": {...}}`."""
    built: JSON = _whole(_Builder(run).document())
    return built


def writers(run: AuditRun) -> dict[str, Callable[[BinaryIO], object]]:
    """The same file; a large run's (written compact) a VM's entries at a time: its arrays of
    inventory items, observations, findings and evidence resources are made as they are
    written (`_Streamed`), so the document (365 MB for 10k VMs) is never whole in memory."""
    return {FILE: partial(_write, run)}


def _write(run: AuditRun, out: BinaryIO) -> None:
    if len(run.vms) <= LARGE_RUN:  # indented for people: small, made whole as `render` does
        out.write(render_json(run).encode("utf-8"))
        return
    buffer: list[str] = []
    size = 0

    def write(text: str) -> None:
        nonlocal size
        buffer.append(text)
        size += len(text)
        if size >= 1 << 20:
            out.write("".join(buffer).encode("utf-8"))
            buffer.clear()
            size = 0

    _encode(_Builder(run).document(), write)
    write("\n")
    out.write("".join(buffer).encode("utf-8"))


class _Streamed:
    """An array of the document whose members are made only as it is written (never empty:
    OSCAL arrays have at least one member, see `_with_streamed`)."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items


def _with_streamed(obj: JSON, key: str, items: Iterable[Any]) -> JSON:
    """`_with` for members made one at a time: the first is made now to know there is one."""
    it = iter(items)
    first = next(it, _NOTHING)
    if first is not _NOTHING:
        obj[key] = _Streamed(chain([first], it))
    return obj


_NOTHING = object()


def _whole(obj: Any) -> Any:
    """The document with every streamed array made (in document order, as writing makes them)."""
    if isinstance(obj, _Streamed):
        return [_whole(x) for x in obj.items]
    if isinstance(obj, dict):
        return {k: _whole(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_whole(x) for x in obj]
    return obj


def _encode(obj: Any, write: Callable[[str], None]) -> None:
    """`json.dumps(obj, ensure_ascii=False, separators=(",", ":"))`, written a piece at a time:
    the parts that hold a streamed array are walked here, everything else is `json.dumps`."""
    if isinstance(obj, _Streamed):
        write("[")
        for n, item in enumerate(obj.items):
            write(("," if n else "") + _compact(item))
        write("]")
    elif isinstance(obj, dict) and _holds_stream(obj):
        write("{")
        for n, (key, item) in enumerate(obj.items()):
            write(("," if n else "") + _compact(key) + ":")
            _encode(item, write)
        write("}")
    elif isinstance(obj, list) and _holds_stream(obj):
        write("[")
        for n, item in enumerate(obj):
            if n:
                write(",")
            _encode(item, write)
        write("]")
    else:
        write(_compact(obj))


def _compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _holds_stream(obj: Any) -> bool:
    if isinstance(obj, _Streamed):
        return True
    if isinstance(obj, dict):
        return any(_holds_stream(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_holds_stream(v) for v in obj)
    return False


# --- text ------------------------------------------------------------------------------------


def _unsafe(char: str) -> bool:
    """Characters an OSCAL string or markup-line may not hold as they are."""
    if char == " ":
        return False
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn")


def _escape_char(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


#: In ASCII text the characters `_unsafe` refuses are exactly the C0 controls and DEL (every
#: ASCII whitespace but the space is one of them): one regex search instead of a walk.
_ASCII_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
#: What `md` changes in ASCII text: markup characters, `_` not between two letters or digits
#: (in ASCII, `isalnum` is `[A-Za-z0-9]`), and the characters `_unsafe` refuses.
_ASCII_MARKUP = re.compile(
    "["
    + re.escape("".join(sorted(_MARKDOWN_SPECIAL)))
    + r"\x00-\x1f\x7f]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])"
)


def _md_ascii(match: re.Match[str]) -> str:
    c = match.group()
    if c in _MARKDOWN_SPECIAL or c == "_":
        return "\\" + c
    return _escape_char(c)


def _all_safe(s: str) -> bool:
    if s.isascii():
        return _ASCII_UNSAFE.search(s) is None
    return not any(_unsafe(c) for c in s)


def value(text: object) -> str | None:
    """A valid OSCAL string for `text` (None when empty): verbatim unless it must be escaped."""
    s = str(text)
    if not s:
        return None
    if _all_safe(s) and s == s.strip(" ") and "\\" not in s:
        return s
    out = "".join(
        "\\\\" if c == "\\" else _escape_char(c) if _unsafe(c) else c for c in s.strip(" ")
    )
    lead = len(s) - len(s.lstrip(" "))
    trail = len(s) - len(s.rstrip(" ")) if s.strip(" ") else 0
    return "\\u0020" * lead + out + "\\u0020" * trail


def md(text: object) -> str:
    """`text` as literal Markdown inline content: no markup, no line break.

    `_` is escaped unless it sits between two letters or digits, where CommonMark never reads it
    as emphasis (so `api_resource` stays readable).
    """
    s = str(text)
    if s.isascii():  # the common case (ids, titles, reasons): one regex pass
        return _ASCII_MARKUP.sub(_md_ascii, s)
    out: list[str] = []
    for i, c in enumerate(s):
        if c in _MARKDOWN_SPECIAL:
            out.append("\\" + c)
        elif c == "_":
            inner = 0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()
            out.append(c if inner else "\\_")
        elif _unsafe(c):
            out.append(_escape_char(c))
        else:
            out.append(c)
    return "".join(out)


def md_block(text: object) -> str:
    """`md(text)` safe at the start of a line too: no list item, quote or heading."""
    s = md(text)
    if s[:1] in ("-", "+", "=", ">"):
        return "\\" + s
    return _LIST_START.sub(r"\1\\\2", s, count=1)


def _line(text: str) -> str:
    """A markup-line / string that starts and ends with a non-space character."""
    return text.strip(" ") or "-"


def _ts(moment: datetime) -> str:
    """OSCAL date-time-with-timezone; a naive time is taken as UTC."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _prop(
    name: str, val: object, *, group: str | None = None, cls: str | None = None, remarks: str = ""
) -> JSON | None:
    v = value(val) if val is not None else None
    if v is None:
        return None
    prop: JSON = {"name": name, "ns": NS, "value": v}
    if cls:
        prop["class"] = cls
    if group:
        prop["group"] = group
    if remarks:
        prop["remarks"] = remarks
    return prop


def _props(*items: JSON | Iterable[JSON | None] | None) -> list[JSON]:
    out: list[JSON] = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, dict):
            out.append(item)
        else:
            out.extend(p for p in item if p is not None)
    return out


def _with(obj: JSON, key: str, items: Sequence[Any]) -> JSON:
    """Set an OSCAL array only when it has members (arrays have min 1)."""
    if items:
        obj[key] = list(items)
    return obj


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


def _reference_class(ref: str) -> str:
    head = ref.split(" ", 1)[0].split(":", 1)[0].lower()
    return head if head in ("gdpr", "edpb", "c5") else "other"


def _raw_href(ref: str | None) -> str | None:
    """The run-directory path of a raw response (`Evidence.ref` is relative to raw/)."""
    if not ref:
        return None
    path = posixpath.normpath(posixpath.join("raw", ref))
    if path.startswith(("/", "../")) or path == "..":
        return None
    return quote(path, safe="/")


# --- document --------------------------------------------------------------------------------


class _Builder:
    def __init__(self, run: AuditRun) -> None:
        self.run = run
        self.tool_uuid = self._stable("component", run.tool.name)
        self.ev_resource: dict[str, str] = {}  # sha256 -> back-matter resource uuid
        self.gap_obs: dict[str, str] = {}  # gap key -> observation uuid
        self.gap_risk: dict[str, str] = {}  # gap key -> risk uuid

    # uuids
    def uid(self, *parts: str) -> str:
        name = json.dumps([self.run.run_id, *parts], ensure_ascii=False)
        return str(uuid.uuid5(UUID_NAMESPACE, name))

    @staticmethod
    def _stable(*parts: str) -> str:
        return str(uuid.uuid5(UUID_NAMESPACE, json.dumps(list(parts), ensure_ascii=False)))

    def vm_uuid(self, vm: VMResult) -> str:
        return self._stable("inventory-item", vm.key)

    def origins(self) -> list[JSON]:
        return [{"actors": [{"type": "tool", "actor-uuid": self.tool_uuid}]}]

    # top level
    def document(self) -> JSON:
        """The document, its arrays with a member per VM made as they are read (`_Streamed`):
        in document order, so evidence resources are listed as observations first cite them."""
        run = self.run
        plan_uuid = self.uid("assessment-plan")
        gaps = self._gaps()
        for key in gaps:  # findings cite them, whichever is made first
            self.gap_obs.setdefault(key, self.uid("gap-observation", key))
            self.gap_risk.setdefault(key, self.uid("gap-risk", key))
        gap_vms = {key: set(vms) for key, (_, vms) in gaps.items()}

        def observations() -> Iterator[JSON]:
            for vm in run.vms:
                yield from self._evidence_observations(vm)[0]
            for key, (gap, vms) in gaps.items():
                yield self._gap_observation(key, gap, vms)

        def findings() -> Iterator[JSON]:
            for vm in run.vms:
                by_sha = {
                    sha: self.uid("observation", vm.key, sha) for sha in self._vm_evidence(vm)
                }
                vm_gaps = [k for k in gaps if vm.key in gap_vms[k]]
                yield from (self._party_finding(vm, p, by_sha, vm_gaps) for p in Party)
                yield self._gdpr_finding(vm, by_sha, vm_gaps)

        risks = [self._gap_risk(key, gap) for key, (gap, _) in gaps.items()]

        result: JSON = {
            "uuid": self.uid("result"),
            "title": _line(f"cc-auditor audit {md(run.run_id)}"),
            "description": self._result_description(),
            "start": _ts(run.started_at),
            "end": _ts(run.finished_at),
            "props": _props(
                _prop("run-id", run.run_id),
                _prop("coverage-complete", _bool(run.coverage.complete)),
                _prop("vm-count", len(run.vms)),
                _prop("gap-count", len(gaps)),
                _prop("lowest-level", run.lowest_level()),
                (_prop("level-count", n, cls=lv.value) for lv, n in run.level_counts().items()),
            ),
            "local-definitions": self._local_definitions(),
            "reviewed-controls": self._reviewed_controls(),
        }
        _with_streamed(result, "observations", observations())
        _with(result, "risks", risks)
        _with_streamed(result, "findings", findings())
        resources = _Streamed(chain([self._plan_resource(plan_uuid)], self._evidence_resources()))
        return {
            "assessment-results": {
                "uuid": self.uid("assessment-results"),
                "metadata": self._metadata(),
                "import-ap": {
                    "href": f"#{plan_uuid}",
                    "remarks": "No separate OSCAL assessment plan: the back-matter resource "
                    "this points at lists the rule packs (by SHA-256) and the scope.",
                },
                "results": [result],
                "back-matter": {"resources": resources},
            }
        }

    def _metadata(self) -> JSON:
        run = self.run
        return {
            "title": _line(f"cc-auditor confidential-computing audit {md(run.run_id)}"),
            "last-modified": _ts(run.finished_at),
            "version": value(run.tool.version) or "unknown",
            "oscal-version": OSCAL_VERSION,
            "props": _props(
                _prop("run-id", run.run_id),
                _prop("tool", run.tool.name),
                _prop("tool-version", run.tool.version),
                _prop("schema-version", run.schema_version),
                (
                    _prop("rule-pack", f"{p.name} {p.version}", group=f"pack-{i}")
                    for i, p in enumerate(run.rule_packs, 1)
                ),
                (
                    _prop("rule-pack-sha256", p.sha256, group=f"pack-{i}")
                    for i, p in enumerate(run.rule_packs, 1)
                ),
            ),
        }

    def _result_description(self) -> str:
        run = self.run
        packs = ", ".join(
            f"{md(p.name)} {md(p.version)} (SHA-256 {md(p.sha256)})" for p in run.rule_packs
        )
        cov = (
            "Collection was complete."
            if run.coverage.complete
            else f"Collection was incomplete: {len(run.coverage.gaps)} coverage gap(s), each an "
            "observation and an open risk below."
        )
        return (
            f"Automated assessment by {md(run.tool.name)} {md(run.tool.version)} of "
            f"{len(run.vms)} VM(s) with rule pack(s) {packs or 'none'}. For every VM and every "
            f"party that could reach the plaintext, a finding says whether that party is shut "
            f"out, on what evidence. {cov} Evidence relevant to the cited legal provisions, "
            "not a compliance verdict."
        )

    def _local_definitions(self) -> JSON:
        run = self.run
        tool: JSON = {
            "uuid": self.tool_uuid,
            "type": "software",
            "title": _line(md(run.tool.name)),
            "description": f"{md(run.tool.name)} {md(run.tool.version)}: audits confidential "
            "VMs and records, per party, who can still reach the plaintext.",
            "props": _props(
                _prop("version", run.tool.version),
                _prop("python", run.tool.python),
                (_prop("dependency", f"{k} {v}") for k, v in sorted(run.tool.dependencies.items())),
            ),
            "status": {"state": "operational"},
        }
        defs: JSON = {"components": [tool]}
        items = (self._inventory_item(vm) for vm in run.vms)
        return _with_streamed(defs, "inventory-items", items)

    def _inventory_item(self, vm: VMResult) -> JSON:
        label = f" ({md(vm.name)})" if vm.name else ""
        return {
            "uuid": self.vm_uuid(vm),
            "description": f"{md(vm.provider)} VM {md(vm.id)}{label} in account "
            f"{md(vm.account)}, region {md(vm.region)}: level {vm.level.value}.",
            "props": _props(
                _prop("vm-key", vm.key),
                _prop("provider", vm.provider),
                _prop("account", vm.account),
                _prop("region", vm.region),
                _prop("zone", vm.zone),
                _prop("instance-id", vm.id),
                _prop("vm-name", vm.name),
                _prop("instance-type", vm.instance_type),
                _prop("technology", vm.technology.value),
                _prop("state", vm.state),
                _prop("level", vm.level.value, remarks=md(vm.level_reason)),
            ),
        }

    def _references(self) -> list[str]:
        refs = {r for vm in self.run.vms for f in vm.findings for r in f.references}
        refs.update(r for vm in self.run.vms for r in vm.gdpr.references)
        return sorted(refs)

    def _reviewed_controls(self) -> JSON:
        return {
            "description": "The objectives of the rule packs used: for each VM, whether each "
            "party that could reach the plaintext is shut out, and whether the provider as a "
            "whole is. The legal provisions the rules cite are listed as `reference` props: the "
            "findings are evidence relevant to them, not a compliance verdict.",
            "props": _props(
                _prop("reference", r, cls=_reference_class(r)) for r in self._references()
            ),
            "control-selections": [
                {
                    "description": "All objectives of the rule packs listed in the metadata.",
                    "include-all": {},
                }
            ],
        }

    # evidence
    def _vm_evidence(self, vm: VMResult) -> dict[str, list[str]]:
        """sha256 -> the document sections it backs, for every item the VM uses, in order."""
        used: dict[str, list[str]] = {}
        for section, shas in vm.evidence.items():
            for sha in shas:
                used.setdefault(sha, [])
                if section not in used[sha]:
                    used[sha].append(section)
        for ps in vm.party_status.values():
            for sha in ps.evidence:
                used.setdefault(sha, [])
        for f in vm.findings:
            for sha in f.evidence:
                used.setdefault(sha, [])
        return {sha: sections for sha, sections in used.items() if sha in self.run.evidence}

    def _resource_uuid(self, sha: str) -> str:
        return self.ev_resource.setdefault(sha, self.uid("evidence", sha))

    def _evidence_observations(self, vm: VMResult) -> tuple[list[JSON], dict[str, str]]:
        out: list[JSON] = []
        by_sha: dict[str, str] = {}
        subject = {
            "subject-uuid": self.vm_uuid(vm),
            "type": "inventory-item",
            "title": _line(md(vm.key)),
        }
        for sha, sections in self._vm_evidence(vm).items():
            ev = self.run.evidence[sha]
            obs_uuid = self.uid("observation", vm.key, sha)
            by_sha[sha] = obs_uuid
            tested = ev.verification is not None
            where = f" behind the sections {', '.join(md(s) for s in sections)}" if sections else ""
            verdict = ""
            if ev.verification is not None:
                ok = "passed" if ev.verification.ok else "failed"
                verdict = f" Verified by cc-auditor ({md(ev.verification.verifier)}): {ok}"
                verdict += f", {md(ev.verification.reason)}." if ev.verification.reason else "."
            out.append(
                {
                    "uuid": obs_uuid,
                    "title": _line(
                        f"{md(ev.kind)} from {ev.source.value} for {md(vm.name or vm.id)}"
                    ),
                    "description": f"Evidence {md(ev.kind)} vouched for by {ev.source.value}"
                    f"{' via ' + md(ev.call) if ev.call else ''}{where} of VM {md(vm.key)}."
                    f"{verdict}",
                    "props": _props(
                        _prop("vm-key", vm.key),
                        (_prop("section", s) for s in sections),
                    ),
                    "methods": ["TEST" if tested else "EXAMINE"],
                    "origins": self.origins(),
                    "subjects": [subject],
                    "relevant-evidence": [self._relevant_evidence(sha, ev)],
                    "collected": _ts(ev.collected_at),
                }
            )
        return out, by_sha

    def _relevant_evidence(self, sha: str, ev: Evidence) -> JSON:
        ver = ev.verification
        return {
            "href": f"#{self._resource_uuid(sha)}",
            "description": f"{md(ev.kind)} ({md(ev.encoding)}) from {ev.source.value}"
            f"{' via ' + md(ev.call) if ev.call else ''}, SHA-256 {md(sha)}.",
            "props": _props(
                _prop("sha256", sha),
                _prop("kind", ev.kind),
                _prop("source", ev.source.value),
                _prop("call", ev.call),
                _prop("encoding", ev.encoding),
                _prop("resource", ev.resource),
                _prop("verifier", ver.verifier if ver else None),
                _prop(
                    "verification-ok",
                    _bool(ver.ok) if ver else None,
                    remarks=md(ver.reason) if ver and ver.reason else "",
                ),
            ),
        }

    def _evidence_resources(self) -> Iterator[JSON]:
        """Made when written: after the observations, which decide the items and their order."""
        for sha, res_uuid in self.ev_resource.items():
            ev = self.run.evidence[sha]
            resource: JSON = {
                "uuid": res_uuid,
                "title": _line(f"{md(ev.kind)} {md(ev.resource or '')}"),
                "description": f"Evidence item as collected from {ev.source.value}"
                f"{' via ' + md(ev.call) if ev.call else ''}. SHA-256 {md(sha)} over "
                + (
                    "the decoded bytes."
                    if ev.encoding == "base64"
                    else "the canonical JSON (sorted keys, no whitespace, UTF-8) of the item."
                ),
                "props": _props(
                    _prop("sha256", sha),
                    _prop("kind", ev.kind),
                    _prop("source", ev.source.value),
                    _prop("call", ev.call),
                    _prop("encoding", ev.encoding),
                    _prop("provider", ev.provider),
                    _prop("account", ev.account),
                    _prop("region", ev.region),
                    _prop("resource", ev.resource),
                    _prop("collected", _ts(ev.collected_at)),
                ),
            }
            href = _raw_href(ev.ref)
            if href is not None:
                rlink: JSON = {"href": href}
                if ev.encoding == "base64":
                    rlink["media-type"] = "application/octet-stream"
                    if href.startswith("evidence/"):  # stored byte for byte
                        rlink["hashes"] = [{"algorithm": "SHA-256", "value": sha}]
                else:
                    rlink["media-type"] = "application/json"
                resource["rlinks"] = [rlink]
            yield resource

    def _plan_resource(self, plan_uuid: str) -> JSON:
        run = self.run
        scope = run.scope
        return {
            "uuid": plan_uuid,
            "title": "Assessment plan: cc-auditor rule packs and scope",
            "description": "There is no separate OSCAL assessment plan. The plan is the rule "
            "packs applied (identified by SHA-256) to the scope requested, listed as props.",
            "props": _props(
                (
                    _prop("rule-pack", f"{p.name} {p.version}", group=f"pack-{i}")
                    for i, p in enumerate(run.rule_packs, 1)
                ),
                (
                    _prop("rule-pack-sha256", p.sha256, group=f"pack-{i}")
                    for i, p in enumerate(run.rule_packs, 1)
                ),
                (
                    _prop("rule-pack-rules", p.rules, group=f"pack-{i}")
                    for i, p in enumerate(run.rule_packs, 1)
                ),
                (_prop("scope-provider", p) for p in scope.providers),
                (_prop("scope-account", a) for a in scope.accounts),
                (_prop("scope-region", r) for r in scope.regions),
            ),
        }

    # coverage gaps
    def _gaps(self) -> dict[str, tuple[Gap, list[str]]]:
        """gap key -> (gap, keys of the VMs it leaves incomplete), run gaps first."""
        out: dict[str, tuple[Gap, list[str]]] = {}
        for gap in self.run.coverage.gaps:
            out.setdefault(_gap_key(gap), (gap, []))
        for vm in self.run.vms:
            for gap in vm.gaps:
                _, vms = out.setdefault(_gap_key(gap), (gap, []))
                if vm.key not in vms:
                    vms.append(vm.key)
        return out

    def _gap_observation(self, key: str, gap: Gap, vm_keys: list[str]) -> JSON:
        obs_uuid = self.gap_obs.setdefault(key, self.uid("gap-observation", key))
        where = " / ".join(md(p) for p in (gap.provider, gap.account, gap.region) if p)
        obs: JSON = {
            "uuid": obs_uuid,
            "title": _line(f"Coverage gap: {md(gap.call)} failed ({md(gap.code)})"),
            "description": f"The call {md(gap.call)} failed for {where}: {md(gap.code)}, "
            f"{md(gap.message)}. "
            + (
                "No VM of this scope was seen: the scope was not audited."
                if gap.affects == "scope"
                else f"The facts it provides are missing from {len(vm_keys)} VM(s); "
                "rules that need them yield UNDETERMINED."
            ),
            "props": _gap_props(gap),
            "methods": ["EXAMINE"],
            "types": ["finding"],
            "origins": self.origins(),
        }
        _with(
            obs,
            "subjects",
            [
                {"subject-uuid": self._stable("inventory-item", k), "type": "inventory-item"}
                for k in vm_keys
            ],
        )
        obs["collected"] = _ts(self.run.finished_at)
        return obs

    def _gap_risk(self, key: str, gap: Gap) -> JSON:
        where = " / ".join(md(p) for p in (gap.provider, gap.account, gap.region) if p)
        sections = ", ".join(md(s) for s in gap.sections)
        return {
            "uuid": self.gap_risk.setdefault(key, self.uid("gap-risk", key)),
            "title": _line(f"Not audited: {md(gap.call)} for {where}"),
            "description": f"{md(gap.code)}: {md(gap.message)}",
            "statement": (
                "No VM of this scope was seen, so the report cannot say whether it holds VMs "
                "whose plaintext the provider can reach."
                if gap.affects == "scope"
                else "Facts are missing"
                + (f" (sections {sections})" if sections else "")
                + ": the party statuses that depend on them are UNDETERMINED. Missing evidence "
                "can only lower a level, never raise it."
            ),
            "props": _gap_props(gap),
            "status": "open",
            "origins": self.origins(),
            "related-observations": [{"observation-uuid": self.gap_obs[key]}],
        }

    # findings
    def _party_finding(
        self, vm: VMResult, party: Party, obs_by_sha: dict[str, str], vm_gaps: list[str]
    ) -> JSON:
        ps = vm.party_status.get(party)
        status = vm.parties.get(party, ps.status if ps else Status.UNDETERMINED)
        reason = ps.reason if ps else "No party status was recorded for this party."
        rules = [f for f in vm.findings if f.party == party]
        rule_ids = list(dict.fromkeys([*(ps.rules if ps else []), *(f.rule_id for f in rules)]))
        by_rule: dict[str, Finding] = {}
        for f in rules:
            by_rule.setdefault(f.rule_id, f)
        shas = list(
            dict.fromkeys([*(ps.evidence if ps else []), *(s for f in rules for s in f.evidence)])
        )
        related = [obs_by_sha[s] for s in shas if s in obs_by_sha]
        undetermined = status is Status.UNDETERMINED
        if undetermined:
            related += [self.gap_obs[k] for k in vm_gaps]
        severities = [f.severity for f in rules]
        refs = sorted({r for f in rules for r in f.references})
        remediations = list(dict.fromkeys(f.remediation for f in rules if f.remediation))
        finding: JSON = {
            "uuid": self.uid("finding", vm.key, party.value),
            "title": _line(f"{md(vm.name or vm.id)}: {party.value} {status.value}"),
            "description": f"Can the {party.value.replace('_', ' ')} reach the plaintext of VM "
            f"{md(vm.key)}? {status.value}: {md(reason)}",
            "props": _props(
                _prop("vm-key", vm.key),
                _prop("party", party.value),
                _prop("party-status", status.value),
                _prop("provider-party", _bool(party in PROVIDER_PARTIES)),
                _prop("level", vm.level.value),
                _prop("severity", max(severities, key=_SEVERITY_RANK.__getitem__).value)
                if severities
                else None,
                _prop("undetermined", "true", remarks=md(reason)) if undetermined else None,
                _rule_props(rule_ids, by_rule),
                (_prop("reference", r, cls=_reference_class(r)) for r in refs),
            ),
            "origins": self.origins(),
            "target": {
                "type": "objective-id",
                "target-id": party.value,
                "title": f"{party.value.replace('_', ' ')} {_OBJECTIVE_TITLE}",
                "props": _props(_prop("party-status", status.value)),
                "status": {
                    "state": "satisfied" if status is Status.EXCLUDED else "not-satisfied",
                    "reason": _REASON[status],
                    "remarks": f"{status.value}: {md(reason)}",
                },
            },
        }
        _with(finding, "related-observations", [{"observation-uuid": u} for u in related])
        if undetermined:
            _with(finding, "related-risks", [{"risk-uuid": self.gap_risk[k]} for k in vm_gaps])
        if remediations:
            finding["remarks"] = "What would change it:\n\n" + "\n".join(
                f"* {md_block(r)}" for r in remediations
            )
        return finding

    def _gdpr_finding(self, vm: VMResult, obs_by_sha: dict[str, str], vm_gaps: list[str]) -> JSON:
        g = vm.gdpr
        related = [*obs_by_sha.values(), *(self.gap_obs[k] for k in vm_gaps)]
        finding: JSON = {
            "uuid": self.uid("finding", vm.key, GDPR_OBJECTIVE),
            "title": _line(
                f"{md(vm.name or vm.id)}: can the provider reach the plaintext? "
                f"{g.provider_can_access.value}"
            ),
            "description": f"VM {md(vm.key)}, level {vm.level.value}. {md(g.summary)}",
            "props": _props(
                _prop("vm-key", vm.key),
                _prop("level", vm.level.value, remarks=md(vm.level_reason)),
                _prop("provider-can-access", g.provider_can_access.value),
                (_prop("blocking-party", p.value) for p in g.blocking_parties),
                _prop("region-jurisdiction", g.region_jurisdiction),
                (_prop("reference", r, cls=_reference_class(r)) for r in g.references),
            ),
            "origins": self.origins(),
            "target": {
                "type": "objective-id",
                "target-id": GDPR_OBJECTIVE,
                "title": f"The provider {_OBJECTIVE_TITLE}",
                "props": _props(_prop("provider-can-access", g.provider_can_access.value)),
                "status": {
                    "state": "satisfied" if g.provider_can_access is Answer.NO else "not-satisfied",
                    "reason": {Answer.NO: "pass", Answer.YES: "fail"}.get(
                        g.provider_can_access, "other"
                    ),
                },
            },
        }
        _with(finding, "related-observations", [{"observation-uuid": u} for u in related])
        _with(finding, "related-risks", [{"risk-uuid": self.gap_risk[k]} for k in vm_gaps])
        if g.would_change:
            finding["remarks"] = "What would change it:\n\n" + "\n".join(
                f"* {md_block(w)}" for w in g.would_change
            )
        return finding


def _rule_props(rule_ids: Sequence[str], by_rule: dict[str, Finding]) -> list[JSON]:
    """`rule-id`, `rule-status`, `rule-severity` of each rule, paired by `group`."""
    out: list[JSON | None] = []
    for i, rid in enumerate(rule_ids, 1):
        group = f"rule-{i}"
        rule = by_rule.get(rid)
        out.append(_prop("rule-id", rid, group=group, remarks=md(rule.title) if rule else ""))
        if rule is not None:
            out.append(_prop("rule-status", rule.status.value, group=group))
            out.append(_prop("rule-severity", rule.severity.value, group=group))
    return _props(out)


def _gap_key(gap: Gap) -> str:
    return json.dumps(
        [gap.provider, gap.account, gap.region, gap.call, gap.code, gap.resource, gap.affects],
        ensure_ascii=False,
    )


def _gap_props(gap: Gap) -> list[JSON]:
    return _props(
        _prop("provider", gap.provider),
        _prop("account", gap.account),
        _prop("region", gap.region),
        _prop("call", gap.call),
        _prop("code", gap.code),
        _prop("resource", gap.resource),
        _prop("affects", gap.affects),
        (_prop("section", s) for s in gap.sections),
    )
