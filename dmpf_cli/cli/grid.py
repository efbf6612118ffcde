"""``dmpf grid``: a grid file's variants × seeds as run directories, run where the options say, then the report."""

from __future__ import annotations

import json
from collections import Counter
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
    from ..experiments.grid import GRID_FILE, LOGS, REPORT_FILES, GridError, plan, read_grid, write_plan, write_report
    from ..experiments.launch import Monitor, launch, make_launch
    from ..recipes.runs import ready
    from ..recipes.runtime import use_threads

    machine = format is OutputFormat.json
    console = make_console(stderr=machine)
    if grid.is_dir():  # a grid directory: its own copy of the grid file, and it is the output
        if output is not None and output.resolve() != grid.resolve():
            raise GridError(f"--output: {grid} is a grid directory and is its own output; drop --output")
        output, grid = grid, grid / GRID_FILE
        if not grid.is_file():
            raise GridError(f"{grid.parent}: not a grid directory (no {GRID_FILE}); pass a grid file")
    how = make_launch(gpus=gpus, jobs=jobs, launcher=launcher.value if launcher else None,
                      slurm_partition=slurm_partition, slurm_time=slurm_time, gpus_per_job=gpus_per_job,
                      cpus_per_job=cpus_per_job, threads=threads)
    use_threads(threads)  # this process's own work: the data and the demo LM on first use, in-process runs
    spec = read_grid(grid)
    root = output or Path("runs") / "grids" / spec.name
    p = plan(spec, root, _parse_seeds(seeds), resume=resume)
    states = {job.name: job.state() for job in p.jobs}  # a damaged run.json is an error before anything is written
    for cfg in {json.dumps(cfg.model_dump(mode="json"), sort_keys=True): cfg for cfg in p.configs.values()}.values():
        ready(cfg, console)  # every variant can run here: data, backbone, device — before the first run starts
    write_plan(p)
    state = Counter(states.values())
    todo = [job for job in p.jobs if states[job.name] != "finished"]
    synthetic = any(cfg.data.dataset == "synthetic" for cfg in p.configs.values())
    console.print(f"[bold]grid {spec.name}[/bold]: {len(spec.variants)} variants × {len(p.seeds)} seeds = "
                  f"{len(p.jobs)} runs in {root} ({state['finished']} finished and kept, {state['resume']} to "
                  f"resume, {state['new'] + state['restart']} to start); {how.describe()}"
                  + ("; [yellow]synthetic data[/yellow]" if synthetic else ""))

    def emit(event: dict) -> None:
        if machine:
            typer.echo(json.dumps(event))

    def started(job) -> None:
        emit({"event": "start", "run": job.name, "dir": str(job.run_dir)})
        monitor.started(job)

    def ended(outcome) -> None:
        monitor.ended(outcome)
        job = outcome.job
        if outcome.ok:
            r = outcome.results
            emit({"event": "end", "run": job.name, "dir": str(job.run_dir), "ok": True, "test": r.get("test", {})})
            console.print(f"{job.name}: test MAE {r['test']['MAE']:.4f}, best epoch {r['best_epoch'] + 1} of "
                          f"{r['epochs']}")
        else:
            emit({"event": "end", "run": job.name, "dir": str(job.run_dir), "ok": False, "error": outcome.error})
            console.print(f"[red]{job.name} failed[/red]: {outcome.error}")

    monitor = Monitor(console, total=len(p.jobs), title=f"grid {spec.name}", done=state["finished"], live=not machine)
    try:
        with monitor:
            outcomes = launch(todo, how, root / LOGS, on_start=started, on_end=ended,
                              submitit_folder=root / ".submitit")
    except KeyboardInterrupt:
        stopped = "; its Slurm jobs are cancelled" if how.launcher in ("slurm", "submitit-local") else ""
        raise GridError(f"interrupted{stopped}: the runs are resumable; `dmpf grid {root}` finishes the grid") from None
    failed = [o for o in outcomes if not o.ok]
    if any(job.state() == "finished" for job in p.jobs):
        report = write_report(root)
        emit({"event": "report", "report": json.loads((root / REPORT_FILES[1]).read_text(encoding="utf-8"))})
        if not machine:
            from .report import print_report

            print_report(report, console)
            console.print(f"report: {' and '.join(str(root / name) for name in REPORT_FILES)}")
    if failed:
        raise GridError(f"{len(failed)} of {len(p.jobs)} runs failed ({', '.join(o.job.name for o in failed)}); the "
                        f"first: {failed[0].error}; `dmpf grid {root}` retries them")
