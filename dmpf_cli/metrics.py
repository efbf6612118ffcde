"""Evaluation metrics with the MMSA key names and definitions (design.md §8), so results compare with papers.

``p`` = predictions, ``t`` = labels (regression scores). Every value compute_metrics returns is a python ``float``;
accuracies and F1 scores are fractions in [0, 1] (as MMSA reports them, not percentages) and are not
rounded here. :func:`batch_metrics` scores many sample sets at once — a bootstrap's resamples, as rows of a
(B, N) array — and gives each row exactly what :func:`compute_metrics` gives it alone: the definitions below
are written once, over rows, and compute_metrics is them on one row.

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
    "FRACTIONS",
    "LOWER_IS_BETTER",
    "METRIC_KEYS",
    "MetricsError",
    "batch_metrics",
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

# Metrics that are fractions in [0, 1] (the accuracies and F1 scores): papers print them as percentages.
FRACTIONS: frozenset[str] = frozenset(k for keys in _FAMILY_KEYS.values() for k in keys) - {"MAE", "Corr"}

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
# Each works on rows: ``p`` and ``t`` are (B, N) arrays, one scored sample set per row (a bootstrap's
# resamples; compute_metrics passes one row), and each returns B values. Every reduction runs along a
# row, so a row is scored exactly as the same values would be alone.

def _accuracy(pred_classes: np.ndarray, true_classes: np.ndarray, within: np.ndarray | None = None) -> np.ndarray:
    """Per row, the fraction of (``within``) samples whose classes agree; NaN for a row with none within."""
    hits = pred_classes == true_classes
    if within is None:
        return hits.mean(axis=1)
    count = within.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (hits & within).sum(axis=1) / count


def _weighted_f1(pred_classes: np.ndarray, true_classes: np.ndarray, classes: tuple,
                 within: np.ndarray | None = None) -> np.ndarray:
    """Per row, scikit-learn's ``f1_score(true, pred, average="weighted")`` over the (``within``) samples;
    NaN for a row with none within. ``classes``: every class either side can hold, in ascending order (a
    class absent from a row on both sides adds exactly 0, as scikit-learn leaves it out)."""
    total = np.zeros(true_classes.shape[0])
    for c in classes:
        in_true = true_classes == c
        in_pred = pred_classes == c
        if within is not None:
            in_true &= within
            in_pred &= within
        tp = np.sum(in_true & in_pred, axis=1).astype(np.float64)
        fp = np.sum(~in_true & in_pred, axis=1).astype(np.float64)
        fn = np.sum(in_true & ~in_pred, axis=1).astype(np.float64)
        denom = 2.0 * tp + fp + fn  # > 0 exactly where c occurs in the row's truth or prediction
        f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        total = total + f1 * np.sum(in_true, axis=1).astype(np.float64)
    size = (np.full(true_classes.shape[0], true_classes.shape[1]) if within is None else within.sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / size.astype(np.float64)


def _mae(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.mean(np.abs(p - t), axis=1)


def _corr(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per row, Pearson correlation; 0.0 where either side is constant (undefined there)."""
    # test constancy exactly: a mean of equal floats can differ from them in the last bit
    constant = (p.max(axis=1) == p.min(axis=1)) | (t.max(axis=1) == t.min(axis=1))
    dp = p - p.mean(axis=1, keepdims=True)
    dt = t - t.mean(axis=1, keepdims=True)
    denom = np.sqrt(np.sum(dp * dp, axis=1) * np.sum(dt * dt, axis=1))
    defined = ~constant & (denom > 0)  # denom 0 for non-constant rows: underflow of tiny, non-identical values
    r = np.divide(np.sum(dp * dt, axis=1), denom, out=np.zeros_like(denom), where=defined)
    return np.clip(r, -1.0, 1.0)


def _mosei(p: np.ndarray, t: np.ndarray, keys) -> dict[str, np.ndarray]:
    p, t = p.astype(np.float64, copy=False), t.astype(np.float64, copy=False)
    out = {}
    want = set(keys)
    if want & {"Has0_acc_2", "Has0_F1_score"}:
        has0_p, has0_t = p >= 0, t >= 0
        out["Has0_acc_2"] = _accuracy(has0_p, has0_t)
        out["Has0_F1_score"] = _weighted_f1(has0_p, has0_t, (False, True))
    if want & {"Non0_acc_2", "Non0_F1_score"}:  # NaN for a row without a non-zero label: nothing to score
        non0 = t != 0
        non0_p, non0_t = p > 0, t > 0
        out["Non0_acc_2"] = _accuracy(non0_p, non0_t, non0)
        out["Non0_F1_score"] = _weighted_f1(non0_p, non0_t, (False, True), non0)
    for key, k in (("Mult_acc_5", 2.0), ("Mult_acc_7", 3.0)):
        if key in want:
            out[key] = _accuracy(np.round(np.clip(p, -k, k)), np.round(np.clip(t, -k, k)))
    if "MAE" in want:
        out["MAE"] = _mae(p, t)
    if "Corr" in want:
        out["Corr"] = _corr(p, t)
    return out


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


def _sims(p: np.ndarray, t: np.ndarray, keys) -> dict[str, np.ndarray]:
    p, t = _sims_clip(p), _sims_clip(t)
    want = set(keys)
    out = {}
    for n in _SIMS_EDGES:
        if want & {f"Mult_acc_{n}", *(["F1_score"] if n == 2 else [])}:
            pb, tb = _sims_bin(p, n), _sims_bin(t, n)
            out[f"Mult_acc_{n}"] = _accuracy(pb, tb)
            if n == 2:
                out["F1_score"] = _weighted_f1(pb, tb, (0, 1))
    p64, t64 = p.astype(np.float64), t.astype(np.float64)  # exact widening; MAE and Corr stay float64
    if "MAE" in want:
        out["MAE"] = _mae(p64, t64)
    if "Corr" in want:
        out["Corr"] = _corr(p64, t64)
    return out


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
    rows = _rows(p[None, :], t[None, :], dataset, METRIC_KEYS[dataset])
    return {key: float(rows[key][0]) for key in METRIC_KEYS[dataset]}


def batch_metrics(preds: np.ndarray, labels: np.ndarray, dataset: str,
                  keys: tuple[str, ...] | list[str] | None = None) -> dict[str, np.ndarray]:
    """The metrics of every row of ``preds`` (B, N) against the same row of ``labels`` (B, N): B values per
    key, each exactly what :func:`compute_metrics` gives for that row alone (it is this function on one row).

    What a bootstrap needs: each row one resample of a test set, all scored in a few array operations.
    ``keys``: a subset of ``METRIC_KEYS[dataset]`` to compute (default: all). The rows are taken as they
    are — finite, non-empty, numpy arrays, float32 where SIMS should bin in float32 (checked by
    compute_metrics for its input, not here, where the same values are resampled thousands of times).
    """
    dataset = _check_dataset(dataset)
    keys = tuple(METRIC_KEYS[dataset] if keys is None else keys)
    unknown = [k for k in keys if k not in METRIC_KEYS[dataset]]
    if unknown:
        raise MetricsError(f"no metric {unknown[0]!r} for {dataset}; its metrics: {', '.join(METRIC_KEYS[dataset])}")
    p, t = np.asarray(preds), np.asarray(labels)
    if p.ndim != 2 or p.shape != t.shape:
        raise MetricsError(f"batch_metrics takes (B, N) predictions and labels of one shape, got "
                           f"{tuple(p.shape)} and {tuple(t.shape)}")
    return _rows(p, t, dataset, keys)


def _rows(p: np.ndarray, t: np.ndarray, dataset: str, keys) -> dict[str, np.ndarray]:
    if _DATASETS[dataset].metrics == "sims":
        result = _sims(p, t, keys)  # bins in each input's own precision, like MMSA
    else:
        result = _mosei(p, t, keys)
    return {key: result[key] for key in keys}


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


def mean_std(values: Any) -> dict[str, Any]:
    """A metric over seeds, as ``dmpf train``'s summary and ``dmpf report`` both give it: the mean, the sample
    standard deviation (0 for one value) and the values, in float64."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "values": arr.tolist()}
