"""What the verb modules share: the option types, the choice enums ``--help`` lists, the console, the metric tables.

Nothing here imports torch, transformers or pydantic: ``dmpf --help`` answers at once.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..streams import DATASETS


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


class Split(str, Enum):
    """The splits a run is evaluated on (train is what it learned from)."""

    test = "test"
    valid = "valid"


class OnError(str, Enum):
    skip = "skip"
    fail = "fail"


# dmpf prepare --dataset: every dataset of streams.DATASETS
DatasetName = Enum("DatasetName", {name: name for name in DATASETS}, type=str)

# Options shared by every command that resolves a config. The datasets' presets (configs/NAME.yaml), read from
# streams.DATASETS: the CLI starts without reading the configs directory.
DATASET_PRESETS = sorted({d.preset for d in DATASETS.values() if d.preset})
DatasetOpt = Annotated[
    Optional[str], typer.Option("--dataset", "-d", help=f"Use the preset configs/NAME.yaml ({', '.join(DATASET_PRESETS)}).")
]
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="Use this YAML config file, or a preset by name (mosei).")
]
OverridesArg = Annotated[
    Optional[list[str]], typer.Argument(help="Overrides as key.sub=value, e.g. fusion.n_a=8 mm.layers=[1,2].")
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="text for people, json for machines.")]
# the override training.attention=…: the config checks it (and its error names that key)
AttentionOpt = Annotated[
    Optional[str], typer.Option("--attention", help="auto, xformers, sdpa or eager (default: the config's).")
]

# Every command that computes: how many CPU threads (dmpf_cli.recipes.runtime decides, and checks the value).
ThreadsOpt = Annotated[Optional[str], typer.Option(
    "--threads", metavar="N", show_default=False,
    help="CPU threads to compute with (a grid or sweep with --jobs/--gpus: each job's). Default: "
         "OMP_NUM_THREADS, else Slurm's SLURM_CPUS_PER_TASK, else the CPUs this process may run on.")]

PIPED_WIDTH = 160  # tables' width in a log or a pipe (rich would use 80)


def make_console(stderr: bool = False):
    """A rich console. Into a log or a pipe (and no COLUMNS set), text lines are not wrapped — a path or
    a command in a message stays whole, to be copied — and tables get PIPED_WIDTH columns."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPED_WIDTH
        out.soft_wrap = True
    return out


def warn_stderr(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def metrics_table(title: str, rows: dict[str, dict[str, float]]):
    """Metrics as a table: one column per row name (e.g. seeds, or test/valid), one row per metric."""
    from rich.table import Table

    table = Table("metric", *rows, title=title, title_justify="left")
    keys = list(next(iter(rows.values())))
    for key in keys:
        table.add_row(key, *(_metric_cell(r.get(key)) for r in rows.values()))
    return table


def _metric_cell(value) -> str:
    """One metric in a table cell: a value, or mean ± std over seeds; – where the row has none."""
    if value is None:
        return "–"
    if isinstance(value, dict):  # mean ± std
        return f"{value['mean']:.4f} ± {value['std']:.4f}"
    return f"{value:.4f}"


# Where the jobs of a grid or the workers of a sweep run (dmpf_cli.experiments.launch).
GpusOpt = Annotated[Optional[str], typer.Option(
    "--gpus", help="Run one job per GPU at a time on this machine, e.g. 0,1,2,3.", rich_help_panel="Where jobs run")]
JobsOpt = Annotated[Optional[int], typer.Option(
    "--jobs", help="Run N jobs at a time on this machine's CPUs (dmpf sweep --launcher …: submit N workers).", rich_help_panel="Where jobs run")]
class Launcher(str, Enum):
    slurm = "slurm"
    submitit_local = "submitit-local"


LauncherOpt = Annotated[Optional[Launcher], typer.Option(
    "--launcher", help="slurm: submit each job with submitit; submitit-local: submitit's local executor.",
    rich_help_panel="Where jobs run")]
SlurmPartitionOpt = Annotated[Optional[str], typer.Option(
    "--slurm-partition", help="The Slurm partition (default: the cluster's).", rich_help_panel="Where jobs run")]
SlurmTimeOpt = Annotated[int, typer.Option(
    "--slurm-time", help="Each Slurm job's time limit, in minutes.", rich_help_panel="Where jobs run")]
GpusPerJobOpt = Annotated[int, typer.Option(
    "--gpus-per-job", help="GPUs per Slurm job; more than 1 trains with DDP, one rank per GPU.",
    rich_help_panel="Where jobs run")]
CpusPerJobOpt = Annotated[Optional[int], typer.Option(
    "--cpus-per-job", help="CPUs per Slurm job (default: the cluster's).", rich_help_panel="Where jobs run")]
