"""`ccaudit rules list|validate|fields`: rules in effect, checked packs, fields rules read."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from auditor.cli.common import OutputFormat, fail

rules_app = typer.Typer(help="Inspect and validate rule packs.", no_args_is_help=True)


@rules_app.command("list")
def rules_list(
    rules: Annotated[list[Path] | None, typer.Option(help="Extra rule pack(s) to include.")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """List the rules in effect: built-in packs plus any --rules."""
    from rich.text import Text

    from auditor.engine import Engine
    from auditor.rules.loader import RulePackError, load_packs

    try:
        engine = Engine(load_packs(list(rules or [])))
    except RulePackError as err:
        raise fail(str(err)) from err
    if fmt is OutputFormat.json:
        data = [
            {**c.rule.model_dump(mode="json"), "pack": c.pack, "sections": list(c.sections)}
            for c in engine.rules
        ]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    console = Console()
    console.print(Text("Rules in effect", style="bold"))
    for c in engine.rules:
        r = c.rule
        console.print(Text(""))
        head = Text()
        head.append(r.id, style="bold")
        head.append(f"  {r.party.value} {r.effect.value}  {r.severity.value}  ")
        head.append(",".join(r.providers or ["all clouds"]))
        console.print(head)
        console.print(Text("   " + r.title))
    console.print(Text(""))
    for pack in engine.packs:
        console.print(
            Text(
                f"pack {pack.ref.name} {pack.ref.version} ({pack.ref.path}) sha256 "
                f"{pack.ref.sha256}"
            )
        )


@rules_app.command("validate")
def rules_validate(
    packs: Annotated[list[Path], typer.Argument(help="Rule pack files to check.")],
) -> None:
    """Check rule packs (structure, parties, CEL) without scanning; exit 2 on the first error."""
    from auditor.engine import Engine
    from auditor.rules.loader import RulePackError, load_packs

    try:
        loaded = load_packs(list(packs))
        Engine(loaded)
    except RulePackError as err:
        raise fail(str(err)) from err
    for pack in loaded[-len(packs) :]:
        typer.echo(f"ok: {pack.ref.path}: {pack.ref.rules} rules, sha256 {pack.ref.sha256}")


@rules_app.command("fields")
def rules_fields() -> None:
    """The VM document fields rules can read as `vm.<field>`."""
    from rich.text import Text

    from auditor.document import SECTIONS

    console = Console()
    for name, meaning in SECTIONS.items():
        line = Text()
        line.append(f"vm.{name}", style="bold")
        line.append(f"  {meaning}")
        console.print(line)


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")
