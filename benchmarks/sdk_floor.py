"""The SDK floor: client CPU per call of each operation a scan sends, with a server costing nothing.

The collect benchmark is CPU-bound on a 2-core machine. This measures how much of that CPU the
real SDKs need on their own, so that the benchmark's target can be judged against a floor:

* a loopback server in its own process answers every request with pre-rendered bytes. Each
  distinct request (method, path and query, body) is rendered once by fakecloud (latency 0,
  page size 50) on its first arrival, then served from memory byte for byte: the timed passes
  only ever hit that cache (the summary says so);
* the clients are built exactly as the providers build them (`AwsProvider._client`,
  `GcpProvider._instances_client` / `_logging_client`, `AzureProvider._compute`), on one
  representative scope per cloud of the generated fleet;
* only this process's CPU is counted (`time.process_time`, one thread, no server in it).

For every operation it prints the client CPU per call of the SDK call alone ("sdk": the request
sent, the response parsed into the SDK's objects and iterated) and with the conversion the
providers apply to the result ("+conv": `_to_dict`, `as_dict`, `to_api_repr`...), the calls the
10k manifest makes of it, and the implied floor. It also times `provider.collect(scope)` for
each representative scope (SDK and all of our code: recording, evidence, VM documents), one
thread, no call pool.

    python -m benchmarks.sdk_floor [--vms 10k] [--passes 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.gen_fleet import MANIFEST, _log_window, _when, iter_sizes, pages

PAGE = 50
CORES = 2


# ============================================================================ the server
def serve(root: Path) -> int:
    """Serve `root` through a render-once cache until stdin closes (the child process)."""
    from auditor.fakecloud import FakeCloud, FaultConfig
    from auditor.fakecloud.server import http_request
    from benchmarks.serve import warm_up

    warm_up()
    cloud = FakeCloud(root, FaultConfig(latency_ms=0.0, page_size=PAGE))
    cache: dict[tuple[str, str, bytes], bytes] = {}
    lock = threading.Lock()
    counts = {"hits": 0, "misses": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            key = (self.command, self.path, body)
            with lock:
                wire = cache.get(key)
                counts["hits" if wire is not None else "misses"] += 1
            if wire is None:
                resp = cloud._handle(
                    http_request(self.command, self.path, self.headers.items(), body)
                )
                head = [f"HTTP/1.1 {resp.status} {self.responses[resp.status][0]}"]
                head.append(f"Content-Type: {resp.content_type}")
                head.append(f"Content-Length: {len(resp.body)}")
                head += [f"{k}: {v}" for k, v in resp.headers.items()]
                wire = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body
                with lock:
                    cache[key] = wire
            self.wfile.write(wire)

        do_GET = do_POST = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"endpoint": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    sys.stdin.read()
    server.shutdown()
    print(json.dumps({**counts, "cpu_s": round(time.process_time(), 3)}), flush=True)
    return 0


class Server:
    def __init__(self, root: Path) -> None:
        cmd = [sys.executable, "-m", "benchmarks.sdk_floor", "--serve", str(root)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
        )
        assert self.proc.stdout is not None
        self.endpoint = str(json.loads(self.proc.stdout.readline())["endpoint"])
        self.hits_before = 0

    def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        lines = [ln for ln in self.proc.stdout.read().splitlines() if ln.startswith("{")]
        self.proc.wait(timeout=30)
        return dict(json.loads(lines[-1])) if lines else {}


# ============================================================================ call counts
def manifest_counts(root: Path) -> dict[str, int]:
    """Calls per operation a scan of `root` makes at page size 50 (as gen_fleet counts them)."""
    out: dict[str, int] = {}

    def add(op: str, n: int) -> None:
        out[op] = out.get(op, 0) + n

    def load(path: Path) -> Any:
        return json.loads(path.read_text())

    for acct in sorted((root / "aws").iterdir()):
        add("aws GetCallerIdentity", 1)
        add("aws DescribeRegions", 1)
        for region in sorted(p for p in acct.iterdir() if p.is_dir()):
            insts = [i for r in load(region / "DescribeInstances.json")["Reservations"]
                     for i in r["Instances"]]  # fmt: skip
            add("aws DescribeInstances", pages(len(insts), PAGE))
            if not insts:
                continue
            add("aws DescribeInstanceTypes", pages(len({i["InstanceType"] for i in insts}), PAGE))
            add("aws DescribeImages", pages(len({i["ImageId"] for i in insts}), PAGE))
            add("aws DescribeVolumes", pages(len(load(region / "DescribeVolumes.json")["Volumes"]),
                                             PAGE))  # fmt: skip
            ek = region / "GetInstanceTpmEkPub"
            add("aws GetInstanceTpmEkPub", len(list(ek.glob("*.json"))) if ek.is_dir() else 0)
    start, end = _log_window()
    for proj in sorted(p for p in (root / "gcp").iterdir() if p.is_dir()):
        agg = load(proj / "aggregatedList.json")
        n = sum(len(s.get("instances", [])) for s in agg.get("items", {}).values())
        add("gcp instances.aggregatedList", pages(n, PAGE))
        if not n:
            continue
        logs = [e for e in load(proj / "logEntries.json") if start <= _when(e["timestamp"]) <= end]
        add("gcp logging.entries.list", pages(len(logs), PAGE))
        add("gcp getShieldedInstanceIdentity",
            len(list((proj / "shieldedInstanceIdentity").glob("*/*.json"))))  # fmt: skip
    for sub in sorted(p for p in (root / "azure").iterdir() if p.is_dir()):
        vms = load(sub / "virtualMachines.json")["value"]
        add("azure virtualMachines.listAll", pages(len(vms), PAGE))
        sets = sub / "virtualMachineScaleSets.json"
        add(
            "azure virtualMachineScaleSets.listAll",
            pages(len(load(sets)["value"]), PAGE) if sets.is_file() else 1,
        )
        if not vms:
            continue
        add("azure disks.list", pages(len(load(sub / "disks.json")["value"]), PAGE))
        add("azure diskEncryptionSets.list",
            pages(len(load(sub / "diskEncryptionSets.json")["value"]), PAGE))  # fmt: skip
        skus = load(sub / "resourceSkus.json")["value"]
        for loc in sorted({v["location"] for v in vms}):
            add("azure resourceSkus.list",
                pages(sum(1 for s in skus if loc in s.get("locations", [])), PAGE))  # fmt: skip
        add("azure virtualMachineExtensions.list", len(vms))
    return out


# ============================================================================ the operations
@dataclass
class Op:
    """One operation on the representative scope: `run(convert)` returns the requests made."""

    name: str
    run: Callable[[bool], int]


def aws_ops(root: Path, endpoint: str) -> tuple[list[Op], Any, Any]:
    from auditor.providers.aws import AwsProvider, AwsTarget, _strip_meta

    account = sorted(p.name for p in (root / "aws").iterdir())[0]
    region = sorted(p.name for p in (root / "aws" / account).iterdir() if p.is_dir())[0]
    provider = AwsProvider(
        [AwsTarget(access_key_id=account, secret_access_key="replay")],
        endpoint_url=endpoint,
        max_pool_connections=32,
    )
    session = provider._session(provider.targets[0])
    sts = provider._client(session, "sts", "us-east-1")
    home = provider._client(session, "ec2", "us-east-1")
    ec2 = provider._client(session, "ec2", region)
    insts = [i for r in json.loads((root / "aws" / account / region / "DescribeInstances.json")
             .read_text())["Reservations"] for i in r["Instances"]]  # fmt: skip
    types = sorted({i["InstanceType"] for i in insts})
    images = sorted({i["ImageId"] for i in insts})
    eks = sorted(
        p.stem for p in (root / "aws" / account / region / "GetInstanceTpmEkPub").glob("*")
    )

    def one(fn: Callable[[], Any]) -> Callable[[bool], int]:
        def run(convert: bool) -> int:
            resp = fn()
            if convert:
                _strip_meta(resp)
            return 1

        return run

    def paged(op: str, key: str, **params: Any) -> Callable[[bool], int]:
        def run(convert: bool) -> int:
            n, items = 0, []
            for page in ec2.get_paginator(op).paginate(**params):
                n += 1
                items.extend(page.get(key, []))
            return n

        return run

    def ek(convert: bool) -> int:
        for iid in eks:
            resp = ec2.get_instance_tpm_ek_pub(InstanceId=iid, KeyType="rsa-2048", KeyFormat="der")
            if convert:
                _strip_meta(resp)
        return len(eks)

    ops = [
        Op("aws GetCallerIdentity", one(sts.get_caller_identity)),
        Op("aws DescribeRegions", one(home.describe_regions)),
        Op("aws DescribeInstances", paged("describe_instances", "Reservations")),
        Op("aws DescribeInstanceTypes",
           paged("describe_instance_types", "InstanceTypes", InstanceTypes=types)),
        Op("aws DescribeImages", paged("describe_images", "Images", ImageIds=images)),
        Op("aws DescribeVolumes", paged("describe_volumes", "Volumes")),
        Op("aws GetInstanceTpmEkPub", ek),
    ]  # fmt: skip
    provider._sessions[account] = session
    from auditor.providers.base import ScopeKey

    return ops, provider, ScopeKey("aws", account, region)


def gcp_ops(root: Path, endpoint: str) -> tuple[list[Op], Any, Any]:
    from google.cloud import compute_v1
    from google.cloud import logging as gcl

    from auditor.api import recorded_at
    from auditor.providers.base import ScopeKey
    from auditor.providers.gcp import INTEGRITY_LOG, GcpProvider, _rfc3339, _to_dict

    project = sorted(p.name for p in (root / "gcp").iterdir() if p.is_dir())[0]
    provider = GcpProvider([project], endpoint_url=endpoint, anonymous=True,
                           as_of=recorded_at(root))  # fmt: skip
    client = provider._instances_client()
    folder = root / "gcp" / project / "shieldedInstanceIdentity"
    where = sorted((p.parent.name, p.stem) for p in folder.glob("*/*.json"))
    start, end = provider._window()
    flt = (
        f'logName="projects/{project}/logs/{INTEGRITY_LOG}" AND '
        f'resource.type="gce_instance" AND '
        f'timestamp>="{_rfc3339(start)}" AND timestamp<="{_rfc3339(end)}"'
    )

    def aggregated(convert: bool) -> int:
        request = compute_v1.AggregatedListInstancesRequest(project=project, max_results=500)
        pager = client.aggregated_list(
            request=request, retry=provider._retry, timeout=provider.call_timeout
        )
        n = 0
        for page in pager.pages:
            n += 1
            for _key, scoped in page.items.items():
                for inst in scoped.instances:
                    if convert:
                        _to_dict(inst)
        return n

    def identity(convert: bool) -> int:
        for zone, name in where:
            resp = client.get_shielded_instance_identity(
                project=project,
                zone=zone,
                instance=name,
                retry=provider._retry,
                timeout=provider.call_timeout,
            )
            if convert:
                _to_dict(resp)
        return len(where)

    def logs(convert: bool) -> int:
        lc = provider._logging_client(project)
        it = lc.list_entries(
            resource_names=[f"projects/{project}"],
            filter_=flt,
            order_by=gcl.ASCENDING,
            page_size=1000,
        )
        entries = 0
        for e in it:  # a generator over the pages: one request per PAGE entries
            entries += 1
            if convert:
                e.to_api_repr()
        return pages(entries, PAGE)

    ops = [
        Op("gcp instances.aggregatedList", aggregated),
        Op("gcp getShieldedInstanceIdentity", identity),
        Op("gcp logging.entries.list", logs),
    ]
    return ops, provider, ScopeKey("gcp", project)


def azure_ops(root: Path, endpoint: str) -> tuple[list[Op], Any, Any]:
    from auditor.providers.azure import AzureProvider, resource_group_of
    from auditor.providers.base import ScopeKey

    sub = sorted(p.name for p in (root / "azure").iterdir() if p.is_dir())[0]
    provider = AzureProvider([sub], endpoint_url=endpoint, replay=True)
    client = provider._compute(sub)
    vms = json.loads((root / "azure" / sub / "virtualMachines.json").read_text())["value"]
    locations = sorted({v["location"] for v in vms})
    targets = [(resource_group_of(v["id"]), v["name"]) for v in vms]

    def listing(fetch: Callable[[], Any]) -> Callable[[bool], int]:
        def run(convert: bool) -> int:
            n = 0
            for page in fetch().by_page():
                n += 1
                for item in page:
                    if convert:
                        item.as_dict()
            return n

        return run

    def skus(convert: bool) -> int:
        n = 0
        for loc in locations:
            for page in client.resource_skus.list(filter=f"location eq '{loc}'").by_page():
                n += 1
                for item in page:
                    if convert:
                        item.as_dict()
        return n

    def extensions(convert: bool) -> int:
        for rg, name in targets:
            resp = client.virtual_machine_extensions.list(rg, name)
            if convert:
                [e.as_dict() for e in resp.value or []]
        return len(targets)

    ops = [
        Op("azure virtualMachines.listAll", listing(client.virtual_machines.list_all)),
        Op(
            "azure virtualMachineScaleSets.listAll",
            listing(client.virtual_machine_scale_sets.list_all),
        ),
        Op("azure disks.list", listing(client.disks.list)),
        Op("azure diskEncryptionSets.list", listing(client.disk_encryption_sets.list)),
        Op("azure resourceSkus.list", skus),
        Op("azure virtualMachineExtensions.list", extensions),
    ]
    return ops, provider, ScopeKey("azure", sub)


# ============================================================================ measuring
def _cpu(fn: Callable[[], int], passes: int) -> tuple[float, int]:
    """Median CPU seconds per request over `passes` timed runs (after one untimed run)."""
    calls = fn()
    per: list[float] = []
    for _ in range(passes):
        t0 = time.process_time()
        calls = fn()
        per.append((time.process_time() - t0) / max(1, calls))
    return statistics.median(per), calls


def measure(root: Path, passes: int) -> dict[str, Any]:
    from auditor.heap import scan_heap
    from benchmarks.run import _clean_env
    from benchmarks.serve import warm_up

    _clean_env()
    warm_up()
    server = Server(root)
    try:
        with scan_heap():  # the garbage collector as a scan sets it (auditor.heap)
            rows, scopes = _measure_clouds(root, server.endpoint, passes)
    finally:
        stats = server.stop()
    return {"ops": rows, "scopes": scopes, "server": stats}


def _measure_clouds(
    root: Path, endpoint: str, passes: int
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    from auditor.recording import EvidenceSink

    rows: dict[str, dict[str, float]] = {}
    scopes: dict[str, dict[str, float]] = {}
    for build in (aws_ops, gcp_ops, azure_ops):
        ops, provider, scope = build(root, endpoint)
        for op in ops:
            sdk, calls = _cpu(lambda op=op: op.run(False), passes)  # type: ignore[misc]
            conv, _ = _cpu(lambda op=op: op.run(True), passes)  # type: ignore[misc]
            rows[op.name] = {"sdk_ms": sdk * 1e3, "conv_ms": conv * 1e3, "scope_calls": calls}
        with tempfile.TemporaryDirectory(prefix="ccaudit-floor-") as tmp:

            def collect(provider: Any = provider, scope: Any = scope, tmp: str = tmp) -> int:
                sink = EvidenceSink(Path(tmp) / "raw")
                result = provider.collect(scope, sink)
                assert not result.errors, result.errors
                return int(result.calls)

            per_call, calls = _cpu(collect, passes)
            scopes[scope.provider] = {"ms_per_call": per_call * 1e3, "calls": calls}
    return rows, scopes


def report(root: Path, result: dict[str, Any]) -> dict[str, Any]:
    manifest = json.loads((root / MANIFEST).read_text())
    counts = manifest_counts(root)
    total = sum(counts.values())
    assert total == manifest["total_calls"], (total, manifest["total_calls"], counts)
    bound = manifest["total_calls"] * 0.030 / 32
    target = 1.3 * bound
    print(f"SDK floor, {manifest['vms']} VMs / {manifest['scopes']} scopes, page size {PAGE}: "
          f"client CPU per call (ms), one thread, zero-cost server")  # fmt: skip
    print(
        f"{'operation':40s} {'sdk':>7s} {'+conv':>7s} {'calls':>7s} {'sdk s':>7s} {'+conv s':>8s}"
    )
    sdk_total = conv_total = 0.0
    for op, n in counts.items():
        row = result["ops"][op]
        sdk_s, conv_s = n * row["sdk_ms"] / 1e3, n * row["conv_ms"] / 1e3
        sdk_total += sdk_s
        conv_total += conv_s
        print(f"{op:40s} {row['sdk_ms']:7.3f} {row['conv_ms']:7.3f} {n:7d} {sdk_s:7.2f} "
              f"{conv_s:8.2f}")  # fmt: skip
    print(f"{'total':40s} {'':7s} {'':7s} {total:7d} {sdk_total:7.2f} {conv_total:8.2f}")
    by_cloud = {c: sum(n for op, n in counts.items() if op.startswith(c)) for c in result["scopes"]}
    ours = sum(result["scopes"][c]["ms_per_call"] / 1e3 * by_cloud[c] for c in by_cloud)
    print("provider.collect(scope), SDK + our code, one thread, ms CPU per call: " + ", ".join(
        f"{c} {v['ms_per_call']:.3f}" for c, v in result["scopes"].items()
    ) + f" -> {ours:.2f} s for the manifest")  # fmt: skip
    print(f"bound {bound:.2f} s, 1.3 x bound {target:.2f} s (= {target * CORES:.1f} CPU-s on "
          f"{CORES} cores, {target * CORES / total * 1e3:.2f} ms per call)")  # fmt: skip
    print(f"floor, SDK alone over {CORES} cores: {sdk_total / CORES:.2f} s "
          f"(ratio {sdk_total / CORES / bound:.2f}); SDK + conversion: {conv_total / CORES:.2f} s "
          f"(ratio {conv_total / CORES / bound:.2f}); SDK + our code: {ours / CORES:.2f} s "
          f"(ratio {ours / CORES / bound:.2f})")  # fmt: skip
    print(f"on one core (one scanner process): SDK alone {sdk_total:.2f} s "
          f"(ratio {sdk_total / bound:.2f}), SDK + our code {ours:.2f} s "
          f"(ratio {ours / bound:.2f})")  # fmt: skip
    srv = result["server"]
    print(f"server: {srv.get('misses')} renders, {srv.get('hits')} cached answers")
    out = {
        "benchmark": "sdk_floor",
        "vms": manifest["vms"],
        "calls": total,
        "bound_s": round(bound, 3),
        "target_s": round(target, 3),
        "floor_sdk_2cores_s": round(sdk_total / CORES, 3),
        "floor_conv_2cores_s": round(conv_total / CORES, 3),
        "floor_ours_2cores_s": round(ours / CORES, 3),
        "ops": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in result["ops"].items()},
        "scopes": result["scopes"],
        "counts": counts,
    }
    print(json.dumps(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--vms", default="10k")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--per-scope", type=int, default=80)
    parser.add_argument("--work", type=Path, default=None, help="where fleets are kept")
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args.serve)
    from benchmarks.run import DEFAULT_WORK, fleet

    (vms,) = iter_sizes(args.vms)
    root = fleet(args.work or DEFAULT_WORK, vms, PAGE, args.per_scope)
    report(root, measure(root, args.passes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
