"""The query-protocol codec: decoding what botocore serialises, and never crashing."""

from __future__ import annotations

import contextlib
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore.serialize import create_serializer
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.fakecloud.aws_wire import (
    QueryRequestError,
    decode_page_token,
    decode_params,
    encode_page_token,
    parse_form,
    wire_timestamp,
)

SESSION = botocore.session.get_session()
EC2 = SESSION.get_service_model("ec2")
STS = SESSION.get_service_model("sts")


def _roundtrip(model: Any, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """Serialise with botocore's own serializer, decode with fakecloud's."""
    op = model.operation_model(operation)
    serialized = create_serializer(model.protocol).serialize_to_request(params, op)
    body = urllib.parse.urlencode(serialized["body"]).encode()
    form = parse_form(body)
    assert form.pop("Action") == operation
    form.pop("Version")
    return decode_params(op.input_shape, form, model.protocol)


@pytest.mark.parametrize(
    ("model", "operation", "params"),
    [
        (
            EC2,
            "DescribeInstances",
            {"InstanceIds": ["i-1", "i-2"], "MaxResults": 5, "DryRun": False},
        ),
        (
            EC2,
            "DescribeInstanceTypes",
            {
                "InstanceTypes": ["m6a.large"],
                "Filters": [{"Name": "a", "Values": ["1", "2"]}, {"Name": "b", "Values": ["3"]}],
                "NextToken": "t",
            },
        ),
        (
            EC2,
            "GetInstanceTpmEkPub",
            {"InstanceId": "i-1", "KeyType": "rsa-2048", "KeyFormat": "der"},
        ),
        (
            EC2,
            "DescribeSpotPriceHistory",
            {
                "StartTime": datetime(2025, 1, 14, 9, 12, 31, tzinfo=UTC),
                "InstanceTypes": ["m5.large"],
            },
        ),
        (
            STS,
            "AssumeRole",
            {
                "RoleArn": "arn:aws:iam::1:role/r",
                "RoleSessionName": "ss",
                "PolicyArns": [{"arn": "arn:aws:iam::aws:policy/x"}],
                "Tags": [{"Key": "k", "Value": "v"}],
                "DurationSeconds": 900,
            },
        ),
    ],
)
def test_decode_inverts_botocore_serializer(
    model: Any, operation: str, params: dict[str, Any]
) -> None:
    assert _roundtrip(model, operation, params) == params


def test_empty_query_list_decodes_to_empty_list() -> None:
    op = STS.operation_model("AssumeRole")
    form = {"RoleArn": "a", "RoleSessionName": "ss", "TransitiveTagKeys": ""}
    assert decode_params(op.input_shape, form, "query")["TransitiveTagKeys"] == []


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"InstanceId.1": "i", "Bogus": "x"}, "UnknownParameter"),
        ({"InstanceId.0": "i"}, "UnknownParameter"),
        ({"MaxResults": "5.0"}, "InvalidParameterValue"),
        ({"DryRun": "yes"}, "InvalidParameterValue"),
        ({"Filter.1": "x"}, "InvalidParameterValue"),
        ({"InstanceId": "i"}, "InvalidParameterValue"),
        ({"InstanceId..1": "i"}, "UnknownParameter"),
    ],
)
def test_bad_forms_raise_typed_errors(form: dict[str, str], code: str) -> None:
    op = EC2.operation_model("DescribeInstances")
    with pytest.raises(QueryRequestError) as exc:
        decode_params(op.input_shape, form, "ec2")
    assert exc.value.code == code


def test_page_tokens_round_trip_and_bind_to_operation() -> None:
    token = encode_page_token("DescribeInstances", 100)
    assert decode_page_token(token, "DescribeInstances") == 100
    for bad, op in [(token, "DescribeVolumes"), ("fc1.", "DescribeInstances"), ("x", "X")]:
        with pytest.raises(Exception, match="invalid"):
            decode_page_token(bad, op)


def test_wire_timestamps() -> None:
    assert wire_timestamp("2025-01-14T09:12:31+00:00") == "2025-01-14T09:12:31.000Z"
    assert wire_timestamp("2025-01-14T11:12:31.5+02:00") == "2025-01-14T09:12:31.500Z"
    assert wire_timestamp("2025-01-14T09:12:31.000001Z") == "2025-01-14T09:12:31.000001Z"
    assert wire_timestamp(0) == "1970-01-01T00:00:00.000Z"


# ---------------------------------------------------------------------------- properties
_OPS = [
    EC2.operation_model(n)
    for n in ("DescribeInstances", "DescribeInstanceTypes", "GetInstanceTpmEkPub")
]
_OPS.append(STS.operation_model("AssumeRole"))
_KEY_PARTS = st.sampled_from(
    ["InstanceId", "Filter", "Name", "Value", "member", "entry", "key", "value", "Tags",
     "PolicyArns", "arn", "MaxResults", "DryRun", "1", "2", "0", "01", "x", ""]
)  # fmt: skip
_KEYS = st.lists(_KEY_PARTS, min_size=1, max_size=6).map(".".join)
_FORMS = st.dictionaries(_KEYS, st.text(max_size=8), max_size=8)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300))
def test_parse_form_only_raises_typed_errors(body: bytes) -> None:
    try:
        form = parse_form(body)
    except QueryRequestError:
        return
    for op in _OPS:
        with contextlib.suppress(QueryRequestError):
            decode_params(op.input_shape, form, op.service_model.protocol)


@settings(max_examples=400, deadline=None)
@given(form=_FORMS, op_index=st.integers(0, len(_OPS) - 1))
def test_decode_params_only_raises_typed_errors(form: dict[str, str], op_index: int) -> None:
    op = _OPS[op_index]
    body = urllib.parse.urlencode(form).encode()
    with contextlib.suppress(QueryRequestError):
        decode_params(op.input_shape, parse_form(body), op.service_model.protocol)
