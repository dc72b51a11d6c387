"""The VM's identity, asked of the cloud's metadata service from inside the guest.

The identity is what the nonce is bound to (`format.identity_string`), and the signed document
the service returns lets the auditor check it later: the AWS instance identity document and its
PKCS7 signature (IMDSv2), the GCE identity token (a Google-signed JWT), the Azure IMDS attested
document (PKCS7). Each service insists on its own header (IMDSv2 session token,
`Metadata-Flavor: Google`, `Metadata: true`) and refuses proxied requests, so requests never go
through a proxy. Base URLs are arguments so tests can point them at a loopback fake.

Standard library only. The IMDSv2 session token is a credential: it is never stored or printed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEFAULT_BASE_URLS: dict[str, str] = {
    "aws": "http://169.254.169.254",
    "gcp": "http://metadata.google.internal",
    "azure": "http://169.254.169.254",
}
CLOUDS = ("aws", "gcp", "azure")
GCP_AUDIENCE = "ccaudit"
AZURE_API_VERSION = "2021-02-01"
MAX_RESPONSE_BYTES = 256 * 1024

IDENTITY_SOURCES = {
    "aws": "aws-instance-identity-document",
    "gcp": "gcp-identity-token",
    "azure": "azure-imds-attested",
}

_AWS_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,32}$")
_GCP_INSTANCE_ID = re.compile(r"^[0-9]{1,20}$")
_AZURE_VM_ID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


class MetadataError(Exception):
    """The metadata service did not answer as that cloud's service would (reason in the text)."""


@dataclass(frozen=True)
class VmIdentity:
    """Who the VM says it is, and the signed document that backs it (None when unavailable)."""

    provider: str
    vm_id: str
    identity_source: str
    document: bytes | None = None
    signature: bytes | None = None
    problems: tuple[tuple[str, str], ...] = ()


class MetadataClient:
    """Plain HTTP to a link-local metadata service: no proxy, bounded responses, short timeouts."""

    def __init__(self, timeout: float = 10.0, probe_timeout: float = 2.0) -> None:
        self.timeout = timeout
        self.probe_timeout = probe_timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        method: str = "GET",
        probe: bool = False,
        data: bytes | None = None,
    ) -> tuple[bytes, Mapping[str, str]]:
        """Body and response headers; MetadataError naming the URL path on any failure."""
        req = urllib.request.Request(url, headers=dict(headers), method=method)
        if method in ("PUT", "POST"):
            req.data = data or b""
        timeout = self.probe_timeout if probe else self.timeout
        path = urllib.parse.urlsplit(url).path
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                body: bytes = resp.read(MAX_RESPONSE_BYTES + 1)
                response_headers = {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as err:
            raise MetadataError(f"{method} {path}: HTTP {err.code}") from None
        except urllib.error.URLError as err:
            raise MetadataError(f"{method} {path}: {err.reason}") from None
        except (TimeoutError, OSError) as err:
            raise MetadataError(f"{method} {path}: {err.__class__.__name__} {err}") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise MetadataError(f"{method} {path}: response larger than {MAX_RESPONSE_BYTES}")
        return body, response_headers


def azure_thim_certificates(client: MetadataClient, base: str) -> dict[str, str]:
    """Azure's THIM: the VCEK and the ASK/ARK chain of the chip this SNP CVM runs on (PEM)."""
    body, _ = client.request(f"{base}/metadata/THIM/amd/certification", {"Metadata": "true"})
    try:
        answer = json.loads(body)
    except ValueError:
        raise MetadataError("THIM certification answer is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("vcekCert"), str):
        raise MetadataError("THIM certification answer has no vcekCert")
    return {k: str(v) for k, v in answer.items() if k in ("vcekCert", "certificateChain", "tcbm")}


def azure_td_quote(client: MetadataClient, base: str, td_report: bytes) -> bytes:
    """Azure's quoting service: a TDX quote for the paravisor's TD report (base64url both ways)."""
    request = json.dumps({"report": _b64url(td_report)}).encode()
    body, _ = client.request(
        f"{base}/acc/tdquote",
        {"Content-Type": "application/json", "Metadata": "true"},
        method="POST",
        data=request,
    )
    try:
        quote = json.loads(body).get("quote")
        return base64.urlsafe_b64decode(quote + "=" * (-len(quote) % 4))
    except (ValueError, AttributeError, TypeError, binascii.Error):
        raise MetadataError("/acc/tdquote answer has no base64url quote") from None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _text(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise MetadataError(f"{what} is not UTF-8 text") from None


def aws_identity(client: MetadataClient, base: str, *, probe: bool = False) -> VmIdentity:
    """IMDSv2: a session token (PUT), then the identity document and its PKCS7 signature."""
    token_body, _ = client.request(
        f"{base}/latest/api/token",
        {"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        method="PUT",
        probe=probe,
    )
    auth = {"X-aws-ec2-metadata-token": _text(token_body, "IMDSv2 token")}
    document, _ = client.request(f"{base}/latest/dynamic/instance-identity/document", auth)
    try:
        fields = json.loads(document)
    except ValueError:
        raise MetadataError("instance identity document is not JSON") from None
    instance_id = fields.get("instanceId") if isinstance(fields, dict) else None
    if not isinstance(instance_id, str) or not _AWS_INSTANCE_ID.match(instance_id):
        raise MetadataError("instance identity document has no valid instanceId")
    problems: list[tuple[str, str]] = []
    signature: bytes | None = None
    try:
        signature, _ = client.request(f"{base}/latest/dynamic/instance-identity/pkcs7", auth)
    except MetadataError as err:
        problems.append(("aws instance-identity/pkcs7", str(err)))
    return VmIdentity(
        "aws", instance_id, IDENTITY_SOURCES["aws"], document, signature, tuple(problems)
    )


def gcp_identity(client: MetadataClient, base: str, *, probe: bool = False) -> VmIdentity:
    """GCE: the numeric instance id, then a full-format identity token for audience ccaudit."""
    headers = {"Metadata-Flavor": "Google"}
    body, response_headers = client.request(
        f"{base}/computeMetadata/v1/instance/id", headers, probe=probe
    )
    if response_headers.get("metadata-flavor") != "Google":
        raise MetadataError("response lacks Metadata-Flavor: Google (not the GCE metadata server)")
    instance_id = _text(body, "GCE instance id")
    if not _GCP_INSTANCE_ID.match(instance_id):
        raise MetadataError("GCE instance id is not numeric")
    url = (
        f"{base}/computeMetadata/v1/instance/service-accounts/default/identity"
        f"?audience={GCP_AUDIENCE}&format=full"
    )
    try:
        token, _ = client.request(url, headers)
    except MetadataError as err:
        problem = ("gcp identity token", f"{err} (does the VM have a service account?)")
        return VmIdentity("gcp", instance_id, "none", problems=(problem,))
    return VmIdentity("gcp", instance_id, IDENTITY_SOURCES["gcp"], token.strip())


def azure_identity(client: MetadataClient, base: str, *, probe: bool = False) -> VmIdentity:
    """Azure IMDS: the vmId, then the attested document (PKCS7 signed by Azure)."""
    headers = {"Metadata": "true"}
    body, _ = client.request(
        f"{base}/metadata/instance/compute/vmId?api-version={AZURE_API_VERSION}&format=text",
        headers,
        probe=probe,
    )
    vm_id = _text(body, "Azure vmId")
    if not _AZURE_VM_ID.match(vm_id):
        raise MetadataError("Azure vmId is not a GUID")
    try:
        document, _ = client.request(
            f"{base}/metadata/attested/document?api-version={AZURE_API_VERSION}", headers
        )
    except MetadataError as err:
        return VmIdentity("azure", vm_id, "none", problems=(("azure attested document", str(err)),))
    return VmIdentity("azure", vm_id, IDENTITY_SOURCES["azure"], document)


FETCHERS: dict[str, Callable[..., VmIdentity]] = {
    "aws": aws_identity,
    "gcp": gcp_identity,
    "azure": azure_identity,
}


def discover(
    client: MetadataClient, provider: str, base_urls: Mapping[str, str]
) -> tuple[VmIdentity | None, list[tuple[str, str]]]:
    """Ask one cloud's service (`provider`), or probe each in turn (`auto`).

    Returns the identity (None when no service answered) and the reasons each attempt failed.
    """
    clouds = CLOUDS if provider == "auto" else (provider,)
    failures: list[tuple[str, str]] = []
    for cloud in clouds:
        base = base_urls.get(cloud, DEFAULT_BASE_URLS[cloud]).rstrip("/")
        try:
            return FETCHERS[cloud](client, base, probe=provider == "auto"), failures
        except MetadataError as err:
            failures.append((f"{cloud} metadata service", str(err)))
    return None, failures
