"""The report's parts: the comparison policy, p formatting, verdict lines, the leaderboard and the figures."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from helpers.evaluation import policy as P
from helpers.evaluation.stats import comparison_table
from helpers.report import figures as F
from helpers.report import leaderboard as L
from helpers.report import verdict as V

matplotlib.use("Agg")


def long_rows(values: dict[str, list[float]], metric: str = "insertion_auc") -> pd.DataFrame:
    """One row per image x method from {method: values per image}."""
    return pd.DataFrame([{"image": f"im{i}", "method": m, metric: v} for m, vs in values.items()
                         for i, v in enumerate(vs)])


@pytest.mark.parametrize("p, text", [(2e-8, "2.0e-08"), (1e-12, "< 1e-10"), (0.0431, "0.043"), (4.5e-4, "4.5e-04"),
                                     (float("nan"), "n/a"), (1.0, "1.000")])
def test_p_values_are_formatted_for_reading(p: float, text: str) -> None:
    assert V.format_p(p) == text
    assert V.p_text(1e-12, "Holm p") == "Holm p < 1e-10" and V.p_text(0.5) == "p = 0.500"


def test_aliases_up_to_rounding_fold_near_ties_but_not_distinct_methods() -> None:
    base = [0.5, 0.6, 0.7, 0.4, 0.3, 0.55, 0.65, 0.45, 0.35, 0.62]
    near = base.copy()
    near[2] += 1e-3    # two photos whose tied pixels rounding reordered
    near[7] -= 2e-3
    far = base.copy()
    far[0] += 0.1      # one photo off by 0.1: another method
    rows = long_rows({"gradcam": base, "cam": near, "other": far})
    assert P.aliases(rows) == {}                                   # exact rule: none
    assert P.aliases(rows, share=P.ROUNDING_SHARE, bound=P.ROUNDING_BOUND) == {"cam": "gradcam"}
    # the confirmatory methods count as earliest: another method is their alias, whatever the order
    assert P.aliases(long_rows({"x": base, "gradcam": base})) == {"x": "gradcam"}


def test_leaderboard_uses_only_the_shared_photos_and_ranks_by_direction() -> None:
    rows = long_rows({"gradcam": [0.5, 0.6, 0.7, 0.9], "layercam": [0.4, 0.5, 0.8, 0.1], "x": [0.3, 0.3, 0.3, 0.3]})
    rows = rows[~((rows.method == "x") & (rows.image == "im3"))]      # x lacks one photo: n = 3 for everyone
    table = L.leaderboard(rows, "insertion_auc").set_index("method")
    assert (table["n"] == 3).all()
    assert table.loc["gradcam", "mean"] == pytest.approx(0.6)
    assert table.loc["layercam", "mean"] == pytest.approx(17 / 30)
    assert table.loc["layercam", "diff"] == pytest.approx(-0.1 / 3)   # paired: (-0.1 - 0.1 + 0.1) / 3
    assert list(table["rank"]) == [1, 2, 3] and np.isnan(table.loc["gradcam", "diff"])
    lower = L.leaderboard(rows.rename(columns={"insertion_auc": "deletion_auc"}), "deletion_auc")
    assert list(lower["method"]) == ["x", "layercam", "gradcam"]      # lower is better for deletion
    view = L.leaderboard_view(table.reset_index())
    assert view["mean [95% CI]"].iloc[0].startswith("0.6000 [") and view["p (Holm)"].iloc[0] == ""
    with pytest.raises(ValueError, match="no reference method"):
        L.leaderboard(rows[rows.method != "gradcam"], "insertion_auc")


def test_leaderboard_notes_the_methods_folded_in() -> None:
    rows = long_rows({"gradcam": [0.5, 0.6, 0.7], "cam": [0.5, 0.6, 0.7], "layercam": [0.4, 0.5, 0.6]})
    table = L.leaderboard(rows, "insertion_auc").set_index("method")
    assert "cam" not in table.index and table.loc["gradcam", "note"] == "same maps: cam"


def claims_table(gain_gc: float, gain_lc: float, n: int = 40) -> pd.DataFrame:
    """Tests of a hybrid that gains ``gain_gc`` over Grad-CAM and ``gain_lc`` over LayerCAM on insertion."""
    rng = np.random.default_rng(1)
    g = rng.uniform(0.3, 0.7, n)
    noise = rng.normal(0, 0.002, n)
    rows = []
    for metric in ("insertion_auc", "insertion_auc_thesis", "deletion_auc", "deletion_auc_thesis"):
        ins = metric.startswith("insertion")
        values = {"gradcam": g, "layercam": g + (gain_gc - gain_lc if ins else 0),
                  "hybrid@0.7": g + (gain_gc if ins else 0) + noise}
        rows += [{"image": f"im{i}", "method": m, metric: v[i]} for m, v in values.items() for i in range(n)]
    wide = pd.DataFrame(rows).groupby(["image", "method"], sort=False).first().reset_index()
    return comparison_table(wide, ["insertion_auc", "insertion_auc_thesis", "deletion_auc", "deletion_auc_thesis"],
                            [("hybrid@0.7", "gradcam"), ("hybrid@0.7", "layercam")], confirmatory=P.CONFIRMATORY_TESTS)


def test_answer_lines_follow_the_numbers() -> None:
    lines = V.answer_lines(claims_table(gain_gc=0.01, gain_lc=-0.01), "- the deletion line", "see the benchmark")
    assert len(lines) == 4
    assert "higher insertion AUC than Grad-CAM - SUPPORTED" in lines[0]
    assert "than LayerCAM - CONTRADICTED" in lines[1] and "Holm p" in lines[1]
    assert lines[2] == "- the deletion line"                    # the equivalence test's line, as given
    assert lines[3].endswith("see the benchmark")
    flat = V.answer_lines(claims_table(gain_gc=0.0, gain_lc=0.0), "- the deletion line")
    assert "NOT SHOWN" in flat[0] and len(flat) == 3


def test_forest_plot_draws_one_interval_per_test(tmp_path) -> None:
    tests = claims_table(0.01, -0.01)
    conf = tests[tests.family == "confirmatory"]
    fig = F.forest_plot(conf, tmp_path / "answer.png")
    ax = fig.axes[0]
    drawn = [c for c in ax.containers if len(c.lines[0].get_xdata())]   # the legend's proxies are empty
    assert len(drawn) == 4 and (tmp_path / "answer.png").stat().st_size > 0
    assert {round(float(c.lines[0].get_xdata()[0]), 6) for c in drawn} == {round(v, 6) for v in conf.mean_diff}
    notes = [t.get_text() for t in ax.texts]
    assert len(notes) == 4 and all(t.startswith("n = 40, Holm p") for t in notes)
    assert ax.get_xlabel() and ax.get_ylabel() and "n = 40" in ax.get_title()


def test_paired_differences_leave_out_unmeasured_metrics() -> None:
    rows = long_rows({"gradcam": [0.5, 0.6, 0.7], "layercam": [0.4, 0.5, 1.0]})
    rows["pointing_game"] = np.nan
    fig = F.paired_differences(rows, ["insertion_auc", "pointing_game"], [("layercam", "gradcam")])
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert "n = 3 photos" in ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    mean = ax.containers[0].lines[0].get_xdata()[0]
    assert mean == pytest.approx(0.1 / 3) and ax.texts[0].get_text().startswith("+0.0333 [")
    with pytest.raises(ValueError, match="none of the metrics"):
        F.paired_differences(rows, ["pointing_game"], [("layercam", "gradcam")])


def test_proportions_use_wilson_intervals_and_mean_curves_at_most_four() -> None:
    lo, hi = F.proportion_ci(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)   # Wilson, z = 1.96: 0.5 -+ 0.2634
    rows = long_rows({"a": [1, 0, 1, 1], "b": [0, 0, 0, 1]}, "increase_in_confidence")
    ax = F.proportions(rows, "increase_in_confidence", ["a", "b"])
    assert [c.lines[0].get_xdata()[0] for c in ax.containers] == [0.75, 0.25] and "n = 4" in ax.get_title()
    curves = pd.DataFrame({"method": ["a", "a", "b", "b"], "insertion_curve": [np.array([0.0, 1.0])] * 2 + [
        np.array([0.0, 0.5]), np.array([0.2, 0.5])], "deletion_curve": [np.array([1.0, 0.0])] * 4})
    fig = F.mean_curves(curves, [["a", "b"]])
    line = fig.axes[0].get_lines()[1]
    assert list(line.get_ydata()) == pytest.approx([0.1, 0.5]) and "n = 2" in line.get_label()
    with pytest.raises(ValueError, match="at most 4"):
        F.mean_curves(curves, [["a", "b", "c", "d", "e"]])
