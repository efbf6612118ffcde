"""The backbone contract: ``factory(cfg: BackboneConfig) -> BackboneArch``.

A backbone factory returns the shapes of a GPT-2 (:class:`~dmpf_cli.model.backbones.BackboneArch`: depth,
width, heads, positions, vocabulary, tokenizer) and where its weights come from (``hub_id``, ``random_init``,
``built_by_dmpf``), without loading anything: configs are validated against it in a blink. Names ending in
``-random`` are random-initialised models.
"""

from __future__ import annotations

from typing import Any

from ..config import BackboneConfig
from ..model.backbones import BackboneArch, backbone_shapes
from ..registry import Component
from .contract import Contract

backbone_contract = Contract("backbone", "factory(cfg: BackboneConfig) -> BackboneArch")

TOKENIZERS = ("gpt2-bpe", "bert-wordpiece", "own-bpe")  # the tokenizers dmpf can load (model/tokenizer.py)


def _arch(component: Component, **config: Any) -> BackboneArch:
    return component.factory(BackboneConfig(**({"name": component.name} | config)))


@backbone_contract.check
def shapes(component: Component, **config: Any) -> None:
    """a BackboneArch with layers, positions and a vocabulary, a width the heads divide, a known tokenizer"""
    registered = _arch(component, **config)
    resolved = backbone_shapes(BackboneConfig(**({"name": component.name} | config)))  # a local config.json's
    for what, arch in (("the factory", registered), ("backbone_shapes", resolved)):
        assert isinstance(arch, BackboneArch), f"{what} returned {type(arch).__name__}, expected a BackboneArch"
        assert arch.n_layer > 0, f"{what}: n_layer {arch.n_layer}, expected > 0"
        assert arch.n_head > 0 and arch.n_embd % arch.n_head == 0, \
            f"{what}: n_embd {arch.n_embd} is not divisible by n_head {arch.n_head}"
        assert arch.n_positions > 0 and arch.vocab_size > 0, \
            f"{what}: n_positions {arch.n_positions}, vocab_size {arch.vocab_size}: expected both > 0"
        assert arch.tokenizer in TOKENIZERS, \
            f"{what}: tokenizer '{arch.tokenizer}', expected one of: {', '.join(TOKENIZERS)}"


@backbone_contract.check
def weights_source(component: Component, **config: Any) -> None:
    """random_init exactly for names ending in -random; a hub_id exactly for pretrained weights dmpf did not build"""
    arch = _arch(component, **config)
    name = component.name
    assert arch.random_init == name.endswith("-random"), \
        f"random_init is {arch.random_init}, but the name {'ends' if name.endswith('-random') else 'does not end'} " \
        "in -random"
    assert (arch.hub_id is None) == (arch.random_init or arch.built_by_dmpf), \
        f"hub_id {arch.hub_id!r} with random_init {arch.random_init}, built_by_dmpf {arch.built_by_dmpf}: a " \
        "pretrained backbone names its hub id, a random or dmpf-built one does not"
    assert arch.label == ("random weights" if arch.random_init else
                          "pretrained by dmpf" if arch.built_by_dmpf else "pretrained"), f"label {arch.label!r}"


@backbone_contract.check
def resolves(component: Component, **config: Any) -> None:
    """backbone_shapes (what configs are checked with) resolves it, and two calls agree"""
    cfg = BackboneConfig(**({"name": component.name} | config))
    first, second = backbone_shapes(cfg), backbone_shapes(cfg)
    assert isinstance(first, BackboneArch), f"backbone_shapes returned {type(first).__name__}"
    assert first == second, f"two look-ups differ: {first} != {second}"
