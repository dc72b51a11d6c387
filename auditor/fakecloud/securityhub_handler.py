"""AWS Security Hub `BatchImportFindings` (REST-JSON), for `ccaudit export securityhub` tests.

Unlike the replay handlers this one receives: it keeps what was imported (`imported`, by
product ARN and finding id; a second import of the same id replaces the first, as in Security
Hub) so tests can read back exactly what boto3 sent. What it enforces, as Security Hub does:

* SigV4 credential scope with service ``securityhub`` and ``POST /findings/import``; the access
  key selects the account as for EC2 (an account folder's name; any key with one account).
* The body is validated against botocore's own input shape of ``BatchImportFindings`` (types,
  required members such as ``SchemaVersion``, ``ProductArn``, ``Resources``): a violation is 400
  ``InvalidInputException`` naming it; more than 100 findings is 400 too.
* Each finding must belong to the caller: ``AwsAccountId`` and the account in ``ProductArn``
  equal the caller's account, and the product is ``product/<account>/default`` in the region
  called. Others are refused one by one in ``FailedFindings`` (``AccessDeniedException``),
  the rest imported: the batch is not all-or-nothing.
* Injected throttling is 429 ``TooManyRequestsException`` (botocore retries it).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from auditor.fakecloud.faults import Fault
from auditor.fakecloud.seam import FakeRequest, FakeResponse, HandlerContext

OPERATION = "BatchImportFindings"
MAX_FINDINGS = 100
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<akid>[^/\s,]+)/[0-9]{8}/(?P<region>[^/\s,]+)/"
    r"securityhub/aws4_request"
)
_PRODUCT = re.compile(
    r"^arn:aws:securityhub:(?P<region>[^:]+):(?P<account>\d{12}):product/(?P=account)/default$"
)


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class SecurityHubHandler:
    cloud = "aws"

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.imported: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def matches(self, request: FakeRequest) -> bool:
        auth = request.headers.get("authorization", "")
        return request.method == "POST" and _AUTH.search(auth) is not None

    def handle(self, request: FakeRequest) -> FakeResponse:
        match = _AUTH.search(request.headers.get("authorization", ""))
        assert match is not None
        region = match.group("region")
        account: str | None = None
        try:
            if request.path.rstrip("/") != "/findings/import":
                raise _Refused(404, "ResourceNotFoundException", f"no route {request.path}")
            account = self._account(match.group("akid"))
            fault = self.ctx.faults.decide(("aws", account, region, OPERATION, None))
            if fault is Fault.THROTTLE:
                raise _Refused(429, "TooManyRequestsException", "Rate exceeded")
            if fault is not None:
                raise _Refused(500, "InternalException", "Internal service error")
            findings = self._findings(request.body)
            failed = self._import(findings, account, region)
        except _Refused as err:
            body = {"__type": err.code, "Code": err.code, "Message": err.message}
            return self._answer(err.status, body, account, region, err.code)
        answer = {
            "FailedCount": len(failed),
            "SuccessCount": len(findings) - len(failed),
            "FailedFindings": failed,
        }
        return self._answer(200, answer, account, region)

    def _answer(
        self,
        status: int,
        body: Mapping[str, Any],
        account: str | None,
        region: str,
        error: str | None = None,
    ) -> FakeResponse:
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        if error is not None:
            headers["x-amzn-ErrorType"] = error
        return FakeResponse(
            status=status,
            body=json.dumps(body).encode(),
            content_type="application/json",
            headers=headers,
            account=account,
            region=region,
            operation=OPERATION,
            fault="throttle" if status == 429 else None,
        )

    def _account(self, akid: str) -> str:
        accounts = self.ctx.replay.subdirs("aws")
        if akid in accounts:
            return akid
        if len(accounts) == 1:
            return accounts[0]
        raise _Refused(
            403, "UnrecognizedClientException", "The security token included is invalid."
        )

    @staticmethod
    def _findings(body: bytes) -> list[dict[str, Any]]:
        from botocore.session import get_session
        from botocore.validate import ParamValidator

        try:
            params = json.loads(body or b"{}")
        except ValueError as err:
            raise _Refused(400, "InvalidInputException", f"body is not JSON: {err}") from err
        shape = (
            get_session().get_service_model("securityhub").operation_model(OPERATION).input_shape
        )
        report = ParamValidator().validate(params, shape)
        if report.has_errors():
            raise _Refused(400, "InvalidInputException", report.generate_report())
        findings: list[dict[str, Any]] = params["Findings"]
        if not findings or len(findings) > MAX_FINDINGS:
            raise _Refused(
                400,
                "InvalidInputException",
                f"Findings must hold 1 to {MAX_FINDINGS} findings, not {len(findings)}",
            )
        return findings

    def _import(
        self, findings: list[dict[str, Any]], account: str, region: str
    ) -> list[dict[str, str]]:
        failed: list[dict[str, str]] = []
        for item in findings:
            product = _PRODUCT.match(str(item["ProductArn"]))
            mine = (
                product is not None
                and product.group("account") == account
                and product.group("region") == region
                and item["AwsAccountId"] == account
            )
            if not mine:
                failed.append(
                    {
                        "Id": str(item["Id"]),
                        "ErrorCode": "AccessDeniedException",
                        "ErrorMessage": f"account {account} in {region} cannot import a finding "
                        f"of account {item['AwsAccountId']} for {item['ProductArn']}",
                    }
                )
                continue
            with self._lock:
                self.imported[(str(item["ProductArn"]), str(item["Id"]))] = item
        return failed
