"""`python -m auditor.guest collect ...`: the collector inside a VM, standard library only.

The same code as `ccaudit guest collect`, without typer: a VM needs only this package (one
wheel, installed without dependencies) and a Python 3.11 interpreter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from auditor._version import __version__
from auditor.guest import collector


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m auditor.guest",
        description="cc-auditor guest side: collect hardware evidence inside a confidential VM.",
    )
    parser.add_argument("--version", action="version", version=f"ccaudit-guest {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    collect = commands.add_parser(
        "collect",
        help="write one evidence file bound to the auditor's nonce",
        description=(
            "Bind the nonce to this VM's identity in REPORT_DATA, request the SEV-SNP report or "
            "TDX quote through configfs-tsm, quote the vTPM with the same binding (on Azure CVMs "
            "also read the HCL report and its certificates), add the vTPM event log, TDX CCEL, "
            "dm-crypt state and kernel command line, and write one JSON evidence file. Exit 0: "
            "identity and a hardware report collected; 3: file written without one; 2: unusable "
            "arguments."
        ),
    )
    collect.add_argument("--nonce", required=True, help="64 hex characters from the auditor")
    collect.add_argument("--out", required=True, type=Path, help="evidence file to write")
    collect.add_argument("--root", type=Path, default=Path("/"), help="filesystem root (tests)")
    collect.add_argument(
        "--configfs", type=Path, default=Path("/sys/kernel/config"), help="configfs mount point"
    )
    collect.add_argument(
        "--metadata-url",
        action="append",
        default=[],
        metavar="[CLOUD=]URL",
        help="metadata service base URL, for every cloud or one (aws=, gcp=, azure=); repeatable",
    )
    collect.add_argument(
        "--provider",
        choices=collector.PROVIDER_CHOICES,
        default="auto",
        help=(
            "which metadata service to ask (auto probes each; libvirt reads the SMBIOS UUID; "
            "none needs --vm-id)"
        ),
    )
    collect.add_argument("--vm-id", help="VM id to bind when no metadata service is used")
    collect.add_argument(
        "--key-release", type=Path, help="compact JWS from the owner's key broker to include"
    )
    collect.add_argument(
        "--tpm",
        default=collector.DEFAULT_TPM,
        metavar="DEVICE|tcp:HOST:PORT|unix:PATH",
        help=f"the TPM to quote (default {collector.DEFAULT_TPM}; a simulator socket for tests)",
    )
    collect.add_argument(
        "--no-tpm", action="store_true", help="do not use the vTPM (no quote, no HCL report)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = collector.make_options(
            nonce=args.nonce,
            out=args.out,
            root=args.root,
            configfs=args.configfs,
            provider=args.provider,
            vm_id=args.vm_id,
            metadata_url=args.metadata_url,
            key_release=args.key_release,
            tpm=None if args.no_tpm else args.tpm,
        )
    except collector.UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return collector.EXIT_USAGE
    return collector.run(options)


if __name__ == "__main__":
    sys.exit(main())
