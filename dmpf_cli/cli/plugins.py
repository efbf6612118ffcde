"""``dmpf plugins``: every registered component by kind, with its origin; ``dmpf plugins check NAME``: a component
run through its kind's contract (:mod:`dmpf_cli.plugin_kit`), one line per check."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Optional

import typer

from ..registry import KINDS
from .common import FormatOpt, OutputFormat, make_console

Kind = Enum("Kind", {kind: kind for kind in KINDS}, type=str)  # --kind: every registry kind

app = typer.Typer(
    name="plugins",
    help="List every registered component by kind, with its origin; check one against its kind's contract.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@app.callback(invoke_without_command=True)
def plugins(ctx: typer.Context, format: FormatOpt = OutputFormat.text) -> None:
    """List every registered component by kind, with its origin (built-in or the providing distribution)."""
    if ctx.invoked_subcommand is not None:
        return
    from .. import registry

    rows = [
        {"kind": c.kind, "name": c.name, "origin": c.origin, "description": c.doc} for c in registry.components()
    ]
    if format is OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("kind", "name", "origin", "description")
    for row in rows:
        origin = row["origin"] if row["origin"] == registry.BUILTIN else f"[cyan]{row['origin']}[/cyan]"
        table.add_row(row["kind"], row["name"], origin, row["description"])
    make_console().print(table)


@app.command("check")
def check(
    name: Annotated[str, typer.Argument(help="A registered component's name (dmpf plugins lists them).")],
    kind: Annotated[Optional[Kind], typer.Option("--kind", "-k", help="Its kind, where several kinds use the name.")]
    = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Run every check of the component's kind against it: one line per check, exit status 1 if any fails."""
    from ..plugin_kit import CONTRACTS, check_component

    component, outcomes = check_component(name, kind.value if kind is not None else None)
    failed = sum(not o.ok for o in outcomes)
    if format is OutputFormat.json:
        typer.echo(json.dumps({"kind": component.kind, "name": component.name, "origin": component.origin,
                               "contract": CONTRACTS[component.kind].summary, "passed": failed == 0,
                               "checks": [{"check": o.check, "status": o.status.lower(), "detail": o.detail}
                                          for o in outcomes]}, indent=2))
    else:
        typer.echo(f"{component.kind} '{component.name}' ({component.origin}): the {component.kind} contract, "
                   f"{len(outcomes)} checks")
        width = max(len(o.check) for o in outcomes)
        for o in outcomes:
            typer.echo(f"{o.status:<4}  {o.check:<{width}}  {o.detail}")
        counts = {status: sum(o.status == status for o in outcomes) for status in ("pass", "FAIL", "skip")}
        summary = ", ".join(f"{n} {word}" for word, n in (("passed", counts["pass"]), ("failed", counts["FAIL"]),
                                                         ("skipped", counts["skip"])) if n)
        typer.echo(f"{component.name}: {summary}")
    if failed:
        raise typer.Exit(1)
