"""TCG crypto-agile event logs (vTPM measured boot and the TDX CCEL), parsed and replayed.

One parser serves both logs: a TPM's `binary_bios_measurements` and the ACPI CCEL log a TDX guest
firmware writes use the same TCG PC Client format, a legacy SHA-1 `TCG_PCR_EVENT` carrying the
"Spec ID Event03" header followed by `TCG_PCR_EVENT2` records. Replaying the log is how the owner
learns what booted: the replayed registers must equal the hardware-signed PCRs or RTMRs, and only
then do the events (Secure Boot variables, kernel command line) count as evidence.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from auditor.verify.errors import EvidenceFormatError

#: TPM_ALG_ID -> (name, digest size).
ALGORITHMS: dict[int, tuple[str, int]] = {
    0x0004: ("sha1", 20),
    0x000B: ("sha256", 32),
    0x000C: ("sha384", 48),
    0x000D: ("sha512", 64),
    0x0012: ("sm3_256", 32),
}
_HASHLIB = {"sha1": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}
_DIGEST_SIZE = {name: size for name, size in ALGORITHMS.values()}

EV_NO_ACTION = 0x00000003
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001

#: TCG PC Client Platform Firmware Profile, "Event Types".
EVENT_TYPES: dict[int, str] = {
    0x00000000: "EV_PREBOOT_CERT",
    0x00000001: "EV_POST_CODE",
    0x00000002: "EV_UNUSED",
    0x00000003: "EV_NO_ACTION",
    0x00000004: "EV_SEPARATOR",
    0x00000005: "EV_ACTION",
    0x00000006: "EV_EVENT_TAG",
    0x00000007: "EV_S_CRTM_CONTENTS",
    0x00000008: "EV_S_CRTM_VERSION",
    0x00000009: "EV_CPU_MICROCODE",
    0x0000000A: "EV_PLATFORM_CONFIG_FLAGS",
    0x0000000B: "EV_TABLE_OF_DEVICES",
    0x0000000C: "EV_COMPACT_HASH",
    0x0000000D: "EV_IPL",
    0x0000000E: "EV_IPL_PARTITION_DATA",
    0x0000000F: "EV_NONHOST_CODE",
    0x00000010: "EV_NONHOST_CONFIG",
    0x00000011: "EV_NONHOST_INFO",
    0x00000012: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x00000013: "EV_POST_CODE2",
    0x80000000: "EV_EFI_EVENT_BASE",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    0x80000006: "EV_EFI_GPT_EVENT",
    0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2",
    0x8000000D: "EV_EFI_GPT_EVENT2",
    0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
    0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
    0x800000E3: "EV_EFI_SPDM_DEVICE_POLICY",
    0x800000E4: "EV_EFI_SPDM_DEVICE_AUTHORITY",
}

EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")

_SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
_STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
_MAX_EVENT_DATA = 16 * 1024 * 1024
_CCEL_TABLE_SIZE = 56


@dataclass(frozen=True)
class Event:
    index: int  # PCR index (TPM logs) or CC MR index (CCEL: 0 MRTD, 1..4 = RTMR0..3)
    event_type: int
    type_name: str
    digests: dict[str, bytes]
    data: bytes


@dataclass
class EventLog:
    spec_version: str
    algorithms: dict[str, int]  # name -> digest size, as declared in the Spec ID event
    events: list[Event] = field(default_factory=list)
    startup_locality: int | None = None


def event_type_name(event_type: int) -> str:
    return EVENT_TYPES.get(event_type, f"0x{event_type:08x}")


class _Reader:
    """Bounds-checked little-endian reads: running off the end is an EvidenceFormatError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, field_name: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise EvidenceFormatError(
                f"{self.what}: truncated at offset {self.pos} reading {field_name} "
                f"({size} bytes wanted, {self.remaining()} left)"
            )
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def u8(self, field_name: str) -> int:
        return self.take(1, field_name)[0]

    def u16(self, field_name: str) -> int:
        value: int = struct.unpack("<H", self.take(2, field_name))[0]
        return value

    def u32(self, field_name: str) -> int:
        value: int = struct.unpack("<I", self.take(4, field_name))[0]
        return value


def _is_padding(rest: bytes) -> bool:
    """CCEL log areas are pre-filled with 0xFF, TPM logs sometimes end in zeros."""
    return not rest.strip(b"\xff") or not rest.strip(b"\x00")


def _parse_spec_id(data: bytes) -> tuple[str, dict[int, tuple[str, int]]]:
    reader = _Reader(data, "event log Spec ID event")
    if reader.take(16, "signature") != _SPEC_ID_SIGNATURE:
        raise EvidenceFormatError(
            "event log is not crypto-agile: the first event is not a 'Spec ID Event03' header "
            "(SHA-1-only TCG 1.2 logs are not supported)"
        )
    reader.u32("platformClass")
    minor = reader.u8("specVersionMinor")
    major = reader.u8("specVersionMajor")
    errata = reader.u8("specErrata")
    reader.u8("uintnSize")
    count = reader.u32("numberOfAlgorithms")
    if count == 0 or count > 16:
        raise EvidenceFormatError(f"event log Spec ID event declares {count} digest algorithms")
    algs: dict[int, tuple[str, int]] = {}
    for _ in range(count):
        alg_id = reader.u16("algorithmId")
        size = reader.u16("digestSize")
        known = ALGORITHMS.get(alg_id)
        if known is not None and known[1] != size:
            raise EvidenceFormatError(
                f"event log Spec ID event gives {known[0]} a digest size of {size}, not {known[1]}"
            )
        if size == 0 or size > 128:
            raise EvidenceFormatError(f"event log digest size {size} for algorithm 0x{alg_id:04x}")
        algs[alg_id] = known if known is not None else (f"0x{alg_id:04x}", size)
    return f"{major}.{minor}.{errata}", algs


def _startup_locality(event: Event) -> int | None:
    if event.event_type != EV_NO_ACTION or event.index != 0:
        return None
    sig = _STARTUP_LOCALITY_SIGNATURE
    if event.data.startswith(sig) and len(event.data) >= len(sig) + 1:
        return event.data[len(sig)]
    return None


def parse_event_log(data: bytes, max_events: int = 100_000) -> EventLog:
    """Parse a TCG PC Client crypto-agile event log (TPM or CCEL)."""
    reader = _Reader(data, "event log")
    # Legacy header: TCG_PCR_EVENT { pcrIndex, eventType, SHA-1 digest, eventSize, event }.
    reader.u32("header pcrIndex")
    header_type = reader.u32("header eventType")
    reader.take(20, "header digest")
    header_size = reader.u32("header eventSize")
    if header_type != EV_NO_ACTION:
        raise EvidenceFormatError(
            f"event log header has type {event_type_name(header_type)}, expected EV_NO_ACTION "
            "with a Spec ID event"
        )
    if header_size > _MAX_EVENT_DATA:
        raise EvidenceFormatError(f"event log header claims {header_size} bytes of event data")
    spec_version, algs = _parse_spec_id(reader.take(header_size, "Spec ID event"))
    log = EventLog(
        spec_version=spec_version,
        algorithms={name: size for name, size in algs.values()},
    )
    while reader.remaining() > 0:
        head = data[reader.pos : reader.pos + 8]
        if head in (b"\xff" * len(head), b"\x00" * len(head)) and _is_padding(data[reader.pos :]):
            break
        if len(log.events) >= max_events:
            raise EvidenceFormatError(f"event log has more than {max_events} events")
        number = len(log.events) + 1
        index = reader.u32(f"event {number} pcrIndex")
        event_type = reader.u32(f"event {number} eventType")
        count = reader.u32(f"event {number} digest count")
        if count > len(algs):
            raise EvidenceFormatError(
                f"event log event {number} has {count} digests, the header declares {len(algs)}"
            )
        digests: dict[str, bytes] = {}
        for _ in range(count):
            alg_id = reader.u16(f"event {number} algorithmId")
            declared = algs.get(alg_id)
            if declared is None:
                raise EvidenceFormatError(
                    f"event log event {number} uses digest algorithm 0x{alg_id:04x} "
                    "not declared in the Spec ID event"
                )
            digests[declared[0]] = reader.take(declared[1], f"event {number} digest")
        size = reader.u32(f"event {number} eventSize")
        if size > _MAX_EVENT_DATA:
            raise EvidenceFormatError(f"event log event {number} claims {size} bytes of data")
        event = Event(
            index=index,
            event_type=event_type,
            type_name=event_type_name(event_type),
            digests=digests,
            data=reader.take(size, f"event {number} data"),
        )
        locality = _startup_locality(event)
        if locality is not None:
            log.startup_locality = locality
        log.events.append(event)
    return log


def replay(log: EventLog, algorithm: str, indexes: Iterable[int] | None = None) -> dict[int, bytes]:
    """Extend every register the log touches (or `indexes`) from zero: new = H(old || digest)."""
    name = _HASHLIB.get(algorithm)
    if name is None or algorithm not in log.algorithms:
        raise EvidenceFormatError(
            f"event log has no {algorithm} bank (it has {', '.join(sorted(log.algorithms))})"
        )
    size = _DIGEST_SIZE[algorithm]
    wanted = None if indexes is None else set(indexes)
    registers: dict[int, bytes] = {}
    if wanted is not None:
        registers = {i: _initial_value(log, i, size) for i in sorted(wanted)}
    for event in log.events:
        if event.event_type == EV_NO_ACTION:
            continue
        if wanted is not None and event.index not in wanted:
            continue
        digest = event.digests.get(algorithm)
        if digest is None:
            raise EvidenceFormatError(
                f"event log event {event.type_name} for register {event.index} lacks a "
                f"{algorithm} digest"
            )
        current = registers.get(event.index)
        if current is None:
            current = _initial_value(log, event.index, size)
        registers[event.index] = hashlib.new(name, current + digest).digest()
    return registers


def _initial_value(log: EventLog, index: int, size: int) -> bytes:
    if index == 0 and log.startup_locality:
        return bytes(size - 1) + bytes([log.startup_locality])
    return bytes(size)


def _efi_variable(data: bytes) -> tuple[uuid.UUID, str, bytes] | None:
    """UEFI_VARIABLE_DATA: VariableName GUID, name length, data length, UTF-16 name, data."""
    if len(data) < 32:
        return None
    guid = uuid.UUID(bytes_le=data[:16])
    name_len, data_len = struct.unpack_from("<QQ", data, 16)
    name_end = 32 + 2 * name_len
    if name_len > 1024 or name_end + data_len > len(data):
        return None
    try:
        name = data[32:name_end].decode("utf-16-le").rstrip("\x00")
    except UnicodeDecodeError:
        return None
    return guid, name, data[name_end : name_end + data_len]


def _count_signatures(value: bytes) -> int | None:
    """Count entries in a list of EFI_SIGNATURE_LISTs (db, dbx, KEK, PK)."""
    count = 0
    pos = 0
    while pos < len(value):
        if pos + 28 > len(value):
            return None
        list_size, header_size, sig_size = struct.unpack_from("<III", value, pos + 16)
        body = list_size - 28 - header_size
        if list_size < 28 or sig_size == 0 or body < 0 or body % sig_size:
            return None
        count += body // sig_size
        pos += list_size
    return count


def secure_boot_state(log: EventLog) -> dict[str, Any]:
    """Secure Boot as the firmware measured it (PCR7 / RTMR0 variable events)."""
    state: dict[str, Any] = {"secure_boot": None, "setup_mode": None, "source": "event_log"}
    for event in log.events:
        if event.event_type != EV_EFI_VARIABLE_DRIVER_CONFIG:
            continue
        parsed = _efi_variable(event.data)
        if parsed is None:
            continue
        guid, name, value = parsed
        if guid == EFI_GLOBAL_VARIABLE and name in ("SecureBoot", "SetupMode"):
            key = "secure_boot" if name == "SecureBoot" else "setup_mode"
            state[key] = bool(value and value[0] == 1)
        elif guid == EFI_GLOBAL_VARIABLE and name in ("PK", "KEK"):
            state[f"{name.lower()}_entries"] = _count_signatures(value)
        elif guid == EFI_IMAGE_SECURITY_DATABASE and name in ("db", "dbx"):
            state[f"{name}_entries"] = _count_signatures(value)
    return state


def parse_ccel_table(table: bytes) -> dict[str, int]:
    """The ACPI CCEL table: confidential-computing type and where the firmware put its log."""
    if len(table) < _CCEL_TABLE_SIZE:
        raise EvidenceFormatError(
            f"CCEL ACPI table is {len(table)} bytes, at least {_CCEL_TABLE_SIZE} expected"
        )
    if table[:4] != b"CCEL":
        raise EvidenceFormatError(f"ACPI table signature is {table[:4]!r}, expected b'CCEL'")
    length = struct.unpack_from("<I", table, 4)[0]
    if length < _CCEL_TABLE_SIZE or length > len(table):
        raise EvidenceFormatError(f"CCEL ACPI table length field {length} is inconsistent")
    cc_type, cc_subtype = table[36], table[37]
    laml, lasa = struct.unpack_from("<QQ", table, 40)
    return {
        "revision": table[8],
        "cc_type": cc_type,
        "cc_subtype": cc_subtype,
        "laml": laml,
        "lasa": lasa,
    }


def ccel_rtmrs(data: bytes) -> dict[int, bytes]:
    """Replay a TDX CCEL log: CC MR index 1..4 extend RTMR0..3 (index 0 is MRTD, not replayed)."""
    log = parse_event_log(data)
    registers = replay(log, "sha384", indexes=(1, 2, 3, 4))
    return {mr_index - 1: value for mr_index, value in registers.items()}
