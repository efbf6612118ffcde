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

The seed of the sampler is ``sampler.seed + trial number`` (modulo 2**32, numpy's seed range), so a sweep is reproducible on one worker and workers
never draw the same random start-up parameters.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import CONFIG_DIR, MAX_SEED, SEED_RANGE, ConfigError, Slug, config_file, is_seed, load_config, read_yaml
from ..errors import DmpfError, did_you_mean
from ..fileio import atomic_write_text
from ..yamlio import flow

DEFAULT_TRIALS = 20
DEFAULT_HEARTBEAT = 60  # seconds between beats; a trial is lost after GRACE_BEATS beats' silence
GRACE_BEATS = 2
STOP_S = 30.0  # how long an interrupted local worker has to fail its trial and queue it again
POLL_S = 5.0  # how often a worker with nothing to start looks at the trials still running elsewhere

# the space file's top-level keys, and the keys inside its sections
SPACE_KEYS = ("name", "base", "overrides", "seed", "space", "pruner", "sampler", "trials", "heartbeat")
RANGE_KEYS = ("low", "high", "log", "step")
CHOICE_KEYS = ("choices",)
PRUNER_KEYS = ("kind", "n_startup_trials", "n_warmup_steps")
PRUNERS = ("median", "none")
SAMPLER_KEYS = ("seed", "n_startup_trials")

# what a worker records on the study and its trials (user attributes)
STUDY_SPACE, STUDY_SPACE_FILE, STUDY_TRIALS = "dmpf_space", "dmpf_space_file", "dmpf_trials"
RUN_DIR, OVERRIDES, WORKER, HEARTBEAT, CONFIG = "run_dir", "overrides", "worker", "heartbeat", "config"
ERROR, RETRY_OF, DISCARDED, PRUNED_AT = "error", "retry_of", "discarded", "pruned_at_epoch"


class SweepError(DmpfError):
    """A space file, storage or study that cannot be used; one line."""


# --------------------------------------------------------------------------------------------
# The space file


@dataclass(frozen=True)
class Dimension:
    """One searched config key: an int or float range, or a list of choices (lists and mappings among them
    travel through Optuna as their JSON text, since Optuna's categorical values are scalars)."""

    key: str
    kind: str  # "int", "float" or "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        encoded = {_encode(c): c for c in self.choices}
        return encoded[trial.suggest_categorical(self.key, list(encoded))]

    def decode(self, value: Any) -> Any:
        """A value as Optuna stores it, as the config takes it (a list choice is stored as its JSON text)."""
        if self.kind != "choice":
            return value
        return next((c for c in self.choices if _encode(c) == value), value)

    def canonical(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


def _encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


@dataclass(frozen=True)
class SweepSpec:
    """A checked space file. ``base_path``: the base config file, resolved; ``text``: the file as written."""

    path: Path
    text: str
    name: str
    base: str
    base_path: Path
    overrides: tuple[str, ...]
    seed: int
    dims: tuple[Dimension, ...]
    pruner: dict[str, Any] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    trials: int | None = None
    heartbeat: int = DEFAULT_HEARTBEAT

    def canonical(self) -> dict[str, Any]:
        """What defines the search (what two workers of one study must agree on): not the budget, the heartbeat
        or the file's comments."""
        return {"base": self.base, "overrides": list(self.overrides), "seed": self.seed,
                "space": {d.key: d.canonical() for d in self.dims}, "pruner": self.pruner, "sampler": self.sampler}

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        """The overrides a trial trains with: the space file's, then one per sampled key."""
        return [*self.overrides, *(f"{key}={flow(value)}" for key, value in params.items())]


def _close(word: str, known: tuple[str, ...] | list[str]) -> str:
    return f"{did_you_mean(word, known)}expected one of: {', '.join(known)}"


def _unknown_keys(where: str, mapping: dict, known: tuple[str, ...]) -> None:
    for key in mapping:
        if key not in known:
            raise SweepError(f"{where}{key}: unknown key; {_close(str(key), known)}")


def _number(value: Any) -> bool:
    """A finite int or float (YAML's .inf and .nan are floats, but no range or step)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(value: Any, least: int, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise SweepError(f"{where}: expected an integer >= {least}, got {json.dumps(value, default=str)}")
    return value


def load_space(path: Path | str) -> SweepSpec:
    """Read and check a space file: its keys, the base config with the overrides, every dimension's bounds or
    choices against the config's own checks. Every problem is a one-line :class:`SweepError` naming the file."""
    path = space_file(path)
    try:
        data = read_yaml(path)
        text = path.read_text(encoding="utf-8")
    except ConfigError as exc:
        raise SweepError(str(exc).replace("config file", "space file")) from None
    file = str(path)
    _unknown_keys(f"{file}: ", data, SPACE_KEYS)

    name = data.get("name", path.stem)
    check_study_name(name, f"{file}: name")
    base = data.get("base", "default")
    if not isinstance(base, str) or not base:
        raise SweepError(f"{file}: base: expected a preset name or a config file path, got {json.dumps(base)}")
    base_path = _resolve_base(path, base)
    overrides = data.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise SweepError(f"{file}: overrides: expected a list of key=value strings")
    try:
        cfg = load_config(config=base_path, overrides=overrides)
    except ConfigError as exc:
        where = "overrides" if exc.problems[0].startswith("override") else "base"
        raise SweepError(f"{file}: {where}: {'; '.join(exc.problems)}") from None

    seed = data.get("seed", cfg.training.seeds[0])
    if not is_seed(seed):
        raise SweepError(f"{file}: seed: expected an integer {SEED_RANGE}, got {json.dumps(seed, default=str)}")
    space = data.get("space")
    if not isinstance(space, dict) or not space:
        raise SweepError(f"{file}: space: expected a mapping of config keys to ranges or choices, e.g. "
                         "optimizer.lr_lm: {low: 1.0e-4, high: 1.0e-2, log: true}")
    dims = tuple(_dimension(file, str(key), spec) for key, spec in space.items())
    for dim in dims:
        _check_against_config(file, base_path, overrides, dim)

    pruner = _section(file, data, "pruner", PRUNER_KEYS)
    kind = pruner.setdefault("kind", "median")
    if kind not in PRUNERS:
        raise SweepError(f"{file}: pruner.kind: expected {' or '.join(PRUNERS)}, got {json.dumps(kind)}")
    for key in ("n_startup_trials", "n_warmup_steps"):
        if key in pruner:
            _int_at_least(pruner[key], 0, f"{file}: pruner.{key}")
    sampler = _section(file, data, "sampler", SAMPLER_KEYS)
    if "seed" in sampler and not is_seed(sampler["seed"]):
        raise SweepError(f"{file}: sampler.seed: expected an integer {SEED_RANGE}, got "
                         f"{json.dumps(sampler['seed'], default=str)}")
    if "n_startup_trials" in sampler:
        _int_at_least(sampler["n_startup_trials"], 0, f"{file}: sampler.n_startup_trials")
    trials = data.get("trials")
    if trials is not None:
        _int_at_least(trials, 1, f"{file}: trials")
    heartbeat = _int_at_least(data.get("heartbeat", DEFAULT_HEARTBEAT), 1, f"{file}: heartbeat")
    return SweepSpec(path=path, text=text, name=name, base=base, base_path=base_path, overrides=tuple(overrides),
                     seed=seed, dims=dims, pruner=pruner, sampler=sampler, trials=trials, heartbeat=heartbeat)


def space_file(given: Path | str) -> Path:
    """A space file's path, or the name of one in ``configs/sweeps/`` (``dmpf sweep demo``)."""
    path = Path(given).expanduser()
    if path.is_file():
        return path
    packaged = sorted(p.stem for p in (CONFIG_DIR / "sweeps").glob("*.yaml"))
    if str(given) in packaged:
        return CONFIG_DIR / "sweeps" / f"{given}.yaml"
    if path.is_dir():
        raise SweepError(f"{path}: is a directory, expected a space file")
    hint = f"; or a packaged one: {_close(str(given), packaged).replace('expected one of', 'there are')}" \
        if packaged and not path.suffix else ""
    raise SweepError(f"{path}: no such space file{hint}")


def check_study_name(name: Any, where: str) -> str:
    """A study name is also a directory name (``runs/sweeps/NAME``): the config's rule for names."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(Slug).validate_python(name)
    except ValidationError as exc:
        why = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise SweepError(f"{where}: {why}, got {json.dumps(name, default=str)}") from None


def _resolve_base(space: Path, base: str) -> Path:
    """``base``: a config file relative to the space file, or a preset's name."""
    beside = space.parent / Path(base).expanduser()
    if beside.is_file() or Path(base).suffix in (".yaml", ".yml") or "/" in base:
        return beside.resolve() if beside.exists() else beside
    try:
        return config_file(config=base)
    except ConfigError as exc:
        raise SweepError(f"{space}: base: {exc}") from None


def _section(file: str, data: dict, key: str, known: tuple[str, ...]) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise SweepError(f"{file}: {key}: expected a mapping with keys {', '.join(known)}")
    _unknown_keys(f"{file}: {key}.", value, known)
    return dict(value)


def _dimension(file: str, key: str, spec: Any) -> Dimension:
    where = f"{file}: space.{key}"
    if not isinstance(spec, dict):
        raise SweepError(f"{where}: expected a range {{low: A, high: B}} (log: true, step: S) or {{choices: [...]}}, "
                         f"got {json.dumps(spec, default=str)}")
    _unknown_keys(f"{where}.", spec, RANGE_KEYS + CHOICE_KEYS)
    if "choices" in spec:
        if set(spec) & set(RANGE_KEYS):
            raise SweepError(f"{where}: give choices or a range (low, high), not both")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SweepError(f"{where}.choices: expected a non-empty list")
        encoded = [json.dumps(c, sort_keys=True, default=str) for c in choices]
        if len(set(encoded)) != len(encoded):
            raise SweepError(f"{where}.choices: repeats a choice: {json.dumps(choices, default=str)}")
        return Dimension(key, "choice", choices=tuple(choices))
    missing = [k for k in ("low", "high") if k not in spec]
    if missing:
        raise SweepError(f"{where}: expected low and high (or choices); {' and '.join(missing)} missing")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for name, value in (("low", low), ("high", high)):
        if not _number(value):
            raise SweepError(f"{where}.{name}: expected a finite number, got {json.dumps(value, default=str)}")
    if not isinstance(log, bool):
        raise SweepError(f"{where}.log: expected true or false, got {json.dumps(log, default=str)}")
    if low >= high:
        raise SweepError(f"{where}: expected low < high, got low {low}, high {high}")
    if log and low <= 0:
        raise SweepError(f"{where}: a log range needs low > 0, got low {low}")
    kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
    if step is not None:
        if not _number(step) or step <= 0 or (kind == "int" and not isinstance(step, int)):
            raise SweepError(f"{where}.step: expected a positive {'integer' if kind == 'int' else 'finite number'}, "
                             f"got {json.dumps(step, default=str)}")
        if log:
            raise SweepError(f"{where}: step and log cannot be combined (Optuna samples a log range continuously)")
        span = (high - low) / step
        if abs(span - round(span)) > 1e-9 * max(1.0, abs(span)):
            raise SweepError(f"{where}: high - low ({high - low:g}) must be a multiple of step ({step:g})")
    return Dimension(key, kind, low=low, high=high, log=log, step=step)


def _check_against_config(file: str, base: Path, overrides: list[str], dim: Dimension) -> None:
    """Every value the dimension can take — both ends of a range, each choice — must make a valid config; the
    config's error (unknown key with close matches, bounds, types) is reported against the space file."""
    values = list(dim.choices) if dim.kind == "choice" else [dim.low, dim.high]
    for value in values:
        text = f"{dim.key}={flow(value)}"
        try:
            load_config(config=base, overrides=[*overrides, text])
        except ConfigError as exc:
            origin = f"override '{text}': "
            problems = [p.removeprefix(origin) for p in exc.problems]
            raise SweepError(f"{file}: space: {'; '.join(problems)}"
                             + ("" if exc.problems[0].startswith(origin) else f" (with {text})")) from None


# --------------------------------------------------------------------------------------------
# Storage and study


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
    return Where(storage=storage or f"sqlite:///{(out / 'study.db').resolve()}", study=study, output=out)


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
    marker = where.output / "sweep.json"
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8")).get("study")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded != where.study:
            raise SweepError(f"--output {where.output}: holds the trials of study {recorded!r}; choose another "
                             f"--output for study {where.study!r}")
    elif where.output.is_dir() and any(p.name.startswith("trial-") for p in where.output.iterdir()):
        raise SweepError(f"--output {where.output}: holds trial directories of another sweep; choose another --output")


def _mark_output(where: Where) -> None:
    if not (where.output / "sweep.json").is_file():
        where.output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(where.output / "sweep.json", json.dumps({"study": where.study, "storage": where.shown}))


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


# --------------------------------------------------------------------------------------------
# Heartbeats


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

    from ..store.run import RunDir

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


# --------------------------------------------------------------------------------------------
# The worker


def study_budget(study, spec: SweepSpec, trials: int | None) -> int:
    """The study's total: ``--trials`` when given (recorded for the workers that join later without it), else
    what the study recorded, else the space file's ``trials``, else DEFAULT_TRIALS."""
    recorded = study.user_attrs.get(STUDY_TRIALS)
    budget = trials or recorded or spec.trials or DEFAULT_TRIALS
    if budget != recorded:
        study.set_user_attr(STUDY_TRIALS, budget)
    return budget


def preflight(spec: SweepSpec, console):
    """What every trial needs, checked (and made, on first use: the synthetic data, the demo LM) once before the
    first, by :func:`~dmpf_cli.recipes.runs.ready` as ``dmpf train`` checks it: a machine that cannot train is one error,
    not a budget of failed trials. Returns the base config."""
    from ..recipes.runs import ready

    return ready(load_config(config=spec.base_path, overrides=list(spec.overrides)), console)


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
    with open(f"{database}.claim.lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
    _mark_output(where)
    return where, study, study_budget(study, spec, trials)


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
    checked = False
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
        if not checked:  # before this worker's first trial, never for a study whose budget is spent
            preflight(spec, console)
            checked = True
        with one_claim_at_a_time(where):
            trial = claim_trial(study, budget)
        if trial is None:
            continue
        ran.append(trial.number)
        study.sampler = _sampler(spec, trial.number)
        with Heartbeat(trial, spec.heartbeat):
            outcome = _run_trial(study, trial, spec, where, console, on_event)
        _tell(study, trial, outcome, console)
        on_event({"event": "end", "trial": trial.number, "state": outcome.state, "value": outcome.value,
                  **({"error": outcome.message} if outcome.state == "failed" else {})})
        tally = Tally.of(study)
        say(f"[{tally.done()}/{budget} trials] " + _best_line(study))
    summary = summarize(study, spec, where, budget)
    summary["worker"] = {"id": worker_id(), "trials": ran}
    if summary["best"]:
        say(f"best: trial {summary['best']['trial']}, valid MAE {summary['best']['value']:.4f}; its config: "
            f"{summary['best']['config']}")
    return summary


def run_workers(spec: SweepSpec, storage_url: str | None, study_name: str | None, trials: int | None,
                output: Path | str | None, how, workers: int, console,
                on_event: Callable[[dict], None] = lambda event: None, live: bool = True) -> dict[str, Any]:
    """The sweep as ``workers`` workers started where ``how`` (a :class:`~dmpf_cli.experiments.launch.Launch`) says: one
    ``dmpf sweep`` per local slot (``--gpus``: each sees its GPU; ``--jobs``: on the CPUs), or one submitit job
    each (``--launcher slurm``). They are ordinary workers of the study (:func:`run_worker`); this process makes
    the study and what the trials need first (the data, the backbone: made once, not raced for), then watches
    the study: one progress line per running trial, the overall count, an event per trial start and end
    (``live``: False shows no live bars on a terminal, as under ``--format json``; see :class:`~dmpf_cli.experiments.launch.Monitor`).

    Returns the study's summary; one worker failing is reported, the others go on. Ctrl-C interrupts every
    worker as it would one: their trials are failed and queued again, so the same command continues."""
    from .launch import Job, Monitor, Outcome, start_commands

    where, study, budget = open_sweep(spec, storage_url, study_name, trials, output)
    argv = ["sweep", str(spec.path.resolve()), "--storage", where.storage, "--study", where.study,
            "--trials", str(budget), "--output", str(where.output.resolve()), "--format", "json"]
    console.print(f"sweep [bold]{where.study}[/bold] in {where.shown}: {budget} trials, {workers} workers "
                  f"({how.describe()}), trial directories in {where.output}, worker logs in {where.output / 'logs'}")
    tally = Tally.of(study)
    if tally.started() >= budget and not tally.running():
        console.print(f"the study's {budget} trials are done: no worker started")
        return summarize(study, spec, where, budget)
    # the data and the backbone, made here once rather than raced for by the workers
    epochs = preflight(spec, console).training.max_epochs
    seen = {t.number for t in tally.trials if t.state.is_finished()}
    started = start_commands([(f"worker-{i + 1}", argv) for i in range(workers)], how, where.output / "logs",
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
                job = Job(f"trial-{t.number:04d}", Path(t.user_attrs[RUN_DIR]), spec.path, spec.seed, epochs)
                watched[t.number] = job
                monitor.started(job)
                on_event({"event": "start", "trial": t.number, "dir": str(job.run_dir), "params": t.params,
                          "worker": t.user_attrs.get(WORKER)})
            if finished:
                seen.add(t.number)
                job = watched.pop(t.number)
                monitor.ended(Outcome(job, t.state == TrialState.COMPLETE), count=False)
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
    summary = summarize(study, spec, where, budget)
    if failures and summary["done"] < budget:
        raise SweepError(f"{len(failures)} of {workers} workers failed before the study's {budget} trials were "
                         f"done ({summary['done']} are); the first: {failures[0]}")
    if summary["best"]:
        console.print(f"best: trial {summary['best']['trial']}, valid MAE {summary['best']['value']:.4f}; its "
                      f"config: {summary['best']['config']}")
    return summary


@dataclass
class _Outcome:
    state: str  # "complete", "pruned" or "failed"
    value: float | None = None
    message: str = ""


def _run_trial(study, trial, spec: SweepSpec, where: Where, console, on_event) -> _Outcome:
    """Train one trial's run directory; never raises but for KeyboardInterrupt (after recording it)."""
    import optuna

    from ..recipes.runs import train
    from ..store.run import RunDir

    params = {d.key: d.suggest(trial) for d in spec.dims}
    overrides = spec.trial_overrides(params)
    run = RunDir((where.output / f"trial-{trial.number:04d}").resolve())
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
        cfg = load_config(config=spec.base_path, overrides=overrides)
        summary = train(cfg, run.root, [spec.seed], console=console, epoch_hooks=(report,))
        value = float(next(iter(summary["runs"].values()))["valid"]["MAE"])
        outcome = (_Outcome("complete", value) if math.isfinite(value)
                   else _Outcome("failed", message=f"the validation MAE is {value} (training diverged)"))
    except optuna.TrialPruned as exc:
        outcome = _Outcome("pruned", message=str(exc))
    except DmpfError as exc:
        outcome = _Outcome("failed", message=" ".join(str(exc).split()))
    except KeyboardInterrupt:  # not the trial's fault: failed, and queued again for the next worker
        _record_failure(run, trial, "interrupted")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        queue_again(study, study.get_trials(deepcopy=False)[trial.number])
        raise
    except Exception as exc:  # a trial's crash (out of memory, NaN in a kernel, …) fails the trial, not the sweep
        outcome = _Outcome("failed", message=_why(exc) if str(exc) else type(exc).__name__)
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


def _tell(study, trial, outcome: _Outcome, console) -> None:
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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return flow(value)


def _params_line(params: dict[str, Any]) -> str:
    return " ".join(f"{key}={_fmt(value)}" for key, value in params.items())


def _best_line(study) -> str:
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        return "no trial complete yet"
    best = min(complete, key=lambda t: t.value)
    return f"best so far: trial {best.number}, valid MAE {best.value:.4f}"


# --------------------------------------------------------------------------------------------
# The result: --show, best.yaml, the summary


def show(spec: SweepSpec, storage_url: str | None, study_name: str | None, output: Path | str | None) -> dict:
    """``--show``: the study as it stands (nothing is trained); writes ``DIR/best.yaml`` when there is a best."""
    optuna = _optuna()
    where = locate(spec, storage_url, study_name, output)
    if storage_url is None and not where.output.is_dir():
        raise SweepError(f"--output {where.output}: no sweep there yet; run `dmpf sweep {spec.path}` first")
    storage = open_storage(where.storage, must_exist=True)
    try:
        study = optuna.load_study(study_name=where.study, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise SweepError(f"--study {where.study}: no such study in {where.shown}"
                         + (f"; {_close(where.study, names)}" if names else " (it holds none)")) from None
    except Exception as exc:
        raise SweepError(f"--storage {where.shown}: cannot open: {_why(exc)}") from None
    return summarize(study, spec, where, study.user_attrs.get(STUDY_TRIALS))


def summarize(study, spec: SweepSpec, where: Where, budget: int | None) -> dict[str, Any]:
    """Every trial (the complete ones ranked by value), counts per state, the best — written to DIR/best.yaml."""
    from optuna.trial import TrialState

    tally = Tally.of(study)
    complete = sorted((t for t in tally.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    rank = {t.number: i + 1 for i, t in enumerate(complete)}
    dims = {d.key: d for d in spec.dims}

    def params(trial) -> dict[str, Any]:
        return {k: dims[k].decode(v) if k in dims else v for k, v in trial.params.items()}

    rows = []
    for t in sorted(tally.trials, key=lambda t: (rank.get(t.number, len(rank) + 1), t.number)):
        row = {"rank": rank.get(t.number), "trial": t.number, "state": _state_name(t, tally),
               "value": t.value, "params": params(t), "run_dir": t.user_attrs.get(RUN_DIR)}
        for key in (PRUNED_AT, ERROR, RETRY_OF, WORKER):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        if t.state == TrialState.RUNNING:
            row["heartbeat_age_s"] = round(time.time() - last_beat(t), 1)
        rows.append(row)
    best = _write_best(complete, where.output)
    if best:
        best["params"] = params(next(t for t in complete if t.number == best["trial"]))
    return {"study": where.study, "storage": where.shown, "output": str(where.output),
            "trials": budget, "done": tally.done(), "counts": tally.counts(), "best": best, "rows": rows}


def _state_name(trial, tally: Tally) -> str:
    name = trial.state.name.lower().replace("fail", "failed")
    if trial.number in tally.retried:
        return "failed (lost, retried)"
    if trial.number in tally.discarded:
        return "discarded"
    return name


def _write_best(complete: list, output: Path) -> dict[str, Any] | None:
    """The best complete trial; its run's config.yaml (as recorded in the study, so any machine can write it)
    becomes DIR/best.yaml, atomically. None when no trial has completed."""
    for trial in complete:
        text = trial.user_attrs.get(CONFIG)
        if text is None:
            run_dir = trial.user_attrs.get(RUN_DIR)
            config = Path(run_dir) / "config.yaml" if run_dir else None
            text = config.read_text(encoding="utf-8") if config and config.is_file() else None
        if text is None:
            continue
        output.mkdir(parents=True, exist_ok=True)
        best = output / "best.yaml"
        atomic_write_text(best, text)
        return {"trial": trial.number, "value": trial.value, "params": trial.params,
                "run_dir": trial.user_attrs.get(RUN_DIR), "config": str(best)}
    return None
