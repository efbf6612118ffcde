"""``dmpf export``: a finished run as a model directory that travels (Hugging Face conventions), optionally pushed
to the Hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import FormatOpt, OutputFormat, make_console


def export_command(
    run: Annotated[Path, typer.Option("--run", help="A finished run directory, or a multi-seed root whose seeds all finished.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The directory to write the exported model to.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an exported model already there.")] = False,
    push_to_hub: Annotated[
        Optional[str], typer.Option("--push-to-hub", metavar="ORG/NAME",
                                    help="Then upload it to this Hugging Face Hub repository (made if missing; the "
                                         "token from `hf auth login` or HF_TOKEN).")
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="With --push-to-hub: make a new repository private.")] = False,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Export a run: config.json, model.safetensors (trainable weights; the frozen backbone is named, not copied),
    dmpf.json and a README.md model card with the metrics over its seeds."""
    from ..api import export
    from ..recipes.share import push_to_hub as push
    from ..store.exported import MANIFEST

    folder = export(run, output, overwrite=overwrite)
    url = push(folder, push_to_hub, private=private) if push_to_hub else None
    if format is OutputFormat.json:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        typer.echo(json.dumps({"output": str(folder), "pushed": url, **manifest}, indent=2))
        return
    console = make_console()
    console.print(f"exported {run} to {folder} (config.json, model.safetensors, dmpf.json, README.md)")
    if url:
        console.print(f"pushed to the Hub: {url}")
