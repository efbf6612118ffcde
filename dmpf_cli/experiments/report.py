"""``dmpf report``: finished runs → one table of configs, each with its mean ± std over seeds and its difference
to a baseline under two paired tests, as text, Markdown, LaTeX, CSV or JSON.

API (stable; ``dmpf grid`` writes ``DIR/report.md`` and ``DIR/report.json`` with it)::

    report = build_report([Path("runs/grid")], metrics=None, baseline=None)   # -> Report
    render(report, "md")        # also "latex", "csv", "json"; the CLI renders "text" itself (rich)
    report.to_json()            # the JSON-ready dict that render(report, "json") dumps
    layout(report, "text")      # the cells and footnotes the text, Markdown and LaTeX tables share

Errors are :class:`ReportError` (a ``DmpfError``: one line).

**Inputs.** Each path is a *run directory* (``config.yaml`` + ``run.json``), a *multi-seed root*
(``seeds.json`` and ``seed-N/`` run directories, made by ``dmpf train --seeds``) or a *grid directory*
(``grid.json``: ``{"name", "baseline": VARIANT, "variants": {VARIANT: {"overrides": [...], "runs": {"SEED":
"VARIANT/seed-SEED"}}}}``, run paths relative to it).

**Rows.** A grid's variants are rows, in the file's order. Every other run joins the row of the runs whose
``config.yaml`` is equal to its own apart from ``name`` and ``training.seeds``; a row is named after its first
run (in the order of the paths): the multi-seed root it belongs to, else its own directory. Two rows of one
name are told apart by their path (a grid's variants by ``GRID/VARIANT``). Rows come in the order they first
appear. Two runs of one row with the same seed are an error (the same run twice, or a repeat that would count
as a second seed). The baseline is ``baseline`` if given, else the (first) grid's, else the first row.

**Runs.** Only finished runs count (``run.json`` status ``finished`` and ``results.json`` present); the others
are counted and named in the notes, never dropped silently; a row without a finished run stays, empty. Values
are the test split's, from ``results.json``; the bootstrap reads ``predictions.npz``.

**Tests** (each row against the baseline, per metric; :mod:`dmpf_cli.experiments.stats`). Δ and both tests use the seeds
the two rows share (paired: Δ is the mean per-seed difference, the centre of the t interval), or every seed of
each when they share none (Δ: the difference of the means):

* *paired t over seeds*: the per-seed differences of the runs the two rows have in common by seed number,
  Student's t interval (95%) and two-sided p; n/a with fewer than two shared seeds, and the reason says so.
* *paired bootstrap over test samples*: the test samples both rows' runs scored, paired by sample id;
  ``RESAMPLES`` resamples of them with replacement from a fixed RNG seed (``BOOTSTRAP_SEED``), so a report
  is the same every time; on each, every run of both rows is scored on that same resample and the statistic
  is the difference of the two rows' seed means; the interval is those values' 2.5th and 97.5th percentiles.

**Units.** Accuracies and F1 scores are percentages in text, Markdown and LaTeX (the papers' convention;
their differences in percentage points) and fractions in CSV and JSON, as ``results.json`` holds them.

**Marks.** A row with runs on generated data (``synthetic``) is marked †, one with a random-init frozen
backbone ‡, with a footnote (and how many of its runs, when not all); CSV has ``synthetic`` and
``random_backbone`` columns (``yes``, ``no`` or ``mixed``), JSON both flags and counts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DmpfError, did_you_mean
from ..metrics import FRACTIONS, LOWER_IS_BETTER, METRIC_KEYS, batch_metrics, compute_metrics
from ..recipes.runs import SEEDS_FILE, read_seeds
from ..store.checkpoints import RunDir, RunError, load_predictions
from ..streams import DATASETS
from .grid import GRID_RECORD, GridError, read_record
from .stats import paired_bootstrap, paired_t

SPLIT = "test"
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
FORMATS = ("md", "latex", "csv", "json")  # render's; the CLI adds "text"

# The paper's table, per metric family (streams.Dataset.metrics): the default --metrics
PAPER_METRICS = {
    "mosei": ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"),
    "sims": ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"),
}
# what a config may differ in and still be the same row: its name and the seeds it was asked to run
IGNORED_KEYS = (("name",), ("training", "seeds"))

T_TEST = "paired t over seeds"
BOOTSTRAP_TEST = "paired bootstrap over test samples"


class ReportError(DmpfError):
    """Paths, metrics or a baseline a report cannot be made of; one line."""


# -- what a report is made of ----------------------------------------------------------------------

@dataclass
class Run:
    """One run directory: its seed, its config (for grouping) and, when finished, its results."""

    path: Path
    seed: int | None
    config: dict[str, Any] | None
    results: dict[str, Any] | None  # None: not finished (skipped)

    @property
    def dataset(self) -> str:
        data = (self.config or {}).get("data")
        return str((self.results or {}).get("dataset") or (data.get("dataset") if isinstance(data, dict) else None))

    @property
    def synthetic(self) -> bool:
        return DATASETS[self.dataset].generated if self.dataset in DATASETS else False

    @property
    def random_backbone(self) -> bool:
        return "random" in str((self.results or {}).get("backbone", ""))

    def test(self, metric: str) -> float:
        value = self.results[SPLIT].get(metric)
        return math.nan if value is None else float(value)


@dataclass
class Row:
    """One config: its finished runs (the seeds), the runs skipped, its summary and its comparison."""

    name: str
    runs: list[Run] = field(default_factory=list)
    unfinished: list[Path] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # the paths given that it came from
    overrides: list[str] | None = None  # a grid variant's
    grid: str | None = None
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> mean, std, values
    comparison: dict[str, dict[str, Any]] | None = None  # metric -> diff, paired_t, bootstrap; None: baseline
    compared: dict[str, Any] | None = None  # the seeds compared: paired (shared) or, sharing none, all of each

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    def count(self, mark: str) -> int:
        return sum(getattr(r, mark) for r in self.runs)


@dataclass
class Report:
    """A report: its rows (``rows[i].summary``, ``.comparison``), the metrics, the baseline's name, notes."""

    rows: list[Row]
    metrics: list[str]
    family: str
    baseline: str
    runs_total: int
    notes: list[str] = field(default_factory=list)

    @property
    def runs_unfinished(self) -> int:
        return sum(len(r.unfinished) for r in self.rows)

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (fractions, not percentages; ``null`` where a value does not exist)."""
        return {
            "format": "dmpf-report/1",
            "split": SPLIT,
            "metrics": self.metrics,
            "family": self.family,
            "baseline": self.baseline,
            "units": "accuracies and F1 scores are fractions in [0, 1]; MAE and Corr as they are",
            "lower_is_better": [m for m in self.metrics if m in LOWER_IS_BETTER],
            "tests": {
                "diff": "row − baseline over the seeds both share (the mean per-seed difference), else over all "
                        "seeds of each (the difference of the means); see each row's compared",
                "paired_t": f"{T_TEST}: Student t on the per-seed differences of the runs that share a seed number "
                            f"with the baseline, {LEVEL:.0%} interval, two-sided p",
                "bootstrap": f"{BOOTSTRAP_TEST}: samples paired by id, {RESAMPLES} resamples with replacement (RNG "
                             f"seed {BOOTSTRAP_SEED}), every run scored on the same resample, statistic = difference "
                             f"of the seed means, {LEVEL:.0%} percentile interval",
            },
            "runs": {"total": self.runs_total, "finished": self.runs_total - self.runs_unfinished,
                     "unfinished": self.runs_unfinished},
            "rows": [_row_json(r, r.name == self.baseline) for r in self.rows],
            "notes": self.notes,
        }


def _row_json(row: Row, baseline: bool) -> dict[str, Any]:
    n = len(row.runs)
    return {
        "name": row.name,
        "baseline": baseline,
        "sources": row.sources,
        "grid": row.grid,
        "overrides": row.overrides,
        "n_seeds": n,
        "seeds": row.seeds,
        "runs": [str(r.path) for r in row.runs],
        "unfinished": [str(p) for p in row.unfinished],
        "datasets": sorted({r.dataset for r in row.runs}),
        "backbones": sorted({str(r.results.get("backbone")) for r in row.runs}),
        "synthetic": n > 0 and row.count("synthetic") > 0,
        "synthetic_runs": row.count("synthetic"),
        "random_backbone": n > 0 and row.count("random_backbone") > 0,
        "random_backbone_runs": row.count("random_backbone"),
        "metrics": _clean(row.summary),
        "compared": row.compared,
        "vs_baseline": _clean(row.comparison),
    }


def _clean(value):
    """NaN (a metric with nothing to score) as JSON's null, inside lists and dicts too."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# -- collecting runs into rows ---------------------------------------------------------------------

EXPECTED = "a run directory (config.yaml, run.json), a multi-seed root (seeds.json) or a grid directory (grid.json)"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: unreadable ({type(exc).__name__}: {' '.join(str(exc).split())})") from None


def _read_config(path: Path) -> dict[str, Any]:
    from .. import yamlio

    try:
        config = yamlio.load(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: unreadable config ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    except yamlio.YamlError as exc:
        raise ReportError(str(exc)) from None
    if not isinstance(config, dict):
        raise ReportError(f"{path}: not a config (expected a mapping)")
    return config


def _read_run(path: Path, seed: int | None = None, config: dict[str, Any] | None = None) -> Run:
    """The run at ``path`` (missing or unfinished: a Run without results); ``seed`` and ``config``: what its
    root says, for a run that has not written its own yet."""
    run = RunDir(path)
    try:
        status = run.read_status()
    except RunError as exc:
        raise ReportError(str(exc)) from None
    if run.config.is_file():
        config = _read_config(run.config)
    results = None
    if status.get("status") == "finished" and run.results.is_file():
        results = _read_json(run.results)
        if not isinstance(results, dict) or not isinstance(results.get(SPLIT), dict):
            raise ReportError(f"{run.results}: no {SPLIT} metrics")
        for metric, value in results[SPLIT].items():  # null: a metric with nothing to score (NaN)
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
                raise ReportError(f"{run.results}: {SPLIT}.{metric}: expected a number or null, got "
                                  f"{json.dumps(value)[:60]}")
    found = _seed_key(status.get("seed", (results or {}).get("seed")))
    return Run(path, seed if found is None else found, config, results)


def _seed_key(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _grid_rows(root: Path, given: str) -> tuple[str | None, list[Row]]:
    """A grid directory's variants as rows: (its baseline variant, the rows)."""
    try:
        spec = read_record(root / GRID_RECORD)
    except GridError as exc:
        raise ReportError(str(exc)) from None
    rows = []
    for name, variant in spec["variants"].items():
        row = Row(str(name), sources=[given], overrides=list(variant.get("overrides") or []),
                  grid=str(spec.get("name") or root.name))
        for seed, rel in variant.get("runs", {}).items():
            row.runs.append(_read_run(root / str(rel), _seed_key(seed)))
        rows.append(row)
    baseline = spec.get("baseline")
    return (str(baseline) if baseline is not None else None), rows


def _source_runs(path: Path) -> list[Run]:
    """The runs of a multi-seed root or of a run directory."""
    if (path / SEEDS_FILE).is_file():
        try:
            seeds = read_seeds(path)
        except RunError as exc:
            raise ReportError(str(exc)) from None
        config = _read_config(path / "config.yaml") if (path / "config.yaml").is_file() else None
        return [_read_run(path / f"seed-{s}", s, config) for s in seeds]
    return [_read_run(path)]


def _group_key(config: dict[str, Any] | None) -> str:
    """A config as a string, less the keys a row's runs may differ in."""
    config = json.loads(json.dumps(config or {}, default=str))
    for keys in IGNORED_KEYS:
        node = config
        for key in keys[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(keys[-1], None)
    return json.dumps(config, sort_keys=True)


def _label(run: Run) -> str:
    """A run's row name: its multi-seed root's name, else its own directory's."""
    parent = run.path.parent
    return parent.name if (parent / SEEDS_FILE).is_file() else run.path.name


def _collect(paths: list[Path]) -> tuple[list[Row], str | None]:
    """Rows of every path, in order, each run once; and the first grid's baseline (its row's name)."""
    rows: list[Row] = []
    groups: dict[str, Row] = {}
    seen: set[Path] = set()
    grid_baseline = None
    for path in paths:
        path = Path(path).expanduser()
        given = str(path)
        if path.is_file():
            raise ReportError(f"{path}: a file; expected {EXPECTED}")
        if not path.is_dir():
            raise ReportError(f"{path}: no such directory; expected {EXPECTED}")
        if (path / GRID_RECORD).is_file():
            baseline, grid_rows = _grid_rows(path, given)
            for row in grid_rows:
                row.runs = [r for r in row.runs if _first_time(r.path, seen)]
            if grid_baseline is None and baseline is not None:
                if baseline not in [r.name for r in grid_rows]:
                    raise ReportError(f"{path / GRID_RECORD}: its baseline {baseline!r} is none of its variants")
                grid_baseline = next(r for r in grid_rows if r.name == baseline)
            rows += grid_rows
            continue
        if not ((path / SEEDS_FILE).is_file() or (RunDir(path).config.is_file() and RunDir(path).status.is_file())):
            raise ReportError(f"{path}: not {EXPECTED}")
        for run in _source_runs(path):
            if not _first_time(run.path, seen):
                continue
            key = _group_key(run.config)
            if key not in groups:
                groups[key] = Row(_label(run))
                rows.append(groups[key])
            row = groups[key]
            row.runs.append(run)
            if given not in row.sources:
                row.sources.append(given)
    for row in rows:  # the unfinished are kept apart, by path
        row.unfinished = [r.path for r in row.runs if r.results is None]
        row.runs = [r for r in row.runs if r.results is not None]
    _name_uniquely(rows)
    for row in rows:
        _no_repeated_seed(row)
    return rows, (grid_baseline.name if grid_baseline is not None else None)


def _first_time(path: Path, seen: set[Path]) -> bool:
    key = path.resolve()
    if key in seen:
        return False
    seen.add(key)
    return True


def _name_uniquely(rows: list[Row]) -> None:
    names = [r.name for r in rows]
    for row in rows:
        if names.count(row.name) > 1:
            row.name = f"{row.grid}/{row.name}" if row.grid else row.sources[0] if row.sources else row.name
    taken: dict[str, int] = {}
    for row in rows:  # the last resort: a number
        taken[row.name] = taken.get(row.name, 0) + 1
        if taken[row.name] > 1:
            row.name = f"{row.name} #{taken[row.name]}"


def _no_repeated_seed(row: Row) -> None:
    by_seed: dict[int, Path] = {}
    for run in row.runs:
        if run.seed is None:
            continue
        if run.seed in by_seed:
            raise ReportError(f"{by_seed[run.seed]} and {run.path}: two runs of seed {run.seed} in row {row.name!r} "
                              f"(configs equal apart from name and training.seeds); report one of them")
        by_seed[run.seed] = run.path


# -- metrics and baseline --------------------------------------------------------------------------

def _close(name: str, known: list[str]) -> str:
    hint = did_you_mean(name, known).strip()
    return f" ({hint})" if hint else ""


def _family(rows: list[Row]) -> str:
    families: dict[str, list[str]] = {}
    for row in rows:
        for run in row.runs:
            if run.dataset not in DATASETS:
                raise ReportError(f"{run.path / 'results.json'}: unknown dataset {run.dataset!r}")
            names = families.setdefault(DATASETS[run.dataset].metrics, [])
            if row.name not in names:
                names.append(row.name)
    if len(families) > 1:
        parts = "; ".join(f"{family} family: {', '.join(names)}" for family, names in families.items())
        raise ReportError(f"the rows are on datasets of different metric families ({parts}); report one at a time")
    return next(iter(families))


def _choose_metrics(rows: list[Row], family: str, wanted: list[str] | None, notes: list[str]) -> list[str]:
    order = next(keys for name, keys in METRIC_KEYS.items() if DATASETS[name].metrics == family)
    held = [m for m in order if all(m in run.results[SPLIT] for row in rows for run in row.runs)]
    if wanted is None:
        missing = [m for m in PAPER_METRICS[family] if m not in held]
        if missing:
            notes.append(f"{', '.join(missing)}: not in every run's results: left out")
        return [m for m in PAPER_METRICS[family] if m in held]
    wanted = list(dict.fromkeys(m.strip() for m in wanted if m.strip()))
    if not wanted:
        raise ReportError("--metrics: no metric named; e.g. --metrics MAE,Corr")
    for metric in wanted:
        if metric not in held:
            raise ReportError(f"--metrics: unknown metric {metric!r}{_close(metric, held)}; the runs hold: "
                              f"{', '.join(held)}")
    return wanted


def _choose_baseline(rows: list[Row], asked: str | None, grid_baseline: str | None) -> str:
    names = [r.name for r in rows]
    if asked is None:
        return grid_baseline or names[0]
    if asked not in names:
        raise ReportError(f"--baseline: no row named {asked!r}{_close(asked, names)}; the rows: {', '.join(names)}")
    return asked


# -- the numbers -----------------------------------------------------------------------------------

def _summary(row: Row, metrics: list[str]) -> dict[str, dict[str, Any]]:
    """mean ± sample std over the row's seeds (std 0 for one seed, as ``dmpf train``'s summary)."""
    out = {}
    for metric in metrics:
        values = np.array([run.test(metric) for run in row.runs], dtype=np.float64)
        if values.size == 0:
            continue
        out[metric] = {"mean": float(values.mean()),
                       "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                       "values": values.tolist()}
    return out


def _pairs(row: Row, base: Row) -> list[tuple[Run, Run]]:
    """The (row run, baseline run) pairs of one seed number, in the row's order."""
    base_by_seed = {run.seed: run for run in base.runs if run.seed is not None}
    return [(run, base_by_seed[run.seed]) for run in row.runs if run.seed in base_by_seed]


def _t_test(pairs: list[tuple[Run, Run]], metric: str) -> dict[str, Any]:
    seeds = [a.seed for a, _ in pairs]
    out: dict[str, Any] = {"test": T_TEST, "seeds": seeds, "n": len(seeds), "df": None, "mean_diff": None,
                           "low": None, "high": None, "p": None, "level": LEVEL, "reason": None}
    if len(pairs) < 2:
        out["reason"] = (f"{'no' if not pairs else len(pairs)} shared seed{'' if len(pairs) == 1 else 's'}"
                         f"{' (' + str(seeds[0]) + ')' if pairs else ''}; a paired t needs 2")
        return out
    diffs = np.array([a.test(metric) - b.test(metric) for a, b in pairs])
    if np.isnan(diffs).any():
        out["reason"] = f"{metric} is undefined for some seeds"
        return out
    t = paired_t(diffs, LEVEL)
    out.update(df=t.df, mean_diff=t.mean, low=t.low, high=t.high, p=t.p)
    return out


class _Predictions:
    """Each run's stored test predictions, read once, and each run's bootstrap scores, computed once per sample
    set: a baseline is resampled once for all the rows compared with it."""

    def __init__(self, metrics: list[str], notes: list[str]):
        self.metrics = metrics
        self.notes = notes
        self.read: dict[Path, dict[str, np.ndarray] | str] = {}
        self.scores: dict[tuple, dict[str, np.ndarray]] = {}

    def get(self, run: Run) -> dict[str, np.ndarray] | str:
        """{"ids", "pred", "label"} of the run's test split, or why there are none."""
        if run.path not in self.read:
            try:
                split = load_predictions(RunDir(run.path).predictions).get(SPLIT)
            except RunError as exc:
                self.read[run.path] = str(exc)
            else:
                self.read[run.path] = split if split is not None else f"{run.path}: no {SPLIT} predictions stored"
                if split is not None:
                    self._check(run, split)
        return self.read[run.path]

    def _check(self, run: Run, split: dict[str, np.ndarray]) -> None:
        """A note when the stored predictions do not give the results.json scores (the bootstrap uses them)."""
        try:
            again = compute_metrics(split["pred"], split["label"], run.dataset)
        except DmpfError as exc:
            self.read[run.path] = f"{run.path}: unusable predictions ({exc})"
            return
        off = [m for m in self.metrics
               if not (again[m] == run.test(m) or (math.isnan(again[m]) and math.isnan(run.test(m)))
                       or abs(again[m] - run.test(m)) <= 1e-9)]
        if off:
            self.notes.append(f"{run.path}: its stored predictions do not reproduce results.json's "
                              f"{', '.join(off)}; the bootstrap uses the stored predictions")

    def scored(self, run: Run, pred: np.ndarray, label: np.ndarray, index: np.ndarray,
               key: tuple[bytes, bytes]) -> dict[str, np.ndarray]:
        """The run's metrics on each resample of ``index``; ``key``: (the samples, the resamples) it stands for."""
        if (run.path, *key) not in self.scores:
            self.scores[(run.path, *key)] = batch_metrics(pred[index], label[index], run.dataset, self.metrics)
        return self.scores[(run.path, *key)]


def _bootstrap(ours: list[Run], theirs: list[Run], cache: _Predictions) -> dict[str, dict[str, Any]]:
    """The paired bootstrap of every metric's difference of seed means (``ours`` − ``theirs``), or why it
    cannot be made."""
    def unavailable(reason: str) -> dict[str, dict[str, Any]]:
        return {m: {"test": BOOTSTRAP_TEST, "samples": None, "resamples": RESAMPLES, "seed": BOOTSTRAP_SEED,
                    "level": LEVEL, "estimate": None, "low": None, "high": None, "reason": reason}
                for m in cache.metrics}

    runs = [*ours, *theirs]
    stored = [cache.get(run) for run in runs]
    for why in stored:
        if isinstance(why, str):
            return unavailable(why)
    for run, split in zip(runs, stored):
        if len(set(split["ids"].tolist())) != len(split["ids"]):
            return unavailable(f"{run.path}: repeated sample ids in its {SPLIT} predictions")
    common = set(stored[0]["ids"].tolist())
    for split in stored[1:]:
        common &= set(split["ids"].tolist())
    ids = [i for i in stored[len(ours)]["ids"].tolist() if i in common]  # the baseline's order
    if not ids:
        return unavailable(f"no {SPLIT} sample ids in common")
    aligned = []
    for split in stored:
        where = {sample: k for k, sample in enumerate(split["ids"].tolist())}
        index = np.array([where[i] for i in ids])
        aligned.append((split["pred"][index], split["label"][index]))
    label = aligned[len(ours)][1]
    if any(not np.array_equal(lab, label) for _, lab in aligned):
        return unavailable("the runs' labels differ for the same sample ids (tested on different data)")
    samples = hashlib.blake2b("\n".join(ids).encode(), digest_size=16).digest()
    sides = (list(zip(ours, aligned[:len(ours)])), list(zip(theirs, aligned[len(ours):])))

    def statistic(index: np.ndarray) -> dict[str, np.ndarray]:
        key = (samples, hashlib.blake2b(index.tobytes(), digest_size=16).digest())
        scores = [[cache.scored(run, pred, label, index, key) for run, (pred, _) in side] for side in sides]
        means = [{m: np.mean([s[m] for s in side], axis=0) for m in cache.metrics} for side in scores]
        return {m: means[0][m] - means[1][m] for m in cache.metrics}

    results = paired_bootstrap(statistic, len(ids), resamples=RESAMPLES, seed=BOOTSTRAP_SEED, level=LEVEL)
    out = {}
    for metric, b in results.items():
        reason = None if b.valid else f"{metric} is undefined on every resample"
        out[metric] = {"test": BOOTSTRAP_TEST, "samples": len(ids), "resamples": RESAMPLES, "seed": BOOTSTRAP_SEED,
                       "level": LEVEL, "estimate": b.estimate, "low": b.low if b.valid else None,
                       "high": b.high if b.valid else None, "reason": reason}
    return out


def _compare(row: Row, base: Row, cache: _Predictions) -> dict[str, dict[str, Any]]:
    """Each metric's difference to the baseline with both tests. Over the seeds the two rows share when they share
    one or more (paired: Δ is the mean per-seed difference, the centre of the t interval), else over every seed
    of each (Δ: the difference of the means; no t)."""
    pairs = _pairs(row, base)
    ours, theirs = ([a for a, _ in pairs], [b for _, b in pairs]) if pairs else (row.runs, base.runs)
    row.compared = {"paired": bool(pairs), "seeds": [r.seed for r in ours], "baseline_seeds": [r.seed for r in theirs]}
    boot = _bootstrap(ours, theirs, cache) if base.runs else None
    out = {}
    for metric in cache.metrics:
        t = _t_test(pairs, metric)
        if not base.runs:
            t["reason"] = "the baseline has no finished runs"
            out[metric] = {"diff": None, "better": None, "paired_t": t, "bootstrap": {
                "test": BOOTSTRAP_TEST, "low": None, "high": None, "reason": t["reason"]}}
            continue
        diff = (float(np.mean([a.test(metric) - b.test(metric) for a, b in pairs])) if pairs else
                row.summary[metric]["mean"] - base.summary[metric]["mean"])
        better = None if math.isnan(diff) or diff == 0 else (diff < 0) == (metric in LOWER_IS_BETTER)
        out[metric] = {"diff": diff, "better": better, "paired_t": t, "bootstrap": boot[metric]}
    return out


def build_report(paths: list[Path], metrics: list[str] | None = None, baseline: str | None = None) -> Report:
    """The report of ``paths`` (run directories, multi-seed roots, grid directories; see the module docstring).

    ``metrics``: the metric keys to show (default: the paper's table for the runs' metric family), each held by
    every finished run. ``baseline``: a row's name (default: the grid's, else the first row). Raises
    :class:`ReportError` for a path that is none of the three, no finished run, datasets of two metric
    families, an unknown metric or baseline, or one seed twice in a row.
    """
    if not paths:
        raise ReportError("no paths: give run directories, multi-seed roots or grid directories")
    rows, grid_baseline = _collect(list(paths))
    total = sum(len(r.runs) + len(r.unfinished) for r in rows)
    if not any(r.runs for r in rows):
        raise ReportError(f"no finished runs in {', '.join(map(str, paths))}: {total} of {total} runs unfinished")
    notes: list[str] = []
    family = _family(rows)
    chosen = _choose_metrics(rows, family, metrics, notes)
    base_name = _choose_baseline(rows, baseline, grid_baseline)
    for row in rows:
        row.summary = _summary(row, chosen)
    base = next(r for r in rows if r.name == base_name)
    cache = _Predictions(chosen, notes)
    for row in rows:
        if row is not base and row.runs:
            row.comparison = _compare(row, base, cache)
    report = Report(rows, chosen, family, base_name, total, notes)
    if report.runs_unfinished:
        skipped = [str(p) for r in rows for p in r.unfinished]
        listed = ", ".join(skipped[:4]) + (f", … ({len(skipped) - 4} more)" if len(skipped) > 4 else "")
        notes.insert(0, f"{report.runs_unfinished} of {total} runs unfinished: skipped ({listed})")
    for row in rows:
        if not row.runs:
            notes.append(f"{row.name}: no finished runs")
    return report


# -- tables ----------------------------------------------------------------------------------------

@dataclass
class Table:
    """A table's cells in the target's notation, the cells to set in bold, and the rows that start a group (a rule
    above them)."""

    header: list[str]
    rows: list[list[str]]
    align: str  # "l" or "r" per column
    bold: set[tuple[int, int]] = field(default_factory=set)
    breaks: set[int] = field(default_factory=set)


@dataclass
class Layout:
    """What text, Markdown and LaTeX show: the results table, the differences table (None without a row to
    compare), the footnotes."""

    results: Table
    differences: Table | None
    footnotes: list[str]


DASH = "–"  # a value that does not exist
# LaTeX for the characters the tables are written in, and its special characters; "†‡" first, as one superscript
_LATEX = [("†‡", "$^{\\dagger\\ddagger}$"), ("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"),
          ("#", "\\#"), ("$", "\\$"), ("{", "\\{"), ("}", "\\}"), ("~", "\\textasciitilde{}"),
          ("^", "\\textasciicircum{}"), ("−", "$-$"), ("±", "$\\pm$"), ("†", "$^\\dagger$"), ("‡", "$^\\ddagger$"),
          ("↑", "$\\uparrow$"), ("↓", "$\\downarrow$"), ("Δ", "$\\Delta$"), ("—", "---"), ("–", "--"),
          ("…", "\\ldots{}"), ("<", "$<$"), (">", "$>$")]


def _escape(text: str, style: str) -> str:
    """Unicode text as ``style`` needs it: LaTeX commands for LaTeX, ``\\|`` in a Markdown cell, text as it is."""
    if style == "md":
        return text.replace("|", "\\|")
    if style != "latex":
        return text
    out, i = [], 0
    while i < len(text):  # one pass, so no replacement is escaped again
        for char, latex in _LATEX:
            if text.startswith(char, i):
                out.append(latex)
                i += len(char)
                break
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _number(value: float | None, metric: str, sign: bool = False) -> str:
    """A value in the tables' units: accuracies and F1 in % with 2 decimals, MAE and Corr with 4; a true minus."""
    if value is None or math.isnan(value):
        return DASH
    scaled = value * 100.0 if metric in FRACTIONS else value
    text = f"{abs(scaled):.{2 if metric in FRACTIONS else 4}f}"
    if float(text) == 0:  # no sign on a zero as shown
        return text
    return ("−" if scaled < 0 else "+" if sign else "") + text


def _interval(test: dict[str, Any], metric: str) -> str:
    if test.get("low") is None:
        return f"n/a: {test.get('reason') or 'no interval'}"
    return f"[{_number(test['low'], metric)}, {_number(test['high'], metric)}]"


def _p(test: dict[str, Any]) -> str:
    p = test.get("p")
    return DASH if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def _marks(row: Row) -> str:
    return ("†" if row.count("synthetic") else "") + ("‡" if row.count("random_backbone") else "")


def _compared(row: Row) -> str:
    seen = row.compared or {}
    if seen.get("paired"):
        n = len(seen["seeds"])
        return f"{n} paired seed{'' if n == 1 else 's'}"
    return f"unpaired: {len(seen.get('seeds', []))} vs {len(seen.get('baseline_seeds', []))} seeds"


def layout(report: Report, style: str = "text") -> Layout:
    """The cells of the two tables and the footnotes, for ``style`` "text", "md" or "latex"."""
    arrows = {m: "↓" if m in LOWER_IS_BETTER else "↑" for m in report.metrics}
    results = Table(["config", "seeds", *(f"{m} {arrows[m]}" for m in report.metrics)], [],
                    "lr" + "r" * len(report.metrics))
    for row in report.rows:
        cells = [row.name + _marks(row) + (" (baseline)" if row.name == report.baseline else ""), str(len(row.runs))]
        for metric in report.metrics:
            summary = row.summary.get(metric)
            if summary is None:
                cells.append(DASH)
            elif len(row.runs) == 1:
                cells.append(_number(summary["mean"], metric))
            else:
                cells.append(f"{_number(summary['mean'], metric)} ± {_number(summary['std'], metric)}")
        results.rows.append(cells)
    for j, metric in enumerate(report.metrics):  # bold: the best mean as shown (ties too), with two rows or more
        shown = {i: _number(r.summary[metric]["mean"], metric) for i, r in enumerate(report.rows)
                 if metric in r.summary and not math.isnan(r.summary[metric]["mean"])}
        if len(shown) < 2:
            continue
        means = {i: report.rows[i].summary[metric]["mean"] for i in shown}
        best = (min if metric in LOWER_IS_BETTER else max)(means, key=means.__getitem__)
        results.bold |= {(i, 2 + j) for i, text in shown.items() if text == shown[best]}

    differences = None
    compared = [r for r in report.rows if r.comparison]
    if compared:
        level = f"{LEVEL:.0%}"
        differences = Table(["config", "metric", "Δ", f"{level} CI, t", "p, t", f"{level} CI, bootstrap"], [],
                            "llrrrr")
        for row in compared:
            differences.breaks.add(len(differences.rows))
            for k, metric in enumerate(report.metrics):
                c = row.comparison[metric]
                differences.rows.append([f"{row.name}{_marks(row)} ({_compared(row)})" if k == 0 else "",
                                         f"{metric} {arrows[metric]}", _number(c["diff"], metric, sign=True),
                                         _interval(c["paired_t"], metric), _p(c["paired_t"]),
                                         _interval(c["bootstrap"], metric)])
    for table in (results, differences):
        if table is not None:
            table.header = [_escape(c, style) for c in table.header]
            table.rows = [[_escape(c, style) for c in row] for row in table.rows]
    return Layout(results, differences, [_escape(line, style) for line in _footnotes(report)])


def _footnotes(report: Report) -> list[str]:
    base = report.row(report.baseline)
    level = f"{LEVEL:.0%}"
    lines = [
        "Test split; mean ± sample std over seeds (one seed: its value). Accuracies and F1 scores in %, their "
        "differences in percentage points; MAE and Corr as they are. ↑ higher is better, ↓ lower is better; bold: "
        "the best mean of each column.",
    ]
    if any(r.comparison for r in report.rows):
        lines.append(
            f"Δ: row − baseline ({base.name}), over the seeds both share (paired; the mean per-seed difference), "
            f"else over all seeds of each (unpaired). t: {T_TEST} — Student t on the per-seed differences (n − 1 "
            f"degrees of freedom), {level} interval and two-sided p; n/a below 2 shared seeds. bootstrap: "
            f"{BOOTSTRAP_TEST} — the test samples every compared run scored, paired by id; {RESAMPLES} resamples "
            f"with replacement (RNG seed {BOOTSTRAP_SEED}), every run scored on the same resample; {level} "
            f"percentile interval of the difference of seed means.")
    for mark, attr, what in (("†", "synthetic", "synthetic data generated by dmpf: a test bench, not a benchmark "
                              "result"), ("‡", "random_backbone", "a random-init frozen backbone, not a pretrained LM")):
        marked = [r for r in report.rows if r.count(attr)]
        if marked:
            partial = [f"{r.name}: {r.count(attr)} of {len(r.runs)} runs" for r in marked if r.count(attr) < len(r.runs)]
            lines.append(f"{mark} {what}" + (f" (in part — {'; '.join(partial)})" if partial else "") + ".")
    return lines + report.notes


# -- renderings ------------------------------------------------------------------------------------

def render(report: Report, fmt: str) -> str:
    """``report`` as Markdown ("md"), LaTeX ("latex"), CSV ("csv") or JSON ("json"); ends with a newline."""
    if fmt == "json":
        return json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return _csv(report)
    if fmt == "md":
        return _markdown(layout(report, "md"))
    if fmt == "latex":
        return _latex(report, layout(report, "latex"))
    raise ReportError(f"format {fmt!r}: expected one of {', '.join(FORMATS)} (text is the command line's)")


def _md_table(table: Table) -> list[str]:
    def cell(i: int, j: int, text: str) -> str:
        return f"**{text}**" if (i, j) in table.bold and text else text

    lines = ["| " + " | ".join(table.header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in table.align) + "|"]
    lines += ["| " + " | ".join(cell(i, j, c) for j, c in enumerate(r)) + " |" for i, r in enumerate(table.rows)]
    return lines


def _markdown(lay: Layout) -> str:
    lines = _md_table(lay.results)
    if lay.differences is not None:
        lines += ["", *_md_table(lay.differences)]
    lines += [""] + [f"{note}  " for note in lay.footnotes]  # two spaces: a line break
    return "\n".join(lines).rstrip() + "\n"


def _latex_table(table: Table, caption: str, label: str, notes: list[str]) -> list[str]:
    def cell(i: int, j: int, text: str) -> str:
        return f"\\textbf{{{text}}}" if (i, j) in table.bold and text else text

    lines = ["\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{caption}}}", f"\\label{{{label}}}",
             f"\\begin{{tabular}}{{{table.align}}}", "\\toprule", " & ".join(table.header) + " \\\\", "\\midrule"]
    for i, row in enumerate(table.rows):
        if i in table.breaks and i > 0:
            lines.append("\\midrule")
        lines.append(" & ".join(cell(i, j, c) for j, c in enumerate(row)) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if notes:
        lines += ["\\par\\smallskip", "\\footnotesize", *(f"{note}\\par" for note in notes)]
    lines.append("\\end{table}")
    return lines


def _latex(report: Report, lay: Layout) -> str:
    """Two ``table`` floats (booktabs): the results, then the differences; captions name the tests and seeds."""
    counts = sorted({len(r.runs) for r in report.rows if r.runs})
    over = f"{counts[0]} seed{'s' if counts[0] != 1 else ''}" if len(counts) == 1 else "the seeds of column seeds"
    diff_note = 1 if lay.differences is not None else None
    first = [note for k, note in enumerate(lay.footnotes) if k != diff_note]
    lines = ["% dmpf report: needs \\usepackage{booktabs}"]
    lines += _latex_table(lay.results, _escape(f"Test results: mean ± std over {over}; accuracies and F1 scores "
                                               f"in %.", "latex"), "tab:dmpf-results", first)
    if lay.differences is not None:
        caption = (f"Differences to the baseline ({report.baseline}) with {LEVEL:.0%} intervals of two paired tests: "
                   f"t, {T_TEST}; bootstrap, {BOOTSTRAP_TEST} ({RESAMPLES} resamples).")
        lines += [""] + _latex_table(lay.differences, _escape(caption, "latex"), "tab:dmpf-differences",
                                     [lay.footnotes[1]])
    return "\n".join(lines) + "\n"


def _csv(report: Report) -> str:
    """One line per row; fractions, like results.json; an empty cell where a value does not exist."""
    def num(value) -> str:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))

    def flag(row: Row, attr: str) -> str:
        k = row.count(attr)
        return "no" if k == 0 else "yes" if k == len(row.runs) else "mixed"

    header = ["config", "baseline", "n_seeds", "seeds", "unfinished", "synthetic", "random_backbone"]
    for m in report.metrics:
        header += [f"{m}_mean", f"{m}_std", f"{m}_diff", f"{m}_t_low", f"{m}_t_high", f"{m}_t_p", f"{m}_t_n",
                   f"{m}_boot_low", f"{m}_boot_high"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in report.rows:
        line = [row.name, "yes" if row.name == report.baseline else "no", len(row.runs),
                " ".join(str(s) for s in row.seeds), len(row.unfinished), flag(row, "synthetic"),
                flag(row, "random_backbone")]
        for m in report.metrics:
            s = row.summary.get(m, {})
            c = (row.comparison or {}).get(m)
            t, b = (c["paired_t"], c["bootstrap"]) if c else ({}, {})
            line += [num(s.get("mean")), num(s.get("std")), num(c["diff"] if c else None), num(t.get("low")),
                     num(t.get("high")), num(t.get("p")), t.get("n", "") if c else "", num(b.get("low")),
                     num(b.get("high"))]
        writer.writerow(line)
    return out.getvalue()
