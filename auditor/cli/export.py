"""`ccaudit export securityhub RUN`: send a stored run's findings to AWS Security Hub.

The findings are the run's ASFF ones (auditor/reports/asff.py: one per AWS VM and failing rule),
rendered from result.json, so what is sent is what `--format asff` writes. Security Hub is
regional and takes at most 100 findings a call, so they are grouped by the region in their
product ARN and sent in batches of 100 through boto3's `BatchImportFindings`, with botocore's
standard retries for throttling. Security Hub can refuse findings one by one (a finding of
another account, say) while importing the rest: every refusal is listed, with its reason.

Exit codes: 0 every finding imported; 3 some were refused or a batch failed (listed); 2 the run
cannot be read, no credentials, or nothing could be sent at all.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer

from auditor.cli.common import EXIT_INCOMPLETE, EXIT_OK, fail, load_run_or_fail, note

export_app = typer.Typer(
    no_args_is_help=True,
    help="Send a stored run's findings where platform teams already look (AWS Security Hub).",
)
BATCH = 100


@export_app.command("securityhub")
def securityhub_cmd(
    run_ref: Annotated[
        str, typer.Argument(metavar="RUN", help="A run directory, result.json, run id or latest.")
    ],
    profile: Annotated[
        str | None, typer.Option("--profile", help="AWS profile to call Security Hub with.")
    ] = None,
    endpoint_url: Annotated[
        str | None,
        typer.Option("--endpoint-url", help="Security Hub endpoint (fakecloud, for tests)."),
    ] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="Run store for run ids and latest.")
    ] = None,
) -> None:
    """Import the run's AWS findings (ASFF) into Security Hub, in batches of 100 per region.

    Only AWS VMs' failing findings are sent (CAN_ACCESS as FAILED, UNDETERMINED as
    NOT_AVAILABLE; nothing is ever sent as passed). Each finding goes to the account and region
    of its VM, so the credentials must be those of that account (or of the Security Hub
    administrator that manages it): refusals are listed one by one and the exit code is 3.
    """
    from auditor.reports.asff import findings as asff_findings

    run = load_run_or_fail(Path(run_ref) if Path(run_ref).exists() else run_ref, store)
    items = asff_findings(run)
    if not items:
        note(f"run {run.run_id} has no failing finding on an AWS VM: nothing to send")
        raise typer.Exit(EXIT_OK)
    by_region: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        by_region[str(item["ProductArn"]).split(":")[3]].append(item)
    sent, refused, errors = _send(by_region, profile, endpoint_url)
    for region, count in sorted(sent.items()):
        note(f"  {region}: {count} imported")
    typer.echo(
        f"imported {sum(sent.values())} of {len(items)} findings of run {run.run_id} into "
        f"Security Hub ({len(by_region)} region{'s' if len(by_region) != 1 else ''})"
    )
    for item in refused:
        typer.echo(f"  refused {item['Id']}: {item['ErrorCode']}: {item['ErrorMessage']}")
    for message in errors:
        typer.echo(f"  failed: {message}")
    if not sent and errors:
        raise typer.Exit(2)
    raise typer.Exit(EXIT_INCOMPLETE if refused or errors else EXIT_OK)


def _send(
    by_region: dict[str, list[dict[str, Any]]], profile: str | None, endpoint_url: str | None
) -> tuple[dict[str, int], list[dict[str, str]], list[str]]:
    """(imported per region, refused findings, failed calls)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        session = boto3.Session(profile_name=profile)
    except BotoCoreError as err:
        raise fail(f"AWS profile {profile!r}: {err}") from err
    if session.get_credentials() is None:
        raise fail(
            "no AWS credentials for Security Hub: give --profile, set AWS_PROFILE or the "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY variables, or run `aws sso login`"
        )
    config = Config(retries={"mode": "standard", "max_attempts": 8})
    sent: dict[str, int] = {}
    refused: list[dict[str, str]] = []
    errors: list[str] = []
    for region, items in sorted(by_region.items()):
        client = session.client(
            "securityhub", region_name=region, endpoint_url=endpoint_url, config=config
        )
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            try:
                answer = client.batch_import_findings(Findings=batch)
            except NoCredentialsError as err:
                raise fail(f"no AWS credentials for Security Hub: {err}") from err
            except (ClientError, BotoCoreError) as err:
                errors.append(f"{region}, findings {start + 1}-{start + len(batch)}: {err}")
                continue
            sent[region] = sent.get(region, 0) + int(answer.get("SuccessCount", 0))
            refused.extend(answer.get("FailedFindings") or [])
    return sent, refused, errors
