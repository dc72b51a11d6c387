"""AWS collector (boto3): EC2 instances, SEV-SNP and NitroTPM state, EBS key custody.

Field facts (reference/cloud_apis.md §1): `CpuOptions.AmdSevSnp` is `enabled`/`disabled` and
*absent means disabled*; instance `TpmSupport` is `"v2.0"` when NitroTPM is attached; AWS
publishes no EK certificate, so the EK public key is the control plane's word. Every response
is kept as Evidence with source `control_plane` and written to raw/ in the replay layout.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from auditor._version import __version__
from auditor.model import VM, Disk, Gap, Technology
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
    join,
    make_gap,
    read_pages,
    record_evidence,
    start_calls,
)
from auditor.providers.pacing import pace_boto3_client
from auditor.recording import EvidenceSink, jsonable, raw_path

PROVIDER = "aws"
GLOBAL_REGION = "us-east-1"

# Retries and timeouts: botocore's own, configured here and nowhere else (docs/reliability.md).
# "standard" mode retries throttling (RequestLimitExceeded, Throttling), transient 5xx and
# connection/read timeouts with jittered exponential backoff (1 s base for throttling, capped
# at 20 s) and a client-side retry quota. "adaptive" mode adds a client-side rate limiter, but
# it is per client and every scope has its own client, so it would not coordinate; standard
# is the deliberate choice. 8 attempts outlast a burst of throttling without stalling a scan.
RETRY_MODE = "standard"
MAX_ATTEMPTS = 8
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
_SKIP_STATES = {"terminated", "shutting-down"}
_EK_KEY_TYPE = "rsa-2048"
_EK_FORMAT = "der"


def _live(instance: dict[str, Any]) -> bool:
    """An instance whose configuration still counts (not terminated or terminating)."""
    return instance.get("State", {}).get("Name") not in _SKIP_STATES


@dataclass(frozen=True)
class AwsTarget:
    """One set of credentials (an account): a named profile, explicit keys, or the default chain."""

    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)  # never in a message
    session_token: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        if self.profile:
            return f"profile:{self.profile}"
        if self.access_key_id:
            return f"key:{self.access_key_id[:4]}…"
        return "default credentials"


_LOADER: list[Any] = []
_LOADER_LOCK = threading.Lock()


def _shared_loader() -> Any:
    """botocore's data loader, made once per process and shared by every session.

    Its caches hold parsed service models (read-only once loaded), so sharing is safe.
    """
    with _LOADER_LOCK:
        if not _LOADER:
            from botocore.loaders import create_loader

            _LOADER.append(create_loader())
        return _LOADER[0]


def parse_timestamp(value: Any) -> Any:
    """botocore's timestamp parser, with EC2's ISO 8601 timestamps read by the standard library.

    botocore hands every timestamp to dateutil's general parser: a fifth of an AWS scope's CPU
    (LaunchTime, AttachTime, CreateTime... of every instance and volume). An ISO 8601 text
    with an offset gives the same instant and offset from `datetime.fromisoformat`, so the
    same `isoformat()` in the recorded response; anything else (epoch seconds, RFC 822, no
    offset) is parsed by botocore as before.
    """
    if isinstance(value, str) and "T" in value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    from botocore.utils import parse_timestamp as botocore_parse

    return botocore_parse(value)


def _resolved(session: Any) -> AwsTarget:
    """The credentials a boto3 session resolved, as a target a worker can open again."""
    credentials = session.get_credentials()
    if credentials is None:
        return AwsTarget()  # none found: the worker's default chain finds none either
    frozen = credentials.get_frozen_credentials()
    return AwsTarget(
        access_key_id=frozen.access_key,
        secret_access_key=frozen.secret_key,
        session_token=frozen.token,
    )


def _gap_from_error(
    err: Exception,
    call: str,
    account: str | None,
    region: str | None,
    resource: str | None = None,
    sections: Sequence[str] = (),
    affects: str = "vms",
) -> Gap:
    """Translate any boto3/botocore failure into a Gap with the cloud's own code and words."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        code = str(error.get("Code") or "ClientError")
        message = str(error.get("Message") or err)
    elif isinstance(err, BotoCoreError):
        code = type(err).__name__
        message = str(err)
    else:
        code = type(err).__name__
        message = str(err) or repr(err)
    return make_gap(PROVIDER, call, code, message, account, region, resource, sections, affects)


def _error_status(err: Exception) -> int:
    from botocore.exceptions import ClientError

    if isinstance(err, ClientError):
        return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400)
    return 0


class AwsProvider(WorkerState):
    """Collects EC2 evidence for each target account and region, concurrently by region.

    Sent to a collection worker, it carries each planned account's credentials as the scan
    resolved them (access key, secret, session token: `_worker_targets`), so a worker neither
    resolves a profile again (no second role assumption, no MFA prompt without a terminal) nor
    calls STS; temporary credentials are not refreshed in the worker.
    """

    name = PROVIDER
    #: what it imports on first use: imported before a scan starts (auditor.heap)
    sdk_modules: ClassVar[tuple[str, ...]] = ("boto3", "botocore.session", "botocore.config")
    #: Set by collect(): bounds calls in flight and runs the per-instance calls in parallel.
    pool: CallPool | None = None
    _RUNTIME = ("_sessions", "_lock")

    def __init__(
        self,
        targets: Sequence[AwsTarget] = (AwsTarget(),),
        regions: Sequence[str] | None = None,
        endpoint_url: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        max_pool_connections: int = 16,
        retry_mode: str = RETRY_MODE,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        self.targets = list(targets) or [AwsTarget()]
        self.regions = list(regions) if regions else None
        self.endpoint_url = endpoint_url
        self._worker_targets: dict[str, AwsTarget] = {}
        self._fresh()
        from botocore.config import Config

        # botocore's own retries (see RETRY_MODE above); no retry loop of ours on top.
        self._config = Config(
            retries={"mode": retry_mode, "max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            user_agent_extra=f"cc-auditor/{__version__}",
        )

    def _fresh(self) -> None:
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_worker_targets"] = {
            **self._worker_targets,
            **{account: _resolved(session) for account, session in self._sessions.items()},
        }
        return state

    def _account_session(self, account: str) -> Any:
        """The planned session of an account (made from its resolved credentials in a worker)."""
        with self._lock:
            session = self._sessions.get(account)
        if session is None:
            session = self._session(self._worker_targets[account])
            with self._lock:
                session = self._sessions.setdefault(account, session)
        return session

    # ------------------------------------------------------------------ clients
    def _session(self, target: AwsTarget) -> Any:
        import boto3
        import botocore.session

        core = botocore.session.get_session()
        # one loader for every account's session: each would otherwise parse the EC2 service
        # model and endpoint rules again (about 40 ms of CPU per account, the largest share
        # of client set-up in a many-account scan)
        core.register_component("data_loader", _shared_loader())
        parsers = core.get_component("response_parser_factory")
        parsers.set_parser_defaults(timestamp_parser=parse_timestamp)
        session = boto3.session.Session(
            botocore_session=core,
            profile_name=target.profile,
            aws_access_key_id=target.access_key_id,
            aws_secret_access_key=target.secret_access_key,
            aws_session_token=target.session_token,
        )
        paths = core.get_component("data_loader").search_paths
        paths[:] = list(dict.fromkeys(paths))  # boto3 appends its data path on every session
        return session

    def _client(self, session: Any, service: str, region: str) -> Any:
        with self._lock:  # boto3 sessions are not thread-safe; clients are
            return session.client(
                service, region_name=region, endpoint_url=self.endpoint_url, config=self._config
            )

    # --------------------------------------------------------------------- plan
    def plan(self, sink: EvidenceSink) -> Plan:
        """Resolve each target's account (STS) and regions (configured or DescribeRegions)."""
        plan = Plan()
        for target in self.targets:
            try:
                session = self._session(target)
                home = session.region_name or GLOBAL_REGION  # reads the profile: may fail
            except Exception as err:  # ProfileNotFound and friends
                plan.gaps.append(
                    _gap_from_error(err, "session", target.label, None, affects="scope")
                )
                continue
            try:
                ident = self._client(session, "sts", home).get_caller_identity()
                plan.calls += 1
            except Exception as err:
                plan.gaps.append(
                    _gap_from_error(
                        err, "sts:GetCallerIdentity", target.label, None, affects="scope"
                    )
                )
                continue
            account = str(ident["Account"])
            sink.save_raw(raw_path("aws", account, "GetCallerIdentity"), _strip_meta(ident))
            if account in self._sessions:
                continue  # two targets for one account: collect it once
            self._sessions[account] = session
            regions = self.regions
            if regions is None:
                try:
                    ec2 = self._client(session, "ec2", home)
                    resp = ec2.describe_regions()
                    plan.calls += 1
                except Exception as err:
                    sink.save_error(
                        raw_path("aws", account, "DescribeRegions"),
                        _error_status(err),
                        *_code_message(err),
                    )
                    plan.gaps.append(
                        _gap_from_error(err, "ec2:DescribeRegions", account, None, affects="scope")
                    )
                    continue
                sink.save_raw(raw_path("aws", account, "DescribeRegions"), _strip_meta(resp))
                regions = sorted(r["RegionName"] for r in resp.get("Regions", []))
            plan.scopes.extend(ScopeKey(PROVIDER, account, r) for r in regions)
        return plan

    # ------------------------------------------------------------------ collect
    def collect(self, scope: ScopeKey, sink: EvidenceSink) -> ScopeResult:
        """Read one account x region: instances, their types, images, volumes and EK keys."""
        assert scope.region is not None
        result = ScopeResult(scope=scope)
        account, region = scope.account, scope.region
        ec2 = self._client(self._account_session(account), "ec2", region)
        if self.pool is not None and self.pool.pacer is not None:
            pace_boto3_client(ec2, self.pool.pacer, account, region)
        call = _Caller(ec2, sink, account, region, result)
        pace = ("aws", account, region, "GetInstanceTpmEkPub")
        # each page's EK calls start while the next page is listed: the Region's request
        # bucket is spent from the first page on
        eks = start_calls(self.pool, failure_as_value(call.ek_public_key), pace)

        def with_tpm(reservations: list[dict[str, Any]]) -> None:
            eks.add(
                str(i["InstanceId"])
                for res in reservations
                for i in res.get("Instances", [])
                if _live(i) and i.get("TpmSupport") == "v2.0"
            )

        try:
            reservations = call.paginated(
                "DescribeInstances", "Reservations", sections=(), on_page=with_tpm
            )
        except CallFailed as failed:
            eks.settle()
            failed.gap.affects = "scope"
            result.errors.append(failed.gap)
            result.failed = True
            return result
        instances = [
            (inst, res) for res in reservations for inst in res.get("Instances", []) if inst
        ]
        live = [(i, r) for i, r in instances if _live(i)]
        result.skipped = len(instances) - len(live)
        if not live:
            return result

        types = sorted({i["InstanceType"] for i, _ in live if i.get("InstanceType")})
        images = sorted({i["ImageId"] for i, _ in live if i.get("ImageId")})

        def lookups() -> tuple[Any, Any, Any]:
            type_info = call.lookup(
                "DescribeInstanceTypes", "InstanceTypes", "InstanceType", types, ("platform",)
            )
            image_info = call.lookup("DescribeImages", "Images", "ImageId", images, ("image",))
            return type_info, image_info, call.all_or_none("DescribeVolumes", "Volumes", ("disks",))

        # types, images and volumes beside the per-VM EK calls: the Region's request bucket
        # is then never idle while the listings page
        side = beside(self.pool, lookups)
        keys = eks.answers()
        type_info, image_info, volumes = join(self.pool, side)
        result.calls += len(keys)

        for inst, res in live:
            vm = self._vm(inst, res, account, region, call, type_info, image_info, volumes, keys)
            result.vms.append(vm)
        return result

    def _vm(
        self,
        inst: dict[str, Any],
        reservation: dict[str, Any],
        account: str,
        region: str,
        call: _Caller,
        type_info: _Lookup,
        image_info: _Lookup,
        volumes: list[dict[str, Any]] | None,
        eks: dict[str, tuple[dict[str, Any], str] | CallFailed],
    ) -> VM:
        iid = str(inst["InstanceId"])
        tags = {t.get("Key", ""): t.get("Value", "") for t in inst.get("Tags", [])}
        evidence: dict[str, list[str]] = {}
        inst_sha = call.evidence(
            "ec2:DescribeInstances", inst, "DescribeInstances", resource=iid, kind="api_resource"
        )
        technology, cc = _technology(inst)
        doc: dict[str, Any] = {
            "provider": PROVIDER,
            "account": account,
            "region": region,
            "id": iid,
            "instance_type": inst.get("InstanceType"),
            "state": inst.get("State", {}).get("Name"),
            "tags": tags,
            "cc": cc,
            "aws": _aws_section(inst, reservation),
            # AWS runs no attestation service for SEV-SNP: nothing provider-side vouches
            "attestation": {"provider_verdict": "none", "source": "none"},
        }
        for section in ("provider", "account", "region", "id", "instance_type", "state", "tags"):
            evidence[section] = [inst_sha]
        for section in ("cc", "aws", "attestation"):
            evidence[section] = [inst_sha]
        if technology is not Technology.UNKNOWN:
            doc["technology"] = technology.value
            evidence["technology"] = [inst_sha]
        if technology is Technology.SEV_SNP:
            # AWS documents no live migration for SEV-SNP (maintenance is stop/start)
            doc["migration"] = {"live_migration": False, "provider_controlled": False}
            evidence["migration"] = [inst_sha]
        if tags.get("Name"):
            doc["name"] = tags["Name"]
        cluster = kubernetes.eks(tags)
        if cluster is not None:
            doc["kubernetes"] = cluster
            evidence["kubernetes"] = [inst_sha]
        zone = inst.get("Placement", {}).get("AvailabilityZone")
        if zone:
            doc["zone"] = zone
        boot = {
            k: v
            for k, v in (
                ("mode", inst.get("BootMode")),
                ("current_mode", inst.get("CurrentInstanceBootMode")),
            )
            if v
        }
        if boot:
            doc["boot"] = boot
            evidence["boot"] = [inst_sha]
        meta = inst.get("MetadataOptions")
        if meta:
            doc["metadata_service"] = {
                "enabled": meta.get("HttpEndpoint", "enabled") == "enabled",
                "tokens_required": meta.get("HttpTokens") == "required",
                "hop_limit": meta.get("HttpPutResponseHopLimit"),
            }
            evidence["metadata_service"] = [inst_sha]

        gaps = list(call.scope_gaps)
        # instance type: what the hardware offers
        itype = inst.get("InstanceType")
        if type_info.ok and itype in type_info.items:
            info = type_info.items[itype]
            features = info.get("ProcessorInfo", {}).get("SupportedFeatures", [])
            doc["platform"] = {
                "snp_supported": "amd-sev-snp" in features,
                "tdx_supported": False,
                "tpm_supported": info.get("NitroTpmSupport") == "supported",
                "boot_modes": list(info.get("SupportedBootModes", [])),
                "hypervisor": info.get("Hypervisor"),
            }
            evidence["platform"] = [type_info.shas[itype]]
        elif type_info.ok:
            gaps.append(
                _missing_gap(
                    account,
                    region,
                    "ec2:DescribeInstanceTypes",
                    itype,
                    "platform",
                    type_info.missing.get(itype or ""),
                )
            )

        # TPM: attached per the instance; EK from the control plane
        tpm: dict[str, Any] = {"present": inst.get("TpmSupport") == "v2.0"}
        evidence["tpm"] = [inst_sha]
        if tpm["present"]:
            tpm["version"] = "2.0"
            tpm["implemented_by"] = "provider"
            got = eks[iid]
            if isinstance(got, CallFailed):
                gaps.append(got.gap)
            else:
                tpm["ek"], ek_sha = got
                evidence["tpm"].append(ek_sha)
        doc["tpm"] = tpm

        # image: who published what boots
        image_id = inst.get("ImageId")
        if image_info.ok and image_id in image_info.items:
            img = image_info.items[image_id]
            doc["image"] = {
                "id": image_id,
                "name": img.get("Name"),
                "owner_id": img.get("OwnerId"),
                "owner_alias": img.get("ImageOwnerAlias"),
                "owned_by_account": img.get("OwnerId") == account,
                "boot_mode": img.get("BootMode"),
                "tpm_support": img.get("TpmSupport"),
            }
            evidence["image"] = [image_info.shas[image_id]]
        elif image_info.ok and image_id:
            why = image_info.missing.get(image_id)
            gaps.append(_missing_gap(account, region, "ec2:DescribeImages", image_id, "image", why))

        # disks: encryption and who holds the key
        disks: list[Disk] = []
        if volumes is not None:
            disks, disk_docs, disk_shas, disk_gaps = _disks(inst, volumes, call, account, region)
            doc["disks"] = disk_docs
            evidence["disks"] = disk_shas
            gaps.extend(disk_gaps)

        return collected_vm(doc, technology=technology, disks=disks, evidence=evidence, gaps=gaps)


def _strip_meta(resp: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def _code_message(err: Exception) -> tuple[str, str]:
    gap = _gap_from_error(err, "", None, None)
    return gap.code, gap.message


def _missing_gap(
    account: str,
    region: str,
    call: str,
    resource: str | None,
    section: str,
    why: str | None = None,
) -> Gap:
    """A resource a VM refers to that the describe call did not return (`why`: EC2's error)."""
    return Gap(
        provider=PROVIDER,
        account=account,
        region=region,
        call=call,
        code="NotFound" if why else "NotReturned",
        message=f"{resource} was not found ({why}): deleted, or not shared with this account"
        if why
        else f"{resource} was not in the response (deleted, not shared, or not visible)",
        resource=resource,
        sections=[section],
    )


def _not_found_ids(failed: CallFailed, asked: list[str]) -> list[str]:
    """The ids a not-found error names (EC2 lists them in its message), if it is one."""
    if failed.gap.code not in _NOT_FOUND_CODES:
        return []
    return [i for i in asked if i in failed.gap.message]


def _technology(inst: dict[str, Any]) -> tuple[Technology, dict[str, Any]]:
    """SEV-SNP from CpuOptions.AmdSevSnp: `enabled`; absent or `disabled` means off."""
    cpu = inst.get("CpuOptions")
    if cpu is None:
        return Technology.UNKNOWN, {"claimed_by": "control_plane", "raw_flag": None}
    flag = cpu.get("AmdSevSnp")
    if flag == "enabled":
        tech = Technology.SEV_SNP
    elif flag in (None, "disabled"):
        tech = Technology.NONE
    else:  # a value this version does not know: never read it as "off"
        tech = Technology.UNKNOWN
    cc: dict[str, Any] = {"claimed_by": "control_plane", "raw_flag": flag}
    if tech is not Technology.UNKNOWN:
        cc["technology"] = tech.value
    return tech, cc


def _aws_section(inst: dict[str, Any], reservation: dict[str, Any]) -> dict[str, Any]:
    placement = inst.get("Placement", {})
    return {
        "cpu_options": jsonable(inst.get("CpuOptions", {})),
        "tenancy": placement.get("Tenancy"),
        "host_id": placement.get("HostId"),
        "enclave": bool(inst.get("EnclaveOptions", {}).get("Enabled", False)),
        "platform_details": inst.get("PlatformDetails"),
        "root_device": inst.get("RootDeviceName"),
        "owner_id": reservation.get("OwnerId"),
    }


def _disks(
    inst: dict[str, Any],
    volumes: list[dict[str, Any]],
    call: _Caller,
    account: str,
    region: str,
) -> tuple[list[Disk], list[dict[str, Any]], list[str], list[Gap]]:
    iid = inst["InstanceId"]
    root = inst.get("RootDeviceName")
    by_id = {v.get("VolumeId"): v for v in volumes}
    attached: dict[str, str | None] = {}
    for v in volumes:
        for att in v.get("Attachments", []):
            if att.get("InstanceId") == iid:
                attached[v["VolumeId"]] = att.get("Device")
    for bdm in inst.get("BlockDeviceMappings", []):
        vid = bdm.get("Ebs", {}).get("VolumeId")
        if vid and vid not in attached:
            attached[vid] = bdm.get("DeviceName")
    disks: list[Disk] = []
    docs: list[dict[str, Any]] = []
    shas: list[str] = []
    gaps: list[Gap] = []
    for vid, device in sorted(attached.items()):
        vol = by_id.get(vid)
        entry: dict[str, Any] = {"id": vid, "device": device, "boot": device == root}
        if vol is None:
            gaps.append(_missing_gap(account, region, "ec2:DescribeVolumes", vid, "disks"))
            disks.append(Disk(id=vid, device=device, boot=entry["boot"]))
            entry["custody"] = "unknown"
            docs.append(entry)  # no `encrypted`: rules reading it are UNDETERMINED
            continue
        shas.append(
            call.evidence("ec2:DescribeVolumes", vol, "DescribeVolumes", vid, "api_resource")
        )
        encrypted = bool(vol.get("Encrypted", False))
        kms = vol.get("KmsKeyId")
        custody = "none" if not encrypted else ("provider_kms" if kms else "provider_key")
        entry.update({"encrypted": encrypted, "custody": custody})
        if kms:
            entry["kms_key"] = kms
        docs.append(entry)
        disks.append(
            Disk(
                id=vid,
                device=device,
                boot=entry["boot"],
                size_gb=vol.get("Size"),
                encrypted=encrypted,
                custody=custody,
                kms_key=kms,
            )
        )
    return disks, docs, shas, gaps


@dataclass
class _Lookup:
    ok: bool
    items: dict[str, dict[str, Any]]
    shas: dict[str, str]
    #: ids EC2 said do not exist (dropped and the call retried without them): id -> why
    missing: dict[str, str] = field(default_factory=dict)


#: Error codes of batched describe calls that name ids which do not exist (or are not shared):
#: EC2 fails the whole call, so those ids are dropped and the call is made again without them.
_NOT_FOUND_CODES = frozenset(
    {
        "InvalidAMIID.NotFound",
        "InvalidAMIID.Unavailable",
        "InvalidInstanceType",
        "InvalidVolume.NotFound",
        "InvalidInstanceID.NotFound",
    }
)


class _Caller:
    """Makes one scope's EC2 calls, records raw responses and turns failures into Gaps."""

    def __init__(
        self, ec2: Any, sink: EvidenceSink, account: str, region: str, result: ScopeResult
    ) -> None:
        self.ec2 = ec2
        self.sink = sink
        self.account = account
        self.region = region
        self.result = result
        self.scope_gaps: list[Gap] = []

    def _path(self, *parts: str) -> str:
        return raw_path("aws", self.account, self.region, *parts)

    def _fail(
        self,
        err: Exception,
        op: str,
        relpath: str,
        sections: Sequence[str],
        res: str | None = None,
        save_error: bool = True,
    ) -> CallFailed:
        code, message = _code_message(err)
        if save_error:
            self.sink.save_error(relpath, _error_status(err), code, message)
        gap = _gap_from_error(err, f"ec2:{op}", self.account, self.region, res, sections)
        return CallFailed(gap, _error_status(err))

    def paginated(
        self,
        op: str,
        key: str,
        sections: Sequence[str],
        save_error: bool = True,
        on_page: Callable[[list[dict[str, Any]]], None] | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """All pages of a list call, merged into one response as the replay layout holds it;
        each page's items go to `on_page` as they arrive, if given."""
        items: list[dict[str, Any]] = []
        paginator = self.ec2.get_paginator(_snake(op))  # a name botocore knows: never fails
        try:
            for arrived in read_pages(
                lambda: paginator.paginate(**(params or {})), lambda page: list(page.get(key, []))
            ):
                self.result.calls += 1
                items.extend(arrived)
                if on_page is not None:
                    on_page(arrived)
        except ListingFailed as failed:
            self.result.calls += 1
            err = failed.error
            raise self._fail(err, op, self._path(op), sections, save_error=save_error) from err
        self.sink.save_raw(self._path(op), {key: items})
        return items

    def all_or_none(
        self, op: str, key: str, sections: Sequence[str]
    ) -> list[dict[str, Any]] | None:
        try:
            return self.paginated(op, key, sections)
        except CallFailed as failed:
            self.scope_gaps.append(failed.gap)
            self.result.errors.append(failed.gap)
            return None

    def lookup(
        self, op: str, key: str, id_field: str, ids: Iterable[str], sections: Sequence[str]
    ) -> _Lookup:
        """Describe the given ids; a failure leaves the sections absent and is a Gap."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return _Lookup(True, {}, {})
        param = f"{id_field}s"
        missing: dict[str, str] = {}
        while True:
            asked = [w for w in wanted if w not in missing]
            if not asked:
                return _Lookup(True, {}, {}, missing)
            try:
                items = self.paginated(op, key, sections, save_error=False, params={param: asked})
                break
            except CallFailed as failed:
                gone = _not_found_ids(failed, asked)
                if not gone:  # another failure: the gap stands, and it is recorded
                    code, message = failed.gap.code, failed.gap.message
                    self.sink.save_error(self._path(op), failed.status or 500, code, message)
                    self.scope_gaps.append(failed.gap)
                    self.result.errors.append(failed.gap)
                    return _Lookup(False, {}, {}, missing)
                missing.update(dict.fromkeys(gone, f"{failed.gap.code}: {failed.gap.message}"))
        found = {str(i[id_field]): i for i in items if id_field in i}
        shas = {
            k: self.evidence(f"ec2:{op}", v, op, resource=k, kind="api_resource")
            for k, v in found.items()
        }
        return _Lookup(True, found, shas, missing)

    def evidence(
        self, call: str, raw: Any, op: str, resource: str | None, kind: str, ref: str = ""
    ) -> str:
        return record_evidence(
            self.sink,
            raw,
            provider=PROVIDER,
            kind=kind,
            call=call,
            account=self.account,
            region=self.region,
            resource=resource,
            ref=ref or f"{self._path(op)}.json",
        )

    def ek_public_key(self, iid: str) -> tuple[dict[str, Any], str]:
        """NitroTPM EK public key; vouched for by the EC2 API only (AWS has no EK certificate)."""
        op = "GetInstanceTpmEkPub"
        relpath = self._path(op, iid)
        try:
            resp = _strip_meta(
                self.ec2.get_instance_tpm_ek_pub(
                    InstanceId=iid, KeyType=_EK_KEY_TYPE, KeyFormat=_EK_FORMAT
                )
            )
        except Exception as err:
            raise self._fail(err, op, relpath, ("tpm",), iid) from err
        self.sink.save_raw(relpath, resp)
        sha = self.evidence(f"ec2:{op}", resp, op, iid, "ek_public_key", ref=f"{relpath}.json")
        ek: dict[str, Any] = {
            "present": True,
            "source": "control_plane",
            "certificate": False,
            "key_type": resp.get("KeyType"),
            "key_format": resp.get("KeyFormat"),
        }
        ek.update(_describe_spki(str(resp.get("KeyValue", ""))))
        return ek, sha


def _describe_spki(b64: str) -> dict[str, Any]:
    """Parse the base64 DER SubjectPublicKeyInfo; a malformed key is recorded, not trusted."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        der = base64.b64decode(b64, validate=True)
        key = serialization.load_der_public_key(der)
    except Exception as err:
        return {"valid": False, "error": f"EK public key does not parse: {err}"}
    out: dict[str, Any] = {"valid": True, "spki_sha256": hashlib.sha256(der).hexdigest()}
    if isinstance(key, rsa.RSAPublicKey):
        out["algorithm"] = f"RSA-{key.key_size}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        out["algorithm"] = f"EC-{key.curve.name}"
    else:
        out["algorithm"] = type(key).__name__
    return out


def _snake(op: str) -> str:
    out = []
    for i, ch in enumerate(op):
        if ch.isupper() and i and not op[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
