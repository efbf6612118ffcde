"""Where the runs of a grid (or the workers of a sweep) go: this process, one process per GPU or CPU slot of this
machine, or a Slurm cluster through submitit — and watching them from the run directories they write.

A job is one run directory to finish (:class:`~dmpf_cli.experiments.job.Job`). :func:`launch` picks the
:class:`Launcher` a :class:`Launch` names, once; it runs a grid's jobs (:meth:`Launcher.run`) or starts a sweep's
workers (:meth:`Launcher.start`):

* ``in-process`` (the default): one job after the other in this process.
* ``local`` with slots: ``--gpus 0,1,2,3`` runs one ``dmpf train`` subprocess per GPU at a time, each seeing only its
  GPU (``CUDA_VISIBLE_DEVICES``) — the reference's per-GPU runner scripts, done once; ``--jobs N`` runs N at a
  time on the CPUs.
* ``slurm``: each job is submitted with submitit to a Slurm partition (``--slurm-partition``, ``--slurm-time``,
  ``--gpus-per-job``); a job asking for several GPUs runs as that many tasks, one DDP rank each (submitit exports
  the torch.distributed environment torchrun would). ``submitit-local`` is submitit's local executor, the same
  code path without a cluster.

Every job writes its console output to ``LOGS/NAME.log``; the progress display
(:class:`~dmpf_cli.experiments.monitor.Monitor`) reads the run directories themselves (``run.json``,
``metrics.jsonl``), so it shows the same thing whichever launcher runs the job.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import DmpfError
from ..recipes.runtime import available_cpus, cpu_threads, threads_text
from ..store.run import RunDir
from .job import Job, JobOutcome, run_job, run_submitted

LAUNCHERS = ("in-process", "local", "slurm", "submitit-local")


class JobError(DmpfError):
    """A launcher that cannot run here (no submitit, no CUDA for --gpus, …); one line."""


def _slurm_threads() -> dict[str, str]:
    """Inside a Slurm job: CPU threads for the CPUs Slurm gave the task (--cpus-per-job), unless the user set
    OMP_NUM_THREADS. Without cgroups a task sees every core, and jobs side by side with all-core thread pools
    run many times slower."""
    threads, where = cpu_threads()
    return {"OMP_NUM_THREADS": str(threads)} if where == "SLURM_CPUS_PER_TASK" else {}


# -- launchers -------------------------------------------------------------------------------------

@dataclass
class Launch:
    """How to run jobs: the launcher and its options (see the module docstring); :func:`launch` runs them."""

    launcher: str = "in-process"
    slots: list[dict[str, str]] = field(default_factory=list)  # local: one environment per parallel slot
    slurm_partition: str | None = None
    slurm_time: int = 60  # minutes
    gpus_per_job: int = 1
    cpus_per_job: int | None = None
    tasks_per_job: int | None = None  # DDP ranks per Slurm job; default one per GPU (CPU-only DDP: set it)

    def describe(self) -> str:
        return launch(self).describe()


def parse_gpus(text: str, available: int | None = None) -> list[str]:
    """``--gpus 0,1,3`` → ["0", "1", "3"]; each index must name one of the ``available`` CUDA devices."""
    try:
        gpus = [str(int(part)) for part in text.split(",") if part.strip()]
    except ValueError:
        raise JobError(f"--gpus: expected comma-separated GPU indices like 0,1,2,3, got '{text}'") from None
    if not gpus or len(set(gpus)) != len(gpus) or any(int(g) < 0 for g in gpus):
        raise JobError(f"--gpus: expected distinct GPU indices like 0,1,2,3, got '{text}'")
    if available is None:
        import torch

        available = torch.cuda.device_count()
    if available == 0:
        raise JobError("--gpus: torch sees no CUDA device on this machine; use --jobs N to run N jobs at a time "
                       "on the CPUs")
    missing = [g for g in gpus if int(g) >= available]
    if missing:
        raise JobError(f"--gpus: this machine has {available} CUDA device(s) (0..{available - 1}); no GPU "
                       f"{', '.join(missing)}")
    return gpus


def make_launch(*, gpus: str | None = None, jobs: int | None = None, launcher: str | None = None,
                slurm_partition: str | None = None, slurm_time: int = 60, gpus_per_job: int = 1,
                cpus_per_job: int | None = None, threads: str | int | None = None) -> Launch:
    """The :class:`Launch` the options ask for; contradictory options are one-line errors. ``threads``
    (``--threads``): each local slot's CPU threads, instead of its share of the cores."""
    if launcher is not None and launcher not in LAUNCHERS[2:]:
        raise JobError(f"--launcher: expected slurm or submitit-local, got '{launcher}'")
    if launcher and (gpus or jobs):
        raise JobError(f"--launcher {launcher}: the cluster places the jobs; drop --gpus/--jobs "
                       "(use --gpus-per-job for each job's GPUs)")
    if gpus and jobs:
        raise JobError("--gpus and --jobs: give one (--gpus runs one job per GPU, --jobs N runs N on the CPUs)")
    if jobs is not None and jobs < 1:
        raise JobError(f"--jobs: expected a positive integer, got {jobs}")
    if gpus_per_job < 0:
        raise JobError(f"--gpus-per-job: expected an integer >= 0, got {gpus_per_job}")
    if slurm_time < 1:
        raise JobError(f"--slurm-time: expected minutes >= 1, got {slurm_time}")
    if launcher and threads is not None:
        raise JobError(f"--threads: a job submitted with --launcher {launcher} computes with the CPUs Slurm gives it; "
                       "drop --threads (use --cpus-per-job)")
    if launcher:
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise JobError(f"--launcher {launcher}: needs the submitit package: pip install dmpf[slurm]") from None
        return Launch(launcher, slurm_partition=slurm_partition, slurm_time=slurm_time, gpus_per_job=gpus_per_job,
                      cpus_per_job=cpus_per_job)
    if gpus:
        slots = [{"CUDA_VISIBLE_DEVICES": g} for g in parse_gpus(gpus)]
    elif jobs and jobs > 1:
        slots = [{} for _ in range(jobs)]
    else:
        return Launch()
    share = {"OMP_NUM_THREADS": str(cpu_threads(threads)[0])} if threads is not None else _thread_share(len(slots))
    return Launch("local", slots=[{**slot, **share} for slot in slots])


def _thread_share(parallel: int) -> dict[str, str]:
    """Each of ``parallel`` processes gets its share of this machine's cores for its CPU threads (OpenMP's, and so
    torch's): N processes of all-core thread pools on the same cores run many times slower than one. A user's
    own OMP_NUM_THREADS is kept."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, available_cpus() // parallel))}


def launch(how: Launch) -> Launcher:
    """The launcher ``how`` names: the one place the choice is made, for a grid's jobs and a sweep's workers alike."""
    return {"in-process": InProcess, "local": LocalSlots, "slurm": Submitit, "submitit-local": Submitit}[how.launcher](how)


class Launcher:
    """One way of running (the module docstring): :meth:`run` finishes a grid's jobs, :meth:`start` starts a
    sweep's workers; each one's console output goes to ``LOGS/NAME.log``."""

    submits = False  # its jobs are submitit jobs (Ctrl-C cancels them)

    def __init__(self, how: Launch):
        self.how = how

    def run(self, jobs: list[Job], logs: Path, on_start: Callable[[Job], None] = lambda job: None,
            on_end: Callable[[JobOutcome], None] = lambda outcome: None, folder: Path | None = None,
            checked: dict[Path, Any] | None = None) -> list[JobOutcome]:
        """Run every job; a failed job is reported and the others go on. ``folder``: submitit's (default
        ``LOGS/../.submitit``). ``checked``: the :class:`~dmpf_cli.recipes.preflight.Ready` of each config file,
        reused by a job run in this process (a subprocess or a Slurm job checks again)."""
        logs.mkdir(parents=True, exist_ok=True)
        return self._run(jobs, logs, on_start, on_end, folder or logs.parent / ".submitit", checked or {})

    def start(self, commands: list[tuple[str, list[str]]], logs: Path, folder: Path | None = None) -> list[Started]:
        """Start every ``(name, dmpf arguments)`` at once (a sweep's workers); they run on their own."""
        logs.mkdir(parents=True, exist_ok=True)
        return self._start(commands, logs, folder or logs.parent / ".submitit")

    def describe(self) -> str:
        raise NotImplementedError

    def _run(self, jobs, logs, on_start, on_end, folder, checked) -> list[JobOutcome]:
        raise NotImplementedError

    def _start(self, commands, logs, folder) -> list[Started]:
        raise JobError(f"Launcher.start: expected a local or submitit launcher, got {self.how.launcher}")


class InProcess(Launcher):
    """One job after the other in this process (no workers: a sweep runs its one worker itself)."""

    def describe(self) -> str:
        return "in this process"

    def _run(self, jobs, logs, on_start, on_end, folder, checked) -> list[JobOutcome]:
        outcomes = []
        for job in jobs:
            on_start(job)
            outcomes.append(self._one(job, log_path(logs, job), checked.get(job.config)))
            on_end(outcomes[-1])
        return outcomes

    @staticmethod
    def _one(job: Job, log: Path, ready) -> JobOutcome:
        try:
            return JobOutcome(job, True, run_job(job, log, ready))
        except DmpfError as exc:
            return JobOutcome(job, False, error=f"{' '.join(str(exc).split())} (log: {log})")
        except Exception as exc:  # a crash of one run must not end the grid: report it, keep the traceback in the log
            import traceback

            with open(log, "a", encoding="utf-8") as f:
                traceback.print_exc(file=f)
            return JobOutcome(job, False, error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]} (log: {log})")


def log_path(logs: Path, job: Job) -> Path:
    return logs / f"{job.name.replace('/', '-')}.log"


def _failure_line(log: Path, what: str) -> str:
    """A failed job's own last ``error:`` line when it printed one, else ``what``; and where its log is."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    said = next((ln.removeprefix("error: ") for ln in reversed(lines) if ln.startswith("error: ")), None)
    return f"{said or what} (log: {log})"


class LocalSlots(Launcher):
    """A pool of slots (an environment each: its GPU, its CPU threads) on this machine."""

    def describe(self) -> str:
        slots = self.how.slots
        gpus = [s.get("CUDA_VISIBLE_DEVICES") for s in slots]
        threads = slots[0].get("OMP_NUM_THREADS")
        each = f", {threads_text(threads)} each" if threads else ""
        return f"one job per GPU ({', '.join(gpus)}){each}" if all(gpus) else f"{len(slots)} jobs at a time{each}"

    def _run(self, jobs, logs, on_start, on_end, folder, checked) -> list[JobOutcome]:
        """Each slot takes the next job and runs it as a ``dmpf train`` subprocess with its environment."""
        pending = list(jobs)
        lock = threading.Lock()
        outcomes: list[JobOutcome] = []
        children: set[subprocess.Popen] = set()

        def worker(slot: dict[str, str]) -> None:
            while True:
                with lock:
                    if not pending:
                        return
                    job = pending.pop(0)
                on_start(job)
                log = log_path(logs, job)
                child = _spawn([*job.argv(), "--format", "json"], slot, log)
                with lock:
                    children.add(child)
                code = child.wait()
                with lock:
                    children.discard(child)
                run = RunDir(job.run_dir)
                if code == 0 and run.finished:
                    outcome = JobOutcome(job, True, run.read_results())
                else:
                    outcome = JobOutcome(job, False, error=_failure_line(log, f"exit code {code}"))
                with lock:
                    outcomes.append(outcome)
                on_end(outcome)

        pool = ThreadPoolExecutor(max_workers=len(self.how.slots))
        try:
            for future in [pool.submit(worker, slot) for slot in self.how.slots]:
                future.result()
        except KeyboardInterrupt:  # the runs stay resumable: stop the children, keep their directories
            with lock:
                pending.clear()
                for child in children:
                    child.terminate()
            raise
        finally:
            pool.shutdown(wait=True)
        order = {job.name: i for i, job in enumerate(jobs)}
        return sorted(outcomes, key=lambda o: order[o.job.name])

    def _start(self, commands, logs, folder) -> list[Started]:
        """One per slot, with the slot's environment."""
        if len(commands) > len(self.how.slots):
            raise JobError(f"{len(commands)} workers for {len(self.how.slots)} slots")
        # a session of its own: Ctrl-C reaches the parent only, which interrupts each worker exactly once (a
        # second SIGINT would cut short the worker's own handling of the first)
        return [Started(name, logs / f"{name}.log", process=_spawn(argv, slot, logs / f"{name}.log", own_session=True))
                for (name, argv), slot in zip(commands, self.how.slots)]


class Submitit(Launcher):
    """Each job (or worker) a submitit job: on Slurm, or submitit's local executor."""

    submits = True

    def describe(self) -> str:
        how = self.how
        where = f"partition {how.slurm_partition}" if how.slurm_partition else "the default partition"
        return (f"submitit, {'Slurm ' + where if how.launcher == 'slurm' else 'local executor'}, "
                f"{how.gpus_per_job} GPU(s) and {how.slurm_time} min per job")

    def _run(self, jobs, logs, on_start, on_end, folder, checked) -> list[JobOutcome]:
        """Every job submitted; waits for them all."""
        executor = _executor(self.how, folder)
        submitted = []
        for job in jobs:
            handle = _submit(executor, self.how, job.name, run_submitted, job, log_path(logs, job))
            on_start(job)
            submitted.append((job, handle))
        outcomes = []
        try:
            for job, handle in submitted:
                outcomes.append(_submitted_outcome(job, handle, logs, folder))
                on_end(outcomes[-1])
        except KeyboardInterrupt:  # Ctrl-C stops what this command started; the runs stay resumable
            for _, handle in submitted:
                if not handle.done():
                    handle.cancel(check=False)
            raise
        return outcomes

    def _start(self, commands, logs, folder) -> list[Started]:
        """One submitit job each, running the command (:func:`run_command`)."""
        executor = _executor(self.how, folder)
        started = []
        for name, argv in commands:
            log = logs / f"{name}.log"
            started.append(Started(name, log, handle=_submit(executor, self.how, name, run_command, argv, str(log))))
        return started


def _executor(how: Launch, folder: Path):
    """A submitit executor for ``how``: Slurm (partition, time, GPUs and CPUs per job) or the local one."""
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    if how.launcher == "slurm":
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        tasks = how.tasks_per_job or max(1, how.gpus_per_job)  # one DDP rank per GPU
        params: dict[str, Any] = {"timeout_min": how.slurm_time, "nodes": 1, "tasks_per_node": tasks,
                                  "slurm_partition": how.slurm_partition}
        if how.gpus_per_job:
            params["gpus_per_node"] = how.gpus_per_job
        if how.cpus_per_job:
            params["cpus_per_task"] = max(1, how.cpus_per_job // tasks)
        if tasks > 1:  # a rank that fails ends the job: the others would wait for it until the rendezvous times out
            params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    else:
        executor = submitit.AutoExecutor(folder=str(folder), cluster="local")
        executor.update_parameters(timeout_min=how.slurm_time)
    return executor


def _submit(executor, how: Launch, name: str, fn: Callable, *args):
    """``executor.submit(fn, *args)``; a refusal (sbatch's own words) is one line naming the job."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr; the error says it
            return executor.submit(fn, *args)
    except Exception as exc:  # a partition that does not exist, a GPU request it cannot meet
        said = " ".join(str(exc).split())[:300]
        hint = "; for jobs without GPUs pass --gpus-per-job 0" if how.gpus_per_job and "gres" in said.lower() else ""
        raise JobError(f"--launcher {how.launcher}: submitting {name} failed: {said}{hint}") from None


def _submitted_outcome(job: Job, handle, logs: Path, folder: Path) -> JobOutcome:
    """Wait for a submitted job; its results, or one line saying why it failed and where to look."""
    try:
        return JobOutcome(job, True, handle.results()[0])  # rank 0's, for a job of several tasks
    except Exception as exc:
        return JobOutcome(job, False, error=f"{_job_said(exc)} (job {handle.job_id}; log: {log_path(logs, job)}; "
                                            f"submitit: {folder})")


def _job_said(exc: Exception) -> str:
    """A submitted job's failure in one line: the last ``…Error: message`` of the traceback text submitit
    re-raises (a DmpfError's own line), else its last line (Slurm's verdict: cancelled, timed out)."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    said = next((ln.split("Error: ", 1)[-1] for ln in reversed(lines) if "Error: " in ln),
                lines[-1] if lines else type(exc).__name__)
    return " ".join(said.split())[:300]


# -- long-running commands (a sweep's workers) ---------------------------------------------------

class Started:
    """One ``dmpf`` command started as a worker: a subprocess on a slot of this machine, or a submitit job."""

    def __init__(self, name: str, log: Path, process: subprocess.Popen | None = None, handle: Any = None):
        self.name, self.log, self.process, self.handle = name, log, process, handle

    def done(self) -> bool:
        return self.process.poll() is not None if self.process is not None else self.handle.done()

    def error(self) -> str | None:
        """None when it ended well, else one line: its own last ``error:`` line, or how it ended."""
        if self.process is not None:
            code = self.process.returncode
            return None if code == 0 else _failure_line(self.log, f"exit code {code}")
        try:
            self.handle.results()
            return None
        except Exception as exc:  # the job's own exception (run_command's one line), or Slurm's verdict
            return f"{_job_said(exc)} (job {self.handle.job_id}; log: {self.log})"

    def stop(self) -> None:
        """Interrupt it as Ctrl-C would, once (a sweep worker then fails its trial as interrupted and queues it
        again); a Slurm job is cancelled (its trial is found lost by its heartbeat)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
        elif not self.handle.done():
            self.handle.cancel(check=False)

    def wait(self, timeout: float) -> None:
        """Wait for a stopped local worker to end (killed after ``timeout`` seconds)."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _spawn(argv: list[str], env: dict[str, str], log: Path, own_session: bool = False) -> subprocess.Popen:
    """``dmpf ARGV`` as a subprocess with ``env`` added to this one's; the command line and its stderr appended
    to ``log``, its stdout discarded."""
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ dmpf {' '.join(argv)}  # {' '.join(f'{k}={v}' for k, v in env.items())}\n")
        out.flush()
        return subprocess.Popen([sys.executable, "-m", "dmpf_cli", *argv], stdout=subprocess.DEVNULL, stderr=out,
                                env={**os.environ, **env}, start_new_session=own_session)


def run_command(argv: list[str], log: str) -> None:
    """The body of a submitit job that runs a ``dmpf`` command: its output to ``log``; a failure raises its
    last ``error:`` line."""
    code = _spawn(argv, _slurm_threads(), Path(log)).wait()
    if code:
        raise JobError(_failure_line(Path(log), f"dmpf {argv[0]} exited with code {code}"))
