"""The mask-preset contract: ``factory() -> MaskPreset``.

A preset says which segment of the fused sequence (text, then the A, V and AV fusion tokens) sees which:
``rules[(query, key)]`` is ``"causal"`` or ``"all"``, absent pairs ``"none"``. Text sees only text, causally
(the frozen LM's own stream is never touched by the fusion tokens), and every segment sees itself.
"""

from __future__ import annotations

from typing import Any

from ..model.mask import SEGMENTS, FusionMask, MaskPreset
from ..registry import Component
from .contract import Contract

mask_contract = Contract("mask", "factory() -> MaskPreset")


@mask_contract.check
def preset(component: Component, **config: Any) -> None:  # a preset takes no config
    """a MaskPreset with the registered name; text sees only text, causally; every segment sees itself"""
    spec = component.factory()
    assert isinstance(spec, MaskPreset), f"the factory returned {type(spec).__name__}, expected a MaskPreset"
    assert spec.name == component.name, f"the preset is named '{spec.name}', registered as '{component.name}'"
    text, others = SEGMENTS[0], SEGMENTS[1:]
    assert spec.relation(text, text) == "causal", f"{text} sees {text} '{spec.relation(text, text)}', expected causal"
    seen = [k for k in others if spec.relation(text, k) != "none"]
    assert not seen, f"{text} sees {', '.join(seen)}: text must see only text"
    blind = [s for s in SEGMENTS if spec.relation(s, s) == "none"]
    assert not blind, f"{', '.join(blind)} does not see itself"


@mask_contract.check
def renders(component: Component, **config: Any) -> None:
    """the mask it gives, with and without text padding, leaves no query row without a key to attend to"""
    import torch

    mask = FusionMask(6, 2, 3, 2, preset=component.name)
    allowed = mask.allowed()
    assert allowed.any(dim=-1).all(), "a query row is fully masked"
    text_padding = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [False] * 6])
    padded = mask.with_padding(text_padding).allowed()
    assert padded.any(dim=-1).all(), "with text padding, a query row is fully masked"
