"""The fusion mask: who may attend to whom inside the frozen GPT-2 (design.md §4, the paper's core idea).

The sequence is ``text (T) | A (n_a) | V (n_v) | AV (n_av)`` (the segments of :mod:`dmpf_cli.streams`).
A *preset* says, for each pair of segments, whether queries of one see keys of the other causally,
entirely or not at all; a :class:`FusionMask` applies a preset to concrete sizes and an optional
per-batch text padding mask, and renders itself for each attention backend:

* :meth:`FusionMask.render` — what the fused model runs: the mask prepared for a backend (a bool mask
  for SDPA and eager, the padded additive bias storage for xformers), once per forward pass;
* :meth:`FusionMask.allowed` — boolean matrix, True = may attend (rows = queries, columns = keys);
* :meth:`FusionMask.sdpa_mask` — what ``torch.nn.functional.scaled_dot_product_attention`` takes;
* :meth:`FusionMask.materialize` — the additive float bias (0 / −inf or the dtype minimum) as
  ``xformers.ops.memory_efficient_attention`` takes it: key dimension allocated padded to a multiple
  of 8 and then sliced, as xformers requires of a dense bias.

All three renderings are views of :meth:`render`'s. Every query always sees itself, and padded text keys
are hidden from every other query, so no row is ever fully masked and a padded position can never leak
into a real one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, NamedTuple

import torch

from ..registry import get, register
from ..streams import SEGMENTS, STREAMS
from .attention import PreparedMask, prepare_mask

Relation = Literal["causal", "all", "none"]
T, A, V, AV = SEGMENTS  # the presets below are written in the paper's table's terms


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
        if any(self.relation(T, k) != "none" for k in SEGMENTS[1:]) or self.relation(T, T) != "causal":
            raise ValueError(f"mask preset '{self.name}': text must see only text, causally")
        for seg in SEGMENTS:
            if self.relation(seg, seg) == "none":
                raise ValueError(f"mask preset '{self.name}': segment '{seg}' must see itself")

    def relation(self, query: str, key: str) -> Relation:
        return self.rules.get((query, key), "none")


def _preset(name: str, description: str, sees: dict[str, dict[str, Relation]]) -> MaskPreset:
    return MaskPreset(name, description, {(q, k): rel for q, row in sees.items() for k, rel in row.items()})


_TEXT_ROW: dict[str, Relation] = {T: "causal"}


@register("mask", "avseesall")
def avseesall() -> MaskPreset:
    """The paper's mask: A and V see text; AV sees text, A and V."""
    return _preset("avseesall", avseesall.__doc__, {
        T: _TEXT_ROW,
        A: {T: "all", A: "causal"},
        V: {T: "all", V: "causal"},
        AV: {T: "all", A: "all", V: "all", AV: "causal"},
    })


@register("mask", "original")
def original() -> MaskPreset:
    """Reference variant: as avseesall, but AV sees only text and AV."""
    return _preset("original", original.__doc__, {
        T: _TEXT_ROW,
        A: {T: "all", A: "causal"},
        V: {T: "all", V: "causal"},
        AV: {T: "all", AV: "causal"},
    })


@register("mask", "allcausal")
def allcausal() -> MaskPreset:
    """Reference variant: as avseesall, but V also sees A."""
    return _preset("allcausal", allcausal.__doc__, {
        T: _TEXT_ROW,
        A: {T: "all", A: "causal"},
        V: {T: "all", A: "all", V: "causal"},
        AV: {T: "all", A: "all", V: "all", AV: "causal"},
    })


@register("mask", "av_attends_only_av_a_v")
def av_attends_only_av_a_v() -> MaskPreset:
    """Reference variant: as avseesall, but AV does not see text."""
    return _preset("av_attends_only_av_a_v", av_attends_only_av_a_v.__doc__, {
        T: _TEXT_ROW,
        A: {T: "all", A: "causal"},
        V: {T: "all", V: "causal"},
        AV: {A: "all", V: "all", AV: "causal"},
    })


def get_preset(name: str) -> MaskPreset:
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


class FusionMask:
    """A preset applied to concrete sizes, optionally with a per-batch text key-padding mask.

    ``FusionMask(text_len, n_a, n_v, n_av, preset=..., text_padding=...)``: the token counts in stream
    order, positionally or by their config keys (``fusion.n_a`` …). ``text_padding``: (B, text_len) bool,
    True where the text token is real (not padding). Immutable; the structural matrix (the preset at these
    sizes, before padding) is built once per device and shared with :meth:`with_padding`'s copies, so the
    fused model can ask for a padded rendering in every forward pass for the price of the padding alone.
    """

    def __init__(self, text_len: int, *tokens: int, preset: str = "avseesall",
                 text_padding: torch.Tensor | None = None, **by_key: int):
        keys = [s.tokens_key for s in STREAMS]
        unknown = sorted(set(by_key) - set(keys))
        if unknown or len(tokens) > len(keys):
            raise TypeError(f"FusionMask takes text_len and the token counts {', '.join(keys)}; got "
                            f"{len(tokens)} positional count(s){', unknown ' + ', '.join(unknown) if unknown else ''}")
        counts = dict(zip(keys, tokens))
        for key, value in by_key.items():
            if key in counts:
                raise TypeError(f"FusionMask: {key} given twice")
            counts[key] = value
        missing = [k for k in keys if k not in counts]
        if missing:
            raise TypeError(f"FusionMask: missing token count(s) {', '.join(missing)}")
        for name, value in (("text_len", text_len), *((k, counts[k]) for k in keys)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
        self.text_len = text_len
        self.tokens = {s.name: counts[s.tokens_key] for s in STREAMS}  # stream name -> fusion tokens
        self.preset = preset
        if self.seq_len == 0:
            raise ValueError(f"{' + '.join(['text_len', *keys])}: expected at least one position, got 0")
        self._spec = get_preset(preset)  # fails early, with the close matches, on an unknown preset
        if text_padding is not None and (text_padding.dtype != torch.bool or text_padding.dim() != 2
                                         or text_padding.shape[1] != text_len):
            raise ValueError(f"text_padding: expected a bool tensor of shape (batch, {text_len}), "
                             f"got {text_padding.dtype} {tuple(text_padding.shape)}")
        self.text_padding = text_padding
        self._structure: dict[str, torch.Tensor] = {}  # device -> (L, L) bool; shared with padded copies

    def __repr__(self) -> str:
        counts = ", ".join(f"{s.tokens_key}={self.tokens[s.name]}" for s in STREAMS)
        padding = "" if self.text_padding is None else f", padding of {self.text_padding.shape[0]} sample(s)"
        return f"FusionMask(text_len={self.text_len}, {counts}, preset={self.preset!r}{padding})"

    # -- layout ---------------------------------------------------------------------------------

    @property
    def seq_len(self) -> int:
        return self.text_len + sum(self.tokens.values())

    @property
    def segments(self) -> list[Segment]:
        """The segments in sequence order, zero-length ones included."""
        out, start = [], 0
        for name, length in zip(SEGMENTS, (self.text_len, *self.tokens.values())):
            out.append(Segment(name, start, length))
            start += length
        return out

    def with_padding(self, text_padding: torch.Tensor) -> "FusionMask":
        """The same mask combined with a (B, text_len) bool mask, True = real token."""
        padded = FusionMask(self.text_len, *self.tokens.values(), preset=self.preset, text_padding=text_padding)
        padded._structure = self._structure  # the same preset at the same sizes: one structural matrix
        return padded

    def with_right_padding(self, pad: int) -> "FusionMask":
        """The same mask with the last ``pad`` text positions marked as padding (batch of one)."""
        if not 0 <= pad <= self.text_len:
            raise ValueError(f"pad: expected 0..{self.text_len} (the text length), got {pad}")
        real = torch.arange(self.text_len) < self.text_len - pad
        return self.with_padding(real[None, :])

    # -- renderings -----------------------------------------------------------------------------

    def block_allowed(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(L, L) bool: the preset's structure alone, without padding (built once per device)."""
        key = str(torch.device(device) if device is not None else torch.device("cpu"))
        if key not in self._structure:
            L = self.seq_len
            allowed = torch.zeros(L, L, dtype=torch.bool, device=device)
            for q in self.segments:
                for k in self.segments:
                    rel = self._spec.relation(q.name, k.name)
                    if rel == "all":
                        allowed[q.start:q.stop, k.start:k.stop] = True
                    elif rel == "causal":  # q is k: lower triangle of the diagonal block
                        allowed[q.start:q.stop, k.start:k.stop] = torch.ones(
                            q.length, k.length, dtype=torch.bool, device=device
                        ).tril()
            self._structure[key] = allowed
        return self._structure[key]

    def allowed(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Bool, True = may attend: (L, L) without padding, (B, L, L) with it.

        Padded text keys are hidden from every query but themselves, so no row is ever empty. Pure tensor
        work, no host synchronisation: the fused model asks for it in every forward pass.
        """
        allowed = self.block_allowed(device)
        if self.text_padding is None:
            return allowed
        text_real = self.text_padding.to(allowed.device)
        B, L = text_real.shape[0], self.seq_len
        key_real = torch.cat([text_real, text_real.new_ones(B, L - self.text_len)], dim=1)  # (B, L)
        eye = torch.eye(L, dtype=torch.bool, device=allowed.device)
        return (allowed[None] & key_real[:, None, :]) | eye[None]  # (B, L, L)

    def render(self, backend: str, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
               *, masked_value: float | None = None) -> PreparedMask:
        """The mask as ``backend`` takes it (see :func:`~dmpf_cli.model.attention.prepare_mask`): bool
        (B or 1, 1, L, L) for sdpa and eager; for xformers the additive bias storage in ``dtype`` (the dtype
        attention runs in), key dimension allocated padded to a multiple of 8. This is what the fused model runs.
        """
        return prepare_mask(self.allowed(device).view(-1, self.seq_len, self.seq_len), backend, dtype,
                            masked_value=masked_value)

    def sdpa_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """For ``scaled_dot_product_attention``: bool (B or 1, 1, L, L), True = attend."""
        return self.render("sdpa", device=device).value

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
        allocated padded to a multiple of 8 and sliced back, as xformers requires of a dense bias:
        the xformers rendering (:meth:`render`) without its padding columns. With
        ``shape=(B, H, L, L)`` the result is broadcast (a view, no copy) to that shape.
        """
        L = self.seq_len
        bias = self.render("xformers", dtype, device, masked_value=masked_value).value[..., :L]  # (b, 1, L, L)
        if shape is None:
            return bias
        b = bias.shape[0]
        if len(shape) != 4 or tuple(shape[2:]) != (L, L) or (b != 1 and shape[0] != b):
            raise ValueError(f"shape: expected (batch, heads, {L}, {L}) compatible with batch {b}, got {tuple(shape)}")
        return bias.expand(*shape)

    # -- summaries ------------------------------------------------------------------------------

    def relations(self) -> dict[tuple[str, str], Relation]:
        """The preset's relation for every (query, key) pair of segments."""
        return {(q, k): self._spec.relation(q, k) for q in SEGMENTS for k in SEGMENTS}

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
