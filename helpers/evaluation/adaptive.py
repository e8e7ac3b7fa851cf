"""Adaptive a per image: map features, the oracle upper bound, a predictor that never sees the metric, the verdict.

The hybrid ``M = norm(GC)^a * norm(LC)^(1-a)`` uses one a for every photo. This module asks how much
a per-image a could gain and how much of that a rule can recover:

* :func:`oracle` picks each image's best a on the sweep's grid BY THE METRIC ITSELF. It is an UPPER
  BOUND of what any per-image rule could reach, not a method, and is labelled so in every column.
* :func:`map_features` describes each image from its two raw maps and the forward only
  (:data:`FEATURES`); :func:`fit_alpha_predictor` learns on the validation split only which a to use;
  :func:`predict_alpha` applies it to new photos without looking at any metric.
* :func:`adaptive_comparison` and :func:`adaptive_verdict` compare hybrid@adaptive, the upper bound,
  Grad-CAM and the fixed a's on the test photos, paired (:func:`helpers.report.plots.plot_best_alpha` draws
  the oracle's a).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from sklearn.inspection import permutation_importance
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ..cam.bundle import ModelBundle
from ..cam.engine import forward_backward, gradcam, gradcam_weights, layercam
from ..config import SEED
from .alpha_sweep import ALPHAS, TIE_TOLERANCE
from .metrics import pearson
from .stats import comparison_table

#: The predictor's features (name -> meaning): computed from the raw maps and the forward only, never a metric.
FEATURES: dict[str, str] = {
    "pearson_gc_lc": "Pearson correlation of raw Grad-CAM and LayerCAM at the layer's resolution (0 if one is flat)",
    "spearman_gc_lc": "Spearman (rank) correlation of raw Grad-CAM and LayerCAM (0 if one is constant)",
    "entropy_gc": "entropy of Grad-CAM as a distribution over positions / log(positions): 1 uniform, 0 one position",
    "entropy_lc": "entropy of LayerCAM as a distribution over positions / log(positions): 1 uniform, 0 one position",
    "top10_mass_gc": "fraction of Grad-CAM's total mass in its top 10% of positions (ceil(0.1 h w) positions)",
    "top10_mass_lc": "fraction of LayerCAM's total mass in its top 10% of positions (ceil(0.1 h w) positions)",
    "top1_prob": "softmax probability of the top-1 class in the pass",
    "margin_top2": "top-1 minus second-highest softmax probability",
    "negative_weight_share": "share of channels whose Grad-CAM weight (spatial mean of the gradient) is below 0",
}
#: The fraction of positions whose mass ``top10_mass_*`` measures.
TOP_FRACTION = 0.1

#: Column names of :func:`oracle`: both are UPPER BOUNDS (the metric chose the alpha).
ORACLE_ALPHA, ORACLE_INSERTION = "oracle_alpha_upper_bound", "oracle_insertion_upper_bound"
#: Default method names of the per-image test rows of :func:`adaptive_comparison`.
GRADCAM, FIXED, ORACLE, ADAPTIVE = "gradcam", "hybrid@0.7", "oracle (upper bound)", "hybrid@adaptive"
#: The comparisons of :func:`adaptive_comparison`: question -> (role of a, role of b), difference a - b.
QUESTIONS: dict[str, tuple[str, str]] = {
    "upper_bound_vs_gradcam": ("upper_bound", "gradcam"),
    "upper_bound_vs_best_fixed": ("upper_bound", "best_fixed"),
    "adaptive_vs_gradcam": ("adaptive", "gradcam"),
    "adaptive_vs_fixed": ("adaptive", "fixed"),
    "adaptive_vs_best_fixed": ("adaptive", "best_fixed"),
}
#: Ridge penalties tried by the predictor's cross-validation; permutation repeats of the importance.
RIDGE_PENALTIES = tuple(np.logspace(-3, 3, 13))
IMPORTANCE_REPEATS = 30


# ---------------------------------------------------------------- features


def _entropy_and_top_mass(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised entropy and top-10% mass of flat non-negative maps (N, P); both 0 for an all-zero map."""
    total = maps.sum(1, keepdim=True)
    p = maps / torch.where(total > 0, total, 1.0)
    entropy = torch.special.entr(p).sum(1) / (math.log(maps.shape[1]) or 1.0)
    top = p.topk(math.ceil(TOP_FRACTION * maps.shape[1]), dim=1).values.sum(1)
    return entropy, top


def _ranks(maps: torch.Tensor) -> torch.Tensor:
    """Ranks of the values of each flat map (N, P), ties sharing their average rank (Spearman's convention)."""
    return torch.from_numpy(rankdata(maps.numpy(), axis=1))


def features_from_raw(gc: torch.Tensor, lc: torch.Tensor, logits: torch.Tensor, weights: torch.Tensor) -> pd.DataFrame:
    """:data:`FEATURES` of N images from raw maps (N, h, w), the pass's logits (N, C) and Grad-CAM weights (N, K).

    One row per image (index 0..N-1, the batch order), columns in the order of :data:`FEATURES`,
    never NaN: a constant map correlates 0 with anything, an all-zero map has entropy and
    top-10% mass 0.
    """
    n = len(gc)
    if gc.dim() != 3 or gc.shape != lc.shape:
        raise ValueError(f"gc and lc must be raw maps (N, h, w) of one shape, got {tuple(gc.shape)} "
                         f"and {tuple(lc.shape)}")
    if logits.dim() != 2 or logits.shape[0] != n or logits.shape[1] < 2:
        raise ValueError(f"logits must be (N, C) with N = {n} and C >= 2, got shape {tuple(logits.shape)}")
    if weights.dim() != 2 or weights.shape[0] != n:
        raise ValueError(f"weights must be Grad-CAM weights (N, K) with N = {n}, got shape {tuple(weights.shape)}")
    for name, t in (("gc", gc), ("lc", lc), ("logits", logits), ("weights", weights)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf")
    if (gc < 0).any() or (lc < 0).any():
        raise ValueError("gc and lc must be non-negative (raw CAMs after their ReLU)")
    flat_gc, flat_lc = (t.detach().cpu().double().flatten(1) for t in (gc, lc))
    probs = logits.detach().cpu().double().softmax(dim=1).topk(2, dim=1).values
    (ent_g, top_g), (ent_l, top_l) = _entropy_and_top_mass(flat_gc), _entropy_and_top_mass(flat_lc)
    columns = {"pearson_gc_lc": pearson(flat_gc, flat_lc), "spearman_gc_lc": pearson(_ranks(flat_gc), _ranks(flat_lc)),
               "entropy_gc": ent_g, "entropy_lc": ent_l, "top10_mass_gc": top_g, "top10_mass_lc": top_l,
               "top1_prob": probs[:, 0], "margin_top2": probs[:, 0] - probs[:, 1],
               "negative_weight_share": (weights.detach().cpu() < 0).double().mean(dim=1)}
    return pd.DataFrame({k: columns[k].numpy().astype(np.float64) for k in FEATURES})


def map_features(bundle: ModelBundle, images: torch.Tensor, class_idx: int | Sequence[int] | None,
                 layer: str | None = None) -> pd.DataFrame:
    """:data:`FEATURES` of a batch (N, 3, H, W) from ONE forward and ONE backward: one row per image, batch order.

    ``class_idx``: the explained classes (as the sweep's); ``layer``: default the bundle's target layer.
    """
    cap = forward_backward(bundle, images, class_idx, layer)
    acts, grads = cap.activations[cap.layers[0]], cap.gradients[cap.layers[0]]
    return features_from_raw(gradcam(acts, grads), layercam(acts, grads), cap.logits, gradcam_weights(grads))


# ---------------------------------------------------------------- the oracle (an upper bound)


def insertion_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The geometric fusion's insertion AUC from sweep rows (image, [fusion,] alpha, insertion):
    index image, one column per grid alpha (ascending). Every image needs every alpha, once."""
    missing = {"image", "alpha", "insertion"} - set(rows.columns)
    if missing:
        raise ValueError(f"sweep rows lack column(s) {sorted(missing)}")
    if "fusion" in rows.columns:
        rows = rows[rows["fusion"] == "geometric"]
    if rows.empty or rows["alpha"].isna().any():
        raise ValueError("no geometric sweep rows with an alpha")
    if rows.duplicated(["image", "alpha"]).any():
        raise ValueError("sweep rows repeat an (image, alpha) pair")
    wide = rows.pivot(index="image", columns="alpha", values="insertion").sort_index(axis=1)
    if wide.isna().any().any():
        raise ValueError(f"{int(wide.isna().any(axis=1).sum())} image(s) lack a score at some grid alpha")
    return wide


def alpha_gains(rows: pd.DataFrame) -> pd.DataFrame:
    """The predictor's target: insertion AUC at every grid alpha minus at a = 1 (Grad-CAM), per image (index)."""
    wide = insertion_table(rows)
    if 1.0 not in wide.columns:
        raise ValueError("the sweep has no a = 1 (Grad-CAM) column to measure gains from")
    return wide.sub(wide[1.0], axis=0)


def _choose(values: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Per row, the column of the largest value; values within TIE_TOLERANCE of it tie and go to the larger alpha."""
    tied = values >= values.max(axis=1, keepdims=True) - TIE_TOLERANCE
    return np.argmax(np.where(tied, alphas[None, :], -np.inf), axis=1)


def oracle(rows: pd.DataFrame) -> pd.DataFrame:
    """UPPER BOUND, not a method: per image the grid alpha of the largest insertion AUC, chosen BY the metric.

    ``rows``: the sweep's long table (image, [fusion,] alpha, insertion); only the geometric fusion
    counts. Ties within ``alpha.TIE_TOLERANCE`` go to the larger alpha (as ``choose_alpha``).
    Returns columns image, ``oracle_alpha_upper_bound``, ``oracle_insertion_upper_bound``.
    """
    wide = insertion_table(rows)
    values, alphas = wide.to_numpy(np.float64), wide.columns.to_numpy(np.float64)
    best = _choose(values, alphas)
    return pd.DataFrame({"image": wide.index.to_numpy(), ORACLE_ALPHA: alphas[best],
                         ORACLE_INSERTION: values[np.arange(len(values)), best]})


# ---------------------------------------------------------------- the predictor (never sees the metric)


@dataclass
class AlphaPredictor:
    """A fitted rule features -> a: the scaled ridge regression of the gain at each alpha, and its inputs."""

    pipeline: Pipeline
    features: list[str]
    alphas: np.ndarray


def _matrix(features: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """The feature columns ``names`` as a float matrix; a clear error for missing columns or NaN."""
    missing = [c for c in names if c not in features.columns]
    if missing:
        raise ValueError(f"features lack column(s) {missing}")
    x = features[list(names)].to_numpy(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    return x


def _target(target: pd.DataFrame, alphas: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(gains (N, A), alphas (A,)) of a gain table whose columns are alphas in [0, 1] (``alphas`` if given)."""
    cols = np.asarray(target.columns, dtype=np.float64)
    if len(cols) < 2 or not ((cols >= 0) & (cols <= 1)).all():
        raise ValueError(f"target columns must be at least 2 alphas in [0, 1], got {cols.tolist()}")
    if alphas is not None and not np.array_equal(cols, alphas):
        raise ValueError(f"target columns {cols.tolist()} differ from the model's alphas {alphas.tolist()}")
    y = target.to_numpy(np.float64)
    if not np.isfinite(y).all():
        raise ValueError("target contains NaN or inf")
    return y, cols


def fit_alpha_predictor(features: pd.DataFrame, target: pd.DataFrame, split: Sequence[str]) -> AlphaPredictor:
    """Fit the rule for a on the VALIDATION photos only; a row of any other split is a ValueError.

    ``features``: one row per image (e.g. :data:`FEATURES`); ``target``: :func:`alpha_gains` of the
    same images (same index), i.e. per grid alpha the insertion AUC gain over Grad-CAM; ``split``:
    each row's split. Model: StandardScaler + RidgeCV, one linear regression per alpha with one
    shared penalty picked by leave-one-out cross-validation on these (val) rows; the predicted a
    is the alpha of the largest predicted gain (:func:`predict_alpha`).

    Why the gain and not the oracle's a as the target: the best a is a discontinuous, tie-ridden
    target (an image whose AUC barely moves with a gets a = 1 by the tie rule, a 1e-5 change
    flips it to 0) and regressing it weighs a flat image like one where a matters. Regressing the
    gains weighs each image by what is at stake, picks the a with the best predicted AUC, and,
    when the features carry no information, falls back to the intercepts, i.e. the a of the
    best mean gain on val: the best fixed a. A linear model keeps it simple and stable on a
    few hundred photos.
    """
    split = np.asarray(split, dtype=object)
    if len(split) != len(features) or len(target) != len(features):
        raise ValueError(f"features ({len(features)}), target ({len(target)}) and split ({len(split)}) "
                         "differ in length")
    if (split != "val").any():
        raise ValueError(f"the alpha predictor is fitted on the 'val' split only; {int((split != 'val').sum())} "
                         f"row(s) are from {sorted(set(map(str, split[split != 'val'])))}")
    if not features.index.equals(target.index):
        raise ValueError("features and target must have the same index (one row per image, same order)")
    y, alphas = _target(target)
    names = list(features.columns)
    pipeline = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_PENALTIES))
    pipeline.fit(_matrix(features, names), y)
    return AlphaPredictor(pipeline, names, alphas)


def predict_alpha(model: AlphaPredictor, features: pd.DataFrame, grid: Sequence[float] = ALPHAS) -> np.ndarray:
    """The predicted a of each image: the alpha of ``grid`` (those the model was fitted on) with the
    largest predicted gain, ties to the larger alpha; so always on the grid and within [0, 1]."""
    keep = np.isin(np.round(model.alphas, 9), np.round(np.asarray(grid, dtype=np.float64), 9))
    if not keep.any():
        raise ValueError(f"no alpha of the grid {list(grid)} is among the model's {model.alphas.tolist()}")
    predicted = model.pipeline.predict(_matrix(features, model.features))[:, keep]
    return model.alphas[keep][_choose(predicted, model.alphas[keep])]


def feature_importance(model: AlphaPredictor, features: pd.DataFrame, target: pd.DataFrame) -> pd.DataFrame:
    """Permutation importance on the val photos (seeded): the drop in the mean insertion AUC gain over
    Grad-CAM realised by the predicted a when one feature is shuffled (AUC units; ~0: unused).

    Columns feature, importance_mean, importance_std, meaning; most important first.
    """
    y, alphas = _target(target, model.alphas)

    def realised_gain(pipeline: Pipeline, x: np.ndarray, gains: np.ndarray) -> float:
        return float(gains[np.arange(len(gains)), _choose(pipeline.predict(x), alphas)].mean())

    res = permutation_importance(model.pipeline, _matrix(features, model.features), y, scoring=realised_gain,
                                 n_repeats=IMPORTANCE_REPEATS, random_state=SEED)
    table = pd.DataFrame({"feature": model.features, "importance_mean": res.importances_mean,
                          "importance_std": res.importances_std,
                          "meaning": [FEATURES.get(f, "") for f in model.features]})
    return table.sort_values("importance_mean", ascending=False, kind="stable", ignore_index=True)


# ---------------------------------------------------------------- the comparison and the verdict


def adaptive_comparison(test_rows: pd.DataFrame, best_fixed: str, metric: str = "insertion_auc",
                        gradcam: str = GRADCAM, fixed: str = FIXED, upper_bound: str = ORACLE,
                        adaptive: str = ADAPTIVE, seed: int = SEED) -> pd.DataFrame:
    """Paired comparisons (exploratory) of :data:`QUESTIONS` on the test rows (image, method, ``metric``).

    ``best_fixed`` names the method of the best fixed a; the other arguments name the methods of
    each role. Every image needs a score for every method. One row per question: the columns of
    :func:`helpers.evaluation.stats.comparison_table` for the paired t-test (mean_diff = a - b, BCa
    95% CI ci_low/ci_high, p, n, detectable_diff_80, ...), plus ``question``, ``upper_bound``
    (True where a is the oracle: chosen by the metric) and ``share_of_upper_bound_gain``: for the
    adaptive rows, (mean adaptive - mean b) / (mean upper bound - mean b), the part of the upper
    bound's gain over b that the predictor recovers (NaN for the upper-bound rows or a zero gain).
    """
    roles = {"gradcam": gradcam, "fixed": fixed, "best_fixed": best_fixed, "upper_bound": upper_bound,
             "adaptive": adaptive}
    missing = {"image", "method", metric} - set(test_rows.columns)
    if missing:
        raise ValueError(f"test rows lack column(s) {sorted(missing)}")
    absent = sorted(set(roles.values()) - set(test_rows["method"]))
    if absent:
        raise ValueError(f"no test rows for method(s) {absent}; present: {sorted(set(test_rows['method']))}")
    rows = test_rows[test_rows["method"].isin(roles.values())]
    if rows.duplicated(["image", "method"]).any():
        raise ValueError("test rows repeat an (image, method) pair")
    wide = rows.pivot(index="image", columns="method", values=metric)
    if wide.isna().any().any():
        raise ValueError(f"{int(wide.isna().any(axis=1).sum())} image(s) lack a {metric} for some method")
    pairs = [(roles[a], roles[b]) for a, b in QUESTIONS.values()]
    table = comparison_table(rows, [metric], pairs, seed=seed)
    table = table[table["test"] == "paired t-test"].reset_index(drop=True)
    table.insert(0, "question", list(QUESTIONS))
    mean = wide.mean()
    table["upper_bound"] = [a == "upper_bound" for a, _ in QUESTIONS.values()]
    share = []
    for a, b in QUESTIONS.values():
        gain = mean[upper_bound] - mean[roles[b]]
        share.append((mean[adaptive] - mean[roles[b]]) / gain if a == "adaptive" and gain != 0 else np.nan)
    table["share_of_upper_bound_gain"] = share
    return table


def _difference(row: pd.Series) -> str:
    return (f"{row['a']} minus {row['b']} = {row['mean_diff']:+.4f} (95% BCa CI {row['ci_low']:+.4f} to "
            f"{row['ci_high']:+.4f}, paired t-test p = {row['p']:.3g})")


def adaptive_verdict(table: pd.DataFrame) -> str:
    """The answer, from the numbers of :func:`adaptive_comparison` only: is the upper bound's gain over
    Grad-CAM below the smallest difference the paired t-test detects (80% power)? Then no rule for a
    can beat Grad-CAM on this metric; else how much of it the predictor recovers."""
    rows = table.set_index("question")
    missing = [q for q in ("upper_bound_vs_gradcam", "adaptive_vs_gradcam", "adaptive_vs_fixed") if q not in rows.index]
    if missing:
        raise ValueError(f"the table lacks the comparison(s) {missing}")
    ub, ad, fx = rows.loc["upper_bound_vs_gradcam"], rows.loc["adaptive_vs_gradcam"], rows.loc["adaptive_vs_fixed"]
    if not np.isfinite(ub["detectable_diff_80"]):
        raise ValueError(f"no detectable difference at n = {ub['n']}: the verdict needs at least 2 images")
    head = (f"Upper bound (each image's best a, chosen by the metric itself, so not a method): {_difference(ub)} "
            f"in {ub['metric']} over n = {ub['n']} images; the smallest difference this test detects with "
            f"80% power is {ub['detectable_diff_80']:.4f}.")
    if ub["mean_diff"] < ub["detectable_diff_80"]:
        return (f"{head} The upper bound's gain is below it, so no rule for `a` can make the hybrid beat "
                f"Grad-CAM on {ub['metric']} detectably at this n.")
    share = ad["share_of_upper_bound_gain"]
    recovered = (f"recovers {share:.0%} of the upper bound's gain over Grad-CAM" if share > 0 else
                 "recovers none of the upper bound's gain over Grad-CAM (it scores no higher than Grad-CAM)")
    return (f"{head} The gain is above it, so a per-image a could matter. The predictor, which never sees the "
            f"metric, {recovered}: {_difference(ad)}; against the fixed a: {_difference(fx)}.")
