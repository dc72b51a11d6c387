"""fakecloud in its own process, for benchmarks: the cloud is remote, so it gets its own core.

Serving in the scanner's process would make the server's JSON and XML rendering compete with
the scanner for one GIL, and measure fakecloud instead of the scanner. This child prints its
endpoint, serves until its stdin closes, then prints what it served: requests per cloud and the
most requests ever in flight at once (the check that the scanner kept to its concurrency).

    python -m benchmarks.serve REPLAY_DIR --latency-ms 30 --page-size 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.fakecloud import FakeCloud, FaultConfig
from auditor.fakecloud.server import FakeRequest, FakeResponse


class CountingFakeCloud(FakeCloud):
    """FakeCloud that also counts requests in flight (latency included)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flight_lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.answered: list[float] = []  # when each logged request was answered

    def _handle(self, request: FakeRequest) -> FakeResponse:
        with self._flight_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return super()._handle(request)
        finally:
            with self._flight_lock:
                self.in_flight -= 1

    def stats(self) -> dict[str, Any]:
        with self._log_lock:
            log = list(self.request_log)
        return {
            "requests": len(log),
            "by_cloud": dict(Counter(r.cloud for r in log)),
            "errors": sum(1 for r in log if r.status >= 400),
            "refused": sum(1 for r in log if r.fault == "rate_limit"),
            "refused_by_cloud": dict(Counter(r.cloud for r in log if r.fault == "rate_limit")),
            **(self._injector.limiter.stats() if self._injector.limiter is not None else {}),
            "max_in_flight": self.max_in_flight,
            "timeline": self._timeline(log),
            "cpu_s": round(time.process_time(), 2),
        }

    def _record(self, record: Any) -> None:
        with self._log_lock:
            self.request_log.append(record)
            self.answered.append(time.monotonic())

    def _timeline(self, log: list[Any], step: float = 5.0) -> dict[str, list[int]]:
        """Requests answered per cloud in each `step` seconds from the first: where a scan
        idled (a rate-limited cloud should be at its limit throughout)."""
        if not self.answered:
            return {}
        start = self.answered[0]
        out: dict[str, list[int]] = {}
        for when, record in zip(self.answered, log, strict=False):
            row = out.setdefault(record.cloud, [])
            slot = int((when - start) // step)
            row.extend([0] * (slot + 1 - len(row)))
            row[slot] += 1
        return out


#: SDK modules fakecloud imports on first use to validate replay files; a real cloud is warm.
def warm_up() -> None:
    """Import the SDKs now, so that their import time is not charged to the first calls."""
    from auditor.heap import import_sdks
    from auditor.providers.aws import AwsProvider
    from auditor.providers.azure import AzureProvider
    from auditor.providers.gcp import GcpProvider

    import_sdks([AwsProvider, GcpProvider, AzureProvider])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("replay", type=Path)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument(
        "--validate-files",
        action="store_true",
        help="check each replay file against the SDK models as it is served (fakecloud's "
        "default; off here: a generated fleet's records were checked where they were cloned)",
    )
    parser.add_argument(
        "--rate-limits", action="store_true", help="enforce the documented request rate limits"
    )
    args = parser.parse_args(argv)
    cloud = CountingFakeCloud(
        args.replay,
        FaultConfig(
            latency_ms=args.latency_ms,
            page_size=args.page_size,
            validate_files=args.validate_files,
            rate_limits=args.rate_limits,
        ),
    )
    warm_up()
    cloud.start()
    print(json.dumps({"endpoint": cloud.endpoint}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    cloud.stop()
    print(json.dumps(cloud.stats()), flush=True)
    return 0


@dataclass
class ServerProcess:
    """A running `benchmarks.serve` child; `stop()` returns its stats."""

    proc: subprocess.Popen[str]
    endpoint: str
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        replay: Path,
        latency_ms: float,
        page_size: int,
        validate_files: bool = False,
        rate_limits: bool = False,
    ) -> ServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.serve",
            str(replay),
            "--latency-ms",
            str(latency_ms),
            "--page-size",
            str(page_size),
            *(["--validate-files"] if validate_files else []),
            *(["--rate-limits"] if rate_limits else []),
        ]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            raise RuntimeError("benchmark fakecloud did not start")
        return cls(proc, str(json.loads(line)["endpoint"]))

    def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait(timeout=30)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        self.stats = json.loads(lines[-1]) if lines else {}
        return self.stats


if __name__ == "__main__":
    raise SystemExit(main())
