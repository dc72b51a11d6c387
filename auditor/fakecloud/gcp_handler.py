"""The ``gcp`` cloud handler: Compute Engine REST and Cloud Logging ``entries:list`` replays.

It serves the real ``google-cloud-compute`` client (REST transport) and ``google-cloud-logging``
(HTTP, ``_use_grpc=False``) pointed at fakecloud through ``api_endpoint``. Requests are GCP when
their path starts with ``/compute/v1/`` or ``/v2/entries:list`` and they carry a ``Bearer`` or
no ``Authorization`` header (AnonymousCredentials send none); tokens are not checked. A replay
directory without a ``gcp/`` folder declares no Google Cloud at all: the handler then stands
aside and the server answers its plain "no cloud handler" 400.

Replay layout (a contract other code relies on)::

    gcp/<project>/aggregatedList.json        instances.aggregatedList body:
                                             {"items": {"zones/<z>": {"instances": [...]}}}
    gcp/<project>/logEntries.json            a JSON list of LogEntry objects
    gcp/<project>/shieldedInstanceIdentity/<zone>/<name>.json
                                             instances.getShieldedInstanceIdentity body
    gcp/<project>/instanceTemplates/<name>.json
                                             instanceTemplates.get body (a GKE node pool's)
    <any of these>.error.json                {"status": 400-599, "code": "...", "message": "..."}

Served paths::

    GET  /compute/v1/projects/<p>/aggregated/instances                  instances.aggregatedList
    GET  /compute/v1/projects/<p>/zones/<z>/instances                   instances.list
    GET  /compute/v1/projects/<p>/zones/<z>/instances/<name>            instances.get
    GET  /compute/v1/projects/<p>/zones/<z>/instances/<name>/getShieldedInstanceIdentity
    GET  /compute/v1/projects/<p>/global/instanceTemplates/<name>       instanceTemplates.get
    POST /v2/entries:list                                               logging.entries.list

Behaviour worth knowing (each mirrors Google, or says plainly that fakecloud cannot):

* Errors use Google's JSON error body (``error.code/message/status/errors[].reason``), so the
  SDKs raise the usual ``google.api_core.exceptions`` (403 -> ``Forbidden``, ...).
* A project without a ``gcp/<project>`` folder answers 403 ``PERMISSION_DENIED``, as Google does
  for projects that do not exist or that the caller cannot see ("Required
  'compute.instances.list' permission for 'projects/<p>'"; Logging: "Permission
  'logging.logEntries.list' denied on resource 'projects/<p>' (or it may not exist).").
  A project folder without ``aggregatedList.json`` / ``logEntries.json`` has no instances / logs.
* ``instances.list`` and ``instances.get`` are served from ``aggregatedList.json`` (and its
  ``.error.json``); a zone missing from it is empty; a missing instance is 404 ``NOT_FOUND``.
  A missing identity file is 404 ``NOT_FOUND`` naming the instance.
* Lists are paged by fakecloud: page size = min(``maxResults`` (default 500, at most 500),
  FaultConfig.page_size), counted in instances across zones; zones without instances (e.g. a
  ``warning`` scope) appear on the first page. Logging pages by min(``pageSize`` (default 50,
  capped at 1000), page_size). Page tokens are opaque, bound to the request that issued them;
  any other token is 400 ``INVALID_ARGUMENT``.
* Compute ``filter`` and ``orderBy`` are not supported (400 when non-empty); unknown query
  parameters are 400, as on Google. Logging filters support exactly a conjunction (`` AND ``)
  of ``logName="..."`` (compared URL-decoded), ``resource.type="..."``,
  ``resource.labels.instance_id="..."`` and ``timestamp`` with ``>=``, ``>``, ``<=``, ``<``
  (RFC 3339, compared as datetimes truncated to microseconds), plus parenthesised ``OR`` groups
  of those clauses. Anything else is 400 naming the clause, never silently ignored.
  (``google-cloud-logging`` adds ``timestamp>="<now-24h>"`` to a filter without a timestamp.)
* Replay files are validated: malformed JSON, a wrong shape, or an instance, identity or log
  entry that the strict proto parser (``compute_v1`` / ``logging_v2.types``) rejects, is 500
  ``INTERNAL`` naming the file and field. The SDKs are imported lazily, on the first request
  that needs them; without them that check is skipped. Validation is cached per file version.
* Injected faults: throttling is 429 ``RESOURCE_EXHAUSTED`` (reason ``rateLimitExceeded``),
  5xx is 500 ``INTERNAL`` or 503 ``UNAVAILABLE`` (reason ``backendError``).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any

from auditor.fakecloud.faults import Fault
from auditor.fakecloud.paging import decode_token, encode_token, request_digest
from auditor.fakecloud.replay import (
    ERROR_FILE_SHAPE,
    LoadedJson,
    PreparedCache,
    ReplayError,
    error_file_fields,
    is_safe_name,
)
from auditor.fakecloud.seam import FakeRequest, FakeResponse, HandlerContext

log = logging.getLogger("auditor.fakecloud")

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"

OP_AGGREGATED = "instances.aggregatedList"
OP_LIST = "instances.list"
OP_GET = "instances.get"
OP_IDENTITY = "instances.getShieldedInstanceIdentity"
OP_TEMPLATE = "instanceTemplates.get"
OP_LOGS = "logging.entries.list"

COMPUTE_MAX_RESULTS = 500
"""Compute's default and largest ``maxResults``."""
LOGGING_DEFAULT_PAGE_SIZE = 50
LOGGING_MAX_PAGE_SIZE = 1000

_CANONICAL = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_REASONS = {
    400: "invalid",
    401: "required",
    403: "forbidden",
    404: "notFound",
    409: "conflict",
    412: "conditionNotMet",
    429: "rateLimitExceeded",
}

# Standard Google system parameters the SDKs (or a curious user) may send.
_SYSTEM_PARAMS = frozenset({"prettyPrint", "alt", "$alt", "key", "quotaUser", "userIp", "fields"})
_AGGREGATED_PARAMS = frozenset(
    {"maxResults", "pageToken", "filter", "orderBy", "returnPartialSuccess", "includeAllScopes",
     "serviceProjectNumber"}
)  # fmt: skip
_LIST_PARAMS = frozenset({"maxResults", "pageToken", "filter", "orderBy", "returnPartialSuccess"})
_LOG_BODY_FIELDS = frozenset({"resourceNames", "filter", "orderBy", "pageSize", "pageToken"})

_PROJECT = r"(?P<project>[^/]+)"
_ZONE = r"(?P<zone>[^/]+)"
_NAME = r"(?P<name>[^/]+)"
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (OP_AGGREGATED, re.compile(rf"/compute/v1/projects/{_PROJECT}/aggregated/instances")),
    (OP_LIST, re.compile(rf"/compute/v1/projects/{_PROJECT}/zones/{_ZONE}/instances")),
    (OP_GET, re.compile(rf"/compute/v1/projects/{_PROJECT}/zones/{_ZONE}/instances/{_NAME}")),
    (
        OP_IDENTITY,
        re.compile(
            rf"/compute/v1/projects/{_PROJECT}/zones/{_ZONE}/instances/{_NAME}"
            r"/getShieldedInstanceIdentity"
        ),
    ),
    (OP_TEMPLATE, re.compile(rf"/compute/v1/projects/{_PROJECT}/global/instanceTemplates/{_NAME}")),
)
_PERMISSION = {
    OP_AGGREGATED: "compute.instances.list",
    OP_LIST: "compute.instances.list",
    OP_GET: "compute.instances.get",
    OP_IDENTITY: "compute.instances.getShieldedInstanceIdentity",
    OP_TEMPLATE: "compute.instanceTemplates.get",
}


class GcpError(Exception):
    """An answer in Google's JSON error format; ``code`` is the canonical status name."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CANONICAL.get(status, "INTERNAL" if status >= 500 else "UNKNOWN")
        self.message = message


def render_error(
    status: int, code: str, message: str, reason: str | None = None, domain: str = "global"
) -> bytes:
    """Google's JSON error body; ``errors[].reason`` follows the HTTP status unless given."""
    reason = reason or _REASONS.get(status, "backendError" if status >= 500 else "badRequest")
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": code,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }
    }
    return json.dumps(body).encode()


def _invalid(message: str) -> GcpError:
    return GcpError(400, message, "INVALID_ARGUMENT")


# ============================================================================ timestamps
_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:?\d{2})"
)


def parse_rfc3339(text: str) -> datetime | None:
    """An aware datetime (nanoseconds truncated to microseconds); None if not RFC 3339.

    Accepts ``+0000`` offsets too, because google-cloud-logging writes its default window so.
    """
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        return None
    frac = (m.group("frac") or "")[:6].ljust(6, "0")
    tz = m.group("tz")
    try:
        naive = datetime.fromisoformat(f"{m.group('date')}T{m.group('time')}.{frac}")
        if tz in ("Z", "z"):
            offset = timedelta(0)
        else:
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:])
            if hours > 23 or minutes > 59:
                return None
            offset = sign * timedelta(hours=hours, minutes=minutes)
    except ValueError:
        return None
    return naive.replace(tzinfo=timezone(offset)).astimezone(UTC)


# ============================================================================ logging filters
EntryPredicate = Callable[[Mapping[str, Any], datetime], bool]

_CLAUSE = re.compile(
    r'(?P<field>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>>=|<=|=|>|<)\s*"(?P<value>(?:[^"\\]|\\.)*)"',
    re.DOTALL,
)
_AND = re.compile(r"\s+AND\s+")
_OR = re.compile(r"\s+OR\s+")
_EQUALITY_FIELDS = ("logName", "resource.type", "resource.labels.instance_id")
_SUPPORTED = (
    'fakecloud supports logName="...", resource.type="...", resource.labels.instance_id="..." '
    'and timestamp>=|>|<=|<"RFC 3339", joined by AND, and (... OR ...) groups of them'
)


def _split_top(text: str, sep: re.Pattern[str]) -> list[str]:
    """``text`` split at ``sep`` outside double quotes and parentheses."""
    parts: list[str] = []
    depth, start, i, quoted = 0, 0, 0, False
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _invalid(f"Invalid filter: unbalanced ')' in {text!r}")
        elif depth == 0 and ch.isspace():
            m = sep.match(text, i)
            if m is not None:
                parts.append(text[start:i])
                start = i = m.end()
                continue
        i += 1
    if quoted:
        raise _invalid(f"Invalid filter: unterminated string in {text!r}")
    if depth:
        raise _invalid(f"Invalid filter: unbalanced '(' in {text!r}")
    parts.append(text[start:])
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value, flags=re.DOTALL)


def _resource_field(entry: Mapping[str, Any], field: str) -> Any:
    """``resource.type`` or ``resource.labels.instance_id`` of an entry (None if absent)."""
    resource = entry.get("resource")
    if not isinstance(resource, Mapping):
        return None
    if field == "resource.type":
        return resource.get("type")
    labels = resource.get("labels")
    return labels.get("instance_id") if isinstance(labels, Mapping) else None


def _clause(text: str) -> EntryPredicate:
    m = _CLAUSE.fullmatch(text.strip())
    if m is None:
        raise _invalid(f"Unsupported filter clause '{text.strip()}': {_SUPPORTED}")
    field, op, value = m.group("field"), m.group("op"), _unescape(m.group("value"))
    if field in _EQUALITY_FIELDS and op == "=":
        if field == "logName":
            wanted = urllib.parse.unquote(value)
            return lambda e, _ts: (
                isinstance(e.get("logName"), str) and urllib.parse.unquote(e["logName"]) == wanted
            )
        return lambda e, _ts: _resource_field(e, field) == value
    if field == "timestamp" and op != "=":
        bound = parse_rfc3339(value)
        if bound is None:
            raise _invalid(
                f"Invalid filter clause '{text.strip()}': '{value}' is not an RFC 3339 timestamp"
            )
        compare: dict[str, Callable[[datetime], bool]] = {
            ">=": lambda ts: ts >= bound,
            ">": lambda ts: ts > bound,
            "<=": lambda ts: ts <= bound,
            "<": lambda ts: ts < bound,
        }
        check = compare[op]
        return lambda _e, ts: check(ts)
    raise _invalid(f"Unsupported filter clause '{text.strip()}': {_SUPPORTED}")


def compile_filter(text: str) -> EntryPredicate:
    """The Cloud Logging filter subset fakecloud applies; 400 for anything outside it."""
    if not text.strip():
        return lambda _e, _ts: True
    checks: list[EntryPredicate] = []
    for term in _split_top(text.strip(), _AND):
        term = term.strip()
        if term.startswith("(") and term.endswith(")") and _balanced(term[1:-1]):
            options = [_clause(part) for part in _split_top(term[1:-1].strip(), _OR)]
            checks.append(_any_of(options))
        else:
            checks.append(_clause(term))
    return lambda e, ts: all(check(e, ts) for check in checks)


def _any_of(options: list[EntryPredicate]) -> EntryPredicate:
    return lambda e, ts: any(option(e, ts) for option in options)


def _balanced(text: str) -> bool:
    """True when ``text`` (a group's inside) opens no parenthesis it does not close."""
    try:
        _split_top(text, _AND)
    except GcpError:
        return False
    return True


# ============================================================================ page tokens
_TOKEN_PREFIX = "fcg1."


def encode_page_token(operation: str, scope: str, offset: int) -> str:
    """An opaque token carrying the next offset, bound to the request's ``scope`` digest."""
    return encode_token(_TOKEN_PREFIX, operation, offset, scope)


def decode_page_token(token: str, operation: str, scope: str, error: GcpError) -> int:
    """The offset in ``token``; ``error`` for anything this request would not have issued."""
    offset = decode_token(token, _TOKEN_PREFIX, operation, scope)
    if offset is None:
        raise error
    return offset


# ============================================================================ validation
_sdk_lock = threading.Lock()
_sdk_cache: dict[str, Any] = {}

_COMPUTE_TYPES = "google.cloud.compute_v1"
_LOGGING_TYPES = "google.cloud.logging_v2.types"


def _sdk_module(name: str) -> Any | None:
    """An SDK module if installed (imported on first use, so fakecloud needs no GCP SDK)."""
    with _sdk_lock:
        if name not in _sdk_cache:
            try:
                _sdk_cache[name] = importlib.import_module(name)
            except ImportError:
                log.info("fakecloud: %s missing; GCP replays are not proto-checked", name)
                _sdk_cache[name] = None
        return _sdk_cache[name]


def _proto_problem(module: str, message_name: str, data: Any) -> str | None:
    """Why the strict proto parser rejects ``data``; None if it accepts or is unavailable.

    An ``Any`` payload whose type is not registered locally (an unknown ``protoPayload``) is
    not the replay's fault, so it is accepted.
    """
    types = _sdk_module(module)
    if types is None:
        return None
    try:
        getattr(types, message_name).from_json(json.dumps(data))
    except Exception as err:  # json_format.ParseError and the ValueErrors it wraps
        text = str(err).split("\n Available Fields", 1)[0].strip()
        return None if "Can not find message descriptor by type_url" in text else text
    return None


def _replay_problem(doc: LoadedJson, what: str) -> GcpError:
    message = f"fakecloud replay file {doc.relpath}: {what}"
    log.error(message)
    return GcpError(500, message, "INTERNAL")


@dataclass(frozen=True)
class _Scope:
    """One ``items`` entry of an aggregated list: its key, its non-instance members, instances."""

    key: str
    extra: Mapping[str, Any]
    instances: list[Mapping[str, Any]]


@dataclass(frozen=True)
class _Aggregated:
    top: Mapping[str, Any]
    scopes: list[_Scope]
    flat: list[tuple[str, Mapping[str, Any]]]  # (scope key, instance) in file order


def _prepare_aggregated(doc: LoadedJson, check: bool = True) -> _Aggregated:
    data = doc.data
    if not isinstance(data, dict):
        raise _replay_problem(doc, "expected a JSON object (the aggregatedList response body)")
    items = data.get("items", {})
    if not isinstance(items, dict):
        raise _replay_problem(doc, "'items' must be an object keyed by 'zones/<zone>'")
    scopes: list[_Scope] = []
    flat: list[tuple[str, Mapping[str, Any]]] = []
    for key, scoped in items.items():
        if not isinstance(scoped, dict):
            raise _replay_problem(doc, f"items[{key!r}] must be an object")
        instances = scoped.get("instances", [])
        if not isinstance(instances, list):
            raise _replay_problem(doc, f"items[{key!r}].instances must be a list")
        for n, inst in enumerate(instances):
            where = f"items[{key!r}].instances[{n}]"
            if not isinstance(inst, dict) or not isinstance(inst.get("name"), str):
                raise _replay_problem(doc, f"{where} must be an object with a 'name'")
            problem = _proto_problem(_COMPUTE_TYPES, "Instance", inst) if check else None
            if problem is not None:
                raise _replay_problem(
                    doc, f"{where} ({inst['name']}) is not a valid compute Instance: {problem}"
                )
            flat.append((key, inst))
        extra = {k: v for k, v in scoped.items() if k != "instances"}
        scopes.append(_Scope(key, extra, instances))
    top = {k: v for k, v in data.items() if k not in ("items", "nextPageToken")}
    return _Aggregated(top, scopes, flat)


def _prepare_object(doc: LoadedJson, model: str, check: bool = True) -> Mapping[str, Any]:
    """One JSON object that must be a valid compute_v1 `model` (checked field by field)."""
    if not isinstance(doc.data, dict):
        raise _replay_problem(doc, f"expected a JSON object (a {model})")
    problem = _proto_problem(_COMPUTE_TYPES, model, doc.data) if check else None
    if problem is not None:
        raise _replay_problem(doc, f"not a valid {model}: {problem}")
    return doc.data


def _prepare_identity(doc: LoadedJson, check: bool = True) -> Mapping[str, Any]:
    return _prepare_object(doc, "ShieldedInstanceIdentity", check)


def _prepare_entries(
    doc: LoadedJson, check: bool = True
) -> list[tuple[datetime, Mapping[str, Any]]]:
    if not isinstance(doc.data, list):
        raise _replay_problem(doc, "expected a JSON list of LogEntry objects")
    out: list[tuple[datetime, Mapping[str, Any]]] = []
    for n, entry in enumerate(doc.data):
        if not isinstance(entry, dict):
            raise _replay_problem(doc, f"[{n}] must be a LogEntry object")
        stamp = entry.get("timestamp")
        ts = parse_rfc3339(stamp) if isinstance(stamp, str) else None
        if ts is None:
            raise _replay_problem(doc, f"[{n}].timestamp must be an RFC 3339 string")
        if not isinstance(entry.get("logName"), str):
            raise _replay_problem(doc, f"[{n}].logName must be a string")
        problem = _proto_problem(_LOGGING_TYPES, "LogEntry", entry) if check else None
        if problem is not None:
            raise _replay_problem(doc, f"[{n}] is not a valid LogEntry: {problem}")
        out.append((ts, entry))
    return out


# ============================================================================ the handler
@dataclass
class _Seen:
    """What is known about a request so far, for the request log (even when it fails)."""

    project: str | None = None
    zone: str | None = None
    operation: str | None = None
    resource: str | None = None


class GcpHandler:
    """The ``gcp`` cloud handler: Compute Engine instances (REST) and Logging entries:list."""

    cloud = "gcp"

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.store = ctx.replay
        self._prepared = PreparedCache()

    # ------------------------------------------------------------------ dispatch
    def matches(self, request: FakeRequest) -> bool:
        """Compute v1 or Logging entries:list paths, Bearer or no Authorization, gcp/ present."""
        auth = request.headers.get("authorization", "")
        if auth and not auth.lower().startswith("bearer "):
            return False
        if not request.path.startswith(("/compute/v1/", "/v2/entries:list")):
            return False
        return self.store.is_dir("gcp")

    def handle(self, request: FakeRequest) -> FakeResponse:
        seen = _Seen()
        try:
            if request.path.startswith("/v2/"):
                if request.path != "/v2/entries:list" or request.method != "POST":
                    raise self._no_method(request)
                seen.operation = OP_LOGS
                return self._logs(request, seen)
            return self._compute(request, seen)
        except GcpError as err:
            return self._response(err.status, render_error(err.status, err.code, err.message), seen)
        except Exception as err:  # a fakecloud bug must still reach the SDK as a Google error
            log.exception("fakecloud: GCP handler failed")
            message = f"fakecloud internal error: {type(err).__name__}: {err}"
            return self._response(500, render_error(500, "INTERNAL", message), seen)

    def _response(
        self, status: int, body: bytes, seen: _Seen, fault: str | None = None
    ) -> FakeResponse:
        return FakeResponse(
            status=status,
            body=body,
            content_type=JSON_CONTENT_TYPE,
            account=seen.project,
            region=seen.zone,
            operation=seen.operation,
            resource=seen.resource,
            fault=fault,
        )

    def _ok(self, data: Mapping[str, Any], seen: _Seen) -> FakeResponse:
        return self._response(200, json.dumps(data).encode(), seen)

    @staticmethod
    def _no_method(request: FakeRequest) -> GcpError:
        return GcpError(
            404,
            f"The requested URL {request.path} was not found on this server "
            f"(fakecloud has no GCP method for {request.method} {request.path}).",
            "NOT_FOUND",
        )

    def _fault(self, seen: _Seen, service: str) -> FakeResponse | None:
        fault = self.ctx.faults.decide(
            ("gcp", seen.project, seen.zone, seen.operation, seen.resource)
        )
        if fault is None:
            return None
        if fault is Fault.RATE_LIMIT and seen.operation != OP_LOGS:
            # Compute Engine past a rate quota: 403 with the reason rateLimitExceeded
            message = (
                "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per "
                f"minute' of service '{service}' for consumer 'project:{seen.project}'."
            )
            body = render_error(
                403, "PERMISSION_DENIED", message, "rateLimitExceeded", "usageLimits"
            )
            return self._response(403, body, seen, fault.value)
        if fault in (Fault.THROTTLE, Fault.RATE_LIMIT):
            status, code = 429, "RESOURCE_EXHAUSTED"
            message = (
                f"Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' "
                f"of service '{service}' for consumer 'project:{seen.project}'."
            )
        elif fault is Fault.INTERNAL_ERROR:
            status, code = 500, "INTERNAL"
            message = "Internal error. Please try again or contact Google Support."
        else:
            status, code = 503, "UNAVAILABLE"
            message = "The service is currently unavailable."
        return self._response(status, render_error(status, code, message), seen, fault.value)

    # ------------------------------------------------------------------ replay access
    def _load(self, *parts: str) -> LoadedJson | None:
        """The data file for a replay stem; its ``.error.json`` raises; a broken file is 500."""
        *folder, stem = parts
        try:
            error = self.store.load_json(*folder, f"{stem}.error.json")
            doc = None if error is not None else self.store.load_json(*folder, f"{stem}.json")
        except ReplayError as err:
            log.error("fakecloud: %s", err)
            raise GcpError(500, f"fakecloud replay file problem: {err}", "INTERNAL") from err
        if error is not None:
            raise self._replayed_error(error)
        return doc

    def _replayed_error(self, doc: LoadedJson) -> GcpError:
        fields = error_file_fields(doc)
        if fields is None:
            return _replay_problem(doc, f"expected {ERROR_FILE_SHAPE}")
        status, code, text = fields
        return GcpError(status, text, code)

    def _prepared_doc(
        self, doc: LoadedJson, kind: str, prepare: Callable[[LoadedJson], Any]
    ) -> Any:
        """``prepare(doc)`` (validation + indexing), cached until the file changes."""
        return self._prepared.get(doc, kind, prepare)

    def _project(self, raw: str, seen: _Seen, permission: str, logging_api: bool) -> str:
        project = urllib.parse.unquote(raw)
        seen.project = project
        if not is_safe_name(project):
            raise _invalid(
                f"Invalid value for field 'project': '{project}'. "
                "Must be a match of regex '[a-z](?:[-a-z0-9]{4,28}[a-z0-9])' "
                "(fakecloud accepts plain folder names)."
            )
        if not self.store.is_dir("gcp", project):
            if logging_api:
                message = (
                    f"Permission '{permission}' denied on resource 'projects/{project}' "
                    "(or it may not exist)."
                )
            else:
                message = f"Required '{permission}' permission for 'projects/{project}'"
            raise GcpError(
                403, f"{message} (fakecloud: there is no folder gcp/{project})", "PERMISSION_DENIED"
            )
        return project

    # ------------------------------------------------------------------ compute
    def _compute(self, request: FakeRequest, seen: _Seen) -> FakeResponse:
        route = next(
            ((op, m) for op, pattern in _ROUTES if (m := pattern.fullmatch(request.path))),
            None,
        )
        if route is None or request.method != "GET":
            raise self._no_method(request)
        op, match = route
        seen.operation = op
        groups = match.groupdict()
        if groups.get("zone") is not None:
            seen.zone = self._plain("zone", groups["zone"])
        if groups.get("name") is not None:
            seen.resource = self._plain("instance", groups["name"])
        project = self._project(groups["project"], seen, _PERMISSION[op], logging_api=False)
        allowed = {OP_AGGREGATED: _AGGREGATED_PARAMS, OP_LIST: _LIST_PARAMS}.get(op, frozenset())
        params = self._query(request, allowed)
        fault = self._fault(seen, "compute.googleapis.com")
        if fault is not None:
            return fault
        if op == OP_IDENTITY:
            assert seen.zone is not None and seen.resource is not None
            return self._ok(self._identity(project, seen.zone, seen.resource), seen)
        if op == OP_TEMPLATE:
            assert seen.resource is not None
            return self._ok(self._template(project, seen.resource), seen)
        doc = self._load("gcp", project, "aggregatedList")
        agg = (
            self._prepared_doc(
                doc, "aggregated", partial(_prepare_aggregated, check=self.ctx.validate)
            )
            if doc is not None
            else _Aggregated({}, [], [])
        )
        if op == OP_AGGREGATED:
            return self._ok(self._aggregated(project, agg, params), seen)
        assert seen.zone is not None
        in_zone = [inst for key, inst in agg.flat if _zone_of(key) == seen.zone]
        if op == OP_LIST:
            return self._ok(self._zone_list(project, seen.zone, in_zone, params), seen)
        found = next((inst for inst in in_zone if inst.get("name") == seen.resource), None)
        if found is None:
            raise GcpError(
                404,
                f"The resource 'projects/{project}/zones/{seen.zone}/instances/{seen.resource}' "
                "was not found",
                "NOT_FOUND",
            )
        return self._ok(found, seen)

    @staticmethod
    def _plain(field: str, raw: str) -> str:
        value = urllib.parse.unquote(raw)
        if not is_safe_name(value):
            raise _invalid(f"Invalid value for field '{field}': '{value}'.")
        return value

    @staticmethod
    def _query(request: FakeRequest, allowed: frozenset[str]) -> dict[str, str]:
        """The request's query parameters; unknown ones and compute filters are 400."""
        params: dict[str, str] = {}
        for name, values in request.query.items():
            if name not in allowed and name not in _SYSTEM_PARAMS:
                raise _invalid(
                    f'Invalid JSON payload received. Unknown name "{name}": '
                    "Cannot bind query parameter."
                )
            params[name] = values[-1] if values else ""
        for unsupported in ("filter", "orderBy", "fields"):
            if params.get(unsupported):
                raise _invalid(f"fakecloud does not support {unsupported}")
        alt = params.get("alt") or params.get("$alt") or "json"
        if not alt.startswith("json"):
            raise _invalid(f"fakecloud answers only alt=json, not {alt}")
        for flag in ("returnPartialSuccess", "includeAllScopes", "prettyPrint"):
            if params.get(flag, "true").lower() not in ("true", "false"):
                raise _invalid(f"Invalid value for field '{flag}': '{params[flag]}'.")
        return params

    def _page_window(
        self, params: Mapping[str, str], operation: str, scope: str, total: int
    ) -> tuple[int, int]:
        """(offset, size) for a compute list page."""
        raw = params.get("maxResults", "")
        try:
            limit = int(raw) if raw else 0
        except ValueError:
            raise _invalid(f"Invalid value for field 'maxResults': '{raw}'.") from None
        if limit < 0 or limit > COMPUTE_MAX_RESULTS:
            raise _invalid(
                f"Invalid value for field 'maxResults': '{raw}'. "
                f"Must be less than or equal to {COMPUTE_MAX_RESULTS}"
            )
        size = min(limit or COMPUTE_MAX_RESULTS, self.ctx.page_size)
        token = params.get("pageToken", "")
        if not token:
            return 0, size
        bad = _invalid(f"Invalid value for field 'pageToken': '{token[:80]}'. Invalid page token.")
        offset = decode_page_token(token, operation, scope, bad)
        if offset > total:
            raise bad
        return offset, size

    def _aggregated(
        self, project: str, agg: _Aggregated, params: Mapping[str, str]
    ) -> dict[str, Any]:
        scope = request_digest(project)
        offset, size = self._page_window(params, OP_AGGREGATED, scope, len(agg.flat))
        page = agg.flat[offset : offset + size]
        by_scope: dict[str, list[Mapping[str, Any]]] = {}
        for key, inst in page:
            by_scope.setdefault(key, []).append(inst)
        items: dict[str, Any] = {}
        for s in agg.scopes:
            if s.key in by_scope:
                items[s.key] = {**s.extra, "instances": by_scope[s.key]}
            elif not s.instances and offset == 0:
                items[s.key] = dict(s.extra)  # e.g. a zone with only a "warning"
        out: dict[str, Any] = {
            "kind": "compute#instanceAggregatedList",
            "id": f"projects/{project}/aggregated/instances",
            **agg.top,
        }
        if items:
            out["items"] = items
        if offset + size < len(agg.flat):
            out["nextPageToken"] = encode_page_token(OP_AGGREGATED, scope, offset + size)
        return out

    def _zone_list(
        self,
        project: str,
        zone: str,
        instances: list[Mapping[str, Any]],
        params: Mapping[str, str],
    ) -> dict[str, Any]:
        scope = request_digest(project, zone)
        offset, size = self._page_window(params, OP_LIST, scope, len(instances))
        out: dict[str, Any] = {
            "kind": "compute#instanceList",
            "id": f"projects/{project}/zones/{zone}/instances",
            "selfLink": (
                f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}/instances"
            ),
        }
        page = instances[offset : offset + size]
        if page:
            out["items"] = page
        if offset + size < len(instances):
            out["nextPageToken"] = encode_page_token(OP_LIST, scope, offset + size)
        return out

    def _identity(self, project: str, zone: str, name: str) -> Mapping[str, Any]:
        doc = self._load("gcp", project, "shieldedInstanceIdentity", zone, name)
        if doc is None:
            raise GcpError(
                404,
                f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found "
                f"(fakecloud: no gcp/{project}/shieldedInstanceIdentity/{zone}/{name}.json)",
                "NOT_FOUND",
            )
        identity: Mapping[str, Any] = self._prepared_doc(
            doc, "identity", partial(_prepare_identity, check=self.ctx.validate)
        )
        return identity

    def _template(self, project: str, name: str) -> Mapping[str, Any]:
        doc = self._load("gcp", project, "instanceTemplates", name)
        if doc is None:
            raise GcpError(
                404,
                f"The resource 'projects/{project}/global/instanceTemplates/{name}' was not "
                f"found (fakecloud: no gcp/{project}/instanceTemplates/{name}.json)",
                "NOT_FOUND",
            )
        template: Mapping[str, Any] = self._prepared_doc(
            doc,
            "template",
            partial(_prepare_object, model="InstanceTemplate", check=self.ctx.validate),
        )
        return template

    # ------------------------------------------------------------------ logging
    def _logs(self, request: FakeRequest, seen: _Seen) -> FakeResponse:
        self._query(request, frozenset())
        body = self._log_body(request.body)
        names = body.get("resourceNames")
        if not isinstance(names, list) or not names:
            raise _invalid("Missing required field: resource_names")
        if len(names) != 1 or not isinstance(names[0], str):
            raise _invalid("fakecloud serves exactly one resourceNames entry, 'projects/<p>'")
        m = re.fullmatch(r"projects/([^/]+)", names[0])
        if m is None:
            raise _invalid(f"fakecloud serves resourceNames 'projects/<p>' only, not {names[0]!r}")
        project = self._project(m.group(1), seen, "logging.logEntries.list", logging_api=True)
        flt = _string_field(body, "filter")
        order = " ".join(_string_field(body, "orderBy").lower().split()) or "timestamp asc"
        if order not in ("timestamp asc", "timestamp desc"):
            raise _invalid(
                f"Invalid orderBy '{body.get('orderBy')}': use 'timestamp asc' or 'timestamp desc'"
            )
        predicate = compile_filter(flt)
        size = self._log_page_size(body.get("pageSize"))
        fault = self._fault(seen, "logging.googleapis.com")
        if fault is not None:
            return fault
        doc = self._load("gcp", project, "logEntries")
        entries: list[tuple[datetime, Mapping[str, Any]]] = (
            self._prepared_doc(doc, "entries", partial(_prepare_entries, check=self.ctx.validate))
            if doc is not None
            else []
        )
        matching = [(ts, e) for ts, e in entries if predicate(e, ts)]
        matching.sort(key=lambda pair: pair[0], reverse=order == "timestamp desc")
        scope = request_digest(project, flt, order)
        token = _string_field(body, "pageToken")
        offset = 0
        if token:
            bad = _invalid("page_token doesn't match arguments from the request")
            offset = decode_page_token(token, OP_LOGS, scope, bad)
            if offset > len(matching):
                raise bad
        out: dict[str, Any] = {}
        page = [e for _ts, e in matching[offset : offset + size]]
        if page:
            out["entries"] = page
        if offset + size < len(matching):
            out["nextPageToken"] = encode_page_token(OP_LOGS, scope, offset + size)
        return self._ok(out, seen)

    @staticmethod
    def _log_body(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            raise _invalid("Invalid JSON payload received. Unexpected token.") from None
        if not isinstance(body, dict):
            raise _invalid("Invalid JSON payload received. Expected an object.")
        for name in body:
            if name not in _LOG_BODY_FIELDS:
                raise _invalid(
                    f'Invalid JSON payload received. Unknown name "{name}": '
                    "Cannot find field (fakecloud supports "
                    + ", ".join(sorted(_LOG_BODY_FIELDS))
                    + ")."
                )
        return body

    def _log_page_size(self, raw: Any) -> int:
        if raw is None:
            requested = 0
        elif type(raw) is int or (isinstance(raw, str) and re.fullmatch(r"-?\d+", raw)):
            requested = int(raw)
        else:
            raise _invalid(f"Invalid value at 'page_size' (TYPE_INT32), {json.dumps(raw)}")
        if requested < 0:
            raise _invalid(f"Invalid value at 'page_size': {requested} must not be negative")
        requested = min(requested or LOGGING_DEFAULT_PAGE_SIZE, LOGGING_MAX_PAGE_SIZE)
        return min(requested, self.ctx.page_size)


def _string_field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _invalid(f"Invalid value at '{name}' (TYPE_STRING), {json.dumps(value)}")
    return value


def _zone_of(scope_key: str) -> str:
    """``zones/us-central1-a`` -> ``us-central1-a`` (other keys are returned unchanged)."""
    return scope_key.removeprefix("zones/")
