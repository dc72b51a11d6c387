"""Fixtures for fakecloud tests: a clean AWS environment and real boto3 clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakecloud.helpers import ACCOUNT, REGION

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402

ClientFactory = Callable[..., Any]


@pytest.fixture
def client() -> Iterator[ClientFactory]:
    """``client(fc, "ec2", region=..., key=..., retries=...)`` -> a real boto3 client.

    ``retries=False`` makes exactly one attempt (botocore's ``max_attempts`` counts retries
    in the ``retries`` dict, so that is ``total_max_attempts=1``), for tests of 5xx answers.
    """
    made: list[Any] = []

    def make(
        fc: Any,
        service: str = "ec2",
        region: str = REGION,
        key: str = ACCOUNT,
        retries: bool = True,
    ) -> Any:
        c = boto3.client(
            service,
            endpoint_url=fc.endpoint,
            region_name=region,
            aws_access_key_id=key,
            aws_secret_access_key="x",
            config=Config(
                retries={"mode": "standard", "max_attempts": 10}
                if retries
                else {"mode": "standard", "total_max_attempts": 1}
            ),
        )
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
