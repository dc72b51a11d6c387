"""`ccaudit verify ...`: check one piece of hardware evidence by hand, for investigators.

Reads a report or quote in whatever encoding it comes (raw, hex, base64), runs the same verifier
the scan uses, and prints every check with its reason.

Exit codes, so that a CI gate on them passes only what the scan would accept:
- 0: the evidence is authentic (signature and chain to pinned vendor roots), every binding asked
  for holds (REPORT_DATA, measurement, and for `verify evidence` this VM and a fresh nonce),
  *and* the policy holds: debug off, no migration agent, TCB known and not below the published
  minimum;
- 1: any of those fails or is unknown (the first line says which part: `authentic: yes,
  policy: no (...)`);
- 2: the input is unusable (truncated, unknown format, unreadable file, a certificate the
  library refuses), with a one-line reason and no traceback.
JSON keeps `valid` (authentic and the asked bindings hold), `policy_ok` (every check holds) and
adds `authentic`, `passes` (the exit-0 condition) and, for `verify evidence`, `fresh`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from auditor.verify.blobs import decode_blob
from auditor.verify.checks import Check
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.options import HardwareOptionError, build_evidence_options, parse_reference

verify_app = typer.Typer(
    no_args_is_help=True,
    help="Verify one SEV-SNP report, TDX quote or guest evidence file yourself, offline.\n\n"
    "Exit codes: 0 only when the evidence is authentic (signature and chain to pinned vendor "
    "roots), every binding asked for holds, the policy holds (debug off, no migration agent, "
    "TCB known and not below the minimum) and, for `verify evidence`, the nonce is fresh "
    "(--state); 1 when any of those fails or is unknown (the first line says which part: "
    "'authentic: yes, policy: no (...)'); 2 when the input is unusable. JSON keeps `valid`, "
    "`policy_ok` and adds `authentic`, `passes` and `verdict`.",
)
MAX_INPUT = 16 * 1024 * 1024
#: Checks that judge what the evidence says (policy), not whether it is genuine and bound.
_POLICY = frozenset(
    {
        "policy_debug",
        "policy_migrate_ma",
        "tcb_minimum",
        "td_debug",
        "tcb_status",
        "td_migratable",
        "vmpl",
        "policy_send",
        "policy_expected",
    }
)


#: Checks of what rides along with a report (they judge other parties): shown, never counted.
_OTHER = ("key_release", "endorsement", "event_log")


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


AtOpt = Annotated[
    str | None,
    typer.Option("--at", help="Judge certificate validity at this ISO time; 'none' skips."),
]
TcbTableOpt = Annotated[
    Path | None, typer.Option("--tcb-table", help="Own minimum-TCB table (YAML).")
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format")]
OvmfOpt = Annotated[Path, typer.Option("--ovmf", help="The OVMF firmware image the VM boots.")]
KernelOpt = Annotated[Path | None, typer.Option("--kernel", help="Direct-boot kernel.")]
InitrdOpt = Annotated[Path | None, typer.Option("--initrd", help="Direct-boot initrd.")]
AppendOpt = Annotated[str | None, typer.Option("--append", help="Kernel command line.")]


class _Unusable(Exception):
    """Input the verifier cannot read: exit 2 with this one-line message."""


def _read(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_INPUT:
            raise _Unusable(f"{path}: larger than {MAX_INPUT} bytes, not {what}")
        return path.read_bytes()
    except OSError as err:
        raise _Unusable(f"{path}: cannot read {what}: {err.strerror or err}") from err


def _not_evidence(path: Path, data: bytes) -> bytes:
    """A whole guest evidence file given where a raw report is expected: say which command
    reads it, instead of a baffling "version 538970747 is not supported"."""
    head = data.lstrip()[:4096]
    if head.startswith(b"{") and b"ccaudit-guest-evidence" in head:
        raise _Unusable(
            f"{path} is a guest evidence file (ccaudit guest collect), not a raw report: "
            f"check it with `ccaudit verify evidence {path}`"
        )
    return data


def _at(value: str | None) -> datetime | None:
    if value is None:
        return datetime.now(UTC)
    if value == "none":
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise _Unusable(f"--at {value!r}: not an ISO 8601 time (or 'none')") from err
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _hex(value: str | None, size: int, flag: str) -> bytes | None:
    if value is None:
        return None
    try:
        data = bytes.fromhex(value)
    except ValueError as err:
        raise _Unusable(f"{flag}: not hex") from err
    if len(data) != size:
        raise _Unusable(f"{flag}: expected {size} bytes, got {len(data)}")
    return data


def _valid(checks: Sequence[Check], authentic: bool) -> bool:
    """Genuine, and every binding the user asked for holds; policy checks are reported apart."""
    asked = [c for c in checks if c.name.split(".")[-1] not in _POLICY]
    return authentic and all(c.ok for c in asked)


def _policy_holds(checks: Sequence[Check]) -> bool:
    return all(c.ok for c in checks if c.name.split(".")[-1] in _POLICY)


def _with_tcb(checks: Sequence[Check], what: str) -> list[Check]:
    """A TCB that was not compared with a minimum is unknown, and unknown never passes."""
    out = list(checks)
    if not any(c.name.split(".")[-1] in ("tcb_minimum", "tcb_status") for c in out):
        out.append(Check("tcb_status", False, f"TCB status unknown: {what}"))
    return out


def _verdict_line(
    authentic: bool,
    checks: Sequence[Check],
    fresh: bool | None,
    show_fresh: bool,
    other_parts: tuple[str, ...] = _OTHER,
) -> str:
    """`authentic: yes, bindings: yes, policy: no (policy_debug), ...`: which part failed."""
    failed = [c.name for c in checks if not c.ok]
    policy = [n for n in failed if n.split(".")[-1] in _POLICY]
    other = [n for n in failed if n.split(".")[0].startswith(other_parts)]
    bindings = [n for n in failed if n not in policy and n not in other and n != "nonce"]
    parts = [f"authentic: {'yes' if authentic else 'no'}"]
    if authentic:
        parts.append("bindings: " + (f"no ({', '.join(bindings)})" if bindings else "yes"))
    parts.append("policy: " + (f"no ({', '.join(policy)})" if policy else "yes"))
    if show_fresh:
        word = {True: "yes", False: "no", None: "not checked (give --state)"}[fresh]
        parts.append(f"fresh: {word}")
    if other:
        parts.append(f"not counted: {', '.join(other)} failed")
    return ", ".join(parts)


def _emit(
    fmt: OutputFormat,
    kind: str,
    valid: bool,
    checks: Sequence[Check],
    facts: dict[str, Any],
    summary: str = "",
    *,
    authentic: bool,
    passes: bool,
    fresh: bool | None = None,
    show_fresh: bool = False,
    other_parts: tuple[str, ...] = _OTHER,
) -> None:
    line = _verdict_line(authentic, checks, fresh, show_fresh, other_parts)
    if fmt is OutputFormat.json:
        doc = {
            "kind": kind,
            "passes": passes,
            "valid": valid,
            "authentic": authentic,
            "policy_ok": all(c.ok for c in checks),
            "verdict": line,
            "checks": [c.as_dict() for c in checks],
            **facts,
        }
        if show_fresh:
            doc["fresh"] = fresh
        if summary:
            doc["summary"] = summary
        typer.echo(json.dumps(doc, indent=2, sort_keys=False, default=str))
        return
    console = Console()
    verdict = "[green]PASSES[/green]" if passes else "[red]DOES NOT PASS[/red]"
    console.print(f"{kind}: {verdict} ({line})" + (f" - {summary}" if summary else ""))
    table = Table(show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("ok")
    table.add_column("reason", overflow="fold")
    for c in checks:
        table.add_row(c.name, "[green]yes[/green]" if c.ok else "[red]no[/red]", c.reason)
    console.print(table)
    for key in ("version", "product", "signer", "measurement", "report_data", "chip_id", "mrtd"):
        if facts.get(key) not in (None, ""):
            console.print(f"{key}: {facts[key]}")
    for key in ("policy", "reported_tcb", "committed_tcb", "td_attributes", "tcb_status"):
        if facts.get(key) not in (None, {}, ""):
            console.print(f"{key}: {json.dumps(facts[key], default=str)}")


def _verdict(fmt: OutputFormat, kind: str, result: Any, tcb_unknown: str) -> int:
    """Print a report/quote verifier's result; 0 only when authentic, bound and policy holds."""
    if result.check("parse") is False:
        raise _Unusable(result.reason)
    if getattr(result, "format_error", None):
        raise _Unusable(str(result.format_error))
    checks = _with_tcb(result.checks, tcb_unknown)
    valid = _valid(checks, result.authentic)
    passes = valid and _policy_holds(checks)
    facts = dict(result.facts)
    _emit(fmt, kind, valid, checks, facts, authentic=result.authentic, passes=passes)
    return 0 if passes else 1


def _run(action: Any, fmt: OutputFormat = OutputFormat.text) -> None:
    try:
        code = action()
    except (_Unusable, EvidenceFormatError, HardwareOptionError) as err:
        _error(fmt, str(err))
        raise typer.Exit(2) from None
    except typer.Exit:
        raise
    except Exception as err:  # untrusted input a library refused in a way we did not foresee
        _error(fmt, f"unusable input ({type(err).__name__}: {err})")
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def _error(fmt: OutputFormat, message: str) -> None:
    """One line on stderr; with --format json also a JSON object on stdout."""
    typer.echo(f"error: {message}", err=True)
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({"error": message, "passes": False}))


@verify_app.command("snp")
def verify_snp_cmd(
    report: Annotated[Path, typer.Argument(help="SEV-SNP report: raw binary, hex or base64.")],
    cert: Annotated[
        Path | None, typer.Option("--cert", help="VCEK or VLEK certificate (PEM or DER).")
    ] = None,
    chain: Annotated[
        Path | None,
        typer.Option("--chain", help="PEM bundle with ASK/ASVK and ARK (checked against pins)."),
    ] = None,
    auxblob: Annotated[
        Path | None,
        typer.Option("--auxblob", help="Extended-report certificate table (configfs auxblob)."),
    ] = None,
    report_data: Annotated[
        str | None, typer.Option("--report-data", help="Expected REPORT_DATA, 128 hex.")
    ] = None,
    measurement: Annotated[
        list[str] | None,
        typer.Option("--measurement", help="Reference launch measurement NAME=HEX (repeatable)."),
    ] = None,
    tcb_table: TcbTableOpt = None,
    at: AtOpt = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never fetch the VCEK from AMD KDS.")
    ] = False,
    output: FormatOpt = OutputFormat.text,
) -> None:
    """Verify a SEV-SNP report: signature, VCEK/VLEK chain to pinned AMD roots, TCB, policy."""

    def action() -> int:
        from auditor.verify.snp import SnpOptions, verify_snp

        data, _ = decode_blob(
            _not_evidence(report, _read(report, "an SNP report")), expect_min=0x4A0
        )
        refs = [parse_reference(m) for m in measurement or []]
        opts = build_evidence_options(tcb_table=tcb_table)
        result = verify_snp(
            data,
            cert=_read(cert, "a certificate") if cert else None,
            chain=_read(chain, "a PEM chain") if chain else (),
            auxblob=decode_blob(_read(auxblob, "a cert table"))[0] if auxblob else None,
            options=SnpOptions(
                at=_at(at),
                expected_report_data=_hex(report_data, 64, "--report-data"),
                reference_measurements=refs,
                tcb_minimums=opts.tcb_table,
                offline=offline,
            ),
        )
        return _verdict(output, "sev-snp report", result, "no minimum TCB for this product")

    _run(action, output)


@verify_app.command("hcl")
def verify_hcl_cmd(
    report: Annotated[
        Path,
        typer.Argument(
            help="Azure HCL report (vTPM NV 0x01400001), or a bare SEV-SNP report with "
            "--runtime-data; raw binary, hex or base64."
        ),
    ],
    cert: Annotated[Path, typer.Option("--cert", help="The VCEK (PEM or DER), as THIM serves it.")],
    chain: Annotated[
        Path | None,
        typer.Option("--chain", help="PEM bundle with ASK and ARK (checked against pins)."),
    ] = None,
    runtime_data: Annotated[
        Path | None,
        typer.Option(
            "--runtime-data",
            help="The runtime-claims JSON, when REPORT is a bare SNP report instead of the "
            "whole HCL report.",
        ),
    ] = None,
    measurement: Annotated[
        list[str] | None,
        typer.Option(
            "--measurement", help="Paravisor launch measurement you trust, NAME=HEX (repeatable)."
        ),
    ] = None,
    tcb_table: TcbTableOpt = None,
    at: AtOpt = None,
    output: FormatOpt = OutputFormat.text,
) -> None:
    """Verify an Azure CVM's HCL report: its SEV-SNP report against pinned AMD roots, and that
    REPORT_DATA binds the runtime claims holding the vTPM's attestation key (HCLAkPub).

    This proves the AK belongs to a vTPM in a genuine SNP guest's paravisor. It does not show
    freshness: the paravisor made the report at boot; a quote by that AK over this audit's
    nonce does (`ccaudit verify evidence` checks both in a collected file).
    """

    def action() -> int:
        from auditor.verify.azure_hcl import hcl_ak_public, parse_hcl_report
        from auditor.verify.snp import SnpOptions, verify_snp
        from auditor.verify.vtpm_evidence import hcl_report_data, hcl_runtime_claims

        raw = _not_evidence(report, _read(report, "an HCL report"))
        if runtime_data is not None:
            data, _ = decode_blob(raw, expect_min=0x4A0)
            hw, runtime = data[:0x4A0], _read(runtime_data, "runtime claims").rstrip(b"\x00")
        else:
            data, _ = decode_blob(raw, expect_min=0x4D4)
            hcl = parse_hcl_report(data)
            if hcl.report_type != "snp":
                expected = hcl_report_data(hcl.runtime_data).hex()
                raise _Unusable(
                    "this HCL report holds a TDX report: verify the TD quote Azure made for it "
                    f"with `ccaudit verify tdx QUOTE --report-data {expected}`"
                )
            hw, runtime = hcl.hw_report, hcl.runtime_data
        claims = hcl_runtime_claims(runtime)
        opts = build_evidence_options(tcb_table=tcb_table)
        result = verify_snp(
            hw,
            cert=_read(cert, "a certificate"),
            chain=_read(chain, "a PEM chain") if chain else (),
            options=SnpOptions(
                at=_at(at),
                expected_report_data=hcl_report_data(runtime),
                reference_measurements=[parse_reference(m) for m in measurement or []],
                tcb_minimums=opts.tcb_table,
                offline=True,
            ),
        )
        ak = hcl_ak_public(runtime)
        config = claims.get("vm-configuration")
        result.facts["hcl"] = {
            "vm_unique_id": config.get("vmUniqueId") if isinstance(config, dict) else None,
            "ak": "HCLAkPub present" if ak is not None else "no HCLAkPub in the runtime claims",
            "runtime_claims_sha256": hcl_report_data(runtime)[:32].hex(),
        }
        if ak is None:
            result.checks.append(Check("hcl_ak", False, "the runtime claims carry no HCLAkPub"))
        return _verdict(output, "azure hcl report", result, "no minimum TCB for this product")

    _run(action, output)


@verify_app.command("tdx")
def verify_tdx_cmd(
    quote: Annotated[Path, typer.Argument(help="TDX quote v4: raw binary, hex or base64.")],
    collateral: Annotated[
        Path | None,
        typer.Option("--collateral", help="Directory with TCB Info, QE Identity, CRLs."),
    ] = None,
    report_data: Annotated[
        str | None, typer.Option("--report-data", help="Expected REPORTDATA, 128 hex.")
    ] = None,
    mrtd: Annotated[
        list[str] | None, typer.Option("--mrtd", help="Reference MRTD NAME=HEX (repeatable).")
    ] = None,
    ccel: Annotated[
        Path | None,
        typer.Option("--ccel", help="CCEL event log (ACPI data/CCEL) to replay into RTMRs."),
    ] = None,
    at: AtOpt = None,
    output: FormatOpt = OutputFormat.text,
) -> None:
    """Verify a TDX quote: PCK chain to the pinned Intel root, QE and quote signatures, TCB."""

    def action() -> int:
        from auditor.verify.tdx import TdxOptions, verify_tdx

        data, _ = decode_blob(_not_evidence(quote, _read(quote, "a TDX quote")), expect_min=0x278)
        opts = build_evidence_options(tdx_collateral=collateral)
        result = verify_tdx(
            data,
            TdxOptions(
                at=_at(at),
                collateral=opts.tdx_collateral,
                expected_report_data=_hex(report_data, 64, "--report-data"),
                reference_mrtd=[parse_reference(m) for m in mrtd or []],
                ccel_data=_read(ccel, "a CCEL log") if ccel else None,
            ),
        )
        return _verdict(output, "tdx quote", result, "no verified collateral (--collateral DIR)")

    _run(action, output)


@verify_app.command("evidence")
def verify_evidence_cmd(
    file: Annotated[Path, typer.Argument(help="Evidence file from `ccaudit guest collect`.")],
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Audit state directory holding issued nonces."),
    ] = None,
    measurement: Annotated[
        list[str] | None,
        typer.Option("--measurement", help="Reference launch measurement NAME=HEX (repeatable)."),
    ] = None,
    key_broker_key: Annotated[
        list[Path] | None,
        typer.Option("--key-broker-key", help="PEM public key of your key broker (repeatable)."),
    ] = None,
    endorsement_root: Annotated[
        Path | None, typer.Option("--endorsement-root", help="GCE endorsement root (PEM).")
    ] = None,
    demo_trust_anchor: Annotated[
        Path | None,
        typer.Option(
            "--demo-trust-anchor",
            metavar="DIR",
            help="Demo only: also trust this self-made AMD-style chain (the demo fleet's); "
            "every verdict resting on it says 'demo trust anchor, not AMD'.",
        ),
    ] = None,
    at: AtOpt = None,
    output: FormatOpt = OutputFormat.text,
) -> None:
    """Verify a guest evidence file: the hardware report, its binding to nonce and VM, the rest."""

    def action() -> int:
        from auditor.guest.format import GuestEvidenceError, parse_evidence_file
        from auditor.verify.evidence import verify_guest_evidence

        raw = _read(file, "an evidence file")
        try:
            doc = parse_evidence_file(raw)
        except GuestEvidenceError as err:
            raise _Unusable(f"{file}: {err}") from err
        opts = build_evidence_options(
            reference_measurements=measurement or [],
            key_broker_keys=key_broker_key or [],
            endorsement_root=endorsement_root,
            demo_trust_anchor=demo_trust_anchor,
            offline=True,
        )
        opts.at = _at(at)
        if state is not None:
            import hashlib

            from auditor.guest.nonces import STORE_FILE, NonceStore

            store = NonceStore(state / STORE_FILE)
            digest = hashlib.sha256(raw).hexdigest()
            vm_id = str(doc["vm"]["id"])
            now = opts.at or datetime.now(UTC)  # freshness is judged at --at, like validity

            def check(nonce: str) -> tuple[bool, str]:
                try:
                    return store.check(nonce, vm_id, digest, now=now)
                except (OSError, ValueError) as err:  # corrupt or unreadable nonce state
                    return False, f"nonce state unusable: {err}"

            opts.nonce_check = check
        result = verify_guest_evidence(doc, opts)
        hardware = result.hardware
        authentic = bool(hardware.get("authentic"))
        valid = authentic and bool(hardware.get("bound"))
        fresh = result.check("nonce") if state is not None else None
        checks = _with_tcb(result.checks, "no minimum TCB or no TDX collateral")
        valid = valid and result.check("identity") is not False
        if state is not None:
            valid = valid and fresh is True
        # the key-release receipt and endorsement are reported, but judge other parties
        passes = valid and fresh is True and _policy_holds(checks)
        facts = {"vm": doc.get("vm", {}).get("id"), "hardware": hardware, "guest": result.guest}
        _emit(
            output,
            "guest evidence",
            valid,
            checks,
            facts,
            result.summary,
            authentic=authentic,
            passes=passes,
            fresh=fresh,
            show_fresh=True,
            # a vTPM beside a TEE report judges the vtpm party; on Azure it is the binding
            other_parts=_OTHER if hardware.get("path") == "azure-hcl" else (*_OTHER, "vtpm"),
        )
        return 0 if passes else 1

    _run(action, output)


@verify_app.command("endorsement")
def verify_endorsement_cmd(
    endorsement: Annotated[
        Path, typer.Argument(help="GCE VMLaunchEndorsement (.binarypb): raw, hex or base64.")
    ],
    root: Annotated[
        Path, typer.Option("--root", help="Endorsement root certificate (GCE-cc-tcb-root, PEM).")
    ],
    measurement: Annotated[
        str | None,
        typer.Option("--measurement", help="SNP MEASUREMENT (96 hex) the hardware reported."),
    ] = None,
    vcpus: Annotated[
        int | None, typer.Option("--vcpus", help="vCPU count the measurement is for.")
    ] = None,
    mrtd: Annotated[
        str | None, typer.Option("--mrtd", help="TDX MRTD (96 hex) the quote reported.")
    ] = None,
    at: AtOpt = None,
    output: FormatOpt = OutputFormat.text,
) -> None:
    """Verify a GCE firmware launch endorsement and match the measured firmware against it."""

    def action() -> int:
        from auditor.verify.evidence import load_endorsement_root
        from auditor.verify.gce_endorsement import verify_launch_endorsement

        data, _ = decode_blob(_read(endorsement, "an endorsement"))
        result = verify_launch_endorsement(
            data,
            load_endorsement_root(root),
            measurement=_hex(measurement, 48, "--measurement"),
            vcpus=vcpus,
            mrtd=_hex(mrtd, 48, "--mrtd"),
            at=_at(at),
        )
        valid = result.ok
        facts = dict(result.facts)
        authentic = result.check("signature") is not False and result.check("chain") is not False
        _emit(
            output,
            "gce launch endorsement",
            valid,
            result.checks,
            facts,
            authentic=authentic,
            passes=valid,
        )
        return 0 if valid else 1

    _run(action, output)


@verify_app.command("sev-launch")
def verify_sev_launch_cmd(
    launch: Annotated[
        Path,
        typer.Argument(
            help="What getLaunchSecurityInfo returned (JSON: sev-measurement, sev-api-major, "
            "...), e.g. a run's raw/libvirt/<host>/launch-security/<domain>.json."
        ),
    ],
    tik: Annotated[
        Path, typer.Option("--tik", help="The launch session's TIK (16 bytes, raw or hex).")
    ],
    digest: Annotated[
        str | None,
        typer.Option("--digest", help="Expected launch digest, 64 hex (ccaudit measure sev)."),
    ] = None,
    ovmf: Annotated[
        Path | None, typer.Option("--ovmf", help="Compute the digest from this OVMF image.")
    ] = None,
    es: Annotated[bool, typer.Option("--es", help="SEV-ES (VMSAs measured) with --ovmf.")] = False,
    vcpus: Annotated[int, typer.Option("--vcpus", min=1, max=512, help="vCPUs (SEV-ES).")] = 1,
    kernel: KernelOpt = None,
    initrd: InitrdOpt = None,
    append: AppendOpt = None,
    policy: Annotated[
        str | None, typer.Option("--policy", help="The guest policy you launched with (hex).")
    ] = None,
    output: FormatOpt = OutputFormat.text,
) -> None:
    """Check a SEV or SEV-ES launch measurement with your launch session's TIK.

    Passes (exit 0) when the measurement is the HMAC the secure processor computes over the
    launch digest you expect (so that firmware was loaded, under your session) and the policy
    forbids debugging and sending the guest; SEV without SNP stays without memory integrity
    after launch, which the scan scores separately.
    """

    def action() -> int:
        from auditor.verify.sev_launch import SevLaunchError, check_launch

        if (digest is None) == (ovmf is None):
            raise _Unusable("give the expected launch digest: --digest HEX or --ovmf IMAGE")
        try:
            info = json.loads(_read(launch, "launch-security JSON"))
        except ValueError as err:
            raise _Unusable(f"{launch}: not JSON: {err}") from err
        if not isinstance(info, dict):
            raise _Unusable(f"{launch}: expected a JSON object of typed parameters")
        expected = (
            _hex(digest, 32, "--digest")
            if digest
            else _sev_digest(ovmf, es, vcpus, kernel, initrd, append)
        )
        assert expected is not None
        try:
            wanted = int(policy, 16) if policy else None
            result = check_launch(info, expected, _tik(tik), wanted)
        except ValueError as err:  # SevLaunchError, or a --policy that is not hex
            message = f"{launch}: {err}" if isinstance(err, SevLaunchError) else f"--policy: {err}"
            raise _Unusable(message) from None
        _emit(
            output,
            "sev launch measurement",
            result.authentic,
            result.checks,
            result.facts(),
            authentic=result.authentic,
            passes=result.passes,
        )
        return 0 if result.passes else 1

    _run(action, output)


def _tik(path: Path) -> bytes:
    data = _read(path, "a TIK")
    if len(data) == 16:
        return data
    try:
        text = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        text = b""
    if len(text) != 16:
        raise _Unusable(f"--tik {path}: expected 16 bytes (raw, or 32 hex characters)")
    return text


def _sev_digest(
    ovmf: Path | None,
    es: bool,
    vcpus: int,
    kernel: Path | None,
    initrd: Path | None,
    append: str | None,
) -> bytes:
    from auditor.verify.measurement import MeasurementError, expected_sev_launch_digest

    assert ovmf is not None
    try:
        hexdigest = expected_sev_launch_digest(
            "sev-es" if es else "sev", ovmf, vcpus, kernel=kernel, initrd=initrd, append=append
        )
    except MeasurementError as err:
        raise _Unusable(f"cannot compute the launch digest: {err}") from err
    return bytes.fromhex(hexdigest)


measure_app = typer.Typer(
    no_args_is_help=True,
    help="Compute the launch measurement you expect, to pin as a reference.",
)


class VmmType(StrEnum):
    qemu = "qemu"
    ec2 = "ec2"
    gce = "gce"


@measure_app.command("snp")
def measure_snp_cmd(
    ovmf: OvmfOpt,
    vcpus: Annotated[int, typer.Option("--vcpus", min=1, max=512, help="vCPU count.")] = 1,
    vcpu_type: Annotated[
        str, typer.Option("--vcpu-type", help="CPU model as sev-snp-measure names it.")
    ] = "EPYC-v4",
    vmm_type: Annotated[
        VmmType, typer.Option("--vmm-type", help="qemu, ec2 (AWS) or gce (Google).")
    ] = VmmType.qemu,
    kernel: KernelOpt = None,
    initrd: InitrdOpt = None,
    append: AppendOpt = None,
    guest_features: Annotated[
        str,
        typer.Option(
            "--guest-features",
            help="SEV_FEATURES as hex (0x1 = SNP only; kernels >= 6.6 often use 0x21).",
        ),
    ] = "0x1",
    name: Annotated[
        str | None,
        typer.Option("--name", help="Print NAME=HEX for --reference-measurement."),
    ] = None,
) -> None:
    """Expected SEV-SNP launch MEASUREMENT (sev-snp-measure), for --reference-measurement."""

    def action() -> int:
        from auditor.verify.measurement import expected_snp_measurement

        for path, flag in ((ovmf, "--ovmf"), (kernel, "--kernel"), (initrd, "--initrd")):
            if path is not None and not path.is_file():
                raise _Unusable(f"{flag} {path}: no such file")
        try:
            features = int(guest_features, 0)
        except ValueError as err:
            raise _Unusable(f"--guest-features {guest_features!r}: not a number") from err
        try:
            digest = expected_snp_measurement(
                ovmf,
                vcpus,
                vcpu_type=vcpu_type,
                vmm_type=vmm_type.value,
                kernel=kernel,
                initrd=initrd,
                append=append,
                guest_features=features,
            )
        except (ValueError, KeyError, OSError) as err:
            raise _Unusable(f"cannot compute the measurement: {err}") from err
        typer.echo(f"{name}={digest}" if name else digest)
        return 0

    _run(action)


def _measure_sev(
    mode: str,
    ovmf: Path,
    vcpus: int,
    vcpu_type: str,
    vmm_type: VmmType,
    kernel: Path | None,
    initrd: Path | None,
    append: str | None,
) -> None:
    def action() -> int:
        from auditor.verify.measurement import MeasurementError, expected_sev_launch_digest

        for path, flag in ((ovmf, "--ovmf"), (kernel, "--kernel"), (initrd, "--initrd")):
            if path is not None and not path.is_file():
                raise _Unusable(f"{flag} {path}: no such file")
        try:
            typer.echo(
                expected_sev_launch_digest(
                    mode,
                    ovmf,
                    vcpus,
                    vcpu_type=vcpu_type,
                    vmm_type=vmm_type.value,
                    kernel=kernel,
                    initrd=initrd,
                    append=append,
                )
            )
        except MeasurementError as err:
            raise _Unusable(f"cannot compute the launch digest: {err}") from err
        return 0

    _run(action)


@measure_app.command("sev")
def measure_sev_cmd(
    ovmf: OvmfOpt,
    kernel: KernelOpt = None,
    initrd: InitrdOpt = None,
    append: AppendOpt = None,
) -> None:
    """Expected SEV launch digest (32 bytes hex), for `ccaudit verify sev-launch --digest`.

    SEV measures the OVMF image and, for measured direct boot (libvirt kernelHashes='yes'),
    the table of kernel, initrd and command-line hashes.
    """
    _measure_sev("sev", ovmf, 1, "EPYC-v4", VmmType.qemu, kernel, initrd, append)


@measure_app.command("sev-es")
def measure_sev_es_cmd(
    ovmf: OvmfOpt,
    vcpus: Annotated[int, typer.Option("--vcpus", min=1, max=512, help="vCPU count.")] = 1,
    vcpu_type: Annotated[
        str, typer.Option("--vcpu-type", help="CPU model as sev-snp-measure names it.")
    ] = "EPYC-v4",
    vmm_type: Annotated[VmmType, typer.Option("--vmm-type", help="qemu, ec2 or gce.")] = (
        VmmType.qemu
    ),
    kernel: KernelOpt = None,
    initrd: InitrdOpt = None,
    append: AppendOpt = None,
) -> None:
    """Expected SEV-ES launch digest: OVMF (and kernel hashes) plus one VMSA per vCPU."""
    _measure_sev("sev-es", ovmf, vcpus, vcpu_type, vmm_type, kernel, initrd, append)
