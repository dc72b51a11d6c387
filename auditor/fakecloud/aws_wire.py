"""The AWS query / EC2 wire codec, driven by botocore's service models (nothing hand-templated).

* requests: :func:`parse_form` and :func:`decode_params` turn a form-encoded body back into
  the parameter dict the SDK serialised (``Action``/``Version`` left to the caller);
* responses: :func:`validate_response` / :func:`render_response` turn a boto3-shaped dict
  into the XML botocore's parsers expect, and :func:`render_error` writes an error body
  (EC2's ``<Response><Errors>`` or the query protocol's ``<ErrorResponse>``);
* pagination: :func:`encode_page_token` / :func:`decode_page_token` make and check the
  opaque ``NextToken`` values fakecloud hands out.

Protocol ``"ec2"`` is EC2's dialect (``Name.1``, ``<item>``); ``"query"`` is the plain AWS
query protocol used by STS (``Name.member.1``, ``<member>``, ``<XxxResult>`` wrappers).
This module knows nothing about replay files, accounts or the HTTP server. A request it
cannot accept raises :class:`QueryRequestError`, an :class:`AwsError` carrying the status,
code and message AWS would answer with.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.session

from auditor.fakecloud.paging import decode_token, encode_token

XML_CONTENT_TYPE = "text/xml;charset=UTF-8"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
_MAX_FORM_FIELDS = 10_000
_MAX_KEY_DEPTH = 32


# ============================================================================ service models
@functools.cache
def _session() -> Any:
    return botocore.session.get_session()


@functools.cache
def service_model(service: str) -> Any:
    """botocore's model for ``ec2`` or ``sts`` (loaded once per process)."""
    return _session().get_service_model(service)


@functools.cache
def paginator_config(service: str, operation: str) -> Mapping[str, Any] | None:
    """botocore's paginator entry for an operation (``input_token``, ...), if it has one."""
    try:
        model = _session().get_paginator_model(service)
        config: Mapping[str, Any] = model.get_paginator(operation)
    except Exception:  # no paginators for the service, or none for this operation
        return None
    return config


# ============================================================================ errors
class AwsError(Exception):
    """An AWS API error to send back (status, code, message); see :func:`render_error`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class QueryRequestError(AwsError):
    """A request the query protocol cannot accept; becomes an AWS 4xx error response."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(status, code, message)


# ============================================================================ request codec


def parse_form(body: bytes) -> dict[str, str]:
    """Decode an ``application/x-www-form-urlencoded`` body; duplicates are refused."""
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as err:
        raise QueryRequestError("MalformedQueryString", f"cannot decode form body: {err}") from err
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise QueryRequestError("InvalidParameterValue", f"parameter {key} given twice")
        form[key] = value
    return form


def _unknown(name: str) -> QueryRequestError:
    return QueryRequestError("UnknownParameter", f"The parameter {name} is not recognized")


@dataclass
class _Node:
    """One dotted component of the form keys: ``A.1.B=x`` is A -> 1 -> B(value x)."""

    name: str
    value: str | None = None
    children: dict[str, _Node] = field(default_factory=dict)


def _build_tree(form: Mapping[str, str]) -> _Node:
    root = _Node("")
    for key, value in form.items():
        parts = key.split(".")
        if len(parts) > _MAX_KEY_DEPTH or any(not p for p in parts):
            raise _unknown(key)
        node = root
        for i, part in enumerate(parts):
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node(".".join(parts[: i + 1]))
            node = child
        node.value = value
    return root


def _serialized_name(shape: Any, default: str, protocol: str) -> str:
    """The request key of a member, as botocore's serializers compute it."""
    ser = shape.serialization
    if protocol == "ec2":
        if "queryName" in ser:
            return str(ser["queryName"])
        if ser.get("name"):
            name = str(ser["name"])
            return name[0].upper() + name[1:]
        return default
    return str(ser.get("name", default))


def _flattened_item_name(member: Any) -> str | None:
    """The element name a flattened list member uses for its items, when its shape sets one."""
    if member.type_name != "list" or not member.serialization.get("flattened"):
        return None
    name = member.member.serialization.get("name")
    return str(name) if name else None


def decode_params(shape: Any, form: Mapping[str, str], protocol: str) -> dict[str, Any]:
    """Rebuild the SDK's parameter dict from form fields (``Action``/``Version`` excluded)."""
    tree = _build_tree(form)
    if shape is None:
        if tree.children:
            first = next(iter(tree.children.values()))
            raise _unknown(first.name)
        return {}
    result = _decode_structure(shape, tree, protocol)
    return result


def _decode(shape: Any, node: _Node, protocol: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        if node.value is not None and not node.children:
            raise QueryRequestError("InvalidParameterValue", f"{node.name} must be a structure")
        return _decode_structure(shape, node, protocol)
    if kind == "list":
        return _decode_list(shape, node, protocol)
    if kind == "map":
        return _decode_map(shape, node, protocol)
    if node.children:
        child = next(iter(node.children.values()))
        raise _unknown(child.name)
    if node.value is None:  # pragma: no cover - every leaf of the tree carries a value
        raise QueryRequestError("MissingParameter", f"{node.name} has no value")
    return _decode_scalar(kind, node.name, node.value)


def _decode_structure(shape: Any, node: _Node, protocol: str) -> dict[str, Any]:
    if node.value is not None and node.name:
        raise QueryRequestError("InvalidParameterValue", f"{node.name} must be a structure")
    by_key: dict[str, tuple[str, Any]] = {}
    for member_name, member in shape.members.items():
        flat = _flattened_item_name(member) if protocol != "ec2" else None
        key = flat or _serialized_name(member, member_name, protocol)
        by_key[key] = (member_name, member)
    out: dict[str, Any] = {}
    for key, child in node.children.items():
        hit = by_key.get(key)
        if hit is None:
            raise _unknown(child.name)
        out[hit[0]] = _decode(hit[1], child, protocol)
    return out


def _indexed(node: _Node) -> Iterator[_Node]:
    """Children named 1, 2, ... in numeric order; anything else is refused."""
    numbered: list[tuple[int, _Node]] = []
    for key, child in node.children.items():
        if not re.fullmatch(r"[1-9][0-9]{0,5}", key):
            raise _unknown(child.name)
        numbered.append((int(key), child))
    for _, child in sorted(numbered, key=lambda pair: pair[0]):
        yield child


def _decode_list(shape: Any, node: _Node, protocol: str) -> list[Any]:
    if node.value is not None:
        if node.value == "" and not node.children and protocol != "ec2":
            return []  # the query protocol sends an empty list as ``Name=``
        raise QueryRequestError("InvalidParameterValue", f"{node.name} must be a list")
    items = node
    if protocol != "ec2" and not shape.serialization.get("flattened"):
        wrapper = str(shape.member.serialization.get("name", "member"))
        extra = [c.name for k, c in node.children.items() if k != wrapper]
        if extra:
            raise _unknown(extra[0])
        inner = node.children.get(wrapper)
        if inner is None:
            return []
        if inner.value is not None:
            raise QueryRequestError("InvalidParameterValue", f"{inner.name} must be a list")
        items = inner
    return [_decode(shape.member, child, protocol) for child in _indexed(items)]


def _decode_map(shape: Any, node: _Node, protocol: str) -> dict[str, Any]:
    if node.value is not None:
        raise QueryRequestError("InvalidParameterValue", f"{node.name} must be a map")
    entries = node
    if not shape.serialization.get("flattened"):
        extra = [c.name for k, c in node.children.items() if k != "entry"]
        if extra:
            raise _unknown(extra[0])
        inner = node.children.get("entry")
        if inner is None:
            return {}
        entries = inner
    key_name = _serialized_name(shape.key, "key", protocol)
    value_name = _serialized_name(shape.value, "value", protocol)
    out: dict[str, Any] = {}
    for entry in _indexed(entries):
        unknown = [c.name for k, c in entry.children.items() if k not in (key_name, value_name)]
        if unknown or entry.value is not None or key_name not in entry.children:
            raise QueryRequestError("InvalidParameterValue", f"{entry.name} is not a map entry")
        key = _decode(shape.key, entry.children[key_name], protocol)
        value_node = entry.children.get(value_name)
        out[str(key)] = None if value_node is None else _decode(shape.value, value_node, protocol)
    return out


def _decode_scalar(kind: str, name: str, text: str) -> Any:
    def bad(what: str) -> QueryRequestError:
        return QueryRequestError(
            "InvalidParameterValue", f"Value ({text}) for parameter {name} is invalid. {what}"
        )

    if kind in ("integer", "long"):
        if not re.fullmatch(r"-?[0-9]{1,20}", text):
            raise bad("Expected an integer.")
        return int(text)
    if kind in ("float", "double"):
        if not re.fullmatch(r"-?[0-9]{1,40}(\.[0-9]{0,40})?([eE][-+]?[0-9]{1,4})?", text):
            raise bad("Expected a number.")
        return float(text)
    if kind == "boolean":
        if text not in ("true", "false"):
            raise bad("Expected true or false.")
        return text == "true"
    if kind == "timestamp":
        try:
            return _parse_timestamp(text)
        except ValueError as err:
            raise bad("Expected an ISO-8601 timestamp.") from err
    if kind == "blob":
        data = _from_base64(text)
        if data is None:
            raise bad("Expected base64.")
        return data
    return text


def _from_base64(text: str) -> bytes | None:
    """The bytes strict base64 ``text`` encodes (blobs, both directions); None if invalid."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _parse_timestamp(value: str) -> datetime:
    """An aware UTC datetime from ISO-8601 text (naive means UTC), both directions."""
    stamp = datetime.fromisoformat(value.strip())
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


# ============================================================================ response codec
class ShapeMismatchError(ValueError):
    """A response document does not fit the botocore output shape (unknown key, wrong type)."""


_INVALID_XML_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escape(text: str, where: str) -> str:
    bad = _INVALID_XML_CHARS.search(text)
    if bad is not None:
        raise ShapeMismatchError(f"{where}: character {bad.group()!r} cannot be sent in XML")
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def wire_timestamp(value: Any, where: str = "timestamp") -> str:
    """EC2's wire form ``2025-01-14T09:12:31.000Z`` from an ISO string, epoch or datetime."""
    try:
        if isinstance(value, datetime):
            stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        elif isinstance(value, str):
            stamp = _parse_timestamp(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            stamp = datetime.fromtimestamp(value, tz=UTC)
        else:
            raise ShapeMismatchError(f"{where}: expected an ISO-8601 timestamp, got {value!r}")
    except (ValueError, OverflowError, OSError) as err:
        raise ShapeMismatchError(f"{where}: not a timestamp: {value!r}") from err
    stamp = stamp.astimezone(UTC)
    base = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    micro = stamp.microsecond
    frac = f"{micro // 1000:03d}" if micro % 1000 == 0 else f"{micro:06d}"
    return f"{base}.{frac}Z"


class _Renderer:
    """Walks a boto3-shaped value alongside its shape, emitting query-protocol XML."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.default_item = "item" if protocol == "ec2" else "member"
        self.out: list[str] = []

    def members(self, shape: Any, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ShapeMismatchError(
                f"{where or '(top level)'}: expected an object for shape {shape.name}, "
                f"got {type(value).__name__}"
            )
        members = shape.members
        for key, item in value.items():
            if item is None:
                continue
            member = members.get(key)
            path = f"{where}.{key}" if where else str(key)
            if member is None:
                raise ShapeMismatchError(
                    f"{path}: unknown key {key!r} (not a member of botocore shape {shape.name})"
                )
            name = _flattened_item_name(member) or str(member.serialization.get("name", key))
            self.element(name, member, item, path)

    def element(self, name: str, shape: Any, value: Any, where: str) -> None:
        kind = shape.type_name
        out = self.out
        if kind == "list":
            if not isinstance(value, list):
                raise ShapeMismatchError(f"{where}: expected a list, got {type(value).__name__}")
            item_name = str(shape.member.serialization.get("name", self.default_item))
            if shape.serialization.get("flattened"):
                for i, item in enumerate(value):
                    self.element(name, shape.member, item, f"{where}[{i}]")
                return
            out.append(f"<{name}>")
            for i, item in enumerate(value):
                self.element(item_name, shape.member, item, f"{where}[{i}]")
            out.append(f"</{name}>")
        elif kind == "map":
            self.map(name, shape, value, where)
        elif kind == "structure":
            out.append(f"<{name}>")
            self.members(shape, value, where)
            out.append(f"</{name}>")
        else:
            out.append(f"<{name}>{self.scalar(kind, value, where)}</{name}>")

    def map(self, name: str, shape: Any, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ShapeMismatchError(f"{where}: expected an object, got {type(value).__name__}")
        key_name = str(shape.key.serialization.get("name", "key"))
        value_name = str(shape.value.serialization.get("name", "value"))
        flattened = bool(shape.serialization.get("flattened"))
        if not flattened:
            self.out.append(f"<{name}>")
        for key, item in value.items():
            self.out.append(f"<{name}>" if flattened else "<entry>")
            self.element(key_name, shape.key, key, f"{where}.{key}")
            self.element(value_name, shape.value, item, f"{where}.{key}")
            self.out.append(f"</{name}>" if flattened else "</entry>")
        if not flattened:
            self.out.append(f"</{name}>")

    def scalar(self, kind: str, value: Any, where: str) -> str:
        if kind == "boolean":
            if not isinstance(value, bool):
                raise ShapeMismatchError(f"{where}: expected true/false, got {value!r}")
            return "true" if value else "false"
        if kind in ("integer", "long"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ShapeMismatchError(f"{where}: expected an integer, got {value!r}")
            return str(value)
        if kind in ("float", "double"):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ShapeMismatchError(f"{where}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise ShapeMismatchError(f"{where}: non-finite number {value!r}")
            return repr(float(value)) if isinstance(value, float) else str(value)
        if kind == "timestamp":
            return wire_timestamp(value, where)
        if kind == "blob":
            if isinstance(value, bytes | bytearray):
                return base64.b64encode(bytes(value)).decode("ascii")
            if not isinstance(value, str):
                raise ShapeMismatchError(f"{where}: expected base64 text, got {value!r}")
            if _from_base64(value) is None:
                raise ShapeMismatchError(f"{where}: blob is not valid base64")
            return value
        if not isinstance(value, str):
            raise ShapeMismatchError(
                f"{where}: expected a string, got {type(value).__name__} {value!r}"
            )
        return _escape(value, where)


def _namespace(service: str) -> str:
    ns = str(service_model(service).metadata.get("xmlNamespace", ""))
    return ns if ns.endswith("/") else ns + "/"


def validate_response(operation: Any, data: Any, protocol: str) -> None:
    """Raise :class:`ShapeMismatchError` unless ``data`` fits the operation's output shape."""
    shape = operation.output_shape
    if shape is None:
        if data not in ({}, None):
            raise ShapeMismatchError(
                f"{operation.name} returns no data; the replay file must be {{}}"
            )
        return
    _Renderer(protocol).members(shape, data, "")


def render_response(operation: Any, data: Mapping[str, Any], request_id: str) -> bytes:
    """The XML body AWS would send for ``data`` (a boto3-shaped dict) on this operation."""
    service = str(operation.service_model.service_name)
    protocol = str(operation.service_model.protocol)
    name = str(operation.name)
    renderer = _Renderer(protocol)
    shape = operation.output_shape
    if shape is not None:
        renderer.members(shape, dict(data), "")
    body = "".join(renderer.out)
    ns = _namespace(service)
    rid = _escape(request_id, "requestId")
    if protocol == "ec2":
        xml = f'<{name}Response xmlns="{ns}"><requestId>{rid}</requestId>{body}</{name}Response>'
    else:
        wrapper = shape.serialization.get("resultWrapper") if shape is not None else None
        result = f"<{wrapper}>{body}</{wrapper}>" if wrapper else body
        xml = (
            f'<{name}Response xmlns="{ns}">{result}'
            f"<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></{name}Response>"
        )
    return (_XML_DECL + xml).encode("utf-8")


def render_error(protocol: str, status: int, code: str, message: str, request_id: str) -> bytes:
    """An AWS error body: EC2's ``<Response><Errors>`` or the query ``<ErrorResponse>``."""
    c = _escape(code, "code")
    m = _escape(_INVALID_XML_CHARS.sub("?", message), "message")
    rid = _escape(request_id, "requestId")
    if protocol == "ec2":
        xml = (
            f"<Response><Errors><Error><Code>{c}</Code><Message>{m}</Message></Error></Errors>"
            f"<RequestID>{rid}</RequestID></Response>"
        )
    else:
        kind = "Receiver" if status >= 500 else "Sender"
        xml = (
            f'<ErrorResponse xmlns="{_namespace("sts")}"><Error><Type>{kind}</Type>'
            f"<Code>{c}</Code><Message>{m}</Message></Error>"
            f"<RequestId>{rid}</RequestId></ErrorResponse>"
        )
    return (_XML_DECL + xml).encode("utf-8")


# ============================================================================ page tokens
_TOKEN_PREFIX = "fc1."


def encode_page_token(operation: str, offset: int) -> str:
    """An opaque NextToken carrying the offset of the next page."""
    return encode_token(_TOKEN_PREFIX, operation, offset)


def decode_page_token(token: str, operation: str) -> int:
    """The offset in ``token``; :class:`QueryRequestError` for anything fakecloud did not issue."""
    offset = decode_token(token, _TOKEN_PREFIX, operation)
    if offset is None:
        raise QueryRequestError("InvalidParameterValue", f"The token '{token[:80]}' is invalid.")
    return offset
