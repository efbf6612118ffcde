"""The MM block (design.md §3): gated cross-attention from each fusion-token group to its encoder, then a gated FFN.

Inserted after selected frozen GPT-2 blocks. One shared LayerNorm normalises the token spans; each
token group (A, V, AV) has its own cross-attention into its encoder's sequence (keys and values
projected from the encoder width to the model width, padded encoder steps masked); each branch is
added through a learnable scalar gate. Then a gated FFN — initialised from the GPT-2 block's MLP — runs
over the whole sequence. Text positions never receive cross-attention, so nothing of audio or vision
reaches them.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor, nn

from .attention import PreparedMask, attend, default_scale


class Gate(nn.Module):
    """A learnable scalar gate: sigmoid(α) (the reference; half open at α=0) or tanh(α) (Flamingo; closed at α=0)."""

    def __init__(self, kind: Literal["sigmoid", "tanh"]):
        super().__init__()
        self.kind = kind
        self.alpha = nn.Parameter(torch.zeros(()))

    def value(self) -> Tensor:
        return torch.sigmoid(self.alpha) if self.kind == "sigmoid" else torch.tanh(self.alpha)

    def forward(self, x: Tensor) -> Tensor:
        return self.value().to(x.dtype) * x

    def extra_repr(self) -> str:
        return self.kind


class CrossAttention(nn.Module):
    """Queries from fusion tokens (width D), keys/values from an encoder sequence (width d_enc)."""

    def __init__(self, d_model: int, d_enc: int, n_head: int, dropout: float):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"model width {d_model} is not divisible by {n_head} heads")
        self.n_head, self.head_dim = n_head, d_model // n_head
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_enc, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, ctx: Tensor, mask: PreparedMask) -> Tensor:
        B, n, D = x.shape
        q = self.q(x).view(B, n, self.n_head, self.head_dim)  # (B, n, H, hd)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.n_head, self.head_dim).unbind(2)  # 2 × (B, Lm, H, hd)
        y = attend(q, k, v, mask, default_scale(self.head_dim))  # (B, n, H, hd)
        return self.drop(self.out(y.reshape(B, n, D)))


class MMBlock(nn.Module):
    """Gated cross-attention per token group, then a gated FFN initialised from ``gpt2_block.mlp``."""

    def __init__(
        self,
        gpt2_block: nn.Module,
        d_model: int,
        n_head: int,
        encoder_dims: dict[str, int],
        gate: Literal["sigmoid", "tanh"],
        dropout: float,
        ffn_over: Literal["sequence", "tokens"] = "sequence",
    ):
        super().__init__()
        self.ffn_over = ffn_over
        self.groups = list(encoder_dims)  # the token groups (streams) present, in sequence order
        self.norm = nn.LayerNorm(d_model)  # shared by the token spans
        self.xattn = nn.ModuleDict({g: CrossAttention(d_model, d, n_head, dropout) for g, d in encoder_dims.items()})
        self.xgate = nn.ModuleDict({g: Gate(gate) for g in encoder_dims})
        # A trainable copy of the frozen block's MLP and its pre-norm: the FFN starts as the LM's own.
        self.ffn_norm = copy.deepcopy(gpt2_block.ln_2).requires_grad_(True)
        self.ffn = copy.deepcopy(gpt2_block.mlp).requires_grad_(True)
        if isinstance(getattr(self.ffn, "dropout", None), nn.Dropout):
            self.ffn.dropout = nn.Identity()  # mm.dropout below is the one dropout knob of the block
        self.ffn_gate = Gate(gate)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        h: Tensor,
        spans: dict[str, slice],
        contexts: dict[str, tuple[Tensor, PreparedMask]],
    ) -> Tensor:
        """h (B, L, D); ``spans[g]`` the positions of group g; ``contexts[g]`` its encoder output and key mask."""
        pieces, cursor = [], 0
        for g in self.groups:  # rebuild the sequence piecewise: text and other spans pass through untouched
            span = spans[g]
            pieces.append(h[:, cursor:span.start])
            tokens = h[:, span]  # (B, n_g, D)
            ctx, mask = contexts[g]
            pieces.append(tokens + self.xgate[g](self.xattn[g](self.norm(tokens), ctx, mask)))
            cursor = span.stop
        pieces.append(h[:, cursor:])
        h = torch.cat(pieces, dim=1)  # (B, L, D)
        if self.ffn_over == "tokens":  # the text positions (before the first span) pass through untouched
            start = min(spans[g].start for g in self.groups)
            tail = h[:, start:]
            return torch.cat([h[:, :start], tail + self.ffn_gate(self.drop(self.ffn(self.ffn_norm(tail))))], dim=1)
        return h + self.ffn_gate(self.drop(self.ffn(self.ffn_norm(h))))
