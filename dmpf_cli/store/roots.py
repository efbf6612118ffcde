"""The directories of many runs, and the one file each holds that says which runs are its:

    ROOT/seeds.json     a multi-seed root (``dmpf train --seeds``): ``{"seeds": [SEED, ...]}``, its runs in
                        ``ROOT/seed-SEED/``, so ``dmpf train --resume ROOT`` can finish them all
    DIR/grid.json       a grid directory (``dmpf grid``): ``{"name", "description", "base", "overrides", "baseline":
                        VARIANT, "variants": {VARIANT: {"overrides": [...], "runs": {"SEED": "VARIANT/seed-SEED"}}}}``,
                        run paths relative to DIR; what ``dmpf report`` reads
    DIR/sweep.json      a sweep directory (``dmpf sweep``): ``{"study": STUDY, "storage": URL}``, the one study whose
                        trials are ``DIR/trial-NNNN/`` (the Optuna trial number); beside it ``DIR/study.db`` (the
                        default storage, Optuna's SQLite file), ``DIR/study.db.claim.lock`` (see the worker) and
                        ``DIR/best.yaml`` (the best complete trial's config)

Each is read and written here only, and a damaged one is a one-line :class:`~dmpf_cli.store.run.RunError` naming it
— never a traceback later. The run directories themselves are :mod:`dmpf_cli.store.run`'s.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..config import SEED_RANGE, are_seeds
from ..fileio import atomic_write_text
from .run import RunError, read_json

SEEDS_FILE = "seeds.json"
GRID_RECORD = "grid.json"


# -- a multi-seed root -----------------------------------------------------------------------------

def is_multi_seed_root(path: Path) -> bool:
    return (Path(path) / SEEDS_FILE).is_file()


def read_seeds(root: Path) -> list[int]:
    """The seeds of a multi-seed root, from its seeds.json."""
    path = Path(root) / SEEDS_FILE
    record = read_json(path)
    seeds = record.get("seeds") if isinstance(record, dict) else None
    if not are_seeds(seeds):
        raise RunError(f"{path}: expected {{\"seeds\": [1111, ...]}}, distinct integers {SEED_RANGE}, got "
                       f"{json.dumps(record)[:60]}")
    return seeds


def write_seeds(root: Path, seeds: list[int]) -> None:
    atomic_write_text(Path(root) / SEEDS_FILE, json.dumps({"seeds": list(seeds)}))


# -- a grid directory ------------------------------------------------------------------------------

GRID_RECORD_SHAPE = ('{"variants": {VARIANT: {"overrides": [OVERRIDE, ...], "runs": {SEED: PATH}}}, '
                     '"baseline": VARIANT}')


def is_grid_dir(path: Path) -> bool:
    return (Path(path) / GRID_RECORD).is_file()


def read_grid_record(root: Path) -> dict[str, Any]:
    """A grid directory's grid.json, checked."""
    path = Path(root) / GRID_RECORD
    record = read_json(path)

    def strings(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    def runs(value: Any) -> bool:
        return isinstance(value, dict) and all(re.fullmatch(r"-?[0-9]+", k) and isinstance(v, str) and v
                                               for k, v in value.items())

    variants = record.get("variants") if isinstance(record, dict) else None
    if not (isinstance(variants, dict)
            and all(isinstance(v, dict) and strings(v.get("overrides", [])) and runs(v.get("runs", {}))
                    for v in variants.values())
            and all(isinstance(record.get(k), (str, type(None))) for k in ("name", "baseline", "description"))):
        raise RunError(f"{path}: damaged: expected {GRID_RECORD_SHAPE}")
    return record


def write_grid_record(root: Path, *, name: str, description: str | None, base: str, overrides: list[str],
                      baseline: str | None, variants: dict[str, dict[str, Any]]) -> None:
    """grid.json: the grid's name, description, base config and shared overrides, its baseline variant and its
    variants (``{VARIANT: {"overrides": [...], "runs": {"SEED": "VARIANT/seed-SEED"}}}``, in order)."""
    atomic_write_text(Path(root) / GRID_RECORD, json.dumps({
        "name": name, "description": description, "base": base, "overrides": overrides, "baseline": baseline,
        "variants": variants}, indent=1))


# -- a sweep directory -----------------------------------------------------------------------------

SWEEP_RECORD = "sweep.json"
SWEEP_DATABASE = "study.db"
BEST_CONFIG = "best.yaml"
TRIAL_PREFIX = "trial-"


def sweep_database(root: Path) -> Path:
    """The default storage of a sweep in ``root``: an SQLite file Optuna writes (absolute)."""
    return (Path(root) / SWEEP_DATABASE).resolve()


def trial_name(number: int) -> str:
    """``trial-NNNN``: the run directory of trial ``number`` in a sweep directory, and its job's name."""
    return f"{TRIAL_PREFIX}{number:04d}"


def trial_dir(root: Path, number: int) -> Path:
    """The run directory of trial ``number`` (absolute)."""
    return (Path(root) / trial_name(number)).resolve()


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / SWEEP_RECORD).is_file()


def read_sweep_study(root: Path) -> str | None:
    """The study whose trials a sweep directory holds, from its sweep.json; None where it is damaged."""
    try:
        study = json.loads((Path(root) / SWEEP_RECORD).read_text(encoding="utf-8")).get("study")
    except (OSError, ValueError, AttributeError):
        return None
    return study if isinstance(study, str) else None


def has_trial_dirs(root: Path) -> bool:
    """Whether ``root`` holds trial directories (``trial-*``), a sweep's."""
    return Path(root).is_dir() and any(p.name.startswith(TRIAL_PREFIX) for p in Path(root).iterdir())


def write_sweep_record(root: Path, study: str, storage: str) -> None:
    """sweep.json, once: the study whose trials the directory holds and its storage (without a password)."""
    path = Path(root) / SWEEP_RECORD
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"study": study, "storage": storage}))


def claim_lock(database: Path) -> Path:
    """The file whose ``flock`` lets the workers of one SQLite storage claim trials one at a time."""
    return Path(f"{database}.claim.lock")


def write_best_config(root: Path, text: str) -> Path:
    """best.yaml: the best complete trial's config, atomically; returns its path."""
    Path(root).mkdir(parents=True, exist_ok=True)
    path = Path(root) / BEST_CONFIG
    atomic_write_text(path, text)
    return path
