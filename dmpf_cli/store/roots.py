"""The directories of many runs, and the one file each holds that says which runs are its:

    ROOT/seeds.json     a multi-seed root (``dmpf train --seeds``): ``{"seeds": [SEED, ...]}``, its runs in
                        ``ROOT/seed-SEED/``, so ``dmpf train --resume ROOT`` can finish them all
    DIR/grid.json       a grid directory (``dmpf grid``): ``{"name", "description", "base", "overrides", "baseline":
                        VARIANT, "variants": {VARIANT: {"overrides": [...], "runs": {"SEED": "VARIANT/seed-SEED"}}}}``,
                        run paths relative to DIR; what ``dmpf report`` reads

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
