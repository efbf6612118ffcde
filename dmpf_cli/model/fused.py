"""The fused language model (design.md §1, §3): a frozen GPT-2 whose blocks we drive ourselves.

Sequence: ``[text embeddings (T) | A tokens (n_a) | V tokens (n_v) | AV tokens (n_av)]``; the fusion
tokens are learnable and take the GPT-2 positions after the text. Each frozen block runs its own
weights (ln_1, c_attn, c_proj, ln_2, mlp) with our attention backend and the fusion mask — the same
prepared mask in every block — and after the configured blocks an :class:`~dmpf_cli.model.mm.MMBlock` lets
each token group read its encoder. The mask is a :class:`~dmpf_cli.model.mask.FusionMask` of this model's
sizes, given each batch's text padding and rendered for the attention backend. Driving the blocks here
(rather than through ``GPT2Model.forward``) is what makes MM blocks between layers and a per-backend mask
possible; a test proves that with closed gates the text states equal Hugging Face's ``GPT2Model`` on the
same weights.

Precision: the residual stream ``h`` is fp32 from the embeddings to ln_f, whatever the backbone is stored
in. Under bf16 autocast the matrix products still run in bf16; each branch's bf16 output is added to the
fp32 stream, so a small gated MM contribution (a gate just opening) is not rounded away, as it would be in
a bf16 stream. The LayerNorms run on the fp32 stream (:func:`layer_norm`).

Training (the reference's recipe): GPT-2's own dropouts, at ``backbone.dropout`` — after the embeddings,
on the attention probabilities (not on the xformers backend, see :mod:`~dmpf_cli.model.attention`) and on
each residual branch — with the weights frozen; SoftPerm on the text embeddings
(:mod:`~dmpf_cli.model.augment`); and, with ``loss.clm``, the causal-LM term of the LM's own head on the text
(:meth:`FusedGPT2.clm_loss`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..streams import STREAM_BY_NAME
from .attention import PreparedMask, attend, prepare_mask
from .augment import softperm
from .mask import FusionMask
from .mm import MMBlock
from .text_cache import TextCache


def layer_norm(ln: nn.LayerNorm, h: Tensor) -> Tensor:
    """``ln`` in the stream's dtype (fp32), its weights cast to it where the backbone is stored in bf16.

    CUDA autocast upcasts a layer norm by itself; CPU autocast does not, and there a bf16 weight on an fp32
    input is an error. The cast is of 2·D values, not of the activations.
    """
    return F.layer_norm(h, ln.normalized_shape, ln.weight.to(h.dtype), ln.bias.to(h.dtype), ln.eps)


def _qkv(block: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v of ``h`` (B, L, D) in the block's attention: 3 × (B, L, H, hd)."""
    B, L, D = h.shape
    H = block.attn.num_heads
    return block.attn.c_attn(layer_norm(block.ln_1, h)).view(B, L, 3, H, D // H).unbind(2)


def _scale(attn: nn.Module, head_dim: int) -> float:
    scale = 1.0 / math.sqrt(head_dim) if attn.scale_attn_weights else 1.0
    if attn.scale_attn_by_inverse_layer_idx:
        scale /= float(attn.layer_idx + 1)
    return scale


def _finish(block: nn.Module, h: Tensor, y: Tensor) -> Tensor:
    """The rest of the block after attention: output projection and residual, then the MLP and residual."""
    B, L, D = h.shape
    h = h + block.attn.resid_dropout(block.attn.c_proj(y.reshape(B, L, D)))
    return h + block.mlp(layer_norm(block.ln_2, h))  # GPT2MLP ends in its own (residual) dropout


def block_forward(block: nn.Module, h: Tensor, mask: PreparedMask) -> Tensor:
    """One GPT-2 block (pre-LN) with our attention: h (B, L, D) → (B, L, D), in h's dtype (the fp32 stream).

    The branches run in what autocast says (bf16 matmuls); adding their outputs to ``h`` promotes them to
    the stream's dtype in the addition itself, without a separate copy. GPT-2's dropouts run where the
    block is in training mode: ``resid_dropout`` and the MLP's own dropout on the residual branches, and
    ``attn_dropout``'s probability on the attention weights.
    """
    attn = block.attn
    q, k, v = _qkv(block, h)  # 3 × (B, L, H, hd)
    p_attn = attn.attn_dropout.p if attn.training else 0.0
    y = attend(q, k, v, mask, _scale(attn, q.shape[-1]), p_attn)  # (B, L, H, hd)
    return _finish(block, h, y)


def split_block_forward(block: nn.Module, text: Tensor, tokens: Tensor, mask: PreparedMask) -> tuple[Tensor, Tensor]:
    """:func:`block_forward` on ``[text | tokens]``, with the text rows computed without autograd.

    Text sees only text (every mask preset, :class:`~dmpf_cli.model.mask.MaskPreset`), so the text rows of a
    block depend on the text rows before it alone; before the first MM block nothing trainable has touched
    them, and no gradient needs to flow through them. The fusion tokens' rows read the text rows' keys and
    values, computed once in the text pass (:func:`text_rows`, then :func:`token_rows`). Only for a block without
    dropout (what draws random numbers would draw them in another order) and an sdpa or eager mask (bool or
    additive). text (B, T, D), tokens (B, n, D).
    """
    text, kt, vt = text_rows(block, text, mask)
    return text, token_rows(block, tokens, kt, vt, mask)


def text_rows(block: nn.Module, text: Tensor, mask: PreparedMask) -> tuple[Tensor, Tensor, Tensor]:
    """The text rows of :func:`split_block_forward`, without autograd: text (B, T, D) → the rows after the block
    (B, T, D) and the block's keys and values of them, 2 × (B, T, H, hd)."""
    T = text.shape[1]
    with torch.no_grad():
        q, k, v = _qkv(block, text)
        y = attend(q, k, v, PreparedMask(mask.backend, mask.value[:, :, :T, :T]), _scale(block.attn, q.shape[-1]))
        return _finish(block, text, y), k, v


def token_rows(block: nn.Module, tokens: Tensor, kt: Tensor, vt: Tensor, mask: PreparedMask) -> Tensor:
    """The fusion tokens' rows of :func:`split_block_forward`: tokens (B, n, D), reading the text rows' keys and
    values ``kt``, ``vt`` (B, T, H, hd) beside their own → (B, n, D)."""
    T = kt.shape[1]
    q, k, v = _qkv(block, tokens)
    y = attend(q, torch.cat([kt, k], dim=1), torch.cat([vt, v], dim=1),
               PreparedMask(mask.backend, mask.value[:, :, T:, :]), _scale(block.attn, q.shape[-1]))
    return _finish(block, tokens, y)


def fuse_gelu(gpt2: nn.Module) -> None:
    """GPT-2's tanh-approximated GELU (``gelu_new``) as one fused kernel (``nn.GELU(approximate="tanh")``) in every
    block, instead of transformers' ``NewGELUActivation``, which writes the same formula as seven elementwise
    operations, each a pass over the (B, L, 4D) activations forward and backward. The formula is the same; the
    results agree to float32 rounding (design.md §6). Other activations are left as they are."""
    for block in gpt2.h:
        if type(block.mlp.act).__name__ == "NewGELUActivation":
            block.mlp.act = nn.GELU(approximate="tanh")


def set_dropout(gpt2: nn.Module, p: float) -> None:
    """GPT-2's three dropouts at probability ``p``, whatever the checkpoint's config.json says: after the
    embeddings (``drop``), on the attention probabilities (``attn_dropout``) and on each residual branch
    (``resid_dropout``, the MLP's ``dropout``). They act only while the backbone is in training mode."""
    gpt2.config.embd_pdrop = gpt2.config.attn_pdrop = gpt2.config.resid_pdrop = p
    gpt2.drop.p = p
    for block in gpt2.h:
        block.attn.attn_dropout.p = block.attn.resid_dropout.p = block.mlp.dropout.p = p


class FusedGPT2(nn.Module):
    """Frozen GPT-2 + fusion tokens + MM blocks.

    ``gpt2``: a transformers ``GPT2Model`` (frozen by the caller). ``tokens``: n per stream (token group),
    absent = 0. ``encoder_dims``: the width of the encoder each present group reads. ``dropout``: the MM
    blocks'. ``lm_dropout``: GPT-2's own dropouts in training (:func:`set_dropout`; the caller puts the
    backbone in training mode). ``text_softperm``: (fraction, std) of SoftPerm on the text embeddings in
    training, or None. ``speedups``: GPT-2's GELU as one fused kernel (:func:`fuse_gelu`), in the LM's blocks and
    so in the MM blocks' FFNs copied from them, the text rows before the first MM block without autograd
    (:func:`split_block_forward`), and SDPA's masks in their additive form, rendered once per forward
    (:meth:`~dmpf_cli.model.attention.PreparedMask.additive`), and those text rows' states kept per text across
    training steps on CPU (:mod:`~dmpf_cli.model.text_cache`); False keeps transformers' GELU, one pass over every
    row, bool masks and no cache (``dmpf bench --before``).
    """

    def __init__(
        self,
        gpt2: nn.Module,
        tokens: dict[str, int],
        encoder_dims: dict[str, int],
        mm_layers: list[int],
        mask_preset: str,
        gate: str,
        dropout: float,
        ffn_over: str = "sequence",
        *,
        lm_dropout: float = 0.0,
        text_softperm: tuple[float, float] | None = None,
        speedups: bool = True,
    ):
        super().__init__()
        self.speedups = speedups
        if speedups:
            fuse_gelu(gpt2)  # before the MM blocks copy the blocks' MLPs
        self.gpt2 = gpt2
        self.lm_dropout = lm_dropout
        set_dropout(gpt2, lm_dropout)
        self.text_softperm = text_softperm
        D = gpt2.config.n_embd
        self.n_head = gpt2.config.n_head
        self.counts = {g: tokens.get(g, 0) for g in STREAM_BY_NAME}  # in sequence order
        self.mask_preset = mask_preset
        present = {g: encoder_dims[g] for g in STREAM_BY_NAME if self.counts[g] > 0}
        self.tokens = nn.ParameterDict({g: nn.Parameter(torch.randn(self.counts[g], D) * 0.02) for g in present})
        bad = [layer for layer in mm_layers if not 0 <= layer < len(gpt2.h)]
        if bad:
            raise ValueError(f"mm.layers: blocks {bad} do not exist (the backbone has {len(gpt2.h)})")
        self.mm = nn.ModuleDict({
            str(layer): MMBlock(gpt2.h[layer], D, self.n_head, present, gate, dropout, ffn_over) for layer in sorted(mm_layers)
        }) if present else nn.ModuleDict()
        for block in self.mm.values():
            block.fast = speedups
        self.first_mm = min(map(int, self.mm)) if len(self.mm) else -1  # the first block an MM block follows
        self.text_cache = TextCache() if speedups else None  # the text rows' states before it, per text

    def layout(self, text_len: int) -> FusionMask:
        """The fusion mask at this text length, without padding (one per length: it keeps its structure)."""
        cache = self.__dict__.setdefault("_layout_cache", {})
        if text_len not in cache:
            cache[text_len] = FusionMask(text_len, *self.counts.values(), preset=self.mask_preset)
        return cache[text_len]

    def spans(self, text_len: int) -> dict[str, slice]:
        """Where each segment sits for this text length (cached: the model asks on every forward)."""
        cache = self.__dict__.setdefault("_span_cache", {})
        if text_len not in cache:
            cache[text_len] = {s.name: slice(s.start, s.stop) for s in self.layout(text_len).segments}
        return cache[text_len]

    # the residual stream's dtype; benchmarks/residual_precision.py sets bf16 to measure what fp32 costs
    stream_dtype: torch.dtype = torch.float32

    def embed(self, ids: Tensor, real: Tensor) -> Tensor:
        """The LM's input: [text embeddings | fusion tokens] + positions, then GPT-2's embedding dropout.

        ids, real (B, T) → (B, L, D) in the residual stream's dtype (fp32). In training the text embeddings
        get SoftPerm over their real tokens, before the positions are added.
        """
        B, T = ids.shape
        gpt2 = self.gpt2
        text = gpt2.wte(ids).to(self.stream_dtype)  # (B, T, D)
        if self.training and self.text_softperm is not None:
            text = softperm(text, real.sum(dim=1), *self.text_softperm)
        groups = [self.tokens[g].to(self.stream_dtype)[None].expand(B, -1, -1) for g in STREAM_BY_NAME if g in self.tokens]
        h = torch.cat([text, *groups], dim=1)  # (B, L, D)
        pos = torch.arange(h.shape[1], device=ids.device)
        return gpt2.drop(h + gpt2.wpe(pos).to(self.stream_dtype)[None])

    def text_cache_keys(self, ids: Tensor, real: Tensor, backend: str, attn_dtype: torch.dtype) -> list[bytes] | None:
        """The text cache's keys for this batch, where it may serve it (:mod:`~dmpf_cli.model.text_cache`): the
        fast path, on the CPU, without SoftPerm on the text; None otherwise. Called where the text rows before
        the first MM block run without autograd (:meth:`split_prefix`)."""
        cache = self.text_cache
        if cache is None or ids.device.type != "cpu" or self.text_softperm is not None:
            return None
        gpt2 = self.gpt2
        weights = [p for m in (gpt2.wte, gpt2.wpe, *gpt2.h[: self.first_mm + 1]) for p in m.parameters()]
        signature = (backend, attn_dtype, self.stream_dtype, torch.is_autocast_enabled("cpu"), self.mask_preset,
                     ids.shape[1], tuple((p.data_ptr(), p._version, p.dtype) for p in weights))
        return cache.keys(ids, real) if cache.valid_for(signature) else None

    def split_prefix(self, h: Tensor, T: int, fusion: PreparedMask, keys: list[bytes] | None) -> Tensor:
        """Blocks 0 … first_mm as :func:`split_block_forward` runs each, h (B, L, D) → h. With ``keys``
        (:meth:`text_cache_keys`), the text rows' states come from the text cache where it keeps every text of
        the batch, and are kept where it does not: the same numbers either way (design.md §6)."""
        text, tokens = h.split([T, h.shape[1] - T], dim=1)
        blocks = self.gpt2.h[: self.first_mm + 1]
        kept = self.text_cache.lookup(keys) if keys is not None else None
        if kept is None:
            states = []
            for block in blocks:
                text, kt, vt = text_rows(block, text, fusion)
                tokens = token_rows(block, tokens, kt, vt, fusion)
                states += [kt, vt]
            if keys is not None:
                self.text_cache.store(keys, torch.stack([s.reshape(text.shape) for s in (*states, text)], dim=1))
        else:  # (B, S, T, D): each block's keys and values, then the text rows after the last
            B, _, D = text.shape
            for i, block in enumerate(blocks):
                kt, vt = (kept[:, j].view(B, T, self.n_head, D // self.n_head) for j in (2 * i, 2 * i + 1))
                tokens = token_rows(block, tokens, kt, vt, fusion)
            text = kept[:, -1]
        return torch.cat([text, tokens], dim=1)

    def clm_loss(self, H: Tensor, ids: Tensor, real: Tensor) -> Tensor:
        """The causal-LM term (design.md §5, the reference's ``use_clm``): next-token cross-entropy of the LM's own
        head on the text span of the final states ``H`` (B, L, D), as Hugging Face's ``GPT2LMHeadModel`` computes
        its loss — position t predicts ``ids[t + 1]`` where both are real text, averaged over those targets.

        The head is GPT-2's, tied to the token embeddings (frozen). Its matrix product runs in what autocast says
        (bf16 under bf16 training); the cross-entropy in fp32. Every position is scored and the padded targets
        masked, so the step has no data-dependent shape (no host sync, no recompilation); a batch without a
        single target gives 0, not NaN.
        """
        T = ids.shape[1]
        weight = self.gpt2.wte.weight  # (V, D): GPT-2's LM head is tied to it
        logits = F.linear(H[:, : T - 1].to(weight.dtype), weight).float()  # (B, T-1, V)
        scored = real[:, :-1] & real[:, 1:]  # (B, T-1): a real token with a real next token
        targets = ids[:, 1:].masked_fill(~scored, -100)
        total = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
        return total / scored.sum().clamp(min=1)

    def forward(
        self,
        ids: Tensor,
        real: Tensor,
        contexts: dict[str, tuple[Tensor, Tensor]],
        backend: str,
        *,
        return_hidden: bool = False,
    ) -> tuple[Tensor, list[Tensor]]:
        """ids, real (B, T); ``contexts[g] = (seq (B, Lm, d), lengths (B,))`` for each present group.

        Returns the final hidden states after ln_f (B, L, D), and — with ``return_hidden`` — the states
        after every block (after its MM block, where there is one); all fp32.
        """
        B, T = ids.shape
        gpt2 = self.gpt2
        mask = self.layout(T).with_padding(real)
        # the dtype attention actually runs in (q, k, v come out of autocast's matmuls, not from the fp32
        # stream): the xformers bias must match it, or every layer would cast (and so materialise) a
        # (B, H, L, L) copy of it
        device_type = ids.device.type
        attn_dtype = (torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type)
                      else gpt2.wte.weight.dtype)

        h = self.embed(ids, real)  # (B, L, D) fp32
        fusion = mask.render(backend, attn_dtype, ids.device)  # once per forward, the same in every block
        fusion = fusion.additive(attn_dtype) if self.speedups else fusion
        spans = self.spans(T)
        cross = {}
        for g, (seq, lengths) in contexts.items():
            if g not in self.tokens:
                continue
            # a length-0 sample still attends to its (zero) first step: never an empty softmax row
            keys = torch.arange(seq.shape[1], device=seq.device)[None, :] < lengths.clamp(min=1)[:, None]  # (B, Lm)
            keys = keys[:, None, :].expand(B, self.counts[g], -1)  # (B, n_g, Lm)
            prepared = prepare_mask(keys, backend, attn_dtype)
            cross[g] = (seq, prepared.additive(attn_dtype) if self.speedups else prepared)

        # Up to the first MM block the text rows depend on nothing that trains: they run without autograd
        # (split_block_forward), and the backward pass covers the fusion tokens' rows alone (design.md §6)
        first_mm = self.first_mm
        split = (self.speedups and first_mm >= 0 and torch.is_grad_enabled() and fusion.backend in ("sdpa", "eager")
                 and not (gpt2.training and self.lm_dropout > 0)
                 and not any(p.requires_grad for m in (gpt2.wte, gpt2.wpe, *gpt2.h[:first_mm + 1])
                             for p in m.parameters()))
        hidden = []
        if split and not return_hidden:  # blocks 0 … first_mm at once, the text rows' states perhaps kept
            h = self.split_prefix(h, T, fusion, self.text_cache_keys(ids, real, backend, attn_dtype))
        for i, block in enumerate(gpt2.h):
            if split and i <= first_mm:
                if return_hidden:  # block by block, so that each block's states are recorded (else: split_prefix)
                    text, tokens = split_block_forward(block, *h.split([T, h.shape[1] - T], dim=1), fusion)
                    h = torch.cat([text, tokens], dim=1)
            else:
                h = block_forward(block, h, fusion)
            if str(i) in self.mm:
                h = self.mm[str(i)](h, spans, cross)
            if return_hidden:
                hidden.append(h)
        return layer_norm(gpt2.ln_f, h), hidden
