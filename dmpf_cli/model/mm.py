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
from .stacked import stacked_linear


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

    fast: bool = True  # the batched cross-attention (the model's ``speedups``; design.md §6)

    def batchable(self, spans: dict[str, slice], contexts: dict[str, tuple[Tensor, PreparedMask]]) -> bool:
        """Whether the groups' cross-attentions can run as one (:meth:`batched_reads`): more than one group, the
        same number of tokens in each, encoder outputs and key masks of the same shapes, an sdpa or eager mask."""
        if not self.fast or len(self.groups) < 2:
            return False
        ctxs = [contexts[g] for g in self.groups]
        return (len({spans[g].stop - spans[g].start for g in self.groups}) == 1
                and len({(tuple(ctx.shape), tuple(mask.value.shape), mask.backend) for ctx, mask in ctxs}) == 1
                and ctxs[0][1].backend in ("sdpa", "eager"))

    def batched_reads(self, tokens: list[Tensor], contexts: dict[str, tuple[Tensor, PreparedMask]]) -> list[Tensor]:
        """Every group's :class:`CrossAttention` output (before its gate) from its tokens (B, n, D), computed as one:
        the G groups' projections as batched matrix products (their weights stacked at forward time, so the
        parameters stay per group) and one attention call over G·B queries. Each group's LayerNorm and dropout run
        on its own slice, in order, so the same masks are drawn and, on the embedded default, the results are the
        same bit for bit. G × (B, n, D)."""
        G, xattns = len(self.groups), [self.xattn[g] for g in self.groups]
        B, n, D = tokens[0].shape
        H, hd = xattns[0].n_head, xattns[0].head_dim
        normed = torch.stack([self.norm(t) for t in tokens])  # (G, B, n, D)
        ctx = torch.stack([contexts[g][0] for g in self.groups])  # (G, B, Lm, d)
        Lm = ctx.shape[2]
        q = stacked_linear(normed, [x.q.weight for x in xattns], [x.q.bias for x in xattns]).view(G * B, n, H, hd)
        kv = stacked_linear(ctx, [x.kv.weight for x in xattns], [x.kv.bias for x in xattns])
        k, v = kv.view(G * B, Lm, 2, H, hd).unbind(2)  # 2 × (G·B, Lm, H, hd)
        mask = PreparedMask(contexts[self.groups[0]][1].backend, torch.cat([contexts[g][1].value for g in self.groups]))
        y = attend(q, k, v, mask, default_scale(hd)).reshape(G, B * n, D)  # (G, B·n, D)
        out = stacked_linear(y, [x.out.weight for x in xattns], [x.out.bias for x in xattns]).view(G, B, n, D)
        return [x.drop(o) for x, o in zip(xattns, out.unbind(0))]

    def forward(
        self,
        h: Tensor,
        spans: dict[str, slice],
        contexts: dict[str, tuple[Tensor, PreparedMask]],
    ) -> Tensor:
        """h (B, L, D); ``spans[g]`` the positions of group g; ``contexts[g]`` its encoder output and key mask."""
        # cut h once at the spans' edges: [before A | A | between | V | ... | after]; a split's backward is one
        # concatenation, where each slice's would fill a zero tensor of h's size (design.md §6)
        edges = [0, *(i for g in self.groups for i in (spans[g].start, spans[g].stop)), h.shape[1]]
        parts = list(h.split([b - a for a, b in zip(edges, edges[1:])], dim=1))
        tokens = parts[1::2]  # group i's tokens (B, n_i, D) are parts[2i + 1]; text and other spans pass through
        read = self.batched_reads(tokens, contexts) if self.batchable(spans, contexts) else None
        for i, g in enumerate(self.groups):
            ctx, mask = contexts[g]
            x = read[i] if read is not None else self.xattn[g](self.norm(tokens[i]), ctx, mask)
            parts[2 * i + 1] = tokens[i] + self.xgate[g](x)
        h = torch.cat(parts, dim=1)  # (B, L, D)
        if self.ffn_over == "tokens":  # the text positions (before the first span) pass through untouched
            start = min(spans[g].start for g in self.groups)
            text, tail = h.split([start, h.shape[1] - start], dim=1)
            return torch.cat([text, tail + self.ffn_gate(self.drop(self.ffn(self.ffn_norm(tail))))], dim=1)
        return h + self.ffn_gate(self.drop(self.ffn(self.ffn_norm(h))))
