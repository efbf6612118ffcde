"""The fusion mask against design.md §4, position by position, with padding and zero-size blocks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dmpf_cli import registry
from dmpf_cli.model.mask import FusionMask, MaskPreset

# design.md §4, written out independently of dmpf_cli.model.mask: query segment -> key segment -> relation.
_AVSEESALL = {
    "text": {"text": "causal"},
    "audio": {"text": "all", "audio": "causal"},
    "visual": {"text": "all", "visual": "causal"},
    "audio_visual": {"text": "all", "audio": "all", "visual": "all", "audio_visual": "causal"},
}
DESIGN_TABLES = {
    "avseesall": _AVSEESALL,
    "original": {**_AVSEESALL, "audio_visual": {"text": "all", "audio_visual": "causal"}},
    "allcausal": {**_AVSEESALL, "visual": {"text": "all", "audio": "all", "visual": "causal"}},
    "av_attends_only_av_a_v": {**_AVSEESALL, "audio_visual": {"audio": "all", "visual": "all", "audio_visual": "causal"}},
}
ORDER = ("text", "audio", "visual", "audio_visual")
SIZES = [(6, 3, 2, 4), (5, 0, 3, 2), (4, 2, 0, 0), (0, 2, 2, 2), (7, 0, 0, 0), (3, 0, 0, 1), (50, 10, 10, 12)]


def expected_allowed(preset: str, sizes: tuple[int, int, int, int], real_text: list[bool] | None = None) -> torch.Tensor:
    """Position-by-position reading of the design.md §4 table (plus the padding rule)."""
    owner, index = [], []
    for seg, n in zip(ORDER, sizes):
        owner += [seg] * n
        index += list(range(n))
    L = len(owner)
    out = torch.zeros(L, L, dtype=torch.bool)
    for q in range(L):
        for k in range(L):
            rel = DESIGN_TABLES[preset][owner[q]].get(owner[k], "none")
            ok = rel == "all" or (rel == "causal" and index[k] <= index[q])
            if real_text is not None and owner[k] == "text" and not real_text[index[k]]:
                ok = q == k  # padded keys: hidden from everyone but themselves
            out[q, k] = ok
    return out


def test_every_registered_builtin_preset_is_in_the_design_notes():
    builtin = [c.name for c in registry.components("mask") if c.origin == registry.BUILTIN]
    assert sorted(builtin) == sorted(DESIGN_TABLES)


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("preset", sorted(DESIGN_TABLES))
def test_matches_spec_table(preset, sizes):
    mask = FusionMask(*sizes, preset=preset)
    allowed = mask.allowed()
    assert allowed.shape == (sum(sizes), sum(sizes))
    assert torch.equal(allowed, expected_allowed(preset, sizes))
    assert allowed.any(dim=-1).all(), "a query row is fully masked"


@pytest.mark.parametrize("preset", sorted(DESIGN_TABLES))
def test_padding_per_batch(preset):
    sizes = (6, 2, 3, 2)
    text_padding = torch.tensor([
        [True] * 6,                             # no padding
        [True] * 4 + [False] * 2,               # right padding
        [False] * 6,                            # all padding: text rows must still see something
        [True, False, True, True, False, True],  # arbitrary holes
    ])
    allowed = FusionMask(*sizes, preset=preset).with_padding(text_padding).allowed()
    assert allowed.shape == (4, 13, 13)
    for b in range(4):
        assert torch.equal(allowed[b], expected_allowed(preset, sizes, text_padding[b].tolist())), b
    assert allowed.any(dim=-1).all()


def test_segments_and_zero_size_blocks():
    mask = FusionMask(5, 0, 3, 0)
    assert [(s.name, s.start, s.length) for s in mask.segments] == [
        ("text", 0, 5), ("audio", 5, 0), ("visual", 5, 3), ("audio_visual", 8, 0),
    ]
    assert mask.seq_len == 8


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_xformers_bias_layout(dtype):
    mask = FusionMask(10, 3, 3, 3).with_right_padding(4)  # L = 19, not a multiple of 8
    bias = mask.materialize(dtype=dtype)
    L = 19
    assert bias.shape == (1, 1, L, L) and bias.dtype == dtype
    assert bias.stride(-2) == 24, "key dimension must be allocated padded to a multiple of 8"
    assert bias.untyped_storage().nbytes() == L * 24 * bias.element_size()
    allowed = mask.allowed()[0]
    assert torch.all(bias[0, 0][allowed] == 0)
    assert torch.all(torch.isneginf(bias[0, 0][~allowed]))
    floor = mask.materialize(dtype=dtype, masked_value=torch.finfo(dtype).min)
    assert torch.all(floor[0, 0][~allowed] == torch.finfo(dtype).min)
    expanded = mask.materialize((5, 4, L, L), dtype=dtype)
    assert expanded.shape == (5, 4, L, L) and expanded.stride(0) == 0 and expanded.stride(1) == 0


def test_bias_rejects_wrong_shape_and_dtype():
    mask = FusionMask(4, 1, 1, 1)
    with pytest.raises(ValueError, match="shape"):
        mask.materialize((2, 2, 7, 6))
    with pytest.raises(ValueError, match="floating"):
        mask.materialize(dtype=torch.int32)


def _eager(q, k, v, allowed):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, L, L)
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


@pytest.mark.parametrize("preset", sorted(DESIGN_TABLES))
def test_every_rendering_gives_the_same_attention_and_no_nan(preset):
    torch.manual_seed(0)
    text_padding = torch.tensor([[True] * 5 + [False] * 3, [False] * 8])  # second sample: all padding
    mask = FusionMask(8, 2, 0, 3, preset=preset).with_padding(text_padding)
    B, H, L, D = 2, 3, mask.seq_len, 8
    q, k, v = (torch.randn(B, H, L, D) for _ in range(3))
    reference = _eager(q, k, v, mask.allowed()[:, None])
    with_bool = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.sdpa_mask())
    with_bias = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.materialize((B, H, L, L)))
    for out in (reference, with_bool, with_bias):
        assert torch.isfinite(out).all()
    torch.testing.assert_close(with_bool, reference)
    torch.testing.assert_close(with_bias, reference)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text_len": 4, "n_a": -1, "n_v": 1, "n_av": 1}, "n_a: expected an integer >= 0"),
        ({"text_len": 4, "n_a": 1, "n_v": 1.5, "n_av": 1}, "n_v: expected an integer >= 0"),
        ({"text_len": 0, "n_a": 0, "n_v": 0, "n_av": 0}, "at least one position"),
    ],
)
def test_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FusionMask(**kwargs)


def test_unknown_preset_suggests_close_match():
    with pytest.raises(registry.RegistryError, match="did you mean 'avseesall'"):
        FusionMask(4, 1, 1, 1, preset="avseesal")


def test_bad_padding_and_pad_count():
    mask = FusionMask(4, 1, 1, 1)
    with pytest.raises(ValueError, match=r"text_padding: expected a bool tensor of shape \(batch, 4\)"):
        mask.with_padding(torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="text_padding"):
        mask.with_padding(torch.ones(2, 4))
    with pytest.raises(ValueError, match="pad: expected 0..4"):
        mask.with_right_padding(5)


@pytest.mark.parametrize(
    "rules, message",
    [
        ({("text", "text"): "causal", ("text", "audio"): "all"}, "text must see only text"),
        ({("text", "text"): "all"}, "text must see only text"),
        ({("text", "text"): "causal", ("audio", "audio"): "causal", ("visual", "visual"): "causal"}, "must see itself"),
        ({("text", "text"): "causal", ("audio", "text"): "causal"}, "only defined inside a segment"),
        ({("text", "text"): "causal", ("sound", "text"): "all"}, "unknown segment"),
    ],
)
def test_preset_invariants(rules, message):
    with pytest.raises(ValueError, match=message):
        MaskPreset("broken", "", rules)


def test_json_rendering_shape():
    data = FusionMask(3, 1, 0, 2, preset="original").with_right_padding(1).to_json()
    assert set(data) == {"preset", "segments", "allowed"}
    assert data["preset"] == "original"
    assert [s["length"] for s in data["segments"]] == [3, 1, 0, 2]
    assert data["allowed"] == expected_allowed("original", (3, 1, 0, 2), [True, True, False]).int().tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers kernels need CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_xformers_takes_the_bias_on_gpu(dtype):
    xops = pytest.importorskip("xformers.ops")
    torch.manual_seed(0)
    mask = FusionMask(50, 10, 10, 12).with_padding(torch.arange(50)[None, :].repeat(4, 1) < torch.tensor([[50], [30], [1], [0]]))
    B, H, L, D = 4, 4, mask.seq_len, 64
    q, k, v = (torch.randn(B, L, H, D, device="cuda", dtype=dtype) for _ in range(3))  # xformers: (B, L, H, D)
    bias = mask.materialize((B, H, L, L), dtype=dtype, device="cuda")
    out = xops.memory_efficient_attention(q, k, v, attn_bias=bias)  # (B, L, H, D)
    ref = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask.sdpa_mask("cuda")
    ).transpose(1, 2)
    assert torch.isfinite(out).all()
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
