"""Guest evidence import: files collected inside VMs, attached to the VMs they name.

`--guest-evidence DIR` reads what was fetched inside the guests:
- `*.json`: evidence files written by `ccaudit guest collect` (auditor/guest/format.py), matched
  to a VM by the provider and id they name;
- `*.jwt`: Microsoft Azure Attestation tokens, matched by the `x-ms-azurevm-vmid` claim.
A file that matches no scanned VM, or that cannot be read, is reported as a gap, never silently
used or dropped. Matching uses unverified claims only to find the VM; the verify stage decides
what the file is worth (signatures, binding to the VM, nonce freshness).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from auditor.guest.format import GuestEvidenceError, identity_string, parse_evidence_file
from auditor.model import VM, Evidence, Gap, Source
from auditor.providers.base import make_gap
from auditor.recording import EvidenceSink

MAX_FILE_BYTES = 1024 * 1024
MAX_FILES = 100_000
MAA_KIND = "maa_token"
GUEST_KIND = "guest_evidence"
CALL = "guest-evidence"


def _gap(path: Path, code: str, message: str) -> Gap:
    return make_gap(
        "guest", CALL, code, f"{path.name}: {message}", None, resource=path.name, affects="evidence"
    )


def _unverified_claims(token: str) -> dict[str, Any]:
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWT (three dot-separated parts)")
    body = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        data = json.loads(base64.urlsafe_b64decode(body))
    except (binascii.Error, ValueError, RecursionError) as err:
        raise ValueError(f"payload is not base64url JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    return data


def import_guest_evidence(directory: Path, vms: Iterable[VM], sink: EvidenceSink) -> list[Gap]:
    """Attach every readable evidence file under `directory` to its VM; return the problems."""
    if not directory.is_dir():
        return [
            make_gap(
                "guest",
                CALL,
                "NotFound",
                f"{directory} is not a directory",
                None,
                affects="evidence",
            )
        ]
    vm_list = list(vms)
    by_vm_id = {vm.id.lower(): vm for vm in vm_list if vm.provider == "azure"}
    by_identity = {identity_string(vm.provider, vm.id): vm for vm in vm_list}
    gaps: list[Gap] = []
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    for path in files[:MAX_FILES]:
        suffix = path.suffix.lower()
        if suffix == ".json":
            gap = _import_evidence_file(path, directory, by_identity, sink)
        elif suffix == ".jwt":
            gap = _import_maa_token(path, directory, by_vm_id, sink)
        else:
            gap = _gap(
                path,
                "UnsupportedEvidence",
                "not an evidence file this version reads (ccaudit guest collect: *.json; "
                "MAA tokens: *.jwt)",
            )
        if gap is not None:
            gaps.append(gap)
    if len(files) > MAX_FILES:
        gaps.append(
            make_gap(
                "guest",
                CALL,
                "TooManyFiles",
                f"only the first {MAX_FILES} files of {directory} were read",
                None,
                affects="evidence",
            )
        )
    return gaps


def _read_bounded(path: Path) -> bytes:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
    return path.read_bytes()


def _import_evidence_file(
    path: Path, directory: Path, by_identity: dict[str, VM], sink: EvidenceSink
) -> Gap | None:
    try:
        data = _read_bounded(path)
        doc = parse_evidence_file(data)
    except (OSError, ValueError) as err:
        why = str(err) if isinstance(err, GuestEvidenceError) else f"unreadable: {err}"
        return _gap(path, "MalformedEvidence", f"not a usable guest evidence file: {why}")
    named = doc["vm"]
    provider, vm_id = str(named.get("provider", "unknown")), str(named["id"])
    vm = by_identity.get(identity_string(provider, vm_id))
    if vm is None and provider == "unknown":
        matches = [v for v in by_identity.values() if v.id == vm_id]
        vm = matches[0] if len(matches) == 1 else None
    if vm is None:
        return _gap(
            path,
            "NoMatchingVM",
            f"evidence names {provider} VM {vm_id}, which this scan did not see",
        )
    _attach(vm, path, directory, data, sink, GUEST_KIND, Source.GUEST, "hardware")
    return None


def _import_maa_token(
    path: Path, directory: Path, by_vm_id: dict[str, VM], sink: EvidenceSink
) -> Gap | None:
    try:
        data = _read_bounded(path)
        token = data.decode("ascii").strip()
        claims = _unverified_claims(token)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return _gap(path, "MalformedEvidence", f"unreadable MAA token: {err}")
    vm_id = str(claims.get("x-ms-azurevm-vmid", "")).lower()
    vm = by_vm_id.get(vm_id)
    if vm is None:
        return _gap(
            path,
            "NoMatchingVM",
            f"token names vmId {vm_id or '(none)'}, which no scanned Azure VM has",
        )
    _attach(vm, path, directory, data, sink, MAA_KIND, Source.PROVIDER_ATTESTATION_SERVICE)
    return None


def _attach(
    vm: VM,
    path: Path,
    directory: Path,
    data: bytes,
    sink: EvidenceSink,
    kind: str,
    source: Source,
    section: str = "attestation",
) -> None:
    """Keep the file byte for byte in the run and list it under the VM's document section."""
    stored = sink.save_guest(path.relative_to(directory).as_posix(), data)
    evidence = Evidence.from_bytes(
        data,
        kind=kind,
        source=source,
        call=CALL,
        provider=vm.provider,
        account=vm.account,
        region=vm.region,
        resource=vm.id,
        ref=f"../{stored}",
    )
    vm.evidence.setdefault(section, []).append(sink.add(evidence))
