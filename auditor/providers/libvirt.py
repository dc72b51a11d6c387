"""libvirt: KVM hosts of a private cloud (or a hosting provider's), read through libvirt-python.

A thin fetching layer: per connection URI it reads the host's capabilities and domain
capabilities, every domain's XML and state, and, for a domain paused in its launch window, its
launch-security information (the SEV launch measurement). Everything is recorded in the replay
layout below; `auditor.providers.libvirt_xml` turns it into VM documents, so a replay (and the
demo) needs no libvirt on the machine:

    libvirt/<host>/capabilities.xml           virConnectGetCapabilities
    libvirt/<host>/domcapabilities.xml        virConnectGetDomainCapabilities
    libvirt/<host>/domains/<name>.xml         virDomainGetXMLDesc (no secrets)
    libvirt/<host>/launch-security/<name>.json  virDomainGetLaunchSecurityInfo, where read
    libvirt/<host>/sev-info.json              virNodeGetSEVInfo (PDH, certificate chain)
    libvirt/<host>/host.json                  {"uri", "location", "operator", versions, states}
    <any of them>.error.json                  {"status", "code", "message"}: the call failed

`<host>` is the connection URI's host, or `localhost`. Connections are read-only by default:
libvirt then refuses domain capabilities and launch-security information ("read only access
prevents ..."), which are gaps naming the call; `read_write=True` (`--libvirt-read-write`) opens
them read-write to read those two as well, and nothing is ever changed either way.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from auditor.model import VM, Evidence, Gap, Source
from auditor.providers.base import (
    CallFailed,
    Plan,
    ScopeKey,
    ScopeResult,
    WorkerState,
    collected_vm,
    make_gap,
)
from auditor.providers.libvirt_xml import (
    DOMAIN_STATES,
    PROVIDER,
    HostFacts,
    LibvirtXmlError,
    document,
    launch_measurement,
    parse_capabilities,
    parse_domain,
    parse_domain_capabilities,
    sev_platform,
)
from auditor.recording import EvidenceSink, raw_path

_SAFE_HOST = re.compile(r"[^A-Za-z0-9._-]")
PAUSED = 3


@dataclass(frozen=True)
class Connection:
    """One libvirt connection: its URI, and where and by whom the owner says the host is run."""

    uri: str
    location: str = ""
    operator: str = ""

    @property
    def host(self) -> str:
        """The URI's host (`localhost` for a local or test URI), safe as a folder name."""
        netloc = urllib.parse.urlsplit(self.uri).hostname or "localhost"
        return _SAFE_HOST.sub("_", netloc) or "localhost"


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError as err:
        raise CallFailed(
            make_gap(
                PROVIDER,
                "connect",
                "MissingDependency",
                "libvirt-python is not installed: pip install 'cc-auditor[libvirt]' (it builds "
                "against the system's libvirt: Debian/Ubuntu libvirt-dev and pkg-config)",
                None,
                affects="scope",
            )
        ) from err
    if not _QUIET:
        # libvirt prints every error on stderr by default; they are gaps here, said once
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _QUIET.append(True)
    return libvirt


_QUIET: list[bool] = []


def _error(err: Exception) -> tuple[str, str]:
    """(code, message) of a libvirtError: `VIR_ERR_OPERATION_DENIED` and libvirt's words."""
    code = getattr(err, "get_error_code", lambda: None)()
    name = "libvirtError"
    if isinstance(code, int):
        lv = _libvirt()
        names = [k for k, v in vars(lv).items() if k.startswith("VIR_ERR_") and v == code]
        name = names[0] if names else f"VIR_ERR_{code}"
    return name, str(err).strip() or type(err).__name__


class LibvirtProvider(WorkerState):
    """Reads KVM hosts through libvirt, or a recorded `libvirt/` replay folder."""

    name = PROVIDER
    #: what it imports on first use: imported before a scan starts (auditor.heap)
    sdk_modules: ClassVar[tuple[str, ...]] = ("libvirt",)
    pool: Any = None

    def __init__(
        self,
        connections: Sequence[Connection] = (),
        replay: Path | None = None,
        read_write: bool = False,
    ) -> None:
        self.connections = list(connections)
        self.replay = replay
        self.read_write = read_write

    # --------------------------------------------------------------------- plan
    def plan(self, sink: EvidenceSink) -> Plan:
        plan = Plan()
        if self.replay is not None:
            hosts = sorted(p.name for p in (self.replay / PROVIDER).iterdir() if p.is_dir())
        else:
            hosts = [c.host for c in self.connections]
        plan.scopes.extend(ScopeKey(PROVIDER, h) for h in dict.fromkeys(hosts))
        return plan

    def _connection(self, host: str) -> Connection:
        return next((c for c in self.connections if c.host == host), Connection(f"qemu://{host}/"))

    # ------------------------------------------------------------------ collect
    def collect(self, scope: ScopeKey, sink: EvidenceSink) -> ScopeResult:
        """One host: its capabilities, then every domain."""
        result = ScopeResult(scope=scope)
        reader = (
            _ReplayHost(self.replay / PROVIDER / scope.account)
            if self.replay is not None
            else _LiveHost(self._connection(scope.account), self.read_write)
        )
        try:
            facts = reader.host_facts()
        except CallFailed as failed:
            failed.gap.account = scope.account
            failed.gap.affects = "scope"
            result.errors.append(failed.gap)
            result.failed = True
            return result
        call = _Recorder(scope.account, sink, result)
        caps_sha = call.text("virConnectGetCapabilities", "capabilities.xml", reader.capabilities)
        facts.capabilities = parse_capabilities(reader.capabilities)
        host_gaps: list[Gap] = []
        if reader.domain_capabilities is not None:
            try:
                facts.domain_capabilities = parse_domain_capabilities(reader.domain_capabilities)
            except LibvirtXmlError as err:
                host_gaps.append(call.gap("virConnectGetDomainCapabilities", "Malformed", str(err)))
            dcaps_sha = call.text(
                "virConnectGetDomainCapabilities", "domcapabilities.xml", reader.domain_capabilities
            )
        else:
            dcaps_sha = None
            code, message = reader.domcaps_error
            call.error("domcapabilities.xml", code, message)
            host_gaps.append(
                call.gap("virConnectGetDomainCapabilities", code, message, None, "platform")
            )
        if reader.sev_info is not None:
            call.json_file("virNodeGetSEVInfo", "sev-info.json", reader.sev_info, None)
            facts.capabilities.update(sev_platform(reader.sev_info))
        else:
            call.error("sev-info.json", *reader.sev_error)
            facts.capabilities["sev_platform_info"] = f"not read: {reader.sev_error[1]}"
        host_sha = call.meta(facts, reader)
        result.errors.extend(host_gaps)
        for name, text in reader.domains():
            result.calls += 1
            vm = self._vm(
                facts, name, text, reader, call, (caps_sha, host_sha), dcaps_sha, host_gaps
            )
            if vm is not None:
                result.vms.append(vm)
        return result

    def _vm(
        self,
        host: HostFacts,
        name: str,
        text: str,
        reader: _HostReader,
        call: _Recorder,
        host_shas: tuple[str, str],
        dcaps_sha: str | None,
        host_gaps: list[Gap],
    ) -> VM | None:
        dom_sha = call.text("virDomainGetXMLDesc", f"domains/{name}.xml", text, resource=name)
        try:
            dom = parse_domain(text)
        except LibvirtXmlError as err:
            call.result.errors.append(call.gap("virDomainGetXMLDesc", "Malformed", str(err), name))
            return None
        state = reader.state(name)
        gaps = list(host_gaps)
        launch: dict[str, Any] | None = None
        launch_sha: str | None = None
        if dom.launch_security is not None and dom.launch_security.type == "sev":
            try:
                info = reader.launch_info(name, state)
            except CallFailed as failed:
                code, message = failed.gap.code, failed.gap.message
                call.error(f"launch-security/{name}.json", code, message)
                gap = call.gap("virDomainGetLaunchSecurityInfo", code, message, name, "attestation")
                gaps.append(gap)
                call.result.errors.append(gap)
            else:
                if info is not None:
                    launch_sha = call.json_file(
                        "virDomainGetLaunchSecurityInfo", f"launch-security/{name}.json", info, name
                    )
                    launch = launch_measurement(info)
        doc, technology = document(host, dom, state, launch)
        base = [dom_sha]
        evidence: dict[str, list[str]] = {k: list(base) for k in doc}
        evidence["libvirt"] = [dom_sha, *host_shas]
        evidence["region"] = [host_shas[1]]  # the location the owner configured
        if dcaps_sha is not None and "platform" in doc:
            evidence["platform"] = [dcaps_sha]
        if launch_sha is not None:
            evidence["attestation"] = [launch_sha]
        disks = [_disk(d) for d in doc.get("disks", [])]
        return collected_vm(doc, technology=technology, disks=disks, evidence=evidence, gaps=gaps)


def _disk(entry: dict[str, Any]) -> Any:
    from auditor.model import Disk

    return Disk(
        id=str(entry["id"]),
        device=entry.get("device"),
        boot=bool(entry.get("boot")),
        encrypted=bool(entry.get("encrypted")),
        custody=str(entry.get("custody") or "unknown"),
    )


class _HostReader:
    """What one host gave (live or replayed): the same questions, the same answers."""

    capabilities: str = ""
    domain_capabilities: str | None = None
    domcaps_error: tuple[str, str] = ("", "")
    sev_info: dict[str, Any] | None = None
    sev_error: tuple[str, str] = ("NotRecorded", "not read")

    def host_facts(self) -> HostFacts:
        raise NotImplementedError

    def domains(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def state(self, name: str) -> str | None:
        raise NotImplementedError

    def launch_info(self, name: str, state: str | None) -> dict[str, Any] | None:
        raise NotImplementedError


class _LiveHost(_HostReader):
    def __init__(self, connection: Connection, read_write: bool) -> None:
        self.connection = connection
        self.read_write = read_write
        self._conn: Any = None
        self._domains: dict[str, Any] = {}
        self._states: dict[str, str | None] = {}
        self._xml: list[tuple[str, str]] | None = None

    def _fail(self, call: str, err: Exception, affects: str = "vms") -> CallFailed:
        code, message = _error(err)
        return CallFailed(
            make_gap(PROVIDER, call, code, message, self.connection.host, affects=affects)
        )

    def host_facts(self) -> HostFacts:
        lv = _libvirt()
        opener = lv.open if self.read_write else lv.openReadOnly
        try:
            self._conn = opener(self.connection.uri)
        except lv.libvirtError as err:
            raise self._fail("connect", err, "scope") from err
        try:
            self.capabilities = self._conn.getCapabilities()
        except lv.libvirtError as err:
            raise self._fail("virConnectGetCapabilities", err, "scope") from err
        try:
            self.domain_capabilities = self._conn.getDomainCapabilities()
        except lv.libvirtError as err:
            self.domcaps_error = _error(err)
        try:
            self.sev_info = dict(self._conn.getSEVInfo())
        except lv.libvirtError as err:
            self.sev_error = _error(err)
        try:
            for dom in self._conn.listAllDomains():
                self._domains[dom.name()] = dom
        except lv.libvirtError as err:
            raise self._fail("virConnectListAllDomains", err, "scope") from err
        return HostFacts(
            host=self.connection.host,
            uri=self.connection.uri,
            location=self.connection.location,
            operator=self.connection.operator,
            libvirt_version=_version(self._conn.getLibVersion()),
            hypervisor_version=_hypervisor(self._conn),
        )

    def domains(self) -> list[tuple[str, str]]:
        if self._xml is not None:
            return self._xml
        lv = _libvirt()
        out: list[tuple[str, str]] = []
        for name, dom in sorted(self._domains.items()):
            try:
                out.append((name, dom.XMLDesc(0)))
                self._states[name] = DOMAIN_STATES.get(dom.state()[0], "nostate")
            except lv.libvirtError:
                continue  # the domain went away between listing and reading
        self._xml = out
        return out

    def state(self, name: str) -> str | None:
        return self._states.get(name)

    def launch_info(self, name: str, state: str | None) -> dict[str, Any] | None:
        """The launch measurement, only while the domain is paused in its launch window."""
        if state != DOMAIN_STATES[PAUSED]:
            return None
        lv = _libvirt()
        try:
            info: dict[str, Any] = self._domains[name].launchSecurityInfo()
        except lv.libvirtError as err:
            raise self._fail("virDomainGetLaunchSecurityInfo", err) from err
        return info


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _hypervisor(conn: Any) -> str | None:
    try:
        return f"{conn.getType()} {_version(conn.getVersion())}"
    except Exception:  # a driver without a version (the test driver answers; others may not)
        return None


class _ReplayHost(_HostReader):
    """A recorded host folder, read as the live host was."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        meta = self._json("host.json") or {}
        self.meta: dict[str, Any] = meta if isinstance(meta, dict) else {}

    def _json(self, name: str) -> Any:
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CallFailed(
                make_gap(PROVIDER, "replay", "MalformedReplay", f"{path.name}: {err}", None)
            ) from err

    def _error_file(self, name: str) -> tuple[str, str] | None:
        data = self._json(name)
        if isinstance(data, dict) and "code" in data:
            return str(data["code"]), str(data.get("message", ""))
        return None

    def host_facts(self) -> HostFacts:
        failed = self._error_file("capabilities.error.json")
        if failed is not None:
            raise CallFailed(
                make_gap(PROVIDER, "virConnectGetCapabilities", *failed, None, affects="scope")
            )
        try:
            self.capabilities = (self.folder / "capabilities.xml").read_text(encoding="utf-8")
        except OSError as err:
            raise CallFailed(
                make_gap(PROVIDER, "virConnectGetCapabilities", "MissingReplay", str(err), None)
            ) from err
        dcaps = self.folder / "domcapabilities.xml"
        if dcaps.is_file():
            self.domain_capabilities = dcaps.read_text(encoding="utf-8")
        else:
            self.domcaps_error = self._error_file("domcapabilities.error.json") or (
                "NotRecorded",
                "no domcapabilities.xml in the replay",
            )
        sev = self._json("sev-info.json")
        if isinstance(sev, dict):
            self.sev_info = sev
        else:
            self.sev_error = self._error_file("sev-info.error.json") or self.sev_error
        return HostFacts(
            host=self.folder.name,
            uri=str(self.meta.get("uri", f"qemu://{self.folder.name}/system")),
            location=str(self.meta.get("location", "")),
            operator=str(self.meta.get("operator", "")),
            libvirt_version=self.meta.get("libvirt_version"),
            hypervisor_version=self.meta.get("hypervisor_version"),
        )

    def domains(self) -> list[tuple[str, str]]:
        folder = self.folder / "domains"
        if not folder.is_dir():
            return []
        return [(p.stem, p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.xml"))]

    def state(self, name: str) -> str | None:
        states = self.meta.get("states") or {}
        value = states.get(name) if isinstance(states, dict) else None
        return str(value) if value is not None else None

    def launch_info(self, name: str, state: str | None) -> dict[str, Any] | None:
        failed = self._error_file(f"launch-security/{name}.error.json")
        if failed is not None:
            raise CallFailed(make_gap(PROVIDER, "virDomainGetLaunchSecurityInfo", *failed, None))
        info = self._json(f"launch-security/{name}.json")
        return info if isinstance(info, dict) else None


class _Recorder:
    """One host's answers written to raw/ in the replay layout and kept as evidence."""

    def __init__(self, host: str, sink: EvidenceSink, result: ScopeResult) -> None:
        self.host = host
        self.sink = sink
        self.result = result

    def _ref(self, name: str) -> str:
        return raw_path(PROVIDER, self.host, *name.split("/"))

    def _evidence(self, data: bytes, call: str, ref: str, resource: str | None) -> str:
        return self.sink.add(
            Evidence.from_bytes(
                data,
                kind="api_resource",
                source=Source.CONTROL_PLANE,
                call=call,
                provider=PROVIDER,
                account=self.host,
                region=None,
                resource=resource,
                ref=ref,
            )
        )

    def text(self, call: str, name: str, text: str, resource: str | None = None) -> str:
        ref = self._ref(name)
        data = text.encode("utf-8")
        self.sink.save_bytes(ref, data)
        self.result.calls += 1
        return self._evidence(data, call, ref, resource)

    def json_file(self, call: str, name: str, data: dict[str, Any], resource: str | None) -> str:
        ref = self._ref(name)
        body = (json.dumps(data, sort_keys=True, indent=2) + "\n").encode()
        self.sink.save_bytes(ref, body)
        self.result.calls += 1
        return self._evidence(body, call, ref, resource)

    def error(self, name: str, code: str, message: str) -> None:
        stem = self._ref(name).rsplit(".", 1)[0]
        self.sink.save_error(stem, 403 if "DENIED" in code else 501, code, message)

    def meta(self, facts: HostFacts, reader: _HostReader) -> str:
        """host.json: what the owner said of the host (location, operator) and domain states."""
        states = {}
        if isinstance(reader, _LiveHost):
            reader.domains()  # fills the states
            states = dict(reader._states)
        elif isinstance(reader, _ReplayHost):
            states = dict(reader.meta.get("states") or {})
        body = {
            "uri": facts.uri,
            "location": facts.location,
            "operator": facts.operator,
            "libvirt_version": facts.libvirt_version,
            "hypervisor_version": facts.hypervisor_version,
            "states": states,
        }
        ref = self._ref("host.json")
        data = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
        self.sink.save_bytes(ref, data)
        return self._evidence(data, "host", ref, None)

    def gap(
        self, call: str, code: str, message: str, resource: str | None = None, *sections: str
    ) -> Gap:
        return make_gap(PROVIDER, call, code, message, self.host, None, resource, sections)
