"""Robust summaries of paired differences, against values worked out by hand on toy rows."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from helpers.evaluation.robust import half_net_count, hodges_lehmann, sign_flip_test, tost, walsh_averages, win_counts


def test_walsh_averages_by_hand():
    # pairs i <= j of [0, 0, 6]: 0, 0, 3 | 0, 3 | 6
    assert walsh_averages([0, 0, 6]).tolist() == [0, 0, 0, 3, 3, 6]


def test_hodges_lehmann_estimate_by_hand():
    assert hodges_lehmann([1, 2, 3])[0] == 2.0          # Walsh: 1, 1.5, 2, 2, 2.5, 3
    assert hodges_lehmann([0, 0, 6])[0] == 1.5          # the median of 0, 0, 0, 3, 3, 6
    # unlike the mean (2.0), one extreme photo moves it little
    assert hodges_lehmann([0, 0, 0, 0, 10])[0] == 0.0


def test_hodges_lehmann_interval_by_hand():
    # n = 10: k = floor(27.5 - 1.95996 * sqrt(96.25)) = floor(8.27) = 8 of M = 55 Walsh averages; sorted they
    # begin 1, 1.5, 2, 2, 2.5, 2.5, 3, 3, 3 (1+5, 2+4, 3+3), so W_(8) = 3 and by symmetry W_(48) = 8
    d = np.arange(1.0, 11.0)
    w = walsh_averages(d)
    est, lo, hi = hodges_lehmann(d)
    assert (est, lo, hi) == (5.5, w[7], w[55 - 8])
    assert (lo, hi) == (3.0, 8.0)


def test_hodges_lehmann_is_shift_equivariant_and_small_samples_give_the_full_range():
    d = np.random.default_rng(0).standard_normal(40)
    a, b = hodges_lehmann(d), hodges_lehmann(d + 3)
    assert np.allclose(np.array(b) - np.array(a), 3.0)
    assert hodges_lehmann([1.0, 5.0])[1:] == (1.0, 5.0)  # k = 1: the smallest and largest Walsh average
    assert all(math.isnan(v) for v in hodges_lehmann([1.0]))


def test_wins_ties_losses_and_direction():
    w = win_counts([0.1, 0.0, -0.2, 0.3])
    assert (w.wins, w.ties, w.losses, w.share) == (2, 1, 1, 0.5)
    lower = win_counts([0.1, 0.0, -0.2, 0.3], higher_is_better=False)   # deletion: lower is better
    assert (lower.wins, lower.losses) == (1, 2)


def test_half_of_the_net_difference():
    assert half_net_count([-10, 1, 1, 1, -1]) == 1      # net -8: the -10 alone carries 4
    assert half_net_count([1, 1, 1, 1]) == 2            # net 4: two photos carry 2
    assert half_net_count([3, -3]) == 0                 # no net difference
    assert half_net_count([-1, -1, -1, 5]) == 1         # net +2: the +5 alone


def test_sign_flip_test_is_exact_on_three_photos():
    # the 8 sign patterns of [1, 2, 3]: only (+, +, +) and (-, -, -) have |mean| >= 2
    assert sign_flip_test([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    assert sign_flip_test([0.0, 0.0]) == 1.0


def test_tost_by_hand():
    # d = [1, 2, 3]: mean 2, se = 1 / sqrt(3), df 2; 90% CI 2 +- t(0.95, 2) se = [0.3146, 3.6854]
    se, t95 = 1 / math.sqrt(3), stats.t.ppf(0.95, 2)
    res = tost([1.0, 2.0, 3.0], margin=5.0)
    assert (res.low, res.high) == pytest.approx((2 - t95 * se, 2 + t95 * se))
    assert res.p == pytest.approx(stats.t.cdf((2 - 5) / se, 2))      # the upper test is the binding one
    assert res.verdict == "equivalent within ±5"
    assert tost([1.0, 2.0, 3.0], margin=3.0).verdict == "inconclusive"  # 3.69 > 3
    assert tost([10.0, 11.0, 12.0], margin=3.0).verdict == "not equivalent"
    with pytest.raises(ValueError, match="margin must be > 0"):
        tost([1.0, 2.0], margin=0)


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [[1.0, 2.0]], [float("inf"), 1.0]])
def test_bad_differences_are_refused(bad):
    with pytest.raises(ValueError, match="finite numbers"):
        hodges_lehmann(bad)
