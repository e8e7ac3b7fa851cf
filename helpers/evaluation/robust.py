"""What a typical photo shows: robust summaries of paired differences d_i = a_i - b_i, and equivalence.

A mean difference can be carried by a few photos (the study's hybrid - Grad-CAM insertion differences have
skew -2.8). Beside the mean and its CI (:mod:`helpers.evaluation.stats`), these say what the typical photo
shows and how concentrated the effect is:

* :func:`hodges_lehmann`: the median of the Walsh averages (d_i + d_j) / 2, i <= j, with the
  distribution-free CI from their order statistics (Hollander and Wolfe, Nonparametric Statistical Methods,
  sec. 3.2; the signed-rank statistic's normal approximation);
* :func:`win_counts`: on how many photos a wins, ties, loses;
* :func:`half_net_count`: the fewest photos whose differences carry half of the net difference;
* :func:`sign_flip_test`: the paired permutation test of the mean (exact when 2^n is small);
* :func:`tost`: two one-sided paired t-tests against a margin +-m fixed beforehand (Schuirmann 1987), with
  the verdict "equivalent within +-m", "not equivalent" or "inconclusive".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..config import SEED
from .stats import ArrayLike


def _finite(d: ArrayLike) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 1 or not np.isfinite(d).all():
        raise ValueError(f"paired differences must be a 1-D array of finite numbers, got shape {d.shape}")
    return d


def walsh_averages(d: ArrayLike) -> np.ndarray:
    """(d_i + d_j) / 2 for every i <= j, sorted: n (n + 1) / 2 values."""
    d = _finite(d)
    i, j = np.triu_indices(len(d))
    return np.sort((d[i] + d[j]) / 2)


def hodges_lehmann(d: ArrayLike, level: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high): the median of the Walsh averages and its distribution-free CI at ``level``.

    With M = n (n + 1) / 2 sorted Walsh averages W_(1..M), the CI is [W_(k), W_(M + 1 - k)] where
    k = floor(n (n + 1) / 4 - z sqrt(n (n + 1) (2n + 1) / 24)), at least 1 (then the CI is the full range).
    NaN for fewer than 2 differences."""
    d = _finite(d)
    n = len(d)
    if n < 2:
        return float("nan"), float("nan"), float("nan")
    w = walsh_averages(d)
    z = stats.norm.ppf(0.5 + level / 2)
    k = max(1, math.floor(n * (n + 1) / 4 - z * math.sqrt(n * (n + 1) * (2 * n + 1) / 24)))
    return float(np.median(w)), float(w[k - 1]), float(w[len(w) - k])


@dataclass(frozen=True)
class Wins:
    """On how many photos the first method is better, equal, worse (by the metric's direction)."""

    wins: int
    ties: int
    losses: int

    @property
    def share(self) -> float:
        """wins / photos (ties count as not winning)."""
        n = self.wins + self.ties + self.losses
        return self.wins / n if n else float("nan")


def win_counts(d: ArrayLike, higher_is_better: bool = True) -> Wins:
    """Wins, ties and losses of the first method over the paired differences ``d``."""
    d = _finite(d) * (1 if higher_is_better else -1)
    return Wins(int((d > 0).sum()), int((d == 0).sum()), int((d < 0).sum()))


def half_net_count(d: ArrayLike) -> int:
    """The fewest photos whose differences, taken in the direction of the net sum and largest first, add up
    to at least half of it (0 when the net difference is 0)."""
    d = _finite(d)
    net = d.sum()
    if net == 0:
        return 0
    along = np.sort(d[np.sign(d) == np.sign(net)] * np.sign(net))[::-1]
    return int(np.searchsorted(np.cumsum(along), abs(net) / 2) + 1)


def sign_flip_test(d: ArrayLike, n_resamples: int = 10_000, seed: int = SEED) -> float:
    """Two-sided p of the paired sign-flip permutation test of mean(d) = 0 (``scipy.stats.permutation_test``;
    exact over all 2^n sign patterns when that is at most ``n_resamples``)."""
    d = _finite(d)
    if len(d) < 2 or np.all(d == 0):
        return 1.0 if len(d) >= 2 else float("nan")
    res = stats.permutation_test((d,), np.mean, permutation_type="samples", vectorized=True,
                                 n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    return float(res.pvalue)


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests: their p (the larger one), the (1 - 2 alpha) CI of the mean, the margin, the verdict."""

    p: float
    low: float
    high: float
    margin: float
    verdict: str


def tost(d: ArrayLike, margin: float, alpha: float = 0.05) -> Equivalence:
    """Equivalence of mean(d) with 0 within +-``margin`` by two one-sided paired t-tests.

    "equivalent within +-m" when both one-sided tests reject at ``alpha`` (the (1 - 2 alpha) CI lies inside
    (-m, m)); "not equivalent" when that CI lies wholly outside [-m, m]; "inconclusive" otherwise."""
    d = _finite(d)
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be > 0, got {margin}")
    n = len(d)
    if n < 2:
        return Equivalence(float("nan"), float("nan"), float("nan"), margin, "inconclusive")
    mean, se = d.mean(), d.std(ddof=1) / math.sqrt(n)
    if se == 0:
        inside = abs(mean) < margin
        return Equivalence(0.0 if inside else 1.0, mean, mean, margin,
                           f"equivalent within ±{margin:g}" if inside else "not equivalent")
    p = max(stats.t.sf((mean + margin) / se, n - 1), stats.t.cdf((mean - margin) / se, n - 1))
    half = stats.t.ppf(1 - alpha, n - 1) * se
    low, high = mean - half, mean + half
    verdict = (f"equivalent within ±{margin:g}" if -margin < low and high < margin
               else "not equivalent" if high < -margin or low > margin else "inconclusive")
    return Equivalence(float(p), float(low), float(high), margin, verdict)
