"""Where a sweep lives and what its workers share: the storage, the study (one space), the budget.

Several workers (processes, GPUs, machines) share one study through its storage: an SQLite file (the default,
``DIR/study.db``), any database URL Optuna takes, or a journal file. The study records the space (its
search-defining part, and the file's text); a worker whose space differs is refused, since its trials would mix two
searches. **The budget is the study's**: ``--trials N`` counts every trial of the study, whoever ran it
(:class:`Tally`). A worker starts a trial only while fewer than N are counted, and after creating one checks its
place among them (trial numbers are dense and handed out by the storage), so workers racing for the last slot run
exactly N between them: the loser marks its empty trial *discarded* (failed, no parameters, not counted) and stops
(:func:`claim_trial`).

The seed of the sampler is ``sampler.seed + trial number`` (modulo 2**32, numpy's seed range), so a sweep is
reproducible on one worker and workers never draw the same random start-up parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config import MAX_SEED
from ...store.roots import has_trial_dirs, is_sweep_dir, read_sweep_study, sweep_database, write_sweep_record
from .space import SweepError, SweepSpec, check_study_name

DEFAULT_TRIALS = 20

# what a worker records on the study and its trials (user attributes)
STUDY_SPACE, STUDY_SPACE_FILE, STUDY_TRIALS = "dmpf_space", "dmpf_space_file", "dmpf_trials"
RUN_DIR, OVERRIDES, WORKER, HEARTBEAT, CONFIG = "run_dir", "overrides", "worker", "heartbeat", "config"
ERROR, RETRY_OF, DISCARDED, PRUNED_AT = "error", "retry_of", "discarded", "pruned_at_epoch"


@dataclass(frozen=True)
class Where:
    """Where a sweep lives: its storage (a URL, or ``journal:PATH``), its study and its output directory."""

    storage: str
    study: str
    output: Path

    @property
    def shown(self) -> str:
        return redact(self.storage)


def locate(spec: SweepSpec, storage: str | None = None, study: str | None = None,
           output: Path | str | None = None) -> Where:
    """The defaults: the study is the space's name, DIR is ``runs/sweeps/STUDY``, the storage ``DIR/study.db``."""
    study = check_study_name(study, "--study") if study is not None else spec.name
    out = Path(output).expanduser() if output is not None else Path("runs") / "sweeps" / study
    return Where(storage=storage or f"sqlite:///{sweep_database(out)}", study=study, output=out)


def redact(url: str) -> str:
    """A storage URL fit to print: without its password."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy parses: shown as given, minus anything between ':' and '@'
        head, sep, tail = url.partition("://")
        user, at, rest = tail.rpartition("@")
        return f"{head}{sep}{user.split(':')[0]}:***@{rest}" if at else url


def journal_path(storage: str) -> Path | None:
    """The journal file ``storage`` names (``journal:PATH``, or a path ending in .log or .journal), else None."""
    if storage.startswith("journal:"):
        return Path(storage.removeprefix("journal:")).expanduser()
    if "://" not in storage and storage.endswith((".log", ".journal")):
        return Path(storage).expanduser()
    return None


def _optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError("dmpf sweep needs Optuna: pip install 'dmpf[sweep]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial INFO lines would drown dmpf's
    return optuna


def open_storage(storage: str, *, must_exist: bool = False):
    """An Optuna storage for ``storage``; one that cannot be opened is one line saying why.

    ``must_exist`` (``--show``): a file-backed storage that is not there is an error, not a new empty file."""
    optuna = _optuna()
    shown = redact(storage)
    journal = journal_path(storage)
    try:
        if journal is not None:
            if must_exist and not journal.is_file():
                raise SweepError(f"--storage {shown}: no such journal file")
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            try:
                return JournalStorage(JournalFileBackend(str(journal)))
            except (ValueError, KeyError, TypeError) as exc:  # its lines are not Optuna's (read only: untouched)
                raise SweepError(f"--storage {shown}: cannot open: {journal} is not an Optuna journal file "
                                 f"({_why(exc)}); choose another file") from None
        if "://" not in storage:
            raise SweepError(f"--storage {shown}: expected a database URL (sqlite:///PATH, postgresql://…) or a "
                             "journal file (journal:PATH, PATH.log)")
        kwargs: dict[str, Any] = {}
        if storage.startswith("sqlite:///"):
            _check_sqlite_file(Path(storage.removeprefix("sqlite:///")), shown, must_exist)
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # several workers write to one file
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(storage, **kwargs)
            except Exception as exc:  # workers starting together on a new SQLite file race to make its tables
                racing = any(m in str(exc) for m in ("already exists", "UNIQUE constraint", "database is locked"))
                if not (storage.startswith("sqlite") and racing) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
    except SweepError:
        raise
    except Exception as exc:  # sqlalchemy's, a missing database driver, an unreadable journal, …
        raise SweepError(f"--storage {shown}: cannot open: {_why(exc)}") from None


OPTUNA_TABLE = "studies"  # the first table Optuna's RDBStorage makes (workers starting together may see only it)


def _check_sqlite_file(database: Path, shown: str, must_exist: bool) -> None:
    """An existing SQLite file must be an Optuna storage, or hold no table yet: Optuna would add its tables to
    any database, another program's included. Read only: a file refused here is not touched. ``must_exist``
    (``--show``): the file must hold a storage already, since opening creates Optuna's tables."""
    import sqlite3
    from contextlib import closing

    if not database.exists():
        if must_exist:
            raise SweepError(f"--storage {shown}: no such database file")
        return
    if not database.is_file():
        raise SweepError(f"--storage {shown}: {database} is not a file; expected an SQLite database file")
    try:
        with closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    except sqlite3.Error as exc:
        raise SweepError(f"--storage {shown}: {database} is not an SQLite database ({exc}); choose another "
                         "file") from None
    if tables and OPTUNA_TABLE not in tables:
        listed = ", ".join(tables[:5]) + (", …" if len(tables) > 5 else "")
        raise SweepError(f"--storage {shown}: {database} is another program's SQLite database (tables {listed}), "
                         "not an Optuna storage: left as it is; choose another file")
    if must_exist and not tables:
        raise SweepError(f"--storage {shown}: {database} holds no study yet")


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.split(" (Background on this error")[0]
    return text if len(text) <= 300 else text[:297] + "..."


def _sampler(spec: SweepSpec, number: int):
    """The trial's sampler: seeded with ``sampler.seed + trial number``, so a sweep is reproducible on one
    worker, and workers never draw the same start-up parameters."""
    import optuna

    seed = spec.sampler.get("seed")
    kwargs = {"n_startup_trials": spec.sampler["n_startup_trials"]} if "n_startup_trials" in spec.sampler else {}
    return optuna.samplers.TPESampler(seed=None if seed is None else (seed + number) % (MAX_SEED + 1), **kwargs)


def _pruner(spec: SweepSpec):
    import optuna

    if spec.pruner.get("kind") == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner.get("n_startup_trials", 5),
                                       n_warmup_steps=spec.pruner.get("n_warmup_steps", 0))


def join_study(spec: SweepSpec, where: Where):
    """Create the study or join it; a study that searches another space is refused."""
    optuna = _optuna()
    storage = open_storage(where.storage)
    try:
        study = optuna.create_study(storage=storage, study_name=where.study, direction="minimize",
                                    sampler=_sampler(spec, 0), pruner=_pruner(spec), load_if_exists=True)
    except Exception as exc:
        raise SweepError(f"--storage {where.shown}: cannot open: {_why(exc)}") from None
    if study.direction != optuna.study.StudyDirection.MINIMIZE:
        raise SweepError(f"--study {where.study}: maximises; a dmpf sweep minimises validation MAE")
    mine = spec.canonical()
    if STUDY_SPACE not in study.user_attrs:  # the first worker records the space; a racing one is caught below
        study.set_user_attr(STUDY_SPACE, mine)
        study.set_user_attr(STUDY_SPACE_FILE, spec.text)
    check_same_space(study, spec, where)
    return study


def check_same_space(study, spec: SweepSpec, where: Where) -> None:
    recorded = study.user_attrs.get(STUDY_SPACE)
    mine = spec.canonical()
    if recorded is None or recorded == mine:
        return
    differ = sorted({*_diff(recorded, mine)})
    raise SweepError(f"--study {where.study}: its trials search another space ({', '.join(differ[:4])} differ "
                     f"from {spec.path}); joining would mix two searches: use that space file, or another --study")


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in {*a, *b}:
            found += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return found
    return [] if a == b else [prefix.rstrip(".")]


def check_output(where: Where) -> None:
    """DIR holds one study's trial directories (``sweep.json`` names it): a DIR that another study wrote to is
    refused, since its trial-NNNN would collide."""
    if where.output.exists() and not where.output.is_dir():
        raise SweepError(f"--output {where.output}: is a file, not a directory")
    if is_sweep_dir(where.output):
        recorded = read_sweep_study(where.output)
        if recorded != where.study:
            raise SweepError(f"--output {where.output}: holds the trials of study {recorded!r}; choose another "
                             f"--output for study {where.study!r}")
    elif has_trial_dirs(where.output):
        raise SweepError(f"--output {where.output}: holds trial directories of another sweep; choose another --output")


# --------------------------------------------------------------------------------------------
# The budget


@dataclass
class Tally:
    """The study's trials as the budget sees them. A trial lost with its worker and queued again, and a trial
    discarded by a worker that lost the race for the last slot, are not counted: the rest are."""

    trials: list
    counted: list
    retried: set[int]
    discarded: set[int]

    @classmethod
    def of(cls, study) -> "Tally":
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
        discarded = {t.number for t in trials if t.user_attrs.get(DISCARDED)}
        counted = [t for t in trials
                   if not (t.state == TrialState.FAIL and (t.number in retried or t.number in discarded))]
        return cls(trials, counted, retried, discarded)

    def started(self) -> int:
        """Counted trials that run or ran (queued ones excluded)."""
        from optuna.trial import TrialState

        return sum(t.state != TrialState.WAITING for t in self.counted)

    def done(self) -> int:
        return sum(t.state.is_finished() for t in self.counted)

    def running(self) -> list:
        from optuna.trial import TrialState

        return [t for t in self.trials if t.state == TrialState.RUNNING]

    def place(self, number: int) -> int:
        """How many counted trials come before trial ``number``."""
        return sum(t.number < number for t in self.counted)

    def counts(self) -> dict[str, int]:
        """Trials per state (Optuna's), and how many of the failed were retried or discarded."""
        out = {s: 0 for s in ("complete", "pruned", "failed", "running", "waiting")}
        names = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
                 "WAITING": "waiting"}
        for t in self.trials:
            out[names[t.state.name]] += 1
        out["retried"], out["discarded"] = len(self.retried), len(self.discarded)
        return out


def study_budget(study, spec: SweepSpec, trials: int | None) -> int:
    """The study's total: ``--trials`` when given (recorded for the workers that join later without it), else
    what the study recorded, else the space file's ``trials``, else DEFAULT_TRIALS."""
    recorded = study.user_attrs.get(STUDY_TRIALS)
    budget = trials or recorded or spec.trials or DEFAULT_TRIALS
    if budget != recorded:
        study.set_user_attr(STUDY_TRIALS, budget)
    return budget


def claim_trial(study, budget: int):
    """The next trial (a queued one first), or None when another worker took the last slot of the budget
    between this worker's count and its ask: the trial it got is then marked discarded (failed, not counted)."""
    from optuna.trial import TrialState

    trial = study.ask()
    if Tally.of(study).place(trial.number) < budget:
        return trial
    trial.set_user_attr(DISCARDED, True)
    study.tell(trial, state=TrialState.FAIL)
    return None


def open_sweep(spec: SweepSpec, storage_url: str | None, study_name: str | None, trials: int | None,
               output: Path | str | None):
    """Where the sweep lives, its study (created or joined) and its budget — what every worker and the parent of
    several do first. Optuna missing, a bad ``--trials``, an ``--output`` of another study: one-line errors."""
    _optuna()
    if trials is not None and trials < 1:
        raise SweepError(f"--trials: expected an integer >= 1, got {trials}")
    where = locate(spec, storage_url, study_name, output)
    check_output(where)
    if storage_url is None:  # the default SQLite file lives in DIR
        where.output.mkdir(parents=True, exist_ok=True)
    study = join_study(spec, where)
    write_sweep_record(where.output, where.study, where.shown)
    return where, study, study_budget(study, spec, trials)
