"""`ccaudit guest collect`: gather a VM's hardware evidence from inside it into one JSON file.

Runs inside the guest with nothing but the standard library (see docs/guest-evidence.md). It
reads what lets the auditor judge the rest (the vTPM event log, the TDX CCEL, dm-crypt state,
the disks under it and the key slots sealed to a TPM, the provider agents running and whether
cloud-init ran, the kernel command line: the claims), binds the auditor's nonce, the
VM's identity and the claims' digest into REPORT_DATA (SHA-512(nonce || identity ||
SHA-256(claims)), auditor/guest/format.py), asks the TEE for a report over that through
configfs-tsm and adds, optionally, the owner's key-release token. It only collects: verifiers
judge the blobs.

Whatever cannot be read is named in `errors` and the file is still written. Exit codes: 0 the
identity and a TEE report were collected (on Azure CVMs: the HCL report and a vTPM quote);
3 the file was written without a TEE report; 2 the
arguments are unusable (or no VM identity could be found, so nothing can be bound).
All paths are arguments, so tests run it against a fake sysfs/configfs tree.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from auditor._version import __version__
from auditor.guest import agents, diskcrypt, metadata, tsm, vtpm
from auditor.guest.format import (
    FORMAT,
    binding_report_data,
    claims_digest,
    identity_string,
    quote_qualifying_data,
)

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_PARTIAL = 3

PROVIDER_CHOICES = ("auto", "aws", "gcp", "azure", "libvirt", "none")
#: SMBIOS system UUID: libvirt gives a KVM guest its domain UUID here.
PRODUCT_UUID = "sys/class/dmi/id/product_uuid"
DEFAULT_TPM = "/dev/tpmrm0"
MAX_EVENT_LOG_BYTES = 4 * 1024 * 1024
MAX_CCEL_BYTES = 4 * 1024 * 1024
MAX_TEXT_BYTES = 64 * 1024

TPM_EVENT_LOG = "sys/kernel/security/tpm0/binary_bios_measurements"
CCEL_TABLE = "sys/firmware/acpi/tables/CCEL"
CCEL_DATA = "sys/firmware/acpi/tables/data/CCEL"
KERNEL_CMDLINE = "proc/cmdline"

# The configfs-tsm access, looked up at call time so tests can substitute a fake kernel.
ConfigfsTsm = tsm.ConfigfsTsm

_NONCE = re.compile(r"^[0-9a-fA-F]{64}$")
_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$")


class UsageError(ValueError):
    """The arguments cannot be used (exit 2); the text says which and why."""


@dataclass(frozen=True)
class CollectOptions:
    """Everything one collection needs; build it with `make_options` to get the checks."""

    nonce: bytes
    out: Path
    root: Path = Path("/")
    configfs: Path = Path("/sys/kernel/config")
    provider: str = "auto"
    vm_id: str | None = None
    metadata_urls: dict[str, str] = field(default_factory=dict)
    key_release: Path | None = None
    #: The TPM to quote: a device (default /dev/tpmrm0), tcp:HOST:PORT or unix:PATH; None = skip.
    tpm: str | None = DEFAULT_TPM
    timeout: float = 10.0
    probe_timeout: float = 2.0


@dataclass
class Collection:
    """The evidence document and the exit code it earns."""

    document: dict[str, Any]
    exit_code: int


def make_options(
    *,
    nonce: str,
    out: Path,
    root: Path = Path("/"),
    configfs: Path = Path("/sys/kernel/config"),
    provider: str = "auto",
    vm_id: str | None = None,
    metadata_url: list[str] | None = None,
    key_release: Path | None = None,
    tpm: str | None = DEFAULT_TPM,
) -> CollectOptions:
    """Check the command-line values; UsageError with a one-line reason when one is unusable."""
    if not _NONCE.match(nonce.strip()):
        raise UsageError(
            "--nonce must be 64 hex characters (the challenge from `ccaudit guest challenge`)"
        )
    provider = provider.lower()
    if provider not in PROVIDER_CHOICES:
        raise UsageError(f"--provider must be one of {', '.join(PROVIDER_CHOICES)}")
    if vm_id is not None and not vm_id.strip():
        raise UsageError("--vm-id must not be empty")
    if provider == "none" and vm_id is None:
        raise UsageError("--provider none needs --vm-id (the identity to bind the report to)")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; name the evidence file")
    if not out.parent.is_dir():
        raise UsageError(f"--out: directory {out.parent} does not exist")
    if not root.is_dir():
        raise UsageError(f"--root {root} is not a directory")
    if key_release is not None and not key_release.is_file():
        raise UsageError(f"--key-release {key_release} is not a readable file")
    if tpm is not None and not tpm.strip():
        raise UsageError("--tpm must name a device, tcp:HOST:PORT or unix:PATH")
    return CollectOptions(
        nonce=bytes.fromhex(nonce.strip()),
        out=out,
        root=root,
        configfs=configfs,
        provider=provider,
        vm_id=vm_id.strip() if vm_id else None,
        metadata_urls=_metadata_urls(metadata_url or []),
        key_release=key_release,
        tpm=tpm.strip() if tpm else None,
    )


def _metadata_urls(values: list[str]) -> dict[str, str]:
    """`URL` overrides every cloud's base URL; `aws=URL` (gcp=, azure=) just that cloud's."""
    urls: dict[str, str] = {}
    for value in values:
        cloud, sep, url = value.partition("=")
        if sep and cloud in metadata.CLOUDS:
            targets: tuple[str, ...] = (cloud,)
        else:
            targets, url = metadata.CLOUDS, value
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--metadata-url {value!r}: expected http(s)://host[:port]")
        urls.update(dict.fromkeys(targets, url.rstrip("/")))
    return urls


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, source: str, message: str) -> None:
        self.items.append({"source": source, "message": message})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _read_file(path: Path, limit: int) -> bytes:
    """The file's bytes; OSError (absent, permission) or ValueError (too large) otherwise."""
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def _why(err: Exception) -> str:
    if isinstance(err, FileNotFoundError):
        return "not present"
    if isinstance(err, PermissionError):
        return "permission denied (run the collector as root)"
    if isinstance(err, OSError):
        return err.strerror or err.__class__.__name__
    return str(err)


def _identity(options: CollectOptions, errors: _Errors) -> metadata.VmIdentity | None:
    if options.provider == "none":
        assert options.vm_id is not None
        return metadata.VmIdentity("unknown", options.vm_id, "none")
    if options.provider == "libvirt":
        return _libvirt_identity(options, errors)
    client = metadata.MetadataClient(options.timeout, options.probe_timeout)
    found, failures = metadata.discover(client, options.provider, options.metadata_urls)
    if found is None:
        for source, message in failures:
            errors.add(source, message)
        if options.vm_id is None:
            return None
        provider = "unknown" if options.provider == "auto" else options.provider
        errors.add("vm identity", f"no metadata service answered; bound --vm-id {options.vm_id}")
        return metadata.VmIdentity(provider, options.vm_id, "none")
    for source, message in found.problems:
        errors.add(source, message)
    if options.vm_id is not None and identity_string(found.provider, options.vm_id) != (
        identity_string(found.provider, found.vm_id)
    ):
        errors.add(
            "vm identity",
            f"--vm-id {options.vm_id} differs from the metadata service's {found.vm_id}; "
            "bound the metadata service's",
        )
    return found


def _libvirt_identity(options: CollectOptions, errors: _Errors) -> metadata.VmIdentity | None:
    """A KVM guest has no metadata service: its domain UUID is the SMBIOS system UUID."""
    try:
        smbios = _read_file(options.root / PRODUCT_UUID, 64).decode("ascii", "replace").strip()
    except (OSError, ValueError) as err:
        smbios = ""
        if options.vm_id is None:
            errors.add("vm identity", f"{PRODUCT_UUID}: {_why(err)}")
            return None
    if options.vm_id is None:
        return metadata.VmIdentity("libvirt", smbios.lower(), "smbios")
    if smbios and smbios.lower() != options.vm_id.lower():
        errors.add(
            "vm identity",
            f"--vm-id {options.vm_id} differs from the SMBIOS UUID {smbios}; bound --vm-id",
        )
    return metadata.VmIdentity("libvirt", options.vm_id.lower(), "none")


def _vm_section(identity: metadata.VmIdentity) -> dict[str, Any]:
    section: dict[str, Any] = {
        "provider": identity.provider,
        "id": identity.vm_id,
        "identity_source": identity.identity_source,
    }
    if identity.document is not None:
        section["identity_document"] = _b64(identity.document)
    if identity.signature is not None:
        section["identity_signature"] = _b64(identity.signature)
    return section


def _tee(options: CollectOptions, report_data: bytes, errors: _Errors) -> dict[str, Any] | None:
    try:
        report = ConfigfsTsm(options.configfs).request(report_data)
    except tsm.TsmError as err:
        errors.add("configfs-tsm", str(err))
        return None
    section: dict[str, Any] = {
        "provider": report.provider,
        "generation": report.generation,
        "outblob": _b64(report.outblob),
    }
    if report.provider not in tsm.KNOWN_PROVIDERS:
        errors.add("configfs-tsm provider", f"unknown TSM provider {report.provider!r}")
    if report.auxblob is not None:
        section["auxblob"] = _b64(report.auxblob)
    elif report.provider == "sev_guest":
        errors.add(
            "configfs-tsm auxblob",
            "empty: the host supplied no VCEK/VLEK certificates; the verifier must fetch them",
        )
    return section


def _blob(root: Path, relative: str, limit: int, source: str, errors: _Errors) -> bytes | None:
    path = root / relative
    try:
        data = _read_file(path, limit)
    except (OSError, ValueError) as err:
        errors.add(source, f"/{relative}: {_why(err)}")
        return None
    if not data:
        errors.add(source, f"/{relative}: empty")
        return None
    return data


def _ccel(root: Path, errors: _Errors) -> dict[str, Any] | None:
    section: dict[str, Any] = {}
    table = _blob(root, CCEL_TABLE, MAX_TEXT_BYTES, "tdx ccel table", errors)
    data = _blob(root, CCEL_DATA, MAX_CCEL_BYTES, "tdx ccel event log", errors)
    if table is not None:
        section["table"] = _b64(table)
    if data is not None:
        section["data"] = _b64(data)
    return section or None


def _disk(root: Path, errors: _Errors) -> dict[str, Any] | None:
    try:
        section, problems = diskcrypt.disk_encryption(root)
    except diskcrypt.DiskCryptError as err:
        errors.add("disk encryption", str(err))
        return None
    for source, message in problems:
        errors.add(f"disk encryption: {source}", message)
    return section


def _key_release(path: Path, errors: _Errors) -> str | None:
    try:
        text = _read_file(path, MAX_TEXT_BYTES).decode("ascii").strip()
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        errors.add("key release", f"{path}: {_why(err)}")
        return None
    if not _JWS.match(text):
        errors.add("key release", f"{path}: not a compact JWS (three base64url parts)")
        return None
    return text


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def collect(options: CollectOptions) -> Collection:
    """Gather the evidence; raises UsageError only when no VM identity can be determined."""
    errors = _Errors()
    identity = _identity(options, errors)
    if identity is None:
        reasons = "; ".join(e["message"] for e in errors.items)
        raise UsageError(f"no VM identity ({reasons}); pass --vm-id ID to bind one explicitly")
    doc: dict[str, Any] = {
        "format": FORMAT,
        "collector_version": __version__,
        "collected_at": _now(),
        "nonce": options.nonce.hex(),
        "vm": _vm_section(identity),
    }
    # The claims first: their digest goes into REPORT_DATA, so the report covers them.
    event_log = _blob(options.root, TPM_EVENT_LOG, MAX_EVENT_LOG_BYTES, "vtpm event log", errors)
    if event_log is not None:
        doc["tpm"] = {"event_log": _b64(event_log)}
    ccel = _ccel(options.root, errors)
    if ccel is not None:
        doc["ccel"] = ccel
    disk = _disk(options.root, errors)
    if disk is not None:
        doc["disk_encryption"] = disk
    running, problems = agents.agents_section(options.root)
    doc["agents"] = running
    for source, message in problems:
        errors.add(source, message)
    cmdline = _blob(options.root, KERNEL_CMDLINE, MAX_TEXT_BYTES, "kernel command line", errors)
    if cmdline is not None:
        doc["kernel_cmdline"] = cmdline.decode("utf-8", "replace").rstrip("\n")
    digest = claims_digest(doc)
    report_data = binding_report_data(
        options.nonce, identity_string(identity.provider, identity.vm_id), digest
    )
    doc["claims_sha256"] = digest.hex()
    doc["report_data"] = report_data.hex()
    tee = _tee(options, report_data, errors)
    if tee is not None:
        doc["tee"] = tee
    if options.tpm is not None:
        base = options.metadata_urls.get("azure", metadata.DEFAULT_BASE_URLS["azure"])
        qualifying = quote_qualifying_data(
            options.nonce, identity_string(identity.provider, identity.vm_id), digest
        )
        device = options.tpm
        if device == DEFAULT_TPM:  # under --root, like every other path the collector reads
            device = str(options.root / DEFAULT_TPM.lstrip("/"))
        section = vtpm.collect_vtpm(
            device, identity.provider, base, qualifying, errors.add, options.timeout
        )
        if section is not None:
            doc["vtpm"] = section
    if options.key_release is not None:
        token = _key_release(options.key_release, errors)
        if token is not None:
            doc["key_release"] = token
    doc["errors"] = errors.items
    return Collection(doc, EXIT_OK if tee is not None or _hcl_path(doc) else EXIT_PARTIAL)


def _hcl_path(doc: dict[str, Any]) -> bool:
    """An Azure CVM's hardware report came through the vTPM (HCL report and a quote)."""
    section = doc.get("vtpm") or {}
    return "hcl_report" in section and "quote" in section


def write_evidence(path: Path, document: dict[str, Any]) -> None:
    """Write atomically (temp file in the same directory, fsync, rename), mode 0600."""
    payload = json.dumps(document, indent=1).encode("utf-8") + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def summary(document: dict[str, Any], path: Path) -> list[str]:
    """Human lines about what was collected: names and sizes, never the documents themselves."""
    vm = document["vm"]
    lines = [f"wrote {path}", f"  identity: {vm['provider']}:{vm['id']} ({vm['identity_source']})"]
    tee = document.get("tee")
    if tee is not None:
        size = len(base64.b64decode(tee["outblob"]))
        certs = "with" if "auxblob" in tee else "without"
        lines.append(f"  TEE report: {tee['provider']}, {size} bytes, {certs} certificate table")
    else:
        lines.append("  TEE report: none")
    section = document.get("vtpm")
    if section is not None:
        parts = [f"AK {section.get('ak', {}).get('source', 'none')}"]
        parts += [label for key, label in _VTPM_PARTS if key in section]
        lines.append(f"  vTPM ({section.get('device')}): {', '.join(parts)}")
    for key, label in (("tpm", "vTPM event log"), ("ccel", "TDX CCEL")):
        lines.append(f"  {label}: {'yes' if key in document else 'no'}")
    disk = document.get("disk_encryption")
    if disk is not None:
        on_root = [d["name"] for d in disk["devices"] if d["holds_root"]]
        lines.append(
            f"  dm-crypt devices: {len(disk['devices'])}"
            f" (under /: {', '.join(on_root) if on_root else 'none'})"
        )
    found = document.get("agents") or {}
    agents_running = ", ".join(found.get("provider_agents") or []) or "none"
    lines.append(f"  provider agents running: {agents_running}")
    if "key_release" in document:
        lines.append("  key release token: included")
    for error in document["errors"]:
        lines.append(f"  missing: {error['source']}: {error['message']}")
    return lines


_VTPM_PARTS = (
    ("quote", "quote"),
    ("hcl_report", "Azure HCL report"),
    ("thim", "THIM certificates"),
    ("td_quote", "TD quote"),
)


def run(options: CollectOptions, stderr: TextIO | None = None) -> int:
    """Collect, write the file, print a summary to stderr; return the exit code."""
    stream = stderr if stderr is not None else sys.stderr
    try:
        result = collect(options)
    except UsageError as err:
        print(f"error: {err}", file=stream)
        return EXIT_USAGE
    try:
        write_evidence(options.out, result.document)
    except OSError as err:
        print(f"error: cannot write {options.out}: {_why(err)}", file=stream)
        return EXIT_USAGE
    for line in summary(result.document, options.out):
        print(line, file=stream)
    return result.exit_code
