"""Attention backends: ``xformers`` (CUDA), ``sdpa`` (torch, any device), ``eager`` (the readable reference).

Every backend computes ``softmax(q·kᵀ·scale + mask)·v`` from the same boolean mask (True = may
attend). :func:`prepare_mask` renders that mask once per forward pass in the form the backend takes
— a bool mask for SDPA and eager, a dense additive bias (key dimension allocated padded to a multiple
of 8) for xformers — and :func:`attend` runs the backend. q, k, v are laid out (B, L, H, D), the layout
xformers takes directly; SDPA and eager transpose to (B, H, L, D).

``auto`` picks xformers where CUDA and a working xformers are present, else SDPA. xformers is
imported only when a CUDA device asks for it: on a CPU machine it is never imported (its import logs
a CUDA warning there, and it has no CPU kernels).

xformers runs through three torch custom ops (``dmpf::xformers_attention`` and its ``_backward`` and
``_inference`` variants) with shape functions and an autograd formula of their own, so ``torch.compile``
sees one opaque node per attention call instead of breaking its graph at xformers' Python autograd
function (whose backward has no usable fake kernel in torch 2.13). The ops take the bias *storage*,
(b, 1, Lq, Lk rounded up to 8), and slice and broadcast it inside, so whatever layout the compiler
picks for that buffer, xformers gets a row stride that is a multiple of 8 and no copy over heads.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import DmpfError
from .mask import padded_bias

BACKENDS = ("auto", "xformers", "sdpa", "eager")


class BackendError(DmpfError):
    """An attention backend that cannot run here; the message says why."""


@functools.lru_cache(maxsize=None)
def _xformers_import_problem() -> str | None:
    try:
        import xformers.ops  # noqa: F401
    except Exception as exc:  # ImportError, or a broken build raising anything at import
        return f"importing xformers failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None


def xformers_problem(device: torch.device | str) -> str | None:
    """Why xformers cannot run on ``device`` (None when it can)."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"xformers has no kernels for the {device.type} device"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    return _xformers_import_problem()


def resolve_backend(requested: str, device: torch.device | str) -> str:
    """The backend that runs: ``auto`` → xformers if usable on ``device``, else sdpa."""
    if requested not in BACKENDS:
        raise BackendError(f"attention backend '{requested}': expected one of {', '.join(BACKENDS)}")
    if requested == "auto":
        return "xformers" if xformers_problem(device) is None else "sdpa"
    if requested == "xformers":
        problem = xformers_problem(device)
        if problem:
            raise BackendError(f"attention backend 'xformers' cannot run here: {problem}; use sdpa (or auto)")
    return requested


@dataclass(frozen=True)
class PreparedMask:
    """A mask rendered for one backend; build it once per forward and reuse it in every layer."""

    backend: str
    value: torch.Tensor  # sdpa/eager: bool (b, 1, Lq, Lk); xformers: float bias storage (b, 1, Lq, Lk padded to 8)


def prepare_mask(
    allowed: torch.Tensor, backend: str, *, batch: int, heads: int, dtype: torch.dtype
) -> PreparedMask:
    """Render ``allowed`` — bool (b, Lq, Lk) with b in {1, batch}, True = attend — for ``backend``."""
    allowed = allowed[:, None]  # (b, 1, Lq, Lk)
    if backend == "xformers":
        return PreparedMask(backend, padded_bias(allowed, dtype))
    if backend in ("sdpa", "eager"):
        return PreparedMask(backend, allowed)
    raise BackendError(f"attention backend '{backend}': resolve it first (expected xformers, sdpa or eager)")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: PreparedMask, scale: float) -> torch.Tensor:
    """Masked attention. q (B, Lq, H, D), k and v (B, Lk, H, D) → (B, Lq, H, D)."""
    if mask.backend == "xformers":
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            return torch.ops.dmpf.xformers_attention(q, k, v, mask.value, scale)[0]
        return torch.ops.dmpf.xformers_attention_inference(q, k, v, mask.value, scale)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D)
    if mask.backend == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.value, scale=scale)
    else:
        out = eager_attention(q, k, v, mask.value, scale)
    return out.transpose(1, 2)  # (B, Lq, H, D)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float) -> torch.Tensor:
    """The reference: explicit masked softmax in fp32. q (B, H, Lq, D) → (B, H, Lq, D)."""
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale  # (B, H, Lq, Lk)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(dim=-1) @ v.float()).to(q.dtype)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


# -- xformers as torch custom ops -------------------------------------------------------------------

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


def _lse_padded(lse: torch.Tensor, queries: int) -> torch.Tensor:
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
    return out.contiguous(), _lse_padded(lse, q.shape[1])


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
