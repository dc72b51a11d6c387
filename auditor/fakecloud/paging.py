"""Opaque page tokens for every cloud handler, bound to the request that issued them.

A token carries the next offset, the operation and (for GCP and Azure) a digest of the request's
scope, so a token from one listing cannot page another. Each cloud answers an invalid token in
its own protocol; here only `None` says "not one of ours".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

MAX_TOKEN = 512


def request_digest(*parts: object) -> str:
    """A short, stable digest of what a listing was asked for (project, filter, order...)."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def encode_token(prefix: str, operation: str, offset: int, scope: str | None = None) -> str:
    fields: dict[str, object] = {"op": operation, "offset": offset}
    if scope is not None:
        fields = {"op": operation, "scope": scope, "offset": offset}
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return prefix + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str, prefix: str, operation: str, scope: str | None = None) -> int | None:
    """The offset in `token`, or None for anything this request would not have been issued."""
    if not token.startswith(prefix) or len(token) > MAX_TOKEN:
        return None
    body = token[len(prefix) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("op") != operation
        or data.get("scope") != scope
        or type(data.get("offset")) is not int
        or data["offset"] < 0
    ):
        return None
    offset: int = data["offset"]
    return offset
