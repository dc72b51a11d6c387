"""Benchmarks at fleet scale: collection, evaluation, SNP verification, HTML report.

Each benchmark prints one JSON line and a short human summary; `all` runs each in a child
process so that every peak RSS figure belongs to one benchmark only.

    python -m benchmarks.run collect  --vms 10k --latency-ms 30 --concurrency 32
    python -m benchmarks.run evaluate --vms 100k
    python -m benchmarks.run snp      --reports 3000
    python -m benchmarks.run html     --vms 10k
    python -m benchmarks.run all

Collection serves a generated fleet (benchmarks/gen_fleet.py) with fakecloud in its own process
at a fixed latency per call, and compares the wall time of collection with the lower bound the
configuration implies: max(total calls x latency / concurrency, longest dependent chain x
latency). The call counts come from the generator's manifest, not from the scanner.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.gen_fleet import MANIFEST, generate, iter_sizes

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORK = Path(tempfile.gettempdir()) / "ccaudit-bench"


def _clean_env() -> None:
    """No user cloud configuration, no metadata-service probing, loopback only."""
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    os.environ.setdefault("AWS_CONFIG_FILE", "/dev/null")
    os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost,::1")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (evaluation workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def fleet(work: Path, vms: int, page_size: int, per_scope: int) -> Path:
    """The generated fleet for these parameters, generated once and reused."""
    root = work / f"fleet-{vms}-p{page_size}-s{per_scope}"
    manifest = root / MANIFEST
    if not manifest.is_file() or "limited" not in json.loads(manifest.read_text()):
        generate(root, vms, per_scope=per_scope, page_size=page_size)
    return root


#: VMs per scope of the rate-limit benchmark's fleet: two scopes per cloud at 10k VMs.
RATELIMIT_PER_SCOPE = 2000


def rate_limit_bound(manifest: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """The least time the clouds' documented rate limits allow for the manifest's calls: the
    slowest limited scope (scopes are limited apart, so they overlap), and which it is."""
    from auditor.ratelimits import DOCUMENTED

    worst: dict[str, Any] = {}
    bound = 0.0
    for row in manifest["limited"]:
        seconds = DOCUMENTED[(row["cloud"], row["family"])].time_for(int(row["calls"]))
        if seconds > bound:
            bound, worst = seconds, dict(row)
    return bound, worst


# ============================================================================ collection
class _Timer:
    """ProgressListener that notes when planning starts and the last scope finishes."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end: float | None = None
        self.scopes = 0
        #: seconds from the start at which each scope finished, slowest last
        self.finished: dict[str, float] = {}

    def planning(self, provider: str) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def planned(self, scopes: int) -> None:
        self.scopes = scopes

    def scope_done(self, result: Any) -> None:
        self.end = time.perf_counter()
        key = result.scope
        name = f"{key.provider}:{key.account}" + (f"/{key.region}" if key.region else "")
        self.finished[name] = round(self.end - (self.start or self.end), 2)


def replay_providers(root: Path, endpoint: str, concurrency: int) -> list[Any]:
    """The three providers as `scan(replay=...)` builds them, pointed at an outside endpoint."""
    from auditor.api import recorded_at
    from auditor.fakecloud.replay import aws_accounts
    from auditor.providers.aws import AwsProvider, AwsTarget
    from auditor.providers.azure import AzureProvider
    from auditor.providers.gcp import GcpProvider

    out: list[Any] = []
    if (root / "aws").is_dir():
        targets = [
            AwsTarget(access_key_id=a, secret_access_key="replay") for a in aws_accounts(root)
        ]
        out.append(AwsProvider(targets, endpoint_url=endpoint, max_pool_connections=concurrency))
    if (root / "gcp").is_dir():
        projects = sorted(p.name for p in (root / "gcp").iterdir() if p.is_dir())
        out.append(
            GcpProvider(projects, endpoint_url=endpoint, anonymous=True, as_of=recorded_at(root))
        )
    if (root / "azure").is_dir():
        subs = sorted(p.name for p in (root / "azure").iterdir() if p.is_dir())
        out.append(AzureProvider(subs, endpoint_url=endpoint, replay=True))
    return out


def bench_collect(
    vms: int,
    latency_ms: float,
    concurrency: int,
    page_size: int = 50,
    per_scope: int = 80,
    work: Path = DEFAULT_WORK,
    processes: int | None = None,
    rate_limits: bool = False,
) -> dict[str, Any]:
    """Scan a generated fleet through fakecloud (own process) and compare with the bound.

    `processes`: collection worker processes as `ccaudit scan --processes` (None: auto).
    `rate_limits`: fakecloud refuses calls past the clouds' documented limits
    (auditor/ratelimits.py) and the bound is also the least time those limits allow.
    """
    from auditor.workers import auto_workers

    _clean_env()
    from auditor.engine import Engine
    from auditor.model import Scope
    from auditor.rules.loader import load_packs
    from auditor.run import run_audit
    from benchmarks.serve import ServerProcess, warm_up

    root = fleet(work, vms, page_size, per_scope)
    manifest = json.loads((root / MANIFEST).read_text())
    if (processes or auto_workers(int(manifest["scopes"]), concurrency)) == 1:
        warm_up()  # the scanner's SDK imports are start-up cost, not collection
    # (with collection workers the scan's own process imports none: its fork server does,
    # and that is counted, as a CLI scan pays it)
    engine = Engine(load_packs([]))
    server = ServerProcess.start(root, latency_ms, page_size, rate_limits=rate_limits)
    timer = _Timer()
    try:
        providers = replay_providers(root, server.endpoint, concurrency)
        with tempfile.TemporaryDirectory(prefix="ccaudit-bench-run-") as run_dir:
            started = time.perf_counter()
            cpu_before = _cpu_s()  # imports, fleet and rule loading are not the scan's
            run = run_audit(
                providers,
                engine,
                Scope(providers=[p.name for p in providers]),
                run_dir=Path(run_dir),
                concurrency=concurrency,
                progress=timer,
                processes=processes,
            )
            total = time.perf_counter() - started
            # this process and its collection workers (ended by now), collection to
            # result.json; not the deletion of the run directory that follows (about 0.4 s)
            scanner_cpu = _cpu_s() - cpu_before
    finally:
        served = server.stop()
    assert timer.start is not None and timer.end is not None
    wall = timer.end - timer.start
    latency = latency_ms / 1000.0
    by_calls = manifest["total_calls"] * latency / concurrency
    by_chain = manifest["longest_chain"] * latency
    by_limits, slowest = rate_limit_bound(manifest) if rate_limits else (0.0, {})
    bound = max(by_calls, by_chain, by_limits)
    requests = int(served.get("requests") or 0)
    refused = int(served.get("refused") or 0)
    limits: dict[str, Any] = {}
    if rate_limits:
        limits = {
            "rate_limit_bound_s": round(by_limits, 2),
            "slowest_scope": slowest,
            "refused": refused,
            "scopes_finished_s": timer.finished,
            "answered_per_5s": served.get("timeline"),
            "refused_by_cloud": served.get("refused_by_cloud"),
            "gap_texts": [f"{g.call}: {g.message}"[:200] for g in run.coverage.gaps[:5]],
            "retry_share": round(refused / requests, 4) if requests else None,
            # every expected call answered once; refused ones were repeated
            "calls_lost": manifest["total_calls"] - (requests - refused),
        }
    return {
        "benchmark": "ratelimit" if rate_limits else "collect",
        "vms": len(run.vms),
        "scopes": timer.scopes,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "processes": processes or auto_workers(timer.scopes, concurrency),
        "page_size": page_size,
        "calls_expected": manifest["total_calls"],
        "calls_served": served.get("requests"),
        "call_errors": served.get("errors"),
        "max_in_flight": served.get("max_in_flight"),
        "longest_chain": manifest["longest_chain"],
        "collect_s": round(wall, 2),
        "lower_bound_s": round(bound, 2),
        "ratio": round(wall / bound, 3) if bound else None,
        "scan_total_s": round(total, 2),
        "client_cpu_s": round(scanner_cpu, 2),
        "server_cpu_s": served.get("cpu_s"),
        "gaps": len(run.coverage.gaps),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        **limits,
    }


# ============================================================================ evaluation
def sample_vms(n: int, work: Path = DEFAULT_WORK) -> list[Any]:
    """n collected-and-verified VMs: a 1k fleet scanned once, its VMs cloned with new ids.

    Every clone is a deep copy (own document, own strings for ids), so memory is that of n
    distinct VMs, not of n references to 1,000.
    """
    _clean_env()
    from auditor.api import scan
    from auditor.model import VM

    base = fleet(work, min(n, 1000), 50, 80)
    collected = [
        VM.model_validate(r.model_dump(include=set(VM.model_fields))) for r in scan(replay=base).vms
    ]
    out: list[Any] = []
    for i in range(n):
        vm = collected[i % len(collected)]
        copy = vm.model_copy(deep=True)
        suffix = f"-{i // len(collected):05d}"
        copy.id = vm.id + suffix
        copy.document["id"] = copy.id
        if copy.name:
            copy.name = copy.name + suffix
            copy.document["name"] = copy.name
        out.append(copy)
    return out


def bench_evaluate(
    vms: int, workers: int = 0, work: Path = DEFAULT_WORK, reuse: bool = True
) -> dict[str, Any]:
    """Evaluate n VMs with the full built-in rule pack, as `run_audit` does (`evaluate_all`).

    The engine works out one decision per distinct set of fields the rules read and reuses it
    for every VM that has the same (`cases` counts them); `reuse=False` decides every VM
    afresh, the cost when no two VMs of a fleet are configured alike.
    """
    from auditor.engine import Engine, evaluate_all
    from auditor.rules.loader import load_packs

    fleet_vms = sample_vms(vms, work)
    engine = Engine(load_packs([]), reuse=reuse)
    started = time.perf_counter()
    cpu = _cpu_s()
    results = evaluate_all(engine, fleet_vms, workers=workers or None)
    elapsed = time.perf_counter() - started
    cpu = _cpu_s() - cpu
    assert len(results) == len(fleet_vms)
    return {
        "benchmark": "evaluate",
        "vms": len(results),
        "rules": len(engine.rules),
        "reuse": reuse,
        "cases": engine.cases if reuse else len(results),
        "evaluate_s": round(elapsed, 2),
        "vms_per_s": round(len(results) / elapsed),
        "cpu_s": round(cpu, 2),
        "workers": workers or "auto",
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


# ============================================================================ SNP
def bench_snp(reports: int, chips: int = 8) -> dict[str, Any]:
    """Verify n signed SNP reports from `chips` chips (one VCEK chain each), on one core.

    Each report arrives as a guest would send it: report bytes plus the extended report's
    certificate table (VCEK, ASK, ARK as DER), so certificate loading and the chain checks
    are part of the cost; only signing happens outside the timed loop.
    """
    from auditor.verify.demo_anchor import demo_chip_id, make_demo_chain, sign_demo_report
    from auditor.verify.snp import SnpOptions, verify_snp

    base = make_demo_chain("Milan")
    chains = [base] + [
        base.with_vcek(demo_chip_id("Milan", f"bench chip {i}"), base.tcb) for i in range(1, chips)
    ]
    options = SnpOptions(trust=base.trust())
    signed: list[tuple[bytes, bytes]] = []
    for i in range(reports):
        chain = chains[i % len(chains)]
        report = sign_demo_report(
            chain, report_data=i.to_bytes(64, "big"), measurement=bytes([i % 256]) * 48
        )
        signed.append((report, chain.auxblob()))
    bound_before = _signature_only_s(signed, chains)
    started = time.process_time()
    ok = 0
    for report, auxblob in signed:
        ok += bool(verify_snp(report, auxblob=auxblob, options=options).ok)
    cpu = time.process_time() - started
    bound_after = _signature_only_s(signed, chains)
    # The machine's own bound, measured just before and after on the same reports: one ECDSA
    # P-384 verification each and nothing else (the issue assumed 0.5 ms per verification).
    signature_s = (bound_before + bound_after) / 2
    return {
        "benchmark": "snp",
        "reports": reports,
        "chains": len(chains),
        "verified_ok": ok,
        "cpu_s": round(cpu, 3),
        "reports_per_s": round(reports / cpu),
        "signature_ms": round(signature_s / reports * 1000, 3),
        "signature_bound_per_s": round(reports / signature_s),
        "fraction_of_bound": round(signature_s / cpu, 3),
    }


def _signature_only_s(signed: list[tuple[bytes, bytes]], chains: list[Any]) -> float:
    """CPU seconds for the reports' signatures alone: the floor of any SNP verifier here."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from auditor.verify.snp import parse_report

    keys = [c.vcek.public_key() for c in chains]
    work = []
    for i, (report, _) in enumerate(signed):
        parsed = parse_report(report)
        signature = encode_dss_signature(parsed.signature_r, parsed.signature_s)
        work.append((keys[i % len(keys)], signature, parsed.signed_part))
    algorithm = ec.ECDSA(hashes.SHA384())
    started = time.process_time()
    for key, signature, data in work:
        key.verify(signature, data, algorithm)
    return time.process_time() - started


# ============================================================================ HTML
def evaluated_run(vms: int, work: Path = DEFAULT_WORK) -> Any:
    """A run of n VMs: the evaluated clones of a scanned 1k fleet, with its evidence and
    coverage."""
    from auditor.api import scan
    from auditor.engine import Engine
    from auditor.rules.loader import load_packs

    _clean_env()
    base = scan(replay=fleet(work, min(vms, 1000), 50, 80), processes=1)
    engine = Engine(load_packs([]))
    results = [engine.evaluate(vm) for vm in sample_vms(vms, work)]
    return base.model_copy(update={"vms": results})


def bench_html(vms: int, work: Path = DEFAULT_WORK) -> dict[str, Any]:
    """Render report.html for a run of n VMs (evaluated clones of a scanned 1k fleet)."""
    from auditor.reports.html import render_html

    run = evaluated_run(vms, work)
    started = time.perf_counter()
    cpu = time.process_time()
    page = render_html(run).encode("utf-8")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    return {
        "benchmark": "html",
        "vms": len(run.vms),
        "render_s": round(elapsed, 2),
        "cpu_s": round(cpu, 2),
        "size_mib": round(len(page) / 2**20, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


#: Formats the `reports` benchmark renders: all but HTML (its own benchmark) and PDF (laid out
#: by WeasyPrint page by page: meant for up to a few hundred VMs, docs/reports.md).
REPORT_FORMATS = ("json", "csv", "parquet", "sarif", "junit", "oscal", "markdown")


def bench_reports(vms: int, work: Path = DEFAULT_WORK) -> dict[str, Any]:
    """Render every other report format for a run of n VMs: seconds and MiB per format."""
    from auditor import reports

    run = evaluated_run(vms, work)
    out: dict[str, Any] = {"benchmark": "reports", "vms": len(run.vms), "formats": {}}
    for name in REPORT_FORMATS:
        started = time.perf_counter()
        files = reports.render(run, name)
        elapsed = time.perf_counter() - started
        size = sum(len(data) for data in files.values())
        out["formats"][name] = {"render_s": round(elapsed, 2), "size_mib": round(size / 2**20, 1)}
    out["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return out


# ============================================================================ driver
def _summary(result: dict[str, Any]) -> str:
    kind = result["benchmark"]
    if kind == "collect":
        return (
            f"collect {result['vms']} VMs / {result['scopes']} scopes at "
            f"{result['latency_ms']} ms, concurrency {result['concurrency']}, "
            f"{result['processes']} collection process(es): "
            f"{result['collect_s']} s, bound {result['lower_bound_s']} s "
            f"(ratio {result['ratio']}); {result['calls_served']} calls served "
            f"({result['calls_expected']} expected), max {result['max_in_flight']} in flight; "
            f"whole scan {result['scan_total_s']} s; CPU scanner {result['client_cpu_s']} s, "
            f"fakecloud {result['server_cpu_s']} s; peak RSS {result['peak_rss_mib']} MiB"
        )
    if kind == "ratelimit":
        slowest = result["slowest_scope"]
        return (
            f"ratelimit {result['vms']} VMs / {result['scopes']} scopes under the documented "
            f"limits: {result['collect_s']} s, bound {result['lower_bound_s']} s "
            f"(ratio {result['ratio']}; slowest {slowest.get('cloud')} {slowest.get('family')} "
            f"{slowest.get('calls')} calls); {result['refused']} of {result['calls_served']} "
            f"calls refused ({100 * (result['retry_share'] or 0):.2f} %), "
            f"{result['calls_lost']} lost, {result['gaps']} gaps"
        )
    if kind == "cost":
        runs = "; ".join(
            f"{r['scanner_cpu_s']} / {r['floor_cpu_s']} CPU-s = {r['ratio']}"
            for r in result["runs"]
        )
        return (
            f"cost {result['vms']} VMs: scanner CPU / SDK-plus-conversion floor: {runs} "
            f"(ratio {result['ratio_min']} to {result['ratio_max']}, target {result['target']})"
        )
    if kind == "evaluate":
        return (
            f"evaluate {result['vms']} VMs x {result['rules']} rules: {result['evaluate_s']} s "
            f"({result['vms_per_s']} VMs/s, {result['cases']} distinct cases"
            f"{'' if result['reuse'] else ', no reuse'}); peak RSS {result['peak_rss_mib']} MiB"
        )
    if kind == "snp":
        return (
            f"SNP: {result['reports']} reports ({result['chains']} chains) in {result['cpu_s']} s "
            f"CPU: {result['reports_per_s']} reports/s; {result['verified_ok']} verified; "
            f"signatures alone {result['signature_ms']} ms each here: bound "
            f"{result['signature_bound_per_s']}/s, reached {result['fraction_of_bound']:.0%}"
        )
    if kind == "reports":
        parts = [
            f"{n} {r['render_s']} s / {r['size_mib']} MiB" for n, r in result["formats"].items()
        ]
        return f"reports {result['vms']} VMs: " + ", ".join(parts)
    return (
        f"HTML {result['vms']} VMs: {result['render_s']} s, {result['size_mib']} MiB; "
        f"peak RSS {result['peak_rss_mib']} MiB"
    )


def bench_cost(
    vms: int, repeat: int, passes: int, processes: int | None, work: Path = DEFAULT_WORK
) -> dict[str, Any]:
    """Scanner CPU against the SDK floor, each measured in this invocation, `repeat` times.

    The floor is `benchmarks.sdk_floor`'s SDK-plus-conversion CPU for every call the scan
    makes (one thread, a server that costs nothing); the scanner's CPU is the whole collect
    benchmark's (all its processes, collection through result.json). Target: at most 1.5.
    """
    rows: list[dict[str, Any]] = []
    for _ in range(repeat):
        floor = _run_child(
            ["--vms", str(vms), "--passes", str(passes), "--work", str(work)],
            "benchmarks.sdk_floor",
        )
        argv = ["collect", "--vms", str(vms), "--work", str(work)]
        if processes:
            argv += ["--processes", str(processes)]
        scan = _run_child(argv)
        floor_cpu = float(floor["floor_conv_2cores_s"]) * 2
        rows.append(
            {
                "scanner_cpu_s": scan["client_cpu_s"],
                "floor_cpu_s": round(floor_cpu, 2),
                "ratio": round(float(scan["client_cpu_s"]) / floor_cpu, 3),
                "collect_s": scan["collect_s"],
                "peak_rss_mib": scan["peak_rss_mib"],
            }
        )
    ratios = [r["ratio"] for r in rows]
    return {
        "benchmark": "cost",
        "vms": vms,
        "runs": rows,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "target": 1.5,
    }


def _run_child(argv: list[str], module: str = "benchmarks.run") -> dict[str, Any]:
    flag = ["--json"] if module == "benchmarks.run" else []
    out = subprocess.run(
        [sys.executable, "-m", module, *argv, *flag],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "which",
        choices=["collect", "ratelimit", "cost", "evaluate", "snp", "html", "reports", "all"],
    )
    parser.add_argument("--vms", default=None, help="fleet size (1k, 10k, 100k, or a count)")
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument(
        "--per-scope",
        type=int,
        default=0,
        help=f"VMs per generated scope (default 80; ratelimit {RATELIMIT_PER_SCOPE})",
    )
    parser.add_argument("--workers", type=int, default=0, help="evaluation processes (0: auto)")
    parser.add_argument(
        "--processes", type=int, default=0, help="collection worker processes (0: auto)"
    )
    parser.add_argument(
        "--no-reuse",
        action="store_true",
        help="evaluation: decide every VM afresh (no two VMs alike: the worst case)",
    )
    parser.add_argument("--reports", type=int, default=3000, help="SNP reports to verify")
    parser.add_argument("--repeat", type=int, default=3, help="cost: how many measurements")
    parser.add_argument("--passes", type=int, default=3, help="cost: SDK floor passes")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where fleets are kept")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    size = next(iter_sizes(args.vms)) if args.vms else None

    if args.which == "all":
        results = [
            _run_child(["collect", "--vms", "10k"]),
            _run_child(["evaluate", "--vms", "100k"]),
            _run_child(["snp"]),
            _run_child(["html", "--vms", "10k"]),
            _run_child(["reports", "--vms", "10k"]),
        ]
        print(f"# {datetime.now().isoformat(timespec='seconds')}, {os.cpu_count()} cores")
        for r in results:
            print(_summary(r))
        print(json.dumps(results))
        return 0
    if args.which in ("collect", "ratelimit"):
        limited = args.which == "ratelimit"
        # under rate limits the scopes are large, as real accounts and subscriptions are
        per_scope = args.per_scope or (RATELIMIT_PER_SCOPE if limited else 80)
        result = bench_collect(
            size or 10_000,
            args.latency_ms,
            args.concurrency,
            args.page_size,
            per_scope,
            args.work,
            args.processes or None,
            rate_limits=limited,
        )
    elif args.which == "cost":
        result = bench_cost(
            size or 10_000, args.repeat, args.passes, args.processes or None, args.work
        )
    elif args.which == "evaluate":
        result = bench_evaluate(size or 100_000, args.workers, args.work, not args.no_reuse)
    elif args.which == "snp":
        result = bench_snp(args.reports)
    elif args.which == "reports":
        result = bench_reports(size or 10_000, args.work)
    else:
        result = bench_html(size or 10_000, args.work)
    if not args.json:
        print(_summary(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
