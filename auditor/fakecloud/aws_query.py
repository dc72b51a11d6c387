"""AWS EC2 and STS over the query protocol, served from a replay directory.

Two layers, both driven by botocore's own service model so that nothing is hand-templated:

* the *codec*: :func:`parse_form` / :func:`decode_params` turn a form-encoded request body
  back into the parameter dict the SDK serialised, and :func:`render_response` /
  :func:`render_error` turn a boto3-shaped dict into the XML botocore's parsers expect;
* the *handler*: :class:`AwsQueryHandler` maps a signed request to an account (by access key)
  and region (by credential scope), reads the replay file for the call and applies the few
  server-side behaviours the providers rely on (identifier filters, pagination, errors).

Replay layout (a contract other code relies on)::

    aws/<account>/<region>/<Operation>.json            list / account-level calls
    aws/<account>/<region>/<Operation>.error.json      {"status", "code", "message"}
    aws/<account>/<region>/<Operation>/<resource>.json per-resource calls (InstanceId, ...)
    aws/<account>/<Operation>.json                     account-level fallback (STS, regions)

Behaviour worth knowing (each mirrors what AWS does, or says plainly that it cannot):

* SigV4 signatures are not verified (replays hold no secrets); only the credential scope is
  read. An access key equal to an account folder selects it; with one account any key does;
  otherwise EC2 answers 401 ``AuthFailure`` and STS 403 ``InvalidClientTokenId``.
* A region without a folder is treated like a disabled opt-in region: EC2 answers 401
  ``AuthFailure`` "AWS was not able to validate the provided access credentials" (with a
  fakecloud hint). ``DescribeRegions`` and STS answer from any region, so a caller can
  bootstrap from its home region, as it can on AWS.
* An ``.error.json`` file wins over a ``.json`` file in the same place.
* Missing file: list calls return empty lists, per-resource calls the resource's
  ``*.NotFound``, other calls 400 ``UnsupportedOperation`` naming the files looked for.
* ``DryRun=true`` answers 412 ``DryRunOperation``; ``Filters`` answer 400 (unsupported);
  parameters fakecloud does not interpret (``Owners``, ``KeyType``, ...) are ignored.
* Blob members are base64 text in replay files; timestamps are ISO-8601 strings.
  A top-level ``ResponseMetadata`` (as in a raw boto3 dump) is tolerated and dropped.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import math
import re
import threading
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.session

from auditor.fakecloud.faults import Fault
from auditor.fakecloud.replay import LoadedJson, ReplayError, is_safe_name
from auditor.fakecloud.server import FakeRequest, FakeResponse, HandlerContext

log = logging.getLogger("auditor.fakecloud")

XML_CONTENT_TYPE = "text/xml;charset=UTF-8"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
_MAX_FORM_FIELDS = 10_000
_MAX_KEY_DEPTH = 32
_SERVICES = ("ec2", "sts")


# ============================================================================ service models
@functools.cache
def _session() -> Any:
    return botocore.session.get_session()


@functools.cache
def service_model(service: str) -> Any:
    """botocore's model for ``ec2`` or ``sts`` (loaded once per process)."""
    return _session().get_service_model(service)


@functools.cache
def _paginator_config(service: str, operation: str) -> Mapping[str, Any] | None:
    try:
        model = _session().get_paginator_model(service)
        config: Mapping[str, Any] = model.get_paginator(operation)
    except Exception:  # no paginators for the service, or none for this operation
        return None
    return config


def _protocol(service: str) -> str:
    return str(service_model(service).protocol)


# ============================================================================ request codec
class QueryRequestError(Exception):
    """A request the query protocol cannot accept; becomes an AWS 4xx error response."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


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
        key = _serialized_name(member, member_name, protocol)
        if (
            protocol != "ec2"
            and member.type_name == "list"
            and member.serialization.get("flattened")
            and member.member.serialization.get("name")
        ):
            key = _serialized_name(member.member, "", protocol)
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
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as err:
            raise bad("Expected base64.") from err
    return text


# ============================================================================ response codec
class ShapeMismatchError(ValueError):
    """A replay document does not fit the botocore output shape (unknown key, wrong type)."""


_INVALID_XML_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escape(text: str, where: str) -> str:
    bad = _INVALID_XML_CHARS.search(text)
    if bad is not None:
        raise ShapeMismatchError(f"{where}: character {bad.group()!r} cannot be sent in XML")
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _parse_timestamp(value: str) -> datetime:
    stamp = datetime.fromisoformat(value.strip())
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


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
            name = str(member.serialization.get("name", key))
            if (
                member.type_name == "list"
                and member.serialization.get("flattened")
                and member.member.serialization.get("name")
            ):
                name = str(member.member.serialization["name"])
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
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as err:
                raise ShapeMismatchError(f"{where}: blob is not valid base64") from err
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


# ============================================================================ handler
class AwsError(Exception):
    """An AWS API error to send back (status, code, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<akid>[^/\s,]+)/(?P<date>[0-9]{8})/"
    r"(?P<region>[^/\s,]+)/(?P<service>[^/\s,]+)/aws4_request"
)


@dataclass(frozen=True)
class _ResourceKind:
    """How AWS names a missing or malformed resource id in its errors."""

    not_found: str
    malformed: str
    noun: str


_RESOURCE_PARAMS: dict[str, _ResourceKind] = {
    "InstanceId": _ResourceKind(
        "InvalidInstanceID.NotFound",
        "InvalidInstanceID.Malformed",
        "The instance ID '{}' does not exist",
    ),
    "ImageId": _ResourceKind(
        "InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "The image id '[{}]' does not exist"
    ),
    "VolumeId": _ResourceKind(
        "InvalidVolume.NotFound", "InvalidVolumeID.Malformed", "The volume '{}' does not exist."
    ),
}


@dataclass(frozen=True)
class _IdFilter:
    """A list parameter that narrows a list response by identifier, as EC2 does server-side."""

    param: str
    path: tuple[str, ...]  # list keys from the top: ("Reservations", "Instances")
    id_key: str
    code: str
    one: str  # message for one missing id ("{}" is the id)
    many: str  # message for several ("{}" is the comma-separated ids)


_ID_FILTERS: tuple[_IdFilter, ...] = (
    _IdFilter("InstanceIds", ("Reservations", "Instances"), "InstanceId",
              "InvalidInstanceID.NotFound",
              "The instance ID '{}' does not exist", "The instance IDs '{}' do not exist"),
    _IdFilter("InstanceTypes", ("InstanceTypes",), "InstanceType", "InvalidInstanceType",
              "The following supplied instance types do not exist: [{}]",
              "The following supplied instance types do not exist: [{}]"),
    _IdFilter("ImageIds", ("Images",), "ImageId", "InvalidAMIID.NotFound",
              "The image id '[{}]' does not exist", "The image ids '[{}]' do not exist"),
    _IdFilter("VolumeIds", ("Volumes",), "VolumeId", "InvalidVolume.NotFound",
              "The volume '{}' does not exist.", "The volumes '{}' do not exist."),
    _IdFilter("RegionNames", ("Regions",), "RegionName", "InvalidParameterValue",
              "Invalid region name: {}", "Invalid region names: {}"),
)  # fmt: skip

_TOKEN_PREFIX = "fc1."


def encode_page_token(operation: str, offset: int) -> str:
    """An opaque NextToken carrying the offset of the next page."""
    raw = json.dumps({"op": operation, "offset": offset}, separators=(",", ":")).encode()
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page_token(token: str, operation: str) -> int:
    """The offset in ``token``; :class:`AwsError` 400 for anything fakecloud did not issue."""
    invalid = AwsError(400, "InvalidParameterValue", f"The token '{token[:80]}' is invalid.")
    if not token.startswith(_TOKEN_PREFIX) or len(token) > 512:
        raise invalid
    body = token[len(_TOKEN_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError) as err:
        raise invalid from err
    if (
        not isinstance(data, dict)
        or data.get("op") != operation
        or type(data.get("offset")) is not int
        or data["offset"] < 0
    ):
        raise invalid
    offset: int = data["offset"]
    return offset


@dataclass
class _Seen:
    """What is known about a request so far, for the request log (even when it fails)."""

    account: str | None = None
    region: str | None = None
    operation: str | None = None
    resource: str | None = None


@dataclass
class _Call:
    """One authenticated, decoded AWS request."""

    service: str
    protocol: str
    operation: Any  # botocore OperationModel
    access_key: str
    account: str
    region: str
    params: dict[str, Any]
    resource_param: str | None = None
    resource: str | None = None

    @property
    def name(self) -> str:
        return str(self.operation.name)


class AwsQueryHandler:
    """The ``aws`` cloud handler: EC2 (protocol ``ec2``) and STS (protocol ``query``)."""

    cloud = "aws"

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.store = ctx.replay
        self._lock = threading.Lock()
        self._validated: dict[tuple[str, str], tuple[int, int, int]] = {}
        for service in _SERVICES:  # load the models up front, not on the first request
            service_model(service)

    # ------------------------------------------------------------------ dispatch
    def matches(self, request: FakeRequest) -> bool:
        """SigV4-signed POST whose form body names an ``Action``."""
        auth = request.headers.get("authorization", "")
        if request.method != "POST" or not auth.startswith("AWS4-HMAC-SHA256"):
            return False
        return re.search(rb"(?:^|&)Action=", request.body) is not None

    def handle(self, request: FakeRequest) -> FakeResponse:
        request_id = str(uuid.uuid4())
        match = _AUTH_RE.search(request.headers.get("authorization", ""))
        service = match.group("service") if match else "ec2"
        protocol = "ec2" if service == "ec2" else "query"
        seen = _Seen(region=match.group("region") if match else None)
        try:
            if match is None:
                raise AwsError(400, "IncompleteSignature", "Credential scope is malformed.")
            if service not in _SERVICES:
                raise AwsError(
                    400, "InvalidAction", f"fakecloud serves ec2 and sts, not {service}."
                )
            call = self._authenticate(request, match, service, protocol, seen)
            fault = self.ctx.faults.decide(
                ("aws", call.account, call.region, call.name, call.resource)
            )
            if fault is not None:
                return self._fault(fault, call, request_id, seen)
            data = self._serve(call)
            body = render_response(call.operation, data, request_id)
            return self._response(200, body, request_id, seen)
        except AwsError as err:
            body = render_error(protocol, err.status, err.code, err.message, request_id)
            return self._response(err.status, body, request_id, seen)
        except Exception as err:  # a fakecloud bug must still reach the SDK as an AWS error
            log.exception("fakecloud: AWS handler failed")
            message = f"fakecloud internal error: {type(err).__name__}: {err}"
            body = render_error(protocol, 500, "InternalError", message, request_id)
            return self._response(500, body, request_id, seen)

    def _response(
        self,
        status: int,
        body: bytes,
        request_id: str,
        seen: _Seen,
        fault: str | None = None,
    ) -> FakeResponse:
        return FakeResponse(
            status=status,
            body=body,
            content_type=XML_CONTENT_TYPE,
            headers={"x-amzn-RequestId": request_id},
            account=seen.account,
            region=seen.region,
            operation=seen.operation,
            resource=seen.resource,
            fault=fault,
        )

    def _fault(self, fault: Fault, call: _Call, request_id: str, seen: _Seen) -> FakeResponse:
        if fault is Fault.THROTTLE:
            status, code, message = (
                (503, "RequestLimitExceeded", "Request limit exceeded.")
                if call.protocol == "ec2"
                else (400, "Throttling", "Rate exceeded")
            )
        elif fault is Fault.INTERNAL_ERROR:
            status, code, message = 500, "InternalError", "An internal error has occurred."
        else:
            status, code = 503, ("Unavailable" if call.protocol == "ec2" else "ServiceUnavailable")
            message = "The server is overloaded and cannot handle the request."
        body = render_error(call.protocol, status, code, message, request_id)
        return self._response(status, body, request_id, seen, fault.value)

    # ------------------------------------------------------------------ authentication
    def _authenticate(
        self,
        request: FakeRequest,
        match: re.Match[str],
        service: str,
        protocol: str,
        seen: _Seen,
    ) -> _Call:
        try:
            form = parse_form(request.body)
        except QueryRequestError as err:
            raise AwsError(err.status, err.code, err.message) from err
        action = form.pop("Action", "")
        form.pop("Version", None)
        model = service_model(service)
        if action not in model.operation_names:
            raise AwsError(
                400, "InvalidAction", f"The action {action} is not valid for this web service."
            )
        seen.operation = action
        operation = model.operation_model(action)
        akid, region = match.group("akid"), match.group("region")
        account = self._account_for(akid, protocol)
        seen.account = account
        needs_region = protocol == "ec2" and action != "DescribeRegions"
        if needs_region and not self.store.is_dir("aws", account, region):
            raise AwsError(
                401,
                "AuthFailure",
                "AWS was not able to validate the provided access credentials "
                f"(fakecloud: region {region} is not enabled for account {account}; "
                f"there is no folder aws/{account}/{region})",
            )
        try:
            params = decode_params(operation.input_shape, form, protocol)
        except QueryRequestError as err:
            raise AwsError(err.status, err.code, err.message) from err
        call = _Call(service, protocol, operation, akid, account, region, params)
        self._find_resource(call, seen)
        return call

    def _account_for(self, akid: str, protocol: str) -> str:
        accounts = self.store.subdirs("aws")
        if akid in accounts:
            return akid
        if len(accounts) == 1:
            return accounts[0]
        if protocol == "ec2":
            raise AwsError(
                401, "AuthFailure", "AWS was not able to validate the provided access credentials"
            )
        raise AwsError(
            403, "InvalidClientTokenId", "The security token included in the request is invalid."
        )

    def _find_resource(self, call: _Call, seen: _Seen) -> None:
        shape = call.operation.input_shape
        members = shape.members if shape is not None else {}
        for param, kind in _RESOURCE_PARAMS.items():
            if param in members and members[param].type_name == "string":
                call.resource_param = param
                value = call.params.get(param)
                if value is None:
                    if param in shape.required_members:
                        raise AwsError(
                            400,
                            "MissingParameter",
                            f"The request must contain the parameter {param}",
                        )
                    return
                seen.resource = call.resource = str(value)
                if not is_safe_name(call.resource):
                    raise AwsError(400, kind.malformed, f'Invalid id: "{call.resource}"')
                return

    # ------------------------------------------------------------------ serving
    def _serve(self, call: _Call) -> dict[str, Any]:
        if call.params.get("DryRun") is True:
            raise AwsError(
                412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set."
            )
        filters = call.params.get("Filters")
        if filters:
            first = filters[0].get("Name", "") if isinstance(filters[0], dict) else ""
            raise AwsError(
                400, "InvalidParameterValue", f"fakecloud does not support filter {first}"
            )
        if call.resource is not None:
            return self._serve_resource(call)
        data = self._account_level(call)
        data = self._apply_id_filters(call, data)
        return self._paginate(call, data)

    def _serve_resource(self, call: _Call) -> dict[str, Any]:
        assert call.resource is not None and call.resource_param is not None
        found = self._lookup([("aws", call.account, call.region, call.name, call.resource)], call)
        if found is None:
            kind = _RESOURCE_PARAMS[call.resource_param]
            raise AwsError(400, kind.not_found, kind.noun.format(call.resource))
        return found

    def _account_level(self, call: _Call) -> dict[str, Any]:
        """Region file, then account file; STS/DescribeRegions synthesised; lists empty."""
        places: list[tuple[str, ...]] = []
        if self.store.is_dir("aws", call.account, call.region):
            places.append(("aws", call.account, call.region, call.name))
        places.append(("aws", call.account, call.name))
        found = self._lookup(places, call)
        if found is not None:
            return found
        if call.name == "GetCallerIdentity":
            return {
                "UserId": call.access_key,
                "Account": call.account,
                "Arn": f"arn:aws:iam::{call.account}:user/ccaudit-replay",
            }
        if call.name == "DescribeRegions":
            return {
                "Regions": [
                    {
                        "RegionName": region,
                        "Endpoint": f"ec2.{region}.amazonaws.com",
                        "OptInStatus": "opt-in-not-required",
                    }
                    for region in self.store.subdirs("aws", call.account)
                ]
            }
        shape = call.operation.output_shape
        lists = [n for n, m in shape.members.items() if m.type_name == "list"] if shape else []
        if lists and call.name.startswith(("Describe", "List", "Get")):
            return {name: [] for name in lists}
        raise AwsError(
            400,
            "UnsupportedOperation",
            f"fakecloud has no replay for {call.name} "
            f"(looked for aws/{call.account}/{call.region}/{call.name}.json "
            f"and aws/{call.account}/{call.name}.json)",
        )

    def _lookup(self, places: list[tuple[str, ...]], call: _Call) -> dict[str, Any] | None:
        """The first ``<x>.error.json`` / ``<x>.json`` found; an error file raises it."""
        for parts in places:
            *folder, stem = parts
            try:
                error = self.store.load_json(*folder, f"{stem}.error.json")
                if error is not None:
                    raise self._replayed_error(error)
                doc = self.store.load_json(*folder, f"{stem}.json")
            except ReplayError as err:
                log.error("fakecloud: %s", err)
                raise AwsError(
                    500, "InternalError", f"fakecloud replay file problem: {err}"
                ) from err
            if doc is not None:
                self._validate(doc, call)
                return {k: v for k, v in doc.data.items() if k != "ResponseMetadata"}
        return None

    def _replayed_error(self, doc: LoadedJson) -> AwsError:
        data = doc.data
        ok = (
            isinstance(data, dict)
            and set(data) <= {"status", "code", "message"}
            and type(data.get("status")) is int
            and 400 <= data["status"] <= 599
            and isinstance(data.get("code"), str)
            and data["code"]
            and isinstance(data.get("message", ""), str)
        )
        if not ok:
            message = (
                f"fakecloud replay file {doc.relpath}: expected "
                '{"status": 400-599, "code": "...", "message": "..."}'
            )
            log.error(message)
            return AwsError(500, "InternalError", message)
        return AwsError(data["status"], data["code"], data.get("message", ""))

    def _validate(self, doc: LoadedJson, call: _Call) -> None:
        key = (str(doc.path), call.name)
        with self._lock:
            if self._validated.get(key) == doc.stamp:
                return
        data = doc.data
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "ResponseMetadata"}
        try:
            validate_response(call.operation, data, call.protocol)
        except ShapeMismatchError as err:
            message = f"fakecloud replay file {doc.relpath} does not match {call.name}: {err}"
            log.error(message)
            raise AwsError(500, "InternalError", message) from err
        with self._lock:
            if len(self._validated) > 4096:
                self._validated.clear()
            self._validated[key] = doc.stamp

    # ------------------------------------------------------------------ list behaviour
    def _apply_id_filters(self, call: _Call, data: dict[str, Any]) -> dict[str, Any]:
        for flt in _ID_FILTERS:
            wanted = call.params.get(flt.param)
            shape = call.operation.output_shape
            if not wanted or shape is None or flt.path[0] not in shape.members:
                continue
            found: set[str] = set()
            data = dict(data)
            data[flt.path[0]] = _filter_list(
                data.get(flt.path[0]) or [], flt, 0, set(wanted), found
            )
            missing = [w for w in dict.fromkeys(wanted) if w not in found]
            if missing:
                template = flt.one if len(missing) == 1 else flt.many
                raise AwsError(400, flt.code, template.format(", ".join(missing)))
        return data

    def _paginate(self, call: _Call, data: dict[str, Any]) -> dict[str, Any]:
        config = _paginator_config(call.service, call.name)
        if config is None:
            return data
        result_key, in_token = config.get("result_key"), config.get("input_token")
        out_token, limit_key = config.get("output_token"), config.get("limit_key")
        if not all(isinstance(k, str) and "." not in k for k in (result_key, in_token, out_token)):
            return dict(data)  # multi-key paginators: served whole (none used by the auditor)
        assert isinstance(result_key, str) and isinstance(out_token, str)
        items = data.get(result_key)
        if not isinstance(items, list):
            items = []
        token = call.params.get(str(in_token))
        offset = decode_page_token(token, call.name) if token else 0
        if offset > len(items):
            raise AwsError(400, "InvalidParameterValue", f"The token '{token}' is invalid.")
        size = self.ctx.page_size
        limit = call.params.get(limit_key) if isinstance(limit_key, str) else None
        if limit is not None:
            if limit < 1:
                raise AwsError(
                    400,
                    "InvalidParameterValue",
                    f"Value ({limit}) for parameter {limit_key} is invalid.",
                )
            size = min(size, limit)
        out = {k: v for k, v in data.items() if k != out_token}
        out[result_key] = items[offset : offset + size]
        if offset + size < len(items):
            out[out_token] = encode_page_token(call.name, offset + size)
        return out


def _filter_list(
    items: list[Any], flt: _IdFilter, depth: int, wanted: set[str], found: set[str]
) -> list[Any]:
    """Keep items whose id is wanted; at a nesting level, drop parents left empty."""
    kept: list[Any] = []
    last = depth == len(flt.path) - 1
    for item in items:
        if not isinstance(item, dict):
            continue
        if last:
            ident = item.get(flt.id_key)
            if ident in wanted:
                found.add(str(ident))
                kept.append(item)
            continue
        child_key = flt.path[depth + 1]
        children = _filter_list(item.get(child_key) or [], flt, depth + 1, wanted, found)
        if children:
            kept.append({**item, child_key: children})
    return kept
