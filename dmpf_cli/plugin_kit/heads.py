"""The head contract: ``factory(cfg: HeadConfig, in_dims: dict[str, int]) -> nn.Module``.

``in_dims`` names the representations present (``a_tok v_tok av_tok h_text a_enc v_enc av_enc``, an ablated
stream's omitted) and their widths; ``forward(reps: dict[str, Tensor]) -> Tensor`` maps ``(B, width)``
inputs to ``(B,)`` float32 scores. The ``*_enc`` representations are time-means of the encoders' outputs, so a
sample whose stream was empty gives all zeros there.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from ..config import HeadConfig
from ..errors import DmpfError
from ..registry import Component
from ..streams import REPRESENTATIONS
from .contract import Contract, assert_refused
from .encoders import assert_finite_grads

head_contract = Contract("head", "factory(cfg: HeadConfig, in_dims: dict[str, int]) -> nn.Module")

# the seven representations with their widths in a small model (the token summaries and the LM's last state share
# the LM width; the encoders' time-means have their encoders' widths)
HEAD_DIMS: dict[str, int] = dict(zip(REPRESENTATIONS, (24, 24, 24, 24, 8, 12, 8)))
BATCH = 5


def head_inputs(dims: dict[str, int], batch: int = BATCH) -> dict:
    """Random representations of ``dims``' widths; the ``*_enc`` ones of sample 0 are zero (an empty stream)."""
    reps = {name: torch.randn(batch, width) for name, width in dims.items()}
    for name in reps:
        if name.endswith("_enc"):
            reps[name][0] = 0.0  # the time-mean of a length-0 sample
    return reps


def build_head(component: Component, dims: dict[str, int], seed: int = 0, **kw: Any):
    """``component`` built from a small config (``kw`` overrides its fields), its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return component.factory(HeadConfig(**(dict(name=component.name, d=16, heads=4) | kw)), dims)


@head_contract.check
def shapes(component: Component, **config: Any) -> None:
    """the output is (B,) float32 and finite, in train and eval"""
    head = build_head(component, HEAD_DIMS, **config)
    for mode in ("train", "eval"):
        getattr(head, mode)()
        out = head(head_inputs(HEAD_DIMS))
        assert out.shape == (BATCH,), f"{mode}: output shape {tuple(out.shape)}, expected ({BATCH},)"
        assert out.dtype == torch.float32, f"{mode}: output dtype {out.dtype}, expected torch.float32"
        assert torch.isfinite(out).all(), f"{mode}: non-finite output"


@head_contract.check
def backward(component: Component, **config: Any) -> None:
    """every trainable parameter gets a finite gradient"""
    head = build_head(component, HEAD_DIMS, **config).train()
    out = head(head_inputs(HEAD_DIMS))
    (out * torch.randn_like(out)).sum().backward()
    assert_finite_grads(head)


@head_contract.check
def zero_representations(component: Component, **config: Any) -> None:
    """all-zero representations give a finite output, in train and eval"""
    head = build_head(component, HEAD_DIMS, **config)
    zeros = {name: torch.zeros(2, width) for name, width in HEAD_DIMS.items()}
    for mode in ("train", "eval"):
        getattr(head, mode)()
        assert torch.isfinite(head(zeros)).all(), f"{mode}: non-finite output on all-zero representations"


@head_contract.check
def eval_deterministic(component: Component, **config: Any) -> None:
    """in eval mode the same input gives exactly the same output"""
    head = build_head(component, HEAD_DIMS, **config).eval()
    reps = head_inputs(HEAD_DIMS)
    with torch.no_grad():
        assert torch.equal(head(reps), head(reps)), "two eval passes differ"


@head_contract.check
def seeded_build(component: Component, **config: Any) -> None:
    """built twice from the same torch seed, the weights are identical (runs are reproducible by seed)"""
    first = build_head(component, HEAD_DIMS, seed=3, **config).state_dict()
    second = build_head(component, HEAD_DIMS, seed=3, **config).state_dict()
    assert first.keys() == second.keys(), "the state_dict keys differ between two builds"
    differ = [k for k in first if not torch.equal(first[k], second[k])]
    assert not differ, f"{differ[0]} differs between two builds from one seed"


@head_contract.check
def state_dict_round_trip(component: Component, **config: Any) -> None:
    """a state_dict loaded into a fresh build gives exactly the same outputs (BatchNorm statistics included)"""
    reps = head_inputs(HEAD_DIMS)
    src = build_head(component, HEAD_DIMS, seed=0, **config).train()
    src(reps)  # updates BatchNorm running statistics, which must travel too
    dst = build_head(component, HEAD_DIMS, seed=1, **config)
    dst.load_state_dict(src.state_dict())
    src.eval(), dst.eval()
    with torch.no_grad():
        torch.testing.assert_close(dst(reps), src(reps), rtol=0, atol=0)


@head_contract.check
def every_ablation(component: Component, **config: Any) -> None:
    """any non-empty subset of the seven representations builds and gives (B,) finite scores"""
    for k in range(1, len(REPRESENTATIONS) + 1):
        for names in itertools.combinations(REPRESENTATIONS, k):
            dims = {name: HEAD_DIMS[name] for name in names}
            head = build_head(component, dims, **config)
            for mode in ("train", "eval"):
                getattr(head, mode)()
                out = head(head_inputs(dims, batch=3))
                assert out.shape == (3,) and torch.isfinite(out).all(), \
                    f"with only {', '.join(names)} ({mode}): output {tuple(out.shape)}, expected (3,) finite"


@head_contract.check
def bad_construction(component: Component, **config: Any) -> None:
    """an unknown key in options, and no representations at all, are refused in one line (ValueError or DmpfError)"""
    assert_refused(lambda: build_head(component, HEAD_DIMS, **(config | {"options": {"unknown_knob": 1}})),
                         "unknown_knob", "options.unknown_knob")
    try:
        build_head(component, {}, **config)
    except Exception as exc:
        assert "\n" not in str(exc).strip(), f"no representations: refused in several lines: {str(exc)!r}"
        assert isinstance(exc, (ValueError, DmpfError)), \
            f"no representations: refused with {type(exc).__name__}, expected a ValueError or DmpfError"
    else:
        raise AssertionError("no representations (in_dims = {}) was accepted: expected a ValueError or DmpfError")
