"""Commands on stored runs: `report`, `merge`, `keys create`, `bundle verify`, `reverify`,
`schema`. None of them touches a cloud."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from auditor.cli.common import (
    EXIT_BELOW_THRESHOLD,
    EXIT_INCOMPLETE,
    EXIT_OK,
    err_console,
    exit_code,
    fail,
    formats,
    load_run_or_fail,
)
from auditor.cli.outputs import emit, seal

keys_app = typer.Typer(help="Signing keys for evidence bundles.", no_args_is_help=True)
bundle_app = typer.Typer(help="Tamper-evident run directories.", no_args_is_help=True)


def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A stored run directory (or its result.json).")],
    fmt: Annotated[
        list[str] | None,
        typer.Option("--format", metavar="FORMATS", help="Formats to render (as for scan)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Write into this directory instead of the run directory."),
    ] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Re-sign a signed run's manifest after adding the reports to it.",
        ),
    ] = None,
) -> None:
    """Re-render a stored run in other formats, without touching any cloud.

    Reports written into a sealed run directory are sealed with it (manifest.json is rewritten
    to list them), so `ccaudit bundle verify` still passes; a signed run needs --signing-key
    for that, or --output to write the reports elsewhere.
    """
    chosen = formats(fmt)
    run = load_run_or_fail(run_dir)
    base = run_dir if run_dir.is_dir() else run_dir.parent
    sealed = output is None and (base / "manifest.json").is_file()
    if sealed and (base / "manifest.sig").is_file() and signing_key is None:
        raise fail(
            f"{base} is signed: give --signing-key to re-sign it with the new reports, or "
            "--output DIR to write them elsewhere"
        )
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    emit(run, chosen, None, output or base)
    if sealed and any(f != "table" for f in chosen):
        seal(base, run, signing_key)


def merge_cmd(
    run_dirs: Annotated[
        list[Path], typer.Argument(metavar="RUN_DIR...", help="Shard run directories to join.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(help="New directory for the merged run. Default: ./ccaudit-runs/<run-id>."),
    ] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Ed25519 private key to sign the merged manifest."),
    ] = None,
    fmt: Annotated[
        list[str] | None,
        typer.Option("--format", metavar="FORMATS", help="Formats to render (as for scan)."),
    ] = None,
) -> None:
    """Join shard runs (scan --shard K/N) into one run: one result, one manifest, all coverage.

    Refuses runs with different rule packs, tool versions or overlapping scopes. Exit 3 when
    the merged coverage is incomplete (a gap in any shard, or a shard not given).
    """
    from auditor import reports
    from auditor.run import new_run_id
    from auditor.runs.merge import MergeError, merge_runs

    chosen = formats(fmt)
    run_id = new_run_id()
    target = output or Path("ccaudit-runs") / run_id
    try:
        merged = merge_runs(run_dirs, target, signing_key=signing_key, run_id=run_id)
    except MergeError as err:
        raise fail(str(err)) from err
    run = merged.run
    emit(run, chosen, None, target)
    if any(f != reports.TERMINAL for f in chosen):  # reports were added: seal them too
        seal(target, run, signing_key)
    for rel in merged.conflicts:
        err_console.print(
            f"[yellow]note:[/] shards disagree on {rel}; the first run's copy was kept "
            "(listed in merge.json)",
            highlight=False,
            soft_wrap=True,
        )
    err_console.print(
        f"merged {len(run_dirs)} run(s) into {target} ({len(run.vms)} VMs)",
        highlight=False,
        soft_wrap=True,
    )
    code = exit_code(run, None)
    if code == EXIT_INCOMPLETE:
        err_console.print(
            f"[yellow]collection incomplete:[/] {len(run.coverage.gaps)} gap(s)", highlight=False
        )
    raise typer.Exit(code)


@keys_app.command("create")
def keys_create(
    path: Annotated[Path, typer.Argument(help="Where to write the private key (PEM, mode 0600).")],
) -> None:
    """Make an Ed25519 signing key; prints the public key (also written to PATH.pub)."""
    from auditor.runs.bundle import BundleError, create_keypair

    try:
        public = create_keypair(path)
    except (BundleError, OSError) as err:
        raise fail(str(err)) from err
    err_console.print(f"private key: {path} (keep it secret)", highlight=False, soft_wrap=True)
    sys.stdout.write(public if public.endswith("\n") else public + "\n")


@bundle_app.command("verify")
def bundle_verify(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with manifest.json.")],
    public_key: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Public key to check the signature with.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Re-hash every file, check the signature and the link to the previous run. Exit 1 if not."""
    from auditor.runs.bundle import verify_bundle

    report = verify_bundle(run_dir, public_key=public_key)
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        for check in report.checks:
            mark = {
                True: "[green]ok[/]",
                False: "[bold red]FAIL[/]",
                None: "[yellow]not checked[/]",
            }
            Console().print(f"{mark[check.ok]}  {check.name}: {check.reason}", highlight=False)
        for problem in report.problems:
            Console().print(f"   {problem.kind}: {problem.path}", highlight=False)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_BELOW_THRESHOLD)


def reverify_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A stored run directory.")],
    trust_bundle_inputs: Annotated[
        bool,
        typer.Option(
            "--trust-bundle-inputs",
            help="Also trust the owner inputs the bundle carries (key-broker keys, reference "
            "measurements, nonce state, TCB table, endorsement root, demo anchor, MAA pins "
            "and keys): the result is then 'reproduced', not independently verified.",
        ),
    ] = False,
    key_broker_key: Annotated[
        list[Path] | None,
        typer.Option("--key-broker-key", help="PEM public key of your key broker (repeatable)."),
    ] = None,
    reference_measurement: Annotated[
        list[str] | None,
        typer.Option("--reference-measurement", help="Launch measurement you trust, NAME=HEX."),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Your audit state directory (the nonces you issued)."),
    ] = None,
    tcb_table: Annotated[
        Path | None, typer.Option("--tcb-table", help="Your minimum-TCB table (YAML).")
    ] = None,
    endorsement_root: Annotated[
        Path | None, typer.Option("--endorsement-root", help="GCE endorsement root (PEM).")
    ] = None,
    demo_trust_anchor: Annotated[
        Path | None,
        typer.Option("--demo-trust-anchor", metavar="DIR", help="Demo only: the demo chain."),
    ] = None,
    maa_issuer: Annotated[
        list[str] | None, typer.Option("--maa-issuer", help="MAA issuer URL to trust.")
    ] = None,
    maa_jwks: Annotated[
        Path | None, typer.Option("--maa-jwks", help="That issuer's signing keys (JWKS).")
    ] = None,
) -> None:
    """Re-run verification and evaluation offline from the bundle and compare. Exit 1 if differs.

    It trusts this tool's own pinned vendor roots. The owner's inputs (key-broker keys,
    reference measurements, nonce state, ...) decide verdicts too; the bundle's own copies are
    used only with --trust-bundle-inputs, otherwise only what you give here. The first line says
    which.
    """
    from auditor.api import ScanError
    from auditor.rules.loader import RulePackError
    from auditor.runs.bundle import BundleError
    from auditor.runs.reverify import reverify
    from auditor.verify.options import HardwareOptionError, parse_reference

    load_run_or_fail(run_dir)  # a corrupt result.json: one line, before anything else

    try:
        refs = [parse_reference(r) for r in reference_measurement or []]
        report = reverify(
            run_dir,
            trust_bundle_inputs=trust_bundle_inputs,
            key_broker_keys=key_broker_key or [],
            reference_measurements=refs or None,
            nonce_state=state,
            tcb_table=tcb_table,
            endorsement_root=endorsement_root,
            demo_trust_anchor=demo_trust_anchor,
            maa_issuers=maa_issuer or None,
            maa_jwks=maa_jwks,
        )
    except (BundleError, ScanError, RulePackError, HardwareOptionError) as err:
        raise fail(str(err)) from err
    console = Console()
    console.print(f"trust: {report.trust}", highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    if report.ok:
        console.print(
            f"[green]reproduced[/]: {report.vms} VMs, same levels, parties, findings and evidence",
            highlight=False,
        )
        raise typer.Exit(EXIT_OK)
    for vm, diffs in report.by_vm().items():
        for d in diffs:
            console.print(
                f"[red]differs[/] {vm} {d.aspect}: recorded {d.recorded!r}, now {d.reproduced!r}",
                highlight=False,
            )
    raise typer.Exit(EXIT_BELOW_THRESHOLD)


def schema_cmd() -> None:
    """Print the JSON Schema of the result document (result.json, --format json)."""
    from auditor.schema import result_schema_text

    sys.stdout.write(result_schema_text())


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
    app.command("merge")(merge_cmd)
    app.command("reverify")(reverify_cmd)
    app.command("schema")(schema_cmd)
    app.add_typer(keys_app, name="keys")
    app.add_typer(bundle_app, name="bundle")
