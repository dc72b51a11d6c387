"""The fakecloud HTTP server: loopback only, threaded, cloud-agnostic.

The server owns what every cloud shares: binding (127.0.0.0/8 or ::1 only, because replay
data may be sensitive and nothing is authenticated), reading requests, latency injection,
routing to the first cloud handler whose ``matches`` accepts the request, and the request
log. Each cloud handler owns its wire protocol, including how it renders injected faults.

Adding a cloud: write a class with ``cloud: str``, ``matches(request) -> bool`` and
``handle(request) -> FakeResponse`` whose constructor takes a :class:`HandlerContext`, and
add it with :func:`register_handler` (or to :func:`default_handler_factories`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from auditor.fakecloud.faults import CallMatch, FaultConfig, FaultInjector, load_fault_config
from auditor.fakecloud.replay import ReplayStore
from auditor.fakecloud.seam import (
    CloudHandler,
    FakeRequest,
    FakeResponse,
    HandlerContext,
    HandlerFactory,
    http_request,
)

__all__ = [
    "CloudHandler",
    "FakeCloud",
    "FakeRequest",
    "FakeResponse",
    "HandlerContext",
    "HandlerFactory",
    "RequestRecord",
    "default_handler_factories",
    "http_request",
    "register_handler",
]

log = logging.getLogger("auditor.fakecloud")

MAX_REQUEST_BYTES = 16 * 1024 * 1024
"""Largest request body accepted; SDK list/get calls are a few kilobytes."""


# ============================================================================ handler registry
_extra_factories: list[HandlerFactory] = []


def register_handler(factory: HandlerFactory) -> None:
    """Add a cloud handler for servers created afterwards (tried after the built-in ones)."""
    if factory not in _extra_factories:
        _extra_factories.append(factory)


def default_handler_factories() -> list[HandlerFactory]:
    """The registered handlers in routing order (auditor/fakecloud/__init__.py registers the
    clouds, AWS first, when the package is imported, before any server exists)."""
    return list(_extra_factories)


@dataclass(frozen=True)
class RequestRecord:
    """One served request, for tests and benchmarks (``fault`` names an injected fault)."""

    cloud: str
    account: str | None
    region: str | None
    operation: str | None
    resource: str | None
    status: int
    fault: str | None


# ============================================================================ HTTP plumbing
def _loopback_bind_address(host: str) -> tuple[str, socket.AddressFamily]:
    """The address to bind for ``host``; ValueError unless it is a loopback address."""
    if host == "localhost":
        return "127.0.0.1", socket.AF_INET
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(
            f"fakecloud only listens on loopback (127.0.0.0/8, ::1, localhost), not {host!r}"
        ) from None
    if not addr.is_loopback:
        raise ValueError(
            f"fakecloud only listens on loopback (127.0.0.0/8, ::1, localhost), not {host!r}"
        )
    return str(addr), socket.AF_INET6 if addr.version == 6 else socket.AF_INET


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, owner: FakeCloud):
        self.address_family = family
        self.owner = owner
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def close_open_connections(self) -> None:
        """End keep-alive connections too, so that a stopped server really stops answering."""
        with self.connections_lock:
            connections = list(self.open_connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("fakecloud: connection error from %s", client_address, exc_info=True)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakecloud"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls
    timeout = 60
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fakecloud: %s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self._send_plain(411, "fakecloud needs Content-Length, not Transfer-Encoding")
            return
        try:
            length = int(length_header) if length_header else 0
        except ValueError:
            length = -1
        if length < 0 or length > MAX_REQUEST_BYTES:
            self._send_plain(413, "request body missing a valid length or too large")
            return
        body = self.rfile.read(length) if length else b""
        request = http_request(self.command, self.path, self.headers.items(), body)
        response = self.server.owner._handle(request)
        self._send(response)

    def _send_plain(self, status: int, text: str) -> None:
        self._send(FakeResponse(status=status, body=text.encode(), content_type="text/plain"))
        self.close_connection = True

    def _send(self, response: FakeResponse) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)


# ============================================================================ public API
class FakeCloud:
    """A loopback server replaying recorded cloud API responses to the real SDKs."""

    def __init__(
        self,
        replay_dir: str | Path,
        faults: FaultConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._bind_host, self._family = _loopback_bind_address(host)
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is out of range")
        self._port = port
        self.replay = ReplayStore(replay_dir)
        self.faults = load_fault_config(self.replay.root).overridden_by(faults)
        self._injector = FaultInjector(self.faults)
        context = HandlerContext(replay=self.replay, faults=self._injector)
        self.handlers: list[CloudHandler] = [make(context) for make in default_handler_factories()]
        self.request_log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._matched: dict[tuple[str, int], int] = {}  # calls each scenario match has seen
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Bind and serve on a daemon thread; returns the endpoint URL."""
        if self._server is not None:
            raise RuntimeError("fakecloud is already running")
        server = _Server((self._bind_host, self._port), self._family, self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="fakecloud",
            daemon=True,
        )
        self._thread.start()
        log.info("fakecloud serving %s on %s", self.replay.root, self.endpoint)
        return self.endpoint

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_open_connections()
        if thread is not None:
            thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Serve until Ctrl-C (for the CLI); starts the server if needed."""
        if self._server is None:
            self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            log.info("fakecloud: interrupted, stopping")
        finally:
            self.stop()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (or ``http://[::1]:PORT``); only while running."""
        if self._server is None:
            raise RuntimeError("fakecloud is not running; call start() first")
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def __enter__(self) -> FakeCloud:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ data
    def aws_accounts(self) -> list[str]:
        """Account folders under ``aws/`` in the replay directory."""
        return self.replay.subdirs("aws")

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self.request_log.append(record)

    def _scenario(self, cloud: str, response: FakeResponse) -> FakeResponse:
        """The configured ``hang`` and ``malformed`` scenarios (faults.FaultConfig)."""
        cfg = self.faults
        where = (cloud, response.account, response.region, response.operation, response.resource)
        if self._applies("hang", cfg.hang, where):
            time.sleep(cfg.hang_seconds)  # the client's read timeout fires first
            response.fault = "hang"
        if response.status == 200 and self._applies("malformed", cfg.malformed, where):
            response.body = response.body[: len(response.body) // 2]
            response.fault = "malformed"
        return response

    def _applies(self, scenario: str, matches: Sequence[CallMatch], where: tuple[Any, ...]) -> bool:
        """Whether a scenario takes this call: a match past its first `after` calls."""
        hit = False
        for i, match in enumerate(matches):
            if match.matches(*where):
                with self._log_lock:
                    seen = self._matched[(scenario, i)] = self._matched.get((scenario, i), 0) + 1
                hit = hit or seen > match.after
        return hit

    def _handle(self, request: FakeRequest) -> FakeResponse:
        """Route one request; never raises (a handler bug becomes a logged 500)."""
        delay = self._injector.latency_seconds
        if delay:
            time.sleep(delay)
        handler = next((h for h in self.handlers if h.matches(request)), None)
        if handler is None:
            log.debug("fakecloud: no handler for %s %s", request.method, request.path)
            response = FakeResponse(
                status=400,
                body=b"fakecloud: no cloud handler recognises this request\n",
                content_type="text/plain",
            )
            cloud = "unknown"
        else:
            cloud = handler.cloud
            try:
                response = handler.handle(request)
            except Exception:
                log.exception("fakecloud: %s handler failed", cloud)
                response = FakeResponse(
                    status=500, body=b"fakecloud: internal error\n", content_type="text/plain"
                )
        response = self._scenario(cloud, response)
        self._record(
            RequestRecord(
                cloud=cloud,
                account=response.account,
                region=response.region,
                operation=response.operation,
                resource=response.resource,
                status=response.status,
                fault=response.fault,
            )
        )
        return response
