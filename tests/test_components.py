"""Encoders and heads: a contract every registered component must meet, then the built-ins' specifics.

The contracts live in the package (:mod:`dmpf_cli.plugin_kit`, what ``dmpf plugins check`` runs); the tests here
are parametrised over the registry at collection time, so a third-party plugin registered through
``dmpf.plugins`` is tested here for free, under its own name.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from dmpf_cli import registry
from dmpf_cli.config import HeadConfig
from dmpf_cli.model.encoders import downsample, sinusoidal_positions
from dmpf_cli.plugin_kit import encoder_contract, head_contract
from dmpf_cli.plugin_kit.encoders import (
    MAX_LEN,
    B,
    assert_finite_grads,
    build_encoder,
    enc_cfg,
    encoder_inputs,
    make_stream,
    repad,
)
from dmpf_cli.plugin_kit.heads import HEAD_DIMS, head_inputs

ENCODERS = registry.names("encoder")  # every registered one: the built-ins and any installed plugin's
HEADS = registry.names("head")

AUDIO_DIM, VISION_DIM = 74, 35  # MOSEI's COVAREP and Facet widths
DIMS = {1: (AUDIO_DIM,), 2: (AUDIO_DIM, VISION_DIM)}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------------
# the contracts, shipped in dmpf_cli.plugin_kit (what `dmpf plugins check NAME` runs): every check of the encoder
# contract on every registered encoder (with one input stream and with two, inside each check), and of the head
# contract on every registered head, one test per component and check


test_encoder_contract = encoder_contract.pytest_tests(ENCODERS)
# the whole encoder contract again with ``fuse_norm: false`` (the test above runs the default, true)
test_encoder_contract_without_fuse_norm = encoder_contract.pytest_tests(ENCODERS, fuse_norm=False)
test_head_contract = head_contract.pytest_tests(HEADS)


def test_the_contracts_check_what_they_promise() -> None:
    """The checks that the contract classes of this file ran before they moved into the kit, and more."""
    assert {"shapes", "backward", "empty-samples", "eval-deterministic", "state-dict-round-trip",
            "padding-ignored"} <= set(encoder_contract.names())
    assert {"shapes", "backward", "zero-representations", "eval-deterministic", "state-dict-round-trip",
            "every-ablation"} <= set(head_contract.names())


# ------------------------------------------------------------------------------------------------
# downsample (design.md §2: contiguous, length-aware mean)


def frames(L: int, D: int = 2) -> Tensor:
    """(1, L, D) with frame i equal to i in every feature."""
    return torch.arange(L, dtype=torch.float32)[None, :, None].expand(1, L, D).clone()


def test_downsample_averages_contiguous_chunks() -> None:
    out, n = downsample(frames(6), torch.tensor([6]), 3)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.5, 2.5, 4.5]))  # [0,1], [2,3], [4,5]
    assert n.tolist() == [3]


def test_downsample_uneven_chunks() -> None:
    out, n = downsample(frames(7), torch.tensor([7]), 3)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([1.0, 3.5, 5.5]))  # [0,1,2], [3,4], [5,6]
    assert n.tolist() == [3]


def test_downsample_uses_the_real_length_not_the_padded_one() -> None:
    x = frames(10)
    x[:, 6:] = 1e30  # padding
    out, n = downsample(x, torch.tensor([6]), 3)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.5, 2.5, 4.5]))
    assert n.tolist() == [3]


@pytest.mark.parametrize("pad", [1e30, -1e30, float("inf"), float("-inf"), float("nan")])
def test_downsample_padding_never_leaks(pad: float) -> None:
    x = torch.randn(3, 9, 4, requires_grad=True)
    lengths = torch.tensor([9, 5, 2])
    clean, _ = downsample(x, lengths, 4)
    dirty = x.detach().clone()
    dirty[torch.arange(9)[None, :] >= lengths[:, None]] = pad
    dirty.requires_grad_(True)
    out, _ = downsample(dirty, lengths, 4)
    torch.testing.assert_close(out, clean)
    out.sum().backward()
    assert torch.isfinite(dirty.grad).all()


def test_downsample_short_sequences_pass_through() -> None:
    x = torch.randn(2, 6, 3)
    out, n = downsample(x, torch.tensor([2, 3]), 3)
    assert n.tolist() == [2, 3]
    torch.testing.assert_close(out[0, :2], x[0, :2])
    assert (out[0, 2] == 0).all()
    torch.testing.assert_close(out[1], x[1, :3])


def test_downsample_pads_inputs_shorter_than_max_len() -> None:
    x = torch.randn(1, 2, 3)
    out, n = downsample(x, torch.tensor([2]), 5)
    assert out.shape == (1, 5, 3) and n.tolist() == [2]
    torch.testing.assert_close(out[0, :2], x[0])
    assert (out[0, 2:] == 0).all()


def test_downsample_empty_and_overlong_lengths() -> None:
    x = torch.randn(2, 4, 3)
    out, n = downsample(x, torch.tensor([0, 99]), 2)  # 99 > L: clamped to the 4 frames there are
    assert n.tolist() == [0, 2]
    assert (out[0] == 0).all() and torch.isfinite(out).all()
    torch.testing.assert_close(out[1], torch.stack([x[1, :2].mean(0), x[1, 2:].mean(0)]))


def test_sinusoidal_positions_odd_width() -> None:
    table = sinusoidal_positions(5, 7)
    assert table.shape == (5, 7)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1, 0, 1, 0, 1, 0]))


# ------------------------------------------------------------------------------------------------
# the built-in transformer encoder


def transformer_encoder(n_streams: int, **kw) -> nn.Module:
    return build_encoder(registry.get("encoder", "transformer"), n_streams, **kw)


def test_encoder_output_lengths() -> None:
    audio, vision = encoder_inputs(2)
    uni = transformer_encoder(1).eval()
    assert uni(audio)[1].tolist() == [8, 8, 5, 0]  # min(n, max_len)
    bi = transformer_encoder(2).eval()
    # max over the two branches, each stretched to max_len when non-empty (the 3-frame vision of the last sample)
    assert bi(audio, vision)[1].tolist() == [8, 8, 8, 8]


@pytest.mark.parametrize("n_streams", [1, 2], ids=["unimodal", "bimodal"])
def test_encoder_ignores_nonfinite_padding(n_streams: int) -> None:
    """inf and NaN in padded frames change nothing, forward or backward (MOSEI audio has -inf)."""
    streams = encoder_inputs(n_streams, pad=0.0)
    enc = transformer_encoder(n_streams).eval()
    with torch.no_grad():
        reference, _ = enc(*streams)
        for pad in (float("inf"), float("-inf"), float("nan")):
            torch.testing.assert_close(enc(*repad(streams, pad))[0], reference)
    enc.train()
    seq, _ = enc(*repad(streams, float("nan")))
    (seq * torch.randn_like(seq)).sum().backward()
    assert_finite_grads(enc)


def test_encoder_time_step_masking_only_in_training() -> None:
    streams = encoder_inputs(1)
    plain = transformer_encoder(1, p_mask=0.0, dropout=0.0)
    masked = transformer_encoder(1, p_mask=0.5, dropout=0.0)
    plain.eval(), masked.eval()
    with torch.no_grad():
        torch.testing.assert_close(masked(*streams), plain(*streams))
        masked.train()
        assert not torch.equal(masked(*streams)[0], plain(*streams)[0])


def test_whole_modality_dropout_never_drops_both_inputs() -> None:
    enc = transformer_encoder(2, whole_modality_dropout=0.9, dropout=0.0, p_mask=0.0).train()
    seen: list[Tensor] = []
    enc.fuse.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    batch = 64
    audio = (torch.randn(batch, 20, AUDIO_DIM), torch.full((batch,), 20))
    vision = (torch.randn(batch, 12, VISION_DIM), torch.full((batch,), 12))
    enc(audio, vision)
    fused_in = seen[0]  # (B, T, 2d)
    zero_a = (fused_in[..., :16] == 0).flatten(1).all(1)
    zero_v = (fused_in[..., 16:] == 0).flatten(1).all(1)
    assert not (zero_a & zero_v).any()
    assert zero_a.any() and zero_v.any()
    enc.eval()
    seen.clear()
    enc(audio, vision)
    assert not (seen[0] == 0).flatten(1).all(1).any(), "no modality dropout in eval"


def test_av_time_step_dropout_zeroes_single_steps_of_each_branch_independently() -> None:
    """The reference's AV dropout (p_mask on an encoder with two inputs): each time step of each branch is zeroed
    with p in training, the two branches drawn independently, and never a whole input."""
    p = 0.1
    enc = transformer_encoder(2, p_mask=p, whole_modality_dropout=0.0, dropout=0.0, layers=0, input_norm=False)
    seen: list[Tensor] = []
    enc.fuse.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    batch = 512
    audio = (torch.randn(batch, 20, AUDIO_DIM), torch.full((batch,), 20))
    vision = (torch.randn(batch, 12, VISION_DIM), torch.full((batch,), 12))
    torch.manual_seed(0)
    enc.train()(audio, vision)
    steps = seen[0]  # (B, T, 2d): the branches' outputs side by side, before the fuse layer
    zero_a, zero_v = (steps[..., :16] == 0).all(-1), (steps[..., 16:] == 0).all(-1)  # (B, T) each
    for zero in (zero_a, zero_v):
        assert abs(zero.float().mean().item() - p) < 0.02
        assert not zero.all(1).any(), "a whole input was dropped"
    both = (zero_a & zero_v).float().mean().item()
    assert abs(both - p * p) < 0.006, "the branches' steps are drawn independently"
    seen.clear()
    enc.eval()(audio, vision)
    assert not (seen[0][..., :16] == 0).all(-1).any() and not (seen[0][..., 16:] == 0).all(-1).any()


def test_encoder_other_widths_and_depths() -> None:
    streams = encoder_inputs(2)
    for kw in (dict(d=15, heads=5), dict(layers=0), dict(input_norm=False, max_len=30)):
        enc = transformer_encoder(2, **kw).eval()
        seq, _ = enc(*streams)
        assert seq.shape == (B, kw.get("max_len", MAX_LEN), kw.get("d", 16)) and torch.isfinite(seq).all()


def test_encoder_rejects_wrong_stream_count_and_options() -> None:
    audio, vision = encoder_inputs(2)
    with pytest.raises(ValueError, match="expected 1"):
        transformer_encoder(1)(audio, vision)
    with pytest.raises(ValueError, match="unknown_knob"):
        registry.create("encoder", "transformer", enc_cfg(options={"unknown_knob": 1}), DIMS[1])


# ------------------------------------------------------------------------------------------------
# several inputs: one time grid (downsample's stretch), and the LayerNorm after the fuse layer


def stretched_source(n: int, max_len: int) -> list[int]:
    """The frame each step of a stretched sample reads: the one covering relative time j/max_len."""
    return [j * n // max_len for j in range(max_len)]


def test_downsample_stretch_pairs_relative_times() -> None:
    """Audio of 12 frames and vision of 3 on a 6-step grid: step j of both covers the same part of the clip."""
    audio, n_a = downsample(frames(12), torch.tensor([12]), 6, stretch=True)
    vision, n_v = downsample(frames(3), torch.tensor([3]), 6, stretch=True)
    torch.testing.assert_close(audio[0, :, 0], torch.tensor([0.5, 2.5, 4.5, 6.5, 8.5, 10.5]))  # [0,1], [2,3], …
    torch.testing.assert_close(vision[0, :, 0], torch.tensor([0.0, 0, 1, 1, 2, 2]))
    assert n_a.tolist() == n_v.tolist() == [6]


@pytest.mark.parametrize(("n", "max_len"), [(3, 7), (1, 5), (5, 8), (7, 8), (2, 39), (38, 39)])
def test_downsample_stretch_reads_the_frame_under_each_step(n: int, max_len: int) -> None:
    out, lengths = downsample(frames(n + 2), torch.tensor([n]), max_len, stretch=True)
    source = out[0, :, 0].long().tolist()
    assert source == stretched_source(n, max_len)
    for j, i in enumerate(source):  # frame i covers relative times [i/n, (i+1)/n)
        assert i * max_len <= j * n < (i + 1) * max_len
    assert source == sorted(source) and set(source) == set(range(n))  # every frame, in order
    assert lengths.tolist() == [max_len]


def test_downsample_stretch_keeps_long_samples() -> None:
    """n >= max_len: stretching changes nothing (contiguous chunk means, as without it)."""
    x = torch.randn(4, 11, 3)
    lengths = torch.tensor([11, 7, 9, 8])
    for max_len in (6, 7):
        plain = downsample(x, lengths, max_len)
        torch.testing.assert_close(downsample(x, lengths, max_len, stretch=True), plain, rtol=0, atol=0)


def test_downsample_stretch_lengths() -> None:
    x = torch.randn(6, 9, 3)
    out, n = downsample(x, torch.tensor([0, 1, 3, 6, 9, 99]), 6, stretch=True)
    assert n.tolist() == [0, 6, 6, 6, 6, 6] and n.dtype == torch.long
    assert (out[0] == 0).all()  # an empty sample stays empty
    torch.testing.assert_close(out[1], x[1, :1].expand(6, 3))  # one frame fills the grid


@pytest.mark.parametrize("pad", [1e6, float("inf"), float("-inf"), float("nan")])
def test_downsample_stretch_padding_never_leaks(pad: float) -> None:
    x = torch.randn(4, 9, 4)
    lengths = torch.tensor([9, 5, 2, 0])
    clean, _ = downsample(x, lengths, 6, stretch=True)
    dirty = x.clone()
    dirty[torch.arange(9)[None, :] >= lengths[:, None]] = pad
    dirty.requires_grad_(True)
    out, _ = downsample(dirty, lengths, 6, stretch=True)
    torch.testing.assert_close(out, clean)
    out.sum().backward()
    assert torch.isfinite(dirty.grad).all()
    assert (dirty.grad[torch.arange(9)[None, :] >= lengths[:, None]] == 0).all()


def test_bimodal_encoder_pairs_the_same_moments() -> None:
    """Through the encoder, each frame moves exactly the fused steps of its time window, and nothing else."""
    max_len, L_a, L_v = 6, 14, 5
    enc = transformer_encoder(2, max_len=max_len, layers=0, dropout=0.0, p_mask=0.0, input_norm=False).eval()
    audio = make_stream([12, 9], L_a, AUDIO_DIM)
    vision = make_stream([3, 4], L_v, VISION_DIM)
    seen: list[Tensor] = []
    enc.branches[1].proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        base, lengths = enc(audio, vision)
    assert lengths.tolist() == [max_len, max_len]
    torch.testing.assert_close(seen[0][0], vision[0][0, [0, 0, 1, 1, 2, 2]])  # vision after the downsample step
    torch.testing.assert_close(seen[0][1], vision[0][1, stretched_source(4, max_len)])

    def moved_steps(stream: int, sample: int, frame: int) -> tuple[set[int], bool]:
        streams = [(audio[0].clone(), audio[1]), (vision[0].clone(), vision[1])]
        streams[stream][0][sample, frame] += 1.0
        with torch.no_grad():
            out, _ = enc(*streams)
        moved = (out - base).abs().amax(-1) > 1e-6  # (B, T)
        return set(moved[sample].nonzero().flatten().tolist()), bool(moved[1 - sample].any())

    for sample in (0, 1):
        n_v = int(vision[1][sample])
        for k in range(n_v):  # frame k covers [k/n_v, (k+1)/n_v): the steps j with floor(j·n_v/max_len) = k
            steps, other = moved_steps(1, sample, k)
            assert steps == {j for j in range(max_len) if j * n_v // max_len == k}, (sample, k)
            assert not other
        n_a = int(audio[1][sample])
        for i in range(n_a):  # frame i is averaged into chunk floor(i·max_len/n_a)
            steps, other = moved_steps(0, sample, i)
            assert steps == {i * max_len // n_a}, (sample, i)
            assert not other
    assert moved_steps(1, 0, 3) == (set(), False)  # a padded frame moves nothing
    assert moved_steps(0, 1, 9) == (set(), False)


def test_bimodal_encoder_lengths_with_empty_streams() -> None:
    audio = make_stream([20, 0, 0, 2], 20, AUDIO_DIM)
    vision = make_stream([0, 5, 0, 1], 12, VISION_DIM)
    enc = transformer_encoder(2).eval()
    seq, lengths = enc(audio, vision)
    assert lengths.tolist() == [MAX_LEN, MAX_LEN, 0, MAX_LEN]
    assert (seq[2] == 0).all() and torch.isfinite(seq).all()


def reference_stream_encoder(branch: nn.Module, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """StreamEncoder's eval forward written out with the plain (unstretched) downsample."""
    lengths = lengths.clamp(0, x.shape[1])
    padded = torch.arange(x.shape[1])[None, :] >= lengths[:, None]  # (B, L)
    x = branch.input_norm(torch.where(padded[..., None], 0.0, x))
    x, lengths = downsample(x, lengths, branch.max_len)  # (B, T, D_in)
    h = branch.proj(x) * branch.scale + branch.pos  # (B, T, d)
    if branch.transformer is not None:
        h = branch.transformer(h, src_key_padding_mask=torch.arange(h.shape[1])[None, :] >= lengths.clamp(min=1)[:, None])
    return h.masked_fill((torch.arange(h.shape[1])[None, :] >= lengths[:, None])[..., None], 0.0), lengths


@pytest.mark.parametrize("fuse_norm", [True, False])
@pytest.mark.parametrize("kw", [{}, dict(layers=0), dict(max_len=30)], ids=["default", "no-transformer", "long-grid"])
def test_unimodal_encoder_is_not_stretched(fuse_norm: bool, kw: dict) -> None:
    """One input pairs nothing: short samples keep their frames and lengths, exactly as before; no fuse_norm."""
    audio, _ = encoder_inputs(2, pad=float("inf"))
    enc = transformer_encoder(1, fuse_norm=fuse_norm, **kw).eval()
    assert enc.fuse is None and enc.fuse_norm is None and not enc.branches[0].stretch
    with torch.no_grad():
        seq, lengths = enc(audio)
        ref_seq, ref_lengths = reference_stream_encoder(enc.branches[0], *audio)
    max_len = kw.get("max_len", MAX_LEN)
    assert lengths.tolist() == ref_lengths.tolist() == [min(n, max_len) for n in (20, 13, 5, 0)]
    torch.testing.assert_close(seq, ref_seq, rtol=0, atol=0)
    assert (seq[2, 5:] == 0).all()  # the 5-frame sample is not spread over the grid


def test_unimodal_encoder_ignores_fuse_norm() -> None:
    audio, _ = encoder_inputs(2)
    on, off = transformer_encoder(1, fuse_norm=True).eval(), transformer_encoder(1, fuse_norm=False).eval()
    assert on.state_dict().keys() == off.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(on(audio), off(audio), rtol=0, atol=0)


@pytest.mark.parametrize("fuse_norm", [True, False])
@pytest.mark.parametrize("n_streams", [1, 2])
def test_fuse_norm_exists_only_with_several_inputs(n_streams: int, fuse_norm: bool) -> None:
    enc = transformer_encoder(n_streams, fuse_norm=fuse_norm)
    expected = fuse_norm and n_streams > 1
    assert isinstance(enc.fuse_norm, nn.LayerNorm) == expected
    assert any(key.startswith("fuse_norm.") for key in enc.state_dict()) == expected


def test_fuse_norm_normalises_each_real_step() -> None:
    """Right after fuse: each real step has zero mean and unit variance over features; padded steps stay 0."""
    audio = make_stream([20, 13, 0, 3], 20, AUDIO_DIM, pad=float("inf"))
    vision = make_stream([12, 0, 0, 7], 12, VISION_DIM, pad=1e6)
    enc = transformer_encoder(2, fuse_norm=True, seed=3)
    plain = transformer_encoder(2, fuse_norm=False, seed=3)  # the same weights, no LayerNorm
    assert (enc.fuse_norm.weight == 1).all() and (enc.fuse_norm.bias == 0).all()
    for mode in ("train", "eval"):
        getattr(enc, mode)(), getattr(plain, mode)()
        torch.manual_seed(1)  # the same dropout and modality dropout draws for both
        seq, lengths = enc(audio, vision)
        torch.manual_seed(1)
        raw, _ = plain(audio, vision)
        assert lengths.tolist() == [MAX_LEN, MAX_LEN, 0, MAX_LEN]
        real = torch.arange(MAX_LEN)[None, :] < lengths[:, None]  # (B, T)
        steps = seq[real]  # (n_real, d)
        torch.testing.assert_close(steps.mean(-1), torch.zeros(len(steps)), rtol=0, atol=1e-5)
        torch.testing.assert_close(steps.var(-1, unbiased=False), torch.ones(len(steps)), rtol=0, atol=1e-3)
        torch.testing.assert_close(steps, nn.functional.layer_norm(raw[real], (16,)))  # normalises fuse's output
        assert (seq[~real] == 0).all(), "padded steps must stay exactly zero"
    with torch.no_grad():  # a trained affine: padded steps are zeroed after the LayerNorm, not before it
        enc.fuse_norm.weight.fill_(2.0), enc.fuse_norm.bias.fill_(0.5)
        seq, _ = enc.eval()(audio, vision)
    torch.testing.assert_close(seq[real].mean(-1), torch.full((int(real.sum()),), 0.5))
    assert (seq[~real] == 0).all()


# ------------------------------------------------------------------------------------------------
# the built-in heads


@pytest.mark.parametrize("name", ["self-attention", "concat"])
def test_head_rejects_bad_construction(name: str) -> None:
    with pytest.raises(ValueError, match="unknown_knob"):
        registry.create("head", name, HeadConfig(name=name, options={"unknown_knob": 1}), HEAD_DIMS)
    with pytest.raises(ValueError, match="at least one"):
        registry.create("head", name, HeadConfig(name=name), {})
    with pytest.raises(ValueError, match="t_tok"):
        registry.create("head", name, HeadConfig(name=name), {"t_tok": 4})


@pytest.mark.parametrize("name", ["self-attention", "concat"])
def test_head_checks_the_representations_it_gets(name: str) -> None:
    dims = {"a_tok": 24, "h_text": 24}
    head = registry.create("head", name, HeadConfig(name=name), dims)
    reps = head_inputs(dims)
    with pytest.raises(ValueError, match="missing"):
        head({"a_tok": reps["a_tok"]})
    with pytest.raises(ValueError, match="v_enc"):
        head(reps | {"v_enc": torch.randn(5, 12)})


def test_self_attention_head_needs_divisible_width() -> None:
    with pytest.raises(ValueError, match="divisible"):
        registry.create("head", "self-attention", HeadConfig(d=10, heads=4), HEAD_DIMS)


def test_representation_order_does_not_matter() -> None:
    head = registry.create("head", "self-attention", HeadConfig(), HEAD_DIMS).eval()
    reps = head_inputs(HEAD_DIMS)
    with torch.no_grad():
        torch.testing.assert_close(head(dict(reversed(list(reps.items())))), head(reps))


@pytest.mark.parametrize("stretch", [False, True])
def test_downsample_looks_up_the_pooling_rows_each_length_would_compute(stretch: bool) -> None:
    """The pooling matrices are looked up from a table of every length (design.md §6): each sample's rows equal
    those computed for its length alone, and a table first built under inference mode serves training after."""
    from dmpf_cli.model import encoders

    encoders._tables.clear()
    L, max_len = 11, 4
    x = torch.randn(L + 1, L, 3)
    lengths = torch.arange(L + 1)
    with torch.inference_mode():
        first, _ = downsample(x, lengths, max_len, stretch=stretch)
    assert len(encoders._tables) == 1
    x.requires_grad_()
    out, _ = downsample(x, lengths, max_len, stretch=stretch)
    out.sum().backward()  # the table, built under inference mode, is an ordinary tensor
    for n in range(L + 1):
        rows = encoders.pool_weights(torch.tensor([n]), L, max_len, stretch, torch.float32)
        assert torch.equal(encoders._tables[(L, max_len, stretch, torch.float32, "cpu")][n], rows[0])
    assert torch.equal(first, out.detach())
    assert x.grad is not None and float(x.grad[L - 1, : L - 1].abs().sum()) > 0
