"""Paired statistics for comparing methods on the same images.

Every test is *paired*: method A and method B are scored on the same images and the per-image
differences d_i = a_i - b_i are analysed. Degenerate inputs never crash:

* fewer than 2 pairs: statistic and p are NaN (note "fewer than 2 pairs");
* all differences zero: statistic 0 and p = 1 (no evidence of any difference; note says so) --
  scipy would return NaN (t-test) or raise (Wilcoxon);
* t-test with constant non-zero differences: |t| = inf and p = 0 (note says so).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..config import SEED

ArrayLike = Sequence[float] | np.ndarray | pd.Series


@dataclass(frozen=True)
class TestResult:
    """A test's statistic and two-sided p-value, with a note when the input was degenerate."""

    statistic: float
    p: float
    note: str = ""


def differences(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Paired differences a - b as floats; a clear error when the lengths differ or values are NaN."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D of equal length, got shapes {a.shape} and {b.shape}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("paired samples contain NaN; drop incomplete pairs first")
    return a - b


def _degenerate(d: np.ndarray) -> TestResult | None:
    if len(d) < 2:
        return TestResult(float("nan"), float("nan"), "fewer than 2 pairs")
    if np.all(d == 0):
        return TestResult(0.0, 1.0, "all differences zero")
    return None


def paired_ttest(a: ArrayLike, b: ArrayLike) -> TestResult:
    """Paired t-test (the thesis' test): t = mean(d) / (sd(d) / sqrt(n)), df = n - 1, two-sided."""
    d = differences(a, b)
    if (special := _degenerate(d)) is not None:
        return special
    if np.all(d == d[0]):
        return TestResult(float(np.sign(d[0]) * np.inf), 0.0, "differences constant and non-zero")
    with warnings.catch_warnings():
        # scipy warns of precision loss when the differences are at float-noise level (e.g. CAM vs
        # Grad-CAM on a GAP + linear network); the result is kept -- its effect size and CI show it is noise
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(a, b)
    return TestResult(float(res.statistic), float(res.pvalue))


def wilcoxon(a: ArrayLike, b: ArrayLike) -> TestResult:
    """Wilcoxon signed-rank test, two-sided, zero differences dropped (Wilcoxon's original rule).

    The statistic is min(W+, W-). The p-value is exact for up to 50 non-zero differences
    without ties in |d|, else from the normal approximation with tie correction (scipy's
    permutation fallback is far too slow for a table of hundreds of tests).
    """
    d = differences(a, b)
    if (special := _degenerate(d)) is not None:
        return special
    d = d[d != 0]
    exact = len(d) <= 50 and len(np.unique(np.abs(d))) == len(d)
    res = stats.wilcoxon(d, method="exact" if exact else "approx")
    return TestResult(float(res.statistic), float(res.pvalue))


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down), in the input order; NaN stays NaN and is not counted.

    Sorted ascending, p_(j) (j = 1..m) becomes max_{i <= j} min(1, (m - i + 1) p_(i)).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def cohens_dz(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's d_z = mean(d) / sd(d) (sd with n - 1); 0 if all d are 0, +-inf if d is constant, NaN if n < 2."""
    d = differences(a, b)
    if len(d) < 2:
        return float("nan")
    if np.all(d == 0):
        return 0.0
    sd = d.std(ddof=1)
    return float(np.sign(d.mean()) * np.inf) if sd == 0 else float(d.mean() / sd)


def _bootstrap(data: tuple[np.ndarray, ...], statistic, level: float, n_boot: int,
               seed: int) -> tuple[float, float]:
    """``scipy.stats.bootstrap`` (paired over the arrays of ``data``), BCa; the percentile interval of the
    same resamples where BCa is undefined (all jackknife values equal, e.g. values equal up to float noise)."""
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # includes scipy's DegenerateDataWarning
            res = stats.bootstrap(data, statistic, paired=len(data) > 1, vectorized=True, confidence_level=level,
                                  n_resamples=n_boot, method=method, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            break
    return lo, hi


def bootstrap_ci(values: ArrayLike, level: float = 0.95, n_boot: int = 10_000,
                 seed: int = SEED) -> tuple[float, float]:
    """BCa bootstrap CI of the mean of ``values`` (e.g. paired differences): ``scipy.stats.bootstrap``,
    ``n_boot`` resamples, seeded. The value twice when all values are equal, NaN for fewer than 2."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float("nan"), float("nan")
    if np.all(v == v[0]):
        return float(v[0]), float(v[0])
    return _bootstrap((v,), np.mean, level, n_boot, seed)


def cluster_bootstrap_ci(values: ArrayLike, clusters: Sequence, level: float = 0.95, n_boot: int = 10_000,
                         seed: int = SEED) -> tuple[float, float]:
    """BCa bootstrap CI of the mean of ``values`` resampling whole clusters (e.g. source photos), seeded.

    Images that share a source are not independent: a resample draws sources with replacement and
    takes all their images; the statistic is the mean over the drawn images (sum of cluster sums /
    sum of cluster sizes). NaN values are dropped; NaN for fewer than 2 clusters.
    """
    v, g = np.asarray(values, dtype=np.float64), np.asarray(clusters)
    if v.shape != g.shape:
        raise ValueError(f"values and clusters must have the same length, got {v.shape} and {g.shape}")
    keep = ~np.isnan(v)
    _, inv = np.unique(g[keep], return_inverse=True)
    sums, sizes = np.bincount(inv, weights=v[keep]), np.bincount(inv).astype(np.float64)
    if len(sums) < 2:
        return float("nan"), float("nan")
    if np.all(sums / sizes == sums[0] / sizes[0]):
        return float(sums[0] / sizes[0]), float(sums[0] / sizes[0])
    return _bootstrap((sums, sizes), lambda s, c, axis=-1: s.sum(axis) / c.sum(axis), level, n_boot, seed)


def class_mean(values: ArrayLike, classes: Sequence) -> float:
    """Mean over classes of the per-class mean (Zhang et al.'s pointing-game accuracy); NaNs dropped."""
    frame = pd.DataFrame({"v": np.asarray(values, dtype=np.float64), "c": np.asarray(classes)}).dropna()
    return float(frame.groupby("c").v.mean().mean()) if len(frame) else float("nan")


def detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean paired difference a two-sided paired t-test at ``alpha`` detects with ``power``,
    for n pairs whose differences have standard deviation ``sd``.

    Closed form (the normal-approximation formula with t quantiles, df = n - 1):
    ``(t_{1 - alpha/2} + t_{power}) sd / sqrt(n)``. NaN for n < 2; 0 when sd = 0.
    """
    if n < 2 or not np.isfinite(sd):
        return float("nan")
    df = n - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / np.sqrt(n))


def mean_ci(values: ArrayLike, level: float = 0.95) -> tuple[float, float, float]:
    """The mean and its Student-t CI ``(mean, lo, hi)``: mean +- t_{(1+level)/2, n-1} sd / sqrt(n).

    lo = hi = the mean if sd = 0; lo and hi NaN if n < 2 (the mean NaN if n = 0)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean()) if len(v) else float("nan")
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return mean, float(v.mean() - half), float(v.mean() + half)


def mean_ci_table(table: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str],
                  level: float = 0.95) -> pd.DataFrame:
    """Per group of ``keys`` (in table order, NaN keys kept): n, and ``<metric>_mean``, ``_lo``, ``_hi``
    (:func:`mean_ci`) of each of ``metrics``."""
    rows = []
    for group, g in table.groupby(list(keys), dropna=False, sort=False):
        row = dict(zip(keys, group, strict=True)) | {"n": len(g)}
        for metric in metrics:
            row[f"{metric}_mean"], row[f"{metric}_lo"], row[f"{metric}_hi"] = mean_ci(g[metric], level)
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(results: pd.DataFrame, metrics: Sequence[str], method_col: str = "method",
                  cluster_col: str | None = None, class_col: str | None = None,
                  cluster_metrics: Sequence[str] = ()) -> pd.DataFrame:
    """n, mean, std, min, max and 95% t-CI of every metric per method (NaNs skipped), long format.

    For ``cluster_metrics`` (e.g. the localisation metrics) also ``ci_low_cluster`` /
    ``ci_high_cluster``, the BCa CI resampling ``cluster_col`` (source photos,
    :func:`cluster_bootstrap_ci`), and ``class_mean``, the mean of per-``class_col`` means
    (:func:`class_mean`); NaN for the other metrics.
    """
    rows = []
    for method, group in results.groupby(method_col, sort=False):
        for metric in metrics:
            v = group[metric].dropna().to_numpy(dtype=np.float64)
            _, lo, hi = mean_ci(v)
            row = {method_col: method, "metric": metric, "n": len(v),
                   "mean": v.mean() if len(v) else np.nan, "std": v.std(ddof=1) if len(v) > 1 else np.nan,
                   "min": v.min() if len(v) else np.nan, "max": v.max() if len(v) else np.nan,
                   "ci_low": lo, "ci_high": hi}
            if cluster_metrics:
                wanted = metric in cluster_metrics
                clo, chi = (cluster_bootstrap_ci(group[metric], group[cluster_col]) if wanted and cluster_col
                            else (np.nan, np.nan))
                row |= {"ci_low_cluster": clo, "ci_high_cluster": chi,
                        "class_mean": class_mean(group[metric], group[class_col]) if wanted and class_col else np.nan}
            rows.append(row)
    return pd.DataFrame(rows)


TESTS = {"paired t-test": paired_ttest, "wilcoxon": wilcoxon}
#: The family of the pre-registered comparisons (paired t-test only); every other test is exploratory.
CONFIRMATORY, EXPLORATORY = "confirmatory", "exploratory"


def paired_values(results: pd.DataFrame, metric: str, a: str, b: str, id_col: str = "image",
                  method_col: str = "method") -> tuple[np.ndarray, np.ndarray]:
    """Scores of methods a and b on the images where both have a value, aligned by ``id_col``."""
    wide = results[results[method_col].isin([a, b])].pivot(index=id_col, columns=method_col, values=metric)
    missing = [m for m in (a, b) if m not in wide.columns]
    if missing:
        raise ValueError(f"no results for method(s) {missing}")
    wide = wide[[a, b]].dropna()
    return wide[a].to_numpy(dtype=np.float64), wide[b].to_numpy(dtype=np.float64)


def comparison_table(results: pd.DataFrame, metrics: Sequence[str],
                     pairs: Sequence[tuple[str, str]] | None = None, id_col: str = "image",
                     method_col: str = "method", seed: int = SEED,
                     confirmatory: Sequence[tuple[str, str, str]] = ()) -> pd.DataFrame:
    """Paired t-test and Wilcoxon for every (pair, metric), Holm-adjusted per family, with d_z and BCa CI.

    ``pairs`` default: all pairs of methods in order of appearance. ``confirmatory``: the
    (a, b, metric) comparisons fixed before the data; their paired t-tests form the
    ``"confirmatory"`` family, Holm-adjusted among themselves only. Every other row is
    ``"exploratory"``, Holm-adjusted over the exploratory rows of the same test. One row per
    pair x metric x test: statistic, p, ``p_holm``, ``family``, mean difference (a - b), Cohen's
    d_z, the 95% BCa bootstrap CI of the mean difference, the SD of the differences and the
    smallest mean difference detectable with 80% power at this n (:func:`detectable_difference`).
    """
    methods = list(dict.fromkeys(results[method_col]))
    pairs = list(pairs) if pairs is not None else list(combinations(methods, 2))
    planned = set(confirmatory)
    rows = []
    for a, b in pairs:
        for metric in metrics:
            x, y = paired_values(results, metric, a, b, id_col, method_col)
            d = x - y
            lo, hi = bootstrap_ci(d, seed=seed)
            sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
            for test, fn in TESTS.items():
                res = fn(x, y)
                family = CONFIRMATORY if (a, b, metric) in planned and test == "paired t-test" else EXPLORATORY
                rows.append({"family": family, "pair": f"{a} vs {b}", "a": a, "b": b, "metric": metric, "test": test,
                             "n": len(d), "mean_a": x.mean() if len(d) else np.nan,
                             "mean_b": y.mean() if len(d) else np.nan, "mean_diff": d.mean() if len(d) else np.nan,
                             "statistic": res.statistic, "p": res.p, "cohens_dz": cohens_dz(x, y),
                             "ci_low": lo, "ci_high": hi, "sd_diff": sd,
                             "detectable_diff_80": detectable_difference(sd, len(d)), "note": res.note})
    table = pd.DataFrame(rows)
    if len(table):
        table.insert(table.columns.get_loc("p") + 1, "p_holm", np.nan)
        for _, idx in table.groupby(["family", "test"]).groups.items():
            table.loc[idx, "p_holm"] = holm(table.loc[idx, "p"].to_numpy())
    return table
