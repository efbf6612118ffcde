"""Everything that can refuse a run, checked once before anything is written, and what the checks opened.

Two steps, both reporting every problem at once (one line each, naming who set the key):

* :func:`resolve_config` — the config as :func:`~dmpf_cli.config.load_config` reads it (the schema), then the checks
  that need the components: names in the registry, ``backbone.path`` naming a model, the MM layers and the text
  length within the backbone's shapes. Every command that reads a config the user gave calls it.
* :func:`check` — what this machine must have for a run: the device, compile mode and attention backend, the
  loggers' packages, the data, the backbone's files and the pre-trained encoders; the synthetic data and the demo
  LM are made here on first use. It returns a :class:`Ready`: the prepared data, the backbone's files as found and
  the encoders' weights, which the :class:`~dmpf_cli.recipes.train.Trainer` takes instead of opening them again.

The config module itself knows the schema only; the component checks live here, above the backbone catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from rich.console import Console

from .. import registry
from ..config import (
    ConfigError,
    ExperimentConfig,
    clm_idle,
    config_file,
    load_config,
    read_yaml,
    selected_components,
    token_counts,
)
from ..data.prepared import Prepared
from ..errors import DmpfError
from ..model.attention import resolve_backend
from ..model.backbone_files import classify_path
from ..model.backbone_loader import FoundBackbone, check_available
from ..model.backbones import backbone_shapes
from ..model.dmpf import build_encoders, resolve_device
from ..store.run import ENCODER_STAGE, RunDir, RunError, RunState
from ..streams import STREAM_BY_NAME, STREAMS
from ..validation import origin_of, parse_override
from .datasets import data_dir, missing_data, open_data
from .loggers import check_loggers
from .pretrain_lm import ensure_demo_lm, names_demo_lm
from .runtime import check_compile

# -- the config's components ---------------------------------------------------------------------

# a check that involves several keys: whichever of them an override set is what the error blames
RELATED_KEYS = {
    "mm.layers": ("mm.layers", "backbone.name", "backbone.path"),
    "data.text_len": ("data.text_len", *(f"fusion.{s.tokens_key}" for s in STREAMS), "backbone.name", "backbone.path"),
}


def resolve_config(
    dataset: str | None = None,
    config: Path | str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> ExperimentConfig:
    """:func:`~dmpf_cli.config.load_config`, then :func:`component_problems`: every problem a :class:`ConfigError`
    line that names the file or the override that set the key."""
    cfg = load_config(dataset, config, overrides)
    found = component_problems(cfg)
    if not found:
        return cfg
    source = str(config_file(dataset, config))
    origins = {tuple(parse_override(text)[0]): text for text in overrides}
    raise ConfigError([f"{_origin_of_any(loc, origins, source)}: {loc}: {msg}" for loc, msg in found])


def _origin_of_any(loc: str, overrides: dict[tuple[str, ...], str], source: str) -> str:
    """Who set ``loc`` or a key its check involves (:data:`RELATED_KEYS`): the overrides that did, else the file."""
    found: list[str] = []
    for key in RELATED_KEYS.get(loc, (loc,)):
        origin = origin_of(tuple(key.split(".")), overrides, source)
        if origin != source and origin not in found:
            found.append(origin)
    return ", ".join(found) if found else source


def component_problems(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """Checks beyond the schema: component names exist, ``backbone.path`` names a model, MM layers exist in the backbone."""
    problems: list[tuple[str, str]] = []

    def check(kind: str, name: str, loc: str) -> bool:
        try:
            registry.get(kind, name)
            return True
        except registry.RegistryError as exc:
            problems.append((loc, str(exc)))
            return False

    for key, kind, name in selected_components(cfg):
        if kind != "backbone":
            check(kind, name, key)
    if cfg.backbone.path:
        problem = _backbone_path_problem(cfg.backbone.path)
        if problem:
            problems.append(("backbone.path", problem))
    if check("backbone", cfg.backbone.name, "backbone.name"):
        try:
            arch = backbone_shapes(cfg.backbone)
        except ValueError as exc:
            problems.append(("backbone.path", str(exc)))
        else:
            bad = [layer for layer in cfg.mm.layers if layer >= arch.n_layer]
            if bad:
                problems.append((
                    "mm.layers",
                    f"expected block indices 0..{arch.n_layer - 1} ({cfg.backbone.name} has {arch.n_layer} blocks), got {bad}",
                ))
            needed = cfg.data.text_len + sum(token_counts(cfg).values())
            if needed > arch.n_positions:
                problems.append((
                    "data.text_len",
                    f"text_len + fusion tokens = {needed} exceeds {cfg.backbone.name}'s {arch.n_positions} positions",
                ))
    return problems


def _backbone_path_problem(given: str) -> str | None:
    """Why ``backbone.path`` names no model directory (None when it does): it must be an existing
    directory, or a hub id that is in the local Hugging Face cache (the two forms load_backbone reads)."""
    found = classify_path(given)
    shown = given if str(found.path) == given else f"{given} ({found.path})"
    return {
        "directory": None,
        "cached": None,
        "file": f"{shown} is a file, expected a model directory",
        "uncached": f"{shown} is neither a directory nor a hub id in the Hugging Face cache ({found.cache})",
        "missing": f"{shown} does not exist, expected a model directory",
    }[found.kind]


# -- this machine ------------------------------------------------------------------------------------

@dataclass
class Ready:
    """What :func:`check` opened for a run of ``cfg``, so the run does not open it again."""

    cfg: ExperimentConfig  # data and encoder paths absolute, as the run's config stores them
    data: Prepared
    backbone: FoundBackbone
    encoders: tuple[Path, dict[str, Any]] | None = None  # encoders.init_from resolved and its weights, where loaded


def absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with its data and encoder paths absolute (from the working directory), as a run's config stores them."""
    if cfg.data.path and not Path(cfg.data.path).expanduser().is_absolute():
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(
            update={"path": str(Path(cfg.data.path).expanduser().resolve())})})
    if cfg.encoders.init_from and not Path(cfg.encoders.init_from).expanduser().is_absolute():
        cfg = cfg.model_copy(update={"encoders": cfg.encoders.model_copy(
            update={"init_from": str(Path(cfg.encoders.init_from).expanduser().resolve())})})
    return cfg


def check(cfg: ExperimentConfig, console: Console, *, encoders: bool = True) -> Ready:
    """Check everything that can refuse a run of ``cfg`` — the device, compile mode, attention backend, the loggers'
    packages, data, backbone files and (``encoders``) the pre-trained encoders — and make what is made on first use
    (the synthetic data, the demo LM), before any run directory is made, written or (with --overwrite) emptied.

    Every problem found is reported at once, one line each (a missing MOSEI pickle and missing gpt2-large weights
    are one round trip, not two); nothing is built while any is left. The returned config has its data and encoder
    paths absolute, as stored in the run's config, so eval, predict and a later resume find them from any
    directory. A grid checks every variant with it before its first run starts."""

    problems: list[str] = []

    def step(action, *args, **kwargs):
        try:
            return action(*args, **kwargs)
        except DmpfError as exc:
            problems.extend(str(exc).splitlines())
            return None

    if device := step(resolve_device, cfg.training.device):
        step(check_compile, cfg.training.compile, device, cfg.training.grad_accum)
        step(resolve_backend, cfg.training.attention, device)
    step(check_loggers, cfg.training.loggers)
    cfg = absolute_paths(cfg)
    if problem := missing_data(cfg):
        problems.append(problem)
    demo_lm = names_demo_lm(cfg.backbone)  # built below, on first use
    backbone = None if demo_lm else step(check_available, cfg.backbone)
    # the pre-trained encoders must fit the data's feature widths: checked now where the data is there already
    encoders = encoders and bool(cfg.encoders.init_from)  # a resumed run has its encoders in its checkpoint
    data, loaded = None, None
    if encoders and not problem and data_dir(cfg).is_dir():
        # opened for good where nothing else is wrong (a synthetic dataset is brought up to date first)
        if data := step(open_data, cfg, console, prepare_missing=not problems):
            loaded = step(pretrained_encoders, cfg, data.dims)
            encoders = False
    if problems:
        raise DmpfError("\n".join(dict.fromkeys(problems)))
    _warn(cfg, console)
    data = data or open_data(cfg, console)  # generates the synthetic dataset on first use
    if demo_lm:
        ensure_demo_lm(console)
        backbone = check_available(cfg.backbone)
    if encoders:
        loaded = pretrained_encoders(cfg, data.dims)
    return Ready(cfg, data, backbone, loaded)


def opened(cfg: ExperimentConfig, *, encoders: bool = True) -> Ready:
    """What :func:`check` returns, opened without checking or making anything: for a rank of a distributed run
    (rank 0 has checked and made it) and for a :class:`~dmpf_cli.recipes.train.Trainer` built on its own."""

    cfg = absolute_paths(cfg)
    data = open_data(cfg, prepare_missing=False)
    return Ready(cfg, data, check_available(cfg.backbone), pretrained_encoders(cfg, data.dims) if encoders else None)


def reuse(ready: Ready, cfg: ExperimentConfig, console: Console, *, encoders: bool = True) -> Ready:
    """What :func:`check` returned for another config, for a run of ``cfg``: where the two agree on everything the
    check reads (:func:`what_check_reads`: a grid's run in its process, a sweep's trial that samples the learning
    rate), nothing is checked or opened again and only the warning :func:`check` gives is said again for the run's
    log; where they do not (a trial that samples the backbone), ``cfg`` is checked whole (``encoders`` as for
    :func:`check`)."""
    cfg = absolute_paths(cfg)
    if what_check_reads(cfg) != what_check_reads(ready.cfg):
        return check(cfg, console, encoders=encoders)
    _warn(cfg, console)
    return Ready(cfg, ready.data, ready.backbone, ready.encoders)


# the training keys :func:`check` reads (the device, compile mode, attention backend and loggers)
CHECKED_TRAINING_KEYS = ("device", "compile", "grad_accum", "attention", "loggers")


def what_check_reads(cfg: ExperimentConfig) -> dict[str, Any]:
    """The part of a config :func:`check`'s outcome depends on: the data and backbone sections, the training keys it
    checks and, when the run starts from pre-trained encoders, the encoder sections (their regularisation aside)."""
    dumped = cfg.model_dump(mode="json")
    read = {"data": dumped["data"], "backbone": dumped["backbone"],
            "training": {key: dumped["training"][key] for key in CHECKED_TRAINING_KEYS}}
    if cfg.encoders.init_from:
        read["encoders"] = {key: {k: v for k, v in section.items() if k not in REGULARISATION}
                            if isinstance(section, dict) else section for key, section in dumped["encoders"].items()}
    return read


def _warn(cfg: ExperimentConfig, console: Console) -> None:
    if idle := clm_idle(cfg):
        console.print(f"[yellow]warning[/yellow]: {idle}")


# -- starting from pre-trained encoders --------------------------------------------------------------

REGULARISATION = ("dropout", "p_mask", "whole_modality_dropout")  # encoder keys that may differ from the stage's


def pretrained_encoders(cfg: ExperimentConfig, dims: tuple[int, ...]) -> tuple[Path, dict[str, torch.Tensor]] | None:
    """The encoder weights ``encoders.init_from`` names, keyed as in ``model.encoders``, and the run's absolute
    path; None when it is unset. The preflight loads it once, before any run directory is made; the Trainer takes it.

    The run must be a finished encoder pre-training run whose encoders fit this config and data: the same
    streams, the same encoder sections (regularisation aside: dropout, p_mask, whole_modality_dropout may change)
    and the same tensor shapes.

    Raises:
        RunError: one line naming ``encoders.init_from`` and what does not fit.
    """
    if not cfg.encoders.init_from:
        return None
    key = "encoders.init_from"
    run = RunDir(Path(cfg.encoders.init_from).expanduser().resolve())
    run.require(key)
    status = run.read_status()
    if status.get("kind") != ENCODER_STAGE:
        raise RunError(f"{key}: {run.root} is not an encoder pre-training run; make one with `dmpf pretrain-encoders`")
    if run.state is not RunState.FINISHED or not run.best.is_file():
        raise RunError(f"{key}: {run.root} is unfinished (status {status.get('status')!r}); run "
                       "`dmpf pretrain-encoders` to the end first")
    try:
        then = ExperimentConfig.model_validate(read_yaml(run.config))
    except (ConfigError, ValidationError):
        raise RunError(f"{key}: {run.config}: not a config this dmpf reads") from None
    from safetensors.torch import load_file

    try:
        state = {k.removeprefix("encoders."): v for k, v in load_file(str(run.best)).items() if k.startswith("encoders.")}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise RunError(f"{key}: {run.best}: damaged checkpoint ({type(exc).__name__})") from None

    with torch.device("meta"):  # shapes only
        expected = build_encoders(cfg, dims)
    here, there = list(expected), [s.name for s in STREAMS if any(k.startswith(f"{s.name}.") for k in state)]
    if here != there:
        here, there = (", ".join(STREAM_BY_NAME[n].display for n in names) or "no" for names in (here, there))
        raise RunError(f"{key}: {run.root} pre-trained the {there} encoders; this config has the {here} encoders "
                       "(the streams with fusion tokens)")
    for name in here:
        section = STREAM_BY_NAME[name].encoder_key
        now, before = (getattr(c.encoders, section).model_dump(exclude=set(REGULARISATION)) for c in (cfg, then))
        for field, value in now.items():
            if before.get(field) != value:
                raise RunError(f"{key}: {run.root} trained encoders.{section}.{field}={before.get(field)!r}; this "
                               f"config has {value!r}")
    shapes = {k: tuple(v.shape) for k, v in expected.state_dict().items()}
    dims_then = (f" (data dims {tuple(status['dims'])} there, {tuple(dims)} here)"
                 if status.get("dims") and list(status["dims"]) != list(dims) else "")
    for k in sorted(set(shapes) | set(state)):
        if k not in state or k not in shapes:
            raise RunError(f"{key}: {run.best} {'lacks' if k not in state else 'has an unexpected'} encoders.{k}: "
                           "an encoder of another kind or version")
        if tuple(state[k].shape) != shapes[k]:
            raise RunError(f"{key}: {run.best}: encoders.{k} has shape {tuple(state[k].shape)}, this config "
                           f"needs {shapes[k]}{dims_then}")
    return run.root, state
