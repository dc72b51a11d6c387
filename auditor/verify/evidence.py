"""One guest evidence file, verified as a whole: the hardware report, its binding, the rest.

A guest evidence file (auditor/guest/format.py) carries a SEV-SNP report or a TDX quote, the
certificates that came with it, the vTPM or CCEL event log, disk-encryption state and perhaps a
key-release receipt. This module runs each verifier on its part and adds what none of them can
judge alone: is the report *bound* to this VM, this audit and the guest's claims (REPORT_DATA =
SHA-512(nonce || identity || SHA-256(claims)), auditor/guest/format.py), is the nonce fresh,
does the file name the VM it was attached to. The result is one
list of checks (for `ccaudit verify evidence` and the bundle) and the facts rules read
(`vm.hardware`, `vm.guest`, `vm.tpm.event_log`).

Only a report that is authentic, bound and fresh is `verified`; an authentic report that is not
bound is "genuine, not bound to this VM" and raises nothing. The guest's claims (disk
encryption, kernel command line, event logs) count only when the report covers them
(`claims_bound`, format version 2); the verify stage uses them only from the one file whose
report is verified (auditor/verify/stage.py).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from auditor.guest.format import (
    claims_bound,
    claims_digest,
    expected_report_data,
    identity_string,
    quote_qualifying_data,
)
from auditor.verify.blobs import b64_field
from auditor.verify.checks import Check, CheckedResult
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.key_release import BrokerKey, verify_key_release

if TYPE_CHECKING:
    from auditor.verify.vtpm_evidence import VtpmEvidence

#: Named next to every verdict that rests on the demo fleet's self-made AMD chain.
DEMO_CAVEAT = "demo trust anchor, not AMD"
TECH_BY_TSM = {"sev_guest": "SEV_SNP", "tdx_guest": "TDX"}
NonceCheck = Callable[[str], tuple[bool, str]]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class EvidenceOptions:
    """What the owner trusts and expects when judging guest evidence."""

    at: datetime | None = None
    amd_trust: Any = None  # auditor.verify.snp.AmdTrust; None = AMD's pinned roots
    #: Demo mode only: a self-made AMD-style chain tried when AMD's roots do not verify a
    #: report; every verdict resting on it carries DEMO_CAVEAT.
    demo_trust: Any = None
    reference_measurements: Sequence[tuple[str, str]] = ()
    #: Measured boots the owner expects (rule packs' `reference_boot`), as dicts.
    reference_boot: Sequence[Mapping[str, Any]] = ()
    tcb_table: Any = None  # auditor.verify.snp.TcbTable; None = the shipped table
    offline: bool = True
    cache_dir: Path | None = None
    tdx_collateral: Any = None  # auditor.verify.tdx.TdxCollateral
    key_broker_keys: Sequence[BrokerKey] = ()
    #: Demo mode only: a self-made vTPM CA tried when Google's or Microsoft's roots do not
    #: certify an AK; the facts then carry `ak_demo_anchor`.
    demo_vtpm_trust: Any = None
    endorsement_root: x509.Certificate | None = None  # GCE firmware endorsement root
    nonce_check: NonceCheck | None = None


@dataclass
class GuestEvidenceResult(CheckedResult):
    """Every check, plus the document facts the verify stage writes for rules."""

    technology: str | None = None
    #: The report covers the guest's claims (format version 2): only then may they be used.
    claims_bound: bool = False
    hardware: dict[str, Any] = field(default_factory=dict)
    guest: dict[str, Any] = field(default_factory=dict)
    event_log: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    #: Collateral fetched or read from the cache while verifying (AMD KDS certificates), by
    #: bundle name, so the run keeps it and `reverify` needs no network.
    collateral: dict[str, bytes] = field(default_factory=dict)
    #: REPORT_DATA as the report carries it (hex), to say why a binding failed.
    reported_report_data: str = ""
    #: The report binds the claims digest the file declares, but the claims hash otherwise.
    claims_changed: bool = False


def _b64(doc: Mapping[str, Any], *path: str) -> bytes | None:
    return b64_field(doc, *path, prefix="")


def _prefixed(prefix: str, checks: Sequence[Check]) -> list[Check]:
    return [Check(f"{prefix}.{c.name}", c.ok, c.reason) for c in checks]


def verify_guest_evidence(
    doc: Mapping[str, Any],
    options: EvidenceOptions | None = None,
    expected_vm: tuple[str, str] | None = None,
) -> GuestEvidenceResult:
    """Verify a parsed evidence file; `expected_vm` = (provider, id) of the VM it is attached to."""
    opts = options or EvidenceOptions()
    result = GuestEvidenceResult()
    vm = doc.get("vm") or {}
    provider = str(vm.get("provider", "unknown"))
    vm_id = str(vm.get("id", ""))
    if expected_vm is not None:
        want = identity_string(*expected_vm)
        got = identity_string(provider, vm_id)
        result.checks.append(
            Check(
                "identity",
                want == got,
                f"the file names {got}" + ("" if want == got else f", attached to {want}"),
            )
        )
        provider, vm_id = expected_vm
    identity = identity_string(provider, vm_id)
    nonce_hex = str(doc.get("nonce", ""))
    fresh: bool | None = None
    if opts.nonce_check is not None:
        fresh, why = opts.nonce_check(nonce_hex)
        result.checks.append(Check("nonce", fresh, why))
    binding = expected_report_data(dict(doc), identity)
    result.claims_bound = claims_bound(dict(doc))

    tee = doc.get("tee") if isinstance(doc.get("tee"), Mapping) else None
    section = doc.get("vtpm") if isinstance(doc.get("vtpm"), Mapping) else None
    nonce = bytes.fromhex(nonce_hex) if _HEX64.match(nonce_hex) else b""
    qualifying = quote_qualifying_data(nonce, identity, claims_digest(dict(doc)))
    event_log = _b64(doc, "tpm", "event_log")
    hardware: dict[str, Any] = {"present": False}
    vtpm_facts: dict[str, Any] | None = None
    hcl_path = tee is None and section is not None and "hcl_report" in section
    if tee is not None:
        hardware = _verify_tee(tee, binding, opts, result, _b64(doc, "ccel", "data"))
    elif hcl_path:
        assert section is not None
        hardware = _verify_azure_hcl(section, qualifying, vm_id, event_log, opts, result)
        vtpm_facts = hardware.pop("vtpm", None)
        binding = qualifying  # a key-release receipt names what the broker saw: the quote's
    else:
        result.checks.append(
            Check("tee", False, "no SEV-SNP report or TDX quote in the file (see its errors)")
        )
    if section is not None and not hcl_path:
        vtpm_facts = _verify_vtpm(section, provider, vm_id, qualifying, event_log, opts, result)
    if fresh is not None:
        hardware["fresh"] = fresh
    if hardware.get("present") and not hardware.get("bound") and tee is not None:
        result.claims_changed = _claims_changed(doc, identity, result.reported_report_data)
    if hardware.get("present"):
        hardware["claims_bound"] = result.claims_bound
        hardware["verified"] = bool(
            hardware.get("authentic")
            and hardware.get("bound")
            and fresh is True
            and result.check("identity") is not False
        )
        hardware["reason"] = _summary(hardware, result)
        result.summary = hardware["reason"]
    else:
        hardware.update(authentic=False, bound=False, verified=False)
        result.summary = hardware["reason"] = "no usable hardware report in the evidence file"
    if vtpm_facts is not None:
        hardware["vtpm"] = vtpm_facts
    result.hardware = hardware
    result.event_log = _event_log(doc, result)
    result.guest = _guest_facts(doc, identity, binding.hex(), opts, result)
    return result


def _verify_vtpm(
    section: Mapping[str, Any],
    provider: str,
    vm_id: str,
    qualifying: bytes,
    event_log: bytes | None,
    opts: EvidenceOptions,
    r: GuestEvidenceResult,
) -> dict[str, Any]:
    """A vTPM quote beside a TEE report (Google Cloud, AWS): checked, never bound to it."""
    try:
        vt = _vtpm_section(section, provider, vm_id, qualifying, event_log, opts)
    except EvidenceFormatError as err:
        r.checks.append(Check("vtpm.section", False, f"vtpm section unusable: {err}"))
        return {"present": True, "quote_verified": False, "bound_to_report": False}
    r.checks.extend(vt.checks)
    if vt.facts.get("quote_verified"):
        r.checks.append(
            Check(
                "vtpm.binding",
                True,
                "the vTPM is the host's: its quote verifies but nothing binds it to the "
                "hardware report (recorded as unbound)",
            )
        )
    return vt.facts


def _vtpm_section(
    section: Mapping[str, Any],
    provider: str,
    vm_id: str,
    qualifying: bytes,
    event_log: bytes | None,
    opts: EvidenceOptions,
) -> VtpmEvidence:
    """The vTPM verifier with the owner's options (time, demo vTPM CA, boot references)."""
    from auditor.verify.vtpm_evidence import verify_vtpm_section

    return verify_vtpm_section(
        section,
        provider=provider,
        vm_id=vm_id,
        qualifying_data=qualifying,
        event_log=event_log,
        at=_when(opts),
        demo_trust=opts.demo_vtpm_trust,
        reference_boot=opts.reference_boot,
    )


def _when(opts: EvidenceOptions) -> datetime:
    from datetime import UTC

    return opts.at or datetime.now(UTC)


def _verify_azure_hcl(
    section: Mapping[str, Any],
    qualifying: bytes,
    vm_id: str,
    event_log: bytes | None,
    opts: EvidenceOptions,
    r: GuestEvidenceResult,
) -> dict[str, Any]:
    """An Azure CVM: the paravisor's HCL report, its SNP report or TDX quote, and the vTPM quote.

    `bound` here means: the hardware report's REPORT_DATA is SHA-256 of the runtime claims, the
    claims name this VM and the AK, that AK signed the quote, and the quote's qualifying data
    is this audit's binding. The launch measurement is the paravisor's, not a guest firmware's.
    """
    from auditor.verify.azure_hcl import parse_hcl_report
    from auditor.verify.vtpm_evidence import check_hcl_binding, hcl_report_data

    try:
        raw = _b64(section, "hcl_report")
        assert raw is not None
        hcl = parse_hcl_report(raw)
        vt = _vtpm_section(section, "azure", vm_id, qualifying, event_log, opts)
    except EvidenceFormatError as err:
        r.checks.append(Check("hcl", False, f"Azure HCL evidence unusable: {err}"))
        return {"present": False}
    binding = hcl_report_data(hcl.runtime_data)
    thim = section.get("thim")
    thim = thim if isinstance(thim, Mapping) else {}
    if hcl.report_type == "snp":
        cert, chain = thim.get("vcekCert"), thim.get("certificateChain")
        if not isinstance(cert, str) or not cert:
            r.checks.append(
                Check("hcl", False, "no VCEK from THIM to verify the HCL's SEV-SNP report")
            )
            return {"present": False}
        hardware = _verify_snp(
            hcl.hw_report,
            None,
            binding,
            opts,
            r,
            cert=cert.encode(),
            chain=chain.encode() if isinstance(chain, str) else b"",
        )
    else:
        quote = _b64(section, "td_quote")
        if quote is None:
            r.checks.append(Check("hcl", False, "no TD quote for the HCL's TDX report"))
            return {"present": False}
        hardware = _verify_tdx(quote, binding, opts, r)
    report_ok = bool(hardware.get("authentic") and hardware.get("bound"))
    try:
        check_hcl_binding(vt, hcl.runtime_data, vm_id, report_ok)
    except EvidenceFormatError as err:
        vt.add("hcl_claims", False, str(err))
    r.checks.extend(vt.checks)
    hardware.update(
        path="azure-hcl",
        bound=vt.facts.get("bound_to_report") is True,
        hcl_report_bound=hardware.get("bound") is True,
        measurement_of="the Azure paravisor (HCL) and its firmware, not a guest firmware",
        vtpm=vt.facts,
    )
    return hardware


def _claims_changed(doc: Mapping[str, Any], identity: str, reported: str) -> bool:
    """The report binds the file's declared `claims_sha256`, which its claims no longer hash to."""
    from auditor.guest.format import binding_report_data

    declared = doc.get("claims_sha256")
    if not isinstance(declared, str) or not reported:
        return False
    try:
        nonce, digest = bytes.fromhex(str(doc.get("nonce", ""))), bytes.fromhex(declared)
    except ValueError:
        return False
    return binding_report_data(nonce, identity, digest).hex() == reported.lower()


def _verify_tee(
    tee: Mapping[str, Any],
    binding: bytes,
    opts: EvidenceOptions,
    result: GuestEvidenceResult,
    ccel: bytes | None = None,
) -> dict[str, Any]:
    kind = str(tee.get("provider", ""))
    blob = _b64(tee, "outblob")
    aux = _b64(tee, "auxblob")
    if blob is None:
        result.checks.append(Check("tee", False, f"tee.outblob is missing ({kind or '?'})"))
        return {"present": False}
    technology = TECH_BY_TSM.get(kind)
    if technology is None:
        result.checks.append(Check("tee", False, f"unknown configfs-tsm provider {kind!r}"))
        return {"present": False}
    result.technology = technology
    if technology == "SEV_SNP":
        return _verify_snp(blob, aux, binding, opts, result)
    return _verify_tdx(blob, binding, opts, result, ccel)


def _verify_snp(
    blob: bytes,
    aux: bytes | None,
    binding: bytes,
    opts: EvidenceOptions,
    r: GuestEvidenceResult,
    cert: bytes | None = None,
    chain: bytes = b"",
) -> dict[str, Any]:
    from auditor.verify.snp import SnpOptions, verify_snp

    snp_options = SnpOptions(
        at=opts.at,
        trust=opts.amd_trust,
        expected_report_data=binding,
        reference_measurements=opts.reference_measurements,
        tcb_minimums=opts.tcb_table,
        offline=opts.offline,
        cache_dir=opts.cache_dir,
    )
    snp = verify_snp(blob, cert, chain, auxblob=aux, options=snp_options)
    if not snp.authentic and opts.demo_trust is not None:
        demo_options = replace(snp_options, trust=opts.demo_trust)
        demo = verify_snp(blob, cert, chain, auxblob=aux, options=demo_options)
        if demo.authentic:
            snp = demo
    r.checks.extend(_prefixed("snp", snp.checks))
    facts = dict(snp.facts)
    policy = facts.get("policy") or {}
    tcb = facts.get("tcb_minimum") or {}
    anchor = str(facts.get("trust_anchor") or "")
    hardware: dict[str, Any] = {
        "present": True,
        "technology": "SEV_SNP",
        "authentic": bool(snp.authentic),
        "bound": snp.check("report_data") is True,
        "trust_anchor": anchor,
        "root_sha256": facts.get("root_sha256") if snp.authentic else None,
        "demo_anchor": bool(snp.authentic) and anchor == DEMO_CAVEAT,
        "signer": facts.get("signer"),
        "product": facts.get("product"),
        "debug": policy.get("debug"),
        "migrate_ma": policy.get("migrate_ma"),
        "smt": policy.get("smt"),
        "vmpl": facts.get("vmpl"),
        "measurement": facts.get("measurement"),
        "reported_tcb": facts.get("reported_tcb"),
        "committed_tcb": facts.get("committed_tcb"),
        "firmware": facts.get("firmware"),
        "tcb_below_minimum": tcb.get("ok") is False if tcb else None,
        "tcb_bulletins": sorted({str(b.get("bulletin")) for b in tcb.get("below", [])}),
        "tcb_summary": _tcb_summary(tcb.get("below", [])),
        "csp_id": facts.get("csp_id"),
        "tcb_current": _snp_tcb_current(tcb),
    }
    r.reported_report_data = str(facts.get("report_data") or "")
    _measurement_facts(hardware, snp.check("measurement"), facts.get("measurement_match"))
    if aux is not None and snp.report is not None:
        _endorsement(aux, snp.report.measurement, opts, r, hardware)
    if snp.report is not None and facts.get("certificate_source") in ("kds", "cache"):
        _keep_kds_certificate(snp.report, opts, r, hardware, facts)
    if hardware["demo_anchor"]:
        hardware["caveat"] = DEMO_CAVEAT
    return {k: v for k, v in hardware.items() if v is not None}


def _verify_tdx(
    blob: bytes,
    binding: bytes,
    opts: EvidenceOptions,
    r: GuestEvidenceResult,
    ccel: bytes | None = None,
) -> dict[str, Any]:
    from auditor.verify.tdx import TdxOptions, verify_tdx

    tdx = verify_tdx(
        blob,
        TdxOptions(
            at=opts.at,
            collateral=opts.tdx_collateral,
            expected_report_data=binding,
            reference_mrtd=opts.reference_measurements,
            ccel_data=ccel,
        ),
    )
    r.checks.extend(_prefixed("tdx", tdx.checks))
    facts = dict(tdx.facts)
    attrs = facts.get("td_attributes") or {}
    hardware: dict[str, Any] = {
        "present": True,
        "technology": "TDX",
        "authentic": bool(tdx.authentic),
        "bound": tdx.check("report_data") is True,
        "trust_anchor": facts.get("trust_anchor"),
        "root_sha256": facts.get("root_sha256") if tdx.authentic else None,
        "demo_anchor": False,
        "signer": "pck",
        "debug": attrs.get("debug"),
        # TD attribute MIGRATABLE (bit 29): a migration TD may move the TD's memory out.
        "migrate_ma": attrs.get("migratable"),
        "measurement": facts.get("mrtd"),
        "rtmr": facts.get("rtmr"),
        "tcb_status": facts.get("tcb_status"),
        "tcb_bulletins": list(facts.get("advisory_ids") or []),
        **_tdx_tcb(tdx.check("tcb_status"), facts),
    }
    r.reported_report_data = str(facts.get("report_data") or "")
    _measurement_facts(hardware, tdx.check("mrtd"), facts.get("mrtd_match"))
    return {k: v for k, v in hardware.items() if v is not None}


def _keep_kds_certificate(
    report: Any,
    opts: EvidenceOptions,
    r: GuestEvidenceResult,
    hardware: dict[str, Any],
    facts: Mapping[str, Any],
) -> None:
    """A VCEK from AMD KDS (now or earlier, via the cache) goes into the run as collateral."""
    from auditor.verify.amd import vcek_cache_path

    hardware["certificate_source"] = facts.get("certificate_source")
    if facts.get("kds_url"):
        hardware["kds_url"] = facts["kds_url"]
    product = report.product or facts.get("product")
    if opts.cache_dir is None or not isinstance(product, str):
        return
    path = vcek_cache_path(product, report.chip_id, report.reported_tcb, opts.cache_dir)
    try:
        r.collateral[f"amd-vcek/{path.name}"] = path.read_bytes()
    except OSError:
        fetched = facts.get("fetched_certificate")
        if isinstance(fetched, str):
            r.collateral[f"amd-vcek/{path.name}"] = base64.b64decode(fetched)


def _endorsement(
    aux: bytes,
    measurement: bytes,
    opts: EvidenceOptions,
    r: GuestEvidenceResult,
    hardware: dict[str, Any],
) -> None:
    """GCE delivers a signed firmware endorsement in the SNP cert table: check it if present."""
    from auditor.verify.gce_endorsement import endorsement_from_auxblob, verify_launch_endorsement

    try:
        data = endorsement_from_auxblob(aux)
    except EvidenceFormatError as err:
        r.checks.append(Check("endorsement", False, f"cert table unreadable: {err}"))
        return
    if data is None:
        return
    if opts.endorsement_root is None:
        r.checks.append(
            Check(
                "endorsement",
                False,
                "a GCE firmware endorsement is present but no endorsement root was given "
                "(--endorsement-root)",
            )
        )
        hardware["endorsement_verified"] = False
        return
    try:
        endorsed = verify_launch_endorsement(
            data, opts.endorsement_root, measurement=measurement, at=opts.at
        )
    except EvidenceFormatError as err:
        r.checks.append(Check("endorsement", False, f"endorsement unreadable: {err}"))
        hardware["endorsement_verified"] = False
        return
    r.checks.extend(_prefixed("endorsement", endorsed.checks))
    hardware["endorsement_verified"] = endorsed.ok


def _snp_tcb_current(tcb: Mapping[str, Any]) -> bool | None:
    """True/False when the reported TCB was compared with the minimum table; None = unknown."""
    ok = tcb.get("ok") if tcb else None
    return ok if isinstance(ok, bool) else None


def _tdx_tcb(check: bool | None, facts: Mapping[str, Any]) -> dict[str, Any]:
    """TCB facts of a TDX quote: known only from verified collateral (`--tdx-collateral`).

    Without collateral, or when it does not verify or has expired, the status is *unknown*:
    `tcb_current` is absent, so a rule that needs a current TCB is UNDETERMINED, never met.
    """
    if check is True:
        return {"tcb_current": True, "tcb_below_minimum": False}
    status = facts.get("tcb_status")
    if check is False and isinstance(status, str):
        from auditor.verify.intel import ACCEPTED_TCB_STATUSES

        if status not in ACCEPTED_TCB_STATUSES:
            return {
                "tcb_current": False,
                "tcb_below_minimum": True,
                "tcb_summary": f"TDX TCB status {status}",
            }
    return {}


def _tcb_summary(below: Sequence[Mapping[str, Any]]) -> str | None:
    """'microcode 68 < 219 (AMD-SB-3019, CVE-2024-56161); ...' for findings to quote."""
    parts = [
        f"{b.get('component')} {b.get('reported')} < {b.get('minimum')} "
        f"({b.get('bulletin')}{', ' + str(b['cve']) if b.get('cve') else ''})"
        for b in below
    ]
    return "; ".join(parts) or None


def _measurement_facts(hardware: dict[str, Any], ok: bool | None, name: Any) -> None:
    """`measurement_matched` only exists when the owner gave references: absent = not judged."""
    if ok is None:
        return
    hardware["measurement_matched"] = ok
    if ok and name:
        hardware["measurement_reference"] = str(name)


def _summary(hardware: Mapping[str, Any], result: GuestEvidenceResult) -> str:
    vendor = "Intel-signed" if hardware.get("technology") == "TDX" else "AMD-signed"

    caveat = f" ({DEMO_CAVEAT})" if hardware.get("demo_anchor") else ""
    if hardware.get("path") == "azure-hcl":
        caveat += " from the Azure paravisor's HCL report"
        if hardware.get("authentic") and not hardware.get("bound"):
            failed = [
                c
                for c in result.checks
                if not c.ok and c.name.startswith(("vtpm", "snp.report_data", "tdx.report_data"))
            ]
            why = failed[0].reason if failed else "the vTPM binding does not hold"
            return f"genuine {vendor} report{caveat}, not bound to this VM and audit: {why}"
    if not hardware.get("authentic"):
        failed = [c for c in result.checks if not c.ok and c.name.split(".")[0] in ("snp", "tdx")]
        why = failed[0].reason if failed else "verification failed"
        return f"hardware report does not verify: {why}"
    if not hardware.get("bound"):
        if result.claims_changed:
            return (
                f"genuine {vendor} report{caveat}, but the guest's claims were changed after "
                "it was made (REPORT_DATA covers claims with another SHA-256)"
            )
        return (
            f"genuine {vendor} report{caveat}, not bound to this VM (REPORT_DATA is not "
            "this audit's nonce, VM identity and claims)"
        )
    if hardware.get("fresh") is False:
        why = next((c.reason for c in result.checks if c.name == "nonce"), "stale nonce")
        return (
            f"genuine {vendor} report{caveat}, bound to this VM, but its nonce is not fresh: {why}"
        )
    if result.check("identity") is False:
        return f"genuine {vendor} report{caveat} for another VM"
    if hardware.get("fresh") is None:
        return (
            f"genuine {vendor} report{caveat}, bound to this VM and its nonce "
            "(nonce freshness not checked: no audit state given)"
        )
    return f"genuine {vendor} report{caveat}, bound to this VM and this audit's nonce"


def _event_log(doc: Mapping[str, Any], result: GuestEvidenceResult) -> dict[str, Any]:
    data = _b64(doc, "tpm", "event_log")
    if data is None:
        return {}
    from auditor.verify.eventlog import parse_event_log, secure_boot_state

    try:
        log = parse_event_log(data)
    except EvidenceFormatError as err:
        result.checks.append(Check("event_log", False, f"vTPM event log unreadable: {err}"))
        return {"present": True, "parsed": False}
    result.checks.append(Check("event_log", True, f"{len(log.events)} events parsed"))
    facts: dict[str, Any] = {"present": True, "parsed": True, "events": len(log.events)}
    state = secure_boot_state(log)
    if state.get("secure_boot") is not None:
        facts["secure_boot"] = state["secure_boot"]
    return facts


def _guest_facts(
    doc: Mapping[str, Any],
    identity: str,
    report_data_hex: str,
    opts: EvidenceOptions,
    result: GuestEvidenceResult,
) -> dict[str, Any]:
    guest: dict[str, Any] = {"evidence_file": True}
    disk = doc.get("disk_encryption")
    if isinstance(disk, Mapping):
        devices = [d for d in disk.get("devices") or [] if isinstance(d, Mapping)]
        luks = [d for d in devices if str(d.get("type", "")).upper().startswith("LUKS")]
        guest["disk_encryption"] = {
            "root_encrypted": any(d.get("holds_root") is True for d in luks),
            "devices": [
                {
                    "name": str(d.get("name", ""))[:64],
                    "type": str(d.get("type", ""))[:32],
                    "holds_root": d.get("holds_root") is True,
                    "backing": _backing(d.get("backing")),
                    **_count("tpm_tokens", d.get("tpm_tokens")),
                }
                for d in devices[:64]
            ],
        }
    found = doc.get("agents")
    if isinstance(found, Mapping):
        names = found.get("provider_agents")
        init = found.get("cloud_init")
        agents: dict[str, Any] = {}
        if isinstance(names, list):
            agents["provider_agents"] = sorted({str(n)[:64] for n in names[:64]})
        if isinstance(init, Mapping) and isinstance(init.get("ran"), bool):
            agents["cloud_init"] = init["ran"]
        guest["agents"] = agents
    cmdline = doc.get("kernel_cmdline")
    if isinstance(cmdline, str):
        guest["kernel_cmdline"] = cmdline[:4096]
    receipt = doc.get("key_release")
    if isinstance(receipt, str) and receipt:
        kr = verify_key_release(receipt, opts.key_broker_keys, identity, report_data_hex)
        result.checks.extend(kr.checks)
        guest["key_release"] = {
            "present": True,
            "verified": kr.ok,
            "broker": str(kr.claims.get("iss", "")),
            "jurisdiction": str(kr.claims.get("jurisdiction", "")),
            "reason": kr.reason,
        }
    errors = doc.get("errors")
    if isinstance(errors, list) and errors:
        guest["collection_errors"] = [
            f"{e.get('source', '?')}: {e.get('message', '')}"
            for e in errors[:20]
            if isinstance(e, Mapping)
        ]
    return guest


def _count(key: str, value: Any) -> dict[str, int]:
    """`{key: value}` for a non-negative integer (not a bool); nothing otherwise (unknown)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return {key: value} if ok else {}


def _backing(value: Any) -> list[dict[str, Any]]:
    """The physical disks a dm-crypt device sits on, as the guest names them (bounded)."""
    out: list[dict[str, Any]] = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, Mapping):
            continue
        entry: dict[str, Any] = {"name": str(item.get("name", ""))[:64]}
        if isinstance(item.get("serial"), str):
            entry["serial"] = item["serial"][:128]
        links = item.get("links")
        if isinstance(links, list):
            entry["links"] = [str(link)[:256] for link in links[:32] if isinstance(link, str)]
        out.append(entry)
        if len(out) >= 16:
            break
    return out


def load_endorsement_root(path: Path) -> x509.Certificate:
    """A user-supplied GCE firmware endorsement root (no public copy is pinned yet)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as err:
        raise EvidenceFormatError(f"endorsement root {path}: {err}") from err
