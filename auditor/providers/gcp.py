"""Google Cloud collector: Compute Engine instances, Shielded VM identity, integrity logs.

Field facts (reference/cloud_apis.md §2): a VM is SEV-SNP or TDX when
`confidentialInstanceConfig.confidentialInstanceType` says so, even without the legacy
`enableConfidentialCompute` (peers get this wrong); the legacy flag alone means SEV; a type this
version does not know is UNKNOWN, never "not confidential". Cloud Logging entries are parsed by
Google, not raw hardware reports: evidence with source `provider_log`. The logging client adds a
24-hour window to a filter without one, so the window is always set explicitly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ClassVar

from auditor.model import SOME_VMS, VM, Disk, Gap, Source, Technology
from auditor.providers import kubernetes
from auditor.providers.base import (
    CallFailed,
    CallPool,
    ListingFailed,
    Plan,
    ScopeKey,
    ScopeResult,
    WorkerState,
    beside,
    collected_vm,
    failure_as_value,
    fan_out,
    join,
    make_gap,
    read_pages,
    record_evidence,
    start_calls,
    tune_session,
)
from auditor.providers.pacing import pace_requests_session
from auditor.recording import EvidenceSink, raw_path
from auditor.verify.stage import GCE_EK_KIND

PROVIDER = "gcp"

# Retries and timeouts: google-api-core's own Retry, configured here and nowhere else
# (docs/reliability.md). Retried: 429 RESOURCE_EXHAUSTED, 403 rateLimitExceeded (Compute
# Engine's answer past a rate quota), 500, 502, 503, 504 and dropped connections, with
# exponential backoff from RETRY_INITIAL_S doubling up to RETRY_MAXIMUM_S, until
# RETRY_TIMEOUT_S has passed for the call. Every other error (403 PERMISSION_DENIED, 404, a
# response that does not parse, a read timeout) is not retried: it becomes a gap.
# Compute calls time out after CALL_TIMEOUT_S; Cloud Logging's client uses its own 60 s.
RETRY_INITIAL_S = 1.0
RETRY_MAXIMUM_S = 32.0
RETRY_MULTIPLIER = 2.0
RETRY_TIMEOUT_S = 300.0
CALL_TIMEOUT_S = 60.0
INTEGRITY_LOG = "compute.googleapis.com%2Fshielded_vm_integrity"
_KNOWN_TYPES = {
    "SEV": Technology.SEV,
    "SEV_SNP": Technology.SEV_SNP,
    "TDX": Technology.TDX,
}


def _gap(
    err: Exception,
    call: str,
    project: str,
    region: str | None = None,
    resource: str | None = None,
    sections: Sequence[str] = (),
    affects: str = "vms",
) -> Gap:
    """A google-api-core error as a Gap, with Google's status name (PERMISSION_DENIED...)."""
    code, message = _google_error(err)
    return make_gap(PROVIDER, call, code, message, project, region, resource, sections, affects)


def _google_error(err: Exception) -> tuple[str, str]:
    """Google's status name (PERMISSION_DENIED, RESOURCE_EXHAUSTED...) and message."""
    code = type(err).__name__
    message = str(getattr(err, "message", "") or err)
    grpc = getattr(err, "grpc_status_code", None)
    if grpc is not None and getattr(grpc, "name", None):
        code = str(grpc.name)
    response = getattr(err, "response", None)
    try:
        body = response.json() if response is not None else None
    except Exception:  # not JSON: keep the exception's own words
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("status") or code)
        message = str(body["error"].get("message") or message)
    return code, message


def _status(err: Exception) -> int:
    code = getattr(err, "code", None)
    return int(code) if isinstance(code, int) else 500


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0] if zone.count("-") >= 2 else zone


def _last(url: str | None) -> str:
    return (url or "").rstrip("/").rsplit("/", 1)[-1]


class GcpProvider(WorkerState):
    """Collects Compute Engine evidence per project, concurrently by project.

    Sent to a collection worker, it carries its settings and the planned projects; the worker
    finds Application Default Credentials itself.
    """

    name = PROVIDER
    #: what it imports on first use: imported before a scan starts (auditor.heap)
    sdk_modules: ClassVar[tuple[str, ...]] = (
        "google.cloud.compute_v1",
        "google.cloud.logging",
        "google.api_core.retry",
    )
    #: Set by collect(): bounds calls in flight and runs the per-instance calls in parallel.
    pool: CallPool | None = None
    _RUNTIME = ("_lock", "_credentials", "_instances", "_templates", "_retry")

    def __init__(
        self,
        projects: Sequence[str] = (),
        endpoint_url: str | None = None,
        anonymous: bool = False,
        log_window: timedelta = timedelta(days=30),
        as_of: datetime | None = None,
        retry_initial: float = RETRY_INITIAL_S,
        retry_timeout: float = RETRY_TIMEOUT_S,
        retry_maximum: float = RETRY_MAXIMUM_S,
        call_timeout: float = CALL_TIMEOUT_S,
    ) -> None:
        self.projects = list(projects)
        self.endpoint_url = endpoint_url
        self.anonymous = anonymous
        self.log_window = log_window
        self.as_of = as_of
        self.call_timeout = call_timeout
        self._retry_settings = (retry_initial, max(retry_maximum, retry_initial), retry_timeout)
        self._fresh()

    def _fresh(self) -> None:
        self._lock = threading.Lock()
        self._credentials: Any = None
        self._instances: Any = None
        self._templates: Any = None
        import requests
        from google.api_core import exceptions as gexc
        from google.api_core import retry as gretry

        # google-api-core's own retry: throttling (429) and transient 5xx, exponential backoff.
        initial, maximum, timeout = self._retry_settings
        transient = gretry.if_exception_type(
            gexc.TooManyRequests,
            gexc.ServiceUnavailable,
            gexc.InternalServerError,
            gexc.BadGateway,
            gexc.GatewayTimeout,
            requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
        )
        self._retry = gretry.Retry(
            predicate=lambda err: transient(err) or rate_quota_exceeded(err),
            initial=initial,
            maximum=maximum,
            multiplier=RETRY_MULTIPLIER,
            timeout=timeout,
        )

    # ------------------------------------------------------------- credentials
    def _creds(self) -> Any:
        with self._lock:
            if self._credentials is None:
                if self.anonymous:
                    from google.auth.credentials import AnonymousCredentials

                    self._credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
                else:
                    import google.auth

                    creds, default_project = google.auth.default()
                    self._credentials = creds
                    if not self.projects and default_project:
                        self.projects = [default_project]
            return self._credentials

    def _instances_client(self) -> Any:
        """One compute client for the whole scan (thread-safe), so scopes share connections.

        Its HTTP session keeps as many connections as the call pool allows calls in flight
        (requests keeps 10 by default: with more concurrent per-VM calls, every extra call
        opened a new connection), and skips the per-call proxy lookup in the environment
        when the endpoint is loopback (fakecloud), where no proxy can apply.
        """
        creds = self._creds()
        with self._lock:
            if self._instances is None:
                size = self.pool.concurrency if self.pool is not None else 0
                self._instances = self._new_client("InstancesClient", creds, size)
            return self._instances

    def _new_client(self, name: str, creds: Any, pool_size: int) -> Any:
        """A compute_v1 REST client on this provider's endpoint, its session sized to
        `pool_size` connections (0: requests' default) and paced."""
        from google.api_core.client_options import ClientOptions
        from google.cloud import compute_v1

        options = ClientOptions(api_endpoint=self.endpoint_url) if self.endpoint_url else None
        client = getattr(compute_v1, name)(
            transport="rest", credentials=creds, client_options=options
        )
        session = getattr(client.transport, "_session", None)
        tune_session(session, self.endpoint_url, pool_size)
        self._pace(session)
        return client

    def _templates_client(self) -> Any:
        """The instance-templates client (a GKE node pool's template declares its nodes)."""
        creds = self._creds()
        with self._lock:
            if self._templates is None:
                self._templates = self._new_client("InstanceTemplatesClient", creds, 0)
            return self._templates

    def _logging_client(self, project: str) -> Any:
        options = {"api_endpoint": self.endpoint_url} if self.endpoint_url else None
        client = _reading_logging_client()(
            project=project,
            credentials=self._creds(),
            _use_grpc=False,
            client_options=options,
        )
        self._pace(getattr(client, "_http", None))
        return client

    def _pace(self, session: Any) -> None:
        """Keep this client's calls within each project's quotas (auditor.providers.pacing)."""
        if session is not None and self.pool is not None and self.pool.pacer is not None:
            pace_requests_session(session, self.pool.pacer)

    # -------------------------------------------------------------------- plan
    def plan(self, sink: EvidenceSink) -> Plan:
        plan = Plan()
        try:
            self._creds()
        except Exception as err:  # DefaultCredentialsError and friends
            plan.gaps.append(_gap(err, "google.auth.default", "?", affects="scope"))
            return plan
        if not self.projects:
            plan.gaps.append(
                Gap(
                    provider=PROVIDER,
                    account="?",
                    call="google.auth.default",
                    code="NoProject",
                    message="no --project given and the credentials name no default project",
                    affects="scope",
                )
            )
        plan.scopes.extend(ScopeKey(PROVIDER, p) for p in dict.fromkeys(self.projects))
        return plan

    # ----------------------------------------------------------------- collect
    def collect(self, scope: ScopeKey, sink: EvidenceSink) -> ScopeResult:
        """One project: every instance in every zone, their identities, integrity logs."""
        project = scope.account
        result = ScopeResult(scope=scope)
        client = self._instances_client()

        @failure_as_value
        def identity(where: tuple[str, str]) -> tuple[dict[str, Any], str]:
            return self._identity(client, project, where[0], where[1], sink, result)

        pace = ("gcp", project, None, "compute")  # Compute Engine reads count per project
        # each page's vTPM identities are asked for while the next page is listed
        identities = start_calls(self.pool, identity, pace)

        def shielded(page: list[tuple[str, dict[str, Any]]]) -> None:
            identities.add(
                (zone, str(inst.get("name", inst.get("id", ""))))
                for zone, inst in page
                if inst.get("shieldedInstanceConfig", {}).get("enableVtpm", False)
            )

        try:
            by_zone = self._aggregated(client, project, sink, result, shielded)
        except CallFailed as failed:
            identities.settle()
            failed.gap.affects = "scope"
            result.errors.append(failed.gap)
            result.failed = True
            return result
        # stopped (TERMINATED) instances are kept: their disks and configuration still count
        live = [(zone, inst) for zone, items in sorted(by_zone.items()) for inst in items]
        if not live:
            return result

        # The integrity log (Cloud Logging, its own rate limit) is read beside the identity
        # calls (Compute Engine's): neither waits for the other. Its own ScopeResult, merged
        # after, so the counts are not raced and the gaps keep their order.
        logs_result = ScopeResult(scope=scope)

        integrity_logs = failure_as_value(self._integrity_logs)
        errors_before = len(result.errors)
        logs = beside(self.pool, partial(integrity_logs, project, sink, logs_result))
        names = sorted({t for _, inst in live if (t := _node_template(inst)) is not None})

        @failure_as_value
        def template(name: str) -> tuple[dict[str, Any], str]:
            return self._template(project, name, sink, result)

        templates = dict(zip(names, fan_out(self.pool, template, names, pace), strict=True))
        result.calls += len(names)
        identified = identities.answers()
        result.calls += len(identified)
        logs_gap: Gap | None = None
        entries: dict[str, list[dict[str, Any]]] = {}
        read = join(self.pool, logs)
        result.calls += logs_result.calls
        if isinstance(read, CallFailed):
            logs_gap = read.gap
            result.errors.insert(errors_before, read.gap)  # where it was before it ran beside
        else:
            entries = read
        for zone, inst in live:
            vm = self._vm(
                project, zone, inst, sink, result, entries, logs_gap, identified, templates
            )
            result.vms.append(vm)
        return result

    def _template(
        self, project: str, name: str, sink: EvidenceSink, result: ScopeResult
    ) -> tuple[dict[str, Any], str]:
        """A GKE node pool's instance template: what the pool declares for every node."""
        relpath = raw_path("gcp", project, "instanceTemplates", name)
        call = "compute.instanceTemplates.get"
        try:
            resp = self._templates_client().get(
                project=project,
                instance_template=name,
                retry=self._retry,
                timeout=self.call_timeout,
            )
        except Exception as err:
            sink.save_error(relpath, _status(err), *_code_message(err, project))
            raise CallFailed(_gap(err, call, project, None, name, ("kubernetes",))) from err
        data = _to_dict(resp)
        sink.save_raw(relpath, data)
        sha = record_evidence(
            sink,
            data,
            provider=PROVIDER,
            kind="api_resource",
            call=call,
            account=project,
            region=None,
            resource=name,
            ref=f"{relpath}.json",
        )
        return data, sha

    def _aggregated(
        self,
        client: Any,
        project: str,
        sink: EvidenceSink,
        result: ScopeResult,
        on_page: Callable[[list[tuple[str, dict[str, Any]]]], None],
    ) -> dict[str, list[dict[str, Any]]]:
        """Every instance by zone; each page's instances go to `on_page` as they arrive."""
        from google.cloud import compute_v1

        relpath = raw_path("gcp", project, "aggregatedList")
        by_zone: dict[str, list[dict[str, Any]]] = {}
        unreachable: dict[str, dict[str, Any]] = {}

        def pages() -> Any:
            request = compute_v1.AggregatedListInstancesRequest(project=project, max_results=500)
            pager = client.aggregated_list(
                request=request, retry=self._retry, timeout=self.call_timeout
            )
            return pager.pages

        try:
            for arrived in read_pages(
                pages, lambda page: _page_instances(page, by_zone, unreachable)
            ):
                result.calls += 1
                on_page(arrived)
        except ListingFailed as failed:
            err = failed.error
            result.calls += 1
            sink.save_error(relpath, _status(err), *_code_message(err, project))
            raise CallFailed(_gap(err, "compute.instances.aggregatedList", project)) from err
        items: dict[str, Any] = {f"zones/{z}": {"instances": v} for z, v in by_zone.items()}
        for zone, warning in unreachable.items():
            # a zone the list could not reach: its instances were not seen, not "none there"
            items.setdefault(f"zones/{zone}", {})["warning"] = warning
            gap = make_gap(
                PROVIDER,
                "compute.instances.aggregatedList",
                "UNREACHABLE",
                str(warning.get("message") or f"zone {zone} was unreachable"),
                project,
                region=zone,
                resource=f"the instances of zone {zone} (unreachable)",
                affects=SOME_VMS,
            )
            result.errors.append(gap)
        sink.save_raw(
            relpath,
            {"kind": "compute#instanceAggregatedList", "items": dict(sorted(items.items()))},
        )
        return by_zone

    def _window(self) -> tuple[datetime, datetime]:
        end = self.as_of or datetime.now(UTC)
        return end - self.log_window, end

    def _integrity_logs(
        self, project: str, sink: EvidenceSink, result: ScopeResult
    ) -> dict[str, list[dict[str, Any]]]:
        """Shielded VM integrity entries in the window, by instance id."""
        relpath = raw_path("gcp", project, "logEntries")
        start, end = self._window()
        flt = (
            f'logName="projects/{project}/logs/{INTEGRITY_LOG}" AND '
            f'resource.type="gce_instance" AND '
            f'timestamp>="{_rfc3339(start)}" AND timestamp<="{_rfc3339(end)}"'
        )

        def fetch() -> list[dict[str, Any]]:
            from google.cloud import logging as gcl

            client = self._logging_client(project)
            return [
                e.to_api_repr()
                for e in client.list_entries(
                    resource_names=[f"projects/{project}"],
                    filter_=flt,
                    order_by=gcl.ASCENDING,
                    page_size=1000,
                )
            ]

        try:
            result.calls += 1
            raw_entries = self._retry(fetch)()
        except Exception as err:
            sink.save_error(relpath, _status(err), *_code_message(err, project))
            raise CallFailed(
                _gap(err, "logging.entries.list", project, sections=("attestation",))
            ) from err
        sink.save_raw(relpath, raw_entries)  # a list: the replay layout's logEntries.json
        by_instance: dict[str, list[dict[str, Any]]] = {}
        for entry in raw_entries:
            iid = str(entry.get("resource", {}).get("labels", {}).get("instance_id", ""))
            by_instance.setdefault(iid, []).append(entry)
        return by_instance

    def _identity(
        self,
        client: Any,
        project: str,
        zone: str,
        name: str,
        sink: EvidenceSink,
        result: ScopeResult,
    ) -> tuple[dict[str, Any], str]:
        relpath = raw_path("gcp", project, "shieldedInstanceIdentity", zone, name)
        try:
            resp = client.get_shielded_instance_identity(
                project=project,
                zone=zone,
                instance=name,
                retry=self._retry,
                timeout=self.call_timeout,
            )
        except Exception as err:
            sink.save_error(relpath, _status(err), *_code_message(err, project))
            raise CallFailed(
                _gap(
                    err,
                    "compute.instances.getShieldedInstanceIdentity",
                    project,
                    region_of(zone),
                    name,
                    ("tpm",),
                )
            ) from err
        data = _to_dict(resp)
        sink.save_raw(relpath, data)
        sha = record_evidence(
            sink,
            data,
            provider=PROVIDER,
            kind=GCE_EK_KIND,
            call="compute.instances.getShieldedInstanceIdentity",
            account=project,
            region=region_of(zone),
            resource=name,
            ref=f"{relpath}.json",
        )
        return data, sha

    def _vm(
        self,
        project: str,
        zone: str,
        inst: dict[str, Any],
        sink: EvidenceSink,
        result: ScopeResult,
        logs: dict[str, list[dict[str, Any]]],
        logs_gap: Gap | None,
        identities: dict[tuple[str, str], tuple[dict[str, Any], str] | CallFailed],
        templates: dict[str, tuple[dict[str, Any], str] | CallFailed] | None = None,
    ) -> VM:
        region = region_of(zone)
        iid = str(inst.get("id", ""))
        name = str(inst.get("name", iid))
        inst_sha = record_evidence(
            sink,
            inst,
            provider=PROVIDER,
            kind="api_resource",
            call="compute.instances.aggregatedList",
            account=project,
            region=region,
            resource=name,
            ref=f"{raw_path('gcp', project, 'aggregatedList')}.json",
        )
        technology, cc = technology_of(inst)
        # a proto map: its order is the process's hash order, so a run's bytes would depend on
        # which worker read the VM
        labels = dict(sorted(inst.get("labels", {}).items()))
        shielded = inst.get("shieldedInstanceConfig", {})
        scheduling = inst.get("scheduling", {})
        metadata = {i.get("key"): i.get("value") for i in inst.get("metadata", {}).get("items", [])}
        migrate = scheduling.get("onHostMaintenance", "MIGRATE") == "MIGRATE"
        doc: dict[str, Any] = {
            "provider": PROVIDER,
            "account": project,
            "region": region,
            "zone": zone,
            "id": iid,
            "name": name,
            "instance_type": _last(inst.get("machineType")),
            "state": inst.get("status"),
            "tags": labels,
            "cc": cc,
            "boot": {"secure_boot": bool(shielded.get("enableSecureBoot", False))},
            "tpm": {
                "present": bool(shielded.get("enableVtpm", False)),
                "implemented_by": "provider",
                "integrity_monitoring": bool(shielded.get("enableIntegrityMonitoring", False)),
            },
            "migration": {"live_migration": migrate, "provider_controlled": migrate},
            # the GCE metadata server cannot be turned off; guest agents read SSH keys from it
            "metadata_service": {"enabled": True},
            "console": {"serial_port_enabled": _truthy(metadata.get("serial-port-enable"))},
            "gcp": {
                "cpu_platform": inst.get("cpuPlatform"),
                "min_cpu_platform": inst.get("minCpuPlatform"),
                "on_host_maintenance": scheduling.get("onHostMaintenance"),
                "guest_attributes_enabled": _truthy(metadata.get("enable-guest-attributes")),
                "os_login_enabled": _truthy(metadata.get("enable-oslogin")),
                "service_accounts": [
                    {"email": s.get("email"), "scopes": list(s.get("scopes", []))}
                    for s in inst.get("serviceAccounts", [])
                ],
            },
        }
        evidence: dict[str, list[str]] = {k: [inst_sha] for k in doc}
        cluster = kubernetes.gke(labels)
        if cluster is not None:
            doc["kubernetes"] = cluster
            evidence["kubernetes"] = [inst_sha]
            name_of_template = _node_template(inst)
            found = (templates or {}).get(name_of_template or "")
            if name_of_template is not None:
                cluster["instance_template"] = name_of_template
            if isinstance(found, CallFailed):
                result.errors.append(found.gap)
            elif found is not None:
                declared, _ = technology_of(found[0].get("properties") or {})
                cluster["declared_technology"] = declared.value
                evidence["kubernetes"].append(found[1])
        if technology is not Technology.UNKNOWN:
            doc["technology"] = technology.value
            evidence["technology"] = [inst_sha]
        image = _image(inst, project)
        if image is not None:
            doc["image"] = image
            evidence["image"] = [inst_sha]
        disks, disk_docs = _disks(inst)
        doc["disks"] = disk_docs
        evidence["disks"] = [inst_sha]

        gaps: list[Gap] = []
        if doc["tpm"]["present"]:
            got = identities[(zone, name)]
            if isinstance(got, CallFailed):
                gaps.append(got.gap)
                result.errors.append(got.gap)
            else:
                evidence["tpm"] = [inst_sha, got[1]]
                doc["tpm"]["ek"] = {"present": True, "source": "control_plane", "certificate": True}

        if logs_gap is not None:
            gaps.append(logs_gap)
        else:
            entries = logs.get(iid, [])
            shas = [
                record_evidence(
                    sink,
                    e,
                    provider=PROVIDER,
                    kind="log_entry",
                    source=Source.PROVIDER_LOG,
                    call="logging.entries.list",
                    account=project,
                    region=region,
                    resource=name,
                    ref=f"{raw_path('gcp', project, 'logEntries')}.json",
                )
                for e in entries
            ]
            doc["attestation"] = attestation_from_logs(entries)
            evidence["attestation"] = shas
        return collected_vm(doc, technology=technology, disks=disks, evidence=evidence, gaps=gaps)


#: The reasons Google gives a 403 that is a rate quota, not a permission (Compute Engine
#: answers a project past its per-minute quota with 403 `rateLimitExceeded`).
RATE_QUOTA_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"}
)


def rate_quota_exceeded(err: BaseException) -> bool:
    """A 403 that says "wait": retried like a 429, never reported as a missing permission."""
    from google.api_core import exceptions as gexc

    if not isinstance(err, gexc.Forbidden):
        return False
    reasons = {e.get("reason") for e in getattr(err, "errors", None) or [] if isinstance(e, dict)}
    reasons.add(getattr(err, "reason", None))
    return bool(reasons & RATE_QUOTA_REASONS)


def _reading_logging_client() -> Any:
    """A logging Client that only reads: no monitored-resource detection.

    google-cloud-logging builds a Logger per entry it lists, and a Logger without a resource
    probes the environment (the GCE metadata server) to find one. An auditor must not make
    calls nobody asked for, so every Logger gets a fixed resource instead.
    """
    from google.cloud import logging as gcl
    from google.cloud.logging_v2.resource import Resource

    class ReadingClient(gcl.Client):
        def logger(self, name: str, *, labels: Any = None, resource: Any = None) -> Any:
            fixed = resource or Resource(type="global", labels={})
            return super().logger(name, labels=labels, resource=fixed)  # type: ignore[no-untyped-call]

    return ReadingClient


def technology_of(inst: dict[str, Any]) -> tuple[Technology, dict[str, Any]]:
    """From confidentialInstanceConfig: the type wins; the legacy flag alone means SEV."""
    conf = inst.get("confidentialInstanceConfig") or {}
    ctype = conf.get("confidentialInstanceType")
    legacy = conf.get("enableConfidentialCompute")
    cc: dict[str, Any] = {"claimed_by": "control_plane", "raw_flag": ctype, "legacy_flag": legacy}
    if ctype and ctype != "CONFIDENTIAL_INSTANCE_TYPE_UNSPECIFIED":
        tech = _KNOWN_TYPES.get(str(ctype), Technology.UNKNOWN)
    elif legacy:
        tech = Technology.SEV
    else:
        tech = Technology.NONE
    if tech is not Technology.UNKNOWN:
        cc["technology"] = tech.value
    return tech, cc


def _image(inst: dict[str, Any], project: str) -> dict[str, Any] | None:
    """Who published the boot image, from the boot disk's licence (e.g. ubuntu-os-cloud)."""
    for disk in inst.get("disks", []):
        if disk.get("boot") and disk.get("licenses"):
            lic = str(disk["licenses"][0])
            parts = lic.split("/")
            owner = parts[parts.index("projects") + 1] if "projects" in parts else None
            if owner is None:
                return None
            return {"id": lic, "owner_id": owner, "owned_by_account": owner == project}
    return None


def _disks(inst: dict[str, Any]) -> tuple[list[Disk], list[dict[str, Any]]]:
    """GCE always encrypts at rest; who holds the key: Google, Cloud KMS (CMEK), or CSEK."""
    disks: list[Disk] = []
    docs: list[dict[str, Any]] = []
    for d in inst.get("disks", []):
        key = d.get("diskEncryptionKey") or {}
        if key.get("kmsKeyName"):
            custody, kms = "customer_kms", key["kmsKeyName"]
        elif key.get("sha256") or key.get("rawKey") or key.get("rsaEncryptedKey"):
            custody, kms = "customer_supplied", None
        else:
            custody, kms = "provider_key", None
        disk_id = _last(d.get("source")) or str(d.get("deviceName", "?"))
        entry: dict[str, Any] = {
            "id": disk_id,
            "device": d.get("deviceName"),
            "boot": bool(d.get("boot", False)),
            "encrypted": True,
            "custody": custody,
        }
        if kms:
            entry["kms_key"] = kms
        docs.append(entry)
        size = d.get("diskSizeGb")
        disks.append(
            Disk(
                id=disk_id,
                device=d.get("deviceName"),
                boot=entry["boot"],
                size_gb=int(size) if size else None,
                encrypted=True,
                custody=custody,
                kms_key=kms,
            )
        )
    return disks, docs


def attestation_from_logs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What Google's own integrity logs say (provider-parsed, not raw hardware evidence)."""
    out: dict[str, Any] = {"provider_verdict": "none", "source": "provider_log"}
    launch = [
        e["jsonPayload"]["sevLaunchAttestationReportEvent"]
        for e in entries
        if isinstance(e.get("jsonPayload"), dict)
        and "sevLaunchAttestationReportEvent" in e["jsonPayload"]
    ]
    if launch:
        last = launch[-1]
        policy = last.get("sevPolicy", {})
        passed = bool(last.get("integrityEvaluationPassed", False))
        out["provider_verdict"] = "passed" if passed else "failed"
        out["launch"] = {
            "integrity_passed": passed,
            "debug_enabled": bool(policy.get("debugEnabled", False)),
            "send_allowed": bool(policy.get("sendAllowed", False)),
            "es_required": bool(policy.get("esRequired", False)),
            "key_sharing_allowed": bool(policy.get("keySharingAllowed", False)),
        }
    boot: dict[str, Any] = {}
    for e in entries:
        payload_any = e.get("jsonPayload")
        payload: dict[str, Any] = payload_any if isinstance(payload_any, dict) else {}
        for kind, key in (("earlyBootReportEvent", "early"), ("lateBootReportEvent", "late")):
            if kind in payload:
                boot[f"{key}_passed"] = bool(payload[kind].get("policyEvaluationPassed", False))
    if boot:
        out["boot"] = boot
    return out


def _node_template(inst: Mapping[str, Any]) -> str | None:
    """The instance template a managed node was made from (GCE's `instance-template` metadata),
    for GKE nodes only."""
    if kubernetes.gke(dict(inst.get("labels", {}))) is None:
        return None
    items = (inst.get("metadata") or {}).get("items") or []
    value = next((i.get("value") for i in items if i.get("key") == "instance-template"), None)
    return _last(str(value)) if value else None


def _to_dict(message: Any) -> dict[str, Any]:
    """A compute_v1 message back to its wire JSON (camelCase, unset fields left out): what
    `to_json` then `json.loads` gave, without the JSON text in between (less than half the
    CPU of an instance's conversion)."""
    from google.protobuf import json_format  # type: ignore[import-untyped]

    data: dict[str, Any] = json_format.MessageToDict(
        type(message).pb(message), preserving_proto_field_name=False
    )
    return data


def _truthy(value: Any) -> bool:
    """GCE metadata booleans are strings: TRUE/true/1."""
    return str(value or "").strip().lower() in ("true", "1", "yes")


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _code_message(err: Exception, project: str) -> tuple[str, str]:
    gap = _gap(err, "", project)
    return gap.code, gap.message


def _page_instances(
    page: Any, by_zone: dict[str, list[dict[str, Any]]], unreachable: dict[str, dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """One aggregatedList page's instances as (zone, instance), added to `by_zone`; the zones
    it could not reach into `unreachable`."""
    arrived: list[tuple[str, dict[str, Any]]] = []
    for scope_key, scoped in page.items.items():
        zone = _last(scope_key)
        for inst in scoped.instances:
            arrived.append((zone, _to_dict(inst)))
            by_zone.setdefault(zone, []).append(arrived[-1][1])
        warning = _to_dict(scoped.warning) if "warning" in scoped else {}
        if warning.get("code") == "UNREACHABLE":
            unreachable[zone] = warning
    for scope_key in page.unreachables:
        unreachable.setdefault(_last(scope_key), {"code": "UNREACHABLE"})
    return arrived
