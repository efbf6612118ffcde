"""Attention backends: ``xformers`` (CUDA), ``sdpa`` (torch, any device), ``eager`` (the readable reference).

Every backend computes ``softmax(q·kᵀ·scale + mask)·v`` from a boolean mask (True = may attend).
:func:`prepare_mask` renders that mask once per forward pass in the form the backend takes — the bool
mask itself for SDPA and eager, a dense additive bias whose key dimension is allocated padded to a
multiple of 8 (:func:`padded_bias`) for xformers — and :func:`attend` runs the backend. The fusion
mask renders itself through :func:`prepare_mask` (:meth:`~dmpf_cli.model.mask.FusionMask.render`), and
so do the MM blocks' key-padding masks. q, k, v are laid out (B, L, H, D), the layout xformers takes
directly; SDPA and eager transpose to (B, H, L, D).

``attend(..., dropout=p)`` drops attention probabilities (GPT-2's ``attn_pdrop``, training only) on the SDPA
and eager backends. The xformers path does not: the custom ops of :mod:`dmpf_cli.model.xformers_ops` have
no dropout, so there the probability is ignored (the embedding and residual dropouts still apply); closing
that gap needs xformers' seeded dropout, on a GPU.

``auto`` picks xformers where it is *proved* to run, else SDPA. Importing xformers proves nothing: the
0.0.35 wheel imports on a CUDA 13 machine and then every op fails ("xFormers wasn't built with CUDA
support": its extension needs CUDA 12's ``libcudart.so.12``). So on CUDA, once per process and device,
:func:`probe_xformers` makes one tiny real call with a bias — forward and backward, checked against SDPA —
and ``auto`` falls back to SDPA with one line on stderr saying why; ``xformers`` asked for by name is a
one-line error naming the cause and the fix. xformers is imported only when a CUDA device asks for it: on a
CPU machine it is never imported (its import logs a CUDA warning there, and it has no CPU kernels). It runs
through the torch custom ops of :mod:`dmpf_cli.model.xformers_ops`.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import DmpfError
from . import xformers_ops

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


# What makes the xformers 0.0.35 wheel run on a CUDA 13 machine (its extension is linked against CUDA 12's runtime).
XFORMERS_FIX = ("install CUDA 12's runtime (pip install nvidia-cuda-runtime-cu12==12.8.90) and put its "
                "nvidia/cuda_runtime/lib directory on LD_LIBRARY_PATH before Python starts")


def probe_xformers(device: torch.device) -> None:
    """One tiny real xformers attention with a padded dense bias on ``device``, forward and backward (the training
    op), checked against SDPA; raises whatever xformers raises, or a RuntimeError for wrong values."""
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, 5, 2, 8, generator=g).to(device).requires_grad_() for _ in range(3))
    allowed = torch.ones(1, 5, 5, dtype=torch.bool, device=device).tril()  # (b, Lq, Lk), a key dim not a multiple of 8
    with torch.enable_grad(), torch.autocast(device.type, enabled=False):  # whatever context the caller is in
        out = attend(q, k, v, prepare_mask(allowed, "xformers"), 0.35)
        out.sum().backward()
        expected = attend(q.detach(), k.detach(), v.detach(), prepare_mask(allowed, "sdpa"), 0.35)
    error = float((out.detach() - expected).abs().max())
    if not error <= 1e-3 or q.grad is None or not torch.isfinite(q.grad).all():
        raise RuntimeError(f"its result differs from SDPA's by {error:.2g}")


@functools.lru_cache(maxsize=None)
def _xformers_probe_problem(device: str) -> str | None:
    if problem := _xformers_import_problem():
        return problem
    try:
        probe_xformers(torch.device(device))
    except Exception as exc:  # any failure of the kernel (not built for this CUDA, a missing library, wrong values)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"a tiny xformers attention failed ({type(exc).__name__}: {first})"
    return None


def xformers_problem(device: torch.device | str) -> str | None:
    """Why xformers cannot run on ``device`` (None when it can): no CUDA, or its import or a tiny real call
    (:func:`probe_xformers`, made once per process and device) fails."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"xformers has no kernels for the {device.type} device"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    return _xformers_probe_problem(str(device))


_announced: set[str] = set()


def resolve_backend(requested: str, device: torch.device | str) -> str:
    """The backend that runs: ``auto`` → xformers if it runs on ``device``, else sdpa (on CUDA with one line on
    stderr, once per process, saying why); ``xformers`` that cannot run is a one-line error with the fix."""
    if requested not in BACKENDS:
        raise BackendError(f"attention backend '{requested}': expected one of {', '.join(BACKENDS)}")
    if requested == "auto":
        problem = xformers_problem(device)
        if problem is None:
            return "xformers"
        if torch.device(device).type == "cuda" and problem not in _announced:  # on a CPU, SDPA is simply the choice
            _announced.add(problem)
            print(f"note: training.attention auto uses sdpa: xformers cannot run here: {problem}"
                  f"{fix_hint(problem)}", file=sys.stderr)
        return "sdpa"
    if requested == "xformers":
        problem = xformers_problem(device)
        if problem:
            raise BackendError(f"attention backend 'xformers' cannot run here: {problem}{fix_hint(problem)}; "
                               "or use sdpa (or auto)")
    return requested


def fix_hint(problem: str) -> str:
    """``"; to fix it, …"`` for a problem of xformers on CUDA: not installed, or its import or a tiny call failed
    (most often the wheel's missing CUDA 12 runtime)."""
    if problem.startswith("importing xformers failed (ModuleNotFoundError"):
        return "; to fix it, pip install xformers"
    if problem.startswith(("a tiny xformers", "importing xformers")):
        return f"; to fix it, {XFORMERS_FIX}"
    return ""


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_bias(allowed: torch.Tensor, dtype: torch.dtype = torch.float32, *,
                masked_value: float | None = None) -> torch.Tensor:
    """A (b, 1, Lq, Lk) bool mask (True = attend) as xformers' additive bias storage: (b, 1, Lq, Lk rounded
    up to 8), contiguous, 0 where allowed and ``masked_value`` (default −inf) elsewhere.

    Columns past Lk are masked padding that a consumer slices off (``[..., :Lk]``); the allocation is what
    gives the sliced bias a row stride that is a multiple of 8, as xformers requires of a dense bias.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating-point dtype for an additive bias, got {dtype}")
    b, _, Lq, Lk = allowed.shape
    neg = float("-inf") if masked_value is None else masked_value
    storage = torch.full((b, 1, Lq, _round_up(Lk, 8)), neg, dtype=dtype, device=allowed.device)
    storage[..., :Lk].masked_fill_(allowed, 0.0)
    return storage


@dataclass(frozen=True)
class PreparedMask:
    """A mask rendered for one backend; build it once per forward and reuse it in every layer."""

    backend: str
    # (b, 1, Lq, Lk): bool for eager, bool or additive (:meth:`additive`) for sdpa; for xformers the float bias
    # storage, its key dimension allocated padded to 8
    value: torch.Tensor

    def additive(self, dtype: torch.dtype) -> PreparedMask:
        """For sdpa, the additive mask (0 where allowed, −inf elsewhere, in ``dtype``, the queries') that SDPA
        builds from the bool one in every call: the same values, rendered once for every layer that reuses the
        mask (design.md §6). Other backends' masks are returned as they are."""
        if self.backend != "sdpa" or self.value.dtype != torch.bool:
            return self
        zero = torch.zeros((), dtype=dtype, device=self.value.device)
        return PreparedMask(self.backend, torch.where(self.value, zero, zero.new_full((), float("-inf"))))


def prepare_mask(allowed: torch.Tensor, backend: str, dtype: torch.dtype = torch.float32, *,
                 masked_value: float | None = None) -> PreparedMask:
    """Render ``allowed`` — bool (b, Lq, Lk), True = attend — for ``backend``; ``dtype`` and ``masked_value``
    are the xformers bias's (the dtype attention runs in, and −inf by default)."""
    allowed = allowed[:, None]  # (b, 1, Lq, Lk)
    if backend == "xformers":
        return PreparedMask(backend, padded_bias(allowed, dtype, masked_value=masked_value))
    if backend in ("sdpa", "eager"):
        return PreparedMask(backend, allowed)
    raise BackendError(f"attention backend '{backend}': resolve it first (expected xformers, sdpa or eager)")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: PreparedMask, scale: float,
           dropout: float = 0.0) -> torch.Tensor:
    """Masked attention. q (B, Lq, H, D), k and v (B, Lk, H, D) → (B, Lq, H, D).

    ``dropout``: the probability of dropping an attention weight (pass 0 outside training). Ignored by
    xformers, whose custom ops have no dropout (see the module docstring).
    """
    if mask.backend == "xformers":
        return xformers_ops.attention(q, k, v, mask.value, scale)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D)
    if mask.backend == "sdpa":
        value = mask.value
        if value.dtype not in (torch.bool, q.dtype):
            value = value.to(q.dtype)  # an additive mask rendered for another dtype: 0 and −inf convert exactly
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=value, dropout_p=dropout, scale=scale)
    else:
        out = eager_attention(q, k, v, mask.value, scale, dropout)
    return out.transpose(1, 2)  # (B, Lq, H, D)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float,
                    dropout: float = 0.0) -> torch.Tensor:
    """The reference: explicit masked softmax in fp32 (``dropout`` on its probabilities). q (B, H, Lq, D) → same."""
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale  # (B, H, Lq, Lk)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = scores.softmax(dim=-1)
    if dropout > 0:
        probs = F.dropout(probs, dropout)
    return (probs @ v.float()).to(q.dtype)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
