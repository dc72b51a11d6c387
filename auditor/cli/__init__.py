"""The `ccaudit` command line: one module per group of commands, a thin layer over the API.

- `scan`: collect, verify, evaluate, report, seal, index, gate (auditor.cli.scan);
- `demo`: the embedded demo fleet (auditor.cli.demo);
- `report`, `merge`, `reverify`, `keys`, `bundle`, `schema`: stored runs (auditor.cli.runs);
- `diff`, `history`: the run store (auditor.cli.history);
- `rules`, `fakecloud`, `verify`, `measure`, `guest`: the rest.

Exit codes: 0 ok; 1 a policy gate failed; 2 usage or configuration error (one line); 3
collection incomplete; 70 an internal error (a bug: one line, the traceback with --debug);
130/143 interrupted. Modules load the scanner, SDKs and reports only inside their commands,
so `--help` and `--version` answer at once.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from auditor._version import __version__
from auditor.cli import demo, fakecloud, history, rules, runs, scan
from auditor.cli.common import (
    EXIT_BELOW_THRESHOLD,
    EXIT_INCOMPLETE,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    Settings,
    exit_code,
    internal_error,
)
from auditor.cli.demo import DEMO_MAA_ISSUER, demo_fleet_dir
from auditor.cli.export import export_app
from auditor.cli.guest import guest_app
from auditor.cli.verify import measure_app, verify_app

__all__ = [
    "DEMO_MAA_ISSUER",
    "EXIT_BELOW_THRESHOLD",
    "EXIT_INCOMPLETE",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "app",
    "demo_fleet_dir",
    "exit_code",
    "main",
]

HELP = """Audit confidential VMs: who can still read the data.

For every VM and every party that could reach the plaintext (control plane, hypervisor,
firmware, attestation service, vTPM, disk-key custodian, guest agents, image publisher,
CPU vendor) cc-auditor decides CAN_ACCESS, CLAIMED_EXCLUDED (the provider says so),
EXCLUDED (owner-verified hardware evidence) or UNDETERMINED (evidence missing), and an
assurance level L0..L4.

Start with `ccaudit demo` (no cloud account needed), then `ccaudit scan --provider aws`.

Exit codes: 0 ok; 1 a policy gate failed (--fail-below, --fail-on-regression,
--max-undetermined); 2 usage/configuration error (one line); 3 collection incomplete
(the gaps are listed); 70 internal error (a bug: one line, --debug for the traceback).
1 wins over 3. Interrupted: 130 (SIGINT) or 143 (SIGTERM), partial run kept.
"""

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ccaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="On an internal error, print the traceback.")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress and no 'wrote ...' lines on stderr."),
    ] = False,
) -> None:
    """cc-auditor."""
    Settings.debug = debug
    Settings.quiet = quiet


for _module in (scan, demo, runs, history, rules, fakecloud):
    _module.register(app)
app.add_typer(guest_app, name="guest")
app.add_typer(verify_app, name="verify")
app.add_typer(measure_app, name="measure")
app.add_typer(export_app, name="export")


def main() -> None:
    """The `ccaudit` entry point: an unexpected exception is one line and exit 70, never 1."""
    if "--debug" in sys.argv[1:]:
        Settings.debug = True
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # a bug: say so in one line, never pose as a failed gate (1)
        internal_error(err, __version__)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
