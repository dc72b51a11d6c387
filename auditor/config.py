"""`ccaudit.yaml`: what a scheduled scan covers, what it writes and when it fails, in one file.

A CI job should not carry its policy in a long command line, so the scope per cloud, rule packs,
reference measurements, outputs, signing key, thresholds, guest evidence and store live here,
validated before anything runs. The pydantic models below are the single source of truth: the
JSON Schema published in `docs/ccaudit.schema.json` is generated from them (`config_schema`), and
`load_config` reports a bad file as `file:line: key.path: message`.

Rules of resolution: relative paths are relative to the directory of the config file (so a
config works from any working directory); command-line flags override the file; the file is only
read when given (`--config`): a `ccaudit.yaml` lying in the working directory is never picked up
implicitly, so what a scheduled job scans never depends on where it happens to run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from auditor.model import PROVIDER_NAMES, Level
from auditor.ratelimits import limits_with
from auditor.yaml_lines import line_of

__all__ = [
    "OUTPUT_FORMATS",
    "AwsScope",
    "AzureScope",
    "Config",
    "ConfigError",
    "GcpScope",
    "ReferenceMeasurement",
    "Thresholds",
    "config_schema",
    "config_schema_text",
    "load_config",
    "parse_config",
]

CONFIG_VERSION = 1
#: Largest config file read: untrusted input is bounded (docs/reliability.md).
MAX_CONFIG_BYTES = 1024 * 1024
#: Report formats a config may send to a path (`auditor.reports.FORMATS`; a test keeps them equal).
OUTPUT_FORMATS = (
    "json", "html", "pdf", "csv", "parquet", "sarif", "junit", "oscal", "markdown", "ocsf", "asff"
)  # fmt: skip
OutputFormat = Literal[
    "json", "html", "pdf", "csv", "parquet", "sarif", "junit", "oscal", "markdown", "ocsf", "asff"
]
LevelName = Literal["L0", "L1", "L2", "L3", "L4"]


class ConfigError(Exception):
    """An unusable config file: names the file, the line, the key path and what is wrong."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AwsScope(_Section):
    """AWS: one profile per account (boto3's credential chain when none), and the regions."""

    profiles: list[str] = Field(default_factory=list, description="AWS profiles, one per account")
    regions: list[str] = Field(
        default_factory=list, description="regions to read; empty: every enabled region"
    )


class GcpScope(_Section):
    projects: list[str] = Field(
        default_factory=list, description="project ids; empty: the credentials' project"
    )
    log_window_days: int | None = Field(
        default=None, ge=1, le=400, description="how far back to read integrity logs (days)"
    )


class AzureScope(_Section):
    subscriptions: list[str] = Field(
        default_factory=list, description="subscription ids; empty: every one the credential lists"
    )


class LibvirtScope(_Section):
    """KVM hosts read through libvirt: their URIs, where they are and who runs them."""

    connect: list[str] = Field(
        default_factory=list, description="libvirt URIs (qemu:///system, qemu+ssh://host/system)"
    )
    location: str = Field(default="", description="the country the hosts are in (as reported)")
    operator: str = Field(default="", description="who runs the hosts (empty: the owner)")
    read_write: bool = Field(
        default=False,
        description="open the connections read-write, for domain capabilities and launch "
        "measurements (nothing is changed)",
    )


class Scope(_Section):
    """Which clouds to read. A cloud is scanned when its section is present (even empty)."""

    aws: AwsScope | None = None
    gcp: GcpScope | None = None
    azure: AzureScope | None = None
    libvirt: LibvirtScope | None = None
    replay: str | None = Field(
        default=None, description="audit this replay or run directory instead of the live clouds"
    )

    def providers(self) -> list[str]:
        return [name for name in PROVIDER_NAMES if getattr(self, name) is not None]


class ReferenceMeasurement(_Section):
    """A launch measurement the owner accepts (a reproducible or endorsed firmware build)."""

    name: str = Field(min_length=1, description="what this measurement is, e.g. the build")
    technology: Literal["SEV_SNP", "TDX"]
    measurement: str = Field(
        pattern=r"^[0-9a-fA-F]{96}$",
        description="48 bytes in hex: SEV-SNP MEASUREMENT or TDX MRTD",
    )

    @field_validator("measurement")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class Thresholds(_Section):
    """Policy gates: any one failing makes the scan exit 1."""

    fail_below: LevelName | None = Field(
        default=None, description="exit 1 if any VM is below this level"
    )
    fail_below_scopes: dict[str, LevelName] = Field(
        default_factory=dict,
        description='per-scope levels: "provider" or "provider/account" -> level; the most '
        "specific entry wins over fail_below",
    )
    fail_on_regression: bool = Field(
        default=False, description="exit 1 if any VM or party is worse than in the baseline"
    )
    max_undetermined: int | None = Field(
        default=None, ge=0, description="exit 1 if more party statuses than this are UNDETERMINED"
    )

    @field_validator("fail_below_scopes")
    @classmethod
    def _scope_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            provider, _, account = key.partition("/")
            if provider not in PROVIDER_NAMES or (key.count("/") and not account):
                raise ValueError(
                    f'scope {key!r} must be "aws", "gcp", "azure", "libvirt" or '
                    '"<provider>/<account>"'
                )
        return value


class Verification(_Section):
    """How hardware evidence is judged (the `ccaudit scan` options of the same names)."""

    offline: bool | None = Field(
        default=None, description="never fetch AMD KDS certificates; use the evidence or cache"
    )
    tcb_table: str | None = Field(default=None, description="your own minimum-TCB table (YAML)")
    key_broker_keys: list[str] = Field(
        default_factory=list, description="public keys (PEM) of your key broker"
    )
    endorsement_root: str | None = Field(
        default=None, description="root certificate for GCE firmware launch endorsements"
    )
    tdx_collateral: str | None = Field(
        default=None, description="Intel TCB Info, QE Identity and CRLs directory"
    )


class Maa(_Section):
    """Pinned Microsoft Azure Attestation issuers and their signing keys."""

    issuers: list[str] = Field(default_factory=list)
    jwks: str | None = Field(default=None, description="JWKS file with the issuers' keys")


class Config(_Section):
    """The whole of `ccaudit.yaml`."""

    version: Literal[1] = 1
    scope: Scope = Field(default_factory=Scope)
    rules: list[str] = Field(default_factory=list, description="extra rule pack files")
    reference_measurements: list[ReferenceMeasurement] = Field(default_factory=list)
    outputs: dict[OutputFormat, str] = Field(
        default_factory=dict,
        description="report format -> path (a file; a directory for csv and parquet)",
    )
    signing_key: str | None = Field(default=None, description="Ed25519 key to sign the manifest")
    thresholds: Thresholds = Field(default_factory=Thresholds)
    baseline: str | None = Field(
        default=None, description="run to compare with: a run directory, a run id or `latest`"
    )
    guest_evidence: str | None = Field(default=None, description="guest evidence directory")
    verification: Verification = Field(default_factory=Verification)
    maa: Maa = Field(default_factory=Maa)
    store: str | None = Field(default=None, description="run store directory")
    rate_limits: dict[str, str] = Field(
        default_factory=dict,
        description="request rate limits where the owner's differ from the documented ones (a "
        "raised quota): CLOUD:FAMILY (aws:ec2-read, azure:arm-read, gcp:compute-read, "
        "gcp:logging-read) -> BURST/PER_SECOND (a bucket), CALLS/SECONDSs (per interval) or off",
    )

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _off_unquoted(cls, value: Any) -> Any:
        # YAML reads an unquoted `off` as false
        if isinstance(value, dict):
            return {k: "off" if v is False else v for k, v in value.items()}
        return value

    @field_validator("rate_limits")
    @classmethod
    def _usable_limits(cls, value: dict[str, str]) -> dict[str, str]:
        limits_with(value)  # LimitError (a ValueError) names the one that cannot be used
        return value

    #: Where the file was read from; relative paths resolve against its directory.
    _base_dir: Path = PrivateAttr(default_factory=lambda: Path("."))
    #: The file set nothing (empty, or comments only): the CLI warns about it.
    _empty: bool = PrivateAttr(default=False)

    @property
    def is_empty(self) -> bool:
        return self._empty

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def path(self, value: str | None) -> Path | None:
        """A path from the file, resolved against the file's directory (`~` expanded)."""
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def scan_options(self) -> dict[str, Any]:
        """The `auditor.api.scan` keyword arguments this config sets (absent ones omitted)."""
        s = self.scope
        opts: dict[str, Any] = {}
        if s.providers():
            opts["provider"] = s.providers()
        if s.replay is not None:
            opts["replay"] = self.path(s.replay)
        if s.aws is not None:
            if s.aws.profiles:
                opts["profiles"] = list(s.aws.profiles)
            if s.aws.regions:
                opts["regions"] = list(s.aws.regions)
        if s.gcp is not None:
            if s.gcp.projects:
                opts["projects"] = list(s.gcp.projects)
            if s.gcp.log_window_days is not None:
                opts["log_window_days"] = s.gcp.log_window_days
        if s.azure is not None and s.azure.subscriptions:
            opts["subscriptions"] = list(s.azure.subscriptions)
        if s.libvirt is not None:
            if s.libvirt.connect:
                opts["connect"] = list(s.libvirt.connect)
            for name in ("location", "operator"):
                if getattr(s.libvirt, name):
                    opts[name] = getattr(s.libvirt, name)
            if s.libvirt.read_write:
                opts["libvirt_read_write"] = True
        if self.rules:
            opts["rules"] = [self.path(r) for r in self.rules]
        if self.guest_evidence is not None:
            opts["guest_evidence"] = self.path(self.guest_evidence)
        if self.maa.issuers:
            opts["maa_issuers"] = list(self.maa.issuers)
        if self.maa.jwks is not None:
            opts["maa_jwks"] = self.path(self.maa.jwks)
        v = self.verification
        if v.offline is not None:
            opts["offline"] = v.offline
        for name in ("tcb_table", "endorsement_root", "tdx_collateral"):
            if (value := getattr(v, name)) is not None:
                opts[name] = self.path(value)
        if v.key_broker_keys:
            opts["key_broker_keys"] = [self.path(k) for k in v.key_broker_keys]
        if self.reference_measurements:
            opts["reference_measurements"] = [m.model_dump() for m in self.reference_measurements]
        if self.rate_limits:
            opts["rate_limits"] = dict(self.rate_limits)
        return opts

    def without_store(self) -> Config:
        """This config minus `store`: for callers that keep the run themselves (the CLI)."""
        return self.model_copy(update={"store": None})

    def output_paths(self) -> dict[str, Path]:
        return {fmt: p for fmt, value in self.outputs.items() if (p := self.path(value))}


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate YAML text as a config; `ConfigError` lists every problem with line and key."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(source, [f"{where}not valid YAML: {problem}"]) from err
    except RecursionError as err:  # untrusted input: nesting deep enough to exhaust the stack
        raise ConfigError(source, ["not valid YAML: nested too deeply"]) from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["line 1: (top level): must be a mapping of keys"])
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = tuple(e["loc"])
            # pydantic adds the failing Literal/enum branch name to some locations; drop it
            loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
            line = line_of(root, loc)
            msg = e["msg"]
            if loc and loc[-1] == "[key]":
                loc = loc[:-1]
                msg = f"not an allowed key: {msg}"
            if e["type"] == "extra_forbidden":
                msg = "unknown key (see docs/config.md)"
            elif e["type"] == "string_pattern_mismatch" and loc[-1:] == ("measurement",):
                msg = "must be 96 hex digits (the 48-byte measurement)"
            msg = msg.removeprefix("Value error, ")
            problems.append(f"{f'line {line}: ' if line else ''}{_key_path(loc)}: {msg}")
        raise ConfigError(source, problems) from err
    config._base_dir = base_dir or Path(".")
    config._empty = not data
    return config


def load_config(path: str | Path) -> Config:
    """Read and validate `ccaudit.yaml`; relative paths in it resolve against its directory."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(str(p), [f"larger than {MAX_CONFIG_BYTES} bytes"])
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(str(p), [f"cannot read: {err.strerror or err}"]) from err
    except UnicodeDecodeError as err:
        raise ConfigError(str(p), [f"not UTF-8 text: {err}"]) from err
    return parse_config(text, str(p), p.resolve().parent)


def config_schema() -> dict[str, Any]:
    """The JSON Schema of `ccaudit.yaml` (published as docs/ccaudit.schema.json)."""
    schema = Config.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://cc-auditor.dev/schema/ccaudit-config-v{CONFIG_VERSION}.json"
    schema["title"] = "ccaudit.yaml"
    return schema


def config_schema_text() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"


def level_of(name: str | None) -> Level | None:
    return Level(name) if name is not None else None


if __name__ == "__main__":  # python -m auditor.config > docs/ccaudit.schema.json
    import sys

    sys.stdout.write(config_schema_text())
