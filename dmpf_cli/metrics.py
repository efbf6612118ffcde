"""Evaluation metrics with the MMSA key names and definitions (SPEC §8), so results compare with papers.

``p`` = predictions, ``t`` = labels (regression scores). Every value returned is a python ``float``;
accuracies and F1 scores are fractions in [0, 1] (as MMSA reports them, not percentages) and are not
rounded here.

Precision: ``MAE``, ``Corr`` and all MOSEI-family metrics are computed in float64, whatever the input
dtype. The SIMS bins (``Mult_acc_2/3/5``, ``F1_score`` and the SIMS classes of :func:`label_bins`) are
instead clipped and compared in the precision each input came in — float32 for float32, float16 and
bfloat16 numpy arrays / torch tensors, float64 for float64 ones and for python lists — because that is
what MMSA does: it bins float32 numpy predictions against python-float edges, which numpy compares in
float32 (NEP 50 weak scalars; numpy 1.x value-based casting agrees), so the edge is rounded to float32
as well. A float32 value at an edge then *equals* it and stays in the lower, right-closed bin: e.g.
``np.float32(0.1)`` = 0.100000001490… is in (−0.1, 0.1] and ``np.float32(-0.7)`` in [−1, −0.7], where
float64 comparisons would put both one bin up. Predictions and labels each keep their own precision.
The MOSEI family needs no such care: comparing with 0, clipping to ±2 / ±3 and rounding to an integer
give the same answers for a float32 value and its (exact) float64 widening.

MOSEI / MOSI / synthetic (labels in [-3, 3]):

* ``MAE`` = mean |p − t| (raw, unclipped values); ``Corr`` = Pearson correlation of p and t.
* ``Has0_acc_2`` / ``Has0_F1_score``: (p ≥ 0) vs (t ≥ 0) over all samples — a label of exactly 0 counts
  as positive.
* ``Non0_acc_2`` / ``Non0_F1_score``: (p > 0) vs (t > 0) over the samples with t ≠ 0 only.
* ``Mult_acc_5`` / ``Mult_acc_7``: accuracy of round(clip(·, ±2)) / round(clip(·, ±3)) applied to both
  sides, rounding half to even (``np.round``: 0.5 → 0, 1.5 → 2, 2.5 → 2, −0.5 → −0 == 0).

SIMS (labels in [-1, 1]): p and t are clipped to [−1, 1] first, and ``MAE`` / ``Corr`` use the clipped
values. Bins are left-open, right-closed, except that the first also holds −1:

* ``Mult_acc_2``: [−1, 0], (0, 1]
* ``Mult_acc_3``: [−1, −0.1], (−0.1, 0.1], (0.1, 1]
* ``Mult_acc_5``: [−1, −0.7], (−0.7, −0.1], (−0.1, 0.1], (0.1, 0.7], (0.7, 1]
* ``F1_score``: weighted F1 of the 2-class bins.

Decisions where MMSA is silent or would fail:

* Weighted F1 follows scikit-learn's ``average="weighted"``: per-class F1 = 2·TP / (2·TP + FP + FN),
  averaged with weights equal to each class's support in the *truth*; the classes are the union of
  those present in truth and prediction (so a class only ever predicted contributes weight 0, but a
  class never predicted still scores F1 0 with its full weight).
* ``Corr`` is 0.0 when either side is constant (including a single sample), where Pearson is undefined:
  never NaN, matching the synthetic dataset's reference metrics.
* When no label is non-zero, ``Non0_acc_2`` and ``Non0_F1_score`` are ``float("nan")`` (there is nothing
  to score; MMSA would crash). These are the only keys that can be NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DmpfError
from .streams import DATASETS as _DATASETS

__all__ = [
    "BIN_CLASSES",
    "DATASETS",
    "LOWER_IS_BETTER",
    "METRIC_KEYS",
    "MetricsError",
    "binned_label_names",
    "compute_metrics",
    "label_bins",
]

DATASETS: tuple[str, ...] = tuple(_DATASETS)  # each with its metric family, "mosei" or "sims" (streams.DATASETS)

_MOSEI_KEYS = (
    "Has0_acc_2",
    "Has0_F1_score",
    "Non0_acc_2",
    "Non0_F1_score",
    "Mult_acc_5",
    "Mult_acc_7",
    "MAE",
    "Corr",
)
_SIMS_KEYS = ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr")

# The keys compute_metrics returns for each dataset, in a stable display order.
_FAMILY_KEYS = {"mosei": _MOSEI_KEYS, "sims": _SIMS_KEYS}
METRIC_KEYS: dict[str, tuple[str, ...]] = {name: _FAMILY_KEYS[d.metrics] for name, d in _DATASETS.items()}

# Metrics where a smaller value is better (all others: larger is better).
LOWER_IS_BETTER: frozenset[str] = frozenset({"MAE"})

# SIMS inner bin edges (each bin is (left, right]; values are clipped to [-1, 1] first, so the first
# bin also holds -1).
_SIMS_EDGES: dict[int, tuple[float, ...]] = {
    2: (0.0,),
    3: (-0.1, 0.1),
    5: (-0.7, -0.1, 0.1, 0.7),
}

_MOSEI_CLASSES = {
    "bin2": ("negative", "positive"),
    "bin7": (
        "highly negative",
        "negative",
        "weakly negative",
        "neutral",
        "weakly positive",
        "positive",
        "highly positive",
    ),
}
_SIMS_CLASSES = {
    "bin2": ("negative", "positive"),
    "bin3": ("negative", "neutral", "positive"),
    "bin5": ("negative", "weakly negative", "neutral", "weakly positive", "positive"),
}

# dataset -> {label_bins key: class names, lowest score first}
_FAMILY_CLASSES = {"mosei": _MOSEI_CLASSES, "sims": _SIMS_CLASSES}
BIN_CLASSES: dict[str, dict[str, tuple[str, ...]]] = {name: _FAMILY_CLASSES[d.metrics] for name, d in _DATASETS.items()}


class MetricsError(DmpfError, ValueError):
    """Bad input to the metrics (a ``ValueError``, and a ``DmpfError`` so the CLI shows one line)."""


# -- input handling --------------------------------------------------------------------------------

def _check_dataset(dataset: str) -> str:
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise MetricsError(f"unknown dataset {dataset!r} for metrics; choose one of: {', '.join(DATASETS)}")
    return dataset


def _as_array(values: Any, name: str) -> np.ndarray:
    """A 1-D numpy copy of a list, numpy array or torch tensor (any device / dtype), in the precision SIMS
    bins it in: float32 for a floating array / tensor of at most 32 bits, float64 for anything else.

    Narrower floats widen to float32 exactly, as MMSA would see them after ``.float()``. A column of
    shape (N, 1) — the usual shape of a regression head's output — is accepted as (N,).
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor, without importing torch
        import torch

        narrow = values.is_floating_point() and values.dtype != torch.float64
        values = values.detach().to(device="cpu", dtype=torch.float32 if narrow else torch.float64).numpy()
    narrow = isinstance(values, np.ndarray) and values.dtype.kind == "f" and values.dtype.itemsize <= 4
    try:
        arr = np.asarray(values, dtype=np.float32 if narrow else np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricsError(f"{name} must be numbers: {exc}") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise MetricsError(f"{name} must be 1-D (or an (N, 1) column), got shape {tuple(arr.shape)}")
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise MetricsError(
            f"{name} contain {int(bad.sum())} non-finite value(s) (NaN or inf), first at index {first}: {arr[first]}"
        )


def _inputs(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_array(preds, "predictions")
    t = _as_array(labels, "labels")
    if p.shape[0] != t.shape[0]:
        raise MetricsError(f"predictions and labels differ in length: {p.shape[0]} vs {t.shape[0]}")
    if p.shape[0] == 0:
        raise MetricsError("no samples: predictions and labels are empty")
    _check_finite(p, "predictions")
    _check_finite(t, "labels")
    return p, t


# -- the definitions -------------------------------------------------------------------------------

def _accuracy(pred_classes: np.ndarray, true_classes: np.ndarray) -> float:
    return float(np.mean(pred_classes == true_classes))


def _weighted_f1(pred_classes: np.ndarray, true_classes: np.ndarray) -> float:
    """scikit-learn's ``f1_score(true, pred, average="weighted")``, for a non-empty input."""
    total = 0.0
    for c in np.union1d(true_classes, pred_classes):
        in_true = true_classes == c
        in_pred = pred_classes == c
        tp = float(np.sum(in_true & in_pred))
        fp = float(np.sum(~in_true & in_pred))
        fn = float(np.sum(in_true & ~in_pred))
        f1 = 2.0 * tp / (2.0 * tp + fp + fn)  # > 0 denominator: c occurs in truth or prediction
        total += f1 * float(np.sum(in_true))
    return total / float(true_classes.size)


def _mae(p: np.ndarray, t: np.ndarray) -> float:
    return float(np.mean(np.abs(p - t)))


def _corr(p: np.ndarray, t: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (undefined there)."""
    # test constancy exactly: a mean of equal floats can differ from them in the last bit
    if p.max() == p.min() or t.max() == t.min():
        return 0.0
    dp = p - p.mean()
    dt = t - t.mean()
    denom = np.sqrt(np.sum(dp * dp) * np.sum(dt * dt))
    if not denom > 0:  # underflow of tiny, non-identical values
        return 0.0
    return float(np.clip(np.sum(dp * dt) / denom, -1.0, 1.0))


def _mosei(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    has0_p, has0_t = p >= 0, t >= 0
    non0 = t != 0
    if non0.any():
        non0_p, non0_t = p[non0] > 0, t[non0] > 0
        non0_acc, non0_f1 = _accuracy(non0_p, non0_t), _weighted_f1(non0_p, non0_t)
    else:
        non0_acc = non0_f1 = float("nan")
    mult = {k: _accuracy(np.round(np.clip(p, -k, k)), np.round(np.clip(t, -k, k))) for k in (2.0, 3.0)}
    return {
        "Has0_acc_2": _accuracy(has0_p, has0_t),
        "Has0_F1_score": _weighted_f1(has0_p, has0_t),
        "Non0_acc_2": non0_acc,
        "Non0_F1_score": non0_f1,
        "Mult_acc_5": mult[2.0],
        "Mult_acc_7": mult[3.0],
        "MAE": _mae(p, t),
        "Corr": _corr(p, t),
    }


def _sims_clip(x: np.ndarray) -> np.ndarray:
    """``x`` clipped to [-1, 1], keeping its dtype (the bounds are exact in any float precision)."""
    return np.clip(x, x.dtype.type(-1.0), x.dtype.type(1.0))


def _sims_bin(x: np.ndarray, n: int) -> np.ndarray:
    """Bin index of each (already clipped) value: bins are right-closed, the first holds -1.

    The edges are rounded to ``x``'s own dtype and compared in it, as MMSA's float32 comparisons with
    python-float edges do (see the module docstring).
    """
    # side="left" counts the edges strictly below x, so a value equal to an edge lands in the lower bin
    return np.searchsorted(np.asarray(_SIMS_EDGES[n], dtype=x.dtype), x, side="left")


def _sims(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    p, t = _sims_clip(p), _sims_clip(t)
    bins = {n: (_sims_bin(p, n), _sims_bin(t, n)) for n in _SIMS_EDGES}
    p64, t64 = p.astype(np.float64), t.astype(np.float64)  # exact widening; MAE and Corr stay float64
    return {
        "Mult_acc_2": _accuracy(*bins[2]),
        "Mult_acc_3": _accuracy(*bins[3]),
        "Mult_acc_5": _accuracy(*bins[5]),
        "F1_score": _weighted_f1(*bins[2]),
        "MAE": _mae(p64, t64),
        "Corr": _corr(p64, t64),
    }


# -- public API ------------------------------------------------------------------------------------

def compute_metrics(preds: Any, labels: Any, dataset: str) -> dict[str, float]:
    """The MMSA metrics of ``preds`` against ``labels`` for ``dataset`` (see the module docstring).

    ``preds`` and ``labels``: 1-D lists, numpy arrays or torch tensors (any device or dtype) of the same
    length ≥ 1, all finite. Returns python floats keyed and ordered as ``METRIC_KEYS[dataset]``;
    accuracies are fractions in [0, 1]. Raises :class:`MetricsError` (a ``ValueError``) for an unknown
    dataset, mismatched lengths, no samples or non-finite values.
    """
    dataset = _check_dataset(dataset)
    p, t = _inputs(preds, labels)
    if _DATASETS[dataset].metrics == "sims":
        result = _sims(p, t)  # bins in each input's own precision, like MMSA
    else:
        result = _mosei(p.astype(np.float64), t.astype(np.float64))
    return {key: float(result[key]) for key in METRIC_KEYS[dataset]}


def binned_label_names(dataset: str) -> list[str]:
    """The keys :func:`label_bins` returns for ``dataset``: ``["bin2", "bin7"]`` for MOSEI, MOSI and
    synthetic, ``["bin2", "bin3", "bin5"]`` for SIMS (their class names: ``BIN_CLASSES[dataset]``)."""
    return list(BIN_CLASSES[_check_dataset(dataset)])


def label_bins(preds: Any, dataset: str) -> dict[str, list[str]]:
    """Sentiment scores as the dataset's class names, for ``dmpf predict`` output.

    MOSEI / MOSI / synthetic: ``bin2`` = "positive" if p ≥ 0 else "negative" (the Has0 convention);
    ``bin7`` = the name of round(clip(p, ±3)) (half to even) from −3 "highly negative" … 0 "neutral" …
    3 "highly positive". SIMS: p clipped to [−1, 1], then the 2-, 3- and 5-class bins of the metrics,
    named as in ``BIN_CLASSES["sims"]``, clipped and compared in p's own precision (float32 for a
    float32 array or tensor) as the metrics are. An empty input gives empty lists.
    """
    dataset = _check_dataset(dataset)
    p = _as_array(preds, "predictions")
    _check_finite(p, "predictions")
    classes = BIN_CLASSES[dataset]
    if _DATASETS[dataset].metrics == "sims":
        p = _sims_clip(p)
        index = {f"bin{n}": _sims_bin(p, n) for n in _SIMS_EDGES}
    else:
        p = p.astype(np.float64)
        index = {
            "bin2": (p >= 0).astype(np.int64),
            "bin7": (np.round(np.clip(p, -3.0, 3.0)) + 3).astype(np.int64),
        }
    return {key: [classes[key][i] for i in index[key]] for key in classes}
