"""``dmpf sweep``: run one worker of an Optuna study over a space file, or ``--show`` where the study stands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import (
    CpusPerJobOpt,
    FormatOpt,
    GpusOpt,
    GpusPerJobOpt,
    JobsOpt,
    LauncherOpt,
    OutputFormat,
    SlurmPartitionOpt,
    SlurmTimeOpt,
    ThreadsOpt,
    make_console,
)

SHOWN = 10  # --show lists this many of the best trials as text (--format json: every trial)


def sweep_command(
    space: Annotated[Path, typer.Argument(help="The space file (YAML): base config, overrides, searched keys.")],
    trials: Annotated[Optional[int], typer.Option(
        "--trials", "-n", min=1, help="The study's total number of trials, all workers together "
        "(default: the study's, else the space file's trials, else 20).")] = None,
    storage: Annotated[Optional[str], typer.Option(
        "--storage", help="A database URL (sqlite:///PATH, postgresql://…) or a journal file (journal:PATH, "
        "PATH.log); default: DIR/study.db.")] = None,
    study: Annotated[Optional[str], typer.Option(
        "--study", help="The study to create or join (default: the space file's name).")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Where the trials' run directories go (default: runs/sweeps/STUDY).")] = None,
    show: Annotated[bool, typer.Option(
        "--show", help="Train nothing: list the best trials and the counts per state, write DIR/best.yaml.")] = False,
    gpus: GpusOpt = None,
    jobs: JobsOpt = None,
    launcher: LauncherOpt = None,
    slurm_partition: SlurmPartitionOpt = None,
    slurm_time: SlurmTimeOpt = 60,
    gpus_per_job: GpusPerJobOpt = 1,
    cpus_per_job: CpusPerJobOpt = None,
    threads: ThreadsOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Search hyperparameters with Optuna: each trial is a run directory; several workers join one study.

    One worker in this process by default; --gpus 0,1 starts one worker per GPU, --jobs N N workers on the CPUs,
    --launcher slurm --jobs N N Slurm jobs (one worker each). Each trial is one process's run either way."""
    from ..experiments.launch import JobError, make_launch
    from ..experiments.sweep import load_space, run_sweep
    from ..recipes.runtime import use_threads

    machine = format is OutputFormat.json
    if launcher and jobs is not None and jobs < 1:
        raise JobError(f"--jobs: expected a positive integer, got {jobs}")
    # with a launcher, --jobs N is the number of jobs (workers) to submit; without, the number of local slots
    how = make_launch(gpus=gpus, jobs=None if launcher else jobs, launcher=launcher.value if launcher else None,
                      slurm_partition=slurm_partition, slurm_time=slurm_time, gpus_per_job=gpus_per_job,
                      cpus_per_job=cpus_per_job, threads=threads)
    use_threads(threads)  # this process's own work: the data and the demo LM on first use, in-process runs
    if show and how.launcher != "in-process":
        raise JobError("--show: trains nothing; drop --gpus/--jobs/--launcher")
    spec = load_space(space)
    console = make_console(stderr=machine)

    def emit(event: dict) -> None:
        if machine:
            typer.echo(json.dumps(event))

    summary = run_sweep(spec, storage, study, trials, output, how, console, jobs=jobs if launcher else None,
                        show=show, on_event=emit, live=not machine)
    if machine:
        typer.echo(json.dumps(summary if show else {"event": "summary", **summary}))
    elif show:
        _print_show(console, summary)


def _print_show(console, summary: dict[str, Any]) -> None:
    from rich.table import Table

    counts = summary["counts"]
    extra = [f"{counts[k]} {k}" for k in ("retried", "discarded") if counts.get(k)]
    budget = f"{summary['done']}/{summary['trials']} trials done; " if summary["trials"] else ""
    console.print(f"study [bold]{summary['study']}[/bold] in {summary['storage']}: {budget}"
                  + ", ".join(f"{counts[k]} {k}" for k in ("complete", "pruned", "failed", "running", "waiting"))
                  + (f" (of the failed: {', '.join(extra)})" if extra else ""))
    ranked = [r for r in summary["rows"] if r["rank"] is not None]
    if ranked:
        table = Table("rank", "trial", "valid MAE", "state", "params", "run dir",
                      title=f"the best {min(SHOWN, len(ranked))} of {len(ranked)} complete trials", title_justify="left")
        for row in ranked[:SHOWN]:
            table.add_row(str(row["rank"]), str(row["trial"]), f"{row['value']:.4f}", row["state"],
                          " ".join(f"{k}={_shown_param(v)}" for k, v in row["params"].items()), row["run_dir"] or "–")
        console.print(table)
    for row in summary["rows"]:
        if row["state"] == "running":
            console.print(f"trial {row['trial']}: running ({row.get('worker', '?')}, last heartbeat "
                          f"{row['heartbeat_age_s']:.0f} s ago)")
    if summary["best"]:
        console.print(f"best: trial {summary['best']['trial']}; its config: {summary['best']['config']} "
                      f"(dmpf train --config {summary['best']['config']})")


def _shown_param(value: Any) -> str:
    """A trial's parameter value in the table: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
