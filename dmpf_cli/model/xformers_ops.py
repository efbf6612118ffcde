"""xformers' memory-efficient attention as torch custom ops (``dmpf::xformers_attention`` and its
``_backward`` and ``_inference`` variants), each with a shape (fake) function, and an autograd formula.

Why custom ops: ``torch.compile`` then sees one opaque node per attention call instead of breaking its
graph at xformers' Python autograd function (whose backward has no usable fake kernel in torch 2.13).
The ops take the bias *storage*, (b, 1, Lq, Lk rounded up to 8) as
:func:`~dmpf_cli.model.attention.padded_bias` allocates it, and slice and broadcast it inside, so whatever
layout the compiler picks for that buffer, xformers gets a row stride that is a multiple of 8 and no copy
over heads. xformers itself is imported inside the op bodies only, i.e. when a CUDA run calls them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LSE_ALIGN = 32  # the log-sum-exp's query dimension is allocated padded to this (xformers and torch alike)


def xformers_bias(storage: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The (B, H, Lq, Lk) bias view xformers takes, from the padded storage (b, 1, Lq, ≥Lk): no copy.

    A storage in another dtype than q (xformers does not cast) is converted whole, which keeps the
    padded row stride.
    """
    if storage.dtype != q.dtype:
        storage = storage.to(q.dtype)
    B, Lq, H, _ = q.shape
    return storage[..., : k.shape[1]].expand(B, H, Lq, k.shape[1])


def _lse_width(queries: int) -> int:
    return -(-queries // LSE_ALIGN) * LSE_ALIGN


def lse_padded(lse: torch.Tensor, queries: int) -> torch.Tensor:
    """The log-sum-exp as (B, H, Lq rounded up to LSE_ALIGN), padded with +inf, whatever the kernel returned."""
    width = _lse_width(queries)
    lse = lse[..., :queries].float()
    return F.pad(lse, (0, width - queries), value=math.inf).contiguous()


@torch.library.custom_op("dmpf::xformers_attention", mutates_args=())
def _xformers_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward for training: (out (B, Lq, H, Dv), lse (B, H, Lq padded to 32) float32)."""
    from xformers.ops import fmha

    out, lse = fmha.memory_efficient_attention_forward_requires_grad(
        q, k, v, attn_bias=xformers_bias(bias, q, k), scale=scale)
    return out.contiguous(), lse_padded(lse, q.shape[1])


@_xformers_attention.register_fake
def _(q, k, v, bias, scale):
    B, Lq, H, _ = q.shape
    return q.new_empty(B, Lq, H, v.shape[-1]), q.new_empty(B, H, _lse_width(Lq), dtype=torch.float32)


@torch.library.custom_op("dmpf::xformers_attention_backward", mutates_args=())
def _xformers_attention_backward(
    grad: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    bias: torch.Tensor, scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), each contiguous in its input's shape."""
    from xformers.ops import fmha

    dq, dk, dv = fmha.memory_efficient_attention_backward(
        grad.contiguous(), out, lse, q, k, v, attn_bias=xformers_bias(bias, q, k), scale=scale)
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


@_xformers_attention_backward.register_fake
def _(grad, out, lse, q, k, v, bias, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, bias, scale = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, bias, out, lse)
    ctx.scale = scale


def _backward(ctx, grad_out, _grad_lse):
    q, k, v, bias, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.dmpf.xformers_attention_backward(grad_out, out, lse, q, k, v, bias, ctx.scale)
    return dq, dk, dv, None, None


_xformers_attention.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("dmpf::xformers_attention_inference", mutates_args=())
def _xformers_attention_inference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float
) -> torch.Tensor:
    """Forward only (no log-sum-exp): evaluation and prediction."""
    from xformers.ops import fmha

    return fmha.memory_efficient_attention_forward(q, k, v, attn_bias=xformers_bias(bias, q, k), scale=scale).contiguous()


@_xformers_attention_inference.register_fake
def _(q, k, v, bias, scale):
    B, Lq, H, _ = q.shape
    return q.new_empty(B, Lq, H, v.shape[-1])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """Masked attention through xformers: q (B, Lq, H, D), k and v (B, Lk, H, D), the bias storage → (B, Lq, H, D).

    The training op (it keeps the log-sum-exp for the backward) where a gradient is wanted, else the
    forward-only one.
    """
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return torch.ops.dmpf.xformers_attention(q, k, v, bias, scale)[0]
    return torch.ops.dmpf.xformers_attention_inference(q, k, v, bias, scale)
