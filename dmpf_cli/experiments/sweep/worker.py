"""One worker of a study: trials claimed one by one, each trained as an ordinary run directory.

Each trial trains ``base + overrides + sampled key=value`` into ``DIR/trial-NNNN`` (the Optuna trial number) and
reports every epoch's validation MAE to the pruner (an epoch hook of the trainer); its value is the run's best
validation MAE. :func:`run_worker` is safe to run in as many processes as there are devices: the storage hands
out the trials, the study's budget (:mod:`.study`) bounds them, heartbeats (:mod:`.heartbeat`) recover the trials
of a worker that died.
"""

from __future__ import annotations

import math
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ...errors import DmpfError
from ...recipes.preflight import resolve_config
from ...store.roots import claim_lock, trial_dir
from ...yamlio import flow
from .heartbeat import Heartbeat, fail_lost_trials, queue_again
from .result import study_summary
from .space import SweepSpec
from .study import (
    CONFIG,
    ERROR,
    OVERRIDES,
    PRUNED_AT,
    RETRY_OF,
    RUN_DIR,
    WORKER,
    Tally,
    Where,
    _sampler,
    _why,
    check_same_space,
    claim_trial,
    open_sweep,
)

POLL_S = 5.0  # how often a worker with nothing to start looks at the trials still running elsewhere


def check_base_config(spec: SweepSpec, console):
    """What every trial needs, checked (and made, on first use: the synthetic data, the demo LM) once before the
    first, by :func:`~dmpf_cli.recipes.preflight.check` as ``dmpf train`` checks it: a machine that cannot train is one
    error, not a budget of failed trials. Returns what the check opened (a
    :class:`~dmpf_cli.recipes.preflight.Ready`), which each trial of this worker takes rather than opening it
    again (:func:`~dmpf_cli.recipes.preflight.reuse`)."""
    from ...recipes import preflight

    return preflight.check(resolve_config(config=spec.base_path, overrides=list(spec.overrides)), console)


@contextmanager
def one_claim_at_a_time(where: Where) -> Iterator[None]:
    """Workers on one SQLite file claim trials one at a time (an ``flock`` on ``FILE.claim.lock``). Optuna pops a
    queued trial (a lost one run again) with SELECT … FOR UPDATE, which SQLite ignores, so two workers could pop
    the same one — seen here as two processes training one retried trial. A database server locks the row; the
    journal storage orders its writes itself."""
    database = where.storage.removeprefix("sqlite:///") if where.storage.startswith("sqlite:///") else None
    try:
        import fcntl
    except ImportError:
        database = None
    if database is None:
        yield
        return
    with open(claim_lock(Path(database)), "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_worker(spec: SweepSpec, storage_url: str | None, study_name: str | None, trials: int | None,
               output: Path | str | None, console, on_event: Callable[[dict], None] = lambda event: None
               ) -> dict[str, Any]:
    """One worker of the study: runs trials until the study has ``trials`` counted trials finished (default: the
    budget the study recorded, else the space's, else DEFAULT_TRIALS), then writes ``DIR/best.yaml``; returns
    the summary.

    Safe to run at once in many processes (one per GPU, or on several machines sharing the storage and, for
    best.yaml from any trial, nothing else): each claims its trials through the storage."""
    where, study, budget = open_sweep(spec, storage_url, study_name, trials, output)
    say = console.print
    say(f"sweep [bold]{where.study}[/bold] in {where.shown}: {budget} trials, trial directories in {where.output}")
    ran: list[int] = []
    waiting_said: set[int] = set()
    checked = None
    while True:
        fail_lost_trials(study, spec, say)
        tally = Tally.of(study)
        if tally.started() >= budget:
            others = [t.number for t in tally.running()]
            if not others:
                break
            if set(others) - waiting_said:  # a trial running elsewhere may yet be lost and queued again
                say(f"waiting for trial{'s' if len(others) > 1 else ''} {', '.join(map(str, others))}, "
                    "running in other workers")
                waiting_said.update(others)
            time.sleep(min(POLL_S, spec.heartbeat))
            continue
        check_same_space(study, spec, where)  # a worker with another space that raced ours in wins: we stop
        if checked is None:  # before this worker's first trial, never for a study whose budget is spent
            checked = check_base_config(spec, console)
        with one_claim_at_a_time(where):
            trial = claim_trial(study, budget)
        if trial is None:
            continue
        ran.append(trial.number)
        study.sampler = _sampler(spec, trial.number)
        with Heartbeat(trial, spec.heartbeat):
            outcome = _run_trial(study, trial, spec, where, console, on_event, checked)
        _tell(study, trial, outcome, console)
        on_event({"event": "end", "trial": trial.number, "state": outcome.state, "value": outcome.value,
                  **({"error": outcome.message} if outcome.state == "failed" else {})})
        tally = Tally.of(study)
        say(f"[{tally.done()}/{budget} trials] " + _best_line(study))
    summary = study_summary(study, spec, where, budget)
    summary["worker"] = {"id": worker_id(), "trials": ran}
    if summary["best"]:
        say(f"best: trial {summary['best']['trial']}, valid MAE {summary['best']['value']:.4f}; its config: "
            f"{summary['best']['config']}")
    return summary


@dataclass
class TrialResult:
    """How one trial of this worker ended, as the study is told (:func:`_tell`)."""

    state: str  # "complete", "pruned" or "failed"
    value: float | None = None
    message: str = ""


def _run_trial(study, trial, spec: SweepSpec, where: Where, console, on_event, checked) -> TrialResult:
    """Train one trial's run directory, reusing what the base config's check opened (``checked``) where the trial's
    config reads the same; never raises but for KeyboardInterrupt (after recording it)."""
    import optuna

    from ...recipes.runs import train
    from ...store.run import RunDir

    params = {d.key: d.suggest(trial) for d in spec.dims}
    overrides = spec.trial_overrides(params)
    run = RunDir(trial_dir(where.output, trial.number))
    trial.set_user_attr(RUN_DIR, str(run.root))
    trial.set_user_attr(OVERRIDES, overrides)
    trial.set_user_attr(WORKER, worker_id())
    retry = trial.user_attrs.get(RETRY_OF)
    console.print(f"trial {trial.number}: start{f' (trial {retry} again)' if retry is not None else ''}: "
                  f"{_params_line(params)} → {run.root}")
    on_event({"event": "start", "trial": trial.number, "dir": str(run.root), "params": params})
    tagged: list[bool] = []

    def report(state, valid: dict[str, float]) -> None:
        """After each epoch: the run says which trial it is (once), the pruner hears its validation MAE."""
        if not tagged:
            run.write_status(sweep={"study": where.study, "trial": trial.number, "worker": worker_id()})
            tagged.append(True)
        trial.report(valid["MAE"], state.epoch - 1)  # Optuna's steps count from 0: n_warmup_steps = epochs spared
        if trial.should_prune():
            trial.set_user_attr(PRUNED_AT, state.epoch)
            run.write_status(status="pruned", pruned_at_epoch=state.epoch)
            raise optuna.TrialPruned(f"pruned at epoch {state.epoch}")

    try:
        cfg = resolve_config(config=spec.base_path, overrides=overrides)
        summary = train(cfg, run.root, [spec.seed], console=console, epoch_hooks=(report,), ready=checked)
        value = float(next(iter(summary["runs"].values()))["valid"]["MAE"])
        outcome = (TrialResult("complete", value) if math.isfinite(value)
                   else TrialResult("failed", message=f"the validation MAE is {value} (training diverged)"))
    except optuna.TrialPruned as exc:
        outcome = TrialResult("pruned", message=str(exc))
    except DmpfError as exc:
        outcome = TrialResult("failed", message=" ".join(str(exc).split()))
    except KeyboardInterrupt:  # not the trial's fault: failed, and queued again for the next worker
        _record_failure(run, trial, "interrupted")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        queue_again(study, study.get_trials(deepcopy=False)[trial.number])
        raise
    except Exception as exc:  # a trial's crash (out of memory, NaN in a kernel, …) fails the trial, not the sweep
        outcome = TrialResult("failed", message=_why(exc) if str(exc) else type(exc).__name__)
        outcome.message = f"{type(exc).__name__}: {outcome.message}"
    if outcome.state == "failed":
        _record_failure(run, trial, outcome.message)
    if run.config.is_file():
        trial.set_user_attr(CONFIG, run.config.read_text(encoding="utf-8"))
    return outcome


def _record_failure(run, trial, message: str) -> None:
    try:
        trial.set_user_attr(ERROR, message)
    except RuntimeError:  # another worker declared the trial lost meanwhile: the study keeps its verdict
        pass
    if run.status_file.is_file():
        run.write_status(status="failed", error=message)


def _tell(study, trial, outcome: TrialResult, console) -> None:
    """Finish the trial in the study. If another worker declared it lost meanwhile (this worker's heartbeat
    stalled past the grace period), the study keeps that verdict and the run directory stays."""
    from optuna.trial import TrialState

    def finished_elsewhere() -> bool:
        return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number).state.is_finished()

    try:
        if outcome.state == "complete":
            study.tell(trial, outcome.value)
            console.print(f"trial {trial.number}: valid MAE {outcome.value:.4f}")
        elif outcome.state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
            last = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
            value = f" (valid MAE {last.value:.4f})" if last.value is not None else ""
            console.print(f"trial {trial.number}: {outcome.message}{value}")
        else:
            study.tell(trial, state=TrialState.FAIL)
            console.print(f"trial {trial.number}: [red]failed[/red]: {outcome.message}")
    except (ValueError, RuntimeError):
        if not finished_elsewhere():
            raise
        console.print(f"[yellow]trial {trial.number}[/yellow]: another worker declared it lost (its heartbeat was "
                      "late) and queued it again; its run directory stays")


def _param_as_yaml(value: Any) -> str:
    """A trial's parameter value in a log line: floats to 4 significant digits, the rest as YAML flow."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return flow(value)


def _params_line(params: dict[str, Any]) -> str:
    return " ".join(f"{key}={_param_as_yaml(value)}" for key, value in params.items())


def _best_line(study) -> str:
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        return "no trial complete yet"
    best = min(complete, key=lambda t: t.value)
    return f"best so far: trial {best.number}, valid MAE {best.value:.4f}"
