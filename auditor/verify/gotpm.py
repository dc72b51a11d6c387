"""go-tpm-tools `attest.Attestation` files: the vTPM evidence a GCE guest produces.

`gotpm attest` (and go-tpm-tools' `client.Attest`) writes one protobuf message holding the AK
public area, one TPM2 quote per PCR bank with the PCR values, the TCG event log and the AK
certificate Google's CA issued for this instance. Field numbers follow go-tpm-tools
`proto/attest.proto` (package attest) and `proto/tpm.proto` (package tpm). This module only
decodes; `auditor.verify.tpm` verifies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from auditor.verify.errors import EvidenceFormatError
from auditor.verify.protobuf import Message

#: tpm.HashAlgo enum values (TCG algorithm IDs) -> bank name.
HASH_ALGOS: dict[int, str] = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}

_MAX_PCR_INDEX = 31


@dataclass(frozen=True)
class GceInstanceInfo:
    """attest.GCEInstanceInfo: written by the guest itself, so a claim, not evidence."""

    zone: str
    project_id: str
    project_number: int
    instance_name: str
    instance_id: int


@dataclass(frozen=True)
class Quote:
    """tpm.Quote: TPMS_ATTEST bytes, TPMT_SIGNATURE bytes and the bank's PCR values."""

    quote: bytes
    raw_sig: bytes
    bank: str
    pcrs: dict[int, bytes]


@dataclass
class Attestation:
    ak_pub: bytes
    quotes: list[Quote] = field(default_factory=list)
    event_log: bytes = b""
    canonical_event_log: bytes = b""
    ak_cert: bytes = b""
    intermediate_certs: list[bytes] = field(default_factory=list)
    instance_info: GceInstanceInfo | None = None
    has_sev_snp_attestation: bool = False
    has_tdx_attestation: bool = False


def _pcrs(msg: Message) -> tuple[str, dict[int, bytes]]:
    """tpm.PCRs { HashAlgo hash = 1; map<uint32, bytes> pcrs = 2 }."""
    alg = msg.uint(1)
    bank = HASH_ALGOS.get(alg)
    if bank is None:
        raise EvidenceFormatError(f"attestation quote: unknown PCR hash algorithm 0x{alg:04x}")
    values: dict[int, bytes] = {}
    for entry in msg.messages(2, "pcrs entry"):
        index = entry.uint(1)
        if index > _MAX_PCR_INDEX:
            raise EvidenceFormatError(f"attestation quote: PCR index {index} out of range")
        values[index] = entry.bytes_field(2)
    return bank, values


def parse_attestation(data: bytes) -> Attestation:
    """Decode an attest.Attestation; EvidenceFormatError if it is not one."""
    msg = Message.parse(data, "go-tpm-tools attestation")
    ak_pub = msg.bytes_field(1)
    if not ak_pub:
        raise EvidenceFormatError("go-tpm-tools attestation: no AK public area (field 1)")
    quotes: list[Quote] = []
    for q in msg.messages(2, "quote"):
        pcrs_msg = q.message(3, "pcrs")
        if pcrs_msg is None:
            raise EvidenceFormatError("go-tpm-tools attestation: a quote carries no PCR values")
        bank, values = _pcrs(pcrs_msg)
        quotes.append(
            Quote(quote=q.bytes_field(1), raw_sig=q.bytes_field(2), bank=bank, pcrs=values)
        )
    if not quotes:
        raise EvidenceFormatError("go-tpm-tools attestation: no quotes (field 2)")
    info_msg = msg.message(4, "instance_info")
    info = None
    if info_msg is not None:
        info = GceInstanceInfo(
            zone=info_msg.string(1),
            project_id=info_msg.string(2),
            project_number=info_msg.uint(3),
            instance_name=info_msg.string(4),
            instance_id=info_msg.uint(5),
        )
    return Attestation(
        ak_pub=ak_pub,
        quotes=quotes,
        event_log=msg.bytes_field(3),
        canonical_event_log=msg.bytes_field(5),
        ak_cert=msg.bytes_field(6),
        intermediate_certs=msg.bytes_list(7),
        instance_info=info,
        has_sev_snp_attestation=msg.has(8),
        has_tdx_attestation=msg.has(9),
    )
