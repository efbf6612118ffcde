"""``dmpf train``: train a config over its seeds into run directories, then show the test results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import DmpfError
from .common import (
    AttentionOpt,
    ConfigOpt,
    DatasetOpt,
    FormatOpt,
    OutputFormat,
    OverridesArg,
    ThreadsOpt,
    make_console,
    metrics_table,
)


def _parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds 1111,1112`` (dmpf train, dmpf grid), by the config's rule for seeds."""
    from ..config import SEED_RANGE, are_seeds

    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = None
    if not are_seeds(seeds):
        raise DmpfError(f"--seeds: expected comma-separated integers {SEED_RANGE}, distinct, like 1111,1112, got '{text}'")
    return seeds


def train_command(
    overrides: OverridesArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Comma-separated seeds, e.g. 1111,1112,1113.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run directory (default: runs/NAME-DATE-TIME).")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the interrupted run in this directory.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run directory.")] = False,
    attention: AttentionOpt = None,
    threads: ThreadsOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Train DMPF (the design.md §6 recipe), test the best-validation checkpoint, write a run directory."""
    from ..api import train
    from ..recipes.preflight import resolve_config
    from ..recipes.runtime import use_threads

    if resume is not None and (dataset or config or overrides or seeds):
        raise DmpfError("--resume: continues a run with its own config; drop --dataset/--config/--seeds/overrides")
    use_threads(threads)
    extra = [f"training.attention={attention}"] if attention else []
    cfg = resolve_config(dataset, config, [*(overrides or []), *extra])
    console = make_console(stderr=format is OutputFormat.json)
    if resume is None and dataset is None and config is None and cfg.data.dataset == "synthetic":
        from ..model.backbones import backbone_shapes

        lm = ("a small GPT-2 that dmpf pretrained itself on generated reviews (language modelling only)"
              if backbone_shapes(cfg.backbone).built_by_dmpf else f"the {cfg.backbone.name} backbone")
        console.print(f"[yellow]embedded default[/yellow]: a generated synthetic dataset and {lm} — a "
                      "demonstration of the method, not the paper's numbers")
    summary = train(None if resume is not None else cfg, output=output, seeds=_parse_seeds(seeds), resume=resume,
                    overwrite=overwrite, progress=console, threads=threads).as_dict()
    if format is OutputFormat.json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from ..recipes.datasets import reference_scores
    from ..store.run import RunDir

    for root, results in summary["runs"].items():
        if not results:  # a DDP rank other than 0: rank 0 reports
            continue
        rows = {"test": results["test"], "valid": results["valid"]}
        title = f"{root}: seed {results['seed']}, best epoch {results['best_epoch'] + 1} of {results['epochs']}"
        if "random" in results["backbone"]:
            title += " — random-init backbone"
        data = RunDir(Path(root)).read_status().get("data")
        ref = reference_scores(data)
        if ref:
            rows.update(ref)
        console.print(metrics_table(title, rows))
        if ref:
            console.print(f"{', '.join(ref)}: what predictors that know the generator's planted structure score on "
                          f"this test split (`dmpf prepare --info {data}` explains each)")
        if results["epochs"] > 1 and results["best_epoch"] + 1 == results["epochs"] == cfg.training.max_epochs:
            console.print(f"[yellow]note[/yellow]: the best epoch is the last: validation was still improving when "
                          f"training.max_epochs ({cfg.training.max_epochs}) stopped the run; more epochs may do better")
    if "summary" in summary:
        console.print(metrics_table("test, mean ± std over seeds", {"test": summary["summary"]}))
