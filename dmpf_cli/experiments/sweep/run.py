"""Several workers of one sweep started where ``--gpus``, ``--jobs`` or ``--launcher`` say, and watched."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from ...store.roots import trial_name
from .result import _state_name, study_summary
from .space import SweepError, SweepSpec
from .study import ERROR, RUN_DIR, WORKER, Tally, open_sweep
from .worker import check_base_config

STOP_S = 30.0  # how long an interrupted local worker has to fail its trial and queue it again


def run_sweep(spec: SweepSpec, storage_url: str | None, study_name: str | None, trials: int | None,
              output: Path | str | None, how, console, *, jobs: int | None = None, show: bool = False,
              on_event: Callable[[dict], None] = lambda event: None, live: bool = True) -> dict[str, Any]:
    """``dmpf sweep``: with ``show``, the study as it stands (:func:`~.result.show`; nothing trained, ``how``
    unused); else one worker in this process (:func:`~.worker.run_worker`) where ``how`` (a
    :class:`~dmpf_cli.experiments.launch.Launch`) is in-process, or several (:func:`run_workers`): one per local
    slot, or ``jobs`` submitted ones (default 1). Returns the study's summary."""
    from .result import show as show_study
    from .worker import run_worker

    if show:
        return show_study(spec, storage_url, study_name, output)
    if how.launcher == "in-process":
        return run_worker(spec, storage_url, study_name, trials, output, console, on_event=on_event)
    workers = len(how.slots) if how.launcher == "local" else (jobs or 1)
    return run_workers(spec, storage_url, study_name, trials, output, how, workers, console, on_event=on_event,
                       live=live)


def run_workers(spec: SweepSpec, storage_url: str | None, study_name: str | None, trials: int | None,
                output: Path | str | None, how, workers: int, console,
                on_event: Callable[[dict], None] = lambda event: None, live: bool = True) -> dict[str, Any]:
    """The sweep as ``workers`` workers started where ``how`` (a :class:`~dmpf_cli.experiments.launch.Launch`) says: one
    ``dmpf sweep`` per local slot (``--gpus``: each sees its GPU; ``--jobs``: on the CPUs), or one submitit job
    each (``--launcher slurm``). They are ordinary workers of the study (:func:`run_worker`); this process makes
    the study and what the trials need first (the data, the backbone: made once, not raced for), then watches
    the study: one progress line per running trial, the overall count, an event per trial start and end
    (``live``: False shows no live bars on a terminal, as under ``--format json``; see :class:`~dmpf_cli.experiments.monitor.Monitor`).

    Returns the study's summary; one worker failing is reported, the others go on. Ctrl-C interrupts every
    worker as it would one: their trials are failed and queued again, so the same command continues."""
    from ..job import Job, JobOutcome
    from ..launch import launch
    from ..monitor import Monitor

    launcher = launch(how)
    where, study, budget = open_sweep(spec, storage_url, study_name, trials, output)
    argv = ["sweep", str(spec.path.resolve()), "--storage", where.storage, "--study", where.study,
            "--trials", str(budget), "--output", str(where.output.resolve()), "--format", "json"]
    console.print(f"sweep [bold]{where.study}[/bold] in {where.shown}: {budget} trials, {workers} workers "
                  f"({launcher.describe()}), trial directories in {where.output}, worker logs in {where.output / 'logs'}")
    tally = Tally.of(study)
    if tally.started() >= budget and not tally.running():
        console.print(f"the study's {budget} trials are done: no worker started")
        return study_summary(study, spec, where, budget)
    # the data and the backbone, made here once rather than raced for by the workers
    epochs = check_base_config(spec, console).cfg.training.max_epochs
    seen = {t.number for t in tally.trials if t.state.is_finished()}
    started = launcher.start([(f"worker-{i + 1}", argv) for i in range(workers)], where.output / "logs",
                             where.output / ".submitit")
    watched: dict[int, Job] = {}
    monitor = Monitor(console, total=budget, title=f"sweep {where.study}", done=tally.done(), live=live,
                      unit="trials")

    def look() -> None:
        from optuna.trial import TrialState

        tally = Tally.of(study)
        for t in tally.trials:
            finished = t.state.is_finished()
            if t.number in seen or (t.number not in watched and RUN_DIR not in t.user_attrs):
                if finished:  # from before this command, or discarded before it ran
                    seen.add(t.number)
                continue
            if t.number not in watched:  # new since the last look (maybe already over: then both events)
                job = Job(trial_name(t.number), Path(t.user_attrs[RUN_DIR]), spec.path, spec.seed, epochs)
                watched[t.number] = job
                monitor.started(job)
                on_event({"event": "start", "trial": t.number, "dir": str(job.run_dir), "params": t.params,
                          "worker": t.user_attrs.get(WORKER)})
            if finished:
                seen.add(t.number)
                job = watched.pop(t.number)
                monitor.ended(JobOutcome(job, t.state == TrialState.COMPLETE), count=False)
                state = _state_name(t, tally)
                on_event({"event": "end", "trial": t.number, "state": state, "value": t.value,
                          **({"error": t.user_attrs[ERROR]} if ERROR in t.user_attrs else {})})
                value = f": valid MAE {t.value:.4f}" if t.value is not None else ""
                console.print(f"trial {t.number}: {state}{value}"
                              + (f" ({t.user_attrs[ERROR]})" if state == "failed" and ERROR in t.user_attrs else ""))
        monitor.done(tally.done())

    failures: list[str] = []
    try:
        with monitor:
            while True:
                look()
                for worker in [w for w in started if w.done()]:
                    started.remove(worker)
                    error = worker.error()
                    if error:
                        failures.append(f"{worker.name}: {error}")
                        console.print(f"[red]{worker.name} failed[/red]: {error}")
                if not started:
                    look()
                    break
                time.sleep(1.0)
    except KeyboardInterrupt:
        for worker in started:
            worker.stop()
        for worker in started:
            worker.wait(STOP_S)
        raise SweepError(f"interrupted: the workers' trials are queued again; the same command continues study "
                         f"{where.study}") from None
    summary = study_summary(study, spec, where, budget)
    if failures and summary["done"] < budget:
        raise SweepError(f"{len(failures)} of {workers} workers failed before the study's {budget} trials were "
                         f"done ({summary['done']} are); the first: {failures[0]}")
    if summary["best"]:
        console.print(f"best: trial {summary['best']['trial']}, valid MAE {summary['best']['value']:.4f}; its "
                      f"config: {summary['best']['config']}")
    return summary
