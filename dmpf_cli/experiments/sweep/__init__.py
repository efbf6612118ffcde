"""``dmpf sweep``: a hyperparameter search on Optuna, where every trial is an ordinary run directory.

A *space file* (YAML) names a base config, overrides for every trial and the keys to search; it is checked whole
before any trial starts (:func:`load_space`), with the config's own checks, so a typo is one line naming the file
and the key. Each trial trains ``base + overrides + sampled key=value`` into ``DIR/trial-NNNN`` (the Optuna trial
number) and reports every epoch's validation MAE to the pruner; its value is the run's best validation MAE.

Several workers (processes, GPUs, machines) share one study through its storage: an SQLite file (the default,
``DIR/study.db``), any database URL Optuna takes, or a journal file. :func:`run_worker` is one worker, safe to run
in as many processes as there are devices. Three things make several workers behave as one search:

* **the budget is the study's**: ``--trials N`` counts every trial of the study, whoever ran it. A worker starts a
  trial only while fewer than N are counted, and after creating one checks its place among them (trial numbers
  are dense and handed out by the storage), so workers racing for the last slot run exactly N between them: the
  loser marks its empty trial *discarded* (failed, no parameters, not counted) and stops.
* **a dead worker's trial is found and run again**: a worker beats (a ``heartbeat`` user attribute, every
  ``heartbeat`` seconds) while its trial runs; any worker fails a running trial whose beat is older than twice
  that, marks its run directory failed, and queues the same parameters once as a new trial. Optuna's own
  heartbeat is not used: Optuna's JournalStorage has none, and RDBStorage's beats only inside ``Study.optimize``,
  whose failure handling logs tracebacks. The beat is the workers' wall clock, so their clocks must agree to
  within the grace period (NTP does).
* **one study, one space**: the study records the space (its search-defining part, and the file's text); a worker
  whose space differs is refused, since its trials would mix two searches.

The seed of the sampler is ``sampler.seed + trial number`` (modulo 2**32, numpy's seed range), so a sweep is
reproducible on one worker and workers never draw the same random start-up parameters.

One idea per module: :mod:`.space` (the space file), :mod:`.study` (storage, study, budget), :mod:`.heartbeat`
(lost trials found and run again), :mod:`.worker` (one worker, trials as run directories), :mod:`.result`
(``--show``, the summary, ``best.yaml``), :mod:`.run` (the command: one worker here, or several started and
watched). The sweep directory's files are :mod:`dmpf_cli.store.roots`'. The names below are
the package's interface.
"""

from .heartbeat import Heartbeat, fail_lost_trials, last_beat, queue_again
from .result import show, study_summary
from .run import run_sweep, run_workers
from .space import Dimension, SweepError, SweepSpec, check_study_name, load_space, space_file
from .study import (
                    DISCARDED,
                    HEARTBEAT,
                    RETRY_OF,
                    RUN_DIR,
                    Tally,
                    Where,
                    check_output,
                    claim_trial,
                    join_study,
                    locate,
                    open_storage,
                    open_sweep,
                    study_budget,
)
from .worker import check_base_config, run_worker

__all__ = ["DISCARDED", "HEARTBEAT", "RETRY_OF", "RUN_DIR", "Dimension", "Heartbeat", "SweepError", "SweepSpec",
           "Tally", "Where", "check_output", "check_study_name", "claim_trial", "fail_lost_trials", "join_study",
           "last_beat", "load_space", "locate", "open_storage", "open_sweep", "check_base_config", "queue_again",
           "run_sweep", "run_worker", "run_workers", "show", "space_file", "study_budget", "study_summary"]
