"""Loopback fakes of the clouds' metadata services, for the in-VM collector's tests.

Each refuses requests without the header the real service demands (IMDSv2 session token,
`Metadata-Flavor: Google`, `Metadata: true`) and records what it was asked. The Azure fake can
also play THIM (the VCEK of an SNP CVM) and the TD quote service of a TDX CVM.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

AWS_TOKEN = "AQAEAFake-IMDSv2-session-token=="
AWS_INSTANCE = "i-0123456789abcdef0"
AWS_DOCUMENT = json.dumps(
    {"instanceId": AWS_INSTANCE, "region": "eu-west-1", "accountId": "123456789012"}
).encode()
AWS_PKCS7 = b"MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABIIB"
GCP_INSTANCE = "4520335468413574120"
GCP_TOKEN = b"eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJjY2F1ZGl0In0.c2lnbmF0dXJl"
AZURE_VM_ID = "0F3A5C2E-1111-2222-3333-444455556666"
AZURE_ATTESTED = json.dumps({"encoding": "pkcs7", "signature": "MIILiQYJKoZIhvcNAQcCoII"}).encode()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class MetadataFake:
    clouds: set[str]
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    #: Azure extras for confidential VMs: the THIM answer, and the TD quote /acc/tdquote returns.
    thim: dict[str, str] | None = None
    td_quote: bytes | None = None
    posted: list[bytes] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        fake: MetadataFake = self.server.fake
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        fake.requests.append(Seen(method, parts.path, dict(self.headers.items())))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            fake.posted.append(self.rfile.read(length))
        if self.headers.get("X-Forwarded-For"):
            return self._send(400, b"proxied requests refused")
        if "aws" in fake.clouds and parts.path.startswith("/latest/"):
            return self._aws(method, parts.path)
        if "gcp" in fake.clouds and parts.path.startswith("/computeMetadata/"):
            return self._gcp(method, parts.path, query)
        if "azure" in fake.clouds and parts.path == "/metadata/THIM/amd/certification":
            return self._thim()
        if "azure" in fake.clouds and parts.path == "/acc/tdquote":
            return self._td_quote(method)
        if "azure" in fake.clouds and parts.path.startswith("/metadata/"):
            return self._azure(method, parts.path, query)
        return self._send(404)

    def _aws(self, method: str, path: str) -> None:
        if path == "/latest/api/token":
            if method != "PUT" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return self._send(400)
            return self._send(200, AWS_TOKEN.encode())
        if self.headers.get("X-aws-ec2-metadata-token") != AWS_TOKEN:
            return self._send(401)
        body = {
            "/latest/dynamic/instance-identity/document": AWS_DOCUMENT,
            "/latest/dynamic/instance-identity/pkcs7": AWS_PKCS7,
        }.get(path)
        return self._send(200, body) if body is not None else self._send(404)

    def _gcp(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        if self.headers.get("Metadata-Flavor") != "Google":
            return self._send(403, b"Missing Metadata-Flavor:Google header.")
        flavor = {"Metadata-Flavor": "Google"}
        if path == "/computeMetadata/v1/instance/id":
            return self._send(200, GCP_INSTANCE.encode(), flavor)
        if path == "/computeMetadata/v1/instance/service-accounts/default/identity":
            if query.get("audience") != ["ccaudit"] or query.get("format") != ["full"]:
                return self._send(400, b"bad audience/format", flavor)
            return self._send(200, GCP_TOKEN, flavor)
        return self._send(404, b"", flavor)

    def _azure(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        if self.headers.get("Metadata") != "true":
            return self._send(
                400, b'{"error": "Bad request. Required metadata header not specified"}'
            )
        if query.get("api-version") != ["2021-02-01"]:
            return self._send(400)
        if path == "/metadata/instance/compute/vmId" and query.get("format") == ["text"]:
            return self._send(200, AZURE_VM_ID.encode())
        if path == "/metadata/attested/document":
            return self._send(200, AZURE_ATTESTED)
        return self._send(404)

    def _thim(self) -> None:
        fake: MetadataFake = self.server.fake
        if self.headers.get("Metadata") != "true" or fake.thim is None:
            return self._send(400 if fake.thim is not None else 404)
        return self._send(200, json.dumps(fake.thim).encode())

    def _td_quote(self, method: str) -> None:
        fake: MetadataFake = self.server.fake
        if method != "POST" or fake.td_quote is None:
            return self._send(404)
        quote = base64.urlsafe_b64encode(fake.td_quote).decode().rstrip("=")
        return self._send(200, json.dumps({"quote": quote}).encode())

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")


def serve_metadata() -> Iterator[Any]:
    """Generator behind the `metadata_server` fixture: start(*clouds) -> MetadataFake."""
    servers: list[ThreadingHTTPServer] = []

    def start(*clouds: str) -> MetadataFake:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        fake = MetadataFake(set(clouds), f"http://127.0.0.1:{server.server_address[1]}")
        server.fake = fake  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return fake

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
