"""Read evidence given as raw binary, hex text or base64 text, whichever it is.

Investigators paste reports in every encoding (go-sev-guest writes raw bytes, virtee hex,
Constellation base64). Detection is strict: text is only decoded when all of it is valid in that
encoding, hex is preferred over base64 when both would parse, and the decoded length is checked
by the caller's parser, never assumed here.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from auditor.verify.errors import EvidenceFormatError

_HEX = re.compile(rb"^[0-9a-fA-F]+$")
_B64 = re.compile(rb"^[A-Za-z0-9+/_-]+={0,2}$")
_SPACE = re.compile(rb"\s+")


def decode_blob(data: bytes, *, expect_min: int = 1) -> tuple[bytes, str]:
    """Return (bytes, encoding) where encoding is "binary", "hex" or "base64"."""
    if not data:
        raise EvidenceFormatError("the input is empty")
    compact = _SPACE.sub(b"", data)
    if compact and len(compact) % 2 == 0 and _HEX.match(compact):
        decoded = binascii.unhexlify(compact)
        if len(decoded) >= expect_min:
            return decoded, "hex"
    if compact and _B64.match(compact):
        try:
            padded = compact + b"=" * (-len(compact) % 4)
            if b"-" in compact or b"_" in compact:
                decoded = base64.urlsafe_b64decode(padded)
            else:
                decoded = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) >= expect_min:
            return decoded, "base64"
    return data, "binary"


def b64_field(node: Any, *path: str, prefix: str = "") -> bytes | None:
    """The base64 string at `path` in a JSON document, decoded; None when absent or empty.

    Not base64 at all is an EvidenceFormatError naming the field (`prefix` + the dotted path).
    """
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    if not isinstance(node, str) or not node:
        return None
    try:
        return base64.b64decode(node, validate=True)
    except (binascii.Error, ValueError) as err:
        raise EvidenceFormatError(f"{prefix}{'.'.join(path)} is not base64: {err}") from err
