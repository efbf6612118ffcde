"""Heartbeats: a dead worker's trial is found and run again.

A worker beats (a ``heartbeat`` user attribute, every ``heartbeat`` seconds) while its trial runs; any worker fails
a running trial whose beat is older than twice that, marks its run directory failed, and queues the same parameters
once as a new trial. Optuna's own heartbeat is not used: Optuna's JournalStorage has none, and RDBStorage's beats
only inside ``Study.optimize``, whose failure handling logs tracebacks. The beat is the workers' wall clock, so their
clocks must agree to within the grace period (NTP does).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ...errors import DmpfError
from .space import SweepSpec
from .study import HEARTBEAT, RETRY_OF, RUN_DIR, WORKER, Tally

GRACE_BEATS = 2


class Heartbeat:
    """Beats for one running trial from a thread: its ``heartbeat`` user attribute, the wall-clock time, every
    ``interval`` seconds, the first at once. A failed write (a busy database) is retried at the next beat."""

    def __init__(self, trial, interval: float):
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial.number}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self) -> None:
        try:
            self.trial.set_user_attr(HEARTBEAT, time.time())
        except Exception:  # noqa: BLE001 - a beat missed is a beat late; the next one is in `interval` seconds
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()


def last_beat(trial) -> float:
    beat = trial.user_attrs.get(HEARTBEAT)
    if isinstance(beat, (int, float)):
        return float(beat)
    return trial.datetime_start.timestamp() if trial.datetime_start else time.time()


def queue_again(study, trial) -> bool:
    """Queue a lost trial's parameters once more, as a new trial; a retry that is lost as well is not queued
    a third time (it might be what kills its workers). Returns whether it was queued."""
    import optuna
    from optuna.trial import TrialState

    if RETRY_OF in trial.user_attrs:
        return False
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=trial.params,
                                              distributions=trial.distributions, user_attrs={RETRY_OF: trial.number}))
    return True


def fail_lost_trials(study, spec: SweepSpec, say=None) -> list[int]:
    """Fail every running trial whose heartbeat is older than the grace period, mark its run directory failed
    (when this machine sees it) and queue its parameters once more as a new trial. Exactly one worker wins each
    (the storage refuses to finish a trial twice). Returns the trials this call failed."""
    from optuna.trial import TrialState

    from ...store.run import RunDir

    grace = GRACE_BEATS * spec.heartbeat
    failed: list[int] = []
    for trial in Tally.of(study).running():
        silent = time.time() - last_beat(trial)
        if silent <= grace:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # finished meanwhile, or another worker failed it first
            continue
        failed.append(trial.number)
        retry = queue_again(study, trial)
        why = f"its worker ({trial.user_attrs.get(WORKER, '?')}) sent no heartbeat for {silent:.0f} s"
        run_dir = trial.user_attrs.get(RUN_DIR)
        if run_dir and RunDir(Path(run_dir)).status_file.is_file():
            try:
                RunDir(Path(run_dir)).write_status(status="failed", error=why)
            except (OSError, DmpfError):
                pass
        if say:
            say(f"trial {trial.number}: lost: {why}" + ("; queued again" if retry else "; lost twice, not retried"))
    return failed
