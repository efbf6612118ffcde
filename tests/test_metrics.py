"""MMSA metrics (design.md §8). Every expected number is worked out by hand in the comment beside it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmpf_cli.metrics import (
    BIN_CLASSES,
    LOWER_IS_BETTER,
    METRIC_KEYS,
    binned_label_names,
    compute_metrics,
    label_bins,
)

MOSEI_KEYS = (
    "Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr",
)
SIMS_KEYS = ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr")


def approx(x):
    return pytest.approx(x, abs=1e-12)


# -- keys ------------------------------------------------------------------------------------------

def test_keys_in_display_order():
    assert METRIC_KEYS == {"mosei": MOSEI_KEYS, "mosi": MOSEI_KEYS, "sims": SIMS_KEYS, "simsv2": SIMS_KEYS,
                           "synthetic": MOSEI_KEYS}
    assert LOWER_IS_BETTER == {"MAE"}
    for dataset, keys in METRIC_KEYS.items():
        labels = [-0.5, 0.5, 0.9] if dataset in ("sims", "simsv2") else [-2.0, 1.0, 3.0]
        out = compute_metrics([0.1, 0.2, -0.3], labels, dataset)
        assert tuple(out) == keys
        assert all(type(v) is float for v in out.values())


# -- MOSEI / MOSI / synthetic ----------------------------------------------------------------------

def test_zero_label_is_positive_for_has0_and_excluded_from_non0():
    # t = 0 at index 0 with p = -3: a Has0 miss (t>=0 -> pos, p>=0 false -> neg); not in Non0
    p, t = [-3.0, 1.0, -1.0], [0.0, 2.0, -2.0]
    out = compute_metrics(p, t, "mosei")
    # Has0: truth [pos, pos, neg], pred [neg, pos, neg] -> 2/3 right
    assert out["Has0_acc_2"] == approx(2 / 3)
    # Non0: indices 1, 2 only: truth [pos, neg], pred [pos, neg] -> 2/2
    assert out["Non0_acc_2"] == approx(1.0)
    assert out["Non0_F1_score"] == approx(1.0)
    # Has0 F1: pos: tp=1 fp=0 fn=1 -> 2/(2+0+1)=2/3, support 2; neg: tp=1 fp=1 fn=0 -> 2/3, support 1
    # weighted = (2/3*2 + 2/3*1)/3 = 2/3
    assert out["Has0_F1_score"] == approx(2 / 3)


def test_zero_prediction_is_positive_for_has0_but_not_for_non0():
    # p = 0 vs t = 1: Has0 (0 >= 0) hit; Non0 (0 > 0 false) miss. p = 0.4 vs t = -1: miss on both.
    out = compute_metrics([0.0, 0.4], [1.0, -1.0], "mosei")
    assert out["Has0_acc_2"] == approx(1 / 2)  # [hit, miss]
    assert out["Non0_acc_2"] == approx(0.0)  # [miss, miss]


def test_mixed_zero_labels_f1_by_hand():
    p, t = [-0.5, 0.5, 2.0, 1.0], [0.0, 0.0, 1.0, -1.0]
    out = compute_metrics(p, t, "mosi")
    # Has0: truth [T, T, T, F], pred [F, T, T, T]: hits at 1, 2 -> 2/4
    assert out["Has0_acc_2"] == approx(0.5)
    # T: tp=2 fp=1 fn=1 -> 4/6 = 2/3, support 3; F: tp=0 -> 0, support 1 -> (2/3*3 + 0)/4 = 0.5
    assert out["Has0_F1_score"] == approx(0.5)
    # Non0 on indices 2, 3: truth [T, F], pred [T, T] -> 1/2
    assert out["Non0_acc_2"] == approx(0.5)
    # T: tp=1 fp=1 fn=0 -> 2/3, support 1; F: tp=0 -> 0, support 1 -> (2/3 + 0)/2 = 1/3
    assert out["Non0_F1_score"] == approx(1 / 3)


def test_all_zero_labels_give_nan_non0_only():
    out = compute_metrics([0.0, -1.0, 1.0], [0.0, 0.0, 0.0], "mosei")
    assert math.isnan(out["Non0_acc_2"]) and math.isnan(out["Non0_F1_score"])
    assert out["Has0_acc_2"] == approx(2 / 3)  # truth all pos; pred [pos, neg, pos]
    # pos: tp=2 fp=0 fn=1 -> 4/5, support 3; neg: tp=0 fp=1 -> 0, support 0 -> 0.8*3/3
    assert out["Has0_F1_score"] == approx(0.8)
    assert out["Corr"] == 0.0  # labels constant
    assert out["MAE"] == approx(2 / 3)  # (0 + 1 + 1)/3
    others = [k for k in out if not k.startswith("Non0")]
    assert not any(math.isnan(out[k]) for k in others)


def test_round_half_to_even_for_mult_acc():
    # np.round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0 (== 0), -1.5 -> -2, -2.5 -> -2
    p = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5]
    t = [0.0, 2.0, 2.0, 0.0, -2.0, -2.0]
    assert compute_metrics(p, t, "mosei")["Mult_acc_7"] == approx(1.0)  # 6/6
    # half away from zero would give 1, 3: these are misses under half-to-even
    out = compute_metrics([0.5, 2.5, -0.5, 1.5], [1.0, 3.0, -1.0, 2.0], "mosei")
    assert out["Mult_acc_7"] == approx(1 / 4)  # 0 vs 1, 2 vs 3, 0 vs -1 miss; 2 vs 2 hit
    # ±2 clip: 0.5->0 vs 1 miss; 2.5->2 vs 3->2 hit; -0.5->0 vs -1 miss; 1.5->2 vs 2 hit
    assert out["Mult_acc_5"] == approx(2 / 4)


def test_clipping_before_rounding():
    p = [5.0, 2.6, 2.4, -2.6]
    t = [3.0, 3.0, 3.0, -1.6]
    out = compute_metrics(p, t, "mosei")
    # ±3: 5->3 vs 3 hit; 2.6->3 vs 3 hit; 2.4->2 vs 3 miss; -2.6->-3 vs -1.6->-2 miss -> 2/4
    assert out["Mult_acc_7"] == approx(0.5)
    # ±2: 5->2 vs 3->2 hit; 2.6->2 vs 2 hit; 2.4->2 vs 2 hit; -2.6->-2 vs -1.6->-2 hit -> 4/4
    assert out["Mult_acc_5"] == approx(1.0)
    # MAE on raw values: |5-3| + |2.6-3| + |2.4-3| + |-2.6+1.6| = 2 + 0.4 + 0.6 + 1 = 4 -> 4/4
    assert out["MAE"] == approx(1.0)


def test_weighted_f1_unbalanced_by_hand():
    t = [1.0, 1.0, 1.0, 1.0, -1.0]
    p = [1.0, 1.0, -1.0, -1.0, -1.0]
    out = compute_metrics(p, t, "mosei")
    assert out["Has0_acc_2"] == approx(3 / 5)  # hits at 0, 1, 4
    # pos: tp=2 fp=0 fn=2 -> 2*2/(4+0+2) = 2/3, support 4
    # neg: tp=1 fp=2 fn=0 -> 2*1/(2+2+0) = 1/2, support 1
    # weighted = (2/3*4 + 1/2*1)/5 = (16/6 + 3/6)/5 = 19/30   (macro would be 7/12, binary 2/3)
    assert out["Has0_F1_score"] == approx(19 / 30)
    assert out["Non0_F1_score"] == approx(19 / 30)  # no zero labels: same samples, same signs


def test_corr_by_hand_and_constant():
    # p = [1,2,3], t = [1,3,2]: dp = [-1,0,1], dt = [-1,1,0]; sum dp*dt = 1; sqrt(2*2) = 2 -> 0.5
    assert compute_metrics([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], "mosei")["Corr"] == approx(0.5)
    assert compute_metrics([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], "mosei")["Corr"] == approx(-1.0)
    # constant prediction (0.1 three times: its float mean need not equal 0.1 exactly)
    out = compute_metrics([0.1, 0.1, 0.1], [-1.0, 0.0, 2.0], "mosei")
    assert out["Corr"] == 0.0
    assert compute_metrics([0.3], [0.7], "mosei")["Corr"] == 0.0  # one sample
    assert compute_metrics([0.1, 0.1, 0.1], [-0.5, 0.0, 0.5], "sims")["Corr"] == 0.0
    # SIMS: both predictions clip to 1 -> constant after clipping
    assert compute_metrics([1.5, 3.0], [-0.5, 0.5], "sims")["Corr"] == 0.0


@pytest.mark.parametrize("dataset", ["mosei", "mosi", "synthetic", "sims"])
def test_perfect_prediction(dataset):
    t = [-0.9, -0.4, 0.0, 0.05, 0.3, 0.8] if dataset == "sims" else [-3.0, -1.2, 0.0, 0.4, 2.5, 1.7]
    out = compute_metrics(t, list(t), dataset)
    assert out["Corr"] == approx(1.0)
    assert out["MAE"] == 0.0
    for key, value in out.items():
        if key not in ("MAE", "Corr"):
            assert value == 1.0, key


def test_mosi_and_synthetic_use_mosei_definitions():
    p, t = [0.5, -1.5, 2.6, 0.0], [1.0, -2.0, 3.0, -0.3]
    ref = compute_metrics(p, t, "mosei")
    assert compute_metrics(p, t, "mosi") == ref
    assert compute_metrics(p, t, "synthetic") == ref


# -- SIMS ------------------------------------------------------------------------------------------

def test_sims_bin_edges_are_right_closed():
    p = [-0.1, 0.1, 0.7, -0.7, 0.0, -1.0]
    t = [-0.5, 0.0, 0.5, -0.9, -0.05, -0.8]
    out = compute_metrics(p, t, "sims")
    # 5 bins [-1,-.7] (-.7,-.1] (-.1,.1] (.1,.7] (.7,1]:
    #   p -> [1, 2, 3, 0, 2, 0]; t -> [1, 2, 3, 0, 2, 0]  -> 6/6
    assert out["Mult_acc_5"] == approx(1.0)
    # 3 bins [-1,-.1] (-.1,.1] (.1,1]: p -> [0, 1, 2, 0, 1, 0]; t -> [0, 1, 2, 0, 1, 0] -> 6/6
    assert out["Mult_acc_3"] == approx(1.0)
    # 2 bins [-1,0] (0,1]: p -> [0, 1, 1, 0, 0, 0]; t -> [0, 0, 1, 0, 0, 0] -> 5/6 (0.1 vs 0.0 differs)
    assert out["Mult_acc_2"] == approx(5 / 6)
    # F1: class 0: tp=4 fp=0 fn=1 -> 8/9, support 5; class 1: tp=1 fp=1 fn=0 -> 2/3, support 1
    # weighted = (5*8/9 + 2/3)/6 = (40/9 + 6/9)/6 = 23/27
    assert out["F1_score"] == approx(23 / 27)


def test_sims_clips_before_mae_and_bins():
    p, t = [1.7, -1.2], [0.8, -1.0]
    out = compute_metrics(p, t, "sims")
    # clipped p = [1, -1]: MAE = (|1-0.8| + |-1+1|)/2 = 0.1  (unclipped would be 0.55)
    assert out["MAE"] == approx(0.1)
    # -1.2 -> -1, in the first bin of every binning; 1.7 -> 1 in the last, with 0.8
    assert out["Mult_acc_2"] == out["Mult_acc_3"] == out["Mult_acc_5"] == approx(1.0)
    # labels are clipped too: t = 1.5 -> 1, p = 1 -> MAE 0
    assert compute_metrics([1.0, -0.2], [1.5, -0.2], "sims")["MAE"] == approx(0.0)


# -- inputs and errors -----------------------------------------------------------------------------

def test_torch_float16_and_grad_tensors_accepted():
    p = torch.tensor([0.5, -1.5, 2.5, 1.0], dtype=torch.float16)
    t = torch.tensor([0.0, -2.0, 2.0, -1.0], dtype=torch.float16)
    out = compute_metrics(p, t, "mosei")
    assert all(type(v) is float for v in out.values())
    assert out["Has0_acc_2"] == approx(3 / 4)  # pred [T,F,T,T] vs truth [T,F,T,F]
    assert out["Mult_acc_7"] == approx(3 / 4)  # 0 vs 0, -2 vs -2, 2 vs 2 hit; 1 vs -1 miss
    assert out["MAE"] == approx(0.875)  # (0.5 + 0.5 + 0.5 + 2)/4
    g = torch.tensor([[0.5], [-1.5], [2.5], [1.0]], requires_grad=True)  # (N, 1) head output
    assert compute_metrics(g, np.array([0.0, -2.0, 2.0, -1.0], dtype=np.float32), "mosei") == out


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"'iemocap'.*mosei, mosi, sims, simsv2, synthetic"):
        compute_metrics([0.0], [0.0], "iemocap")
    with pytest.raises(ValueError, match="iemocap"):
        label_bins([0.0], "iemocap")


@pytest.mark.parametrize(
    ("p", "t", "message"),
    [
        ([0.0, 1.0], [0.0], r"differ in length: 2 vs 1"),
        ([], [], r"empty"),
        ([0.0, float("nan")], [0.0, 1.0], r"predictions contain 1 non-finite"),
        ([0.0, float("inf")], [0.0, 1.0], r"predictions contain 1 non-finite"),
        ([0.0, 1.0], [float("nan"), 1.0], r"labels contain 1 non-finite"),
        ([[0.0, 1.0], [1.0, 0.0]], [0.0, 1.0], r"1-D"),
        (["a"], [0.0], r"must be numbers"),
    ],
)
def test_bad_inputs(p, t, message):
    with pytest.raises(ValueError, match=message) as info:
        compute_metrics(p, t, "mosei")
    assert "\n" not in str(info.value)


# -- class names for `dmpf predict` ----------------------------------------------------------------

def test_label_bins_mosei():
    assert binned_label_names("mosei") == ["bin2", "bin7"]
    p = [-3.2, -2.5, -1.4, -0.5, 0.0, 0.4, 1.2, 2.0, 2.6, 10.0]
    out = label_bins(np.array(p), "mosei")
    assert out["bin2"] == ["negative"] * 4 + ["positive"] * 6  # p >= 0 is positive
    # round(clip(p, ±3)), half to even: -3, -2, -1, -0, 0, 0, 1, 2, 3, 3
    assert out["bin7"] == [
        "highly negative", "negative", "weakly negative", "neutral", "neutral", "neutral",
        "weakly positive", "positive", "highly positive", "highly positive",
    ]
    assert label_bins([], "synthetic") == {"bin2": [], "bin7": []}


def test_label_bins_sims():
    assert binned_label_names("sims") == ["bin2", "bin3", "bin5"]
    p = [-1.5, -0.7, -0.69, -0.1, 0.0, 0.1, 0.11, 0.7, 0.71, 2.0]
    out = label_bins(torch.tensor(p, dtype=torch.float64), "sims")
    assert out["bin2"] == ["negative"] * 5 + ["positive"] * 5  # [-1, 0], (0, 1]
    assert out["bin3"] == ["negative"] * 4 + ["neutral"] * 2 + ["positive"] * 4
    assert out["bin5"] == [
        "negative", "negative", "weakly negative", "weakly negative", "neutral", "neutral",
        "weakly positive", "weakly positive", "positive", "positive",
    ]
    with pytest.raises(ValueError, match="non-finite"):
        label_bins([float("nan")], "sims")


# -- SIMS binning precision (MMSA bins float32 predictions in float32) -----------------------------
#
# MMSA compares its float32 numpy predictions with python-float edges (`x > -0.1`, `x <= 0.1`), which
# numpy evaluates in float32: the edge is rounded to float32 too. np.float32(0.1) = 0.100000001490…
# therefore *equals* the 0.1 edge there and stays in (-0.1, 0.1]; widened to float64 first it would
# exceed 0.1 and go up a bin. Of the SIMS edges, float32 rounds +0.1 up and -0.7 up (to -0.69999998…),
# so those two are where the precision moves a bin; float32(-0.1) and float32(0.7) round down, below
# their edges in float64 too, and land in the lower bin either way; 0 and ±1 are exact.

SIMS_EDGE_VALUES = (-1.0, -0.7, -0.1, 0.0, 0.1, 0.7, 1.0)
# where MMSA puts each float32 edge value: every value sits in the bin the edge closes (right-closed)
SIMS_EDGE_BINS_F32 = {
    "bin2": ["negative"] * 4 + ["positive"] * 3,
    "bin3": ["negative"] * 3 + ["neutral"] * 2 + ["positive"] * 2,
    "bin5": ["negative", "negative", "weakly negative", "neutral", "neutral", "weakly positive", "positive"],
}
# the same float32 values widened to float64: float64(float32(-0.7)) > -0.7 and float64(float32(0.1)) > 0.1,
# so those two go up a bin (-0.7: negative -> weakly negative; 0.1: neutral -> positive / weakly positive)
SIMS_EDGE_BINS_F64 = {
    "bin2": ["negative"] * 4 + ["positive"] * 3,
    "bin3": ["negative"] * 3 + ["neutral"] + ["positive"] * 3,
    "bin5": [
        "negative", "weakly negative", "weakly negative", "neutral", "weakly positive", "weakly positive", "positive",
    ],
}
# labels well inside the bins MMSA gives the float32 edge values (bin5: 0, 0, 1, 2, 2, 3, 4)
SIMS_EDGE_LABELS = [-0.9, -0.8, -0.4, 0.0, 0.05, 0.4, 0.9]


def _mmsa_style_bins(x: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bins as MMSA assigns them: a mask (lo < x <= hi) per bin against python-float edges, so numpy
    compares in x's own dtype. ``edges`` are the outer edges too (MMSA uses ±1.01 around [-1, 1])."""
    out = np.full(x.shape, -1)
    for i in range(len(edges) - 1):
        out[(x > edges[i]) & (x <= edges[i + 1])] = i
    return out


def test_sims_float32_edges_land_in_mmsa_bins():
    p = np.array(SIMS_EDGE_VALUES, dtype=np.float32)
    assert label_bins(p, "sims") == SIMS_EDGE_BINS_F32
    out = compute_metrics(p, SIMS_EDGE_LABELS, "sims")
    # MMSA: p bin3 [0,0,0,1,1,2,2] = t bin3; p bin5 [0,0,1,2,2,3,4] = t bin5 -> 7/7 each
    # (float64 binning of p would give bin3 [0,0,0,1,2,2,2] -> 6/7, bin5 [0,1,1,2,3,3,4] -> 5/7)
    assert out["Mult_acc_3"] == 1.0
    assert out["Mult_acc_5"] == 1.0
    assert out["Mult_acc_2"] == 1.0  # 0 is exact: [0,0,0,0,1,1,1] both sides


def test_sims_float32_matches_mmsa_masks_around_every_edge():
    # each edge's float32 value and its two float32 neighbours on either side
    values = []
    for e in SIMS_EDGE_VALUES:
        x = np.float32(e)
        for _ in range(2):
            x = np.nextafter(x, np.float32(-2))
        for _ in range(5):
            values.append(x)
            x = np.nextafter(x, np.float32(2))
    p = np.array(values, dtype=np.float32)
    clipped = np.clip(p, -1.0, 1.0)  # float32 stays float32 (python-float bounds)
    assert clipped.dtype == np.float32
    expected = {
        "bin2": _mmsa_style_bins(clipped, [-1.01, 0.0, 1.01]),
        "bin3": _mmsa_style_bins(clipped, [-1.01, -0.1, 0.1, 1.01]),
        "bin5": _mmsa_style_bins(clipped, [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]),
    }
    names = label_bins(p, "sims")
    for key, index in expected.items():
        assert names[key] == [BIN_CLASSES["sims"][key][i] for i in index], key


def test_sims_float64_inputs_keep_float64_comparisons():
    # np.float64(np.float32(0.1)) = 0.10000000149… > 0.1 in float64: it is *above* the edge and goes
    # up a bin; likewise float64(float32(-0.7)) = -0.69999998… > -0.7. A float64 input (or a list of
    # python floats) is compared in float64, so these values bin differently from the float32 array.
    p64 = np.array(SIMS_EDGE_VALUES, dtype=np.float32).astype(np.float64)
    assert p64[4] > 0.1 and p64[1] > -0.7
    assert label_bins(p64, "sims") == SIMS_EDGE_BINS_F64
    assert label_bins(p64.tolist(), "sims") == SIMS_EDGE_BINS_F64
    assert label_bins(torch.tensor(p64, dtype=torch.float64), "sims") == SIMS_EDGE_BINS_F64
    # the same numbers as float32 bin differently: the precision is what decides
    assert label_bins(p64.astype(np.float32), "sims") == SIMS_EDGE_BINS_F32 != SIMS_EDGE_BINS_F64
    out = compute_metrics(p64, SIMS_EDGE_LABELS, "sims")
    # p bin3 [0,0,0,1,2,2,2] vs t [0,0,0,1,1,2,2] -> 6/7; p bin5 [0,1,1,2,3,3,4] vs t [0,0,1,2,2,3,4] -> 5/7
    assert out["Mult_acc_3"] == approx(6 / 7)
    assert out["Mult_acc_5"] == approx(5 / 7)
    # exact decimal edges as python floats are still right-closed in float64
    assert label_bins([0.1, -0.7], "sims")["bin5"] == ["neutral", "negative"]


def test_sims_torch_float32_like_numpy_float32():
    p32 = np.array(SIMS_EDGE_VALUES, dtype=np.float32)
    tensor = torch.tensor(p32)
    assert tensor.dtype == torch.float32
    assert label_bins(tensor, "sims") == SIMS_EDGE_BINS_F32
    # an (N, 1) head output with grad, as evaluation hands it over
    column = torch.tensor(p32).reshape(-1, 1).requires_grad_()
    assert label_bins(column, "sims") == SIMS_EDGE_BINS_F32
    labels = torch.tensor(SIMS_EDGE_LABELS, dtype=torch.float32)
    assert compute_metrics(tensor, labels, "sims") == compute_metrics(p32, labels.numpy(), "sims")
    assert compute_metrics(column, labels, "sims")["Mult_acc_5"] == 1.0
    # float16 / bfloat16 are binned as float32, as MMSA sees them after .float(); here their values
    # round away from the edges (fp16(0.1) = 0.09997…, bf16(0.1) = 0.10009…) so no bin moves
    for dtype in (torch.float16, torch.bfloat16):
        narrow = torch.tensor(SIMS_EDGE_VALUES, dtype=dtype)
        assert label_bins(narrow, "sims") == label_bins(narrow.float(), "sims"), dtype


def test_sims_worked_example_where_float64_binning_disagrees_with_mmsa():
    # a float32 batch as a model and the SIMS loader produce it
    p = np.array([0.1, -0.7, 0.35, -0.2], dtype=np.float32)
    t = np.array([0.0, -0.8, 0.5, 0.1], dtype=np.float32)
    out = compute_metrics(p, t, "sims")
    # MMSA (float32 comparisons, float32(0.1) == edge 0.1, float32(-0.7) == edge -0.7):
    #   bin3: p [1, 0, 2, 0] vs t [1, 0, 2, 1] -> 3/4      bin5: p [2, 0, 3, 1] vs t [2, 0, 3, 2] -> 3/4
    # float64 binning (the old behaviour) moved p 0.1 and t 0.1 up a bin and p -0.7 up a bin:
    #   bin3: p [2, 0, 2, 0] vs t [1, 0, 2, 2] -> 2/4      bin5: p [3, 1, 3, 1] vs t [2, 0, 3, 3] -> 1/4
    assert out["Mult_acc_3"] == approx(3 / 4)
    assert out["Mult_acc_5"] == approx(3 / 4)
    # 2 bins (edge 0, exact either way): p [1, 0, 1, 0] vs t [0, 0, 1, 1] -> 2/4
    assert out["Mult_acc_2"] == approx(2 / 4)
    # class 0: tp=1 fp=1 fn=1 -> 1/2, support 2; class 1: tp=1 fp=1 fn=1 -> 1/2, support 2 -> 1/2
    assert out["F1_score"] == approx(1 / 2)
    # MAE and Corr stay in float64, on the float32 values widened exactly:
    # (|0.1-0| + |-0.7+0.8| + |0.35-0.5| + |-0.2-0.1|) / 4 = 0.65/4 = 0.1625 up to float32 rounding
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    assert out["MAE"] == float(np.mean(np.abs(p64 - t64)))
    assert out["MAE"] == pytest.approx(0.1625, abs=1e-6)
    assert out["Corr"] == approx(float(np.corrcoef(p64, t64)[0, 1]))
