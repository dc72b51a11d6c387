"""A bounded DER walker for the few certificate extensions `cryptography` leaves opaque.

GCE's instance-identity extension, Intel's SGX PCK extension and AMD's VCEK extensions are
small DER structures inside otherwise parsed certificates; each verifier reads them with these
two functions and turns DerError into its own message.
"""

from __future__ import annotations

MAX_CHILDREN = 64


class DerError(ValueError):
    """The bytes are not the DER structure expected (truncated, bad length, too many items)."""


def tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, value, position after it) of the TLV at `pos`; short and long lengths up to 4."""
    if pos + 2 > len(data):
        raise DerError("truncated DER header")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise DerError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise DerError("DER value runs past its container")
    return tag, data[pos : pos + length], pos + length


def children(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, value) items that fill `data` exactly (a SEQUENCE's contents)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        tag, value, pos = tlv(data, pos)
        out.append((tag, value))
        if len(out) > MAX_CHILDREN:
            raise DerError("too many DER elements")
    return out


def single(data: bytes) -> tuple[int, bytes]:
    """One TLV that must span all of `data`."""
    tag, value, end = tlv(data, 0)
    if end != len(data):
        raise DerError("length does not match the extension")
    return tag, value
