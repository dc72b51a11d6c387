"""The ``azure`` cloud handler: Azure Resource Manager (ARM) JSON replays for azure-mgmt-compute.

It serves the real ``azure.mgmt.compute.ComputeManagementClient`` (and the subscription
listing of ``azure-mgmt-resource``'s ``SubscriptionClient``) pointed at fakecloud with
``base_url``. A request is Azure when its path is ``/subscriptions`` or starts with
``/subscriptions/`` (compared case-insensitively); nothing else in fakecloud uses that prefix.

Replay layout (a contract other code relies on)::

    azure/<subscription-id>/virtualMachines.json      ARM list bodies {"value": [...]}, items
    azure/<subscription-id>/disks.json                exactly as the REST API returns them
    azure/<subscription-id>/diskEncryptionSets.json   (camelCase, ``properties`` envelope)
    azure/<subscription-id>/resourceSkus.json
    azure/<subscription-id>/virtualMachines/<vm-name>/extensions.json
                                                      {"value": [...]} (not paged in ARM)
    azure/<subscription-id>/virtualMachineScaleSets.json
                                                      the scale sets (listAll body)
    azure/<subscription-id>/virtualMachineScaleSets/<scale set name>/virtualMachines.json
                                                      its instances (list body, paged)
    azure/<subscription-id>/virtualMachineScaleSets/<scale set name>/virtualMachines/
        <instance id>/extensions.json                 an instance's extensions (not paged)
    azure/<subscription-id>/subscription.json         optional {"displayName": "...",
                                                      "state": "...", "tenantId": "..."}
    azure/subscriptions.error.json                    makes the subscription listing fail
    <any data file's stem>.error.json                 {"status": 400-599, "code": "...",
                                                      "message": "..."} answered instead

Served paths (all ``GET``; keywords matched case-insensitively, as ARM casing varies)::

    /subscriptions                                                  subscriptions.list
    /subscriptions/<s>                                              subscriptions.get
    /subscriptions/<s>/providers/Microsoft.Compute/virtualMachines  virtualMachines.listAll
    /subscriptions/<s>/providers/Microsoft.Compute/disks            disks.list
    /subscriptions/<s>/providers/Microsoft.Compute/diskEncryptionSets
                                                                    diskEncryptionSets.list
    /subscriptions/<s>/providers/Microsoft.Compute/skus             resourceSkus.list
    /subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines
                                                                    virtualMachines.list
    .../resourceGroups/<rg>/providers/Microsoft.Compute/disks       disks.listByResourceGroup
    .../resourceGroups/<rg>/providers/Microsoft.Compute/diskEncryptionSets
                                                    diskEncryptionSets.listByResourceGroup
    .../resourceGroups/<rg>/providers/Microsoft.Compute/<collection>/<name>
                            virtualMachines.get, disks.get, diskEncryptionSets.get
    .../resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<vm>/extensions
                                                                virtualMachineExtensions.list
    .../virtualMachines/<vm>/extensions/<name>                  virtualMachineExtensions.get
    /subscriptions/<s>/providers/Microsoft.Compute/virtualMachineScaleSets
                                                            virtualMachineScaleSets.listAll
    .../resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachineScaleSets[/<name>]
                                        virtualMachineScaleSets.list, virtualMachineScaleSets.get
    .../virtualMachineScaleSets/<ss>/virtualMachines[/<instance id>]
                                    virtualMachineScaleSetVMs.list, virtualMachineScaleSetVMs.get
    .../virtualMachineScaleSets/<ss>/virtualMachines/<instance id>/extensions[/<name>]
                    virtualMachineScaleSetVMExtensions.list, virtualMachineScaleSetVMExtensions.get

Behaviour worth knowing (each mirrors ARM, or says plainly that fakecloud cannot):

* Errors use ARM's body ``{"error": {"code": "...", "message": "..."}}``, so azure-core raises
  ``HttpResponseError`` (``ResourceNotFoundError`` for 404, ``ClientAuthenticationError`` for
  401) with ``err.error.code`` set.
* Every request needs ``Authorization: Bearer <anything>`` (401 ``AuthenticationFailed``
  otherwise; tokens are not checked) and a non-empty ``api-version`` query parameter (400
  ``MissingApiVersionParameter``); any version is accepted and the same body is served.
* A subscription without an ``azure/<id>`` folder is 404 ``SubscriptionNotFound``. Subscription
  ids, resource-group and resource names compare case-insensitively. ``subscriptions.list`` is
  synthesised from the folders (state ``Enabled``, tenant all zeros unless subscription.json
  says otherwise). A missing data file means an empty collection.
* Resource-group scoped calls filter by the resource group in each item's ``id``; an unknown
  resource group is an empty list (fakecloud has no resource-group inventory), and a get of a
  resource not in the file is 404 ``ResourceNotFound``. The extensions of a VM that exists but
  has no extensions.json are ``{"value": []}``; of a VM that does not exist, 404.
* Lists are paged by fakecloud with ``nextLink`` (page size = FaultConfig.page_size): an
  absolute URL to the same endpoint (built from the request's ``Host``) repeating the request's
  query with an opaque ``$skiptoken``, bound to the operation, scope and filter that issued it;
  any other token is 400 ``InvalidSkipToken``. A replay file must not carry ``nextLink`` itself.
* ``$filter`` is not supported on virtual machine, disk and disk encryption set lists (400 when
  non-empty). ``resourceSkus.list`` accepts exactly ``location eq '<location>'`` (matched
  against each SKU's ``locations`` case-insensitively) or no filter; other forms are 400.
  ``$expand``, ``statusOnly`` and ``includeExtendedLocations`` are accepted and have no effect
  (``instanceView`` is not synthesised). Other methods than GET are 405: replays are read-only.
* Replay files are validated: malformed JSON, a wrong shape, or an item with a key that the
  corresponding azure-mgmt-compute model (VirtualMachine, Disk, DiskEncryptionSet, ResourceSku,
  VirtualMachineExtension) does not know, or a JSON type that contradicts it, is 500
  ``InternalServerError`` naming the file and the key path. The check walks the item against the
  models' REST field names and type annotations (azure-mgmt-compute 39's TypeSpec models accept
  unknown keys silently, so deserialising alone would not catch a typo); enum-typed values are
  open strings, so unknown enum values pass, as they do in the SDK. The SDK is imported lazily,
  on the first request that needs it; without it the check is skipped. Results are cached per
  file version. Note that azure-core retries 500 and 503 by default.
* Injected faults: throttling is 429 ``TooManyRequests`` with ``Retry-After: 1`` (azure-core
  waits that second and retries), 5xx is 500 ``InternalServerError`` or 503
  ``ServiceUnavailable``. The request log names the subscription as ``account``, the region
  only when the answer concerns one resource (its ``location``: gets and a VM's extensions),
  and the VM (or disk, disk encryption set) as ``resource``.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import enum
import importlib
import json
import logging
import re
import threading
import types
import typing
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
DEFAULT_TENANT = "00000000-0000-0000-0000-000000000000"
RETRY_AFTER_SECONDS = "1"

OP_SUBS_LIST = "subscriptions.list"
OP_SUBS_GET = "subscriptions.get"
OP_VM_LIST_ALL = "virtualMachines.listAll"
OP_VM_LIST = "virtualMachines.list"
OP_VM_GET = "virtualMachines.get"
OP_SKUS = "resourceSkus.list"
OP_EXT_LIST = "virtualMachineExtensions.list"
OP_EXT_GET = "virtualMachineExtensions.get"
OP_SS_VM_LIST = "virtualMachineScaleSetVMs.list"
OP_SS_VM_GET = "virtualMachineScaleSetVMs.get"
OP_SS_EXT_LIST = "virtualMachineScaleSetVMExtensions.list"
OP_SS_EXT_GET = "virtualMachineScaleSetVMExtensions.get"
_SCALE_SET_OPS = (OP_SS_VM_LIST, OP_SS_VM_GET, OP_SS_EXT_LIST, OP_SS_EXT_GET)

_SUBSCRIPTION_FILE_KEYS = frozenset({"displayName", "state", "tenantId"})
_SKU_FILTER = re.compile(r"\s*location\s+eq\s+'(?P<loc>[^']*)'\s*", re.IGNORECASE)
_RG_OF_ID = re.compile(r"/subscriptions/[^/]+/resourceGroups/(?P<rg>[^/]+)/", re.IGNORECASE)


@dataclass(frozen=True)
class _Collection:
    """One Microsoft.Compute resource collection served from ``azure/<sub>/<stem>.json``."""

    segment: str  # URL segment, lower-case
    stem: str  # replay file stem, also the operation prefix
    model: str  # azure.mgmt.compute.models class of one item
    list_all: str  # operation name of the subscription-wide list
    list_rg: str | None  # operation name of the resource-group list (None: not served)
    get: str | None


_COLLECTIONS: dict[str, _Collection] = {
    c.segment: c
    for c in (
        _Collection(
            "virtualmachines",
            "virtualMachines",
            "VirtualMachine",
            OP_VM_LIST_ALL,
            OP_VM_LIST,
            OP_VM_GET,
        ),
        _Collection(
            "disks", "disks", "Disk", "disks.list", "disks.listByResourceGroup", "disks.get"
        ),
        _Collection(
            "diskencryptionsets",
            "diskEncryptionSets",
            "DiskEncryptionSet",
            "diskEncryptionSets.list",
            "diskEncryptionSets.listByResourceGroup",
            "diskEncryptionSets.get",
        ),
        _Collection("skus", "resourceSkus", "ResourceSku", OP_SKUS, None, None),
        _Collection(
            "virtualmachinescalesets",
            "virtualMachineScaleSets",
            "VirtualMachineScaleSet",
            "virtualMachineScaleSets.listAll",
            "virtualMachineScaleSets.list",
            "virtualMachineScaleSets.get",
        ),
    )
}
_VMS = _COLLECTIONS["virtualmachines"]
_SCALE_SETS = _COLLECTIONS["virtualmachinescalesets"]


class ArmError(Exception):
    """An answer in ARM's JSON error format."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def render_error(code: str, message: str) -> bytes:
    """ARM's error body (the ``CloudError`` shape every azure-mgmt SDK parses)."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _bad_request(code: str, message: str) -> ArmError:
    return ArmError(400, code, message)


# ============================================================================ skip tokens
_TOKEN_PREFIX = "fca1."


def encode_skiptoken(operation: str, scope: str, offset: int) -> str:
    """An opaque ``$skiptoken`` carrying the next offset, bound to the request's scope."""
    return encode_token(_TOKEN_PREFIX, operation, offset, scope)


def decode_skiptoken(token: str, operation: str, scope: str) -> int:
    """The offset in ``token``; 400 ``InvalidSkipToken`` for anything fakecloud did not issue."""
    offset = decode_token(token, _TOKEN_PREFIX, operation, scope)
    if offset is None:
        raise _bad_request(
            "InvalidSkipToken",
            f"The value '{token[:80]}' of the '$skiptoken' query parameter is not valid "
            "for this request.",
        )
    return offset


# ============================================================================ item validation
_sdk_lock = threading.Lock()
_sdk_models: list[Any] = []  # [module or None] once probed
_field_cache: dict[type, dict[str, Any]] = {}

_MODELS_MODULE = "azure.mgmt.compute.models"


def _compute_models() -> Any | None:
    """azure.mgmt.compute.models if installed (imported on first use); None otherwise."""
    with _sdk_lock:
        if not _sdk_models:
            try:
                _sdk_models.append(importlib.import_module(_MODELS_MODULE))
            except ImportError:
                log.info(
                    "fakecloud: %s missing; Azure replays are not model-checked", _MODELS_MODULE
                )
                _sdk_models.append(None)
        return _sdk_models[0]


def _is_model_class(tp: Any) -> bool:
    return isinstance(tp, type) and bool(getattr(tp, "_is_model", False))


def _rest_fields(cls: type, models: Any) -> dict[str, Any]:
    """REST name -> type annotation of every field of an azure-mgmt-compute (TypeSpec) model."""
    hit = _field_cache.get(cls)  # a dict read is atomic; the lock only guards the fill
    if hit is not None:
        return hit
    hints = typing.get_type_hints(cls, localns={"_models": models})
    fields: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if attr.startswith("_") or not hasattr(value, "_rest_name_input"):
                continue
            rest_name = getattr(value, "_rest_name_input", None) or attr
            fields[str(rest_name)] = hints.get(attr, Any)
    with _sdk_lock:
        _field_cache[cls] = fields
    return fields


_JSON_KIND = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return _JSON_KIND.get(type(value), type(value).__name__)


def _walk(tp: Any, value: Any, where: str, models: Any) -> str | None:
    """Why ``value`` does not fit annotation ``tp`` (first problem, with its key path)."""
    if tp is Any or value is None:  # ARM sends null for absent optional members
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        problems = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            problem = _walk(arg, value, where, models)
            if problem is None:
                return None
            problems.append(problem)
        return problems[0] if problems else None
    if origin is list or origin is Sequence:
        if not isinstance(value, list):
            return f"{where}: expected a list, got {_kind(value)}"
        (item_tp,) = typing.get_args(tp) or (Any,)
        for n, item in enumerate(value):
            problem = _walk(item_tp, item, f"{where}[{n}]", models)
            if problem is not None:
                return problem
        return None
    if origin is dict or origin is Mapping:
        if not isinstance(value, dict):
            return f"{where}: expected an object, got {_kind(value)}"
        args = typing.get_args(tp)
        value_tp = args[1] if len(args) == 2 else Any
        for key, item in value.items():
            problem = _walk(value_tp, item, f"{where}[{json.dumps(key)}]", models)
            if problem is not None:
                return problem
        return None
    if _is_model_class(tp):
        return _walk_model(tp, value, where, models)
    return _walk_scalar(tp, value, where)


def _walk_model(cls: type, value: Any, where: str, models: Any) -> str | None:
    if not isinstance(value, dict):
        return f"{where}: expected an object ({cls.__name__}), got {_kind(value)}"
    fields = _rest_fields(cls, models)
    for key, item in value.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return f"{path}: unknown key for {cls.__name__}{hint}"
        problem = _walk(fields[key], item, path, models)
        if problem is not None:
            return problem
    return None


def _walk_scalar(tp: Any, value: Any, where: str) -> str | None:
    ok: bool
    if tp is bool:
        ok = isinstance(value, bool)
        wanted = "a boolean"
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        wanted = "an integer"
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        wanted = "a number"
    elif tp in (str, bytes, _dt.datetime, _dt.date, _dt.time, _dt.timedelta) or (
        isinstance(tp, type) and issubclass(tp, enum.Enum)
    ):
        ok = isinstance(value, str)
        wanted = "a string"
    else:  # an annotation this walk does not know: accept rather than guess
        return None
    return None if ok else f"{where or '(item)'}: expected {wanted}, got {_kind(value)}"


def model_problem(model_name: str, item: Any) -> str | None:
    """Why azure-mgmt-compute's ``model_name`` does not describe ``item``; None if it does.

    None as well when azure-mgmt-compute is not installed (the check is then skipped).
    """
    models = _compute_models()
    if models is None:
        return None
    cls = getattr(models, model_name)
    return _walk_model(cls, item, "", models)


# ============================================================================ replay shapes
@dataclass(frozen=True)
class _Item:
    """One validated list item, with what routing needs pre-computed (lower-cased)."""

    data: Mapping[str, Any]
    name: str
    resource_group: str | None
    locations: tuple[str, ...]


def _replay_problem(doc: LoadedJson, what: str) -> ArmError:
    message = f"fakecloud replay file {doc.relpath}: {what}"
    log.error(message)
    return ArmError(500, "InternalServerError", message)


def _prepare_list(
    doc: LoadedJson,
    collection: _Collection | None,
    check: bool = True,
    model_name: str | None = None,
) -> list[_Item]:
    """The items of an ARM list file, each checked (``collection`` None: extensions, of a VM
    unless ``model_name`` says which; scale-set instances name their model the same way)."""
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("value"), list):
        raise _replay_problem(doc, 'expected an ARM list body {"value": [...]}')
    if set(data) != {"value"}:
        extra = ", ".join(sorted(k for k in data if k != "value"))
        raise _replay_problem(
            doc, f"only 'value' is allowed at the top (found {extra}); fakecloud pages lists itself"
        )
    model = model_name or (
        collection.model if collection is not None else "VirtualMachineExtension"
    )
    skus = collection is not None and collection.segment == "skus"
    items: list[_Item] = []
    for n, raw in enumerate(data["value"]):
        where = f"value[{n}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise _replay_problem(doc, f"{where} must be an object with a non-empty 'name'")
        name = raw["name"]
        problem = model_problem(model, raw) if check else None
        if problem is not None:
            raise _replay_problem(doc, f"{where} ({name}) is not a valid {model}: {problem}")
        rg: str | None = None
        locations: tuple[str, ...] = ()
        if skus:
            locs = raw.get("locations") or []
            if not isinstance(locs, list) or not all(isinstance(x, str) for x in locs):
                raise _replay_problem(doc, f"{where} ({name}).locations must be a list of strings")
            locations = tuple(x.lower() for x in locs)
        elif collection is not None:
            m = _RG_OF_ID.match(str(raw.get("id", "")))
            if m is None:
                raise _replay_problem(
                    doc,
                    f"{where} ({name}) needs an 'id' of the form "
                    "/subscriptions/<s>/resourceGroups/<rg>/providers/...",
                )
            rg = urllib.parse.unquote(m.group("rg")).lower()
        items.append(_Item(raw, name, rg, locations))
    return items


def _prepare_subscription(doc: LoadedJson) -> Mapping[str, Any]:
    data = doc.data
    if not isinstance(data, dict) or not set(data) <= _SUBSCRIPTION_FILE_KEYS:
        keys = ", ".join(sorted(_SUBSCRIPTION_FILE_KEYS))
        raise _replay_problem(doc, f"expected an object with only these optional keys: {keys}")
    for key, value in data.items():
        if not isinstance(value, str):
            raise _replay_problem(doc, f"{key} must be a string")
    return data


# ============================================================================ routing
@dataclass(frozen=True)
class _Route:
    operation: str
    subscription: str | None = None  # as sent (unquoted)
    resource_group: str | None = None
    collection: _Collection | None = None
    name: str | None = None  # resource (VM, disk, DES, scale set) name
    extension: str | None = None
    instance: str | None = None  # a scale-set instance id


def _route(segments: list[str]) -> _Route | None:
    """The operation a path (already split and unquoted) asks for; None if not served."""
    low = [s.lower() for s in segments]
    n = len(low)
    if n == 0 or low[0] != "subscriptions":
        return None
    if n == 1:
        return _Route(OP_SUBS_LIST)
    sub = segments[1]
    if n == 2:
        return _Route(OP_SUBS_GET, sub)
    if n == 5 and low[2:4] == ["providers", "microsoft.compute"] and low[4] in _COLLECTIONS:
        listed = _COLLECTIONS[low[4]]
        return _Route(listed.list_all, sub, collection=listed)
    if n < 7 or low[2] != "resourcegroups" or low[4:6] != ["providers", "microsoft.compute"]:
        return None
    rg, coll = segments[3], _COLLECTIONS.get(low[6])
    if coll is None or coll.list_rg is None or coll.get is None:
        return None
    if n == 7:
        return _Route(coll.list_rg, sub, rg, coll)
    if n == 8:
        return _Route(coll.get, sub, rg, coll, segments[7])
    if coll is _VMS and low[8] == "extensions" and n in (9, 10):
        if n == 9:
            return _Route(OP_EXT_LIST, sub, rg, coll, segments[7])
        return _Route(OP_EXT_GET, sub, rg, coll, segments[7], segments[9])
    if coll is _SCALE_SETS and low[8] == "virtualmachines" and 9 <= n <= 12:
        name = segments[7]
        if n == 9:
            return _Route(OP_SS_VM_LIST, sub, rg, coll, name)
        if n == 10:
            return _Route(OP_SS_VM_GET, sub, rg, coll, name, instance=segments[9])
        if low[10] != "extensions":
            return None
        if n == 11:
            return _Route(OP_SS_EXT_LIST, sub, rg, coll, name, instance=segments[9])
        return _Route(OP_SS_EXT_GET, sub, rg, coll, name, segments[11], segments[9])
    return None


@dataclass
class _Seen:
    """What is known about a request so far, for the request log (even when it fails)."""

    subscription: str | None = None
    region: str | None = None
    operation: str | None = None
    resource: str | None = None


# ============================================================================ the handler
class AzureHandler:
    """The ``azure`` cloud handler: ARM Microsoft.Compute reads and the subscription list."""

    cloud = "azure"

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.store = ctx.replay
        self._prepared = PreparedCache()

    # ------------------------------------------------------------------ dispatch
    def matches(self, request: FakeRequest) -> bool:
        """Any path ``/subscriptions`` or ``/subscriptions/...`` (case-insensitive)."""
        path = request.path.lower()
        return path == "/subscriptions" or path.startswith("/subscriptions/")

    def handle(self, request: FakeRequest) -> FakeResponse:
        seen = _Seen()
        try:
            return self._serve(request, seen)
        except ArmError as err:
            return self._response(
                err.status, render_error(err.code, err.message), seen, headers=err.headers
            )
        except Exception as err:  # a fakecloud bug must still reach the SDK as an ARM error
            log.exception("fakecloud: Azure handler failed")
            message = f"fakecloud internal error: {type(err).__name__}: {err}"
            return self._response(500, render_error("InternalServerError", message), seen)

    def _response(
        self,
        status: int,
        body: bytes,
        seen: _Seen,
        fault: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> FakeResponse:
        request_id = str(uuid.uuid4())
        return FakeResponse(
            status=status,
            body=body,
            content_type=JSON_CONTENT_TYPE,
            headers={
                "x-ms-request-id": request_id,
                "x-ms-correlation-request-id": request_id,
                **(headers or {}),
            },
            account=seen.subscription,
            region=seen.region,
            operation=seen.operation,
            resource=seen.resource,
            fault=fault,
        )

    def _ok(self, data: Mapping[str, Any], seen: _Seen) -> FakeResponse:
        return self._response(200, json.dumps(data).encode(), seen)

    def _serve(self, request: FakeRequest, seen: _Seen) -> FakeResponse:
        auth = request.headers.get("authorization", "")
        if not auth:
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. "
                "The 'Authorization' header is provided in an invalid format.",
            )
        params = {k.lower(): (v[-1] if v else "") for k, v in request.query.items()}
        if not params.get("api-version"):
            raise _bad_request(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        segments = [urllib.parse.unquote(s) for s in request.path.strip("/").split("/")]
        route = _route(segments)
        if route is None:
            raise ArmError(
                404,
                "InvalidResourceType",
                f"The resource type could not be found for path '{request.path}' "
                f"(fakecloud serves no Azure operation there).",
            )
        seen.operation = route.operation
        seen.resource = route.name
        if request.method != "GET":
            raise ArmError(
                405,
                "MethodNotAllowed",
                f"fakecloud serves Azure replays read-only; {request.method} is not supported.",
            )
        if route.operation == OP_SUBS_LIST:
            return self._subscriptions(request, params, seen)
        assert route.subscription is not None
        sub = self._subscription(route.subscription, seen)
        self._check_filter(route, params)
        fault = self._fault(seen)
        if fault is not None:
            return fault
        if route.operation == OP_SUBS_GET:
            return self._ok(self._subscription_doc(sub), seen)
        if route.operation in (OP_EXT_LIST, OP_EXT_GET):
            return self._extensions(sub, route, seen)
        if route.operation in _SCALE_SET_OPS:
            return self._scale_set(request, params, sub, route, seen)
        coll = route.collection
        assert coll is not None
        items = self._items(coll, sub)
        if route.operation == coll.get:
            return self._ok(self._get(sub, route, items, seen).data, seen)
        if route.resource_group is not None:
            rg = route.resource_group.lower()
            items = [i for i in items if i.resource_group == rg]
        if coll.segment == "skus":
            loc = self._sku_location(params)
            if loc is not None:
                items = [i for i in items if loc in i.locations]
        scope = request_digest(
            sub.lower(), (route.resource_group or "").lower(), params.get("$filter", "")
        )
        page = self._page(request, params, route.operation, scope, [i.data for i in items])
        return self._ok(page, seen)

    # ------------------------------------------------------------------ faults
    def _fault(self, seen: _Seen) -> FakeResponse | None:
        fault = self.ctx.faults.decide(
            ("azure", seen.subscription, None, seen.operation, seen.resource)
        )
        if fault is None:
            return None
        headers: dict[str, str] = {}
        retry_after = str(self.ctx.faults.retry_after())
        if fault in (Fault.THROTTLE, Fault.RATE_LIMIT):
            status, code = 429, "TooManyRequests"
            message = (
                "The request is being throttled as too many requests have been received for "
                f"subscription '{seen.subscription}'. Retry after {retry_after} second(s)."
            )
            headers["Retry-After"] = retry_after
        elif fault is Fault.INTERNAL_ERROR:
            status, code = 500, "InternalServerError"
            message = "The server encountered an internal error. Please retry the request."
        else:
            status, code = 503, "ServiceUnavailable"
            message = "The service is temporarily unavailable. Please retry the request."
        return self._response(status, render_error(code, message), seen, fault.value, headers)

    # ------------------------------------------------------------------ replay access
    def _load(self, *parts: str) -> LoadedJson | None:
        """The data file for a replay stem; its ``.error.json`` raises; a broken file is 500."""
        *folder, stem = parts
        self._raise_error_file(*folder, stem)
        try:
            return self.store.load_json(*folder, f"{stem}.json")
        except ReplayError as err:
            raise self._file_problem(err) from err

    def _raise_error_file(self, *parts: str) -> None:
        """Answer with ``<stem>.error.json`` when it exists."""
        *folder, stem = parts
        try:
            error = self.store.load_json(*folder, f"{stem}.error.json")
        except ReplayError as err:
            raise self._file_problem(err) from err
        if error is None:
            return
        fields = error_file_fields(error)
        if fields is None:
            raise _replay_problem(error, f"expected {ERROR_FILE_SHAPE}")
        status, code, text = fields
        raise ArmError(status, code, text)

    @staticmethod
    def _file_problem(err: ReplayError) -> ArmError:
        log.error("fakecloud: %s", err)
        return ArmError(500, "InternalServerError", f"fakecloud replay file problem: {err}")

    def _prepared_doc(
        self, doc: LoadedJson, kind: str, prepare: Callable[[LoadedJson], Any]
    ) -> Any:
        """``prepare(doc)`` (validation + indexing), cached until the file changes."""
        return self._prepared.get(doc, kind, prepare)

    def _nested_items(
        self, doc: LoadedJson | None, kind: str, model_name: str | None = None
    ) -> list[_Item]:
        """The items of a list file below a resource (a VM's extensions, a scale set's
        instances and theirs), checked as `model_name` (a VM extension when None); none
        when there is no file."""
        if doc is None:
            return []
        items: list[_Item] = self._prepared_doc(
            doc, kind, lambda d: _prepare_list(d, None, self.ctx.validate, model_name=model_name)
        )
        return items

    def _items(self, coll: _Collection, sub: str) -> list[_Item]:
        doc = self._load("azure", sub, coll.stem)
        if doc is None:
            return []
        items: list[_Item] = self._prepared_doc(
            doc, coll.stem, lambda d: _prepare_list(d, coll, self.ctx.validate)
        )
        return items

    # ------------------------------------------------------------------ subscriptions
    def _subscription_folders(self) -> list[str]:
        return self.store.subdirs("azure")

    def _subscription(self, raw: str, seen: _Seen) -> str:
        """The replay folder for a subscription id (case-insensitive); 404 if there is none."""
        seen.subscription = raw
        if not is_safe_name(raw):
            raise _bad_request(
                "InvalidSubscriptionId",
                f"The provided subscription identifier '{raw}' is malformed or invalid.",
            )
        folder = next((f for f in self._subscription_folders() if f.lower() == raw.lower()), None)
        if folder is None:
            raise ArmError(
                404,
                "SubscriptionNotFound",
                f"The subscription '{raw}' could not be found.",
            )
        seen.subscription = folder
        return folder

    def _subscription_doc(self, sub: str) -> dict[str, Any]:
        doc = self._load("azure", sub, "subscription")
        extra: Mapping[str, Any] = (
            self._prepared_doc(doc, "subscription", _prepare_subscription) if doc else {}
        )
        return {
            "id": f"/subscriptions/{sub}",
            "subscriptionId": sub,
            "displayName": extra.get("displayName", sub),
            "state": extra.get("state", "Enabled"),
            "tenantId": extra.get("tenantId", DEFAULT_TENANT),
        }

    def _subscriptions(
        self, request: FakeRequest, params: Mapping[str, str], seen: _Seen
    ) -> FakeResponse:
        fault = self._fault(seen)
        if fault is not None:
            return fault
        self._raise_error_file("azure", "subscriptions")
        subs = [self._subscription_doc(s) for s in self._subscription_folders()]
        return self._ok(self._page(request, params, OP_SUBS_LIST, request_digest(), subs), seen)

    # ------------------------------------------------------------------ queries
    def _check_filter(self, route: _Route, params: Mapping[str, str]) -> None:
        flt = params.get("$filter", "")
        if not flt:
            return
        if route.collection is not None and route.collection.segment == "skus":
            self._sku_location(params)
            return
        raise _bad_request("InvalidParameter", "fakecloud does not support $filter")

    @staticmethod
    def _sku_location(params: Mapping[str, str]) -> str | None:
        flt = params.get("$filter", "")
        if not flt.strip():
            return None
        m = _SKU_FILTER.fullmatch(flt)
        if m is None:
            raise _bad_request(
                "InvalidParameter",
                f"The $filter '{flt}' is not supported: fakecloud supports only "
                "$filter=location eq '<location>' on resourceSkus.list",
            )
        return m.group("loc").lower()

    def _page(
        self,
        request: FakeRequest,
        params: Mapping[str, str],
        operation: str,
        scope: str,
        items: list[Any],
    ) -> dict[str, Any]:
        """One ``{"value": [...], "nextLink": ...}`` page of ``items``."""
        size = self.ctx.page_size
        token = params.get("$skiptoken", "")
        offset = decode_skiptoken(token, operation, scope) if token else 0
        if offset > len(items):
            raise _bad_request(
                "InvalidSkipToken", "The '$skiptoken' query parameter is past the end of the list."
            )
        out: dict[str, Any] = {"value": items[offset : offset + size]}
        if offset + size < len(items):
            out["nextLink"] = self._next_link(
                request, encode_skiptoken(operation, scope, offset + size)
            )
        return out

    @staticmethod
    def _next_link(request: FakeRequest, token: str) -> str:
        """The request's own URL with ``$skiptoken`` replaced (absolute when Host is known)."""
        query = [
            (name, value)
            for name, values in request.query.items()
            if name.lower() != "$skiptoken"
            for value in values
        ]
        query.append(("$skiptoken", token))
        qs = urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe="$")
        host = request.headers.get("host", "")
        base = f"http://{host}" if host else ""
        return f"{base}{request.path}?{qs}"

    # ------------------------------------------------------------------ single resources
    def _get(self, sub: str, route: _Route, items: list[_Item], seen: _Seen) -> _Item:
        assert route.name is not None and route.resource_group is not None
        assert route.collection is not None
        rg, name = route.resource_group.lower(), route.name.lower()
        found = next((i for i in items if i.resource_group == rg and i.name.lower() == name), None)
        if found is None:
            type_name = f"Microsoft.Compute/{route.collection.stem}"
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{type_name}/{route.name}' under resource group "
                f"'{route.resource_group}' was not found. For more details please go to "
                "https://aka.ms/ARMResourceNotFoundFix",
            )
        seen.resource = found.name
        location = found.data.get("location")
        if isinstance(location, str):
            seen.region = location
        return found

    def _extensions(self, sub: str, route: _Route, seen: _Seen) -> FakeResponse:
        assert route.name is not None
        doc: LoadedJson | None = None
        vm = self._get(sub, route, self._items(_VMS, sub), seen)
        if is_safe_name(vm.name):  # a name unfit for a folder cannot have an extensions file
            doc = self._load("azure", sub, "virtualMachines", vm.name, "extensions")
        items = self._nested_items(doc, "extensions")
        if route.operation == OP_EXT_LIST:
            return self._ok({"value": [i.data for i in items]}, seen)
        assert route.extension is not None
        wanted = route.extension.lower()
        found = next((i for i in items if i.name.lower() == wanted), None)
        if found is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/virtualMachines/{vm.name}/extensions/"
                f"{route.extension}' under resource group '{route.resource_group}' was not found.",
            )
        return self._ok(found.data, seen)

    # ------------------------------------------------------------------ scale-set instances
    def _scale_set(
        self,
        request: FakeRequest,
        params: Mapping[str, str],
        sub: str,
        route: _Route,
        seen: _Seen,
    ) -> FakeResponse:
        """A scale set's instances (paged, like ARM) and an instance's extensions (not paged)."""
        scale_set = self._get(sub, route, self._items(_SCALE_SETS, sub), seen)
        folder = ("azure", sub, "virtualMachineScaleSets", scale_set.name)
        doc = self._load(*folder, "virtualMachines") if is_safe_name(scale_set.name) else None
        instances = self._nested_items(doc, "scaleSetVMs", "VirtualMachineScaleSetVM")
        if route.operation == OP_SS_VM_LIST:
            scope = request_digest(sub.lower(), scale_set.name.lower())
            page = self._page(request, params, route.operation, scope, [i.data for i in instances])
            return self._ok(page, seen)
        assert route.instance is not None
        wanted = route.instance
        found = next((i for i in instances if str(i.data.get("instanceId")) == wanted), None)
        if found is None:
            raise ArmError(
                404,
                "NotFound",
                f"The entity was not found in this Azure location: instance {wanted} of "
                f"virtual machine scale set '{scale_set.name}'.",
            )
        seen.resource = found.name
        if route.operation == OP_SS_VM_GET:
            return self._ok(found.data, seen)
        ext_doc = (
            self._load(*folder, "virtualMachines", wanted, "extensions")
            if is_safe_name(wanted)
            else None
        )
        extensions = self._nested_items(
            ext_doc, "scaleSetVMExtensions", "VirtualMachineScaleSetVMExtension"
        )
        if route.operation == OP_SS_EXT_LIST:
            return self._ok({"value": [i.data for i in extensions]}, seen)
        assert route.extension is not None
        ext = next((i for i in extensions if i.name.lower() == route.extension.lower()), None)
        if ext is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/virtualMachineScaleSets/{scale_set.name}/"
                f"virtualMachines/{wanted}/extensions/{route.extension}' was not found.",
            )
        return self._ok(ext.data, seen)
