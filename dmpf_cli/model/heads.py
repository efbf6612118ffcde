"""Task heads (design.md §5): fuse the pooled representations into one sentiment score.

A head is built from ``in_dims``, the widths of the representations that exist in this model; a
representation is absent when its stream is ablated (``fusion.n_a = 0`` drops ``a_tok``, and so on).
``forward(reps)`` takes a dict with exactly those names, each (B, width), and returns (B,) scores.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import HeadConfig
from ..registry import register
from ..streams import REPRESENTATIONS  # the seven of design.md §5, in their canonical order
from .stacked import stacked_linear


def _reject_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise ValueError(f"head '{name}' takes no options, got: {', '.join(sorted(map(str, options)))}")


class FusionHead(nn.Module):
    """Base class: holds the present representation names, in canonical order, and gathers them."""

    def __init__(self, in_dims: dict[str, int]):
        super().__init__()
        expected = f"expected some of: {', '.join(REPRESENTATIONS)}"
        if not in_dims:
            raise ValueError(f"a head needs at least one representation; {expected}")
        unknown = sorted(set(in_dims) - set(REPRESENTATIONS))
        if unknown:
            raise ValueError(f"unknown representation(s) {', '.join(unknown)}; {expected}")
        self.names: tuple[str, ...] = tuple(n for n in REPRESENTATIONS if n in in_dims)

    def gather(self, reps: dict[str, Tensor]) -> list[Tensor]:
        """The representations this head was built for, in canonical order; a missing or extra name is an error."""
        if set(reps) != set(self.names):
            missing = [n for n in self.names if n not in reps] or "none"
            extra = sorted(set(reps) - set(self.names)) or "none"
            raise ValueError(f"head built for {', '.join(self.names)}: missing {missing}, unexpected {extra}")
        return [reps[n] for n in self.names]


class SelfAttentionHead(FusionHead):
    """The paper's late fusion: k representations as k tokens, a pre-LN self-attention block, mean-pool, regress."""

    def __init__(self, cfg: HeadConfig, in_dims: dict[str, int]):
        super().__init__(in_dims)
        if cfg.d % cfg.heads:
            raise ValueError(f"head: d={cfg.d} must be divisible by heads={cfg.heads}")
        d = cfg.d
        self.proj = nn.ModuleDict({n: nn.Linear(in_dims[n], d) for n in self.names})
        self.type_emb = nn.Parameter(torch.randn(len(self.names), d) * 0.02)  # (k, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d), nn.Dropout(cfg.dropout))
        self.ln_f = nn.LayerNorm(d)
        self.out = nn.Linear(d, 1)

    fast: bool = True  # training through the same operations without nn.MultiheadAttention's per-call checks

    def forward(self, reps: dict[str, Tensor]) -> Tensor:
        fast = self.fast and self.training
        reps = self.gather(reps)
        x = torch.stack(self.project(reps) if fast else [self.proj[n](r) for n, r in zip(self.names, reps)], dim=1)
        x = self.drop(x + self.type_emb)  # (B, k, d)
        h = self.ln_1(x)
        x = x + self.drop(attention_without_checks(self.attn, h) if fast else self.attn(h, h, h, need_weights=False)[0])
        x = x + self.mlp(self.ln_2(x))
        return self.out(self.ln_f(x.mean(dim=1))).squeeze(-1)  # (B, d) -> (B,)

    def project(self, reps: list[Tensor]) -> list[Tensor]:
        """Each representation through its projection, those of the same width as one batched product
        (:func:`~dmpf_cli.model.stacked.stacked_linear`): the same k (B, d) results, in ``self.names`` order."""
        out: list[Tensor | None] = [None] * len(reps)
        for width in dict.fromkeys(r.shape[-1] for r in reps):
            idx = [i for i, r in enumerate(reps) if r.shape[-1] == width]
            projs = [self.proj[self.names[i]] for i in idx]
            ys = stacked_linear(torch.stack([reps[i] for i in idx]), [p.weight for p in projs], [p.bias for p in projs])
            for i, y in zip(idx, ys.unbind(0)):
                out[i] = y
        return out


def attention_without_checks(attn: nn.MultiheadAttention, h: Tensor) -> Tensor:
    """``attn(h, h, h, need_weights=False)[0]`` for a batch-first ``attn`` without masks or extra biases, as
    ``F.multi_head_attention_forward`` computes it — the same operations in the same memory layouts — without its
    per-call checks. h (B, k, d) → (B, k, d)."""
    B, k, E = h.shape
    H = attn.num_heads
    proj = F.linear(h.transpose(1, 0), attn.in_proj_weight, attn.in_proj_bias)  # (k, B, 3E)
    proj = proj.unflatten(-1, (3, E)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()  # (3, k, B, E)
    q, key, v = (p.view(k, B * H, E // H).transpose(0, 1).view(B, H, k, E // H) for p in proj.unbind(0))
    o = F.scaled_dot_product_attention(q, key, v, None, attn.dropout if attn.training else 0.0, False)
    o = F.linear(o.permute(2, 0, 1, 3).reshape(B * k, E), attn.out_proj.weight, attn.out_proj.bias)
    return o.view(k, B, E).transpose(1, 0)


class ConcatHead(FusionHead):
    """The reference implementation's head: concatenate, then Linear -> BatchNorm -> ReLU -> dropout -> Linear."""

    def __init__(self, cfg: HeadConfig, in_dims: dict[str, int]):
        super().__init__(in_dims)
        self.mlp = nn.Sequential(
            nn.Linear(sum(in_dims[n] for n in self.names), cfg.d),
            nn.BatchNorm1d(cfg.d),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.d, 1),
        )

    def forward(self, reps: dict[str, Tensor]) -> Tensor:
        return self.mlp(torch.cat(self.gather(reps), dim=-1)).squeeze(-1)  # (B, sum) -> (B,)


@register("head", "self-attention")
def self_attention(cfg: HeadConfig, in_dims: dict[str, int]) -> nn.Module:
    """Self-attention over the representations (the paper's late fusion, design.md §5)."""
    _reject_options("self-attention", cfg.options)
    return SelfAttentionHead(cfg, in_dims)


@register("head", "concat")
def concat(cfg: HeadConfig, in_dims: dict[str, int]) -> nn.Module:
    """Concatenation into an MLP with BatchNorm (the reference implementation's head, for ablation)."""
    _reject_options("concat", cfg.options)
    return ConcatHead(cfg, in_dims)


class AuxHeads(nn.Module):
    """The auxiliary heads of design.md §5: one Linear(width → 1) per representation, for the auxiliary losses."""

    def __init__(self, in_dims: dict[str, int]):
        super().__init__()
        self.heads = nn.ModuleDict({n: nn.Linear(in_dims[n], 1) for n in REPRESENTATIONS if n in in_dims})

    def forward(self, reps: dict[str, Tensor]) -> dict[str, Tensor]:
        return {n: head(reps[n]).squeeze(-1) for n, head in self.heads.items()}  # each (B,)
