"""Azure collector (azure-mgmt-compute): Confidential VMs, disk encryption, keys, agents.

Field facts (reference/cloud_apis.md §3): `securityProfile.securityType` is `Standard`,
`TrustedLaunch` or `ConfidentialVM`; a Confidential VM is *more* than Trusted Launch (peers call
it "trusted launch disabled"). SEV-SNP versus TDX comes from the size's `ConfidentialComputingType`
capability in `resource_skus.list`, and only when that call gives nothing from the size name.
Confidential OS disk encryption binds the disk key to the VM's vTPM, but the key itself stays in
an Azure service (platform key, Key Vault or Managed HSM) unless evidence shows otherwise.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from auditor.model import SOME_VMS, VM, Disk, Gap, Technology
from auditor.providers import kubernetes
from auditor.providers.base import (
    CallFailed,
    CallPool,
    ListingFailed,
    PaceOf,
    Plan,
    ScopeKey,
    ScopeResult,
    WorkerState,
    beside,
    collected_vm,
    failure_as_value,
    fan_out,
    is_loopback,
    join,
    make_gap,
    read_pages,
    record_evidence,
    start_calls,
    tune_session,
)
from auditor.providers.pacing import azure_pacing_policy
from auditor.recording import EvidenceSink, raw_path

PROVIDER = "azure"

# Retries and timeouts: azure-core's own RetryPolicy, configured here and nowhere else
# (docs/reliability.md). It retries 408, 429, 500, 502, 503, 504 and connection/read errors;
# a `Retry-After` header (ARM sends it with 429) sets the wait, otherwise the backoff is
# RETRY_BACKOFF_S * 2^(retry-1), at most RETRY_BACKOFF_MAX_S. Every other error
# (403 AuthorizationFailed, 404, a body that does not parse) is not retried: it is a gap.
RETRY_TOTAL = 8
#: Of those, how many may answer with a retryable status (408, 429, 500, 502-504): azure-core
#: counts them apart. Its default, 3, is kept: a persistent 5xx then fails in seconds instead of
#: minutes of backoff; throttling is kept away by the pacer (auditor/providers/pacing.py), and
#: a 429's Retry-After is waited exactly.
RETRY_STATUS = 3
RETRY_BACKOFF_S = 0.8
RETRY_BACKOFF_MAX_S = 60.0
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
ARM_SCOPE = "https://management.azure.com/.default"
_CAPABILITY = {"SNP": Technology.SEV_SNP, "TDX": Technology.TDX}
# Fallback only when resource_skus gives no capability for the size (e.g. the call failed).
_SNP_SIZE = re.compile(r"^Standard_[DE]C\d+a(d)?s_(cc_)?v[56]$", re.IGNORECASE)
_TDX_SIZE = re.compile(r"^Standard_[DE]C\d+e(d)?s_v[56]$", re.IGNORECASE)
_RUN_COMMAND_TYPES = {
    "runcommandlinux",
    "runcommandwindows",
    "customscript",
    "customscriptextension",
}


def _gap(
    err: Exception,
    call: str,
    subscription: str,
    region: str | None = None,
    resource: str | None = None,
    sections: Sequence[str] = (),
    affects: str = "vms",
) -> Gap:
    """An azure-core error as a Gap, with ARM's error code (AuthorizationFailed...)."""
    code = type(err).__name__
    message = str(err)
    error = getattr(err, "error", None)
    if error is not None and getattr(error, "code", None):
        code = str(error.code)
        message = str(getattr(error, "message", "") or message)
    return make_gap(
        PROVIDER, call, code, message, subscription, region, resource, sections, affects
    )


def _status(err: Exception) -> int:
    status = getattr(err, "status_code", None)
    return int(status) if isinstance(status, int) else 500


def _code_message(err: Exception, subscription: str) -> tuple[str, str]:
    gap = _gap(err, "", subscription)
    return gap.code, gap.message


class MalformedBody(ValueError):
    """An ARM answer that parsed as JSON but is not what the call returns (`value` not a list
    of objects, a body that is not an object): the call's gap, never an empty list."""


#: What the generated operations raise for these statuses (azure-mgmt-compute's error_map):
#: the raw calls raise the same, so a gap names the same error either way.
def _arm_errors() -> dict[int, Any]:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        ResourceExistsError,
        ResourceNotFoundError,
        ResourceNotModifiedError,
    )

    return {
        401: ClientAuthenticationError,
        404: ResourceNotFoundError,
        409: ResourceExistsError,
        304: ResourceNotModifiedError,
    }


def arm_requests() -> Any:
    """azure-mgmt-compute's request builders: each call's path, query and api-version exactly
    as the SDK's own operation sends them."""
    from azure.mgmt.compute.operations import _operations

    return _operations


def arm_json(client: Any, request: Any) -> dict[str, Any]:
    """One ARM call through the client's whole pipeline (authentication, azure-core's retries,
    the pacer, the shared transport), its JSON body as the cloud sent it.

    The SDK's operations turn every body into model objects, and the providers turned those
    back into the same dicts (`as_dict()`): about half of a listing's CPU on Azure
    (benchmarks/RESULTS.md). A status other than 200 raises what the generated operation
    raises (`map_error`, then HttpResponseError with ARM's error code).
    """
    from azure.core.exceptions import HttpResponseError, map_error
    from azure.mgmt.core.exceptions import ARMErrorFormat

    response = client.send_request(request)
    if response.status_code != 200:
        map_error(status_code=response.status_code, response=response, error_map=_arm_errors())
        raise HttpResponseError(response=response, error_format=ARMErrorFormat)
    body = response.json()
    if not isinstance(body, dict):
        raise MalformedBody(f"the answer is a JSON {type(body).__name__}, not an object")
    return body


def arm_values(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A list answer's `value`: a list of objects, or MalformedBody."""
    values = body.get("value")
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
        raise MalformedBody("'value' is not a list of objects")
    return values


def _same(page: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return page


def arm_pages(client: Any, first: Any) -> Iterator[list[dict[str, Any]]]:
    """Every page of a list call, following `nextLink` as the SDK's pager does; a link back
    to a page already read is an error, not a listing that never ends."""
    from azure.core.rest import HttpRequest

    request = first
    followed: set[str] = set()
    while True:
        body = arm_json(client, request)
        yield arm_values(body)
        link = body.get("nextLink")
        if not link:
            return
        if not isinstance(link, str):
            raise MalformedBody("'nextLink' is not a string")
        if link in followed:
            raise MalformedBody(f"'nextLink' leads back to a page already read: {link[:200]}")
        followed.add(link)
        request = HttpRequest("GET", link)


def resource_group_of(resource_id: str) -> str:
    parts = resource_id.split("/")
    lowered = [p.lower() for p in parts]
    return parts[lowered.index("resourcegroups") + 1] if "resourcegroups" in lowered else ""


class _StaticToken:
    """A token credential for loopback replays: fakecloud accepts any bearer token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        import time

        from azure.core.credentials import AccessToken

        return AccessToken("replay-token", int(time.time()) + 3600)


class AzureProvider(WorkerState):
    """Collects Azure Compute evidence per subscription, concurrently by subscription.

    Sent to a collection worker, it carries its settings and the planned subscriptions; the
    worker gets its own token from DefaultAzureCredential.
    """

    name = PROVIDER
    #: what it imports on first use: imported before a scan starts (auditor.heap)
    sdk_modules: ClassVar[tuple[str, ...]] = ("azure.mgmt.compute", "azure.core.pipeline.transport")
    #: Set by collect(): bounds calls in flight and runs the per-VM calls in parallel.
    pool: CallPool | None = None
    _RUNTIME = ("_credential", "_shared_transport", "_lock")

    def __init__(
        self,
        subscriptions: Sequence[str] = (),
        endpoint_url: str | None = None,
        replay: bool = False,
        retry_total: int = RETRY_TOTAL,
        retry_backoff: float = RETRY_BACKOFF_S,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        retry_status: int = RETRY_STATUS,
    ) -> None:
        self.subscriptions = list(subscriptions)
        self.endpoint_url = endpoint_url
        self.replay = replay
        self.retry_total = retry_total
        self.retry_status = retry_status
        self.retry_backoff = retry_backoff
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._fresh()

    def _fresh(self) -> None:
        self._credential: Any = None
        self._shared_transport: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ clients
    def _cred(self) -> Any:
        with self._lock:
            if self._credential is None:
                if self.replay:
                    self._credential = _StaticToken()
                else:
                    from azure.identity import DefaultAzureCredential

                    self._credential = DefaultAzureCredential()
            return self._credential

    def _client_kwargs(self) -> dict[str, Any]:
        # azure-core's RetryPolicy (see RETRY_TOTAL above); configured, not wrapped.
        kwargs: dict[str, Any] = {
            "retry_total": self.retry_total,
            # azure-core counts status retries apart: said here, not left to its default
            "retry_status": self.retry_status,
            "retry_backoff_factor": self.retry_backoff,
            "retry_backoff_max": RETRY_BACKOFF_MAX_S,
            "connection_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
        }
        if self.endpoint_url:
            kwargs["base_url"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                if not is_loopback(self.endpoint_url):
                    raise ValueError("plain-http ARM endpoints are allowed on loopback only")
                kwargs["authentication_policy"] = _loopback_bearer(self._cred())
        return kwargs

    def _compute(self, subscription: str) -> Any:
        from azure.mgmt.compute import ComputeManagementClient

        kwargs = self._client_kwargs()
        transport = self._transport()
        if transport is not None:
            kwargs["transport"] = transport
        if self.pool is not None and self.pool.pacer is not None:
            kwargs["per_retry_policies"] = [azure_pacing_policy(self.pool.pacer)]
        return ComputeManagementClient(self._cred(), subscription, **kwargs)

    def _transport(self) -> Any:
        """One HTTP transport for every subscription's client, so that scopes share connections.

        azure-core would give each client its own `requests` session with 10 pooled
        connections; with more per-VM calls in flight, every extra call opened a new
        connection. The shared session is set up as azure-core sets up its own (no urllib3
        retries: azure-core's RetryPolicy retries), with as many connections as the call pool
        allows calls in flight, and, on a loopback endpoint (fakecloud), without the per-call
        proxy lookup in the environment. Without a call pool the SDK's default is kept.
        """
        if self.pool is None:
            return None
        with self._lock:
            if self._shared_transport is None:
                import requests
                from azure.core.pipeline.transport import RequestsTransport
                from urllib3.util.retry import Retry

                session = requests.Session()
                size = max(self.pool.concurrency, requests.adapters.DEFAULT_POOLSIZE)
                adapter = requests.adapters.HTTPAdapter(
                    pool_connections=requests.adapters.DEFAULT_POOLSIZE,
                    pool_maxsize=size,
                    max_retries=Retry(total=False, redirect=False, raise_on_status=False),
                )
                for prefix in ("http://", "https://"):
                    session.mount(prefix, adapter)
                tune_session(session, self.endpoint_url, 0)
                self._shared_transport = RequestsTransport(
                    session=session,
                    session_owner=False,
                    connection_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                )
            return self._shared_transport

    # --------------------------------------------------------------------- plan
    def plan(self, sink: EvidenceSink) -> Plan:
        plan = Plan()
        if not self.subscriptions:
            try:
                self.subscriptions = self._list_subscriptions(sink)
                plan.calls += 1
            except CallFailed as failed:
                plan.gaps.append(failed.gap)
                return plan
        plan.scopes.extend(ScopeKey(PROVIDER, s) for s in dict.fromkeys(self.subscriptions))
        return plan

    def _list_subscriptions(self, sink: EvidenceSink) -> list[str]:
        try:
            client_class = _subscription_client()
        except ImportError as err:
            raise CallFailed(
                make_gap(
                    PROVIDER,
                    "subscriptions.list",
                    "MissingDependency",
                    "give --subscription, or install azure-mgmt-resource-subscriptions to list "
                    "them",
                    "?",
                    affects="scope",
                )
            ) from err
        try:
            client = client_class(self._cred(), **self._client_kwargs())
            subs = [s.as_dict() for s in client.subscriptions.list()]
        except Exception as err:
            raise CallFailed(_gap(err, "subscriptions.list", "?", affects="scope")) from err
        sink.save_meta(raw_path("azure", "subscriptions") + ".json", {"value": subs})
        return [str(s["subscriptionId"]) for s in subs if s.get("state", "Enabled") == "Enabled"]

    # ------------------------------------------------------------------ collect
    def collect(self, scope: ScopeKey, sink: EvidenceSink) -> ScopeResult:
        """One subscription: VMs and scale-set instances, their disks, encryption sets, size
        capabilities and extensions."""
        sub = scope.account
        result = ScopeResult(scope=scope)
        client = self._compute(sub)
        call = _Caller(sub, sink, result)

        @failure_as_value
        def extensions(vm: dict[str, Any]) -> _Items:
            name = str(vm.get("name", ""))
            rg = resource_group_of(str(vm.get("id", "")))
            return call.extensions(client, rg, name, str(vm.get("location", "")))

        # each page's extension calls start while the next page is listed: the
        # subscription's read limit is spent from the first page on
        vm_exts = start_calls(self.pool, extensions, call.pace)
        arm = arm_requests()
        try:
            vms = call.listing(
                "virtualMachines",
                "virtualMachines.listAll",
                (),
                client,
                arm.build_virtual_machines_list_all_request(sub),
                on_page=vm_exts.add,
            )
        except CallFailed as failed:
            vm_exts.settle()
            failed.gap.affects = "scope"
            result.errors.append(failed.gap)
            result.failed = True
            return result
        instances = self._scale_set_instances(client, call)
        if not vms and not instances:
            return result
        locations = {str(v.get("location", "")) for v in vms}
        locations |= {str(i.raw.get("location", "")) for i in instances}

        def listings() -> tuple[_Items | None, _Items | None, Any]:
            disks = (
                call.optional(
                    "disks", "disks.list", ("disks",), client, arm.build_disks_list_request(sub)
                )
                if vms
                else None
            )
            des = call.optional(
                "diskEncryptionSets",
                "diskEncryptionSets.list",
                ("disks",),
                client,
                arm.build_disk_encryption_sets_list_request(sub),
            )
            return disks, des, call.skus(client, sorted(locations))

        # disks, encryption sets and sizes beside the per-VM extension calls: all count
        # against the subscription's read limit, which is then never idle
        side = beside(self.pool, listings)

        instance_extensions = failure_as_value(partial(call.instance_extensions, client))
        inst_exts = fan_out(self.pool, instance_extensions, instances, call.pace)
        exts = vm_exts.results()
        disks, des, skus = join(self.pool, side)
        result.calls += len(vms)
        for vm, ext in zip(vms, exts, strict=True):
            result.vms.append(self._vm(sub, vm, call, disks, des, skus, ext))
        result.calls += len(instances)
        for inst, ext in zip(instances, inst_exts, strict=True):
            result.vms.append(self._vm(sub, inst.as_vm(), call, None, des, skus, ext, inst))
        return result

    def _scale_set_instances(self, client: Any, call: _Caller) -> list[_Instance]:
        """Every instance of every scale set (Uniform orchestration: AKS node pools). A scale
        set listing that fails is a gap saying which VMs were not seen: never "complete"."""
        try:
            sets = call.listing(
                "virtualMachineScaleSets",
                "virtualMachineScaleSets.listAll",
                (),
                client,
                arm_requests().build_virtual_machine_scale_sets_list_all_request(call.sub),
            )
        except CallFailed as failed:
            _not_seen(failed, "virtual machine scale set instances (listing failed)")
            call.result.errors.append(failed.gap)
            return []

        members = failure_as_value(partial(call.scale_set_vms, client))
        # Flexible orchestration: the instances are ordinary VMs, already in virtualMachines
        sets = [
            s
            for s in sets
            if str((s.get("properties") or {}).get("orchestrationMode", "Uniform")).lower()
            != "flexible"
        ]
        out: list[_Instance] = []
        for scale_set, found in zip(
            sets, fan_out(self.pool, members, sets, call.pace), strict=True
        ):
            if isinstance(found, CallFailed):
                name = str(scale_set.get("name", ""))
                _not_seen(found, f"the instances of scale set {name}")
                call.result.errors.append(found.gap)
            else:
                out.extend(found)
        call.result.calls += len(sets)
        return out

    def _vm(
        self,
        sub: str,
        raw: dict[str, Any],
        call: _Caller,
        disks: _Items | None,
        des: _Items | None,
        skus: _Items | None,
        exts: _Items | CallFailed,
        instance: _Instance | None = None,
    ) -> VM:
        """One VM's document; a scale-set instance comes as `instance.as_vm()` with the
        instance and its scale set as evidence (its disks from the scale set's settings)."""
        props = raw.get("properties", {})
        name = str(raw.get("name", ""))
        vm_id = str(props.get("vmId") or raw.get("id", name))
        region = str(raw.get("location", ""))
        zones = raw.get("zones") or []
        rg = resource_group_of(str(raw.get("id", "")))
        size = str(props.get("hardwareProfile", {}).get("vmSize", ""))
        security = props.get("securityProfile") or {}
        uefi = security.get("uefiSettings") or {}
        if instance is None:
            inst_sha = call.evidence(
                raw, "virtualMachines.listAll", "virtualMachines", name, region
            )
            shas = [inst_sha]
        else:
            inst_sha = instance.sha
            shas = [inst_sha, instance.set_sha]
        gaps: list[Gap] = list(call.scope_gaps)

        technology, cc = _technology(security.get("securityType"), size, skus)
        cc_sha = [skus.shas[size]] if skus is not None and size in skus.items else []
        doc: dict[str, Any] = {
            "provider": PROVIDER,
            "account": sub,
            "region": region,
            "id": vm_id,
            "name": name,
            "instance_type": size,
            "state": props.get("provisioningState"),
            "tags": dict(raw.get("tags") or {}),
            "cc": cc,
            "boot": {"secure_boot": bool(uefi.get("secureBootEnabled", False))},
            "tpm": {
                "present": bool(uefi.get("vTpmEnabled", False)),
                # in a Confidential VM the vTPM runs in Microsoft's paravisor (HCL) inside the TEE
                "implemented_by": "paravisor"
                if security.get("securityType") == "ConfidentialVM"
                else "provider",
            },
            # Azure IMDS cannot be turned off from the control plane
            "metadata_service": {"enabled": True},
            "attestation": {"provider_verdict": "none", "source": "none"},
            "azure": {
                "resource_id": raw.get("id"),
                "resource_group": rg,
                "security_type": security.get("securityType"),
                "encryption_at_host": security.get("encryptionAtHost"),
                "zones": list(zones),
            },
        }
        if zones:
            doc["zone"] = f"{region}-{zones[0]}"
        if instance is not None:
            doc["azure"]["scale_set"] = instance.summary()
            cluster = kubernetes.aks(doc["tags"], instance.resource_group)
            if cluster is not None:
                declared, _ = _technology(instance.model_security_type(), size, skus)
                cluster["declared_technology"] = declared.value
                doc["kubernetes"] = cluster
        evidence: dict[str, list[str]] = {k: list(shas) for k in doc}
        evidence["cc"] = [*shas, *cc_sha]
        if technology is not Technology.UNKNOWN:
            doc["technology"] = technology.value
            evidence["technology"] = evidence["cc"]
        image = _image(props, sub)
        if image is not None:
            doc["image"] = image
            evidence["image"] = list(shas)

        model_disks: list[Disk] = []
        if instance is not None:
            model_disks, doc["disks"] = _instance_disks(props, des)
            evidence["disks"] = list(shas)
        elif disks is not None:
            model_disks, doc["disks"], disk_shas, disk_gaps = _disks(props, disks, des, sub, region)
            evidence["disks"] = [inst_sha, *disk_shas]
            gaps.extend(disk_gaps)

        named = _named_extensions(raw)
        if isinstance(exts, CallFailed):
            gaps.append(exts.gap)
            call.result.errors.append(exts.gap)
            if named:  # the VM resource itself names them: they run, whatever else is unknown
                doc["agents"] = _agents(props, [{"name": n} for n in named])
                evidence["agents"] = list(shas)
        else:
            returned = {str(e.get("name", "")).lower() for e in exts.values}
            unlisted = [n for n in named if n.lower() not in returned]
            doc["agents"] = _agents(props, [*exts.values, *({"name": n} for n in unlisted)])
            evidence["agents"] = [*shas, *exts.shas.values()]
            if unlisted:
                gap = make_gap(
                    PROVIDER,
                    "virtualMachineScaleSetVMExtensions.list"
                    if instance is not None
                    else "virtualMachineExtensions.list",
                    "NotReturned",
                    f"{', '.join(unlisted)} named on the VM resource but not returned by the "
                    "extensions call (their publisher and type are unknown)",
                    sub,
                    region,
                    str(raw.get("name", "")),
                    ("agents",),
                )
                gaps.append(gap)
                call.result.errors.append(gap)

        return collected_vm(
            doc, technology=technology, disks=model_disks, evidence=evidence, gaps=gaps
        )


def _technology(
    security_type: Any, size: str, skus: _Items | None
) -> tuple[Technology, dict[str, Any]]:
    """ConfidentialVM + the size's ConfidentialComputingType capability; unknown stays unknown."""
    cc: dict[str, Any] = {"claimed_by": "control_plane", "raw_flag": security_type}
    if security_type in (None, "Standard", "TrustedLaunch"):
        cc["technology"] = Technology.NONE.value
        return Technology.NONE, cc
    if security_type != "ConfidentialVM":
        return Technology.UNKNOWN, cc
    capability = None
    if skus is not None and size in skus.items:
        for cap in skus.items[size].get("capabilities", []):
            if cap.get("name") == "ConfidentialComputingType":
                capability = cap.get("value")
        cc["basis"] = "resource_skus"
    if capability is None:
        if _SNP_SIZE.match(size):
            capability, cc["basis"] = "SNP", "size_name"
        elif _TDX_SIZE.match(size):
            capability, cc["basis"] = "TDX", "size_name"
    cc["capability"] = capability
    tech = _CAPABILITY.get(str(capability), Technology.UNKNOWN)
    if tech is not Technology.UNKNOWN:
        cc["technology"] = tech.value
    return tech, cc


def _image(props: dict[str, Any], sub: str) -> dict[str, Any] | None:
    ref = props.get("storageProfile", {}).get("imageReference") or {}
    if ref.get("publisher"):
        return {
            "id": "/".join(str(ref.get(k, "")) for k in ("publisher", "offer", "sku", "version")),
            "owner_id": ref["publisher"],
            "owned_by_account": False,
        }
    if ref.get("id"):  # a custom or gallery image
        image_id = str(ref["id"])
        return {
            "id": image_id,
            "owner_id": image_id.split("/")[2] if image_id.count("/") > 2 else None,
            "owned_by_account": image_id.lower().startswith(f"/subscriptions/{sub.lower()}/"),
        }
    return None


def _disks(
    props: dict[str, Any],
    disks: _Items,
    des: _Items | None,
    sub: str,
    region: str,
) -> tuple[list[Disk], list[dict[str, Any]], list[str], list[Gap]]:
    """Each attached disk: who holds its key, and whether it is confidential-encrypted."""
    storage = props.get("storageProfile", {})
    attached = [(storage.get("osDisk") or {}, True)] + [
        (d, False) for d in storage.get("dataDisks") or []
    ]
    out: list[Disk] = []
    docs: list[dict[str, Any]] = []
    shas: list[str] = []
    gaps: list[Gap] = []
    by_id = {k.lower(): v for k, v in disks.items.items()}
    for ref, boot in attached:
        managed = ref.get("managedDisk") or {}
        disk_id = str(managed.get("id") or ref.get("name") or "?")
        sec = managed.get("securityProfile") or {}
        entry: dict[str, Any] = {
            "id": disk_id.rsplit("/", 1)[-1],
            "device": ref.get("name"),
            "boot": boot,
        }
        if not boot and isinstance(ref.get("lun"), int):
            entry["lun"] = ref["lun"]  # how the guest sees a data disk (/dev/disk/azure/...)
        if sec.get("securityEncryptionType"):
            entry["confidential_encryption"] = sec["securityEncryptionType"]
        disk = by_id.get(disk_id.lower())
        if disk is None:
            gaps.append(
                make_gap(
                    PROVIDER,
                    "disks.list",
                    "NotReturned",
                    f"disk {disk_id} was not in the disks list",
                    sub,
                    region,
                    disk_id,
                    ("disks",),
                )
            )
            entry["custody"] = "unknown"
            docs.append(entry)
            out.append(Disk(id=entry["id"], device=entry["device"], boot=boot))
            continue
        shas.append(disks.shas.get(disk_id.lower(), ""))
        enc = (disk.get("properties") or {}).get("encryption") or {}
        enc_type = str(enc.get("type") or "EncryptionAtRestWithPlatformKey")
        set_id = enc.get("diskEncryptionSetId") or (sec.get("diskEncryptionSet") or {}).get("id")
        custody = (
            "provider_key" if enc_type == "EncryptionAtRestWithPlatformKey" else "customer_kms"
        )
        if sec.get("diskEncryptionSet") and custody == "provider_key":
            custody = "customer_kms"  # confidential disk encryption with a customer key
        entry.update({"encrypted": True, "custody": custody, "encryption_type": enc_type})
        if set_id:
            _name_encryption_set(entry, set_id, des)
        docs.append(entry)
        size = (disk.get("properties") or {}).get("diskSizeGB")
        out.append(
            Disk(
                id=entry["id"],
                device=entry["device"],
                boot=boot,
                size_gb=int(size) if isinstance(size, int) else None,
                encrypted=True,
                custody=custody,
                kms_key=entry.get("kms_key"),
            )
        )
    return out, docs, [s for s in shas if s], gaps


def _instance_disks(
    props: dict[str, Any], des: _Items | None
) -> tuple[list[Disk], list[dict[str, Any]]]:
    """A scale-set instance's disks, from its (inherited) storage profile: Uniform instances'
    disks are not listed as disk resources, so custody comes from the encryption set named
    there, else the platform key; an ephemeral OS disk lives on the host's local storage."""
    storage = props.get("storageProfile") or {}
    at_host = (props.get("securityProfile") or {}).get("encryptionAtHost") is True
    attached = [(storage.get("osDisk") or {}, True)] + [
        (d, False) for d in storage.get("dataDisks") or [] if isinstance(d, dict)
    ]
    out: list[Disk] = []
    docs: list[dict[str, Any]] = []
    for ref, boot in attached:
        managed = ref.get("managedDisk") or {}
        sec = managed.get("securityProfile") or {}
        set_id = (managed.get("diskEncryptionSet") or {}).get("id") or (
            sec.get("diskEncryptionSet") or {}
        ).get("id")
        disk_id = str(managed.get("id") or ref.get("name") or ("os" if boot else "data"))
        ephemeral = bool(ref.get("diffDiskSettings"))
        entry: dict[str, Any] = {
            "id": disk_id.rsplit("/", 1)[-1],
            "device": ref.get("name"),
            "boot": boot,
            "encrypted": at_host if ephemeral else True,
            "custody": "customer_kms" if set_id else "provider_key",
            "encryption_type": "EncryptionAtRestWithCustomerKey"
            if set_id
            else "EncryptionAtRestWithPlatformKey",
        }
        if ephemeral:
            entry["ephemeral"] = True
        if not boot and isinstance(ref.get("lun"), int):
            entry["lun"] = ref["lun"]
        if sec.get("securityEncryptionType"):
            entry["confidential_encryption"] = sec["securityEncryptionType"]
        if set_id:
            _name_encryption_set(entry, set_id, des)
        docs.append(entry)
        size = ref.get("diskSizeGB")
        out.append(
            Disk(
                id=entry["id"],
                device=entry["device"],
                boot=boot,
                size_gb=int(size) if isinstance(size, int) else None,
                encrypted=entry["encrypted"],
                custody=entry["custody"],
                kms_key=entry.get("kms_key"),
            )
        )
    return out, docs


def _name_encryption_set(entry: dict[str, Any], set_id: Any, des: _Items | None) -> None:
    """A disk entry's encryption set, and the key and key store it names when it is known."""
    entry["encryption_set"] = set_id
    key_store = _key_store(des, str(set_id))
    if key_store:
        entry["kms_key"] = key_store.get("key_url") or set_id
        entry["key_store"] = key_store.get("kind")


def _key_store(des: _Items | None, set_id: str) -> dict[str, Any] | None:
    """Where a disk encryption set's key lives: Key Vault or Managed HSM (both Azure's)."""
    if des is None:
        return None
    found = {k.lower(): v for k, v in des.items.items()}.get(set_id.lower())
    if found is None:
        return None
    key = (found.get("properties") or {}).get("activeKey") or {}
    vault = str((key.get("sourceVault") or {}).get("id", ""))
    kind = "managed_hsm" if "managedhsms" in vault.lower() else "key_vault"
    return {"key_url": key.get("keyUrl"), "vault": vault, "kind": kind}


def _named_extensions(raw: dict[str, Any]) -> list[str]:
    """Extensions the VM resource lists in `resources` (ids ending in /extensions/<name>)."""
    names: list[str] = []
    for res in raw.get("resources") or []:
        rid = str((res or {}).get("id") or "") if isinstance(res, dict) else ""
        _, sep, name = rid.rpartition("/extensions/")
        if sep and name and name not in names:
            names.append(name)
    return names


def _agents(props: dict[str, Any], extensions: list[dict[str, Any]]) -> dict[str, Any]:
    """Provider code in the guest: the VM agent, extensions, and run-command."""
    os_profile = props.get("osProfile") or {}
    linux = os_profile.get("linuxConfiguration") or {}
    windows = os_profile.get("windowsConfiguration") or {}
    provision = linux.get("provisionVMAgent", windows.get("provisionVMAgent", True))
    listed = [
        {
            "name": e.get("name"),
            "publisher": (e.get("properties") or {}).get("publisher"),
            "type": (e.get("properties") or {}).get("type"),
            "state": (e.get("properties") or {}).get("provisioningState"),
        }
        for e in extensions
    ]
    return {
        "vm_agent": bool(provision),
        "extension_operations_allowed": bool(os_profile.get("allowExtensionOperations", True)),
        "extensions": listed,
        "run_command": any(str(x.get("type") or "").lower() in _RUN_COMMAND_TYPES for x in listed),
    }


@dataclass
class _Instance:
    """One scale-set instance as listed, with its scale set (whose model it inherits)."""

    raw: dict[str, Any]
    scale_set: dict[str, Any]
    sha: str  # evidence of the instance
    set_sha: str  # evidence of the scale set

    @property
    def name(self) -> str:
        return str(self.raw.get("name", ""))

    @property
    def instance_id(self) -> str:
        return str(self.raw.get("instanceId", ""))

    @property
    def set_name(self) -> str:
        return str(self.scale_set.get("name", ""))

    @property
    def resource_group(self) -> str:
        return resource_group_of(str(self.raw.get("id") or self.scale_set.get("id", "")))

    def model_security_type(self) -> Any:
        """The security type the scale set's model declares for every instance."""
        profile = (self.scale_set.get("properties") or {}).get("virtualMachineProfile") or {}
        return (profile.get("securityProfile") or {}).get("securityType")

    def summary(self) -> dict[str, Any]:
        props = self.scale_set.get("properties") or {}
        return {
            "name": self.set_name,
            "id": self.scale_set.get("id"),
            "instance_id": self.instance_id,
            "orchestration_mode": props.get("orchestrationMode", "Uniform"),
        }

    def as_vm(self) -> dict[str, Any]:
        """The instance in a VM's shape: its own settings where it has them, else the scale
        set's model (instances inherit the security profile, OS and disk settings)."""
        props = dict(self.raw.get("properties") or {})
        profile = (self.scale_set.get("properties") or {}).get("virtualMachineProfile") or {}
        for key in ("securityProfile", "osProfile"):
            if not props.get(key) and profile.get(key):
                props[key] = profile[key]
        props["storageProfile"] = _inherited_storage(
            props.get("storageProfile") or {}, profile.get("storageProfile") or {}
        )
        size = (self.raw.get("sku") or {}).get("name") or (self.scale_set.get("sku") or {}).get(
            "name"
        )
        hardware = dict(props.get("hardwareProfile") or {})
        if size and not hardware.get("vmSize"):
            hardware["vmSize"] = size
        props["hardwareProfile"] = hardware
        set_id = str(self.scale_set.get("id", ""))
        named = [
            {"id": f"{set_id}/extensions/{e.get('name')}"}
            for e in (profile.get("extensionProfile") or {}).get("extensions") or []
            if isinstance(e, dict) and e.get("name")
        ]
        return {
            "id": self.raw.get("id"),
            "name": self.name,
            "location": self.raw.get("location") or self.scale_set.get("location"),
            "zones": self.raw.get("zones") or self.scale_set.get("zones") or [],
            "tags": {**(self.scale_set.get("tags") or {}), **(self.raw.get("tags") or {})},
            "properties": props,
            "resources": [*(self.raw.get("resources") or []), *named],
        }


def _inherited_storage(own: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """An instance's storage profile completed from the scale set's (OS disk settings merged)."""
    storage = {**model, **own}
    os_own, os_model = own.get("osDisk") or {}, model.get("osDisk") or {}
    os_disk = {**os_model, **os_own}
    managed = {**(os_model.get("managedDisk") or {}), **(os_own.get("managedDisk") or {})}
    if managed:
        os_disk["managedDisk"] = managed
    if os_disk:
        storage["osDisk"] = os_disk
    return storage


def _not_seen(failed: CallFailed, what: str) -> None:
    """A listing failed: VMs of the scope were never seen (not a fact missing on seen VMs)."""
    failed.gap.affects = SOME_VMS
    failed.gap.resource = what


class _Items:
    """A list response keyed by id (or name), with the evidence hash of each item."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.shas: dict[str, str] = {}
        self.values: list[dict[str, Any]] = []


class _Caller:
    """One subscription's ARM calls: raw responses recorded, failures turned into Gaps."""

    def __init__(self, sub: str, sink: EvidenceSink, result: ScopeResult) -> None:
        self.sub = sub
        #: the rate limit its calls count against: ARM reads per subscription
        self.pace: PaceOf = ("azure", sub.lower(), None, None)
        self.sink = sink
        self.result = result
        self.scope_gaps: list[Gap] = []

    def _rel(self, *parts: str) -> str:
        return raw_path("azure", self.sub, *parts)

    def _fail(
        self, err: Exception, rel: str, call: str, sections: Sequence[str], res: str | None = None
    ) -> CallFailed:
        self.sink.save_error(rel, _status(err), *_code_message(err, self.sub))
        return CallFailed(_gap(err, call, self.sub, None, res, sections))

    def listing(
        self,
        name: str,
        call: str,
        sections: Sequence[str],
        client: Any,
        first: Any,
        on_page: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Every item of a list call (all its pages, `first` the request for the first) as one
        replay file; each page's items go to `on_page` as they arrive, if given."""
        rel = self._rel(name)
        self.result.calls += 1
        values: list[dict[str, Any]] = []
        try:
            for arrived in read_pages(lambda: arm_pages(client, first), _same):
                values.extend(arrived)
                if on_page is not None:
                    on_page(arrived)
        except ListingFailed as failed:
            raise self._fail(failed.error, rel, call, sections) from failed.error
        self.sink.save_raw(rel, {"value": values})
        return values

    def optional(
        self, name: str, call: str, sections: Sequence[str], client: Any, first: Any
    ) -> _Items | None:
        try:
            values = self.listing(name, call, sections, client, first)
        except CallFailed as failed:
            self.scope_gaps.append(failed.gap)
            self.result.errors.append(failed.gap)
            return None
        out = _Items()
        for v in values:
            key = str(v.get("id") or v.get("name", "")).lower()
            out.items[key] = v
            out.shas[key] = self.evidence(v, call, name, str(v.get("name")), v.get("location"))
            out.values.append(v)
        return out

    def skus(self, client: Any, locations: list[str]) -> _Items | None:
        """VM sizes per location (`$filter=location eq '<loc>'`), saved as one replay file."""
        rel = self._rel("resourceSkus")
        merged: dict[str, dict[str, Any]] = {}
        build = arm_requests().build_resource_skus_list_request
        try:
            for loc in locations:
                self.result.calls += 1
                first = build(self.sub, filter=f"location eq '{loc}'")
                for data in (sku for page in arm_pages(client, first) for sku in page):
                    if data.get("resourceType") == "virtualMachines":
                        key = str(data.get("name"))
                        prev = merged.get(key)
                        if prev is not None:
                            locs = sorted({*prev.get("locations", []), *data.get("locations", [])})
                            prev["locations"] = locs
                        else:
                            merged[key] = data
        except Exception as err:
            failed = self._fail(err, rel, "resourceSkus.list", ("cc",))
            self.scope_gaps.append(failed.gap)
            self.result.errors.append(failed.gap)
            return None
        self.sink.save_raw(rel, {"value": list(merged.values())})
        out = _Items()
        for key, v in merged.items():
            out.items[key] = v
            out.shas[key] = self.evidence(v, "resourceSkus.list", "resourceSkus", key, None)
        return out

    def extensions(self, client: Any, rg: str, vm_name: str, region: str) -> _Items:
        rel = self._rel("virtualMachines", vm_name, "extensions")
        try:
            request = arm_requests().build_virtual_machine_extensions_list_request(
                rg, vm_name, self.sub
            )
            values = arm_values(arm_json(client, request))
        except Exception as err:
            failed = self._fail(err, rel, "virtualMachineExtensions.list", ("agents",), vm_name)
            raise failed from err
        self.sink.save_raw(rel, {"value": values})
        out = _Items()
        for v in values:
            key = str(v.get("name"))
            out.items[key] = v
            out.values.append(v)
            out.shas[key] = record_evidence(
                self.sink,
                v,
                provider=PROVIDER,
                kind="api_resource",
                call="virtualMachineExtensions.list",
                account=self.sub,
                region=region,
                resource=vm_name,
                ref=f"{rel}.json",
            )
        return out

    def evidence(
        self,
        raw: Any,
        call: str,
        name: str | tuple[str, ...],
        resource: str | None,
        region: str | None,
    ) -> str:
        parts = (name,) if isinstance(name, str) else name
        return record_evidence(
            self.sink,
            raw,
            provider=PROVIDER,
            kind="api_resource",
            call=call,
            account=self.sub,
            region=region,
            resource=resource,
            ref=f"{self._rel(*parts)}.json",
        )

    def scale_set_vms(self, client: Any, scale_set: dict[str, Any]) -> list[_Instance]:
        """The instances of one scale set (virtualMachineScaleSetVMs.list), each with evidence."""
        name = str(scale_set.get("name", ""))
        rg = resource_group_of(str(scale_set.get("id", "")))
        parts = ("virtualMachineScaleSets", name, "virtualMachines")
        rel = self._rel(*parts)
        try:
            self.result.calls += 1
            first = arm_requests().build_virtual_machine_scale_set_vms_list_request(
                rg, name, self.sub
            )
            values = [v for page in arm_pages(client, first) for v in page]
        except Exception as err:
            raise self._fail(err, rel, "virtualMachineScaleSetVMs.list", (), name) from err
        self.sink.save_raw(rel, {"value": values})
        region = scale_set.get("location")
        set_sha = self.evidence(
            scale_set, "virtualMachineScaleSets.listAll", "virtualMachineScaleSets", name, region
        )
        return [
            _Instance(
                v,
                scale_set,
                self.evidence(v, "virtualMachineScaleSetVMs.list", parts, v.get("name"), region),
                set_sha,
            )
            for v in values
        ]

    def instance_extensions(self, client: Any, inst: _Instance) -> _Items:
        """A scale-set instance's extensions (virtualMachineScaleSetVMExtensions.list)."""
        parts = (
            "virtualMachineScaleSets",
            inst.set_name,
            "virtualMachines",
            inst.instance_id,
            "extensions",
        )
        rel = self._rel(*parts)
        call = "virtualMachineScaleSetVMExtensions.list"
        try:
            request = arm_requests().build_virtual_machine_scale_set_vm_extensions_list_request(
                inst.resource_group, inst.set_name, inst.instance_id, self.sub
            )
            values = arm_values(arm_json(client, request))
        except Exception as err:
            raise self._fail(err, rel, call, ("agents",), inst.name) from err
        self.sink.save_raw(rel, {"value": values})
        out = _Items()
        region = inst.raw.get("location") or inst.scale_set.get("location")
        for v in values:
            key = str(v.get("name"))
            out.items[key] = v
            out.values.append(v)
            out.shas[key] = self.evidence(v, call, parts, inst.name, region)
        return out


def _subscription_client() -> Any:
    """SubscriptionClient: azure-mgmt-resource-subscriptions, or older azure-mgmt-resource."""
    try:
        from azure.mgmt.resource.subscriptions import SubscriptionClient
    except ImportError:
        from azure.mgmt.resource import SubscriptionClient  # type: ignore[attr-defined,no-redef,unused-ignore]
    return SubscriptionClient


def _loopback_bearer(credential: Any) -> Any:
    """Bearer auth over plain http, only for a loopback fakecloud endpoint."""
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy

    class _LoopbackBearer(BearerTokenCredentialPolicy):  # type: ignore[type-arg]
        def on_request(self, request: Any) -> None:
            request.context.options["enforce_https"] = False
            super().on_request(request)

    return _LoopbackBearer(credential, ARM_SCOPE)
