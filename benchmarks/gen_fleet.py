"""Fleet generator: a replay directory of N VMs over AWS, Google Cloud and Azure, many scopes.

The benchmarks need fleets far larger than the demo, yet every file must still pass fakecloud's
validation (botocore shapes, the strict compute_v1 / logging protos, the azure-mgmt-compute
models). So the generator does not invent records: it clones the demo fleet's own VMs
(`examples/demo-fleet/`), renaming every identifier they carry (instance, volume, disk, vmId,
account, project, subscription) consistently across the files that refer to them.

It also writes `bench-manifest.json`: the calls a scan of the fleet must make at a given page
size, per scope, and the longest chain of calls that depend on each other. The benchmark
derives its lower bound from that, not from what the scanner happened to do.

    python -m benchmarks.gen_fleet OUT_DIR --vms 10000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo-fleet"
MANIFEST = "bench-manifest.json"
CLOUDS = ("aws", "gcp", "azure")

# Templates: one scope of the demo fleet per cloud, with every VM it holds.
AWS_ACCOUNT = "111122223333"
AWS_REGION = "eu-west-1"
AWS_REGIONS = ("eu-west-1", "us-east-2", "eu-central-1", "eu-north-1")
GCP_PROJECT = "eu-claims-prod"
AZ_SUB = "ab4bd4af-8843-4e36-bac0-04fdd527ff09"

#: Compute's largest maxResults and the page size the collector asks Logging for.
GCP_COMPUTE_MAX = 500
GCP_LOG_PAGE = 1000
GCP_LOG_WINDOW_DAYS = 30


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")


def _clone(obj: Any, renames: list[tuple[str, str]]) -> Any:
    """A deep copy of a JSON value with every identifier renamed (longest first)."""
    text = json.dumps(obj)
    for old, new in renames:
        text = text.replace(old, new)
    return json.loads(text)


def _hex(seed: str, n: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def _digits(seed: str, n: int) -> str:
    value = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
    return str(value)[:n].rjust(n, "1").replace("0", "1", 1)


def pages(items: int, size: int) -> int:
    """Calls a paged listing of `items` takes: an empty list is still one call."""
    return max(1, math.ceil(items / size))


@dataclass
class ScopePlan:
    """The calls one scope costs: `serial` must run one after another, `fanout` may overlap."""

    cloud: str
    scope: str
    vms: int
    serial: int
    fanout: int
    other: int = 0  # independent listings after the first (types, images, volumes, ...)

    @property
    def calls(self) -> int:
        return self.serial + self.fanout + self.other

    def limited(self) -> dict[str, int]:
        """Calls per rate-limited family (auditor/ratelimits.py) this scope's limits count."""
        if self.cloud == "gcp":  # instances and vTPM identities; the integrity log apart
            return {"compute-read": self.serial + self.fanout, "logging-read": self.other}
        if self.cloud == "aws":  # DescribeRegions counts in the home Region's bucket, apart
            return {"ec2-read": self.calls}
        return {"arm-read": self.calls}


@dataclass
class FleetPlan:
    vms: int
    page_size: int
    scopes: list[ScopePlan] = field(default_factory=list)
    setup_calls: int = 0  # per-account calls before any scope (AWS: STS, DescribeRegions)
    setup_chain: int = 0

    def as_dict(self) -> dict[str, Any]:
        total = self.setup_calls + sum(s.calls for s in self.scopes)
        # longest dependent chain: setup, then the scope's serial listing, then one fan-out
        chain = max(
            (
                (self.setup_chain if s.cloud == "aws" else 0) + s.serial + (1 if s.fanout else 0)
                for s in self.scopes
            ),
            default=0,
        )
        return {
            "vms": self.vms,
            "page_size": self.page_size,
            "total_calls": total,
            "longest_chain": chain,
            "scopes": len(self.scopes),
            # what each rate limit counts: (cloud, scope, family) -> calls
            "limited": [
                {"cloud": s.cloud, "scope": s.scope, "family": family, "calls": calls}
                for s in self.scopes
                for family, calls in s.limited().items()
                if calls
            ],
            "by_cloud": {
                c: {
                    "scopes": sum(1 for s in self.scopes if s.cloud == c),
                    "vms": sum(s.vms for s in self.scopes if s.cloud == c),
                    "calls": sum(s.calls for s in self.scopes if s.cloud == c)
                    + (self.setup_calls if c == "aws" else 0),
                }
                for c in CLOUDS
            },
        }


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _scopes_per_cloud(vms_per_cloud: int, per_scope: int) -> int:
    return max(2, math.ceil(vms_per_cloud / per_scope))


# ================================================================================== AWS
def _aws(out: Path, vms: int, scopes: int, page: int, plan: FleetPlan) -> None:
    src = DEMO / "aws" / AWS_ACCOUNT / AWS_REGION
    reservations = _load(src / "DescribeInstances.json")["Reservations"]
    volumes = _load(src / "DescribeVolumes.json")["Volumes"]
    types = _load(src / "DescribeInstanceTypes.json")
    images = _load(src / "DescribeImages.json")
    eks = {p.stem: _load(p) for p in (src / "GetInstanceTpmEkPub").glob("*.json")}
    templates = [(r, i) for r in reservations for i in r["Instances"]]
    accounts = max(1, math.ceil(scopes / len(AWS_REGIONS)))
    regions = min(len(AWS_REGIONS), scopes)
    cells = [(a, r) for a in range(accounts) for r in AWS_REGIONS[:regions]][:scopes]
    counts = _split(vms, len(cells))
    used_accounts = sorted({a for a, _ in cells})
    plan.setup_calls += 2 * len(used_accounts)  # GetCallerIdentity + DescribeRegions
    plan.setup_chain = 2
    for (a, region), n in zip(cells, counts, strict=True):
        account = f"{900000000000 + a:012d}"
        folder = out / "aws" / account / region
        res_out: list[dict[str, Any]] = []
        vol_out: list[dict[str, Any]] = []
        tpm = 0
        for k in range(n):
            res, inst = templates[k % len(templates)]
            tag = f"aws/{account}/{region}/{k}"
            iid = inst["InstanceId"]
            renames = [(iid, "i-" + _hex(tag, 17)), (AWS_ACCOUNT, account), (AWS_REGION, region)]
            mine = [v for v in volumes if any(x["InstanceId"] == iid for x in v["Attachments"])]
            renames += [(v["VolumeId"], "vol-" + _hex(tag + v["VolumeId"], 17)) for v in mine]
            renames.append((res["ReservationId"], "r-" + _hex(tag + "r", 17)))
            clone = _clone({**res, "Instances": [inst]}, renames)
            res_out.append(clone)
            vol_out.extend(_clone(mine, renames))
            if iid in eks:
                new_id = clone["Instances"][0]["InstanceId"]
                _dump(folder / "GetInstanceTpmEkPub" / f"{new_id}.json", eks[iid])
                tpm += 1
        _dump(folder / "DescribeInstances.json", {"Reservations": res_out})
        _dump(folder / "DescribeVolumes.json", {"Volumes": vol_out})
        _dump(folder / "DescribeInstanceTypes.json", types)
        _dump(folder / "DescribeImages.json", _clone(images, [(AWS_ACCOUNT, account)]))
        if n:
            used_types = {i["InstanceType"] for r in res_out for i in r["Instances"]}
            used_images = {i["ImageId"] for r in res_out for i in r["Instances"]}
            other = (
                pages(len(used_types), page)
                + pages(len(used_images), page)
                + pages(len(vol_out), page)
            )
        else:
            other = 0
        plan.scopes.append(ScopePlan("aws", f"{account}/{region}", n, pages(n, page), tpm, other))


# ================================================================================== GCP
def _gcp(out: Path, vms: int, scopes: int, page: int, plan: FleetPlan) -> None:
    src = DEMO / "gcp" / GCP_PROJECT
    agg = _load(src / "aggregatedList.json")
    logs = _load(src / "logEntries.json")
    templates = [
        (zone.split("/", 1)[1], inst)
        for zone, scoped in sorted(agg["items"].items())
        for inst in scoped.get("instances", [])
    ]
    identities = {
        (z, i["name"]): _load(src / "shieldedInstanceIdentity" / z / f"{i['name']}.json")
        for z, i in templates
        if (src / "shieldedInstanceIdentity" / z / f"{i['name']}.json").is_file()
    }
    shutil.copy(DEMO / "gcp" / "DEMO_CA.pem", out / "gcp" / "DEMO_CA.pem")
    for s, n in enumerate(_split(vms, scopes)):
        project = f"bench-project-{s:04d}"
        folder = out / "gcp" / project
        items: dict[str, dict[str, list[Any]]] = {}
        entries: list[Any] = []
        vtpm = 0
        for k in range(n):
            zone, inst = templates[k % len(templates)]
            name, iid = inst["name"], inst["id"]
            new_name = f"{name}-{k:06d}"
            renames = [
                (iid, _digits(f"gcp/{project}/{k}", 19)),
                (name, new_name),
                (GCP_PROJECT, project),
            ]
            items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(
                _clone(inst, renames)
            )
            mine = [e for e in logs if e["resource"]["labels"]["instance_id"] == iid]
            for j, entry in enumerate(_clone(mine, renames)):
                entry["insertId"] = _hex(f"{project}/{k}/{j}", 13)
                entries.append(entry)
            if inst.get("shieldedInstanceConfig", {}).get("enableVtpm"):
                vtpm += 1
                ident = identities[(zone, name)]
                _dump(folder / "shieldedInstanceIdentity" / zone / f"{new_name}.json", ident)
        entries.sort(key=lambda e: e["timestamp"])
        _dump(
            folder / "aggregatedList.json",
            _clone({**agg, "items": items}, [(GCP_PROJECT, project)]),
        )
        _dump(folder / "logEntries.json", entries)
        listing = pages(n, min(page, GCP_COMPUTE_MAX))
        start, end = _log_window()
        served = sum(1 for e in entries if start <= _when(e["timestamp"]) <= end)
        logs_calls = pages(served, min(page, GCP_LOG_PAGE)) if n else 0
        plan.scopes.append(ScopePlan("gcp", project, n, listing, vtpm, logs_calls))


def _when(stamp: str) -> datetime:
    """An RFC 3339 timestamp (nanoseconds allowed) as an aware datetime, to the microsecond."""
    date_time = stamp.rstrip("Z").split("+")[0]
    if "." in date_time:
        head, frac = date_time.split(".", 1)
        date_time = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(date_time + "+00:00")


def _log_window() -> tuple[datetime, datetime]:
    """The integrity-log window a scan reads: the default 30 days up to the recording time."""
    end = datetime.fromisoformat(_load(DEMO / "replay.json")["recorded_at"])
    return end - timedelta(days=GCP_LOG_WINDOW_DAYS), end


# ================================================================================ Azure
def _azure(out: Path, vms: int, scopes: int, page: int, plan: FleetPlan) -> None:
    src = DEMO / "azure" / AZ_SUB
    vm_list = _load(src / "virtualMachines.json")["value"]
    disks = _load(src / "disks.json")["value"]
    sets = _load(src / "diskEncryptionSets.json")["value"]
    skus = _load(src / "resourceSkus.json")
    exts = {p.parent.name: _load(p) for p in (src / "virtualMachines").glob("*/extensions.json")}
    for s, n in enumerate(_split(vms, scopes)):
        sub = str(uuid.UUID(_hex(f"azure/{s}", 32)))
        folder = out / "azure" / sub
        vm_out: list[dict[str, Any]] = []
        disk_out: list[dict[str, Any]] = []
        des_out: dict[str, dict[str, Any]] = {}
        locations: set[str] = set()
        for k in range(n):
            vm = vm_list[k % len(vm_list)]
            name = vm["name"]
            renames = [(name, f"{name}-{k:06d}"), (AZ_SUB, sub)]
            clone = _clone(vm, renames)
            clone["properties"]["vmId"] = str(uuid.UUID(_hex(f"{sub}/{k}", 32)))
            vm_out.append(clone)
            locations.add(clone["location"])
            disk_out.extend(_clone([d for d in disks if name in d["name"]], renames))
            for d in _clone(sets, renames):
                des_out.setdefault(d["id"].lower(), d)
            if name in exts:
                _dump(
                    folder / "virtualMachines" / clone["name"] / "extensions.json",
                    _clone(exts[name], renames),
                )
        _dump(folder / "virtualMachines.json", {"value": vm_out})
        _dump(folder / "disks.json", {"value": disk_out})
        _dump(folder / "diskEncryptionSets.json", {"value": list(des_out.values())})
        _dump(folder / "resourceSkus.json", skus)
        sku_pages = sum(
            pages(sum(1 for x in skus["value"] if loc in x.get("locations", [])), page)
            for loc in locations
        )
        other = (pages(len(disk_out), page) + pages(len(des_out), page) + sku_pages) if n else 0
        other += 1  # virtualMachineScaleSets.listAll: no scale sets here, one empty page
        plan.scopes.append(ScopePlan("azure", sub, n, pages(n, page), n, other))


# ================================================================================ driver
def generate(
    out: Path,
    vms: int,
    *,
    per_scope: int = 80,
    page_size: int = 50,
    clouds: tuple[str, ...] = CLOUDS,
) -> dict[str, Any]:
    """Write a replay directory of `vms` VMs to `out` (replaced); returns its manifest."""
    if vms < len(clouds):
        raise ValueError(f"need at least {len(clouds)} VMs, one per cloud")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "gcp").mkdir()
    plan = FleetPlan(vms=vms, page_size=page_size)
    builders = {"aws": _aws, "gcp": _gcp, "azure": _azure}
    for cloud, n in zip(clouds, _split(vms, len(clouds)), strict=True):
        builders[cloud](out, n, _scopes_per_cloud(n, per_scope), page_size, plan)
    if "gcp" not in clouds:
        shutil.rmtree(out / "gcp")
    shutil.copy(DEMO / "replay.json", out / "replay.json")
    manifest = plan.as_dict()
    manifest["per_scope"] = per_scope
    _dump(out / MANIFEST, manifest)
    return manifest


def iter_sizes(text: str) -> Iterator[int]:
    for part in text.split(","):
        part = part.strip().lower()
        yield int(float(part[:-1]) * 1000) if part.endswith("k") else int(part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="replay directory to (re)create")
    parser.add_argument("--vms", default="10k", help="number of VMs (1k, 10k, 100k, or a count)")
    parser.add_argument("--per-scope", type=int, default=80, help="VMs per scope (default 80)")
    parser.add_argument("--page-size", type=int, default=50, help="fakecloud page size")
    args = parser.parse_args(argv)
    (vms,) = iter_sizes(args.vms)
    manifest = generate(args.out, vms, per_scope=args.per_scope, page_size=args.page_size)
    print(json.dumps({k: v for k, v in manifest.items() if k != "by_cloud"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
