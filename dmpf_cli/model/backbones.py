"""Backbone catalogue: the GPT-2 family the fused language model can sit on (design.md §3).

Each registered backbone factory returns a :class:`BackboneArch`: the shapes a config is checked
against (depth for the MM-block positions, positions for text + fusion tokens) and where the
weights come from. :func:`backbone_shapes` reads nothing but a local ``config.json`` and this module
imports neither torch nor transformers, so configs validate in a blink.

Where a pretrained backbone's files are is :mod:`dmpf_cli.model.backbone_files`; building the frozen
model is :mod:`dmpf_cli.model.backbone_loader`, its tokenizer :mod:`dmpf_cli.model.tokenizer`.

Names ending in ``-random`` are random-initialised models in the stated shapes; they serve tests,
the embedded default and benchmarks, and are labelled as random wherever results are printed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import BackboneConfig
from ..registry import get, register


@dataclass(frozen=True)
class BackboneArch:
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    vocab_size: int
    tokenizer: str  # "gpt2-bpe" (GPT-2's byte-level BPE), "bert-wordpiece" (the Chinese GPT-2) or "own-bpe"
    hub_id: str | None  # where the pretrained weights live on the hub; None for random-init configs
    random_init: bool
    built_by_dmpf: bool = False  # pretrained by `dmpf pretrain-lm` into the model cache (the demo backbone)

    @property
    def label(self) -> str:
        if self.random_init:
            return "random weights"
        return "pretrained by dmpf" if self.built_by_dmpf else "pretrained"


def models_home() -> Path:
    """Where dmpf keeps the language models it pretrains: ``$DMPF_MODEL_DIR``, else ``~/.cache/dmpf/models``."""
    return Path(os.environ.get("DMPF_MODEL_DIR") or Path.home() / ".cache" / "dmpf" / "models").expanduser()


def demo_lm_dir(size: str = "small") -> Path:
    """The directory of the demo backbone ``gpt2-demo`` (size ``small``) or of another size of it."""
    return models_home() / ("gpt2-demo" if size == "small" else f"gpt2-demo-{size}")


def registered_shapes(cfg: BackboneConfig) -> BackboneArch:
    """The registered shapes of ``cfg.name``, ignoring any local ``config.json``."""
    return get("backbone", cfg.name).factory(cfg)


def backbone_shapes(cfg: BackboneConfig) -> BackboneArch:
    """The architecture ``cfg`` selects; a local ``path`` (or a built demo LM) with a ``config.json`` overrides
    the catalogue shapes."""
    arch = registered_shapes(cfg)
    directory = Path(cfg.path).expanduser() if cfg.path else demo_lm_dir() if arch.built_by_dmpf else None
    if directory is not None and not arch.random_init:
        config_file = directory / "config.json"
        if config_file.is_file():
            try:
                raw = json.loads(config_file.read_text(encoding="utf-8"))
                arch = replace(
                    arch,
                    n_layer=int(raw["n_layer"]),
                    n_embd=int(raw["n_embd"]),
                    n_head=int(raw["n_head"]),
                    n_positions=int(raw.get("n_positions", arch.n_positions)),
                    vocab_size=int(raw.get("vocab_size", arch.vocab_size)),
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{config_file}: not a readable GPT-2 config.json ({type(exc).__name__}: {exc})") from None
    return arch


def _gpt2(n_layer: int, n_embd: int, n_head: int, hub_id: str | None, *, n_positions: int = 1024) -> BackboneArch:
    return BackboneArch(n_layer, n_embd, n_head, n_positions, 50257, "gpt2-bpe", hub_id, hub_id is None)


@register("backbone", "gpt2")
def gpt2(cfg: BackboneConfig) -> BackboneArch:
    """GPT-2 small (124M, 12 layers, width 768), pretrained."""
    return _gpt2(12, 768, 12, "gpt2")


@register("backbone", "gpt2-medium")
def gpt2_medium(cfg: BackboneConfig) -> BackboneArch:
    """GPT-2 medium (355M, 24 layers, width 1024), pretrained."""
    return _gpt2(24, 1024, 16, "gpt2-medium")


@register("backbone", "gpt2-large")
def gpt2_large(cfg: BackboneConfig) -> BackboneArch:
    """GPT-2 large (774M, 36 layers, width 1280), pretrained: the MOSEI backbone."""
    return _gpt2(36, 1280, 20, "gpt2-large")


@register("backbone", "gpt2-xl")
def gpt2_xl(cfg: BackboneConfig) -> BackboneArch:
    """GPT-2 XL (1.5B, 48 layers, width 1600), pretrained."""
    return _gpt2(48, 1600, 25, "gpt2-xl")


@register("backbone", "gpt2-chinese")
def gpt2_chinese(cfg: BackboneConfig) -> BackboneArch:
    """Chinese GPT-2 base (12 layers, width 768, BERT WordPiece tokenizer): the SIMS backbone."""
    return BackboneArch(12, 768, 12, 1024, 21128, "bert-wordpiece", "uer/gpt2-chinese-cluecorpussmall", False)


@register("backbone", "gpt2-demo")
def gpt2_demo(cfg: BackboneConfig) -> BackboneArch:
    """Small GPT-2 (4 layers, width 64) that dmpf pretrains on generated reviews: the embedded default."""
    return BackboneArch(4, 64, 4, 64, 1024, "own-bpe", None, False, built_by_dmpf=True)


@register("backbone", "gpt2-tiny-random")
def gpt2_tiny_random(cfg: BackboneConfig) -> BackboneArch:
    """Tiny random-init GPT-2 (4 layers, width 64): tests."""
    return _gpt2(4, 64, 4, None, n_positions=256)


@register("backbone", "gpt2-random")
def gpt2_random(cfg: BackboneConfig) -> BackboneArch:
    """Random-init GPT-2 in the real gpt2 (124M) shapes: benchmarks."""
    return _gpt2(12, 768, 12, None)


@register("backbone", "gpt2-large-random")
def gpt2_large_random(cfg: BackboneConfig) -> BackboneArch:
    """Random-init GPT-2 in the real gpt2-large shapes: benchmarks."""
    return _gpt2(36, 1280, 20, None)
