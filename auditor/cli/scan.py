"""`ccaudit scan`: check the outputs, collect with progress, report, seal, index, gate.

Everything a user can get wrong is checked before the first cloud call (formats, --output, the
run directory, the config, the baseline); a scan that could not authenticate anywhere saves
nothing and exits 2 with one line per cloud saying how to fix it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from auditor.cli.common import (
    EXIT_INCOMPLETE,
    EXIT_USAGE,
    LevelOpt,
    RunDirBusy,
    Settings,
    err_console,
    fail,
    formats,
    note,
    provider_option,
    run_dir_lock,
    split,
    writable_dir,
    writable_file,
)
from auditor.cli.outputs import emit, list_gaps, seal
from auditor.ratelimits import LIMIT_FORMS, documented_limits

if TYPE_CHECKING:
    from auditor.model import AuditRun
    from auditor.providers.base import ScopeResult

#: Seconds between progress lines when stderr is not a terminal (CI logs).
PROGRESS_INTERVAL = 15.0


class CliProgress:
    """Collection progress on stderr: scopes done, VMs seen, calls made, failed scopes, and
    the time scopes waited for their clouds' rate limits (a paced scope is slow, not hung).

    On a terminal a live bar; otherwise (CI logs) a plain line every PROGRESS_INTERVAL seconds
    and one at the end, so a long scan is never silent. Nothing with --quiet.
    """

    def __init__(self, console: Console, interval: float | None = None) -> None:
        self.console = console
        self.interval = PROGRESS_INTERVAL if interval is None else interval
        self.live = console.is_terminal and not Settings.quiet
        self.total: int | None = None
        self.done = self.vms = self.calls = self.failed = 0
        self.paced = 0.0
        self.most_paced: tuple[float, str] = (0.0, "")
        self.started = self.last = time.monotonic()
        self.lock = threading.Lock()
        self.progress: Any = None
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[vms]} VMs, {task.fields[calls]} calls, "),
                TextColumn("{task.fields[failed]} scope errors"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.task = self.progress.add_task("planning", total=None, vms=0, calls=0, failed=0)

    def __enter__(self) -> CliProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
        elif not Settings.quiet and self.done:
            self._line("collected")
        if not Settings.quiet and self.paced >= 1.0:
            seconds, where = self.most_paced
            print(
                f"rate limits: scopes waited {self.paced:.0f} s in all to stay within their "
                f"clouds' request limits (most: {where}, {seconds:.0f} s); a raised quota is "
                "used with --rate-limit",
                file=sys.stderr,
                flush=True,
            )

    def planning(self, provider: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=f"{provider}: finding accounts and regions")

    def planned(self, scopes: int) -> None:
        self.total = scopes
        if self.progress is not None:
            self.progress.update(self.task, total=scopes, description="collecting scopes")

    def scope_done(self, result: ScopeResult) -> None:
        with self.lock:
            self.done += 1
            self.vms += len(result.vms)
            self.calls += result.calls
            self.failed += 1 if result.errors else 0
            self.paced += result.paced_s
            if result.paced_s > self.most_paced[0]:
                self.most_paced = (result.paced_s, result.scope.label)
            if self.progress is not None:
                self.progress.update(
                    self.task, advance=1, vms=self.vms, calls=self.calls, failed=self.failed
                )
            elif not Settings.quiet and time.monotonic() - self.last >= self.interval:
                self._line("progress")

    def _line(self, word: str) -> None:
        self.last = time.monotonic()
        total = f"/{self.total}" if self.total is not None else ""
        paced = f", {self.paced:.0f} s waiting for rate limits" if self.paced >= 1.0 else ""
        print(
            f"{word}: {self.done}{total} scopes, {self.vms} VMs, {self.calls} calls, "
            f"{self.failed} scope errors{paced}, {self.last - self.started:.0f} s",
            file=sys.stderr,
            flush=True,
        )


def run_scan(
    *, providers: list[str], hardware: dict[str, Any] | None = None, **kw: Any
) -> AuditRun:
    """`auditor.api.scan` with the CLI's progress; a usage problem exits 2 with one line."""
    from auditor.api import ScanError, scan
    from auditor.collect import ProgressListener
    from auditor.rules.loader import RulePackError

    class _Listener(ProgressListener):
        def __init__(self, progress: CliProgress) -> None:
            self.p = progress

        def planning(self, provider: str) -> None:
            self.p.planning(provider)

        def planned(self, scopes: int) -> None:
            self.p.planned(scopes)

        def scope_done(self, result: ScopeResult) -> None:
            self.p.scope_done(result)

    try:
        with CliProgress(err_console) as progress:
            return scan(providers or None, progress=_Listener(progress), **kw, **(hardware or {}))
    except (ScanError, RulePackError) as err:
        raise fail(str(err)) from err


#: Exit status of an interrupted scan: 128 + the signal (130 for SIGINT, 143 for SIGTERM).
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interruptible() -> Iterator[list[int]]:
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


def interrupted(
    stop: KeyboardInterrupt, target: Path | None, signing_key: Path | None, received: list[int]
) -> NoReturn:
    """Seal the partial run (it says `interrupted`), explain, exit 128 + signal."""
    from auditor.run import ScanInterrupted

    code = 128 + (received[0] if received else int(signal.SIGINT))
    if isinstance(stop, ScanInterrupted):
        run = stop.run
        if target is not None:
            seal(target, run, signing_key)
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


#: (call, code) of the gaps that mean "no credentials at all", per cloud, and how to fix it.
_AUTH_CODES = {
    "aws": {"NoCredentialsError", "PartialCredentialsError", "NoRegionError"},
    "gcp": {"DefaultCredentialsError", "RefreshError"},
    "azure": {"ClientAuthenticationError", "CredentialUnavailableError"},
}
_AUTH_FIX = {
    "aws": "no AWS credentials found (tried environment variables, the shared config and "
    "credentials files, SSO and the instance metadata service); set AWS_PROFILE or pass "
    "--profile NAME, or run `aws configure` / `aws sso login`",
    "gcp": "no Google Application Default Credentials (tried GOOGLE_APPLICATION_CREDENTIALS, "
    "gcloud's ADC file and the metadata server); run `gcloud auth application-default login` "
    "or point GOOGLE_APPLICATION_CREDENTIALS at a service-account key, and pass --project",
    "azure": "no Azure credential (DefaultAzureCredential tried the environment, workload "
    "identity, managed identity and the Azure CLI); run `az login`, or set AZURE_TENANT_ID, "
    "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, and pass --subscription",
}


def credential_failures(run: AuditRun) -> dict[str, str]:
    """Per cloud whose every scope failed to authenticate (and that saw no VM): how to fix it."""
    out: dict[str, str] = {}
    for provider in run.scope.providers:
        gaps = [g for g in run.coverage.gaps if g.provider == provider and g.affects == "scope"]
        scopes = [s for s in run.coverage.scopes if s.provider == provider]
        seen = any(vm.provider == provider for vm in run.vms)
        auth = [g for g in gaps if g.code in _AUTH_CODES.get(provider, set())]
        if auth and len(auth) == len(gaps) and not seen and all(s.vms == 0 for s in scopes):
            out[provider] = _AUTH_FIX.get(provider, "no credentials")
    return out


def _discard(target: Path | None, created: bool) -> None:
    """Remove a run directory this command created for a run that must not be kept."""
    if target is not None and created:
        shutil.rmtree(target, ignore_errors=True)


def scan_cmd(
    provider: Annotated[
        list[str] | None,
        typer.Option(
            metavar="CLOUD",
            help="aws, gcp or azure (any case); repeat or comma-separate for several. "
            "Default: the clouds in --replay DIR, else aws.",
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
    connect: Annotated[
        list[str] | None,
        typer.Option(
            metavar="URI",
            help="libvirt connection URI of a KVM host (qemu:///system, "
            "qemu+ssh://host/system; repeat for several). Read-only unless --libvirt-read-write.",
        ),
    ] = None,
    location: Annotated[
        str,
        typer.Option(
            metavar="COUNTRY",
            help="Where the libvirt hosts are (a country, e.g. Germany): the reports' "
            "jurisdiction for them.",
        ),
    ] = "",
    operator: Annotated[
        str,
        typer.Option(help="Who runs the libvirt hosts (default: the owner)."),
    ] = "",
    libvirt_read_write: Annotated[
        bool,
        typer.Option(
            "--libvirt-read-write",
            help="Open libvirt connections read-write: domain capabilities and SEV launch "
            "measurements need it (nothing is changed).",
        ),
    ] = False,
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
            "instead of stdout. Checked before the scan starts."
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
    rate_limit: Annotated[
        list[str] | None,
        typer.Option(
            metavar="CLOUD:FAMILY=LIMIT",
            help="A request rate limit that differs from the documented one (a raised quota, "
            f"or a share left to other automation); repeatable. Families: {documented_limits()}. "
            "LIMIT: BURST/PER_SECOND for a bucket, CALLS/SECONDSs per interval, or off. The "
            "scan keeps each scope at 95 % of its limit.",
        ),
    ] = None,
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
    """Collect, evaluate and report on one or more clouds (live or from a replay directory)."""
    from auditor.cli import steps
    from auditor.run import new_run_id

    chosen_formats = formats(fmt)
    clouds = provider_option(provider)
    cfg = steps.load_cli_config(config)
    run_store = steps.run_store(store, cfg)
    chosen = steps.policy(
        cfg,
        fail_below=fail_below.value if fail_below else None,
        fail_on_regression=fail_on_regression,
        max_undetermined=max_undetermined,
        baseline=baseline,
        store=run_store,
    )
    if signing_key is None and cfg is not None:
        signing_key = cfg.path(cfg.signing_key)
    if output is not None:
        writable_file(output, "--output")
    run_id = new_run_id()
    target = None if no_save else (run_dir or run_store.run_dir(run_id))
    created = target is not None and not target.exists()
    if target is not None:
        writable_dir(target.parent, "--run-dir" if run_dir else "--store")
    projects = list(project or [])
    if projects_file is not None:
        projects.extend(_read_projects(projects_file))
    with _locked(target), interruptible() as received:
        try:
            run = run_scan(
                run_id=run_id,
                providers=clouds,
                projects=projects,
                subscriptions=list(subscription or []),
                connect=list(connect or []),
                location=location,
                operator=operator,
                libvirt_read_write=libvirt_read_write,
                log_window_days=log_window,
                guest_evidence=guest_evidence,
                maa_issuers=list(maa_issuer or []),
                maa_jwks=maa_jwks,
                maa_fetch_keys=maa_fetch_keys,
                replay=replay,
                profiles=profile or [],
                regions=split(regions) or None,
                endpoint_url=endpoint_url,
                rules=list(rules or []),
                run_dir=target,
                concurrency=concurrency,
                processes=processes or None,
                rate_limits=rate_limits(rate_limit),
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
            interrupted(stop, target, signing_key, received)
        except BaseException:
            _discard(target, created)  # a failed run is not left half-written
            raise
        no_credentials = credential_failures(run)
        if no_credentials and len(no_credentials) == len(run.scope.providers):
            _discard(target, created)
            for cloud, fix in no_credentials.items():
                err_console.print(
                    f"[bold red]error:[/] {cloud}: {fix}", highlight=False, soft_wrap=True
                )
            err_console.print("nothing was scanned and nothing was saved", highlight=False)
            raise typer.Exit(EXIT_USAGE)
        for cloud, fix in no_credentials.items():
            err_console.print(
                f"[yellow]warning:[/] {cloud}: {fix}", highlight=False, soft_wrap=True
            )
        emit(run, chosen_formats, output, target)
        drift, why = steps.compare(run, chosen, run_store)
        if drift is not None:
            steps.write_diff(drift, target)
        if target is not None:
            seal(target, run, signing_key)
            steps.index(run_store, run, target)
            note(f"run saved in {target}")
    steps.write_outputs(run, cfg)
    code, _ = steps.gate_exit(run, chosen, drift, why)
    if not run.coverage.complete:
        if "table" in chosen_formats:
            err_console.print(
                f"[yellow]collection incomplete:[/] {len(run.coverage.gaps)} gap(s), listed above",
                highlight=False,
            )
        else:
            list_gaps(run)
    raise typer.Exit(code if code else (EXIT_INCOMPLETE if not run.coverage.complete else 0))


@contextlib.contextmanager
def _locked(target: Path | None) -> Iterator[None]:
    if target is None:
        yield
        return
    try:
        with run_dir_lock(target):
            yield
    except RunDirBusy:
        raise fail(
            f"another ccaudit scan is writing {target}; wait for it, or choose another "
            "--run-dir / --out"
        ) from None


def rate_limits(values: list[str] | None) -> dict[str, str] | None:
    """`--rate-limit CLOUD:FAMILY=LIMIT` options as the mapping `auditor.api.scan` takes; a
    malformed one exits 2 naming it (the values themselves are checked by the scan)."""
    out: dict[str, str] = {}
    for value in values or []:
        name, sep, limit = value.partition("=")
        if not sep or not name.strip() or not limit.strip():
            raise fail(f"--rate-limit {value!r}: expected CLOUD:FAMILY=LIMIT ({LIMIT_FORMS})")
        out[name.strip()] = limit.strip()
    return out or None


def _read_projects(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise fail(f"cannot read --projects-file {path}: {err.strerror or err}") from err
    out = [line.split("#", 1)[0].strip() for line in lines]
    return [p for p in out if p]


def register(app: typer.Typer) -> None:
    app.command("scan")(scan_cmd)
