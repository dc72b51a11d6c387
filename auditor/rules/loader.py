"""Rule packs: YAML files of rules with CEL conditions, validated before anything runs.

A pack is data a compliance officer can read. Loading checks its structure with pydantic,
compiles every condition, and checks that conditions only read known document sections, so a
bad pack fails with file, rule id and position instead of giving a wrong audit.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cel
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from auditor.document import SECTIONS, referenced_sections
from auditor.model import PROVIDER_NAMES, Party, RulePackRef, Severity, Status
from auditor.yaml_lines import line_of

BUILTIN_DIR = Path(__file__).parent
MAX_PACK_BYTES = 2 * 1024 * 1024
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,127}$")
PROVIDERS = PROVIDER_NAMES
#: Technologies a remediation can be fitted to (lower-case `vm.technology` values).
TECHNOLOGY_KEYS = ("none", "sev", "sev_es", "sev_snp", "tdx", "unknown")
REMEDIATION_KEYS = frozenset({*PROVIDERS, *TECHNOLOGY_KEYS, "default"})


class RulePackError(Exception):
    """A rule pack that cannot be used; the message names file, rule and position."""

    def __init__(self, path: str, message: str, rule_id: str | None = None) -> None:
        self.path = path
        self.rule_id = rule_id
        self.detail = message
        where = f"{path}: rule '{rule_id}'" if rule_id else path
        super().__init__(f"{where}: {message}")


class References(BaseModel):
    """Where a rule comes from: legal hooks and the sources that explain it."""

    model_config = ConfigDict(extra="forbid")
    gdpr: list[str] = Field(default_factory=list)
    edpb: list[str] = Field(default_factory=list)
    c5: list[str] = Field(default_factory=list)
    seeds: list[str] = Field(default_factory=list)
    docs: list[str] = Field(default_factory=list)

    def flat(self) -> list[str]:
        return (
            [f"GDPR {g}" for g in self.gdpr]
            + [f"EDPB Recommendations 01/2020 {e}" for e in self.edpb]
            + [f"C5:2026 {c}" for c in self.c5]
            + list(self.docs)
        )


class Rule(BaseModel):
    """One rule: when `when` holds for a VM, `party` gets `effect` (CAN_ACCESS is a veto)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    title: str = Field(min_length=3)
    party: Party
    effect: Status
    when: str = Field(min_length=1)
    #: Optional CEL expression giving a string that says what matched (e.g. the bulletins a
    #: TCB is below); appended to the finding's reason.
    detail: str | None = None
    providers: list[str] | None = None
    severity: Severity = Severity.MEDIUM
    rationale: str = Field(min_length=3)
    remediation: dict[str, str] = Field(default_factory=dict)
    references: References = Field(default_factory=References)

    @field_validator("title", "rationale", mode="after")
    @classmethod
    def _strip(cls, v: str) -> str:
        return " ".join(v.split())

    @field_validator("remediation", mode="after")
    @classmethod
    def _strip_remediation(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            provider, _, tech = key.partition(".")
            ok = key in REMEDIATION_KEYS or (provider in PROVIDERS and tech in TECHNOLOGY_KEYS)
            if not ok:
                raise ValueError(
                    f"remediation key {key!r}: use a provider ({', '.join(PROVIDERS)}), a "
                    f"technology ({', '.join(TECHNOLOGY_KEYS)}), provider.technology or default"
                )
        return {k: " ".join(text.split()) for k, text in v.items()}

    @field_validator("id")
    @classmethod
    def _id_format(cls, v: str) -> str:
        if not _RULE_ID.match(v):
            raise ValueError("rule id must be lower-case letters, digits, '.', '-', '_'")
        return v

    @field_validator("effect")
    @classmethod
    def _effect(cls, v: Status) -> Status:
        if v is Status.UNDETERMINED:
            raise ValueError("effect UNDETERMINED is not a rule effect: missing input gives it")
        return v

    @field_validator("providers")
    @classmethod
    def _providers(cls, v: list[str] | None) -> list[str] | None:
        for p in v or []:
            if p not in PROVIDERS:
                raise ValueError(f"unknown provider {p!r} ({', '.join(PROVIDERS)})")
        return v

    @property
    def is_veto(self) -> bool:
        return self.effect is Status.CAN_ACCESS

    def applies_to(self, provider: str) -> bool:
        return self.providers is None or provider in self.providers

    def remediation_for(self, provider: str, technology: str | None = None) -> str | None:
        """The advice fitted to the VM: provider.technology, provider, technology, default."""
        tech = (technology or "").lower()
        for key in (f"{provider}.{tech}", provider, tech, "default"):
            if key in self.remediation:
                return self.remediation[key]
        return None


class PartyDefault(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str

    @field_validator("reason", mode="after")
    @classmethod
    def _strip(cls, v: str) -> str:
        return " ".join(v.split())


class ReferenceMeasurement(BaseModel):
    """A launch measurement the owner expects (SNP MEASUREMENT or TDX MRTD), named."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    technology: str = Field(default="SEV_SNP", pattern="^(SEV_SNP|TDX)$")
    measurement: str = Field(pattern="^[0-9a-fA-F]{96}$")
    source: str = ""


class ReferenceBoot(BaseModel):
    """A measured boot the owner expects, compared with a replayed vTPM event log: Secure Boot,
    the boot applications (PE image digests in PCR 4, in order) and the kernel command line.
    Fields left out are not compared."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    secure_boot: bool | None = None
    applications: list[str] | None = None
    kernel_cmdline: str | None = None
    source: str = ""

    @field_validator("applications")
    @classmethod
    def _digests(cls, v: list[str] | None) -> list[str] | None:
        for digest in v or []:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ValueError(f"application digest {digest!r} is not 64 hex characters")
        return [d.lower() for d in v] if v is not None else None

    @model_validator(mode="after")
    def _something(self) -> ReferenceBoot:
        if self.secure_boot is None and self.applications is None and self.kernel_cmdline is None:
            raise ValueError(
                f"reference_boot {self.name!r} compares nothing: give secure_boot, "
                "applications or kernel_cmdline"
            )
        return self


class PackFile(BaseModel):
    """The YAML file as written."""

    model_config = ConfigDict(extra="forbid")
    pack: str = Field(min_length=1)
    version: str = "1"
    description: str = ""
    parties: dict[Party, PartyDefault] = Field(default_factory=dict)
    disable: list[str] = Field(default_factory=list)
    reference_measurements: list[ReferenceMeasurement] = Field(default_factory=list)
    reference_boot: list[ReferenceBoot] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, v: Any) -> str:
        return str(v)


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    program: Any
    sections: tuple[str, ...]
    pack: str
    detail_program: Any = None


@dataclass(frozen=True)
class RulePack:
    """A loaded, compiled pack and the reference recorded in the run."""

    ref: RulePackRef
    spec: PackFile
    rules: tuple[CompiledRule, ...]


def _format_cel_error(err: Exception) -> str:
    text = str(err).replace("<input>", "when")
    m = re.search(r"when:(\d+):(\d+): (.*)", text)
    if m:
        return (
            f"CEL error at line {m.group(1)}, column {m.group(2)} of the expression: "
            f"{m.group(3).strip()}"
        )
    return f"CEL error: {text}"


#: The term every EXCLUDED rule must have at the top level of its condition (DESIGN.md §2).
VERIFIED_TERM = "vm.hardware.verified == true"
_STRINGS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def _top_level_terms(expression: str) -> list[str] | None:
    """The `&&` terms of an expression at depth 0, or None when it is not a plain conjunction
    (a top-level `||` or `?:` could make it true without any one term)."""
    code = _STRINGS.sub('""', expression).strip()
    while code.startswith("(") and _closing(code, 0) == len(code) - 1:
        code = code[1:-1].strip()
    terms, depth, start, i = [], 0, 0, 0
    while i < len(code):
        char = code[i]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif (depth == 0 and code.startswith("||", i)) or (depth == 0 and char == "?"):
            return None
        elif depth == 0 and code.startswith("&&", i):
            terms.append(code[start:i])
            start = i + 2
            i += 1
        i += 1
    terms.append(code[start:])
    return [" ".join(t.split()) for t in terms]


def _closing(code: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(code)):
        if code[i] in "([{":
            depth += 1
        elif code[i] in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def requires_verified_hardware(expression: str) -> bool:
    """Can this condition hold only when `vm.hardware.verified == true`? Checked on its shape:
    that comparison must be one of its top-level `&&` terms."""
    terms = _top_level_terms(expression)
    wanted = " ".join(VERIFIED_TERM.split())
    return terms is not None and any(
        " ".join(t.replace("==", " == ").split()) == wanted for t in terms
    )


def compile_rule(rule: Rule, path: str, pack: str, line: int | None = None) -> CompiledRule:
    """Compile one rule's condition and check the sections it reads; `line` is where the rule's
    `when` sits in its file, named in a CEL error next to the position inside the expression."""
    where = f"line {line}: " if line else ""
    if rule.effect is Status.EXCLUDED and not requires_verified_hardware(rule.when):
        raise RulePackError(
            path,
            "effect EXCLUDED is set only from hardware evidence this tool verified: the "
            f"condition must have `{VERIFIED_TERM}` as one of its top-level && terms "
            "(use CLAIMED_EXCLUDED for what anything else shows)",
            rule.id,
        )
    try:
        program = cel.compile(rule.when)
    except Exception as err:  # the CEL binding raises ValueError with the position
        raise RulePackError(path, where + _format_cel_error(err), rule.id) from err
    detail_program = None
    if rule.detail:
        try:
            detail_program = cel.compile(rule.detail)
        except Exception as err:
            raise RulePackError(path, "detail: " + _format_cel_error(err), rule.id) from err
    sections = referenced_sections(rule.when + " " + (rule.detail or ""))
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise RulePackError(
            path,
            f"condition reads unknown field vm.{unknown[0]} (known: {', '.join(sorted(SECTIONS))})",
            rule.id,
        )
    return CompiledRule(
        rule=rule,
        program=program,
        sections=tuple(sections),
        pack=pack,
        detail_program=detail_program,
    )


def _pydantic_message(err: ValidationError, data: Any) -> tuple[str, str | None]:
    first = err.errors()[0]
    loc = first["loc"]
    rule_id: str | None = None
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules") if isinstance(data, dict) else None
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            rule_id = str(rules[loc[1]].get("id", f"#{loc[1] + 1}"))
        else:
            rule_id = f"#{loc[1] + 1}"
        field = ".".join(str(x) for x in loc[2:]) or "rule"
    else:
        field = ".".join(str(x) for x in loc) or "pack"
    return f"{field}: {first['msg']}", rule_id


def load_pack(path: str | Path) -> RulePack:
    """Load, validate and compile one pack file."""
    p = Path(path)
    shown = str(p)
    try:
        data_bytes = p.read_bytes()
    except OSError as err:
        raise RulePackError(shown, f"cannot read: {err.strerror or err}") from err
    if len(data_bytes) > MAX_PACK_BYTES:
        raise RulePackError(shown, f"file larger than {MAX_PACK_BYTES} bytes")
    try:
        data = yaml.safe_load(data_bytes)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise RulePackError(shown, f"YAML syntax error{where}: {problem}") from err
    except RecursionError as err:  # untrusted input: nesting deep enough to exhaust the stack
        raise RulePackError(shown, "YAML nested too deeply") from err
    if not isinstance(data, dict):
        raise RulePackError(shown, "a rule pack is a mapping with 'pack' and 'rules'")
    try:
        spec = PackFile.model_validate(data)
    except ValidationError as err:
        msg, rule_id = _pydantic_message(err, data)
        raise RulePackError(shown, msg, rule_id) from err
    seen: set[str] = set()
    compiled: list[CompiledRule] = []
    root = _compose(data_bytes)
    for index, rule in enumerate(spec.rules):
        if rule.id in seen:
            raise RulePackError(shown, "duplicate rule id in this pack", rule.id)
        seen.add(rule.id)
        line = line_of(root, ("rules", index, "when"))
        compiled.append(compile_rule(rule, shown, spec.pack, line))
    ref = RulePackRef(
        name=spec.pack,
        version=spec.version,
        sha256=hashlib.sha256(data_bytes).hexdigest(),
        path=shown if p.parent != BUILTIN_DIR else f"builtin:{p.name}",
        rules=len(compiled),
    )
    return RulePack(ref=ref, spec=spec, rules=tuple(compiled))


def _compose(data: bytes) -> yaml.Node | None:
    """The YAML node tree, for line numbers (the file already parsed once, so this cannot fail
    in a new way; if it does, errors just lose their line)."""
    try:
        return yaml.compose(data)
    except (yaml.YAMLError, RecursionError):
        return None


def builtin_pack_paths() -> list[Path]:
    return sorted(BUILTIN_DIR.glob("*.yaml"))


def load_packs(extra: list[str | Path] | None = None, builtin: bool = True) -> list[RulePack]:
    """The built-in packs, then the user's packs in order (later ones override earlier ones)."""
    paths: list[str | Path] = [*builtin_pack_paths()] if builtin else []
    paths.extend(extra or [])
    return [load_pack(p) for p in paths]
