"""`ccaudit fakecloud serve`: a replay directory served on 127.0.0.1, until Ctrl-C."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from auditor.cli.common import fail

fake_app = typer.Typer(help="The loopback replay server (fakecloud).", no_args_is_help=True)


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
    rate_limits: Annotated[
        bool | None,
        typer.Option(
            "--rate-limits/--no-rate-limits",
            help="Enforce the clouds' documented request rate limits (EC2 buckets per account "
            "and Region, ARM per subscription, Compute Engine and Logging per project) and "
            "refuse calls past them as each cloud does.",
        ),
    ] = None,
) -> None:
    """Serve a replay directory on 127.0.0.1 in the clouds' wire protocols until Ctrl-C."""
    from auditor.api import ScanError, replay_root
    from auditor.fakecloud import FakeCloud, FakeCloudConfigError, FaultConfig

    try:
        root = replay_root(directory)
        given = {
            "latency_ms": latency_ms,
            "throttle_rate": throttle_rate,
            "error_rate": error_rate,
            "seed": seed,
            "page_size": page_size,
            "rate_limits": rate_limits,
        }
        # only flags actually given override the replay's fakecloud.yaml
        faults = FaultConfig.model_validate({k: v for k, v in given.items() if v is not None})
        cloud = FakeCloud(root, faults=faults, host=host, port=port)
        endpoint = cloud.start()
    except (ScanError, ValueError, OSError, FakeCloudConfigError) as err:
        raise fail(str(err)) from err
    typer.echo(f"fakecloud serving {root} at {endpoint}")
    for line in scan_commands(root, endpoint):
        typer.echo(line)
    typer.echo("Ctrl-C to stop.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cloud.stop()


def register(app: typer.Typer) -> None:
    app.add_typer(fake_app, name="fakecloud")


def scan_commands(root: Path, endpoint: str) -> list[str]:
    """Commands that scan this server as printed (the AWS access key id selects the account)."""
    from auditor.fakecloud.replay import aws_accounts

    lines: list[str] = []
    accounts = aws_accounts(root)
    if accounts:
        lines.append("Scan its AWS accounts (one command each; the access key id is the account):")
        for account in accounts:
            regions = sorted(p.name for p in (root / "aws" / account).iterdir() if p.is_dir())
            lines.append(
                f"  AWS_ACCESS_KEY_ID={account} AWS_SECRET_ACCESS_KEY=fakecloud "
                f"ccaudit scan --provider aws --endpoint-url {endpoint}"
                + (f" --regions {','.join(regions)}" if regions else "")
            )
    others = [c for c in ("gcp", "azure") if (root / c).is_dir()]
    if others:
        lines.append(
            f"For {' and '.join(others)} (or every cloud at once) let ccaudit serve it itself:"
        )
    lines.append(f"  ccaudit scan --replay {root}")
    return lines
