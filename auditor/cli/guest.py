"""`ccaudit guest ...`: issue a challenge on the auditor's side, collect evidence inside the VM.

`challenge` records a nonce in the audit state (`auditor.guest.nonces`) and prints the command to
run in the guest. `collect` is the same code as `python -m auditor.guest collect`
(`auditor.guest.collector`), offered here for guests that have the full tool installed.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from auditor.guest import collector
from auditor.guest.format import identity_string
from auditor.guest.nonces import STORE_FILE, NonceStore, NonceStoreError, default_state_dir

EXIT_USAGE = 2

guest_app = typer.Typer(
    help="Guest evidence: nonce challenges and the in-VM collector.", no_args_is_help=True
)


class CloudOpt(StrEnum):
    aws = "aws"
    gcp = "gcp"
    azure = "azure"
    libvirt = "libvirt"


class CollectProviderOpt(StrEnum):
    auto = "auto"
    aws = "aws"
    gcp = "gcp"
    azure = "azure"
    libvirt = "libvirt"
    none = "none"


class ChallengeFormat(StrEnum):
    text = "text"
    json = "json"


def collect_command(nonce: str, vm_id: str, provider: str | None) -> list[str]:
    """The command line the guest runs, as root (standard library only: `python3 -m ...`)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in vm_id)
    command = ["python3", "-m", "auditor.guest", "collect", "--nonce", nonce]
    if provider:
        command += ["--provider", provider]
    return [*command, "--out", f"ccaudit-evidence-{safe}.json"]


@guest_app.command("challenge")
def challenge(
    vm: Annotated[str, typer.Option("--vm", help="The cloud's VM id the evidence must name.")],
    provider: Annotated[
        CloudOpt | None, typer.Option("--provider", help="The VM's cloud, when known.")
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Audit state directory [default: $CCAUDIT_HOME or ~/.local/share/ccaudit].",
        ),
    ] = None,
    output_format: Annotated[
        ChallengeFormat, typer.Option("--format", help="text or json.")
    ] = ChallengeFormat.text,
) -> None:
    """Issue a 32-byte nonce for one VM and print the collect command to run inside it."""
    if not vm.strip():
        typer.echo("error: --vm must name a VM", err=True)
        raise typer.Exit(EXIT_USAGE)
    store_path = (state if state is not None else default_state_dir()) / STORE_FILE
    cloud = provider.value if provider is not None else None
    try:
        nonce = NonceStore(store_path).issue(vm.strip(), cloud)
    except (NonceStoreError, OSError) as err:
        typer.echo(f"error: cannot record the nonce in {store_path}: {err}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    identity = identity_string(cloud, vm) if cloud else None
    command = collect_command(nonce, vm.strip(), cloud)
    if output_format is ChallengeFormat.json:
        doc = {
            "nonce": nonce,
            "vm_id": vm.strip(),
            "provider": cloud,
            "identity": identity,
            "state": str(store_path),
            "command": command,
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"nonce: {nonce}")
    typer.echo(f"vm: {vm.strip()}")
    bound = identity or f"<cloud>:{vm.strip()} (the guest's metadata service names the cloud)"
    typer.echo(f"the guest binds: {bound}")
    typer.echo(f"recorded in: {store_path}")
    typer.echo("run inside the VM, as root (configfs-tsm and the event log need it):")
    typer.echo("  " + " ".join(command))


@guest_app.command("collect")
def collect(
    nonce: Annotated[str, typer.Option("--nonce", help="64 hex characters from `challenge`.")],
    out: Annotated[Path, typer.Option("--out", help="Evidence file to write.")],
    root: Annotated[Path, typer.Option("--root", help="Filesystem root (tests).")] = Path("/"),
    configfs: Annotated[Path, typer.Option("--configfs", help="configfs mount point.")] = Path(
        "/sys/kernel/config"
    ),
    metadata_url: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata-url",
            metavar="[CLOUD=]URL",
            help="Metadata service base URL, for every cloud or one (aws=, gcp=, azure=).",
        ),
    ] = None,
    provider: Annotated[
        CollectProviderOpt,
        typer.Option("--provider", help="Metadata service to ask; none needs --vm-id."),
    ] = CollectProviderOpt.auto,
    vm_id: Annotated[
        str | None, typer.Option("--vm-id", help="VM id to bind without a metadata service.")
    ] = None,
    key_release: Annotated[
        Path | None,
        typer.Option("--key-release", help="Compact JWS from the owner's key broker."),
    ] = None,
    tpm: Annotated[
        str,
        typer.Option(
            "--tpm",
            metavar="DEVICE|tcp:HOST:PORT|unix:PATH",
            help="The TPM to quote (a simulator socket for tests).",
        ),
    ] = collector.DEFAULT_TPM,
    no_tpm: Annotated[
        bool, typer.Option("--no-tpm", help="Do not use the vTPM (no quote, no HCL report).")
    ] = False,
) -> None:
    """Inside the VM: write one evidence file bound to the nonce (exit 0 ok, 3 no TEE report)."""
    try:
        options = collector.make_options(
            nonce=nonce,
            out=out,
            root=root,
            configfs=configfs,
            provider=provider.value,
            vm_id=vm_id,
            metadata_url=metadata_url,
            key_release=key_release,
            tpm=None if no_tpm else tpm,
        )
    except collector.UsageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    raise typer.Exit(collector.run(options))
