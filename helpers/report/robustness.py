"""What a typical photo shows, and whether "not significant" means "the same": the answer's robustness rows.

:func:`robust_table` gives, for each confirmatory comparison (:data:`~helpers.evaluation.policy.CONFIRMATORY_TESTS`),
the mean with its CI (the confirmatory row's), the median paired difference, the Hodges-Lehmann estimate with
its CI, the share of photos the hybrid wins, how many photos carry half of the net difference, and the Wilcoxon
signed-rank and sign-flip permutation p-values (exploratory robustness rows: the confirmatory family stays the
four t-tests). :func:`equivalence_table` tests the thesis' "the deletion differences are not significant" as
equivalence (two one-sided tests within :data:`~helpers.evaluation.policy.DELETION_EQUIVALENCE_MARGIN`,
exploratory). :func:`sorted_differences` draws the per-photo differences, sorted, with the mean and median.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..config import SEED
from ..evaluation.policy import (
    ALPHA_LEVEL,
    CONFIRMATORY_TESTS,
    DELETION_EQUIVALENCE_MARGIN,
    GC,
    HYBRID,
    LC,
    PRESET_COLUMNS,
)
from ..evaluation.robust import half_net_count, hodges_lehmann, sign_flip_test, tost, win_counts
from ..evaluation.runner import LOWER_IS_BETTER
from ..evaluation.stats import paired_values
from .figures import METRIC_NAMES, save
from .verdict import NAMES, find_test, format_p, p_text

#: The figure and tables written beside REPORT.md.
SORTED_FIGURE, ROBUST_CSV = "sorted_differences.png", "robust_differences.csv"
EQUIVALENCE_CSV = "deletion_equivalence.csv"
#: How many sign patterns the permutation test draws (its smallest two-sided p is 2 / (this + 1)).
SIGN_FLIPS = 10_000
PROTOCOLS = {cols[0]: name for name, cols in PRESET_COLUMNS.items()} | {cols[1]: name
                                                                       for name, cols in PRESET_COLUMNS.items()}


def differences(rows: pd.DataFrame, a: str, b: str, metric: str) -> np.ndarray:
    """Per-photo ``a - b`` of ``metric`` on the photos both have."""
    x, z = paired_values(rows, metric, a, b)
    return x - z


def robust_table(rows: pd.DataFrame, tests: pd.DataFrame,
                 comparisons: Sequence[tuple[str, str, str]] = CONFIRMATORY_TESTS, seed: int = SEED) -> pd.DataFrame:
    """One row per comparison (a, b, metric): n, the t-test row's mean and 95% CI, the median difference, the
    Hodges-Lehmann estimate and its 95% CI, wins / ties / losses of ``a`` and its share, the photos carrying
    half of the net difference, and the (unadjusted, exploratory) Wilcoxon and sign-flip p."""
    out = []
    for a, b, metric in comparisons:
        d = differences(rows, a, b, metric)
        t, w = find_test(tests, a, b, metric), find_test(tests, a, b, metric, "wilcoxon")
        hl, lo, hi = hodges_lehmann(d)
        wins = win_counts(d, higher_is_better=metric not in LOWER_IS_BETTER)
        out.append({"a": a, "b": b, "metric": metric, "n": len(d), "mean_diff": t.mean_diff, "ci_low": t.ci_low,
                    "ci_high": t.ci_high, "median_diff": float(np.median(d)), "hodges_lehmann": hl, "hl_low": lo,
                    "hl_high": hi, "wins": wins.wins, "ties": wins.ties, "losses": wins.losses,
                    "win_share": wins.share, "half_net_photos": half_net_count(d), "p_wilcoxon": w.p,
                    "p_sign_flip": sign_flip_test(d, SIGN_FLIPS, seed), "family": "exploratory (robustness)"})
    return pd.DataFrame(out)


def robust_lines(table: pd.DataFrame) -> list[str]:
    """The robustness rows as a Markdown table with the sentence that says what they are."""
    head = ("| comparison | protocol | n | mean [95% CI] | median | Hodges-Lehmann [95% CI] | hybrid wins | "
            "photos carrying half the net difference | Wilcoxon p | sign-flip p |")
    lines = ["**What a typical photo shows** (exploratory robustness rows; the confirmatory family stays the four "
             "t-tests above; their p-values are unadjusted):", "", head, "|" + "---|" * 10]
    for r in table.itertuples():
        lines.append(f"| {r.a} - {NAMES.get(r.b, r.b)} | {PROTOCOLS.get(r.metric, r.metric)} | {r.n} | "
                     f"{r.mean_diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {r.median_diff:+.4f} | "
                     f"{r.hodges_lehmann:+.4f} [{r.hl_low:+.4f}, {r.hl_high:+.4f}] | {r.wins} of {r.n} "
                     f"({r.win_share:.0%}) | {r.half_net_photos} | {format_p(r.p_wilcoxon)} | "
                     f"{format_p(r.p_sign_flip)} |")
    floor = 2 / (SIGN_FLIPS + 1)                 # two-sided: twice the smallest one-sided p
    return lines + ["", f"Median and Hodges-Lehmann (the median of the pairwise averages, with its distribution-free "
                    "CI) say what the typical photo shows; the mean is pulled by a few photos, which the last count "
                    f"shows. The sign-flip test draws {SIGN_FLIPS:,} sign patterns: its smallest p is "
                    f"{format_p(floor)} (two-sided).", "", f"![Sorted per-photo differences]({SORTED_FIGURE})"]


def equivalence_table(rows: pd.DataFrame, margin: float = DELETION_EQUIVALENCE_MARGIN,
                      alpha: float = ALPHA_LEVEL) -> pd.DataFrame:
    """TOST of hybrid@0.7 against each parent on each preset's deletion AUC within +-``margin`` (exploratory):
    n, mean, the (1 - 2 alpha) CI, the larger one-sided p and the verdict."""
    out = []
    for metric in (cols[1] for cols in PRESET_COLUMNS.values()):
        for other in (GC, LC):
            d = differences(rows, HYBRID, other, metric)
            e = tost(d, margin, alpha)
            out.append({"a": HYBRID, "b": other, "metric": metric, "n": len(d), "mean_diff": float(d.mean()),
                        "ci90_low": e.low, "ci90_high": e.high, "margin": e.margin, "p_tost": e.p,
                        "verdict": e.verdict, "family": "exploratory"})
    return pd.DataFrame(out)


def margin_gap(rows: pd.DataFrame) -> float:
    """The mean Grad-CAM - LayerCAM insertion AUC gap under the thesis preset, which the margin halves."""
    return float(differences(rows, GC, LC, PRESET_COLUMNS["thesis"][0]).mean())


def equivalence_line(table: pd.DataFrame, gap: float) -> str:
    """The deletion claim's answer line: each rise-preset TOST verdict, the margin and its reason."""
    rise = table[table["metric"] == PRESET_COLUMNS["rise"][1]]
    verdicts = set(rise["verdict"])
    m = float(rise["margin"].iloc[0])
    word = ("HOLDS (equivalent)" if all(v.startswith("equivalent") for v in verdicts) else
            "DOES NOT HOLD (not equivalent)" if "not equivalent" in verdicts else "NOT SHOWN (inconclusive)")
    parts = "; ".join(f"vs {NAMES[r.b]}: {r.verdict} (mean {r.mean_diff:+.4f}, 90% CI [{r.ci90_low:+.4f}, "
                      f"{r.ci90_high:+.4f}], {p_text(r.p_tost, 'TOST p')})" for r in rise.itertuples())
    thesis = table[table["metric"] == PRESET_COLUMNS["thesis"][1]].set_index("b")["verdict"]
    differ = [f"vs {NAMES[r.b]} {thesis[r.b]}" for r in rise.itertuples() if thesis.get(r.b, r.verdict) != r.verdict]
    return (f"- **Claim: the deletion AUC differences are not significant - {word}**, tested as equivalence (two "
            f"one-sided tests, rise protocol, exploratory; margin ±{m:g}, fixed in the policy before the test): "
            f"{parts}; lower is better." + (f" The thesis protocol differs: {', '.join(differ)}." if differ else "")
            + " The margin is half of the study's Grad-CAM - LayerCAM insertion gap under the thesis protocol "
            f"(on these {int(rise['n'].iloc[0])} photos: {gap:.4f}): a deletion difference under half the gap between "
            "the two maps the hybrid fuses is too small to choose between them.")


def equivalence_lines(table: pd.DataFrame) -> list[str]:
    """Every TOST row (both presets) as a Markdown table."""
    lines = ["| comparison | protocol | n | mean | 90% CI | margin | TOST p | verdict |", "|" + "---|" * 8]
    return lines + [f"| {r.a} - {NAMES[r.b]} | {PROTOCOLS[r.metric]} | {r.n} | {r.mean_diff:+.4f} | "
                    f"[{r.ci90_low:+.4f}, {r.ci90_high:+.4f}] | ±{r.margin:g} | {format_p(r.p_tost)} | {r.verdict} |"
                    for r in table.itertuples()]


def sorted_differences(rows: pd.DataFrame, comparisons: Sequence[tuple[str, str, str]] = CONFIRMATORY_TESTS,
                       path: str | Path | None = None) -> plt.Figure:
    """One panel per comparison: the per-photo differences sorted, with the mean, the median and zero marked
    (10 x 6.6 inches at 100 dpi: 1000 px wide, text at 9 pt or more)."""
    cols = 2
    fig, axes = plt.subplots(-(-len(comparisons) // cols), cols, figsize=(10, 6.6), squeeze=False)
    for ax, (a, b, metric) in zip(axes.ravel(), comparisons, strict=False):
        d = np.sort(differences(rows, a, b, metric))
        ax.plot(np.arange(1, len(d) + 1), d, ".", ms=3, color="0.35", label="a photo")
        ax.axhline(0, color="k", lw=0.8)
        ax.axhline(d.mean(), color="C3", lw=1.4, label=f"mean {d.mean():+.4f}")
        ax.axhline(np.median(d), color="C0", lw=1.4, ls="--", label=f"median {np.median(d):+.4f}")
        ax.set_title(f"{a} - {NAMES.get(b, b)}, {METRIC_NAMES.get(metric, metric)}, n = {len(d)}", fontsize=10)
        ax.set_xlabel("photo, sorted by its difference", fontsize=9)
        ax.set_ylabel("per-photo difference", fontsize=9)
        ax.tick_params(labelsize=9)
        ax.legend(fontsize=9, loc="lower right")   # the data rise left to right: that corner is empty
    for ax in axes.ravel()[len(comparisons):]:
        fig.delaxes(ax)
    fig.tight_layout()
    return save(fig, path)
