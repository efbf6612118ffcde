"""``dmpf config show | validate | list | cp``: the resolved config, a checked file, the presets, a preset to edit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .common import ConfigOpt, DatasetOpt, FormatOpt, OutputFormat, OverridesArg, make_console

app = typer.Typer(help="Show, check, list and copy experiment configs.", no_args_is_help=True)


@app.command("show")
def config_show(
    overrides: OverridesArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Print the resolved config (preset or file, then the overrides)."""
    from ..config import to_yaml
    from ..recipes.preflight import resolve_config

    cfg = resolve_config(dataset, config, overrides or [])
    if format is OutputFormat.json:
        typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))
    else:
        typer.echo(to_yaml(cfg), nl=False)


@app.command("validate")
def config_validate(
    file: Annotated[Path, typer.Argument(help="The YAML config to check.")],
    overrides: OverridesArg = None,
) -> None:
    """Check a config file: keys, types, values, component names, MM layers against the backbone."""
    from ..recipes.preflight import resolve_config

    cfg = resolve_config(config=file, overrides=overrides or [])
    make_console().print(f"[green]ok[/green] {file}: experiment '{cfg.name}' is valid")


@app.command("list")
def config_list() -> None:
    """List the presets in configs/ (select one with --dataset NAME or --config NAME)."""
    from rich.table import Table

    from ..config import CONFIG_DIR, preset_names, read_yaml

    table = Table("preset", "description", title=f"presets in {CONFIG_DIR}", title_justify="left")
    for name in preset_names():
        table.add_row(name, str(read_yaml(CONFIG_DIR / f"{name}.yaml").get("description", "")))
    make_console().print(table)


@app.command("cp")
def config_cp(
    name: Annotated[str, typer.Argument(help="The preset to copy (dmpf config list), e.g. mosei.")],
    file: Annotated[Path, typer.Argument(help="Where to write it: a .yaml file name, or a directory.")],
) -> None:
    """Copy a preset, comments and all, to FILE for editing; then train with --config FILE."""
    from ..config import copy_preset

    written = copy_preset(name, file)
    make_console().print(f"copied preset {name} to {written}; edit it, then: dmpf train --config {written}")
