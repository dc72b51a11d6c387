"""The `vtpm` section of a guest evidence file: the quote, its AK, and what binds that AK.

A vTPM quote proves what a vTPM says only as far as the key that signed it is trusted:

- **Bound to the hardware report (Azure confidential VMs).** The paravisor (HCL) puts the AK
  (`HCLAkPub`) in the runtime claims whose SHA-256 is the SEV-SNP/TDX report's REPORT_DATA. With
  the report verified against AMD's or Intel's roots, the AK is the key of a vTPM that runs in
  the paravisor at VMPL0, inside the TEE: the host can neither read what is sealed to it nor
  forge its quotes. The report itself is made at boot, so the quote's qualifying data (this
  audit's nonce, the VM and the claims) is what makes the evidence fresh.
- **Certified, not bound (Google Cloud).** Google's vTPM CA certifies the AK and names the
  instance, but the vTPM is the host's: nothing ties it to the SEV-SNP/TDX report the guest
  also returns. The quote is genuine and says only what the host's vTPM measured.
- **Neither (AWS NitroTPM, a created AK).** No CA certifies the AK: its quotes are the guest's
  word.

The quote is checked the same way in every case (signature by the AK, PCR digest, qualifying
data) and the measured-boot event log is replayed against the quoted PCRs; the boot facts
(Secure Boot, the boot applications, the kernel command line) count only when it replays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auditor.verify import eventlog
from auditor.verify.anchors import TrustStore, azure_vtpm_store, gcp_vtpm_store
from auditor.verify.blobs import b64_field
from auditor.verify.checks import Check
from auditor.verify.der import DerError
from auditor.verify.errors import CERT_ERRORS, EvidenceFormatError
from auditor.verify.gce_identity import IDENTITY_OID, parse_identity
from auditor.verify.tpm import (
    TpmPublic,
    load_der_certificate,
    parse_tpmt_public,
    verify_event_log_against_pcrs,
    verify_tpm_quote,
)
from auditor.verify.x509chain import verify_chain

#: TPMA_OBJECT bits an attestation key must have: it signs only what the TPM made (restricted)
#: and cannot leave the TPM (fixedTPM).
AK_ATTRIBUTES = ("fixedTPM", "restricted", "sign")


@dataclass
class VtpmEvidence:
    """Checks on a vtpm section (names prefixed `vtpm.`) and the facts rules read."""

    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    ak: TpmPublic | None = None

    def add(self, name: str, ok: bool, reason: str) -> None:
        self.checks.append(Check(f"vtpm.{name}", ok, reason))

    def ok(self, name: str) -> bool:
        return any(c.name == f"vtpm.{name}" and c.ok for c in self.checks) and not any(
            c.name == f"vtpm.{name}" and not c.ok for c in self.checks
        )


def _b64(section: Mapping[str, Any], *path: str) -> bytes | None:
    return b64_field(section, *path, prefix="vtpm.")


def _pcrs(quote: Mapping[str, Any]) -> dict[int, bytes]:
    raw = quote.get("pcrs")
    if not isinstance(raw, Mapping) or len(raw) > 32:
        raise EvidenceFormatError("vtpm.quote.pcrs must map PCR numbers to hex values")
    out: dict[int, bytes] = {}
    for key, value in raw.items():
        try:
            index = int(key)
            out[index] = bytes.fromhex(str(value))
        except ValueError as err:
            raise EvidenceFormatError(f"vtpm.quote.pcrs[{key!r}]: {err}") from err
        if not 0 <= index < 32:
            raise EvidenceFormatError(f"vtpm.quote.pcrs: PCR {index} out of range")
    return out


def verify_vtpm_section(
    section: Mapping[str, Any],
    *,
    provider: str,
    vm_id: str,
    qualifying_data: bytes,
    event_log: bytes | None,
    at: datetime,
    demo_trust: TrustStore | None = None,
    reference_boot: Sequence[Mapping[str, Any]] = (),
) -> VtpmEvidence:
    """Verify the quote and the AK certificate; EvidenceFormatError when a part is unusable."""
    out = VtpmEvidence()
    facts = out.facts
    facts.update(
        present=True,
        quote_verified=False,
        bound_to_report=False,
        inside_tee=False,
        implemented_by="host",
    )
    ak_section = section.get("ak")
    ak_section = ak_section if isinstance(ak_section, Mapping) else {}
    facts["ak_source"] = str(ak_section.get("source", "unknown"))[:32]
    ak_raw = _b64(section, "ak", "public")
    if ak_raw is None:
        out.add("ak", False, "no attestation key in the vtpm section (see the file's errors)")
        return out
    ak = parse_tpmt_public(ak_raw)
    out.ak = ak
    missing = [a for a in AK_ATTRIBUTES if a not in ak.attribute_names]
    out.add(
        "ak",
        not missing,
        f"{ak.type.upper()} AK ({facts['ak_source']}), attributes "
        f"{', '.join(ak.attribute_names) or 'none'}"
        + (f"; not an attestation key: lacks {', '.join(missing)}" if missing else ""),
    )
    _ak_certificate(out, section, provider, vm_id, at, demo_trust)

    quote = section.get("quote")
    if not isinstance(quote, Mapping):
        out.add("quote", False, "no quote in the vtpm section (see the file's errors)")
        return out
    attest = _b64(section, "quote", "attest")
    signature = _b64(section, "quote", "signature")
    bank = str(quote.get("bank", ""))
    if attest is None or signature is None:
        out.add("quote", False, "the quote lacks its TPMS_ATTEST or signature")
        return out
    pcrs = _pcrs(quote)
    result = verify_tpm_quote(ak_raw, attest, signature, pcrs, bank, qualifying_data)
    for check in result.checks:
        name = "qualifying_data" if check.name == "nonce" else check.name
        reason = check.reason
        if name == "qualifying_data":
            reason = (
                "the quote's qualifying data binds this audit's nonce, the VM and its claims"
                if check.ok
                else "the quote's qualifying data is not this audit's nonce, VM and claims "
                f"({reason})"
            )
        out.add(name, check.ok, reason)
    facts["quote_verified"] = all(
        out.ok(n) for n in ("ak", "quote_signature", "pcr_digest", "qualifying_data")
    )
    facts["bank"] = bank
    if event_log is not None:
        replay = verify_event_log_against_pcrs(event_log, pcrs, bank)
        out.add("event_log_replay", replay.ok, replay.reason)
        facts["event_log_replayed"] = replay.ok
        if not replay.ok:
            facts["replay_problem"] = replay.reason[:300]
        if replay.ok and facts["quote_verified"]:
            facts["boot"] = boot_facts(event_log)
            if reference_boot:
                facts["boot"].update(compare_boot(facts["boot"], reference_boot))
    return out


def _ak_certificate(
    out: VtpmEvidence,
    section: Mapping[str, Any],
    provider: str,
    vm_id: str,
    at: datetime,
    demo_trust: TrustStore | None,
) -> None:
    raw = _b64(section, "ak", "certificate")
    if raw is None:
        out.facts["ak_certified"] = None
        out.add(
            "ak_certificate",
            False,
            "no AK certificate: no CA vouches for this attestation key"
            + (" (NitroTPM has none)" if provider == "aws" else ""),
        )
        return
    try:
        cert = load_der_certificate(raw, "AK certificate")
    except EvidenceFormatError as err:
        out.facts["ak_certified"] = False
        out.add("ak_certificate", False, str(err))
        return
    store = azure_vtpm_store() if provider == "azure" else gcp_vtpm_store()
    chain = verify_chain(cert, store, at)
    if not chain.ok and demo_trust is not None:
        demo = verify_chain(cert, demo_trust, at)
        if demo.ok:
            chain = demo
            out.facts["ak_demo_anchor"] = True
    same = out.ak is not None and _spki(cert) == out.ak.spki_der()
    ok = chain.ok and same
    out.facts["ak_certified"] = ok
    out.facts["ak_certificate_issuer"] = cert.issuer.rfc4514_string()[:256]
    if ok and chain.root_fingerprint:
        out.facts["ak_root_sha256"] = chain.root_fingerprint
    reason = (
        chain.reason
        if not chain.ok
        else ("certifies the quoting AK" if same else "certifies another key than the quoting AK")
    )
    out.add("ak_certificate", ok, f"AK certificate: {reason}")
    if provider == "gcp" and chain.ok:
        _gce_instance(out, cert, vm_id)


def _spki(cert: x509.Certificate) -> bytes:
    try:
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, TypeError):
        return b""


_IDENTITY_ERRORS: tuple[type[Exception], ...] = (x509.ExtensionNotFound, DerError, *CERT_ERRORS)


def _gce_instance(out: VtpmEvidence, cert: x509.Certificate, vm_id: str) -> None:
    """Google's AK certificate names the instance: it must be the VM the file is attached to."""
    try:
        ext = cert.extensions.get_extension_for_oid(IDENTITY_OID)
        value = ext.value
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        ident = parse_identity(raw)
    except _IDENTITY_ERRORS as err:
        out.add("ak_instance", False, f"the AK certificate names no instance: {err}")
        return
    same = str(ident.instance_id) == vm_id
    out.add(
        "ak_instance",
        same,
        f"the AK certificate names instance {ident.instance_id} ({ident.instance_name})"
        + ("" if same else f", not {vm_id}"),
    )


# -- Azure: the HCL report binds the vTPM to the hardware report ---------------------------------


def hcl_runtime_claims(runtime: bytes) -> dict[str, Any]:
    """The runtime-claims JSON of an HCL report; EvidenceFormatError when it is not an object."""
    try:
        claims = json.loads(runtime.rstrip(b"\x00").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise EvidenceFormatError(f"HCL runtime claims are not JSON: {err}") from err
    if not isinstance(claims, dict):
        raise EvidenceFormatError("HCL runtime claims are not a JSON object")
    return claims


def hcl_report_data(runtime: bytes) -> bytes:
    """The REPORT_DATA the paravisor requests: SHA-256(runtime claims) then 32 zero bytes."""
    return hashlib.sha256(runtime).digest() + bytes(32)


def check_hcl_binding(
    out: VtpmEvidence, runtime: bytes, vm_id: str, report_ok: bool
) -> dict[str, Any]:
    """The runtime claims name this VM and the quoting AK; facts about the vTPM's place."""
    from auditor.verify.azure_hcl import hcl_ak_public, jwk_rsa_public_key

    claims = hcl_runtime_claims(runtime)
    config = claims.get("vm-configuration")
    config = config if isinstance(config, dict) else {}
    unique = str(config.get("vmUniqueId", ""))
    same_vm = bool(unique) and unique.lower() == vm_id.strip().lower()
    out.add(
        "hcl_vm",
        same_vm,
        f"the runtime claims name vmUniqueId {unique or '(none)'}"
        + ("" if same_vm else f", not {vm_id}"),
    )
    jwk = hcl_ak_public(runtime)
    same_ak = False
    if jwk is None:
        out.add("hcl_ak", False, "the runtime claims carry no HCLAkPub key")
    else:
        key = jwk_rsa_public_key(jwk)
        quoting = out.ak.key if out.ak is not None else None
        same_ak = isinstance(quoting, rsa.RSAPublicKey) and (
            quoting.public_numbers() == key.public_numbers()
        )
        out.add(
            "hcl_ak",
            same_ak,
            "the AK that signed the quote is HCLAkPub, the key the hardware report binds"
            if same_ak
            else "the AK that signed the quote is not HCLAkPub from the runtime claims",
        )
    bound = report_ok and same_vm and same_ak and out.facts.get("quote_verified") is True
    out.facts.update(
        implemented_by="paravisor",
        inside_tee=True,
        bound_to_report=bound,
        secure_boot_claimed=config.get("secure-boot") if isinstance(config, dict) else None,
    )
    return claims


# -- measured boot --------------------------------------------------------------------------------


def boot_facts(log_bytes: bytes) -> dict[str, Any]:
    """What a replayed event log says booted: Secure Boot, the boot applications, the cmdline."""
    log = eventlog.parse_event_log(log_bytes)
    state = eventlog.secure_boot_state(log)
    facts: dict[str, Any] = {k: v for k, v in state.items() if k != "source" and v is not None}
    facts["applications"] = [
        {"pcr": e.index, "sha256": e.digests["sha256"].hex()}
        for e in log.events
        if e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION and "sha256" in e.digests
    ][:32]
    cmdline = kernel_cmdline(log)
    if cmdline is not None:
        facts["kernel_cmdline"] = cmdline
    return facts


def compare_boot(
    boot: Mapping[str, Any], references: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Match the measured boot against the owner's references: the first that matches wins;
    when none does, the mismatch names the event that differs from the first reference."""
    first: str | None = None
    for ref in references:
        problem = _boot_mismatch(boot, ref)
        if problem is None:
            return {"reference_matched": True, "reference": str(ref.get("name", ""))}
        first = first or f"{problem} (reference {ref.get('name', '?')!r})"
    return {"reference_matched": False, "mismatch": first or "no reference"}


def _boot_mismatch(boot: Mapping[str, Any], ref: Mapping[str, Any]) -> str | None:
    want_sb = ref.get("secure_boot")
    if want_sb is not None and boot.get("secure_boot") is not want_sb:
        state = boot.get("secure_boot")
        now = "on" if state is True else "off" if state is False else "not measured"
        return (
            f"EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot (PCR 7): Secure Boot is {now}, "
            f"expected {'on' if want_sb else 'off'}"
        )
    apps = ref.get("applications")
    if apps is not None:
        measured = [a["sha256"] for a in boot.get("applications") or []]
        for n, (got_app, want_app) in enumerate(zip(measured, apps, strict=False), 1):
            if got_app != want_app:
                return (
                    f"EV_EFI_BOOT_SERVICES_APPLICATION #{n} (PCR 4): SHA-256 {got_app[:16]}... "
                    f"is not the expected {want_app[:16]}..."
                )
        if len(measured) != len(apps):
            return (
                f"EV_EFI_BOOT_SERVICES_APPLICATION (PCR 4): {len(measured)} boot applications "
                f"measured, {len(apps)} expected"
            )
    cmdline = ref.get("kernel_cmdline")
    if cmdline is not None and boot.get("kernel_cmdline") != cmdline:
        measured_cmdline = boot.get("kernel_cmdline")
        shown = repr(measured_cmdline) if measured_cmdline is not None else "not measured"
        return f"EV_IPL kernel command line: {shown}, expected {cmdline!r}"
    return None


EV_IPL = 0x0000000D
EV_EVENT_TAG = 0x00000006
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
_GRUB_CMDLINE = b"kernel_cmdline: "


def kernel_cmdline(log: eventlog.EventLog) -> str | None:
    """The kernel command line as measured: GRUB's EV_IPL 'kernel_cmdline: ...' in PCR 8, or
    systemd-stub's UTF-16 EV_IPL in PCR 12; the last one measured wins."""
    found: str | None = None
    for event in log.events:
        if event.event_type != EV_IPL:
            continue
        data = event.data
        if event.index == 8 and data.startswith(_GRUB_CMDLINE):
            found = data[len(_GRUB_CMDLINE) :].rstrip(b"\x00").decode("utf-8", "replace")
        elif event.index == 12 and len(data) >= 2 and data[1] == 0:
            try:
                found = data.decode("utf-16-le").rstrip("\x00")
            except UnicodeDecodeError:
                continue
    return found[:4096] if found is not None else None
