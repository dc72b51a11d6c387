"""What a fakecloud cloud handler sees and returns: the seam between the server and the clouds.

Kept apart from the server so that handlers (which need these types) and the server (which
routes to handlers) do not import each other.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from auditor.fakecloud.faults import FaultInjector
from auditor.fakecloud.replay import ReplayStore


@dataclass(frozen=True)
class FakeRequest:
    """One HTTP request as handlers see it. Header names are lower-cased."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes


@dataclass
class FakeResponse:
    """A handler's answer plus what it learned for the request log."""

    status: int
    body: bytes
    content_type: str = "text/xml;charset=UTF-8"
    headers: dict[str, str] = field(default_factory=dict)
    account: str | None = None
    region: str | None = None
    operation: str | None = None
    resource: str | None = None
    fault: str | None = None


def http_request(
    method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes
) -> FakeRequest:
    """A FakeRequest from an HTTP request line's method and target, its headers and body."""
    split = urllib.parse.urlsplit(target)
    return FakeRequest(
        method=method,
        path=split.path,
        query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
        headers={k.lower(): v for k, v in headers},
        body=body,
    )


@dataclass(frozen=True)
class HandlerContext:
    """What a cloud handler is built from: the replay data and the fault policy."""

    replay: ReplayStore
    faults: FaultInjector

    @property
    def page_size(self) -> int:
        return self.faults.config.page_size

    @property
    def validate(self) -> bool:
        return self.faults.config.validate_files


class CloudHandler(Protocol):
    """One cloud's wire protocol. ``matches`` must be cheap and side-effect free."""

    cloud: str

    def matches(self, request: FakeRequest) -> bool: ...

    def handle(self, request: FakeRequest) -> FakeResponse: ...


HandlerFactory = Callable[[HandlerContext], CloudHandler]
