"""A minimal, bounded protobuf wire-format decoder for evidence files.

go-tpm-tools attestations and GCE firmware endorsements are protobuf messages. Their schemas need
only a handful of fields, so a small decoder over the wire format (varint, 64-bit,
length-delimited, 32-bit) replaces a protobuf dependency and its generated code. Evidence is
untrusted: sizes, field counts and nesting depth are bounded, and anything malformed raises
`EvidenceFormatError` naming what was being read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from auditor.verify.errors import EvidenceFormatError

VARINT = 0
I64 = 1
LEN = 2
I32 = 5

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_FIELDS = 100_000
MAX_DEPTH = 16
_MAX_VARINT_BYTES = 10


@dataclass(frozen=True)
class WireField:
    """One decoded field: its number, wire type and raw value (int for numbers, bytes for LEN)."""

    number: int
    wire_type: int
    value: int | bytes


def read_varint(data: bytes, pos: int, what: str = "message") -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; return (value, position after it)."""
    result = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise EvidenceFormatError(f"{what}: truncated varint at byte {pos}")
        byte = data[pos + i]
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if result >= 1 << 64:
                raise EvidenceFormatError(f"{what}: varint at byte {pos} exceeds 64 bits")
            return result, pos + i + 1
    raise EvidenceFormatError(f"{what}: varint at byte {pos} is longer than 10 bytes")


def decode_fields(data: bytes, what: str = "message") -> list[WireField]:
    """Split one message into its fields, in wire order, without interpreting them."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise EvidenceFormatError(f"{what}: {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    fields: list[WireField] = []
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos, what)
        number, wire_type = key >> 3, key & 0x7
        if number == 0 or number > 0x1FFFFFFF:
            raise EvidenceFormatError(f"{what}: invalid field number {number}")
        value: int | bytes
        if wire_type == VARINT:
            value, pos = read_varint(data, pos, what)
        elif wire_type == I64:
            if pos + 8 > len(data):
                raise EvidenceFormatError(f"{what}: truncated 64-bit field {number}")
            value = struct.unpack_from("<Q", data, pos)[0]
            pos += 8
        elif wire_type == I32:
            if pos + 4 > len(data):
                raise EvidenceFormatError(f"{what}: truncated 32-bit field {number}")
            value = struct.unpack_from("<I", data, pos)[0]
            pos += 4
        elif wire_type == LEN:
            length, pos = read_varint(data, pos, what)
            if length > len(data) - pos:
                raise EvidenceFormatError(
                    f"{what}: field {number} declares {length} bytes, {len(data) - pos} remain"
                )
            value = data[pos : pos + length]
            pos += length
        else:
            raise EvidenceFormatError(f"{what}: unsupported wire type {wire_type} (field {number})")
        fields.append(WireField(number, wire_type, value))
        if len(fields) > MAX_FIELDS:
            raise EvidenceFormatError(f"{what}: more than {MAX_FIELDS} fields")
    return fields


@dataclass
class Message:
    """A decoded message with typed accessors; a wrong wire type is a format error."""

    fields: list[WireField]
    what: str = "message"
    depth: int = 0
    _by_number: dict[int, list[WireField]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for f in self.fields:
            self._by_number.setdefault(f.number, []).append(f)

    @classmethod
    def parse(cls, data: bytes, what: str = "message", depth: int = 0) -> Message:
        if depth > MAX_DEPTH:
            raise EvidenceFormatError(f"{what}: nested deeper than {MAX_DEPTH}")
        return cls(decode_fields(data, what), what, depth)

    def has(self, number: int) -> bool:
        return number in self._by_number

    def _all(self, number: int, wire_type: int) -> list[WireField]:
        found = self._by_number.get(number, [])
        for f in found:
            if f.wire_type != wire_type:
                raise EvidenceFormatError(
                    f"{self.what}: field {number} has wire type {f.wire_type}, expected {wire_type}"
                )
        return found

    def bytes_list(self, number: int) -> list[bytes]:
        return [f.value for f in self._all(number, LEN) if isinstance(f.value, bytes)]

    def bytes_field(self, number: int, default: bytes = b"") -> bytes:
        """Last occurrence wins, as in protobuf's merge semantics for scalar fields."""
        values = self.bytes_list(number)
        return values[-1] if values else default

    def string(self, number: int) -> str:
        raw = self.bytes_field(number)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise EvidenceFormatError(f"{self.what}: field {number} is not UTF-8") from err

    def uint(self, number: int, default: int = 0) -> int:
        """A varint scalar (uint32/uint64/enum/bool); packed encodings are not expected here."""
        values = [f.value for f in self._all(number, VARINT) if isinstance(f.value, int)]
        return values[-1] if values else default

    def messages(self, number: int, what: str) -> list[Message]:
        return [
            Message.parse(raw, f"{self.what}.{what}", self.depth + 1)
            for raw in self.bytes_list(number)
        ]

    def message(self, number: int, what: str) -> Message | None:
        """Singular embedded message; repeated occurrences merge (concatenate) as in protobuf."""
        raws = self.bytes_list(number)
        if not raws:
            return None
        return Message.parse(b"".join(raws), f"{self.what}.{what}", self.depth + 1)
