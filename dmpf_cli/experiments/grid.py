"""``dmpf grid``: named variants of one config × seeds, each a normal run directory, then one report.

A grid file::

    name: demo                      # the default output is runs/grids/NAME
    base: default                   # a preset, or a config file (relative to the grid file)
    overrides: [training.max_epochs=4]   # for every variant
    seeds: [1111, 1112]
    baseline: full                  # the variant the report compares with
    variants:
      full: []
      text-only: [fusion.n_a=0, fusion.n_v=0, fusion.n_av=0]

The grid directory::

    DIR/grid.yaml                   the grid file as it was run
    DIR/grid.json                   variants, their overrides and run directories (what `dmpf report` reads)
    DIR/VARIANT/config.yaml         the variant's resolved config
    DIR/VARIANT/seed-N/             a run directory (`dmpf eval --run`, `dmpf train --resume` take it)
    DIR/logs/VARIANT-seed-N.log     each run's console output
    DIR/report.md, DIR/report.json  the report, written at the end

These names are reserved: no variant may be called so (:data:`RESERVED`).

Every variant is resolved and checked (keys, values, data, backbone, device) before the first run starts. Running
the command again finishes the grid: finished runs are kept, killed ones resumed, missing ones started; variants or
seeds added to the file since are added to the grid. A variant whose config has changed since its runs were made is
refused — its runs would mix two configs — and nothing finished is ever overwritten.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import yamlio
from ..config import SEED_RANGE, ConfigError, ExperimentConfig, are_seeds, base_config, to_yaml
from ..errors import DmpfError, did_you_mean
from ..fileio import atomic_write_text
from ..recipes.preflight import absolute_paths, resolve_config
from ..store.roots import GRID_RECORD, is_grid_dir, read_grid_record, write_grid_record
from ..store.run import RunError
from ..validation import BaseName, Invalid, Overrides, Whole, is_slug, shown_value, slug, validate

GRID_FILE, VARIANT_CONFIG, LOGS = "grid.yaml", "config.yaml", "logs"
REPORT_FILES = ("report.md", "report.json")
# what the grid directory holds beside the variants' directories: no variant may be named so (nor differ from one
# of them only in case, as on a case-insensitive file system)
RESERVED = (GRID_FILE, GRID_RECORD, *REPORT_FILES, LOGS)


class GridError(Invalid):
    """A grid file or grid directory that cannot be used; one line naming the file and key."""


class GridFile(BaseModel):
    """A grid file's keys, checked (:func:`read_grid` reads it through :func:`~dmpf_cli.validation.validate`)."""

    model_config = ConfigDict(extra="forbid")

    name: Optional[slug("expected letters, digits, '-', '_' or '.'")] = None  # type: ignore[valid-type]
    description: str = ""
    base: BaseName = "default"
    overrides: Overrides = []
    seeds: Optional[list[int]] = None
    variants: dict[str, Overrides] = Field(None, validate_default=True)  # before baseline: its check reads them
    baseline: Any = Field(None, validate_default=True)  # null: the first variant

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        for key in data if isinstance(data, dict) else ():
            if key not in GRID_KEYS:
                raise Whole(f"unknown key '{key}': {did_you_mean(str(key), GRID_KEYS, cutoff=0.6)}expected one of "
                            f"{', '.join(GRID_KEYS)}")
        return data

    @field_validator("name", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return value or None

    @field_validator("description", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        if value is not None and not isinstance(value, str):
            raise ValueError("expected a line of text")
        return value or ""

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> Any:
        if value is not None and not are_seeds(value):
            raise ValueError(f"expected a list of distinct integers {SEED_RANGE} like [1111, 1112]")
        return value

    @field_validator("variants", mode="before")
    @classmethod
    def _variant_names(cls, variants: Any) -> Any:
        if not isinstance(variants, dict) or not variants:
            raise ValueError("expected a mapping of variant names to override lists, "
                             "e.g. {full: [], text-only: [fusion.n_a=0, fusion.n_v=0, fusion.n_av=0]}")
        taken: dict[str, str] = {}
        for variant in variants:
            if not is_slug(variant):
                raise Whole(f"the name {variant!r} is not a directory name (letters, digits, '-', '_', '.')")
            if variant.lower() in (r.lower() for r in RESERVED):
                raise Whole(f"the name {variant!r} is reserved: the grid directory holds {', '.join(RESERVED)} "
                            "beside the variants; rename the variant")
            if variant.lower() in taken:
                raise Whole(f"{taken[variant.lower()]!r} and {variant!r} differ only in case; on a case-insensitive "
                            "file system they would share one directory: rename one")
            taken[variant.lower()] = variant
        return variants

    @field_validator("baseline")
    @classmethod
    def _a_variant(cls, baseline: Any, info) -> Any:
        variants = info.data.get("variants")
        if variants is None:  # the variants' own error says what is wrong
            return baseline
        if baseline is None:
            return next(iter(variants))
        if not isinstance(baseline, str) or baseline not in variants:
            hint = did_you_mean(baseline, variants, cutoff=0.6) if isinstance(baseline, str) else ""
            raise Whole(f"{_shown(baseline)} is not a variant: {hint}the variants are {', '.join(variants)}")
        return baseline


GRID_KEYS = tuple(GridFile.model_fields)


@dataclass
class Grid:
    path: Path  # the grid file
    name: str
    description: str
    base: str
    overrides: list[str]
    seeds: list[int]
    baseline: str
    variants: dict[str, list[str]]  # in the file's order
    text: str


def shipped_grids() -> list[str]:
    """The grid files dmpf ships (``configs/grids/NAME.yaml``), by name."""
    from ..config import CONFIG_DIR

    return sorted(p.stem for p in (CONFIG_DIR / "grids").glob("*.yaml"))


def grid_file(given: Path) -> Path:
    """A grid file's path, or a shipped grid's by name (``dmpf grid demo``) where no such file exists."""
    from ..config import CONFIG_DIR

    if given.exists() or given.suffix or len(given.parts) > 1:
        return given
    shipped = CONFIG_DIR / "grids" / f"{given}.yaml"
    if shipped.is_file():
        return shipped
    hint = did_you_mean(str(given), shipped_grids(), cutoff=0.6)
    raise GridError(f"{given}: no such grid file or shipped grid: {hint}shipped: {', '.join(shipped_grids())}")


def read_grid(path: Path) -> Grid:
    """Read and check a grid file's structure (not yet its configs: :func:`variant_configs`)."""
    path = grid_file(Path(path))
    try:
        tree, text = yamlio.read(path, "grid file")
    except yamlio.YamlError as exc:
        raise GridError(str(exc)) from None
    grid = validate(GridFile, tree, str(path), error=GridError)
    return Grid(path, grid.name or path.stem, grid.description, grid.base, grid.overrides, grid.seeds or [],
                grid.baseline, grid.variants, text)


def _shown(value: Any) -> str:
    """A value read from a file, in an error: short, and 'text' for a string."""
    return f"'{value}'" if isinstance(value, str) else shown_value(value)




def variant_configs(grid: Grid) -> dict[str, ExperimentConfig]:
    """Every variant resolved: the base, the grid's overrides, then the variant's (data and encoder paths made
    absolute, as a run stores them). A problem names the grid file and the variant."""
    out = {}
    for variant, overrides in grid.variants.items():
        try:
            out[variant] = absolute_paths(resolve_config(config=base_config(grid.path, grid.base), overrides=[*grid.overrides, *overrides]))
        except ConfigError as exc:
            raise GridError("\n".join(f"{grid.path}: variant '{variant}': {line}"
                                      for line in str(exc).splitlines())) from None
        except DmpfError as exc:  # an unknown preset named by base
            raise GridError(f"{grid.path}: base: {exc}") from None
    return out


def _seedless(cfg: ExperimentConfig) -> dict[str, Any]:
    """A config as compared between runs of a grid: the seeds are the grid's business."""
    tree = cfg.model_dump(mode="json")
    tree["training"].pop("seeds", None)
    return tree


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {a!r} then, {b!r} now"


# -- planning ------------------------------------------------------------------------------------

@dataclass
class Plan:
    grid: Grid
    root: Path
    seeds: list[int]
    configs: dict[str, ExperimentConfig]
    jobs: list  # jobs.Job, seed-major: the first seed of every variant first, so a partial grid is a whole table
    record: dict[str, Any]  # the grid directory's grid.json as it was ({} for a new grid)


def plan(grid: Grid, root: Path, seeds: list[int] | None = None, *, resume: bool = False) -> Plan:
    """What to run where; refuses a directory that holds something else, or this grid with a variant changed."""
    from .job import Job

    configs = variant_configs(grid)
    seeds = seeds or grid.seeds or next(iter(configs.values())).training.seeds
    record = {}
    if root.exists() and not root.is_dir():
        raise GridError(f"--output: {root} is a file, not a directory; choose another --output")
    if is_grid_dir(root):
        try:
            record = read_grid_record(root)
        except RunError as exc:
            raise GridError(f"--output: {exc}; choose another --output") from None
        for variant, cfg in configs.items():
            stored = root / variant / VARIANT_CONFIG
            if stored.is_file():
                try:
                    then = resolve_config(config=stored)
                except DmpfError:
                    raise GridError(f"--output: {stored}: unreadable; choose another --output") from None
                if _seedless(then) != _seedless(cfg):
                    raise GridError(f"{grid.path}: variant '{variant}' has changed since its runs in {root / variant} "
                                    f"were made ({_first_difference(_seedless(then), _seedless(cfg))}); rename the "
                                    "variant or choose another --output")
    elif resume:
        raise GridError(f"--resume: {root} holds no grid ({GRID_RECORD}); run without --resume to start it")
    elif root.is_dir() and any(root.iterdir()):
        raise GridError(f"--output: {root} exists and is not a grid directory; choose another --output")
    jobs = [Job(f"{variant}/seed-{seed}", root / variant / f"seed-{seed}", root / variant / VARIANT_CONFIG, seed,
                configs[variant].training.max_epochs)
            for seed in seeds for variant in grid.variants]
    return Plan(grid, root, seeds, configs, jobs, record)


def write_plan(p: Plan) -> None:
    """The grid file, each variant's config and ``grid.json`` (merged with what an earlier invocation added)."""
    p.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p.root / GRID_FILE, p.grid.text)
    variants = p.record.get("variants", {})
    for variant, cfg in p.configs.items():
        (p.root / variant).mkdir(exist_ok=True)
        if not (p.root / variant / VARIANT_CONFIG).is_file():
            atomic_write_text(p.root / variant / VARIANT_CONFIG, to_yaml(cfg))
        entry = variants.setdefault(variant, {"overrides": p.grid.variants[variant], "runs": {}})
        for seed in p.seeds:
            entry["runs"][str(seed)] = f"{variant}/seed-{seed}"
    order = list(p.grid.variants) + [v for v in variants if v not in p.grid.variants]
    write_grid_record(p.root, name=p.grid.name, description=p.grid.description, base=p.grid.base,
                      overrides=p.grid.overrides, baseline=p.grid.baseline, variants={v: variants[v] for v in order})


def write_report(root: Path) -> dict[str, Any]:
    """``report.md`` and ``report.json`` of the grid in ``root`` (:mod:`dmpf_cli.experiments.report`); returns the report."""
    from .report import build_report
    from .report_render import render

    report = build_report([root])
    for name in REPORT_FILES:
        atomic_write_text(root / name, render(report, name.rpartition(".")[2]))
    return report


# -- running -------------------------------------------------------------------------------------

def grid_target(given: Path, output: Path | None) -> tuple[Path, Path | None]:
    """(the grid file, the output) for ``dmpf grid GIVEN``: a grid directory holds its own copy of the grid file
    and is its own output."""
    if not given.is_dir():
        return given, output
    if output is not None and output.resolve() != given.resolve():
        raise GridError(f"--output: {given} is a grid directory and is its own output; drop --output")
    if not (given / GRID_FILE).is_file():
        raise GridError(f"{given}: not a grid directory (no {GRID_FILE}); pass a grid file")
    return given / GRID_FILE, given


@dataclass
class GridRun:
    """What :func:`run_grid` did: the grid's directory, its runs' outcomes, and the report where any run finished."""

    root: Path
    jobs: list  # job.Job, every run of the grid
    outcomes: list  # job.JobOutcome, of the runs started or resumed now
    report: dict[str, Any] | None

    def raise_failures(self) -> None:
        """A one-line :class:`GridError` where a run failed: how many, which, the first one's error."""
        failed = [o for o in self.outcomes if not o.ok]
        if failed:
            raise GridError(f"{len(failed)} of {len(self.jobs)} runs failed ({', '.join(o.job.name for o in failed)});"
                            f" the first: {failed[0].error}; `dmpf grid {self.root}` retries them")


def run_grid(path: Path, output: Path | None, seeds: list[int] | None, *, resume: bool, how, console,
             on_start: Callable = lambda job: None, on_end: Callable = lambda outcome: None,
             live: bool = True) -> GridRun:
    """``dmpf grid``: plan the grid file at ``path`` into ``output`` (default ``runs/grids/NAME``), check every variant
    (:func:`~dmpf_cli.recipes.preflight.check`) before anything is written, run the runs not finished yet where
    ``how`` (a :class:`~dmpf_cli.experiments.launch.Launch`) says — ``on_start``/``on_end`` see each — and write the
    report. A run in this process takes what its variant's check opened. Ctrl-C stops the runs (a Slurm job is
    cancelled) and is a one-line :class:`GridError`: they resume."""
    from ..recipes.preflight import check
    from .launch import launch
    from .monitor import Monitor

    launcher = launch(how)
    spec = read_grid(path)
    root = output or Path("runs") / "grids" / spec.name
    p = plan(spec, root, seeds, resume=resume)
    states = {job.name: job.state() for job in p.jobs}  # a damaged run.json is an error before anything is written
    same = {variant: json.dumps(cfg.model_dump(mode="json"), sort_keys=True) for variant, cfg in p.configs.items()}
    ready = {}  # every variant can run here: data, backbone, device — before the first run starts
    for variant, key in same.items():
        ready[key] = ready.get(key) or check(p.configs[variant], console)
    write_plan(p)
    state = Counter(states.values())
    todo = [job for job in p.jobs if states[job.name] != "finished"]
    synthetic = any(cfg.data.dataset == "synthetic" for cfg in p.configs.values())
    console.print(f"[bold]grid {spec.name}[/bold]: {len(spec.variants)} variants × {len(p.seeds)} seeds = "
                  f"{len(p.jobs)} runs in {root} ({state['finished']} finished and kept, {state['resume']} to "
                  f"resume, {state['new'] + state['restart']} to start); {launcher.describe()}"
                  + ("; [yellow]synthetic data[/yellow]" if synthetic else ""))
    monitor = Monitor(console, total=len(p.jobs), title=f"grid {spec.name}", done=state["finished"], live=live)

    def started(job) -> None:
        on_start(job)
        monitor.started(job)

    def ended(outcome) -> None:
        monitor.ended(outcome)
        on_end(outcome)

    try:
        with monitor:
            outcomes = launcher.run(todo, root / LOGS, on_start=started, on_end=ended, folder=root / ".submitit",
                                    checked={root / v / VARIANT_CONFIG: ready[key] for v, key in same.items()})
    except KeyboardInterrupt:
        stopped = "; its Slurm jobs are cancelled" if launcher.submits else ""
        raise GridError(f"interrupted{stopped}: the runs are resumable; `dmpf grid {root}` finishes the grid") from None
    report = write_report(root) if any(job.state() == "finished" for job in p.jobs) else None
    return GridRun(root, p.jobs, outcomes, report)
