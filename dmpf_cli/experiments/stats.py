"""The statistics ``dmpf report`` puts beside a difference: Student's t (its CDF and quantiles, from a regularised
incomplete beta function written here), the paired t interval and p-value, and the paired bootstrap.

numpy and the standard library only: scipy is a large dependency for three functions, and these are short,
tested against published values (``t_{0.975,4} = 2.7764``) and closed forms (``df = 1`` is Cauchy, ``df = 2``
has an algebraic CDF).

Two tests, because a difference between two configs has two sources of noise:

* **paired t over seeds** — training noise: runs that share a seed number share their initialisation and data
  order, so the per-seed differences d_s are the paired observations; interval mean(d) ± t_{0.975,n−1}·sd(d)/√n.
  It says how sure one can be given the seeds, and needs at least two shared seeds.
* **paired bootstrap over test samples** — test-set noise: the test samples are resampled with replacement and
  the statistic (for the report: the difference of the seed-mean metric, every run scored on the same
  resample) recomputed on each resample; the interval is the percentiles of those values. It says how much
  the difference owes to which samples happen to be in the test set, and works from one seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PairedT",
    "Bootstrap",
    "betainc",
    "bootstrap_indices",
    "paired_bootstrap",
    "paired_t",
    "percentile_interval",
    "t_cdf",
    "t_quantile",
    "t_two_sided_p",
]

_EPS = 1e-15
_TINY = 1e-300


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 ≤ x ≤ 1.

    Its continued fraction (Lentz's method) converges fast for x < (a + 1) / (a + b + 2); above that the
    symmetry I_x(a, b) = 1 − I_{1−x}(b, a) brings x back into that range.
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1, got {x}")
    if x == 0.0 or x == 1.0:
        return x
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - betainc(b, a, 1.0 - x)
    # x^a (1-x)^b / (a B(a, b)), in logs so that large a, b do not overflow
    front = math.exp(a * math.log(x) + b * math.log1p(-x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)) / a
    # I = front / (1 + d1 / (1 + d2 / (1 + ...))), the terms d_m alternating between the odd and even forms
    f, c, d = 1.0, 1.0, 0.0
    for m in range(1, 10_000):
        k = m // 2
        if m % 2:  # d_{2k+1}
            term = -(a + k) * (a + b + k) * x / ((a + 2 * k) * (a + 2 * k + 1))
        else:  # d_{2k}
            term = k * (b - k) * x / ((a + 2 * k - 1) * (a + 2 * k))
        d = 1.0 + term * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + term / c
        c = c if abs(c) > _TINY else _TINY
        f *= c * d
        if abs(c * d - 1.0) < _EPS:
            return front / f
    raise ArithmeticError(f"betainc({a}, {b}, {x}) did not converge")  # not reached for a, b < 1e6


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom (df > 0, not necessarily whole)."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    tail = t_two_sided_p(t, df) / 2.0
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The t with P(T ≤ t) = q: bisection on :func:`t_cdf`, to about 1e-12 relative."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"t_quantile needs 0 < q < 1, got {q}")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class PairedT:
    """A paired t interval: ``n`` pairs, their mean difference with its ``level`` interval, the two-sided p of
    "no difference", ``df = n − 1``."""

    n: int
    mean: float
    low: float
    high: float
    p: float
    df: int
    level: float


def paired_t(differences, level: float = 0.95) -> PairedT:
    """Student's t interval and two-sided p-value for the mean of paired differences (at least two).

    Differences that are all equal have sd 0: the interval is that one value, and p is 1 when it is 0 and 0
    otherwise (the limit of the test as the spread vanishes).
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"paired_t needs at least two differences, got {d.size}")
    n = int(d.size)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + level / 2.0, n - 1) * se
    if se > 0:
        p = t_two_sided_p(mean / se, n - 1)
    else:
        p = 1.0 if mean == 0 else 0.0
    return PairedT(n, mean, mean - half, mean + half, p, n - 1, level)


@dataclass(frozen=True)
class Bootstrap:
    """A bootstrap percentile interval: the statistic on the data as it is (``estimate``), the ``level``
    interval of its ``resamples`` values (NaN ones left out: ``valid`` counts the others), and the RNG seed."""

    estimate: float
    low: float
    high: float
    resamples: int
    valid: int
    seed: int
    level: float


def bootstrap_indices(n: int, resamples: int, seed: int, chunk: int = 100) -> Iterator[np.ndarray]:
    """``resamples`` draws of n sample indices with replacement, in (≤ chunk, n) blocks: a bounded amount of
    memory at a time. The draws depend on ``seed``, ``n``, ``resamples`` and ``chunk`` only, so a report made
    twice is the same report."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, chunk):
        yield rng.integers(0, n, size=(min(chunk, resamples - start), n))


def percentile_interval(values, level: float = 0.95) -> tuple[float, float, int]:
    """The central ``level`` percentile interval of ``values`` (numpy's linear interpolation), NaN ones left
    out; with the number of values it used. (NaN, NaN, 0) when none is a number."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    if not finite.size:
        return math.nan, math.nan, 0
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high), int(finite.size)


def paired_bootstrap(statistic: Callable[[np.ndarray], Mapping[str, np.ndarray]], n: int, *,
                     resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Bootstrap]:
    """Percentile intervals of named statistics over ``resamples`` resamples of n paired samples.

    ``statistic(index)`` takes a (B, n) block of sample indices — each row one resample — and returns
    {name: B values}; it is called once more with the identity (1, n) for the estimates. The pairing is the
    caller's: it indexes both sides' arrays, aligned by sample, with the same rows, so each resample keeps
    every pair together. Several statistics at once (a report's metrics) share one set of resamples.
    """
    if n < 1:
        raise ValueError("paired_bootstrap needs at least one sample")
    estimates = {name: float(np.asarray(v)[0]) for name, v in statistic(np.arange(n)[None, :]).items()}
    blocks = [statistic(index) for index in bootstrap_indices(n, resamples, seed)]
    out = {}
    for name, estimate in estimates.items():
        low, high, valid = percentile_interval(np.concatenate([np.asarray(b[name]) for b in blocks]), level)
        out[name] = Bootstrap(estimate, low, high, resamples, valid, seed, level)
    return out
