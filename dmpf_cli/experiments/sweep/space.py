"""The space file of ``dmpf sweep``: its schema (a pydantic model, checked as configs are), the searched keys.

A space file names a base config, overrides for every trial and the keys to search::

    name: demo                        # the study (default: the file's name); the default output runs/sweeps/NAME
    base: default                     # a preset, or a config file (relative to the space file)
    overrides: [training.max_epochs=4]
    seed: 1111                        # every trial's training seed (default: the config's first)
    space:
      optimizer.lr_lm: {low: 1.0e-4, high: 1.0e-2, log: true}
      training.batch_size: {low: 8, high: 32, step: 8}
      mm.gate: {choices: [sigmoid, tanh]}
    pruner: {kind: median, n_startup_trials: 5, n_warmup_steps: 0}   # or {kind: none}
    sampler: {seed: 0, n_startup_trials: 10}                           # TPE
    trials: 20                        # the study's budget (--trials overrides it)
    heartbeat: 60                     # seconds between a running trial's beats

:func:`load_space` reads it through :mod:`dmpf_cli.yamlio`, checks it as a :class:`SpaceFile` through
:func:`dmpf_cli.validation.validate` (every problem one line naming the file and the key, unknown keys with their
close matches), then every value a dimension can take against the config's own checks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ... import yamlio
from ...config import CONFIG_DIR, SEED_RANGE, ConfigError, base_config, is_seed
from ...errors import did_you_mean
from ...recipes.preflight import resolve_config
from ...validation import SLUG_RULE, BaseName, Invalid, Overrides, Slug, is_slug, shown_value, validate
from ...yamlio import flow

DEFAULT_HEARTBEAT = 60  # seconds between beats; a trial is lost after GRACE_BEATS beats' silence


class SweepError(Invalid):
    """A space file, storage or study that cannot be used; one line."""


# --------------------------------------------------------------------------------------------
# The schema


def _number(value: Any) -> bool:
    """A finite int or float (YAML's .inf and .nan are floats, but no range or step)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite(value: Any) -> Any:
    if not _number(value):
        raise ValueError("expected a finite number")
    return value


def _at_least(least: int) -> Any:
    """An integer >= ``least``, strictly: ``true``, ``2.0`` and ``"2"`` are refused."""

    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"expected an integer >= {least}")
        return value

    return Annotated[int, BeforeValidator(check)]


def _seed(value: Any) -> int:
    if not is_seed(value):
        raise ValueError(f"expected an integer {SEED_RANGE}")
    return value


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


Finite = Annotated[Any, BeforeValidator(_finite)]
SeedValue = Annotated[int, BeforeValidator(_seed)]


class Forbid(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(Forbid):
    """One searched key: a range ``{low, high}`` (``log``, ``step``) or ``{choices: [...]}``."""

    low: Finite = None
    high: Finite = None
    log: Annotated[bool, BeforeValidator(_strict_bool)] = False
    step: Any = None
    choices: Optional[list[Any]] = None

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("expected a range {low: A, high: B} (log: true, step: S) or {choices: [...]}")
        return data

    @field_validator("step", mode="before")
    @classmethod
    def _step(cls, step: Any, info) -> Any:
        whole = isinstance(info.data.get("low"), int) and isinstance(info.data.get("high"), int)
        if not _number(step) or step <= 0 or (whole and not isinstance(step, int)):
            raise ValueError(f"expected a positive {'integer' if whole else 'finite number'}")
        return step

    @field_validator("choices", mode="before")
    @classmethod
    def _choices(cls, choices: Any) -> Any:
        if not isinstance(choices, list) or not choices:
            raise ValueError("expected a non-empty list")
        encoded = [json.dumps(c, sort_keys=True, default=str) for c in choices]
        if len(set(encoded)) != len(encoded):
            raise ValueError("repeats a choice")
        return choices

    @model_validator(mode="after")
    def _a_range_or_choices(self) -> "Range":
        if self.choices is not None:
            if self.model_fields_set - {"choices"}:
                raise ValueError("give choices or a range (low, high), not both")
            return self
        missing = [k for k in ("low", "high") if k not in self.model_fields_set]
        if missing:
            raise ValueError(f"expected low and high (or choices); {' and '.join(missing)} missing")
        low, high, step = self.low, self.high, self.step
        if low >= high:
            raise ValueError(f"expected low < high, got low {low}, high {high}")
        if self.log and low <= 0:
            raise ValueError(f"a log range needs low > 0, got low {low}")
        if step is not None:
            if self.log:
                raise ValueError("step and log cannot be combined (Optuna samples a log range continuously)")
            span = (high - low) / step
            if abs(span - round(span)) > 1e-9 * max(1.0, abs(span)):
                raise ValueError(f"high - low ({high - low:g}) must be a multiple of step ({step:g})")
        return self

    def dimension(self, key: str) -> "Dimension":
        if self.choices is not None:
            return Dimension(key, "choice", choices=tuple(self.choices))
        kind = "int" if isinstance(self.low, int) and isinstance(self.high, int) else "float"
        return Dimension(key, kind, low=self.low, high=self.high, log=self.log, step=self.step)


class Pruner(Forbid):
    kind: Literal["median", "none"] = "median"
    # (a key not given is left to _pruner's defaults, and out of the space the study records)
    n_startup_trials: _at_least(0) = None  # type: ignore[valid-type]
    n_warmup_steps: _at_least(0) = None  # type: ignore[valid-type]

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, kind: Any) -> Any:
        if kind not in ("median", "none"):
            raise ValueError("expected median or none")
        return kind


class Sampler(Forbid):
    seed: SeedValue = None
    n_startup_trials: _at_least(0) = None  # type: ignore[valid-type]


class SpaceFile(Forbid):
    """A space file's keys (see the module's docstring)."""

    name: Slug = None  # null when not given: the file's name
    base: BaseName = "default"
    overrides: Overrides = []
    seed: SeedValue = None  # not given: the base config's first seed
    space: dict[str, Range] = Field(None, validate_default=True)
    pruner: Pruner = Pruner()
    sampler: Sampler = Sampler()
    trials: Optional[_at_least(1)] = None  # type: ignore[valid-type]
    heartbeat: _at_least(1) = DEFAULT_HEARTBEAT  # type: ignore[valid-type]

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, space: Any) -> Any:
        if not isinstance(space, dict) or not space:
            raise ValueError("expected a mapping of config keys to ranges or choices, e.g. "
                             "optimizer.lr_lm: {low: 1.0e-4, high: 1.0e-2, log: true}")
        return space

    @field_validator("pruner", "sampler", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any) -> Any:
        return {} if value is None else value


# --------------------------------------------------------------------------------------------
# The checked space


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


def load_space(path: Path | str) -> SweepSpec:
    """Read and check a space file: its keys, the base config with the overrides, every dimension's bounds or
    choices against the config's own checks. Every problem is a one-line :class:`SweepError` naming the file."""
    path = space_file(path)
    try:
        tree, text = yamlio.read(path, "space file")
    except yamlio.YamlError as exc:
        raise SweepError(str(exc)) from None
    file = str(path)
    space = validate(SpaceFile, {} if tree is None else tree, file, error=SweepError)
    base_path = _resolve_base(path, space.base)
    try:
        cfg = resolve_config(config=base_path, overrides=space.overrides)
    except ConfigError as exc:
        where = "overrides" if exc.problems[0].startswith("override") else "base"
        raise SweepError(f"{file}: {where}: {'; '.join(exc.problems)}") from None
    dims = tuple(spec.dimension(key) for key, spec in space.space.items())
    for dim in dims:
        _check_against_config(file, base_path, space.overrides, dim)
    return SweepSpec(path=path, text=text, name=space.name or path.stem, base=space.base, base_path=base_path,
                     overrides=tuple(space.overrides), seed=cfg.training.seeds[0] if space.seed is None else space.seed,
                     dims=dims, pruner={"kind": space.pruner.kind, **space.pruner.model_dump(exclude_unset=True)},
                     sampler=space.sampler.model_dump(exclude_unset=True), trials=space.trials,
                     heartbeat=space.heartbeat)


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
    """A study name is also a directory name (``runs/sweeps/NAME``): the one rule for names."""
    if not is_slug(name):
        raise SweepError(f"{where}: {SLUG_RULE}, got {shown_value(name)}")
    return name


def _resolve_base(space: Path, base: str) -> Path:
    """``base``: :func:`~dmpf_cli.config.base_config`'s rule, as a grid file's; a name that is not found is the space
    file's error."""
    try:
        return base_config(space, base)
    except ConfigError as exc:
        raise SweepError(f"{space}: base: {exc}") from None


def _check_against_config(file: str, base: Path, overrides: list[str], dim: Dimension) -> None:
    """Every value the dimension can take — both ends of a range, each choice — must make a valid config; the
    config's error (unknown key with close matches, bounds, types) is reported against the space file."""
    values = list(dim.choices) if dim.kind == "choice" else [dim.low, dim.high]
    for value in values:
        text = f"{dim.key}={flow(value)}"
        try:
            resolve_config(config=base, overrides=[*overrides, text])
        except ConfigError as exc:
            origin = f"override '{text}': "
            problems = [p.removeprefix(origin) for p in exc.problems]
            raise SweepError(f"{file}: space: {'; '.join(problems)}"
                             + ("" if exc.problems[0].startswith(origin) else f" (with {text})")) from None
