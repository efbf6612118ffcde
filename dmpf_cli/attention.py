"""Attention backends: ``xformers`` (CUDA), ``sdpa`` (torch, any device), ``eager`` (the readable reference).

Every backend computes ``softmax(q·kᵀ·scale + mask)·v`` from the same boolean mask (True = may
attend). :func:`prepare_mask` renders that mask once per forward pass in the form the backend takes
— a bool mask for SDPA and eager, a dense additive bias (key dimension allocated padded to a multiple
of 8) for xformers — and :func:`attend` runs the backend. q, k, v are laid out (B, L, H, D), the layout
xformers takes directly; SDPA and eager transpose to (B, H, L, D).

``auto`` picks xformers where CUDA and a working xformers are present, else SDPA. xformers is
imported only when a CUDA device asks for it: on a CPU machine it is never imported (its import logs
a CUDA warning there, and it has no CPU kernels).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import DmpfError
from .mask import additive_bias

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
    value: torch.Tensor  # sdpa/eager: bool (b, 1, Lq, Lk); xformers: float bias (B, H, Lq, Lk)


def prepare_mask(
    allowed: torch.Tensor, backend: str, *, batch: int, heads: int, dtype: torch.dtype
) -> PreparedMask:
    """Render ``allowed`` — bool (b, Lq, Lk) with b in {1, batch}, True = attend — for ``backend``."""
    allowed = allowed[:, None]  # (b, 1, Lq, Lk)
    if backend == "xformers":
        Lq, Lk = allowed.shape[-2:]
        return PreparedMask(backend, additive_bias(allowed, (batch, heads, Lq, Lk), dtype))
    if backend in ("sdpa", "eager"):
        return PreparedMask(backend, allowed)
    raise BackendError(f"attention backend '{backend}': resolve it first (expected xformers, sdpa or eager)")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: PreparedMask, scale: float) -> torch.Tensor:
    """Masked attention. q (B, Lq, H, D), k and v (B, Lk, H, D) → (B, Lq, H, D)."""
    if mask.backend == "xformers":
        import xformers.ops as xops

        bias = mask.value if mask.value.dtype == q.dtype else mask.value.to(q.dtype)  # prepared in q's dtype already
        return xops.memory_efficient_attention(q, k, v, attn_bias=bias, scale=scale)
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
