"""One run directory to finish, wherever it runs: in this process, as a ``dmpf train`` subprocess or as a Slurm job.

A :class:`Job` is started when it is new, resumed when a killed run left a resumable checkpoint, started again when
it died before its first checkpoint, and left alone when finished. What it runs is decided where it runs
(:func:`run_job`), so a job submitted twice never trains a finished run again. :mod:`dmpf_cli.experiments.launch`
decides where.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..recipes.runtime import use_threads
from ..store.checkpoints import resumable_folder
from ..store.run import RunDir, RunState


@dataclass(frozen=True)
class Job:
    """One run directory to finish: ``config`` (a resolved config file) trained with ``seed`` into ``run_dir``."""

    name: str  # e.g. "full/seed-1111": names the log and the progress line
    run_dir: Path
    config: Path
    seed: int
    max_epochs: int = 0  # for the progress bar

    def state(self) -> str:
        """``finished``, ``resume`` (a killed run with a resumable checkpoint), ``restart`` (a run that died before
        its first checkpoint: nothing of it can be kept) or ``new``."""
        run = RunDir(self.run_dir)
        state = run.state
        if state is RunState.NEW:
            return "new"
        if state is RunState.FINISHED:
            return "finished"
        return "resume" if resumable_folder(run.last) is not None else "restart"

    def argv(self) -> list[str]:
        """The ``dmpf train`` command that finishes this job from where it stands."""
        state = self.state()
        if state == "resume":
            return ["train", "--resume", str(self.run_dir)]
        return ["train", "--config", str(self.config), "--seeds", str(self.seed), "--output", str(self.run_dir),
                *(["--overwrite"] if state == "restart" else [])]


def run_job(job: Job, log: Path | None = None, ready=None) -> dict[str, Any]:
    """Finish ``job`` in this process (the in-process launcher, and the body of a Slurm job); returns its results.
    Its console output goes to ``log`` (appended), or nowhere. ``ready``: what the preflight of ``job.config`` opened
    (:class:`~dmpf_cli.recipes.preflight.Ready`), reused rather than checked and opened again."""
    from rich.console import Console

    from ..recipes.preflight import resolve_config
    from ..recipes.runs import train

    _export_distributed()
    state = _agreed_state(job)
    if state == "finished":
        return RunDir(job.run_dir).read_results()
    with open(log, "a", encoding="utf-8") if log else open(os.devnull, "w") as stream:
        console = Console(file=stream, width=160, soft_wrap=True, highlight=False)
        if state == "resume":
            summary = train(None, None, None, resume=job.run_dir, console=console, ready=ready)
        else:
            cfg = resolve_config(config=job.config)
            summary = train(cfg, job.run_dir, [job.seed], overwrite=state == "restart", console=console, ready=ready)
    return next(iter(summary["runs"].values()), {})


def run_submitted(job: Job, log: Path) -> dict[str, Any]:
    """The body of a submitit job: :func:`run_job` with the job's CPU threads (its SLURM_CPUS_PER_TASK, unless the
    user set OMP_NUM_THREADS)."""
    use_threads()
    return run_job(job, log)


def _agreed_state(job: Job) -> str:
    """The job's state as rank 0 sees it, for every rank of a multi-task job: a rank that looked after rank 0
    had begun writing the run directory would otherwise take a fresh run for a dead one and start it over."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return job.state()
    import torch.distributed as dist

    from ..config import load_config
    from ..model.dmpf import resolve_device
    from ..recipes.train import init_distributed

    world = init_distributed(resolve_device(load_config(config=job.config).training.device))
    said = [job.state() if world.main else None]
    dist.broadcast_object_list(said, src=0)
    return said[0]


@dataclass
class JobOutcome:
    """How one :class:`Job` ended: ``ok`` and its results, or one line saying why it failed."""

    job: Job
    ok: bool
    results: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # one line: why it failed, and where its log is


# Where rank 0 of a several-task job listens for the others: below Linux's ephemeral ports (32768-60999), which any
# client socket on the node may hold. submitit's own choice, 20000-60000, mostly lands among them, and when it hits
# a held one rank 0 fails with EADDRINUSE while the other ranks wait 30 minutes for it.
RENDEZVOUS_PORTS = range(20000, 32768)


def rendezvous_port(job_id: str) -> int:
    """The rendezvous port of Slurm job ``job_id``: a function of the id alone, so every rank derives the same."""
    return RENDEZVOUS_PORTS[zlib.crc32(job_id.encode()) % len(RENDEZVOUS_PORTS)]


def _export_distributed() -> None:
    """Inside a Slurm job with several tasks: the environment torch.distributed reads (RANK, WORLD_SIZE, …), with
    the rendezvous on :func:`rendezvous_port` unless ``MASTER_PORT`` is set."""
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1 or "WORLD_SIZE" in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    os.environ.setdefault("MASTER_PORT", str(rendezvous_port(os.environ.get("SLURM_JOB_ID", "0"))))
    # submitit takes MASTER_PORT from the environment; overwrite: it refuses to export over a variable already set
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
