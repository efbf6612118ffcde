"""Typed experiment configuration: pydantic models, YAML presets and ``key.sub=value`` overrides.

Every model forbids unknown keys, so a typo in a YAML file is an error that names the key. The
defaults of the models are the embedded default experiment (``configs/default.yaml``): a generated
dataset and a tiny random GPT-2. Files and override values are read by :mod:`dmpf_cli.yamlio` (YAML 1.2's
numbers: ``3e-4`` is a float), and ``to_yaml`` writes through it. :func:`load_config` checks the tree through
:mod:`dmpf_cli.validation` and raises :class:`ConfigError`: one line per problem, each naming the file (or the
command-line override), the key path and what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from . import yamlio
from .errors import did_you_mean
from .streams import DATASETS, MODALITIES, STREAMS, TEXT
from .validation import Invalid, Slug, apply_overrides, validate

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
NonNegFloat = Annotated[float, Field(ge=0.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
# A training seed. The trainer seeds torch with it and with seed * 100_003 + epoch (the batch order, a signed
# 64-bit generator seed); numpy's legacy seeds stop at 2**32 - 1: that range fits all of them, and is one rule for
# the config, a grid file, a space file and --seeds.
MAX_SEED = 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
SEED_RANGE = f"from 0 to {MAX_SEED}"


def _distinct(values: list[int]) -> list[int]:
    if len(set(values)) != len(values):
        raise ValueError(f"expected distinct seeds, got {values}: a seed given twice would be one run")
    return values


Seeds = Annotated[list[Seed], AfterValidator(_distinct)]


def is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED


def are_seeds(values: Any) -> bool:
    """Whether ``values`` is a non-empty list of distinct seeds."""
    return (isinstance(values, list) and bool(values) and all(is_seed(v) for v in values)
            and len(set(values)) == len(values))


class Strict(BaseModel):
    # no key of an experiment takes an infinity or a NaN (YAML's .inf, .nan): a learning rate of .inf trains garbage
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(Strict):
    """Which dataset, where its prepared files live, and how text is cut."""

    dataset: Literal[tuple(DATASETS)] = "synthetic"  # type: ignore[valid-type]
    path: str | None = Field(None, description="prepared data directory (dmpf prepare); null: the default location")
    synthetic_size: Literal["tiny", "small", "mosei-like"] = "small"
    synthetic_seed: NonNegInt = 0
    text_len: PosInt = 24
    num_workers: NonNegInt = 0


# encoder keys renamed since an earlier release: old name -> new name (configs that use the old one still load)
RENAMED_ENCODER_KEYS = {"modality_dropout": "whole_modality_dropout"}


class EncoderConfig(Strict):
    """One modality encoder (design.md §2)."""

    name: str = "transformer"
    d: PosInt = 32
    heads: PosInt = 4
    layers: NonNegInt = 2
    max_len: PosInt = 16
    dropout: Probability = 0.0
    p_mask: Probability = Field(0.0, description="time-step dropout in training: each time step of each branch is "
                                "zeroed with this probability (after the positions, before the transformer); the "
                                "reference's AV encoder zeroes its branches' steps with 0.1")
    input_norm: bool = True
    whole_modality_dropout: Probability = Field(
        0.0, description="an encoder with several inputs, in training: per sample, with this probability one whole "
        "input modality (chosen at random, never all) is zeroed; not in the reference")
    fuse_norm: bool = Field(True, description="a LayerNorm after the fuse layer of an encoder with several inputs "
                            "(the reference's AV encoder has one)")
    options: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for a plugin")

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        """Read a config written before a key's rename (a run directory's config.yaml, an old grid file)."""
        if isinstance(data, dict):
            for old, new in RENAMED_ENCODER_KEYS.items():
                if old in data:  # an override of the old name replaces the file's value of the new one
                    data = {k: v for k, v in data.items() if k != new}
                    data = {(new if k == old else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "EncoderConfig":
        if self.d % self.heads:
            raise ValueError(f"d={self.d} must be divisible by heads={self.heads}")
        return self


# One encoder per stream (streams.STREAMS): encoders.<encoder_key>; by default a bimodal encoder drops a whole
# input modality with p=0.1 in training (the embedded default's choice, measured in configs/default.yaml; the
# reference drops time steps instead: p_mask). init_from: the encoders of an encoder pre-training run (the
# reference's fusion curriculum) to start from; null: random init.
EncodersConfig = create_model(
    "EncodersConfig", __base__=Strict,
    **{s.encoder_key: (EncoderConfig, EncoderConfig(whole_modality_dropout=0.1 if len(s.inputs) > 1 else 0.0))
       for s in STREAMS},
    init_from=(Optional[str], None),
)


class BackboneConfig(Strict):
    """The frozen language model. ``path``: a local directory, or a hub id resolved in the local cache only."""

    name: str = "gpt2-demo"
    path: str | None = None
    # GPT-2's own dropout (after the embeddings, on the attention weights, on each residual branch) while
    # training; the reference trains with 0.1 (the mosei and sims presets set it). The weights stay frozen.
    dropout: Probability = 0.0


# Learnable fusion tokens appended after the text, per stream (fusion.<tokens_key>; 0 removes the
# stream), and the attention mask between them (design.md §3-§4).
FusionConfig = create_model(
    "FusionConfig", __base__=Strict,
    **{s.tokens_key: (NonNegInt, 4) for s in STREAMS},
    mask=(str, "avseesall"),
)


class MMConfig(Strict):
    """Gated cross-attention MM blocks inserted after the listed (0-based) backbone blocks."""

    layers: list[NonNegInt] = Field(default_factory=lambda: [1, 3])
    gate: Literal["sigmoid", "tanh"] = "sigmoid"
    dropout: Probability = 0.1
    # where the gated FFN runs: "sequence" (design.md §3, text positions included) or "tokens" (the fusion
    # tokens only, so the text stream stays exactly the pretrained LM's, as design.md §4 describes it)
    ffn: Literal["sequence", "tokens"] = "sequence"

    @field_validator("layers")
    @classmethod
    def _unique(cls, layers: list[int]) -> list[int]:
        if len(set(layers)) != len(layers):
            raise ValueError("must not repeat a block")
        return layers


class HeadConfig(Strict):
    """The task head that fuses the seven representations (design.md §5)."""

    name: str = "self-attention"
    d: PosInt = 64
    heads: PosInt = 4
    dropout: Probability = 0.0
    options: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for a plugin")


# Weights of the L1 terms (design.md §5): task + one per stream's encoder (loss.<prefix>) + text + fusion
# tokens. unimodal_labels — true: the text and single-modality terms regress the dataset's unimodal
# labels (CH-SIMS T/A/V); false (design.md §5 as written): every term regresses the sentiment label. The auxiliary
# weights default to the embedded default's 0.1 (measured: configs/default.yaml); the presets give the paper's.
LossConfig = create_model(
    "LossConfig", __base__=Strict,
    task=(NonNegFloat, 1.0),
    **{s.prefix: (NonNegFloat, 0.1) for s in STREAMS},
    **{TEXT.loss_key: (NonNegFloat, 0.1)},
    tokens=(NonNegFloat, 0.1),
    unimodal_labels=(bool, False),
    # γ of the causal-LM term (design.md §5): next-token cross-entropy of the frozen LM's own (tied) head on the text
    # positions, in training; it trains what runs over the text inside the LM (the MM blocks' FFN). 0: off.
    clm=(NonNegFloat, 0.0),
)


class AugmentConfig(Strict):
    """SoftPerm, the reference's embedding augmentation (training only): per sample, a fraction of the feature
    dimensions of each listed input — ``softperm`` + |N(0, softperm_std)|, at most 1 — takes its values from
    another real time step of the same sample, the same shuffle for every such dimension. 0: off."""

    softperm: Probability = 0.0
    softperm_std: NonNegFloat = 0.05
    softperm_inputs: list[Literal[(TEXT.name, *(m.key for m in MODALITIES))]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: [TEXT.name, *(m.key for m in MODALITIES)],
        description="text (its token embeddings, before the frozen LM) and the modalities' frames")


class OptimizerConfig(Strict):
    """AdamW with two learning-rate groups (the LM side, the encoders). dmpf's choices are the defaults; the
    reference's are ``decay: all-but-biases``, ``clip_by: value``, ``clip_side: lm``, ``grad_clip: 5``."""

    name: Literal["adamw"] = "adamw"
    lr_lm: PosFloat = 1e-3
    lr_encoders: PosFloat = 1e-3
    betas: tuple[Probability, Probability] = (0.9, 0.95)
    eps: PosFloat = 1e-8
    weight_decay: NonNegFloat = 0.1
    decay: Literal["matrices", "all-but-biases"] = Field(
        "matrices", description="what weight decay acts on: weight matrices only (not biases, norms, gates, fusion "
        "tokens, type embeddings), or every parameter but biases (the reference)")
    grad_clip: PosFloat | None = Field(1.0, description="the clipping threshold; null: no clipping")
    clip_by: Literal["norm", "value"] = Field(
        "norm", description="clip the global gradient norm, or each gradient element (the reference)")
    clip_side: Literal["both", "lm"] = Field(
        "both", description="which learning-rate groups are clipped: both, or the LM side only (the reference)")


class ScheduleConfig(Strict):
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak."""

    kind: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: NonNegFloat = 1.0
    min_lr_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    warmup_from_zero: bool = Field(
        False, description="the warm-up's first optimizer step runs at rate 0 (the reference); false: at 1/warm-up "
        "steps of the peak, reaching the peak on the warm-up's last step")
    cosine_extra_epochs: NonNegFloat = Field(
        0.0, description="lay the cosine out this many epochs past the run's last, so it ends above min_lr_ratio "
        "(the reference: 1; 10 epochs then end at 0.025x the peak, 20 at 0.006x)")


class TrainingConfig(Strict):
    batch_size: PosInt = 32
    grad_accum: PosInt = 1
    max_epochs: PosInt = 7
    patience: PosInt = 3
    seeds: Seeds = Field(default_factory=lambda: [1111], min_length=1)
    precision: Literal["fp32", "bf16"] = "fp32"
    attention: Literal["auto", "xformers", "sdpa", "eager"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: Literal["off", "default", "reduce-overhead"] = Field(
        "off", description="torch.compile the model for training and evaluation; reduce-overhead = CUDA graphs"
    )
    log_every: PosInt = Field(1, description="optimizer steps per metrics.jsonl record (each record syncs with the device)")
    checkpoint_every: NonNegInt = Field(
        50, description="also save the resumable checkpoint every N optimizer steps (0: only at epoch ends)"
    )
    loggers: list[str] = Field(
        default_factory=lambda: ["jsonl"],
        description="metric loggers (registry kind 'logger'): jsonl (metrics.jsonl; always on, listed or not), "
        "tensorboard (RUN/tensorboard), wandb (offline, RUN/wandb)",
    )

    @field_validator("loggers")
    @classmethod
    def _each_logger_once(cls, loggers: list[str]) -> list[str]:
        if len(set(loggers)) != len(loggers):
            raise ValueError("must not repeat a logger")
        return loggers


class ExperimentConfig(Strict):
    """A whole experiment. The field defaults are the embedded default (configs/default.yaml)."""

    name: Slug = Field("default", description="names the run directory (runs/NAME-DATE-TIME)")
    description: str = "Generated synthetic dataset and a small GPT-2 that dmpf pretrained itself (the demo)"
    data: DataConfig = DataConfig()
    encoders: EncodersConfig = EncodersConfig()
    backbone: BackboneConfig = BackboneConfig()
    fusion: FusionConfig = FusionConfig()
    mm: MMConfig = MMConfig()
    head: HeadConfig = HeadConfig()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    training: TrainingConfig = TrainingConfig()


# --------------------------------------------------------------------------------------------
# Loading


class ConfigError(Invalid, ValueError):
    """A config that cannot be used. ``str(err)`` is one line per problem, ready to print."""


def _config_dir() -> Path:
    here = Path(__file__).resolve().parent
    checkout = here.parent / "configs"  # a source checkout or an editable install
    return checkout if checkout.is_dir() else here / "configs"  # a wheel install


CONFIG_DIR = _config_dir()


def preset_path(name: str, option: str = "--dataset") -> Path:
    """``configs/NAME.yaml``; an unknown name fails (naming ``option``) with the presets that exist."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError([f"{option}: no preset '{name}' in {CONFIG_DIR}: {_close_presets(name)}"])
    return path


def _close_presets(name: str) -> str:
    known = preset_names()
    return f"{did_you_mean(name, known)}available: {', '.join(known)}"


_PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def config_file(dataset: str | None = None, config: Path | str | None = None) -> Path:
    """The YAML file a command reads: ``--dataset NAME`` (a preset), ``--config`` (a file, or a preset's name
    where no such file exists, as ``tune run --config`` takes both), or the embedded default."""
    if dataset and config:
        raise ConfigError(["--dataset and --config: give one of them, not both"])
    if config is None:
        return preset_path(dataset or "default")
    path = Path(config)
    if path.is_file() or not _PRESET_NAME.fullmatch(str(config)):
        return path  # read_yaml says what is wrong with a path that is not a file
    if (CONFIG_DIR / f"{config}.yaml").is_file():
        return CONFIG_DIR / f"{config}.yaml"
    raise ConfigError([f"{path}: no such config file or preset: {_close_presets(str(config))}"])


def base_config(named_in: Path, base: str) -> Path:
    """The base config a grid file or a sweep space file names, by one rule for both: a config file beside the file
    that names it, else a file from the working directory, else a preset's name. A name that is not found is a
    :class:`ConfigError` with the presets close to it; a file that is not found is the path beside the naming file
    (reading it says so)."""
    given = Path(base).expanduser()
    beside = Path(named_in).parent / given
    if beside.is_file():
        return beside.resolve()
    if given.is_file():
        return given.resolve()
    if given.suffix in (".yaml", ".yml") or "/" in base:
        return beside
    return config_file(config=base)


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def copy_preset(name: str, destination: Path) -> Path:
    """Copy ``configs/NAME.yaml``, comments and all, to ``destination`` for editing (``dmpf config cp``).

    A directory receives ``NAME.yaml``; a name without a suffix gets ``.yaml``. An existing file is never
    replaced. Returns the file written.
    """
    source = preset_path(name, option="NAME")
    destination = Path(destination).expanduser()
    if destination.is_dir():
        destination = destination / source.name
    elif not destination.suffix:
        destination = destination.with_suffix(".yaml")
    if destination.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError([f"FILE: {destination}: expected a .yaml file name"])
    if destination.exists():
        raise ConfigError([f"FILE: {destination} exists; dmpf config cp never replaces a file: choose another name"])
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open(destination, "x", encoding="utf-8") as f:
            f.write(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"FILE: {destination}: cannot write ({exc.strerror or exc})"]) from None
    return destination


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; every failure is a one-line :class:`ConfigError` naming the file."""
    try:
        data, _ = yamlio.read(path, "config file")
    except yamlio.YamlError as exc:
        raise ConfigError([str(exc)]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}"])
    return data


def load_config(dataset: str | None = None, config: Path | str | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Resolve a config: a preset (``--dataset``) or a file or preset (``--config``), then the overrides.

    With neither, the embedded default (``configs/default.yaml``). The schema only: the checks of the components
    (registry names, the backbone's files and shapes) are :func:`dmpf_cli.recipes.preflight.resolve_config`'s.
    """
    path = config_file(dataset, config)
    source = str(path)
    tree = read_yaml(path)

    origins = apply_overrides(tree, overrides, error=ConfigError)
    return validate(ExperimentConfig, tree, source, origins, error=ConfigError)


def selected_components(cfg: ExperimentConfig) -> list[tuple[str, str, str]]:
    """(key, registry kind, name) of every registered component ``cfg`` selects."""
    found = [(f"encoders.{s.encoder_key}.name", "encoder", getattr(cfg.encoders, s.encoder_key).name) for s in STREAMS]
    found += [("backbone.name", "backbone", cfg.backbone.name), ("head.name", "head", cfg.head.name),
              ("fusion.mask", "mask", cfg.fusion.mask)]
    return found + [("training.loggers", "logger", name) for name in cfg.training.loggers]


def clm_idle(cfg: ExperimentConfig) -> str | None:
    """Why ``loss.clm`` > 0 trains nothing in ``cfg`` (the text stream stays the frozen LM's, so the term is a
    constant); None where it trains what runs over the text, or is off."""
    if cfg.loss.clm <= 0:
        return None
    if not any(token_counts(cfg).values()) or not cfg.mm.layers:
        why = "there are no MM blocks (no stream has fusion tokens, or mm.layers is empty)"
    elif cfg.mm.ffn == "tokens":
        why = "mm.ffn=tokens keeps the text stream the frozen LM's"
    else:
        return None
    return f"loss.clm={cfg.loss.clm:g} trains nothing: {why}; the term is computed and logged, a constant"


def token_counts(cfg: ExperimentConfig) -> dict[str, int]:
    """Fusion tokens per stream (stream name -> fusion.<tokens_key>), in sequence order."""
    return {s.name: getattr(cfg.fusion, s.tokens_key) for s in STREAMS}


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML, in field order."""
    return yamlio.dump(cfg.model_dump(mode="json"))
