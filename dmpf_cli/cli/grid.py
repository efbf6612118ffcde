"""``dmpf grid``: its options, the lines and ``--format json`` events of each run, the report; the grid itself is
:func:`dmpf_cli.experiments.grid.run_grid`'s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

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
from .train import _parse_seeds


def grid_command(
    grid: Annotated[Path, typer.Argument(help="A grid file (configs/grids/*.yaml), or a grid directory to finish.")],
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Comma-separated seeds (default: the grid's).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The grid directory (default: runs/grids/NAME).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Finish the grid in --output (it must hold one).")] = False,
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
    """Run every variant × seed of a grid file as a run directory (finished runs kept, killed ones resumed), then
    report them: mean ± std per variant and the difference to the baseline with paired 95% intervals."""
    from ..experiments.grid import REPORT_FILES, grid_target, run_grid
    from ..experiments.launch import make_launch
    from ..recipes.runtime import use_threads

    machine = format is OutputFormat.json
    console = make_console(stderr=machine)
    grid, output = grid_target(grid, output)
    how = make_launch(gpus=gpus, jobs=jobs, launcher=launcher.value if launcher else None,
                      slurm_partition=slurm_partition, slurm_time=slurm_time, gpus_per_job=gpus_per_job,
                      cpus_per_job=cpus_per_job, threads=threads)
    use_threads(threads)  # this process's own work: the data and the demo LM on first use, in-process runs

    def emit(event: dict) -> None:
        if machine:
            typer.echo(json.dumps(event))

    def started(job) -> None:
        emit({"event": "start", "run": job.name, "dir": str(job.run_dir)})

    def ended(outcome) -> None:
        job = outcome.job
        if outcome.ok:
            r = outcome.results
            emit({"event": "end", "run": job.name, "dir": str(job.run_dir), "ok": True, "test": r.get("test", {})})
            console.print(f"{job.name}: test MAE {r['test']['MAE']:.4f}, best epoch {r['best_epoch'] + 1} of "
                          f"{r['epochs']}")
        else:
            emit({"event": "end", "run": job.name, "dir": str(job.run_dir), "ok": False, "error": outcome.error})
            console.print(f"[red]{job.name} failed[/red]: {outcome.error}")

    done = run_grid(grid, output, _parse_seeds(seeds), resume=resume, how=how, console=console, on_start=started,
                    on_end=ended, live=not machine)
    if done.report is not None:
        emit({"event": "report", "report": json.loads((done.root / REPORT_FILES[1]).read_text(encoding="utf-8"))})
        if not machine:
            from .report import print_report

            print_report(done.report, console)
            console.print(f"report: {' and '.join(str(done.root / name) for name in REPORT_FILES)}")
    done.raise_failures()
