"""Modality encoders (design.md §2): one transformer per stream, and the bimodal AV encoder.

A stream is ``(x, lengths)``: frames ``x`` (B, L, D_in) and the number of real frames per sample
``lengths`` (B,). Frames at or after a sample's length are padding and may hold anything (zeros,
huge values, ``inf``); they never reach the output.

Unimodal recipe, per stream::

    LayerNorm(frames)? -> downsample to max_len -> Linear(D_in->d, no bias)·√d -> + sinusoidal positions
    -> dropout -> time-step masking (training) -> pre-LN TransformerEncoder (key padding from the lengths)

The bimodal encoder runs one such branch per stream, concatenates them per time step and projects
back to ``d`` (then LayerNorm, with ``fuse_norm``). In training, each branch zeroes time steps with
probability ``p_mask`` (the reference's AV encoder: 0.1 per branch), and with ``whole_modality_dropout`` it
also zeroes one whole input modality per sample (not in the reference). Its branches stretch short streams onto the full ``max_len`` grid
(``downsample(..., stretch=True)``), so that the steps it pairs come from the same moment of the clip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import EncoderConfig
from ..registry import register
from .stacked import stacked_linear, stacked_norm


def downsample(x: Tensor, lengths: Tensor, max_len: int, *, stretch: bool = False) -> tuple[Tensor, Tensor]:
    """Contiguous, length-aware mean pooling in time (a design.md §2 decision).

    A sample with ``n > max_len`` real frames sends frame ``i < n`` to output step
    ``floor(i * max_len / n)``, so each output step averages one contiguous chunk of real frames
    (chunk sizes differ by at most one). A sample with ``n <= max_len`` keeps its frames as they are.
    Padded frames never contribute, whatever they hold. (The reference implementation took an
    interleaved, strided mean over the padded array instead.)

    ``stretch``: a sample with ``1 <= n < max_len`` is instead stretched over all ``max_len`` steps,
    step ``j`` taking the frame that covers relative time ``j / max_len``, i.e. frame
    ``floor(j * n / max_len)`` (each frame repeated about ``max_len / n`` times, in order). Then step ``j``
    of every non-empty sample covers the same fraction of its clip, so streams of different lengths can
    be paired step by step (the bimodal encoder); without it, a short stream's step ``j`` would sit at
    relative time ``j / n`` while a long one's sits at ``j / max_len``.

    Returns ``x_out`` (B, max_len, D), zero at and after the new lengths, and ``lengths_out`` (B,) long:
    ``min(n, max_len)``, or with ``stretch`` ``max_len`` for ``n >= 1`` and 0 for ``n = 0``; ``n`` is
    ``lengths`` clamped to ``[0, L]``.
    """
    B, L, D = x.shape
    n = lengths.to(device=x.device, dtype=torch.long).clamp(0, L)  # (B,)
    if (L + 1) * max_len * L <= _TABLE_LIMIT and not torch.compiler.is_compiling():
        weights = _pool_table(L, max_len, stretch, x.dtype, x.device)[n]  # the same rows, looked up
    else:
        weights = pool_weights(n, L, max_len, stretch, x.dtype)
    valid = torch.arange(L, device=x.device)[None, :] < n[:, None]  # (B, L)
    # torch.where, not a multiplication: 0 * inf would be NaN
    x = torch.where(valid[..., None], x, x.new_zeros(()))  # (B, L, D)
    lengths_out = torch.where(n > 0, max_len, 0) if stretch else n.clamp(max=max_len)  # (B,)
    return weights @ x, lengths_out  # (B, max_len, D), (B,)


def pool_weights(n: Tensor, L: int, max_len: int, stretch: bool, dtype: torch.dtype) -> Tensor:
    """:func:`downsample`'s pooling matrix for samples of ``n`` (B,) real frames out of ``L``: (B, max_len, L), row
    ``j`` averaging the frames that step ``j`` covers. A sample's rows depend on its ``n`` alone."""
    t = torch.arange(L, device=n.device)  # (L,)
    valid = t[None, :] < n[:, None]  # (B, L)
    bucket = torch.where(
        (n > max_len)[:, None],
        t[None, :] * max_len // n.clamp(min=1)[:, None],
        t[None, :],  # short sample: frame i stays at step i
    )  # (B, L)
    steps = torch.arange(max_len, device=n.device)
    member = bucket[:, None, :] == steps[None, :, None]  # (B, max_len, L): frame i lands on step j
    if stretch:
        # short sample: step j reads the one frame under relative time j/max_len (n = 0 reads nothing:
        # frame 0 is not valid there)
        source = steps[None, :] * n[:, None] // max_len  # (B, max_len), in [0, n) when n >= 1
        picks = t[None, None, :] == source[:, :, None]  # (B, max_len, L)
        member = torch.where((n < max_len)[:, None, None], picks, member)
    member = member & valid[:, None, :]  # padded frames never count
    weights = member.to(dtype)
    return weights / weights.sum(-1, keepdim=True).clamp(min=1)  # each row averages its chunk


# The pooling matrices of every length 0..L, per shape: ~20 small operations per call become one lookup. Only for
# tables up to 4 MiB in float32 (the demo's audio: 51 × 16 × 50); MOSEI-sized streams compute theirs per batch.
_TABLE_LIMIT = 2**20
_tables: dict[tuple, Tensor] = {}


def _pool_table(L: int, max_len: int, stretch: bool, dtype: torch.dtype, device: torch.device) -> Tensor:
    key = (L, max_len, stretch, dtype, str(device))
    if key not in _tables:  # (built under inference mode, the table still serves training: indexing copies)
        _tables[key] = pool_weights(torch.arange(L + 1, device=device), L, max_len, stretch, dtype)
    return _tables[key]


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """The fixed sin/cos position table of *Attention Is All You Need*, (n, d); odd ``d`` is fine."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]  # (n, 1)
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))  # (ceil(d/2),)
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return table


def _padding(lengths: Tensor, T: int) -> Tensor:
    """(B, T) bool, True at padded time steps."""
    return torch.arange(T, device=lengths.device)[None, :] >= lengths[:, None]


def encoder_forward(encoder: nn.TransformerEncoder, x: Tensor, padding: Tensor) -> Tensor:
    """``encoder(x, src_key_padding_mask=padding)`` in training, for the pre-LN, GELU, batch-first layers built
    below: the same modules and the same operations in the same memory layouts (so the same dropout masks,
    drawn in memory order), without ``nn.MultiheadAttention``'s and ``nn.TransformerEncoderLayer``'s per-call
    checks and mask conversions — a few hundred microseconds a layer at the demo's sizes (design.md §6).
    x (B, T, d), padding (B, T) bool, True = padded key."""
    B, T, E = x.shape
    bias = x.new_zeros(B, 1, 1, T).masked_fill_(padding[:, None, None, :], float("-inf"))  # as nn.MHA converts it
    for layer in encoder.layers:
        attn = layer.self_attn
        H = attn.num_heads
        y = layer.norm1(x)
        q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).view(B, T, 3, H, E // H).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=attn.dropout if attn.training else 0.0)
        # nn.MultiheadAttention's layout, (T, B, E): dropout1 draws its mask in memory order
        o = attn.out_proj(o.permute(2, 0, 1, 3).reshape(T * B, E)).view(T, B, E).transpose(0, 1)
        x = x + layer.dropout1(o)
        x = x + layer.dropout2(layer.linear2(layer.dropout(F.gelu(layer.linear1(layer.norm2(x))))))
    return encoder.norm(x) if encoder.norm is not None else x


def batched_encoder_forward(encoders: list[nn.TransformerEncoder], xs: list[Tensor],
                            paddings: list[Tensor]) -> list[Tensor]:
    """:func:`encoder_forward` of K encoders of the same shapes, each on its own input, as one computation: one
    batched matrix product per projection (the K weights stacked at forward time, so the parameters and the
    checkpoint stay per encoder) and one attention call over K·B sequences. The same operations in the same
    memory layouts per encoder, so, on the embedded default, the same results bit for bit (design.md §6). Only
    for layers without dropout. xs: K × (B, T, d); paddings: K × (B, T) bool, True = padded key."""
    K = len(encoders)
    B, T, E = xs[0].shape
    x = torch.stack(xs)  # (K, B, T, E)
    bias = x.new_zeros(K * B, 1, 1, T).masked_fill_(torch.stack(paddings).view(K * B, 1, 1, T), float("-inf"))
    for depth in range(len(encoders[0].layers)):
        layers = [encoder.layers[depth] for encoder in encoders]
        attns = [layer.self_attn for layer in layers]
        H = attns[0].num_heads
        y = stacked_norm(x, [layer.norm1 for layer in layers])
        qkv = stacked_linear(y, [a.in_proj_weight for a in attns], [a.in_proj_bias for a in attns])
        q, k, v = qkv.view(K * B, T, 3, H, E // H).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (K·B, H, T, E/H)
        o = o.view(K, B, H, T, E // H).permute(0, 3, 1, 2, 4).reshape(K, T * B, E)  # per encoder (T, B, E), as there
        o = stacked_linear(o, [a.out_proj.weight for a in attns], [a.out_proj.bias for a in attns])
        x = x + o.view(K, T, B, E).transpose(1, 2)
        y = stacked_norm(x, [layer.norm2 for layer in layers])
        y = F.gelu(stacked_linear(y, [layer.linear1.weight for layer in layers], [layer.linear1.bias for layer in layers]))
        x = x + stacked_linear(y, [layer.linear2.weight for layer in layers], [layer.linear2.bias for layer in layers])
    return list(stacked_norm(x, [encoder.norm for encoder in encoders]).unbind(0))


def encode(encoders: nn.ModuleDict, inputs: dict[str, list[tuple[Tensor, Tensor]]], *,
           batch: bool = True) -> dict[str, tuple[Tensor, Tensor]]:
    """Every encoder on its streams, in order: ``{name: (seq (B, T, d), lengths (B,))}``.

    Where every encoder is a built-in one whose branches can all join one batched computation
    (:meth:`StreamEncoder.batchable`: training on the fast path, no dropout in the transformers, the same layer
    shapes), their transformers run as one (:func:`batched_encoder_forward`) and each encoder combines its
    branches after. Random numbers are drawn in the same order as one encoder at a time: every branch's input
    steps (time-step masking) in order, then the one encoder that may draw in :meth:`ModalityEncoder.combine`,
    only where it is the last. Otherwise, or with ``batch=False``, each encoder runs by itself.
    """
    modules = list(encoders.items())
    branches = [b for _, enc in modules if isinstance(enc, ModalityEncoder) for b in enc.branches]
    shapes = {b.batchable() for b in branches}  # one shape, not None: every branch can join, and the same one
    batched = (batch and len(branches) > 1 and len(shapes) == 1 and None not in shapes
               and all(isinstance(enc, ModalityEncoder) for _, enc in modules)
               and not any(enc.draws_in_combine() for _, enc in modules[:-1]))
    if not batched:
        return {name: enc(*inputs[name]) for name, enc in modules}
    embedded = {}
    for name, enc in modules:
        enc.check(inputs[name])
        embedded[name] = [branch.embed(x, n) for branch, (x, n) in zip(enc.branches, inputs[name])]
    flat = [(branch, h, n) for name, enc in modules for branch, (h, n) in zip(enc.branches, embedded[name])]
    seqs = iter(batched_encoder_forward([b.transformer for b, _, _ in flat], [h for _, h, _ in flat],
                                        [b.key_padding(n) for b, _, n in flat]))
    return {name: enc.combine([branch.finish(next(seqs), n) for branch, (_, n) in zip(enc.branches, embedded[name])])
            for name, enc in modules}


class StreamEncoder(nn.Module):
    """The unimodal recipe for one stream: frames (B, L, D_in) -> sequence (B, max_len, d).

    ``stretch``: passed to :func:`downsample`; set by an encoder that pairs this stream with others.
    ``fast``: train through :func:`encoder_forward` (the model's ``speedups``); evaluation keeps torch's own
    fused inference path.
    """

    fast: bool = True

    def __init__(self, cfg: EncoderConfig, d_in: int, stretch: bool = False):
        super().__init__()
        self.max_len = cfg.max_len
        self.stretch = stretch
        self.p_mask = cfg.p_mask
        self.scale = math.sqrt(cfg.d)
        self.input_norm = nn.LayerNorm(d_in) if cfg.input_norm else nn.Identity()
        self.proj = nn.Linear(d_in, cfg.d, bias=False)
        self.register_buffer("pos", sinusoidal_positions(cfg.max_len, cfg.d), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.transformer: nn.TransformerEncoder | None = None
        if cfg.layers:
            layer = nn.TransformerEncoderLayer(
                cfg.d, cfg.heads, dim_feedforward=4 * cfg.d, dropout=cfg.dropout,
                activation="gelu", batch_first=True, norm_first=True,
            )
            # pre-LN blocks need a final LayerNorm; nested tensors do not support norm_first
            self.transformer = nn.TransformerEncoder(
                layer, cfg.layers, norm=nn.LayerNorm(cfg.d), enable_nested_tensor=False
            )

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        h, lengths = self.embed(x, lengths)
        if self.transformer is not None:
            padding = self.key_padding(lengths)
            if self.training and self.fast:
                h = encoder_forward(self.transformer, h, padding)
            else:
                h = self.transformer(h, src_key_padding_mask=padding)
        return self.finish(h, lengths)

    def embed(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The recipe up to the transformer: (B, L, D_in), (B,) -> the transformer's input (B, T, d), lengths (B,)."""
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(0, x.shape[1])
        # zero the padding before the LayerNorm: huge padded values would make NaN statistics there,
        # and NaN leaks into the LayerNorm's weight gradient even though the frames are dropped later
        x = torch.where(_padding(lengths, x.shape[1])[..., None], x.new_zeros(()), x)  # (B, L, D_in)
        x = self.input_norm(x)
        x, lengths = downsample(x, lengths, self.max_len, stretch=self.stretch)  # (B, T, D_in), T = max_len
        h = self.drop(self.proj(x) * self.scale + self.pos)  # (B, T, d)
        if self.training and self.p_mask > 0:
            keep = torch.rand(h.shape[0], h.shape[1], 1, device=h.device) >= self.p_mask  # (B, T, 1)
            h = h * keep
        return h, lengths

    def key_padding(self, lengths: Tensor) -> Tensor:
        """The transformer's key padding (B, T), True = padded. Step 0 stays visible even in an empty sample: an
        all-masked attention row is NaN on some torch versions and kernels (its output is zeroed by ``finish``)."""
        return _padding(lengths.clamp(min=1), self.max_len)

    def finish(self, h: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Zero the padded steps of the transformer's output (B, T, d)."""
        return h.masked_fill(_padding(lengths, h.shape[1])[..., None], 0.0), lengths

    def batchable(self) -> tuple | None:
        """What a branch must share with others for :func:`encode` to run their transformers as one batched
        computation — its layers' shapes — or None where it cannot join one: outside training or the fast path
        (evaluation keeps torch's own path), without a transformer, or with dropout in it (batching would draw
        its masks in another order)."""
        if not (self.training and self.fast and self.transformer is not None):
            return None
        layers = self.transformer.layers
        first = layers[0]
        if self.transformer.norm is None or any(
                layer.dropout.p or layer.dropout1.p or layer.dropout2.p or layer.self_attn.dropout for layer in layers):
            return None
        return (self.max_len, first.linear1.in_features, first.linear1.out_features, first.self_attn.num_heads,
                len(layers), first.norm1.eps)


class ModalityEncoder(nn.Module):
    """One branch per input stream; with several streams, fused per time step to width ``d``.

    ``forward(*streams)`` takes one ``(x (B, L, D_in), lengths (B,))`` per input dimension and returns
    ``(seq (B, max_len, d), lengths (B,))``; padded positions are zero. With several streams the output
    length is the elementwise maximum of the branch lengths.

    With several streams every branch stretches a short stream onto the ``max_len`` grid
    (``downsample(..., stretch=True)``): step ``j`` of each branch then covers relative time
    ``j / max_len`` of its clip, so the fuse layer pairs audio and vision from the same moment. A
    non-empty sample thus has length ``max_len``; an empty one (all streams empty) length 0. With
    ``cfg.fuse_norm`` a LayerNorm follows the fuse layer (the reference's AV encoder has one). With one
    stream nothing is paired: no stretching, no fuse layer, and ``fuse_norm`` is ignored.
    """

    def __init__(self, cfg: EncoderConfig, input_dims: tuple[int, ...]):
        super().__init__()
        if not input_dims:
            raise ValueError("an encoder needs at least one input stream")
        self.out_dim: int = cfg.d
        self.whole_modality_dropout = cfg.whole_modality_dropout
        k = len(input_dims)
        self.branches = nn.ModuleList(StreamEncoder(cfg, d_in, stretch=k > 1) for d_in in input_dims)
        self.fuse = nn.Linear(k * cfg.d, cfg.d) if k > 1 else None
        self.fuse_norm = nn.LayerNorm(cfg.d) if k > 1 and cfg.fuse_norm else None

    def forward(self, *streams: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        self.check(streams)
        return self.combine([branch(x, n) for branch, (x, n) in zip(self.branches, streams)])

    def check(self, streams: tuple | list) -> None:
        if len(streams) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} (x, lengths) stream(s), got {len(streams)}")

    def combine(self, outs: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """The branches' outputs, one ``(seq (B, T, d), lengths (B,))`` per stream, as this encoder's output."""
        if self.fuse is None:
            return outs[0]
        seqs = [seq for seq, _ in outs]  # k × (B, T, d)
        lengths = torch.stack([n for _, n in outs]).amax(0)  # (B,)
        if self.training and self.whole_modality_dropout > 0:
            seqs = self._drop_modalities(seqs)
        h = self.fuse(torch.cat(seqs, dim=-1))  # (B, T, k·d) -> (B, T, d)
        if self.fuse_norm is not None:
            h = self.fuse_norm(h)  # normalises each step on its own: padded steps cannot reach real ones
        h = h.masked_fill(_padding(lengths, h.shape[1])[..., None], 0.0)
        return h, lengths

    def draws_in_combine(self) -> bool:
        """Whether :meth:`combine` draws random numbers (whole-modality dropout, in training)."""
        return self.fuse is not None and self.training and self.whole_modality_dropout > 0

    def _drop_modalities(self, seqs: list[Tensor]) -> list[Tensor]:
        """Per sample, with probability ``whole_modality_dropout`` zero one input, chosen uniformly (never all)."""
        B, k, device = seqs[0].shape[0], len(seqs), seqs[0].device
        drop = torch.rand(B, device=device) < self.whole_modality_dropout  # (B,)
        which = torch.randint(k, (B,), device=device)  # (B,)
        keep = ~(drop[:, None] & (torch.arange(k, device=device)[None, :] == which[:, None]))  # (B, k)
        return [seq * keep[:, i, None, None] for i, seq in enumerate(seqs)]


@register("encoder", "transformer")
def transformer(cfg: EncoderConfig, input_dims: tuple[int, ...]) -> nn.Module:
    """Transformer encoder per stream (design.md §2); two streams make the bimodal AV encoder."""
    if cfg.options:
        raise ValueError(f"encoder 'transformer' takes no options, got: {', '.join(sorted(map(str, cfg.options)))}")
    return ModalityEncoder(cfg, tuple(input_dims))
