"""Adaptive a: features by hand, the oracle by hand and through the engine, the predictor on a toy, the verdict."""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from toy import GapLinear, toy_bundle

from helpers.data.imagenet import study_samples
from helpers.evaluation import metrics
from helpers.evaluation.adaptive import (
    ALPHAS,
    FEATURES,
    ORACLE_ALPHA,
    ORACLE_INSERTION,
    QUESTIONS,
    adaptive_comparison,
    adaptive_verdict,
    alpha_gains,
    feature_importance,
    features_from_raw,
    fit_alpha_predictor,
    map_features,
    oracle,
    predict_alpha,
)
from helpers.evaluation.alpha_sweep import TIE_TOLERANCE, fused_maps, raw_maps, sweep, sweep_plan
from helpers.evaluation.layer_study import explained_classes
from helpers.evaluation.runner import image_seed
from helpers.evaluation.stats import detectable_difference, paired_ttest
from helpers.report.plots import plot_best_alpha

LOGITS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])


def one(values: list[float]) -> torch.Tensor:
    """A 1 x 2 x 2 map from four values (row-major)."""
    return torch.tensor(values).view(1, 2, 2)


def test_features_by_hand() -> None:
    gc = torch.cat([one([1, 2, 3, 4]), one([1, 1, 2, 0])])
    lc = torch.cat([one([1, 4, 9, 16]), one([5, 5, 5, 5])])           # monotone in gc; a constant map
    weights = torch.tensor([[1.0, -2.0, 0.0, -0.5], [3.0, 4.0, 5.0, 6.0]])
    f = features_from_raw(gc, lc, LOGITS, weights)
    assert list(f.columns) == list(FEATURES) and f.shape == (2, len(FEATURES)) and not f.isna().any().any()
    assert f["spearman_gc_lc"].tolist() == pytest.approx([1.0, 0.0])  # ranks agree; constant -> 0, not NaN
    assert f["pearson_gc_lc"][0] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1, 4, 9, 16])[0, 1], rel=1e-6)
    assert f["pearson_gc_lc"][0] < 0.99 and f["pearson_gc_lc"][1] == 0.0
    # image 1's gc: p = (.25, .25, .5, 0), H = 1.5 ln 2, / ln 4 = 0.75; its top 10% = ceil(0.4) = 1 position
    assert f["entropy_gc"][1] == pytest.approx(0.75) and f["top10_mass_gc"][1] == pytest.approx(0.5)
    assert f["entropy_lc"][1] == pytest.approx(1.0) and f["top10_mass_lc"][1] == pytest.approx(0.25)
    assert f["top10_mass_gc"][0] == pytest.approx(0.4)
    p = np.exp([2.0, 1.0, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    assert f["top1_prob"][0] == pytest.approx(p[0]) and f["margin_top2"][0] == pytest.approx(p[0] - p[1])
    assert f["margin_top2"][1] == pytest.approx(math.e ** 3 / (math.e ** 3 + 2) - 1 / (math.e ** 3 + 2))
    assert f["negative_weight_share"].tolist() == [0.5, 0.0]
    reversed_ranks = features_from_raw(lc[:1], one([4, 3, 2, 1]), LOGITS[:1], weights[:1])
    assert reversed_ranks["spearman_gc_lc"][0] == pytest.approx(-1.0)


def test_identical_one_hot_and_zero_maps() -> None:
    torch.manual_seed(0)
    same = torch.rand(2, 5, 5)
    f = features_from_raw(same, same.clone(), LOGITS, torch.ones(2, 3))
    assert f["pearson_gc_lc"].tolist() == pytest.approx([1.0, 1.0])
    assert f["spearman_gc_lc"].tolist() == pytest.approx([1.0, 1.0])
    hot = torch.zeros(2, 5, 5)
    hot[0, 3, 1] = 7.0
    f = features_from_raw(hot, torch.ones(2, 5, 5), LOGITS, torch.ones(2, 3))   # image 1: an all-zero Grad-CAM
    assert f["entropy_gc"].tolist() == [0.0, 0.0] and f["top10_mass_gc"].tolist() == [1.0, 0.0]
    assert f["entropy_lc"].tolist() == pytest.approx([1.0, 1.0]) and f["top10_mass_lc"][0] == pytest.approx(3 / 25)
    assert f["pearson_gc_lc"].tolist() == [0.0, 0.0] and not f.isna().any().any()
    with pytest.raises(ValueError, match="non-negative"):
        features_from_raw(-hot, hot, LOGITS, torch.ones(2, 3))
    with pytest.raises(ValueError, match="one shape"):
        features_from_raw(hot, hot[:, :4], LOGITS, torch.ones(2, 3))
    with pytest.raises(ValueError, match="logits"):
        features_from_raw(hot, hot, LOGITS[:1], torch.ones(2, 3))


def test_map_features_one_pass_on_a_toy() -> None:
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])  # dy_c / dA^k = w_ck / (h w): class 0 has one negative weight
    model = GapLinear(w)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    bundle = toy_bundle(model)
    images = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    f = map_features(bundle, images, [0, 1, 0])
    assert len(calls) == 1 and f["negative_weight_share"].tolist() == [0.5, 0.0, 0.5]
    raw = raw_maps(bundle, images, [0, 1, 0])
    expected = features_from_raw(raw.gc, raw.lc, raw.logits, w[[0, 1, 0]] / 16)
    pd.testing.assert_frame_equal(f, expected)


def sweep_rows(values: dict[int, list[float]], alphas=(0.0, 0.5, 1.0)) -> pd.DataFrame:
    rows = [(i, "geometric", a, v, 0.0) for i, vs in values.items() for a, v in zip(alphas, vs, strict=True)]
    return pd.DataFrame(rows, columns=["image", "fusion", "alpha", "insertion", "deletion"])


def test_oracle_picks_the_grid_maximum_ties_to_the_larger_alpha() -> None:
    rows = sweep_rows({0: [0.2, 0.5, 0.3], 1: [0.4, 0.4 + 5e-7, 0.4], 2: [0.6, 0.1, 0.6], 3: [0.9, 0.1, 0.2]})
    rows = pd.concat([rows, pd.DataFrame([(0, "additive", 0.5, 0.99, 0.0), (0, "max", math.nan, 0.98, 0.0)],
                                         columns=rows.columns)])
    table = oracle(rows)
    assert list(table.columns) == ["image", ORACLE_ALPHA, ORACLE_INSERTION]
    assert table[ORACLE_ALPHA].tolist() == [0.5, 1.0, 1.0, 0.0]
    assert table[ORACLE_INSERTION].tolist() == [0.5, 0.4, 0.6, 0.9]
    gains = alpha_gains(rows)
    assert gains.loc[0].tolist() == pytest.approx([-0.1, 0.2, 0.0]) and list(gains.columns) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="lack a score"):
        oracle(rows.iloc[1:])
    with pytest.raises(ValueError, match="repeat"):
        oracle(pd.concat([rows, rows.iloc[:1]]))
    fig = plot_best_alpha(table)
    heights = {round(p.get_x() + p.get_width() / 2, 1): p.get_height() for p in fig.axes[0].patches}
    assert heights[1.0] == 2 and heights[0.5] == 1 and heights[0.0] == 1 and sum(heights.values()) == 4
    assert "upper bound" in fig.axes[0].get_title() and "n = 4" in fig.axes[0].get_title()
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_ylabel()


def test_oracle_recomputed_through_the_engine_on_two_photos(lite0) -> None:
    _, samples = study_samples(lite0, "val", limit=2)
    images = torch.stack([s.tensor for s in samples])
    classes, seeds = explained_classes(lite0, samples), [image_seed(s.file) for s in samples]
    metric = partial(metrics.insertion_deletion_auc, preset="rise", steps=4)
    rows = sweep(lite0, images, classes, metric, sweep_plan(with_max=False), batch_size=2, progress=False,
                 tie_seeds=seeds)
    table = oracle(rows).set_index("image")
    raw = raw_maps(lite0, images, classes)
    for i in range(2):
        mine = rows[rows["image"] == i]
        assert table.loc[i, ORACLE_INSERTION] == pytest.approx(mine["insertion"].max(), abs=TIE_TOLERANCE)
        tied = mine[mine["insertion"] >= mine["insertion"].max() - TIE_TOLERANCE]["alpha"]
        assert table.loc[i, ORACLE_ALPHA] == tied.max()
        best = fused_maps(raw, table.loc[i, ORACLE_ALPHA])[i:i + 1]
        again = metrics.insertion_deletion_auc(lite0, images[i:i + 1], best, classes[i], preset="rise", steps=4,
                                               tie_seed=seeds[i])["insertion"]
        assert float(again) == pytest.approx(table.loc[i, ORACLE_INSERTION], abs=1e-5)


def toy_set(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Features (x, two noise columns), gains with the best a = grid-snapped clip(x), and that best a."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.2, 1.2, n)
    features = pd.DataFrame({"noise_a": rng.normal(size=n), "x": x, "noise_b": rng.normal(size=n)})
    a = np.asarray(ALPHAS)
    gains = -(a[None] - x[:, None]) ** 2 + (1 - x[:, None]) ** 2 + rng.normal(0, 1e-4, (n, len(a)))
    best = np.round(np.clip(x, 0, 1) * 10) / 10
    return features, pd.DataFrame(gains, columns=list(ALPHAS)), best


def test_predictor_learns_a_known_rule_and_ranks_its_feature_first() -> None:
    features, gains, best = toy_set(300)
    val, held = slice(0, 200), slice(200, 300)
    model = fit_alpha_predictor(features[val], gains[val], ["val"] * 200)
    predicted = predict_alpha(model, features[held].reset_index(drop=True))
    assert set(predicted) <= set(ALPHAS)
    assert (np.isclose(predicted, best[held])).mean() >= 0.95 and np.abs(predicted - best[held]).max() <= 0.1 + 1e-9
    coarse = predict_alpha(model, features[held], grid=(0.0, 1.0))
    assert set(coarse) <= {0.0, 1.0} and (coarse == (features["x"][held] >= 0.5)).mean() >= 0.95
    importance = feature_importance(model, features[val], gains[val])
    assert list(importance.columns) == ["feature", "importance_mean", "importance_std", "meaning"]
    assert importance["feature"][0] == "x"
    assert importance["importance_mean"][0] > 10 * importance["importance_mean"][1:].abs().max()


def test_predictor_without_information_falls_back_to_the_best_fixed_alpha() -> None:
    rng = np.random.default_rng(3)
    features = pd.DataFrame(rng.normal(size=(200, 3)), columns=["u", "v", "w"])
    mean_gain = -(np.asarray(ALPHAS) - 0.6) ** 2                      # best on average: a = 0.6
    gains = pd.DataFrame(mean_gain[None] + rng.normal(0, 0.02, (200, len(ALPHAS))), columns=list(ALPHAS))
    model = fit_alpha_predictor(features, gains, ["val"] * 200)
    assert (predict_alpha(model, features) == 0.6).mean() >= 0.9


def test_fitting_refuses_any_row_outside_val() -> None:
    features, gains, _ = toy_set(20)
    with pytest.raises(ValueError, match="'val' split only.*'test'"):
        fit_alpha_predictor(features, gains, ["val"] * 19 + ["test"])
    with pytest.raises(ValueError, match="same index"):
        fit_alpha_predictor(features, gains.iloc[::-1], ["val"] * 20)
    with pytest.raises(ValueError, match="length"):
        fit_alpha_predictor(features, gains, ["val"] * 19)


def comparison_rows(gain_mean: float, n: int = 40) -> pd.DataFrame:
    """Per-image test rows whose upper-bound gain over Grad-CAM has mean ``gain_mean`` and SD 0.01 exactly;
    hybrid@adaptive recovers half of it on every image."""
    rng = np.random.default_rng(7)
    base = rng.uniform(0.4, 0.6, n)
    z = rng.normal(size=n)
    d = gain_mean + 0.01 * (z - z.mean()) / z.std(ddof=1)
    scores = {"gradcam": base, "hybrid@0.7": base - 0.003, "hybrid@0.8 (best fixed)": base - 0.001,
              "oracle (upper bound)": base + d, "hybrid@adaptive": base + 0.5 * d}
    return pd.DataFrame([(i, m, float(v[i])) for m, v in scores.items() for i in range(n)],
                        columns=["image", "method", "insertion_auc"])


def test_comparison_numbers_and_the_verdict_below_and_above_the_detectable_difference() -> None:
    detectable = detectable_difference(0.01, 40)                        # ~0.0046
    below = adaptive_comparison(comparison_rows(0.001), best_fixed="hybrid@0.8 (best fixed)")
    assert below["question"].tolist() == list(QUESTIONS)
    assert below["upper_bound"].tolist() == [True, True, False, False, False]
    rows = comparison_rows(0.001).pivot(index="image", columns="method", values="insertion_auc")
    ub = below.set_index("question").loc["upper_bound_vs_gradcam"]
    assert ub["mean_diff"] == pytest.approx(0.001) and ub["detectable_diff_80"] == pytest.approx(detectable)
    assert ub["p"] == pytest.approx(paired_ttest(rows["oracle (upper bound)"], rows["gradcam"]).p) and ub["n"] == 40
    assert ub["ci_low"] < 0.001 < ub["ci_high"]
    share = below.set_index("question")["share_of_upper_bound_gain"]
    assert share["adaptive_vs_gradcam"] == pytest.approx(0.5) and np.isnan(share["upper_bound_vs_gradcam"])
    assert share["adaptive_vs_fixed"] == pytest.approx((0.0005 + 0.003) / (0.001 + 0.003))
    text = adaptive_verdict(below)
    assert "no rule for `a` can make the hybrid beat Grad-CAM" in text and "recovers" not in text
    above = adaptive_comparison(comparison_rows(0.02), best_fixed="hybrid@0.8 (best fixed)")
    gain = above.set_index("question").loc["upper_bound_vs_gradcam", "mean_diff"]
    assert gain == pytest.approx(0.02) and gain > detectable
    text = adaptive_verdict(above)
    assert "recovers 50% of the upper bound's gain" in text and "no rule" not in text and "+0.0200" in text
    worse = comparison_rows(0.02)                                       # the predictor loses to Grad-CAM
    worse.loc[worse["method"] == "hybrid@adaptive", "insertion_auc"] -= 0.02
    text = adaptive_verdict(adaptive_comparison(worse, best_fixed="hybrid@0.8 (best fixed)"))
    assert "recovers none of the upper bound's gain" in text and "%" not in text.split("recovers")[1][:40]
    with pytest.raises(ValueError, match="no test rows for method"):
        adaptive_comparison(comparison_rows(0.02), best_fixed="hybrid@0.6")
    with pytest.raises(ValueError, match="lack a insertion_auc"):
        adaptive_comparison(comparison_rows(0.02).iloc[1:], best_fixed="hybrid@0.8 (best fixed)")
