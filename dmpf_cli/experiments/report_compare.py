"""``dmpf report``'s numbers: each row's mean ± std over its seeds, and its difference to the baseline under
two paired tests (:mod:`dmpf_cli.experiments.stats`).

Δ and both tests use the seeds the two rows share (paired: Δ is the mean per-seed difference, the centre of the
t interval), or every seed of each when they share none (Δ: the difference of the means):

* *paired t over seeds*: the per-seed differences of the runs the two rows have in common by seed number,
  Student's t interval (95%) and two-sided p; n/a with fewer than two shared seeds, and the reason says so.
* *paired bootstrap over test samples*: the test samples both rows' runs scored, paired by sample id;
  ``RESAMPLES`` resamples of them with replacement from a fixed RNG seed (``BOOTSTRAP_SEED``), so a report
  is the same every time; on each, every run of both rows is scored on that same resample and the statistic
  is the difference of the two rows' seed means; the interval is those values' 2.5th and 97.5th percentiles.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DmpfError
from ..metrics import LOWER_IS_BETTER, batch_metrics, compute_metrics, mean_std
from ..store.checkpoints import load_predictions
from ..store.run import RunDir, RunError
from .report_rows import SPLIT, Row, Run
from .stats import paired_bootstrap, paired_t

RESAMPLES = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
T_TEST = "paired t over seeds"
BOOTSTRAP_TEST = "paired bootstrap over test samples"


def seed_summary(row: Row, metrics: list[str]) -> dict[str, dict[str, Any]]:
    """mean ± std over the row's seeds (:func:`~dmpf_cli.metrics.mean_std`), per metric its runs have."""
    values = {metric: [run.test(metric) for run in row.runs] for metric in metrics}
    return {metric: mean_std(v) for metric, v in values.items() if v}


def _pairs(row: Row, base: Row) -> list[tuple[Run, Run]]:
    """The (row run, baseline run) pairs of one seed number, in the row's order."""
    base_by_seed = {run.seed: run for run in base.runs if run.seed is not None}
    return [(run, base_by_seed[run.seed]) for run in row.runs if run.seed in base_by_seed]


def _t_test(pairs: list[tuple[Run, Run]], metric: str) -> dict[str, Any]:
    seeds = [a.seed for a, _ in pairs]
    out: dict[str, Any] = {"test": T_TEST, "seeds": seeds, "n": len(seeds), "df": None, "mean_diff": None,
                           "low": None, "high": None, "p": None, "level": LEVEL, "reason": None}
    if len(pairs) < 2:
        out["reason"] = (f"{'no' if not pairs else len(pairs)} shared seed{'' if len(pairs) == 1 else 's'}"
                         f"{' (' + str(seeds[0]) + ')' if pairs else ''}; a paired t needs 2")
        return out
    diffs = np.array([a.test(metric) - b.test(metric) for a, b in pairs])
    if np.isnan(diffs).any():
        out["reason"] = f"{metric} is undefined for some seeds"
        return out
    t = paired_t(diffs, LEVEL)
    out.update(df=t.df, mean_diff=t.mean, low=t.low, high=t.high, p=t.p)
    return out


class Predictions:
    """Each run's stored test predictions, read once, and each run's bootstrap scores, computed once per sample
    set: a baseline is resampled once for all the rows compared with it."""

    def __init__(self, metrics: list[str], notes: list[str]):
        self.metrics = metrics
        self.notes = notes
        self.read: dict[Path, dict[str, np.ndarray] | str] = {}
        self.scores: dict[tuple, dict[str, np.ndarray]] = {}

    def get(self, run: Run) -> dict[str, np.ndarray] | str:
        """{"ids", "pred", "label"} of the run's test split, or why there are none."""
        if run.path not in self.read:
            try:
                split = load_predictions(RunDir(run.path).predictions).get(SPLIT)
            except RunError as exc:
                self.read[run.path] = str(exc)
            else:
                self.read[run.path] = split if split is not None else f"{run.path}: no {SPLIT} predictions stored"
                if split is not None:
                    self._check(run, split)
        return self.read[run.path]

    def _check(self, run: Run, split: dict[str, np.ndarray]) -> None:
        """A note when the stored predictions do not give the results.json scores (the bootstrap uses them)."""
        try:
            again = compute_metrics(split["pred"], split["label"], run.dataset)
        except DmpfError as exc:
            self.read[run.path] = f"{run.path}: unusable predictions ({exc})"
            return
        off = [m for m in self.metrics
               if not (again[m] == run.test(m) or (math.isnan(again[m]) and math.isnan(run.test(m)))
                       or abs(again[m] - run.test(m)) <= 1e-9)]
        if off:
            self.notes.append(f"{run.path}: its stored predictions do not reproduce results.json's "
                              f"{', '.join(off)}; the bootstrap uses the stored predictions")

    def scored(self, run: Run, pred: np.ndarray, label: np.ndarray, index: np.ndarray,
               key: tuple[bytes, bytes]) -> dict[str, np.ndarray]:
        """The run's metrics on each resample of ``index``; ``key``: (the samples, the resamples) it stands for."""
        if (run.path, *key) not in self.scores:
            self.scores[(run.path, *key)] = batch_metrics(pred[index], label[index], run.dataset, self.metrics)
        return self.scores[(run.path, *key)]


def _bootstrap(ours: list[Run], theirs: list[Run], cache: Predictions) -> dict[str, dict[str, Any]]:
    """The paired bootstrap of every metric's difference of seed means (``ours`` − ``theirs``), or why it
    cannot be made."""
    def unavailable(reason: str) -> dict[str, dict[str, Any]]:
        return {m: {"test": BOOTSTRAP_TEST, "samples": None, "resamples": RESAMPLES, "seed": BOOTSTRAP_SEED,
                    "level": LEVEL, "estimate": None, "low": None, "high": None, "reason": reason}
                for m in cache.metrics}

    runs = [*ours, *theirs]
    stored = [cache.get(run) for run in runs]
    for why in stored:
        if isinstance(why, str):
            return unavailable(why)
    for run, split in zip(runs, stored):
        if len(set(split["ids"].tolist())) != len(split["ids"]):
            return unavailable(f"{run.path}: repeated sample ids in its {SPLIT} predictions")
    common = set(stored[0]["ids"].tolist())
    for split in stored[1:]:
        common &= set(split["ids"].tolist())
    ids = [i for i in stored[len(ours)]["ids"].tolist() if i in common]  # the baseline's order
    if not ids:
        return unavailable(f"no {SPLIT} sample ids in common")
    aligned = []
    for split in stored:
        where = {sample: k for k, sample in enumerate(split["ids"].tolist())}
        index = np.array([where[i] for i in ids])
        aligned.append((split["pred"][index], split["label"][index]))
    label = aligned[len(ours)][1]
    if any(not np.array_equal(lab, label) for _, lab in aligned):
        return unavailable("the runs' labels differ for the same sample ids (tested on different data)")
    samples = hashlib.blake2b("\n".join(ids).encode(), digest_size=16).digest()
    sides = (list(zip(ours, aligned[:len(ours)])), list(zip(theirs, aligned[len(ours):])))

    def statistic(index: np.ndarray) -> dict[str, np.ndarray]:
        key = (samples, hashlib.blake2b(index.tobytes(), digest_size=16).digest())
        scores = [[cache.scored(run, pred, label, index, key) for run, (pred, _) in side] for side in sides]
        means = [{m: np.mean([s[m] for s in side], axis=0) for m in cache.metrics} for side in scores]
        return {m: means[0][m] - means[1][m] for m in cache.metrics}

    results = paired_bootstrap(statistic, len(ids), resamples=RESAMPLES, seed=BOOTSTRAP_SEED, level=LEVEL)
    out = {}
    for metric, b in results.items():
        reason = None if b.valid else f"{metric} is undefined on every resample"
        out[metric] = {"test": BOOTSTRAP_TEST, "samples": len(ids), "resamples": RESAMPLES, "seed": BOOTSTRAP_SEED,
                       "level": LEVEL, "estimate": b.estimate, "low": b.low if b.valid else None,
                       "high": b.high if b.valid else None, "reason": reason}
    return out


def compare(row: Row, base: Row, cache: Predictions) -> dict[str, dict[str, Any]]:
    """Each metric's difference to the baseline with both tests. Over the seeds the two rows share when they share
    one or more (paired: Δ is the mean per-seed difference, the centre of the t interval), else over every seed
    of each (Δ: the difference of the means; no t)."""
    pairs = _pairs(row, base)
    ours, theirs = ([a for a, _ in pairs], [b for _, b in pairs]) if pairs else (row.runs, base.runs)
    row.compared = {"paired": bool(pairs), "seeds": [r.seed for r in ours], "baseline_seeds": [r.seed for r in theirs]}
    boot = _bootstrap(ours, theirs, cache) if base.runs else None
    out = {}
    for metric in cache.metrics:
        t = _t_test(pairs, metric)
        if not base.runs:
            t["reason"] = "the baseline has no finished runs"
            out[metric] = {"diff": None, "better": None, "paired_t": t, "bootstrap": {
                "test": BOOTSTRAP_TEST, "low": None, "high": None, "reason": t["reason"]}}
            continue
        diff = (float(np.mean([a.test(metric) - b.test(metric) for a, b in pairs])) if pairs else
                row.summary[metric]["mean"] - base.summary[metric]["mean"])
        better = None if math.isnan(diff) or diff == 0 else (diff < 0) == (metric in LOWER_IS_BETTER)
        out[metric] = {"diff": diff, "better": better, "paired_t": t, "bootstrap": boot[metric]}
    return out
