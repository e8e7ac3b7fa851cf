"""Paired statistics against hand-worked small examples and degenerate inputs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers.evaluation import stats as S


def test_paired_ttest_by_hand() -> None:
    # d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3; df = 2: p = 1 - t / sqrt(2 + t^2)
    res = S.paired_ttest([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    t = 2 * math.sqrt(3)
    assert res.statistic == pytest.approx(t) and res.p == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert S.paired_ttest([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]).statistic == pytest.approx(-t)


def test_wilcoxon_by_hand() -> None:
    # d = (1, 2, 3, -0.5): |d| ranks 2, 3, 4, 1 -> W+ = 9, W- = 1; exact null over 16 sign patterns:
    # P(W- <= 1) = 2/16, two-sided p = 4/16
    res = S.wilcoxon([1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.5])
    assert res.statistic == 1.0 and res.p == pytest.approx(0.25)


def test_degenerate_inputs_are_defined_not_crashes() -> None:
    same = [0.3, 0.5, 0.7]
    for fn in (S.paired_ttest, S.wilcoxon):
        assert fn(same, same) == S.TestResult(0.0, 1.0, "all differences zero")
        one = fn([1.0], [0.0])
        assert math.isnan(one.p) and one.note == "fewer than 2 pairs"
    shifted = S.paired_ttest([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert shifted.statistic == math.inf and shifted.p == 0.0
    assert S.cohens_dz(same, same) == 0.0 and S.cohens_dz([1.0, 2.0], [0.0, 1.0]) == math.inf
    assert math.isnan(S.cohens_dz([1.0], [0.0]))
    with pytest.raises(ValueError, match="equal length"):
        S.paired_ttest([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        S.wilcoxon([1.0, np.nan], [1.0, 2.0])


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04, 0.2 -> 4 * 0.01, 3 * 0.03, max(0.09, 2 * 0.04), max(0.09, 0.2)
    adj = S.holm([0.01, 0.04, 0.03, 0.2])
    assert np.allclose(adj, [0.04, 0.09, 0.09, 0.2])
    assert np.allclose(S.holm([0.5, 0.6]), [1.0, 1.0])
    with_nan = S.holm([0.01, np.nan, 0.04])
    assert np.isnan(with_nan[1]) and np.allclose(with_nan[[0, 2]], [0.02, 0.04])


def test_cohens_dz_by_hand() -> None:
    assert S.cohens_dz([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(2.0)


def test_bootstrap_ci_by_hand_and_seeded() -> None:
    # two values 0 and 1: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    assert S.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert S.bootstrap_ci([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2))
    v = np.random.default_rng(1).normal(size=30)
    assert S.bootstrap_ci(v, seed=3) == S.bootstrap_ci(v, seed=3) != S.bootstrap_ci(v, seed=4)
    lo, hi = S.bootstrap_ci(v)
    assert lo < v.mean() < hi


def test_bootstrap_ci_is_scipys_bca() -> None:
    # a skewed sample: BCa shifts the interval against the percentile one; the CI is scipy's BCa, seeded
    v = np.random.default_rng(2).exponential(size=25)
    ref = stats.bootstrap((v,), np.mean, n_resamples=10_000, method="BCa", rng=np.random.default_rng(7))
    assert S.bootstrap_ci(v, seed=7) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    means = v[np.random.default_rng(7).integers(0, 25, size=(10_000, 25))].mean(axis=1)
    assert S.bootstrap_ci(v, seed=7)[1] > np.quantile(means, 0.975) + 0.01  # not the percentile interval
    assert math.isnan(S.bootstrap_ci([1.0])[0])


def test_cluster_bootstrap_resamples_sources_not_images() -> None:
    # each source photo appears 5 times with the same value: resampling sources gives the CI of the
    # 10 per-source values, however often they repeat; an image-level bootstrap would be ~sqrt(5) narrower
    v = np.random.default_rng(3).normal(size=10)
    dup, ids = np.repeat(v, 5), np.repeat([f"photo{i}" for i in range(10)], 5)
    assert S.cluster_bootstrap_ci(dup, ids) == pytest.approx(S.bootstrap_ci(v))
    lo, hi = S.bootstrap_ci(dup)
    assert hi - lo < 0.6 * np.subtract(*S.cluster_bootstrap_ci(dup, ids)[::-1])
    assert math.isnan(S.cluster_bootstrap_ci([1.0, 2.0], ["a", "a"])[0])
    with pytest.raises(ValueError, match="same length"):
        S.cluster_bootstrap_ci([1.0, 2.0], ["a"])


def test_class_mean_is_the_mean_of_per_class_means() -> None:
    # class 0: hits 1, 1, 1 (mean 1); class 1: 0 (mean 0) -> 0.5, while the per-image mean is 0.75
    assert S.class_mean([1.0, 1.0, 1.0, 0.0, np.nan], [0, 0, 0, 1, 1]) == 0.5


def test_detectable_difference_by_hand() -> None:
    # n = 10, sd = 1: t_{0.975, 9} = 2.262157, t_{0.80, 9} = 0.883404 (tables) -> 3.145561 / sqrt(10) = 0.994714
    assert S.detectable_difference(1.0, 10) == pytest.approx(0.994714, abs=1e-6)
    assert S.detectable_difference(0.02, 10) == pytest.approx(0.02 * 0.994714, abs=1e-7)
    # the exact power (noncentral t, scipy) of the two-sided test at that difference is the nominal 80%
    for sd, n, tol in ((1.0, 10, 0.005), (0.1, 800, 0.001)):
        crit, nc = stats.t.ppf(0.975, n - 1), S.detectable_difference(sd, n) * math.sqrt(n) / sd
        assert stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) == pytest.approx(0.8, abs=tol)
    assert math.isnan(S.detectable_difference(1.0, 1)) and S.detectable_difference(0.0, 5) == 0.0


def test_mean_ci_by_hand() -> None:
    # (1, 2, 3): mean 2, sd 1, t_{0.975, 2} = 4.302653 -> 2 +- 4.302653 / sqrt 3
    mean, lo, hi = S.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and lo == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-6) and hi == pytest.approx(4 - lo)
    one = S.mean_ci([5.0])  # one value: its mean, no interval
    assert one[0] == 5.0 and math.isnan(one[1]) and math.isnan(one[2])


def results_table() -> pd.DataFrame:
    rows = []
    for i, (a, b, c) in enumerate([(0.5, 0.4, 0.1), (0.6, 0.4, 0.2), (0.7, 0.5, np.nan), (0.9, 0.6, 0.3)]):
        rows += [{"image": f"im{i}", "method": m, "ins": v} for m, v in (("A", a), ("B", b), ("C", c))]
    return pd.DataFrame(rows)


def test_comparison_table_pairs_images_and_adjusts() -> None:
    table = S.comparison_table(results_table(), ["ins"])
    assert list(dict.fromkeys(table.pair)) == ["A vs B", "A vs C", "B vs C"]
    ab = table[(table.pair == "A vs B") & (table.test == "paired t-test")].iloc[0]
    assert ab.n == 4 and ab.mean_diff == pytest.approx(0.2)
    assert ab.statistic == pytest.approx(S.paired_ttest([0.5, 0.6, 0.7, 0.9], [0.4, 0.4, 0.5, 0.6]).statistic)
    assert table[table.pair == "A vs C"].n.iloc[0] == 3  # the NaN image is dropped from that pair only
    t_rows = table[table.test == "paired t-test"]
    assert np.allclose(t_rows.p_holm, S.holm(t_rows.p))
    assert (table.p_holm >= table.p).all()


def test_confirmatory_family_is_holm_adjusted_on_its_own() -> None:
    planned = [("A", "B", "ins"), ("A", "C", "ins")]
    table = S.comparison_table(results_table(), ["ins"], confirmatory=planned)
    conf = table[table.family == "confirmatory"]
    assert sorted(conf.pair) == ["A vs B", "A vs C"] and (conf.test == "paired t-test").all()
    assert np.allclose(conf.p_holm, S.holm(conf.p))  # a family of 2, not of all 6 tests
    expl = table[(table.family == "exploratory") & (table.test == "paired t-test")]
    assert list(expl.pair) == ["B vs C"] and expl.p_holm.iloc[0] == pytest.approx(expl.p.iloc[0])
    ab = conf[conf.pair == "A vs B"].iloc[0]
    d = np.array([0.1, 0.2, 0.2, 0.3])
    assert ab.sd_diff == pytest.approx(d.std(ddof=1))
    assert ab.detectable_diff_80 == pytest.approx(S.detectable_difference(d.std(ddof=1), 4))


def test_summary_table() -> None:
    summary = S.summary_table(results_table(), ["ins"])
    c = summary[summary.method == "C"].iloc[0]
    assert c.n == 3 and c["mean"] == pytest.approx(0.2) and c["min"] == 0.1 and c["max"] == 0.3
    assert (c.ci_low, c.ci_high) == pytest.approx(S.mean_ci([0.1, 0.2, 0.3])[1:])
