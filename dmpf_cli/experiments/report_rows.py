"""``dmpf report``'s inputs gathered into rows: each path given, its runs, and the configs they group into.

**Inputs.** Each path is a *run directory* (``config.yaml`` + ``run.json``), a *multi-seed root*
(``seeds.json`` and ``seed-N/`` run directories, made by ``dmpf train --seeds``) or a *grid directory*
(``grid.json``, :mod:`dmpf_cli.store.roots`: its variants and their run directories, relative to it).

**Rows.** A grid's variants are rows, in the file's order. Every other run joins the row of the runs whose
``config.yaml`` is equal to its own apart from ``name`` and ``training.seeds``; a row is named after its first
run (in the order of the paths): the multi-seed root it belongs to, else its own directory. Two rows of one
name are told apart by their path (a grid's variants by ``GRID/VARIANT``). Rows come in the order they first
appear. Two runs of one row with the same seed are an error (the same run twice, or a repeat that would count
as a second seed).

**Runs.** Only finished runs count (:attr:`dmpf_cli.store.run.RunDir.state`: run.json's status ``finished``);
the others are counted and named in the notes, never dropped silently; a row without a finished run stays, empty.
Values are the test split's, from ``results.json``; the bootstrap reads ``predictions.npz``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DmpfError
from ..store.roots import GRID_RECORD, is_grid_dir, is_multi_seed_root, read_grid_record, read_seeds
from ..store.run import RunDir, RunError
from ..streams import DATASETS

SPLIT = "test"
# what a config may differ in and still be the same row: its name and the seeds it was asked to run
IGNORED_KEYS = (("name",), ("training", "seeds"))


class ReportError(DmpfError):
    """Paths, metrics or a baseline a report cannot be made of; one line."""


# -- what a row is made of -------------------------------------------------------------------------

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


# -- collecting runs into rows ---------------------------------------------------------------------

EXPECTED = "a run directory (config.yaml, run.json), a multi-seed root (seeds.json) or a grid directory (grid.json)"


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
        finished = run.finished
    except RunError as exc:
        raise ReportError(str(exc)) from None
    if run.config.is_file():
        config = _read_config(run.config)
    results = None
    if finished:
        try:
            results = run.read_results()
        except RunError as exc:
            raise ReportError(str(exc)) from None
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
        spec = read_grid_record(root)
    except RunError as exc:
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
    if is_multi_seed_root(path):
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
    return parent.name if is_multi_seed_root(parent) else run.path.name


def collect_rows(paths: list[Path]) -> tuple[list[Row], str | None]:
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
        if is_grid_dir(path):
            baseline, grid_rows = _grid_rows(path, given)
            for row in grid_rows:
                row.runs = [r for r in row.runs if _first_time(r.path, seen)]
            if grid_baseline is None and baseline is not None:
                if baseline not in [r.name for r in grid_rows]:
                    raise ReportError(f"{path / GRID_RECORD}: its baseline {baseline!r} is none of its variants")
                grid_baseline = next(r for r in grid_rows if r.name == baseline)
            rows += grid_rows
            continue
        if not (is_multi_seed_root(path) or RunDir(path).is_run()):
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


