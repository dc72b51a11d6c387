"""The public Python API: `scan`, `load_run`. The CLI is a thin layer over these.

`scan(replay=DIR)` serves a replay directory (or a stored run's raw/) with fakecloud on
127.0.0.1 and audits it through the same real SDK code path as a live scan.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from auditor.collect import ProgressListener
from auditor.config import Config, ConfigError, load_config
from auditor.engine import Engine
from auditor.guest.nonces import STORE_FILE as NONCE_FILE
from auditor.guest.nonces import NonceStore, default_state_dir
from auditor.model import PROVIDER_NAMES, AuditRun, Scope
from auditor.providers.aws import AwsProvider, AwsTarget
from auditor.providers.azure import AzureProvider
from auditor.providers.base import Provider
from auditor.providers.gcp import GcpProvider
from auditor.ratelimits import LimitError, limits_with
from auditor.rules.loader import load_packs
from auditor.run import RAW_DIR, REPLAY_META, new_run_id, run_audit
from auditor.runs.drift import RunDiff, diff_runs
from auditor.runs.shard import ShardError, parse_shard
from auditor.runs.store import RunStore, StoreError
from auditor.verify.maa import load_jwks
from auditor.verify.options import HardwareOptionError, build_evidence_options
from auditor.verify.stage import VerifyOptions

__all__ = ["ScanError", "diff", "load_run", "replay_root", "scan"]

SUPPORTED_PROVIDERS = PROVIDER_NAMES
#: Where a run keeps the MAA signing keys it verified with, so `reverify` needs no network.
MAA_JWKS_COLLATERAL = "evidence/collateral/maa-jwks.json"


class ScanError(Exception):
    """A scan that cannot start: bad options or an unusable replay directory."""


def replay_root(path: str | Path) -> Path:
    """The replay directory to serve: DIR itself, or DIR/raw for a stored run."""
    p = Path(path)
    if not p.is_dir():
        raise ScanError(f"replay directory not found: {p}")
    if (p / RAW_DIR).is_dir() and not any((p / c).is_dir() for c in PROVIDER_NAMES):
        p = p / RAW_DIR
    if not any((p / c).is_dir() for c in PROVIDER_NAMES):
        raise ScanError(
            f"{p} is not a replay directory: it has no aws/, gcp/, azure/ or libvirt/ folder"
        )
    return p


@contextlib.contextmanager
def _endpoint(replay: Path | None, endpoint_url: str | None) -> Iterator[str | None]:
    if replay is None:
        yield endpoint_url
        return
    from auditor.fakecloud import FakeCloud, FakeCloudConfigError

    try:
        cloud = FakeCloud(replay)
        cloud.start()
    except (FakeCloudConfigError, ValueError, OSError) as err:
        raise ScanError(f"cannot serve replay directory {replay}: {err}") from err
    try:
        yield cloud.endpoint
    finally:
        cloud.stop()


def _aws_provider(
    replay: Path | None,
    endpoint: str | None,
    profiles: Sequence[str],
    regions: Sequence[str] | None,
    concurrency: int,
) -> AwsProvider:
    if replay is not None:
        from auditor.fakecloud.replay import aws_accounts

        accounts = aws_accounts(replay)
        if profiles:
            raise ScanError("--profile cannot be combined with --replay (accounts come from DIR)")
        # fakecloud maps an access key equal to an account id to that account
        targets = [AwsTarget(access_key_id=a, secret_access_key="replay") for a in accounts]
    else:
        targets = [AwsTarget(profile=p) for p in profiles] or [AwsTarget()]
    return AwsProvider(
        targets, regions=regions, endpoint_url=endpoint, max_pool_connections=concurrency
    )


def _gcp_provider(
    replay: Path | None,
    endpoint: str | None,
    projects: Sequence[str],
    log_window_days: int,
    as_of: datetime | None,
) -> GcpProvider:
    if replay is not None:
        if projects:
            raise ScanError("--project cannot be combined with --replay (projects come from DIR)")
        projects = sorted(p.name for p in (replay / "gcp").iterdir() if p.is_dir())
    return GcpProvider(
        projects,
        endpoint_url=endpoint,
        anonymous=replay is not None,
        log_window=timedelta(days=log_window_days),
        as_of=as_of,
    )


def _azure_provider(
    replay: Path | None, endpoint: str | None, subscriptions: Sequence[str]
) -> AzureProvider:
    if replay is not None:
        if subscriptions:
            raise ScanError(
                "--subscription cannot be combined with --replay (subscriptions come from DIR)"
            )
        subscriptions = sorted(p.name for p in (replay / "azure").iterdir() if p.is_dir())
    return AzureProvider(subscriptions, endpoint_url=endpoint, replay=replay is not None)


def _libvirt_provider(
    replay: Path | None,
    connect: Sequence[str],
    location: str,
    operator: str,
    read_write: bool,
) -> Any:
    from auditor.providers.libvirt import Connection, LibvirtProvider

    if replay is not None:
        if connect:
            raise ScanError("--connect cannot be combined with --replay (hosts come from DIR)")
        return LibvirtProvider(replay=replay)
    if not connect:
        raise ScanError(
            "--provider libvirt needs --connect URI (qemu:///system, qemu+ssh://host/system, ...)"
        )
    return LibvirtProvider(
        [Connection(uri, location, operator) for uri in dict.fromkeys(connect)],
        read_write=read_write,
    )


def _verify_options(
    issuers: Sequence[str], jwks_file: str | Path | None, fetch: bool
) -> VerifyOptions:
    pinned = tuple(i.rstrip("/") for i in issuers)
    for issuer in pinned:
        if not issuer.startswith("https://"):
            raise ScanError(f"--maa-issuer {issuer!r} must be an https:// URL")
    jwks = None
    if jwks_file is not None:
        try:
            jwks = load_jwks(Path(jwks_file).read_bytes())
        except (OSError, ValueError) as err:
            raise ScanError(f"--maa-jwks {jwks_file}: {err}") from err
    return VerifyOptions(maa_issuers=pinned, maa_jwks=jwks, fetch_online=fetch)


def _hardware_options(
    verify_options: VerifyOptions,
    engine: Engine,
    *,
    nonce_state: str | Path | None,
    demo_trust_anchor: str | Path | None,
    **given: Any,
) -> None:
    """Guest-evidence trust: references (packs, then flags), keys, roots, and the nonce store."""
    pack_refs = [
        (ref.name, ref.measurement.lower())
        for pack in engine.packs
        for ref in pack.spec.reference_measurements
    ]
    boot_refs = [
        ref.model_dump(exclude_none=True)
        for pack in engine.packs
        for ref in pack.spec.reference_boot
    ]
    state = Path(nonce_state) if nonce_state is not None else default_state_dir()
    try:
        verify_options.evidence = build_evidence_options(
            pack_references=pack_refs,
            boot_references=boot_refs,
            cache_dir=state / "cache",
            demo_trust_anchor=demo_trust_anchor,
            **given,
        )
    except HardwareOptionError as err:
        raise ScanError(str(err)) from err
    verify_options.nonce_store = NonceStore(state / NONCE_FILE)
    verify_options.collateral = _trust_files(
        given.get("key_broker_keys") or (),
        demo_trust_anchor,
        given.get("tcb_table"),
        given.get("endorsement_root"),
    )


def _trust_files(
    broker_keys: Sequence[str | Path],
    demo_anchor: str | Path | None,
    tcb_table: str | Path | None,
    endorsement_root: str | Path | None,
) -> dict[str, bytes]:
    """The user's trust inputs by bundle name (already read and checked once by the options)."""
    files: dict[str, bytes] = {}
    try:
        for i, key in enumerate(broker_keys):
            files[f"key-broker/{i:02d}-{Path(key).name}"] = Path(key).read_bytes()
        if demo_anchor is not None:
            for pem in sorted(Path(demo_anchor).glob("*.pem")):
                files[f"demo-trust-anchor/{pem.name}"] = pem.read_bytes()
        if tcb_table is not None:
            files["tcb-table.yaml"] = Path(tcb_table).read_bytes()
        if endorsement_root is not None:
            files["endorsement-root.pem"] = Path(endorsement_root).read_bytes()
    except OSError as err:
        raise ScanError(f"cannot read a trust input: {err}") from err
    return files


def recorded_at(root: Path) -> datetime | None:
    """When a replay was recorded (its replay.json), so time windows replay the same way."""
    meta = root / REPLAY_META
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        return datetime.fromisoformat(str(data["recorded_at"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ScanError(f"{meta}: unusable recorded_at: {err}") from err


def _providers_for(root: Path | None, providers: str | Sequence[str] | None) -> list[str]:
    if isinstance(providers, str):
        wanted = [providers]
    elif providers:
        wanted = list(dict.fromkeys(providers))
    elif root is not None:
        wanted = [c for c in SUPPORTED_PROVIDERS if (root / c).is_dir()]
    else:
        wanted = ["aws"]
    for name in wanted:
        if name not in SUPPORTED_PROVIDERS:
            raise ScanError(
                f"provider {name!r} is not supported yet "
                f"(supported: {', '.join(SUPPORTED_PROVIDERS)})"
            )
        if root is not None and not (root / name).is_dir():
            raise ScanError(f"replay directory {root} holds no {name}/ data")
    return wanted


def scan(
    provider: str | Sequence[str] | None = None,
    *,
    replay: str | Path | None = None,
    profiles: Sequence[str] = (),
    regions: Sequence[str] | None = None,
    projects: Sequence[str] = (),
    subscriptions: Sequence[str] = (),
    log_window_days: int = 30,
    endpoint_url: str | None = None,
    rules: Sequence[str | Path] = (),
    run_dir: str | Path | None = None,
    concurrency: int = 8,
    processes: int | None = None,
    rate_limits: Mapping[str, str] | None = None,
    progress: ProgressListener | None = None,
    run_id: str | None = None,
    guest_evidence: str | Path | None = None,
    maa_issuers: Sequence[str] = (),
    maa_jwks: str | Path | None = None,
    maa_fetch_keys: bool = False,
    shard: str | None = None,
    nonce_state: str | Path | None = None,
    reference_measurements: Sequence[str | Mapping[str, Any] | tuple[str, str]] = (),
    tcb_table: str | Path | None = None,
    key_broker_keys: Sequence[str | Path] = (),
    endorsement_root: str | Path | None = None,
    tdx_collateral: str | Path | None = None,
    offline: bool = False,
    demo_trust_anchor: str | Path | None = None,
    config: str | Path | Config | None = None,
    store: str | Path | RunStore | None = None,
    connect: Sequence[str] = (),
    location: str = "",
    operator: str = "",
    libvirt_read_write: bool = False,
) -> AuditRun:
    """Audit one or more clouds (live, at `endpoint_url`, or a `replay` directory).

    `provider`: "aws", "gcp", "azure", "libvirt", a list of them, or None (a replay's clouds;
    live: aws). libvirt reads the KVM hosts at the `connect` URIs (read-only connections unless
    `libvirt_read_write`), which the owner says are in `location` (a country) and run by
    `operator`.
    Raises `ScanError` for unusable options and `auditor.rules.RulePackError` for a bad pack,
    both before any cloud call is made. `shard="K/N"` reads only shard K of N of the scopes
    (auditor.runs.shard); `ccaudit merge` combines the shard runs. Interrupted, it raises
    `auditor.run.ScanInterrupted` carrying the partial run (also written to `run_dir`).

    `config`: a `ccaudit.yaml` (path or `auditor.config.Config`); every option it sets applies
    unless given here. `store`: keep the run in this run store (`runs/<run-id>/`, sealed with a
    manifest and indexed) unless `run_dir` says where.

    `concurrency`: cloud calls in flight at once, scopes and per-VM calls together.
    `processes`: worker processes that read the scopes (auditor.workers); None chooses one per
    core (at most 4) when there are at least 8 scopes per worker, 1 keeps it in this process.
    `rate_limits`: the owner's request rate limits where they differ from the documented ones
    (a raised quota), CLOUD:FAMILY -> BURST/PER_SECOND, CALLS/SECONDSs or "off", e.g.
    `{"aws:ec2-read": "200/40"}` (auditor.ratelimits.limits_with); each scope keeps below them.
    """
    if config is not None:
        return scan(**_with_config(dict(locals())))
    run_store = _store(store)
    if run_store is not None and run_dir is None:
        run_id = run_id or new_run_id()
        run_dir = run_store.run_dir(run_id)
    if replay is not None and endpoint_url is not None:
        raise ScanError("--replay and --endpoint-url are exclusive: replay starts its own endpoint")
    if log_window_days < 1:
        raise ScanError("--log-window must be at least 1 day")
    try:
        slice_ = parse_shard(shard) if shard is not None else None
    except ShardError as err:
        raise ScanError(str(err)) from err
    try:
        limits = limits_with(rate_limits) if rate_limits else None
    except LimitError as err:
        raise ScanError(str(err)) from err
    engine = Engine(load_packs(list(rules)))
    verify_options = _verify_options(maa_issuers, maa_jwks, maa_fetch_keys)
    _hardware_options(
        verify_options,
        engine,
        nonce_state=nonce_state,
        reference_measurements=reference_measurements,
        tcb_table=tcb_table,
        key_broker_keys=key_broker_keys,
        endorsement_root=endorsement_root,
        tdx_collateral=tdx_collateral,
        offline=offline or replay is not None,
        demo_trust_anchor=demo_trust_anchor,
    )
    guest_dir = Path(guest_evidence) if guest_evidence is not None else None
    if guest_dir is not None and not guest_dir.is_dir():
        raise ScanError(f"--guest-evidence {guest_dir} is not a directory")
    root = replay_root(replay) if replay is not None else None
    names = _providers_for(root, provider)
    as_of = recorded_at(root) if root is not None else None
    scope = Scope(
        providers=names,
        regions=list(regions or []),
        replay=str(root) if root else None,
        endpoint_url=endpoint_url,
        guest_evidence=str(guest_dir) if guest_dir else None,
        log_window_days=log_window_days if "gcp" in names else None,
        maa_issuers=list(verify_options.maa_issuers),
        maa_jwks=MAA_JWKS_COLLATERAL if verify_options.maa_jwks is not None else None,
        shard=slice_.label if slice_ is not None else None,
        reference_measurements=[
            {"name": n, "measurement": m} for n, m in verify_options.evidence.reference_measurements
        ],
        demo_trust_anchor=demo_trust_anchor is not None,
    )
    with _endpoint(root, endpoint_url) as endpoint:
        built: list[Provider] = []
        if "aws" in names:
            built.append(_aws_provider(root, endpoint, profiles, regions, concurrency))
        if "gcp" in names:
            built.append(_gcp_provider(root, endpoint, projects, log_window_days, as_of))
        if "azure" in names:
            built.append(_azure_provider(root, endpoint, subscriptions))
        if "libvirt" in names:
            built.append(_libvirt_provider(root, connect, location, operator, libvirt_read_write))
        run = run_audit(
            built,
            engine,
            scope,
            run_dir=Path(run_dir) if run_dir else None,
            concurrency=concurrency,
            processes=processes,
            progress=progress,
            run_id=run_id,
            as_of=as_of,
            rate_limits=limits,
            guest_evidence=guest_dir,
            verify_options=verify_options,
            shard=slice_,
        )
    if run_store is not None and run_dir is not None:
        from auditor.runs.bundle import BundleError, write_manifest

        try:
            write_manifest(Path(run_dir), run)
            run_store.add(run, Path(run_dir))
        except (BundleError, StoreError, OSError) as err:
            raise ScanError(f"cannot keep run {run.run_id} in {run_store.root}: {err}") from err
    return run


def _store(store: str | Path | RunStore | None) -> RunStore | None:
    if store is None or isinstance(store, RunStore):
        return store
    return RunStore(store)


def _with_config(args: dict[str, Any]) -> dict[str, Any]:
    """`scan` arguments with a config's values filled in where the caller left the default."""
    config = args.pop("config")
    try:
        cfg = config if isinstance(config, Config) else load_config(config)
    except ConfigError as err:
        raise ScanError(str(err)) from err
    defaults = {n: p.default for n, p in inspect.signature(scan).parameters.items()}
    for name, value in cfg.scan_options().items():
        given = args.get(name, defaults[name])
        if name == "rate_limits" and given:  # the caller's, family by family, over the file's
            args[name] = {**value, **given}
            continue
        unset = given is None or (isinstance(given, list | tuple) and not given)
        if unset or given == defaults[name]:
            args[name] = value
    if args.get("store") is None and cfg.store is not None:
        args["store"] = cfg.path(cfg.store)
    return args


def load_run(path_or_id: str | Path, store: str | Path | RunStore | None = None) -> AuditRun:
    """A stored run: a run directory (or its result.json), a run id in the store, or `latest`.

    `store`: the run store that resolves ids (default: $CCAUDIT_HOME or ~/.local/share/ccaudit).
    Raises `auditor.runs.store.StoreError` when nothing matches.
    """
    return (_store(store) or RunStore()).load(path_or_id)


def diff(
    a: AuditRun | str | Path,
    b: AuditRun | str | Path,
    store: str | Path | RunStore | None = None,
) -> RunDiff:
    """What changed from baseline `a` to run `b` (runs, run directories or run ids)."""
    runs = [r if isinstance(r, AuditRun) else load_run(r, store) for r in (a, b)]
    return diff_runs(runs[0], runs[1])
