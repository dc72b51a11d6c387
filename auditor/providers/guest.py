"""Guest evidence import: files collected inside VMs, attached to the VMs they name.

`--guest-evidence DIR` reads what was fetched inside the guests. Today: Microsoft Azure
Attestation tokens (`*.jwt`), matched to a VM by the token's `x-ms-azurevm-vmid` claim. A file
that matches no scanned VM, or that cannot be read, is reported as a gap, never silently used
or dropped. Matching uses unverified claims only to find the VM; the verify stage decides
whether the token is worth anything.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from auditor.model import VM, Evidence, Gap, Source
from auditor.providers.base import make_gap
from auditor.recording import EvidenceSink

MAX_FILE_BYTES = 1024 * 1024
MAX_FILES = 100_000
MAA_KIND = "maa_token"
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
    except (binascii.Error, ValueError) as err:
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
    by_vm_id = {vm.id.lower(): vm for vm in vms if vm.provider == "azure"}
    gaps: list[Gap] = []
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    for path in files[:MAX_FILES]:
        if path.suffix.lower() != ".jwt":
            gaps.append(
                _gap(
                    path,
                    "UnsupportedEvidence",
                    "not an evidence file this version reads (MAA tokens: *.jwt)",
                )
            )
            continue
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
            data = path.read_bytes()
            token = data.decode("ascii").strip()
            claims = _unverified_claims(token)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            gaps.append(_gap(path, "MalformedEvidence", f"unreadable MAA token: {err}"))
            continue
        vm_id = str(claims.get("x-ms-azurevm-vmid", "")).lower()
        vm = by_vm_id.get(vm_id)
        if vm is None:
            gaps.append(
                _gap(
                    path,
                    "NoMatchingVM",
                    f"token names vmId {vm_id or '(none)'}, which no scanned Azure VM has",
                )
            )
            continue
        stored = sink.save_guest(path.relative_to(directory).as_posix(), data)
        evidence = Evidence.from_bytes(
            data,
            kind=MAA_KIND,
            source=Source.PROVIDER_ATTESTATION_SERVICE,
            call=CALL,
            provider=vm.provider,
            account=vm.account,
            region=vm.region,
            resource=vm.id,
            ref=f"../{stored}",
        )
        sha = sink.add(evidence)
        vm.evidence.setdefault("attestation", []).append(sha)
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
