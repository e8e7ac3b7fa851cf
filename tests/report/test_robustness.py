"""The answer's robustness rows and the deletion claim's equivalence test, on toy rows worked out by hand."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from helpers.evaluation.policy import DELETION_EQUIVALENCE_MARGIN, GC, HYBRID, LC
from helpers.evaluation.stats import comparison_table
from helpers.report import robustness as R

matplotlib.use("Agg")


def rows_of(scores: dict[str, list[float]], metric: str = "insertion_auc") -> pd.DataFrame:
    return pd.DataFrame([{"image": f"p{i}", "method": m, metric: v} for m, vs in scores.items()
                         for i, v in enumerate(vs)])


def test_robust_row_by_hand() -> None:
    # differences h - g: +0.3, -0.1, +0.2, 0.0 -> sorted -0.1, 0, 0.2, 0.3
    rows = rows_of({"h": [0.8, 0.4, 0.7, 0.5], "g": [0.5, 0.5, 0.5, 0.5]})
    tests = comparison_table(rows, ["insertion_auc"], [("h", "g")])
    r = R.robust_table(rows, tests, [("h", "g", "insertion_auc")]).iloc[0]
    assert r.n == 4 and r.mean_diff == pytest.approx(0.1) and r.median_diff == pytest.approx(0.1)
    # Walsh averages: -0.1, -0.05, 0, 0.05, 0.1, 0.1, 0.15, 0.2, 0.25, 0.3: median 0.1; n = 4 gives the full range
    assert (r.hodges_lehmann, r.hl_low, r.hl_high) == pytest.approx((0.1, -0.1, 0.3))
    assert (r.wins, r.ties, r.losses, r.win_share) == (2, 1, 1, 0.5)
    assert r.half_net_photos == 1                      # net +0.4: the +0.3 photo alone carries half of it
    # Wilcoxon as scipy computes it on the same differences; sign flips exact over 2^4 patterns
    assert r.p_wilcoxon == pytest.approx(sps.wilcoxon([0.3, -0.1, 0.2, 0.0]).pvalue)
    assert r.family.startswith("exploratory")
    lines = R.robust_lines(R.robust_table(rows, tests, [("h", "g", "insertion_auc")]))
    assert any("| 2 of 4 (50%) | 1 |" in line for line in lines)


def deletion_rows(lc_shift: float) -> pd.DataFrame:
    """hybrid - Grad-CAM deletion differences +-0.001 (mean 0); hybrid - LayerCAM ``lc_shift`` +-0.001."""
    base = np.full(4, 0.2)
    wiggle = np.array([0.001, -0.001, 0.001, -0.001])
    scores = {HYBRID: base + wiggle, GC: base, LC: base + wiggle - lc_shift}
    return pd.DataFrame([{"image": f"p{i}", "method": m, "deletion_auc": v[i], "deletion_auc_thesis": v[i],
                          "insertion_auc_thesis": v[i] + (0.01 if m == GC else 0)}
                         for m, v in scores.items() for i in range(4)])


def test_equivalence_verdicts_by_hand() -> None:
    # mean 0, sd = sqrt(4 * 1e-6 / 3), se = sd / 2: the 90% CI is +-t(0.95, 3) * se = +-0.00136
    half = sps.t.ppf(0.95, 3) * np.sqrt(4e-6 / 3) / 2
    table = R.equivalence_table(deletion_rows(lc_shift=0.01), margin=0.002).set_index(["metric", "b"])
    gc = table.loc[("deletion_auc", GC)]
    assert (gc.ci90_low, gc.ci90_high) == pytest.approx((-half, half)) and gc.verdict == "equivalent within ±0.002"
    assert table.loc[("deletion_auc", LC), "verdict"] == "not equivalent"          # +0.01, CI far above 0.002
    assert R.equivalence_table(deletion_rows(0.0), margin=0.001).iloc[0]["verdict"] == "inconclusive"
    line = R.equivalence_line(table.reset_index(), gap=R.margin_gap(deletion_rows(0.01)))
    # the gap Grad-CAM - LayerCAM: +0.01 - (-0.01)
    assert "DOES NOT HOLD (not equivalent)" in line and "±0.002" in line and "(on these 4 photos: 0.0200)" in line


def test_the_margin_is_half_the_committed_thesis_gap() -> None:
    from helpers.study.results import STUDY_DIR, load_study
    study = load_study(STUDY_DIR, "full")
    if not study.has("main"):
        pytest.skip("the committed study has no main part here")
    assert DELETION_EQUIVALENCE_MARGIN == round(R.margin_gap(study.rows("main")) / 2, 4)


def test_sorted_differences_marks_mean_and_median_at_1000_px() -> None:
    rows = rows_of({HYBRID: [0.8, 0.4, 0.7, 0.5], GC: [0.5] * 4, LC: [0.6] * 4})
    rows = pd.concat([rows, rows.rename(columns={"insertion_auc": "insertion_auc_thesis"})])
    fig = R.sorted_differences(rows.groupby(["image", "method"], as_index=False).first())
    assert fig.get_size_inches()[0] * fig.dpi == 1000 and len(fig.axes) == 4
    ax = fig.axes[0]
    assert "n = 4" in ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["a photo", "mean +0.1000", "median +0.1000"]
    assert min(t.get_fontsize() for t in ax.get_xticklabels() + [ax.xaxis.label]) >= 9
