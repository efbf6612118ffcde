"""``dmpf extract``: media files → one features file per clip, by a feature recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import FormatOpt, OnError, OutputFormat, make_console


def extract_command(
    media: Annotated[list[Path], typer.Argument(help="Media files (video or audio, any container FFmpeg reads).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The directory for the features files (CLIP.npz).")],
    recipe: Annotated[str, typer.Option("--recipe", help="The feature recipe (dmpf plugins lists them): sims, opensmile, …")] = "sims",
    transcript: Annotated[Optional[str], typer.Option("--transcript", help="What was said (one media file); else CLIP.txt or CLIP.srt beside each clip.")] = None,
    openface: Annotated[Optional[Path], typer.Option("--openface", help="The clip's OpenFace 2 CSV (one media file); else CLIP.csv (or CLIP.npy, your own per-frame features) beside each clip.")] = None,
    on_error: Annotated[OnError, typer.Option("--on-error", help="A clip that cannot be used: skip it (listed at the end) or stop.")] = OnError.fail,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Clips extracted at once, one process each.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Extract again clips whose features file exists (default: keep them).")] = False,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Extract per-clip features (audio, vision from OpenFace, the transcript) with a feature recipe."""
    from ..recipes.extract import extract

    console = make_console(stderr=True)
    result = extract(media, recipe=recipe, output=output, transcript=transcript, openface=openface,
                     on_error=on_error.value, overwrite=overwrite, jobs=jobs, console=console)
    if format is OutputFormat.json:
        typer.echo(json.dumps({"written": [str(p) for p in result.written], "kept": [str(p) for p in result.kept],
                               "failed": [{"media": str(m), "error": e} for m, e in result.failed]}, indent=2))
    else:
        console.print(f"{len(result.written)} clip(s) extracted to {output}"
                      + (f", {len(result.kept)} kept from before" if result.kept else ""))
        for _, error in result.failed:
            console.print(f"[yellow]skipped[/yellow] {error}")
    if result.failed:
        raise typer.Exit(1)
