"""The guest evidence file: what `ccaudit guest collect` writes and `ccaudit scan --guest-evidence`
reads. Shared by both sides, so it imports nothing beyond the standard library.

One JSON object, every blob base64 (standard alphabet, padded):

```
{
  "format": "ccaudit-guest-evidence/2",
  "collector_version": "0.1.0",
  "collected_at": "2026-12-01T08:00:00Z",
  "nonce": "<64 hex: the 32-byte challenge from `ccaudit guest challenge`>",
  "vm": {"provider": "aws|gcp|azure|unknown", "id": "<the cloud's VM id>",
         "identity_source": "aws-instance-identity-document|gcp-identity-token|"
                            "azure-imds-attested|none",
         "identity_document": "<b64, as the metadata service returned it>",
         "identity_signature": "<b64 AWS instance-identity/pkcs7 response, AWS only, optional>"},
  "report_data": "<128 hex: SHA-512(nonce || identity || claims digest), see binding_report_data>",
  "claims_sha256": "<64 hex: SHA-256 of the canonical claims, see claims_digest>",
  "tee": {"provider": "sev_guest|tdx_guest", "generation": <int>,
          "outblob": "<b64 SNP report or TDX quote>", "auxblob": "<b64 cert table, may be absent>"},
  "tpm": {"event_log": "<b64 binary_bios_measurements>"},
  "ccel": {"table": "<b64 ACPI CCEL table>", "data": "<b64 CCEL event log>"},
  "disk_encryption": {"root_device": "<dm-N or block device of />", "devices":
         [{"name": "dm-0", "uuid": "CRYPT-LUKS2-...", "type": "LUKS2", "holds_root": true,
           "backing": [{"name": "nvme0n1", "serial": "vol0abc...", "links":
                        ["/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc..."]}],
           "tpm_tokens": 0}]},
  "agents": {"provider_agents": ["amazon-ssm-agent"], "cloud_init": {"ran": false}},
  "kernel_cmdline": "<text>",
  "key_release": "<compact JWS from the owner's key broker, optional>",
  "errors": [{"source": "<what was read>", "message": "<why it is missing>"}]
}
```

Sections the guest could not read are absent and named in `errors`; absence is never success.

**Claims.** Everything the guest states besides the signed report (`disk_encryption`,
`kernel_cmdline`, `tpm`, `ccel`, `agents`: CLAIM_KEYS) is bound into the report: version 2 sets
REPORT_DATA = SHA-512(nonce || identity || SHA-256(canonical claims)), so a claim changed or
added after the report was made no longer matches it. Version 1 files (REPORT_DATA =
SHA-512(nonce || identity)) still read: their report can verify, but their claims are not
covered by it and are never used as evidence. The key-release receipt is not a claim: the owner's
key broker signs it and it names the REPORT_DATA it was issued against.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

FORMAT_V1 = "ccaudit-guest-evidence/1"
FORMAT = "ccaudit-guest-evidence/2"
FORMATS = (FORMAT_V1, FORMAT)
#: The guest's own statements that version 2 binds into REPORT_DATA (see the module text).
CLAIM_KEYS = ("disk_encryption", "kernel_cmdline", "tpm", "ccel", "agents")
MAX_FILE_BYTES = 16 * 1024 * 1024
NONCE_BYTES = 32
PROVIDERS = ("aws", "gcp", "azure", "libvirt", "unknown")
#: Providers whose VM ids are UUIDs, bound and compared lower-case.
UUID_IDS = ("azure", "libvirt")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class GuestEvidenceError(ValueError):
    """The file is not a guest evidence file this version can read (format, size, fields)."""


def identity_string(provider: str, vm_id: str) -> str:
    """The VM identity bound into REPORT_DATA: `<provider>:<vm id>` (UUID ids lower-case)."""
    vm_id = vm_id.strip()
    return f"{provider.lower()}:{vm_id.lower() if provider.lower() in UUID_IDS else vm_id}"


def binding_report_data(nonce: bytes, identity: str, claims_sha256: bytes | None = None) -> bytes:
    """REPORT_DATA the guest must request: SHA-512(nonce || UTF-8 identity [|| claims digest]).

    Version 2 appends the 32-byte SHA-256 of the canonical claims (`claims_digest`); version 1
    has no claims digest.
    """
    return hashlib.sha512(nonce + identity.encode("utf-8") + (claims_sha256 or b"")).digest()


def quote_qualifying_data(nonce: bytes, identity: str, claims_sha256: bytes) -> bytes:
    """The vTPM quote's qualifying data: SHA-256(nonce || UTF-8 identity || claims digest).

    32 bytes, which every TPM accepts; it binds the quote to this audit, VM and claims as
    REPORT_DATA binds a TEE report (on Azure the TEE report is made at boot, so the quote is
    what makes the evidence fresh).
    """
    return hashlib.sha256(nonce + identity.encode("utf-8") + claims_sha256).digest()


def claims_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The guest's claims in a document: the CLAIM_KEYS sections it has (absent stay absent)."""
    return {key: doc[key] for key in CLAIM_KEYS if key in doc and doc[key] is not None}


def canonical_claims(claims: dict[str, Any]) -> bytes:
    """The bytes hashed for the claims: JSON with sorted keys, no whitespace, ASCII escapes."""
    return json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def claims_digest(doc: dict[str, Any]) -> bytes:
    """SHA-256 of the canonical claims of `doc` (32 bytes)."""
    return hashlib.sha256(canonical_claims(claims_of(doc))).digest()


def expected_report_data(doc: dict[str, Any], identity: str) -> bytes:
    """The REPORT_DATA a report in `doc` must carry to be bound to this audit, VM and claims."""
    nonce = bytes.fromhex(str(doc.get("nonce", "")))
    if doc.get("format") == FORMAT_V1:
        return binding_report_data(nonce, identity)
    return binding_report_data(nonce, identity, claims_digest(doc))


def claims_bound(doc: dict[str, Any]) -> bool:
    """Does this format version bind the guest's claims into REPORT_DATA? (version 2 does)"""
    return doc.get("format") != FORMAT_V1


def parse_evidence_file(data: bytes) -> dict[str, Any]:
    """Validate the envelope of an evidence file (not its blobs: verifiers judge those)."""
    if len(data) > MAX_FILE_BYTES:
        raise GuestEvidenceError(f"larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise GuestEvidenceError(f"not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise GuestEvidenceError("not a JSON object")
    if doc.get("format") not in FORMATS:
        raise GuestEvidenceError(
            f"format is {doc.get('format')!r}, expected one of {', '.join(map(repr, FORMATS))}"
        )
    nonce = doc.get("nonce")
    if not isinstance(nonce, str) or not _HEX64.match(nonce):
        raise GuestEvidenceError("nonce must be 64 lower-case hex characters")
    vm = doc.get("vm")
    if not isinstance(vm, dict) or not isinstance(vm.get("id"), str) or not vm["id"]:
        raise GuestEvidenceError("vm.id is missing")
    if vm.get("provider") not in PROVIDERS:
        raise GuestEvidenceError(f"vm.provider must be one of {', '.join(PROVIDERS)}")
    for key in ("tee", "tpm", "ccel", "disk_encryption", "agents"):
        if key in doc and doc[key] is not None and not isinstance(doc[key], dict):
            raise GuestEvidenceError(f"{key} must be an object")
    if "kernel_cmdline" in doc and not isinstance(doc["kernel_cmdline"], str | None):
        raise GuestEvidenceError("kernel_cmdline must be a string")
    return doc
