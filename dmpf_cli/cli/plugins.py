"""``dmpf plugins``: every registered component by kind, with its origin."""

from __future__ import annotations

import json

import typer

from .common import FormatOpt, OutputFormat, make_console


def plugins(format: FormatOpt = OutputFormat.text) -> None:
    """List every registered component by kind, with its origin (built-in or the providing distribution)."""
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
