"""``dmpf pretrain-encoders``: the encoder pre-training stage (the reference's fusion curriculum), then its
test results per stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (
    ConfigOpt,
    DatasetOpt,
    FormatOpt,
    OutputFormat,
    OverridesArg,
    ThreadsOpt,
    make_console,
    metrics_table,
)


def pretrain_encoders_command(
    overrides: OverridesArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Run directory (default: runs/NAME-encoders-DATE-TIME).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run directory.")] = False,
    threads: ThreadsOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Pre-train the A, V and AV encoders alone, each with an L1 head on the sentiment label (no language
    model); a DMPF run then starts from them with encoders.init_from=DIR."""
    from ..recipes.preflight import resolve_config
    from ..recipes.pretrain_encoders import pretrain_encoders
    from ..recipes.runtime import use_threads
    from ..streams import STREAM_BY_NAME

    use_threads(threads)
    cfg = resolve_config(dataset, config, overrides or [])
    console = make_console(stderr=format is OutputFormat.json)
    results = pretrain_encoders(cfg, output, overwrite=overwrite, console=console)
    if format is OutputFormat.json:
        typer.echo(json.dumps(results, indent=2))
        return
    rows = {STREAM_BY_NAME[name].display: metrics for name, metrics in results["test"].items()}
    rows["mean of heads"] = results["test_mean_of_heads"]
    console.print(metrics_table(f"{results['run']}: encoders pre-trained, seed {results['seed']}, best epoch "
                                f"{results['best_epoch'] + 1} of {results['epochs']} — test", rows))
    console.print(f"start DMPF from them: dmpf train encoders.init_from={results['run']}")
