"""The adaptive-a question answered from the study's files: the upper bound, the predictor, the verdict.

Reads the study folder's parts ``alpha_head`` (val: every grid alpha's insertion AUC, the target of
the fit), ``features_val`` / ``features_test`` (the features, from maps and the forward only) and
``oracle`` (test: every grid alpha's insertion AUC). The predictor is fitted on the val photos only
(:func:`helpers.evaluation.adaptive.fit_alpha_predictor` refuses any other split) and applied once
to the test photos; the hybrid at a predicted (grid) alpha needs no new forward: its AUC is the
``oracle`` part's row at that alpha.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation.adaptive import (
    ADAPTIVE,
    FEATURES,
    FIXED,
    GRADCAM,
    ORACLE,
    ORACLE_INSERTION,
    adaptive_comparison,
    adaptive_verdict,
    alpha_gains,
    feature_importance,
    fit_alpha_predictor,
    oracle,
    predict_alpha,
)
from ..evaluation.alpha_sweep import ALPHAS
from ..evaluation.runner import THESIS_ALPHA
from .run import chosen_alphas
from .store import part_path, read_part


@dataclass
class AdaptiveAnswer:
    """Everything the notebooks and the report show about the adaptive a."""

    alpha_val: float
    upper_bound: pd.DataFrame      # image, best alpha and its AUC (the metric chose it: NOT a method)
    predicted: pd.Series           # image -> predicted alpha (test photos)
    test_rows: pd.DataFrame        # image, method, insertion_auc of the five compared methods
    comparison: pd.DataFrame       # adaptive_comparison's table
    importance: pd.DataFrame       # permutation importance on val
    verdict: str


def _geometric_head(rows: pd.DataFrame) -> pd.DataFrame:
    """The geometric fusion's rows of a sweep's first layer setting, with the columns adaptive expects."""
    head = rows[(rows["fusion"] == "geometric")]
    return head[head["layer"] == head["layer"].iloc[0]].rename(columns={"insertion_auc": "insertion"})


def _features(folder: Path, name: str) -> pd.DataFrame:
    rows = read_part(part_path(folder, name)).rows
    return rows.set_index("image")[list(FEATURES)]


def answer(folder: str | Path) -> AdaptiveAnswer:
    """The adaptive-a analysis of a study folder (parts alpha_head, features_val, oracle, features_test)."""
    folder = Path(folder)
    val = _geometric_head(read_part(part_path(folder, "alpha_head")).rows)
    alpha_val = chosen_alphas(read_part(part_path(folder, "alpha_head")).rows)[val["layer"].iloc[0]]
    gains = alpha_gains(val)
    features_val = _features(folder, "features_val").loc[gains.index]
    model = fit_alpha_predictor(features_val, gains, ["val"] * len(gains))
    sweep = _geometric_head(read_part(part_path(folder, "oracle")).rows)
    bound = oracle(sweep)
    features_test = _features(folder, "features_test").loc[bound["image"]]
    predicted = pd.Series(predict_alpha(model, features_test, ALPHAS), index=features_test.index, name="alpha")
    table = sweep.set_index(["image", "alpha"])["insertion"]
    images = list(bound["image"])
    best_fixed = f"hybrid@{alpha_val:g} (val)"

    def at(alphas) -> list[float]:
        return [float(table.loc[(img, float(np.round(a, 1)))]) for img, a in zip(images, alphas, strict=True)]

    columns = {GRADCAM: at([1.0] * len(images)), FIXED: at([THESIS_ALPHA] * len(images)),
               best_fixed: at([alpha_val] * len(images)), ORACLE: list(bound[ORACLE_INSERTION]),
               ADAPTIVE: at(predicted.loc[images])}
    test_rows = pd.DataFrame([{"image": img, "method": m, "insertion_auc": v[i]}
                              for m, v in columns.items() for i, img in enumerate(images)])
    comparison = adaptive_comparison(test_rows, best_fixed)
    return AdaptiveAnswer(alpha_val, bound, predicted, test_rows,
                          comparison, feature_importance(model, features_val, gains), adaptive_verdict(comparison))
