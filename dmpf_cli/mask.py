"""The fusion mask: who may attend to whom inside the frozen GPT-2 (SPEC §4, the paper's core idea).

The sequence is ``text (T) | A (n_a) | V (n_v) | AV (n_av)``. A *preset* says, for each pair of
segments, whether queries of one see keys of the other causally, entirely or not at all; a
:class:`FusionMask` applies a preset to concrete sizes and an optional per-batch text padding mask,
and renders itself for each attention backend:

* :meth:`FusionMask.allowed` — boolean matrix, True = may attend (rows = queries, columns = keys);
* :meth:`FusionMask.sdpa_mask` — what ``torch.nn.functional.scaled_dot_product_attention`` takes;
* :meth:`FusionMask.materialize` — an additive float bias (0 / −inf or the dtype minimum) for
  ``xformers.ops.memory_efficient_attention``, whose key dimension is allocated padded to a multiple
  of 8 and then sliced, as xformers requires of a dense bias.

Every query always sees itself, and padded text keys are hidden from every other query, so no row
is ever fully masked and a padded position can never leak into a real one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, NamedTuple

import torch

from .registry import get, register

SEGMENTS = ("text", "audio", "visual", "audio_visual")
SHORT = {"text": "T", "audio": "A", "visual": "V", "audio_visual": "AV"}
Relation = Literal["causal", "all", "none"]


@dataclass(frozen=True)
class MaskPreset:
    """Which segment sees which: ``rules[(query, key)]`` is ``"causal"`` or ``"all"``; absent pairs are ``"none"``.

    Invariants checked on construction: text sees only text, causally (the frozen LM's own stream is
    never touched by fusion tokens); every segment sees itself; ``causal`` only within a segment.
    """

    name: str
    description: str
    rules: Mapping[tuple[str, str], Relation]

    def __post_init__(self) -> None:
        for (q, k), rel in self.rules.items():
            if q not in SEGMENTS or k not in SEGMENTS:
                raise ValueError(f"mask preset '{self.name}': unknown segment in rule ({q}, {k}); expected {SEGMENTS}")
            if rel not in ("causal", "all", "none"):
                raise ValueError(f"mask preset '{self.name}': rule ({q}, {k}) is '{rel}', expected causal, all or none")
            if rel == "causal" and q != k:
                raise ValueError(f"mask preset '{self.name}': 'causal' is only defined inside a segment, not ({q}, {k})")
        if any(self.relation("text", k) != "none" for k in SEGMENTS[1:]) or self.relation("text", "text") != "causal":
            raise ValueError(f"mask preset '{self.name}': text must see only text, causally")
        for seg in SEGMENTS:
            if self.relation(seg, seg) == "none":
                raise ValueError(f"mask preset '{self.name}': segment '{seg}' must see itself")

    def relation(self, query: str, key: str) -> Relation:
        return self.rules.get((query, key), "none")


def _preset(name: str, description: str, sees: dict[str, dict[str, Relation]]) -> MaskPreset:
    return MaskPreset(name, description, {(q, k): rel for q, row in sees.items() for k, rel in row.items()})


_TEXT_ROW: dict[str, Relation] = {"text": "causal"}


@register("mask", "avseesall")
def avseesall() -> MaskPreset:
    """The paper's mask: A and V see text; AV sees text, A and V."""
    return _preset("avseesall", avseesall.__doc__, {
        "text": _TEXT_ROW,
        "audio": {"text": "all", "audio": "causal"},
        "visual": {"text": "all", "visual": "causal"},
        "audio_visual": {"text": "all", "audio": "all", "visual": "all", "audio_visual": "causal"},
    })


@register("mask", "original")
def original() -> MaskPreset:
    """Reference variant: as avseesall, but AV sees only text and AV."""
    return _preset("original", original.__doc__, {
        "text": _TEXT_ROW,
        "audio": {"text": "all", "audio": "causal"},
        "visual": {"text": "all", "visual": "causal"},
        "audio_visual": {"text": "all", "audio_visual": "causal"},
    })


@register("mask", "allcausal")
def allcausal() -> MaskPreset:
    """Reference variant: as avseesall, but V also sees A."""
    return _preset("allcausal", allcausal.__doc__, {
        "text": _TEXT_ROW,
        "audio": {"text": "all", "audio": "causal"},
        "visual": {"text": "all", "audio": "all", "visual": "causal"},
        "audio_visual": {"text": "all", "audio": "all", "visual": "all", "audio_visual": "causal"},
    })


@register("mask", "av_attends_only_av_a_v")
def av_attends_only_av_a_v() -> MaskPreset:
    """Reference variant: as avseesall, but AV does not see text."""
    return _preset("av_attends_only_av_a_v", av_attends_only_av_a_v.__doc__, {
        "text": _TEXT_ROW,
        "audio": {"text": "all", "audio": "causal"},
        "visual": {"text": "all", "visual": "causal"},
        "audio_visual": {"audio": "all", "visual": "all", "audio_visual": "causal"},
    })


def preset(name: str) -> MaskPreset:
    """The registered preset ``name`` (unknown names fail with the close matches)."""
    obj = get("mask", name).factory()
    if not isinstance(obj, MaskPreset):
        raise TypeError(f"mask preset '{name}' factory returned {type(obj).__name__}, expected MaskPreset")
    return obj


class Segment(NamedTuple):
    name: str
    start: int
    length: int

    @property
    def stop(self) -> int:
        return self.start + self.length


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_bias(allowed: torch.Tensor, dtype: torch.dtype = torch.float32, *,
                masked_value: float | None = None) -> torch.Tensor:
    """The storage behind :func:`additive_bias`: (b, 1, Lq, Lk rounded up to 8), contiguous.

    Columns past Lk are masked padding that a consumer slices off (``[..., :Lk]``); the allocation is what
    gives the sliced bias a row stride that is a multiple of 8, as xformers requires.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating-point dtype for an additive bias, got {dtype}")
    b, _, Lq, Lk = allowed.shape
    neg = float("-inf") if masked_value is None else masked_value
    storage = torch.full((b, 1, Lq, _round_up(Lk, 8)), neg, dtype=dtype, device=allowed.device)
    storage[..., :Lk].masked_fill_(allowed, 0.0)
    return storage


def additive_bias(
    allowed: torch.Tensor,
    shape: tuple[int, int, int, int] | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    masked_value: float | None = None,
) -> torch.Tensor:
    """A (b, 1, Lq, Lk) bool mask (True = attend) as an additive float bias, laid out for xformers.

    0 where allowed, ``masked_value`` (default −inf) elsewhere. The key dimension is allocated padded
    to a multiple of 8 and sliced back, as xformers requires of a dense bias; with ``shape=(B, H, Lq, Lk)``
    the result is broadcast to it (a view over batch 1 and heads, no copy).
    """
    b, _, Lq, Lk = allowed.shape
    bias = padded_bias(allowed, dtype, masked_value=masked_value)[..., :Lk]  # (b, 1, Lq, Lk), row stride % 8 == 0
    if shape is None:
        return bias
    if len(shape) != 4 or tuple(shape[2:]) != (Lq, Lk) or (b != 1 and shape[0] != b):
        raise ValueError(f"shape: expected (batch, heads, {Lq}, {Lk}) compatible with batch {b}, got {tuple(shape)}")
    return bias.expand(*shape)


def with_text_padding(allowed: torch.Tensor, text_real: torch.Tensor) -> torch.Tensor:
    """Combine a structural (L, L) mask with a (B, T) mask of real text tokens → (B, L, L).

    Padded keys are hidden from every query but themselves, so no row is ever empty. Pure tensor
    work, no host synchronisation: the fused model calls it in every forward pass.
    """
    B, T = text_real.shape
    L = allowed.shape[-1]
    key_real = torch.cat([text_real, text_real.new_ones(B, L - T)], dim=1)  # (B, L)
    eye = torch.eye(L, dtype=torch.bool, device=allowed.device)
    return (allowed[None] & key_real[:, None, :]) | eye[None]  # (B, L, L)


@dataclass(frozen=True, eq=False)
class FusionMask:
    """A preset applied to concrete sizes, optionally with a per-batch text key-padding mask.

    ``text_padding``: (B, text_len) bool, True where the text token is real (not padding).
    """

    text_len: int
    n_a: int
    n_v: int
    n_av: int
    preset: str = "avseesall"
    text_padding: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("text_len", "n_a", "n_v", "n_av"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
        if self.seq_len == 0:
            raise ValueError("text_len + n_a + n_v + n_av: expected at least one position, got 0")
        preset(self.preset)  # fail early on an unknown preset
        pad = self.text_padding
        if pad is not None:
            if pad.dtype != torch.bool or pad.dim() != 2 or pad.shape[1] != self.text_len:
                raise ValueError(
                    f"text_padding: expected a bool tensor of shape (batch, {self.text_len}), "
                    f"got {pad.dtype} {tuple(pad.shape)}"
                )

    # -- layout ---------------------------------------------------------------------------------

    @property
    def seq_len(self) -> int:
        return self.text_len + self.n_a + self.n_v + self.n_av

    @property
    def segments(self) -> list[Segment]:
        """The four segments in sequence order, zero-length ones included."""
        out, start = [], 0
        for name, length in zip(SEGMENTS, (self.text_len, self.n_a, self.n_v, self.n_av)):
            out.append(Segment(name, start, length))
            start += length
        return out

    def with_padding(self, text_padding: torch.Tensor) -> "FusionMask":
        """The same mask combined with a (B, text_len) bool mask, True = real token."""
        return FusionMask(self.text_len, self.n_a, self.n_v, self.n_av, self.preset, text_padding)

    def with_right_padding(self, pad: int) -> "FusionMask":
        """The same mask with the last ``pad`` text positions marked as padding (batch of one)."""
        if not 0 <= pad <= self.text_len:
            raise ValueError(f"pad: expected 0..{self.text_len} (the text length), got {pad}")
        real = torch.arange(self.text_len) < self.text_len - pad
        return self.with_padding(real[None, :])

    # -- renderings -----------------------------------------------------------------------------

    def block_allowed(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(L, L) bool: the preset's structure alone, without padding."""
        spec, L = preset(self.preset), self.seq_len
        allowed = torch.zeros(L, L, dtype=torch.bool, device=device)
        for q in self.segments:
            for k in self.segments:
                rel = spec.relation(q.name, k.name)
                if rel == "all":
                    allowed[q.start:q.stop, k.start:k.stop] = True
                elif rel == "causal":  # q is k: lower triangle of the diagonal block
                    allowed[q.start:q.stop, k.start:k.stop] = torch.ones(
                        q.length, k.length, dtype=torch.bool, device=device
                    ).tril()
        return allowed

    def allowed(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Bool, True = may attend: (L, L) without padding, (B, L, L) with it."""
        allowed = self.block_allowed(device)
        if self.text_padding is None:
            return allowed
        return with_text_padding(allowed, self.text_padding.to(device))

    def sdpa_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """For ``scaled_dot_product_attention``: bool (B or 1, 1, L, L), True = attend."""
        allowed = self.allowed(device)
        return allowed.view(-1, 1, self.seq_len, self.seq_len)

    def materialize(
        self,
        shape: tuple[int, int, int, int] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        *,
        masked_value: float | None = None,
    ) -> torch.Tensor:
        """Additive bias for xformers (and eager/SDPA): 0 where allowed, ``masked_value`` elsewhere.

        ``masked_value`` defaults to −inf (safe: no row is ever fully masked); pass
        ``torch.finfo(dtype).min`` for kernels that dislike infinities. The key dimension is
        allocated padded to a multiple of 8 and sliced back, as xformers requires of a dense bias.
        With ``shape=(B, H, L, L)`` the result is broadcast (a view, no copy) to that shape.
        """
        return additive_bias(self.sdpa_mask(device), shape, dtype, masked_value=masked_value)

    # -- summaries ------------------------------------------------------------------------------

    def relations(self) -> dict[tuple[str, str], Relation]:
        """The preset's relation for every (query, key) pair of segments."""
        spec = preset(self.preset)
        return {(q, k): spec.relation(q, k) for q in SEGMENTS for k in SEGMENTS}

    def to_json(self) -> dict:
        """``{"preset", "segments", "allowed"}``; with a batch of padding masks, the first sample's matrix."""
        allowed = self.allowed()
        if allowed.dim() == 3:
            allowed = allowed[0]
        return {
            "preset": self.preset,
            "segments": [{"name": s.name, "start": s.start, "length": s.length} for s in self.segments],
            "allowed": allowed.to(torch.int8).tolist(),
        }
