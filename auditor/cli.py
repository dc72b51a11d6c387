"""`ccaudit`: the command line. A thin layer over `auditor.api`, with progress and exit codes.

Exit codes: 0 done and no policy gate failed; 1 a gate failed (`--fail-below`,
`--fail-on-regression`, `--max-undetermined`); 2 usage or configuration error; 3 collection
incomplete (gaps listed). When 1 and 3 both apply: 1. An interrupted scan exits 128 + the
signal (130 SIGINT, 143 SIGTERM) after writing its partial run (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from auditor import cli_history, reports
from auditor._version import __version__
from auditor.api import ScanError, scan
from auditor.cli_guest import guest_app
from auditor.cli_verify import measure_app, verify_app
from auditor.collect import ProgressListener
from auditor.document import SECTIONS
from auditor.engine import Engine
from auditor.model import AuditRun, Level
from auditor.providers.base import ScopeResult
from auditor.reports.table import print_table
from auditor.rules.loader import RulePackError, load_packs
from auditor.run import load_run, new_run_id

EXIT_OK = 0
EXIT_BELOW_THRESHOLD = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3

HELP = """Audit confidential VMs: who can still read the data.

For every VM and every party that could reach the plaintext (control plane, hypervisor,
firmware, attestation service, vTPM, disk-key custodian, guest agents, image publisher,
CPU vendor) cc-auditor decides CAN_ACCESS, CLAIMED_EXCLUDED (the provider says so),
EXCLUDED (owner-verified hardware evidence) or UNDETERMINED (evidence missing), and an
assurance level L0..L4.

Exit codes: 0 ok; 1 a policy gate failed (--fail-below, --fail-on-regression,
--max-undetermined); 2 usage/configuration error; 3 collection incomplete (the gaps are
listed). 1 wins over 3. Interrupted: 130 (SIGINT) or 143 (SIGTERM), partial run kept.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
rules_app = typer.Typer(help="Inspect and validate rule packs.", no_args_is_help=True)
fake_app = typer.Typer(help="The loopback replay server (fakecloud).", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys for evidence bundles.", no_args_is_help=True)
bundle_app = typer.Typer(help="Tamper-evident run directories.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(fake_app, name="fakecloud")
app.add_typer(keys_app, name="keys")
app.add_typer(bundle_app, name="bundle")
app.add_typer(guest_app, name="guest")
app.add_typer(verify_app, name="verify")
app.add_typer(measure_app, name="measure")
cli_history.register(app)  # `diff`, `history`

err_console = Console(stderr=True)


class Provider(StrEnum):
    aws = "aws"
    gcp = "gcp"
    azure = "azure"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


class LevelOpt(StrEnum):
    L0 = "L0"
    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ccaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """cc-auditor."""


class _CliProgress(ProgressListener):
    """Collection progress on stderr: scopes done, VMs seen, failures."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[vms]} VMs, {task.fields[failed]} scope errors"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("planning", total=None, vms=0, failed=0)
        self.vms = 0
        self.failed = 0

    def __enter__(self) -> _CliProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def planning(self, provider: str) -> None:
        self.progress.update(self.task, description=f"{provider}: finding accounts and regions")

    def planned(self, scopes: int) -> None:
        self.progress.update(self.task, total=scopes, description="collecting scopes")

    def scope_done(self, result: ScopeResult) -> None:
        self.vms += len(result.vms)
        self.failed += 1 if result.errors else 0
        self.progress.update(self.task, advance=1, vms=self.vms, failed=self.failed)


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def exit_code(run: AuditRun, fail_below: Level | None) -> int:
    """0 ok, 1 a VM below the gate (wins), 3 collection incomplete."""
    if fail_below is not None and any(vm.level.rank < fail_below.rank for vm in run.vms):
        return EXIT_BELOW_THRESHOLD
    if not run.coverage.complete:
        return EXIT_INCOMPLETE
    return EXIT_OK


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def _formats(values: list[str] | None) -> list[str]:
    """`--format a,b --format c` -> [a, b, c], checked against the known formats."""
    chosen = list(dict.fromkeys(_split(values))) or [reports.TERMINAL]
    unknown = [f for f in chosen if f not in reports.names()]
    if unknown:
        raise _fail(f"unknown --format {', '.join(unknown)} (known: {', '.join(reports.names())})")
    return chosen


def _emit(run: AuditRun, formats: list[str], output: Path | None, run_dir: Path | None) -> None:
    """Terminal table, stdout, --output, and the run directory, by the rules in the README."""
    files = [f for f in formats if f != reports.TERMINAL]
    to_stdout = len(formats) == 1 and files and output is None and reports.FORMATS[files[0]].text
    if reports.TERMINAL in formats:
        if output is not None and not files:
            output.parent.mkdir(parents=True, exist_ok=True)
            with output.open("w", encoding="utf-8") as fh:
                print_table(run, Console(file=fh, width=200, color_system=None))
        else:
            print_table(run, Console())
    for name in files:
        try:
            rendered = reports.render(run, name)
        except reports.ReportError as err:
            err_console.print(f"[yellow]warning:[/] {err}", highlight=False, soft_wrap=True)
            continue
        if to_stdout:
            for data in rendered.values():
                sys.stdout.write(data.decode("utf-8"))
        pairs: list[tuple[Path, bytes]] = []
        if output is not None and len(files) == 1 and len(rendered) == 1 and not output.is_dir():
            pairs.append((output, next(iter(rendered.values()))))
        elif output is not None:
            pairs.extend((output / rel, data) for rel, data in rendered.items())
        if run_dir is not None:
            pairs.extend((run_dir / rel, data) for rel, data in rendered.items())
        for target, data in pairs:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            if not to_stdout:
                err_console.print(f"wrote {target}", highlight=False, soft_wrap=True)


def _seal(run_dir: Path, run: AuditRun, signing_key: Path | None) -> None:
    """Write the run's manifest (every file hashed, chained to the previous run, signed)."""
    from auditor.bundle import BundleError, write_manifest

    try:
        write_manifest(run_dir, run, signing_key=signing_key)
    except (BundleError, OSError, ValueError) as err:
        raise _fail(f"cannot seal {run_dir}: {err}") from err
    signed = " and signed" if signing_key else " (unsigned: give --signing-key to sign it)"
    err_console.print(
        f"manifest written{signed}: {run_dir / 'manifest.json'}", highlight=False, soft_wrap=True
    )


def _read_projects(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise _fail(f"cannot read --projects-file {path}: {err.strerror or err}") from err
    out = [line.split("#", 1)[0].strip() for line in lines]
    return [p for p in out if p]


def _run_scan(
    *,
    providers: list[str],
    projects: list[str] | None = None,
    subscriptions: list[str] | None = None,
    log_window: int = 30,
    guest_evidence: Path | None = None,
    maa_issuers: list[str] | None = None,
    maa_jwks: Path | None = None,
    maa_fetch_keys: bool = False,
    replay: Path | None,
    profiles: list[str],
    regions: list[str] | None,
    endpoint_url: str | None,
    rules: list[Path],
    run_dir: Path | None,
    concurrency: int,
    processes: int | None = None,
    run_id: str | None = None,
    shard: str | None = None,
    hardware: dict[str, Any] | None = None,
) -> AuditRun:
    try:
        with _CliProgress(err_console) as progress:
            return scan(
                providers or None,
                projects=projects or [],
                subscriptions=subscriptions or [],
                guest_evidence=guest_evidence,
                maa_issuers=maa_issuers or [],
                maa_jwks=maa_jwks,
                maa_fetch_keys=maa_fetch_keys,
                log_window_days=log_window,
                replay=replay,
                profiles=profiles,
                regions=regions,
                endpoint_url=endpoint_url,
                rules=list(rules),
                run_dir=run_dir,
                concurrency=concurrency,
                processes=processes,
                progress=progress,
                run_id=run_id,
                shard=shard,
                **(hardware or {}),
            )
    except (ScanError, RulePackError) as err:
        raise _fail(str(err)) from err


#: Exit status of an interrupted scan: 128 + the signal (130 for SIGINT, 143 for SIGTERM).
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _interruptible() -> Iterator[list[int]]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the scan (main thread only), so that the
    partial run is written and marked interrupted instead of the process dying mid-write."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in INTERRUPT_SIGNALS}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _interrupted(
    stop: KeyboardInterrupt, target: Path | None, signing_key: Path | None, received: list[int]
) -> NoReturn:
    """Seal the partial run (it says `interrupted`), explain, exit 128 + signal."""
    from auditor.run import ScanInterrupted

    code = 128 + (received[0] if received else int(signal.SIGINT))
    if isinstance(stop, ScanInterrupted):
        run = stop.run
        if target is not None:
            _seal(target, run, signing_key)
        unread = sum(1 for c in run.coverage.scopes if c.status == "interrupted")
        err_console.print(
            f"[yellow]interrupted:[/] {len(run.vms)} VMs from the scopes already read were "
            f"evaluated; {unread} scope(s) not read are listed as gaps"
            + (f"; partial run saved in {target} (coverage.interrupted = true)" if target else ""),
            highlight=False,
            soft_wrap=True,
        )
    else:
        err_console.print(
            "[yellow]interrupted[/] before the run was written"
            + (f"; {target} is marked INCOMPLETE" if target else ""),
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(code)


@app.command("scan")
def scan_cmd(
    provider: Annotated[
        list[Provider] | None,
        typer.Option(
            help="Cloud to audit; repeat for several. Default: the clouds in --replay DIR, "
            "else aws."
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Audit a replay directory (or a stored run directory) instead of the live "
            "cloud: it is served on 127.0.0.1 and read with the real SDK.",
        ),
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="AWS profile (repeat for several accounts). Default: boto3's chain.",
        ),
    ] = None,
    regions: Annotated[
        list[str] | None,
        typer.Option(
            metavar="R1,R2", help="Regions, comma-separated or repeated. Default: DescribeRegions."
        ),
    ] = None,
    project: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PROJECT",
            help="GCP project (repeat for several). Default: the credentials' project.",
        ),
    ] = None,
    projects_file: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="File with one GCP project id per line (# comments)."),
    ] = None,
    subscription: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ID",
            help="Azure subscription (repeat for several). Default: all the credential can list.",
        ),
    ] = None,
    log_window: Annotated[
        int,
        typer.Option(
            min=1,
            max=400,
            metavar="DAYS",
            help="GCP: how far back to read integrity logs (launch attestation, boot).",
        ),
    ] = 30,
    guest_evidence: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Evidence collected inside the VMs: `ccaudit guest collect` files (*.json: "
            "SEV-SNP report or TDX quote, event log, disk encryption) and Azure MAA tokens "
            "(*.jwt), attached to the VMs they name. Files that match no VM, are stale or "
            "not bound are listed as gaps and never raise a VM.",
        ),
    ] = None,
    maa_issuer: Annotated[
        list[str] | None,
        typer.Option(
            metavar="URL",
            help="Pinned Microsoft Azure Attestation issuer (repeatable); tokens from any other "
            "issuer fail.",
        ),
    ] = None,
    maa_jwks: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Signing keys (JWKS) of the pinned MAA issuer(s)."),
    ] = None,
    maa_fetch_keys: Annotated[
        bool,
        typer.Option(
            "--maa-fetch-keys",
            help="Fetch signing keys from each pinned issuer's /certs (network) when no "
            "--maa-jwks is given; the token's jku is never used.",
        ),
    ] = False,
    nonce_state: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Audit state holding the nonces `ccaudit guest challenge` issued (default: "
            "$CCAUDIT_HOME or ~/.local/share/ccaudit). Evidence with an unknown, expired or "
            "reused nonce is stale.",
        ),
    ] = None,
    reference_measurement: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=HEX",
            help="Launch measurement you trust (SNP MEASUREMENT or TDX MRTD, 96 hex); "
            "repeatable. Compute one with `ccaudit measure snp`. Rule packs may list more.",
        ),
    ] = None,
    tcb_table: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Your own minimum-TCB table (YAML, same shape as the shipped one) instead of "
            "the one derived from AMD security bulletins.",
        ),
    ] = None,
    key_broker_key: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="PEM",
            help="Public key of your key broker; its key-release receipts in guest evidence "
            "show data keys come from outside the provider. Repeatable.",
        ),
    ] = None,
    endorsement_root: Annotated[
        Path | None,
        typer.Option(
            metavar="PEM",
            help="Root certificate for GCE firmware launch endorsements (GCE-cc-tcb-root).",
        ),
    ] = None,
    tdx_collateral: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Intel TCB Info, QE Identity and CRLs for judging TDX quotes' TCB status.",
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Never fetch AMD KDS certificates; use those in the evidence or the cache. "
            "Replays are always offline.",
        ),
    ] = False,
    endpoint_url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Send API calls to this endpoint (e.g. a fakecloud)."),
    ] = None,
    rules: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE",
            help="Extra rule pack (YAML); repeatable; overrides rules with the same id.",
        ),
    ] = None,
    fmt: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            metavar="FORMATS",
            help="table, json, html, pdf, csv, parquet, sarif, junit, oscal, markdown; "
            "comma-separated or repeated. Files go into the run directory; one text format "
            "alone is also printed. Default: table.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Write the one requested format to this file (or several into this directory) "
            "instead of stdout."
        ),
    ] = None,
    fail_below: Annotated[
        LevelOpt | None,
        typer.Option(help="Exit 1 if any VM is below this level (L0..L4)."),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where to keep the run (raw/ responses, result.json). "
            "Default: <store>/runs/<run-id>."
        ),
    ] = None,
    no_save: Annotated[
        bool, typer.Option("--no-save", help="Do not write a run directory.")
    ] = False,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Ed25519 private key (ccaudit keys create) to sign the run's manifest.",
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            metavar="N",
            help="Cloud calls in flight at once, over all scopes (account x region, project, "
            "subscription) and their per-VM calls.",
        ),
    ] = 8,
    processes: Annotated[
        int,
        typer.Option(
            min=0,
            max=64,
            metavar="N",
            help="Worker processes that read the scopes, sharing --concurrency. 0 (default): "
            "one per core, at most 4, when there are at least 8 scopes per worker; 1: all in "
            "this process.",
        ),
    ] = 0,
    shard: Annotated[
        str | None,
        typer.Option(
            metavar="K/N",
            help="Read only shard K of N (1-based) of the scopes, chosen by a stable hash of "
            "(provider, account, region); join the shard runs with `ccaudit merge`.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="ccaudit.yaml: scope, rule packs, reference measurements, outputs, signing "
            "key, thresholds, store (docs/config.md). Flags override it.",
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            metavar="RUN",
            help="Compare with this run (directory, run id, or `latest` = the newest earlier "
            "run of the same scope in the store); writes diff.json and diff.md.",
        ),
    ] = None,
    fail_on_regression: Annotated[
        bool | None,
        typer.Option(
            "--fail-on-regression/--no-fail-on-regression",
            help="Exit 1 if any VM's level or any party status is worse than in --baseline.",
        ),
    ] = None,
    max_undetermined: Annotated[
        int | None,
        typer.Option(
            min=0, metavar="N", help="Exit 1 if more than N party statuses are UNDETERMINED."
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Run store: runs/<run-id>/ and index.sqlite "
            "(default: $CCAUDIT_HOME or ~/.local/share/ccaudit).",
        ),
    ] = None,
) -> None:
    """Collect, evaluate and report on one cloud (live or from a replay directory)."""
    formats = _formats(fmt)
    cfg = cli_history.load_cli_config(config)
    run_store = cli_history.run_store(store, cfg)
    chosen = cli_history.policy(
        cfg,
        fail_below=fail_below.value if fail_below else None,
        fail_on_regression=fail_on_regression,
        max_undetermined=max_undetermined,
        baseline=baseline,
        store=run_store,
    )
    if signing_key is None and cfg is not None:
        signing_key = cfg.path(cfg.signing_key)
    run_id = new_run_id()
    target = None if no_save else (run_dir or run_store.run_dir(run_id))
    projects = list(project or [])
    if projects_file is not None:
        projects.extend(_read_projects(projects_file))
    with _interruptible() as received:
        try:
            run = _run_scan(
                run_id=run_id,
                providers=[p.value for p in provider or []],
                projects=projects,
                subscriptions=list(subscription or []),
                log_window=log_window,
                guest_evidence=guest_evidence,
                maa_issuers=list(maa_issuer or []),
                maa_jwks=maa_jwks,
                maa_fetch_keys=maa_fetch_keys,
                replay=replay,
                profiles=profile or [],
                regions=_split(regions) or None,
                endpoint_url=endpoint_url,
                rules=rules or [],
                run_dir=target,
                concurrency=concurrency,
                processes=processes or None,
                shard=shard,
                hardware={
                    "nonce_state": nonce_state,
                    "reference_measurements": list(reference_measurement or []),
                    "tcb_table": tcb_table,
                    "key_broker_keys": list(key_broker_key or []),
                    "endorsement_root": endorsement_root,
                    "tdx_collateral": tdx_collateral,
                    "offline": offline,
                    "config": cfg.without_store() if cfg is not None else None,
                },
            )
        except KeyboardInterrupt as stop:
            _interrupted(stop, target, signing_key, received)
    _emit(run, formats, output, target)
    drift, note = cli_history.compare(run, chosen, run_store)
    if drift is not None:
        cli_history.write_diff(drift, target)
    if target is not None:
        _seal(target, run, signing_key)
        cli_history.index(run_store, run, target)
        err_console.print(f"run saved in {target}", highlight=False, soft_wrap=True)
    cli_history.write_outputs(run, cfg)
    code, _ = cli_history.gate_exit(run, chosen, drift, note)
    if code == EXIT_INCOMPLETE or (code and not run.coverage.complete):
        err_console.print(
            f"[yellow]collection incomplete:[/] {len(run.coverage.gaps)} gap(s), listed above",
            highlight=False,
        )
    raise typer.Exit(code)


@app.command("report")
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
) -> None:
    """Re-render a stored run in other formats, without touching any cloud."""
    formats = _formats(fmt)
    try:
        run = load_run(run_dir)
    except (OSError, ValueError) as err:
        raise _fail(f"cannot read run {run_dir}: {err}") from err
    base = run_dir if run_dir.is_dir() else run_dir.parent
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    _emit(run, formats, None, output or base)


@app.command("merge")
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
    from auditor.merge import MergeError, merge_runs

    formats = _formats(fmt)
    run_id = new_run_id()
    target = output or Path("ccaudit-runs") / run_id
    try:
        merged = merge_runs(run_dirs, target, signing_key=signing_key, run_id=run_id)
    except MergeError as err:
        raise _fail(str(err)) from err
    run = merged.run
    _emit(run, formats, None, target)
    if any(f != reports.TERMINAL for f in formats):  # reports were added: seal them too
        _seal(target, run, signing_key)
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
    from auditor.bundle import BundleError, create_keypair

    try:
        public = create_keypair(path)
    except (BundleError, OSError) as err:
        raise _fail(str(err)) from err
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
    from auditor.bundle import verify_bundle

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


@app.command("reverify")
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
    from auditor.bundle import BundleError, reverify
    from auditor.verify.options import HardwareOptionError, parse_reference

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
        raise _fail(str(err)) from err
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


#: What `ccaudit demo` writes besides the terminal table.
DEMO_FORMATS = ["table", "json", "html", "pdf", "csv", "markdown"]

#: The demo fleet's MAA token is signed by a demo key for this made-up issuer, never Microsoft's.
DEMO_MAA_ISSUER = "https://ccaudit-demo-maa.example"


def demo_fleet_dir() -> Path:
    """The embedded demo replay: inside the wheel, or examples/ in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_demo" / "demo-fleet", here.parent / "examples" / "demo-fleet"):
        if (candidate / "aws").is_dir():
            return candidate
    raise FileNotFoundError("the embedded demo fleet is missing from this installation")


@app.command("demo")
def demo_cmd(
    out: Annotated[
        Path, typer.Option(help="Directory for the demo run (raw/ and result.json).")
    ] = Path("ccaudit-demo"),
) -> None:
    """Audit the embedded demo fleet: fakecloud + the real cloud SDK code paths, end to end."""
    try:
        fleet = demo_fleet_dir()
    except FileNotFoundError as err:
        raise _fail(str(err)) from err
    err_console.print(
        f"Serving the demo fleet ({fleet}) on 127.0.0.1 and scanning it with the real cloud SDKs…",
        highlight=False,
    )
    if out.exists() and any(out.iterdir()):
        if not (out / "result.json").is_file():
            raise _fail(f"{out} exists and is not a previous demo run; choose another --out")
        shutil.rmtree(out)  # a previous demo: replaced, not mixed into the new bundle
    guest = fleet / "guest-evidence"
    references = fleet / "reference-measurements.yaml"
    with tempfile.TemporaryDirectory(prefix="ccaudit-demo-state-") as state:
        # the demo's issued nonces, copied: the scan records their use, the package stays as is
        if (fleet / "audit-state" / "nonces.json").is_file():
            shutil.copy(fleet / "audit-state" / "nonces.json", Path(state) / "nonces.json")
        run = _run_scan(
            providers=[],
            replay=fleet,
            guest_evidence=guest if guest.is_dir() else None,
            maa_issuers=[DEMO_MAA_ISSUER],
            maa_jwks=fleet / "maa-demo-jwks.json" if guest.is_dir() else None,
            profiles=[],
            regions=None,
            endpoint_url=None,
            rules=[references] if references.is_file() else [],
            run_dir=out,
            concurrency=8,
            hardware={
                "nonce_state": Path(state),
                "demo_trust_anchor": fleet / "demo-trust-anchor",
                "key_broker_keys": sorted((fleet / "demo-key-broker").glob("*.pem")),
                "offline": True,
            },
        )
    _emit(run, DEMO_FORMATS, None, out)
    _seal(out, run, None)
    code = exit_code(run, None)
    err_console.print(
        f"\nThe demo run is in {out}/: report.html, report.pdf, result.json, csv/, the raw "
        f"responses in raw/, guest evidence in evidence/, and manifest.json "
        f"(check it: ccaudit bundle verify {out}).\n"
        f"A real scan of this fleet would exit {code}"
        + (
            f" (collection incomplete: {len(run.coverage.gaps)} gaps, listed above)."
            if code == EXIT_INCOMPLETE
            else "."
        ),
        highlight=False,
    )


@rules_app.command("list")
def rules_list(
    rules: Annotated[list[Path] | None, typer.Option(help="Extra rule pack(s) to include.")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """List the rules in effect: built-in packs plus any --rules."""
    try:
        engine = Engine(load_packs(list(rules or [])))
    except RulePackError as err:
        raise _fail(str(err)) from err
    if fmt is OutputFormat.json:
        data = [
            {**c.rule.model_dump(mode="json"), "pack": c.pack, "sections": list(c.sections)}
            for c in engine.rules
        ]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    table = Table(title="Rules in effect", title_justify="left")
    for col in ("id", "party", "effect", "clouds", "severity", "title"):
        table.add_column(col, overflow="fold", no_wrap=col in ("id", "party", "effect"))
    for c in engine.rules:
        r = c.rule
        table.add_row(
            r.id,
            r.party.value,
            r.effect.value,
            ",".join(r.providers or ["all"]),
            r.severity.value,
            r.title,
        )
    console = Console()
    console.print(table)
    for pack in engine.packs:
        console.print(
            f"pack {pack.ref.name} {pack.ref.version} ({pack.ref.path}) sha256 {pack.ref.sha256}",
            highlight=False,
        )


@rules_app.command("validate")
def rules_validate(
    packs: Annotated[list[Path], typer.Argument(help="Rule pack files to check.")],
) -> None:
    """Check rule packs (structure, parties, CEL) without scanning; exit 2 on the first error."""
    try:
        loaded = load_packs(list(packs))
        Engine(loaded)
    except RulePackError as err:
        raise _fail(str(err)) from err
    for pack in loaded[-len(packs) :]:
        typer.echo(f"ok: {pack.ref.path}: {pack.ref.rules} rules, sha256 {pack.ref.sha256}")


@rules_app.command("fields")
def rules_fields() -> None:
    """The VM document fields rules can read as `vm.<field>`."""
    table = Table(title="vm.<field>", title_justify="left")
    table.add_column("field")
    table.add_column("meaning", overflow="fold")
    for name, meaning in SECTIONS.items():
        table.add_row(name, meaning)
    Console().print(table)


@fake_app.command("serve")
def fakecloud_serve(
    directory: Annotated[Path, typer.Argument(help="Replay directory (aws/<account>/...).")],
    host: Annotated[str, typer.Option(help="Loopback address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free port).")] = 0,
    latency_ms: Annotated[float | None, typer.Option(help="Added latency per call.")] = None,
    throttle_rate: Annotated[
        float | None, typer.Option(help="Fraction of calls throttled (0..1).")
    ] = None,
    error_rate: Annotated[
        float | None, typer.Option(help="Fraction of calls failing with 5xx (0..1).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for throttling and faults.")] = None,
    page_size: Annotated[int | None, typer.Option(help="Items per page of list calls.")] = None,
) -> None:
    """Serve a replay directory on 127.0.0.1 in the clouds' wire protocols until Ctrl-C."""
    from auditor.api import replay_root
    from auditor.fakecloud import FakeCloud, FakeCloudConfigError, FaultConfig

    try:
        root = replay_root(directory)
        given = {
            "latency_ms": latency_ms,
            "throttle_rate": throttle_rate,
            "error_rate": error_rate,
            "seed": seed,
            "page_size": page_size,
        }
        # only flags actually given override the replay's fakecloud.yaml
        faults = FaultConfig.model_validate({k: v for k, v in given.items() if v is not None})
        cloud = FakeCloud(root, faults=faults, host=host, port=port)
        endpoint = cloud.start()
    except (ScanError, ValueError, OSError, FakeCloudConfigError) as err:
        raise _fail(str(err)) from err
    typer.echo(f"fakecloud serving {root} at {endpoint}")
    typer.echo(
        f"  ccaudit scan --endpoint-url {endpoint} --regions eu-west-1   "
        "(AWS access key id = account id)"
    )
    typer.echo("Ctrl-C to stop.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cloud.stop()


@app.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of the result document (result.json, --format json)."""
    from auditor.schema import result_schema_text

    sys.stdout.write(result_schema_text())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
