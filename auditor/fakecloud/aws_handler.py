"""The ``aws`` cloud handler: EC2 and STS over the query protocol, served from a replay directory.

:class:`AwsQueryHandler` maps a signed request to an account (by access key) and region (by
credential scope), reads the replay file for the call and applies the few server-side
behaviours the providers rely on (identifier filters, pagination, synthesised
``DescribeRegions`` / ``GetCallerIdentity``, injected faults). Decoding the form body and
rendering XML is :mod:`auditor.fakecloud.aws_wire`'s job.

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

import logging
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from auditor.fakecloud.aws_wire import (
    XML_CONTENT_TYPE,
    AwsError,
    ShapeMismatchError,
    decode_page_token,
    decode_params,
    encode_page_token,
    paginator_config,
    parse_form,
    render_error,
    render_response,
    service_model,
    validate_response,
)
from auditor.fakecloud.faults import Fault
from auditor.fakecloud.replay import (
    ERROR_FILE_SHAPE,
    LoadedJson,
    ReplayError,
    error_file_fields,
    is_safe_name,
)
from auditor.fakecloud.seam import FakeRequest, FakeResponse, HandlerContext

log = logging.getLogger("auditor.fakecloud")

_SERVICES = ("ec2", "sts")

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


_INSTANCE = _ResourceKind(
    "InvalidInstanceID.NotFound",
    "InvalidInstanceID.Malformed",
    "The instance ID '{}' does not exist",
)
_IMAGE = _ResourceKind(
    "InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "The image id '[{}]' does not exist"
)
_VOLUME = _ResourceKind(
    "InvalidVolume.NotFound", "InvalidVolumeID.Malformed", "The volume '{}' does not exist."
)

_RESOURCE_PARAMS: dict[str, _ResourceKind] = {
    "InstanceId": _INSTANCE,
    "ImageId": _IMAGE,
    "VolumeId": _VOLUME,
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
    _IdFilter("InstanceIds", ("Reservations", "Instances"), "InstanceId", _INSTANCE.not_found,
              _INSTANCE.noun, "The instance IDs '{}' do not exist"),
    _IdFilter("InstanceTypes", ("InstanceTypes",), "InstanceType", "InvalidInstanceType",
              "The following supplied instance types do not exist: [{}]",
              "The following supplied instance types do not exist: [{}]"),
    _IdFilter("ImageIds", ("Images",), "ImageId", _IMAGE.not_found,
              _IMAGE.noun, "The image ids '[{}]' do not exist"),
    _IdFilter("VolumeIds", ("Volumes",), "VolumeId", _VOLUME.not_found,
              _VOLUME.noun, "The volumes '{}' do not exist."),
    _IdFilter("RegionNames", ("Regions",), "RegionName", "InvalidParameterValue",
              "Invalid region name: {}", "Invalid region names: {}"),
)  # fmt: skip


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
        if fault in (Fault.THROTTLE, Fault.RATE_LIMIT):
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
        form = parse_form(request.body)
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
        params = decode_params(operation.input_shape, form, protocol)
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
                return _without_metadata(doc.data)
        return None

    def _replayed_error(self, doc: LoadedJson) -> AwsError:
        fields = error_file_fields(doc)
        if fields is None:
            message = f"fakecloud replay file {doc.relpath}: expected {ERROR_FILE_SHAPE}"
            log.error(message)
            return AwsError(500, "InternalError", message)
        status, code, text = fields
        return AwsError(status, code, text)

    def _validate(self, doc: LoadedJson, call: _Call) -> None:
        if not self.ctx.validate:
            return
        key = (str(doc.path), call.name)
        with self._lock:
            if self._validated.get(key) == doc.stamp:
                return
        data = doc.data
        if isinstance(data, dict):
            data = _without_metadata(data)
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
        config = paginator_config(call.service, call.name)
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


def _without_metadata(data: dict[str, Any]) -> dict[str, Any]:
    """A replay document minus a raw boto3 dump's top-level ``ResponseMetadata``."""
    return {k: v for k, v in data.items() if k != "ResponseMetadata"}
