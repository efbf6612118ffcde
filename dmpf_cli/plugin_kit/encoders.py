"""The encoder contract: ``factory(cfg: EncoderConfig, in_dims: tuple[int, ...]) -> nn.Module``.

The module has an ``out_dim: int`` and ``forward(*streams) -> (seq, lengths)``: one ``(x, n)`` pair per input
stream (``x`` of shape ``(B, L, D_i)``, ``n`` the real frame counts, ``(B,)`` long; frames at or past ``n`` are
padding and may hold anything, -inf and NaN included), returning ``seq`` ``(B, cfg.max_len, out_dim)`` float32
whose padded positions are exactly zero, and ``lengths`` ``(B,)`` long in ``[0, cfg.max_len]``. An encoder is
built for one input (A or V) or two (the bimodal AV encoder); a sample may be empty (``n = 0``).

Every check runs with one and with two input streams, on inputs that hold padding, a sample longer than
``max_len`` (downsampled) and an empty one.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import EncoderConfig
from ..registry import Component
from ..streams import DATASETS
from .contract import Contract, assert_refused

encoder_contract = Contract("encoder", "factory(cfg: EncoderConfig, in_dims: tuple[int, ...]) -> nn.Module")

B = 4  # samples in a batch
MAX_LEN = 8  # the encoders' time grid
FEATURE_DIMS = DATASETS["mosei"].feature_dims  # real feature widths (COVAREP audio, Facet vision)
STREAM_COUNTS = (1, 2)  # a unimodal and a bimodal encoder


def enc_cfg(name: str = "transformer", **kw: Any) -> EncoderConfig:
    """The small config every check builds from (``kw`` overrides its fields)."""
    base = dict(name=name, d=16, heads=4, layers=1, max_len=MAX_LEN, dropout=0.1, p_mask=0.1, whole_modality_dropout=0.3)
    return EncoderConfig(**(base | kw))


def make_stream(lengths: list[int], L: int, D: int, pad: float = 1e6):
    """Random frames ``(len(lengths), L, D)`` whose padded frames hold ``pad``, and the lengths."""
    n = torch.tensor(lengths)
    x = torch.randn(len(lengths), L, D)
    x[torch.arange(L)[None, :] >= n[:, None]] = pad
    return x, n


def encoder_inputs(n_streams: int, pad: float = 1e6) -> list:
    """One or two streams with padding, a long sample (downsampled) and a length-0 sample."""
    audio = make_stream([20, 13, 5, 0], 20, FEATURE_DIMS[0], pad)
    vision = make_stream([12, 0, 12, 3], 12, FEATURE_DIMS[1], pad)
    return [audio, vision][:n_streams]


def repad(streams: list, pad: float) -> list:
    """The same streams with ``pad`` in every padded frame."""
    out = []
    for x, n in streams:
        x = x.clone()
        x[torch.arange(x.shape[1])[None, :] >= n[:, None]] = pad
        out.append((x, n))
    return out


def build_encoder(component: Component, n_streams: int, seed: int = 0, **kw: Any):
    """``component`` built from :func:`enc_cfg` for ``n_streams`` inputs, its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return component.factory(enc_cfg(component.name, **kw), FEATURE_DIMS[:n_streams])


def assert_finite_grads(module) -> None:
    """Every trainable parameter of ``module`` got a finite gradient."""
    for name, p in module.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


def _streams_label(n_streams: int) -> str:
    return "unimodal" if n_streams == 1 else "bimodal"


@encoder_contract.check
def shapes(component: Component, **config: Any) -> None:
    """seq is (B, max_len, out_dim) float32, lengths (B,) long in [0, max_len], padded positions exactly 0"""
    for n_streams in STREAM_COUNTS:
        where = _streams_label(n_streams)
        enc = build_encoder(component, n_streams, **config)
        assert isinstance(enc.out_dim, int), f"{where}: out_dim must be an int, got {type(enc.out_dim).__name__}"
        for mode in ("train", "eval"):
            getattr(enc, mode)()
            seq, lengths = enc(*encoder_inputs(n_streams))
            assert seq.shape == (B, MAX_LEN, enc.out_dim), \
                f"{where}, {mode}: seq shape {tuple(seq.shape)}, expected {(B, MAX_LEN, enc.out_dim)}"
            assert seq.dtype == torch.float32, f"{where}, {mode}: seq dtype {seq.dtype}, expected torch.float32"
            assert lengths.shape == (B,) and lengths.dtype == torch.long, \
                f"{where}, {mode}: lengths {tuple(lengths.shape)} {lengths.dtype}, expected ({B},) torch.int64"
            assert ((lengths >= 0) & (lengths <= MAX_LEN)).all(), \
                f"{where}, {mode}: lengths {lengths.tolist()} outside [0, {MAX_LEN}]"
            padded = torch.arange(MAX_LEN)[None, :] >= lengths[:, None]  # (B, T)
            assert (seq[padded] == 0).all(), f"{where}, {mode}: padded output positions must be zero"


def _backward_is_finite(enc, seq: torch.Tensor, where: str) -> None:
    """Backpropagate a random projection of ``seq`` (random weights: a plain sum can cancel through a LayerNorm) and
    assert every trainable parameter's gradient is finite, the failure naming ``where``."""
    (seq * torch.randn_like(seq)).sum().backward()
    try:
        assert_finite_grads(enc)
    except AssertionError as exc:
        raise AssertionError(f"{where}: {exc}") from None


@encoder_contract.check
def backward(component: Component, **config: Any) -> None:
    """the output is finite and every trainable parameter gets a finite gradient"""
    for n_streams in STREAM_COUNTS:
        where = _streams_label(n_streams)
        enc = build_encoder(component, n_streams, **config).train()
        seq, _ = enc(*encoder_inputs(n_streams))
        assert torch.isfinite(seq).all(), f"{where}: non-finite output"
        _backward_is_finite(enc, seq, where)


@encoder_contract.check
def empty_samples(component: Component, **config: Any) -> None:
    """no NaN or inf with padding, an empty sample and an all-empty first stream, in train and eval"""
    for n_streams in STREAM_COUNTS:
        where = _streams_label(n_streams)
        enc = build_encoder(component, n_streams, **config)
        streams = encoder_inputs(n_streams)
        empty = [(x, torch.zeros_like(n)) for x, n in streams[:1]] + streams[1:]  # an all-empty first stream
        for mode in ("train", "eval"):
            getattr(enc, mode)()
            for what, inputs in (("padded inputs", encoder_inputs(n_streams)), ("an all-empty first stream", empty)):
                seq, _ = enc(*inputs)
                assert torch.isfinite(seq).all(), f"{where}, {mode}: non-finite output with {what}"


@encoder_contract.check
def eval_deterministic(component: Component, **config: Any) -> None:
    """in eval mode the same input gives exactly the same output"""
    for n_streams in STREAM_COUNTS:
        enc = build_encoder(component, n_streams, **config).eval()
        streams = encoder_inputs(n_streams)
        with torch.no_grad():
            first, _ = enc(*streams)
            second, _ = enc(*streams)
        assert torch.equal(first, second), f"{_streams_label(n_streams)}: two eval passes differ"


@encoder_contract.check
def seeded_build(component: Component, **config: Any) -> None:
    """built twice from the same torch seed, the weights are identical (runs are reproducible by seed)"""
    for n_streams in STREAM_COUNTS:
        first = build_encoder(component, n_streams, seed=3, **config).state_dict()
        second = build_encoder(component, n_streams, seed=3, **config).state_dict()
        assert first.keys() == second.keys(), f"{_streams_label(n_streams)}: the state_dict keys differ"
        differ = [k for k in first if not torch.equal(first[k], second[k])]
        assert not differ, f"{_streams_label(n_streams)}: {differ[0]} differs between two builds from one seed"


@encoder_contract.check
def state_dict_round_trip(component: Component, **config: Any) -> None:
    """a state_dict loaded into a fresh build gives exactly the same outputs (running statistics included)"""
    for n_streams in STREAM_COUNTS:
        streams = encoder_inputs(n_streams)
        src = build_encoder(component, n_streams, seed=0, **config).train()
        src(*streams)  # a training pass, so any running statistics differ from a fresh build
        dst = build_encoder(component, n_streams, seed=1, **config)
        dst.load_state_dict(src.state_dict())
        src.eval(), dst.eval()
        with torch.no_grad():
            torch.testing.assert_close(dst(*streams), src(*streams), rtol=0, atol=0,
                                       msg=lambda m, n=n_streams: f"{_streams_label(n)}: {m}")


@encoder_contract.check
def padding_ignored(component: Component, **config: Any) -> None:
    """what the padded frames hold (0, 1e6, -3, 1e30) changes nothing"""
    for n_streams in STREAM_COUNTS:
        enc = build_encoder(component, n_streams, **config).eval()
        streams = encoder_inputs(n_streams, pad=0.0)
        with torch.no_grad():
            reference = enc(*streams)
            for pad in (1e6, -3.0, 1e30):
                torch.testing.assert_close(enc(*repad(streams, pad)), reference, msg=lambda m, n=n_streams, p=pad: (
                    f"{_streams_label(n)}: padding frames holding {p} change the output: {m}"))


@encoder_contract.check
def nonfinite_padding(component: Component, **config: Any) -> None:
    """inf, -inf and NaN in padded frames change nothing, forward or backward (MOSEI's audio holds -inf)"""
    for n_streams in STREAM_COUNTS:
        where = _streams_label(n_streams)
        enc = build_encoder(component, n_streams, **config).eval()
        streams = encoder_inputs(n_streams, pad=0.0)
        with torch.no_grad():
            reference, _ = enc(*streams)
            for pad in (float("inf"), float("-inf"), float("nan")):
                torch.testing.assert_close(enc(*repad(streams, pad))[0], reference, msg=lambda m, w=where, p=pad: (
                    f"{w}: padding frames holding {p} change the output: {m}"))
        enc.train()
        seq, _ = enc(*repad(streams, float("nan")))
        _backward_is_finite(enc, seq, f"{where}, NaN padding")


@encoder_contract.check
def unknown_option(component: Component, **config: Any) -> None:
    """an unknown key in options is refused when it is built, in one line naming it (ValueError or DmpfError)"""
    assert_refused(lambda: build_encoder(component, 1, **(config | {"options": {"unknown_knob": 1}})),
                         "unknown_knob", "options.unknown_knob")

