"""The study's figures: the answer's forest plot, per-photo paired differences, proportions and mean curves.

Each function takes tables and returns the matplotlib Figure (data in, artists out, so the tests check
what is drawn); ``path`` saves it atomically. Every axis is labelled and every figure states n; a
metric is drawn only where it was measured (no empty panels); mean curves have at most
:data:`MAX_CURVES` methods per panel.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from ..config import SEED, atomic_file
from ..evaluation.policy import ALPHA_LEVEL
from ..evaluation.runner import LOWER_IS_BETTER
from ..evaluation.stats import bootstrap_ci, paired_values
from .verdict import NAMES, p_text

MAX_CURVES = 4
METRIC_NAMES = {"insertion_auc": "insertion AUC, rise protocol",
                "insertion_auc_thesis": "insertion AUC, thesis protocol",
                "deletion_auc": "deletion AUC, rise protocol", "deletion_auc_thesis": "deletion AUC, thesis protocol"}
#: Forest-plot colours: significantly better (Holm), significantly worse, no difference shown.
VERDICT_COLOURS = {"better": "C2", "worse": "C3", "no difference shown": "C0"}


def save(fig: plt.Figure, path: str | Path | None, dpi: int = 100) -> plt.Figure:
    """Save ``fig`` atomically to ``path`` (format from the suffix) when a path is given; return it."""
    if path is not None:
        with atomic_file(path) as fh:
            fig.savefig(fh, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png", bbox_inches="tight")
    return fig


def _name(method: str) -> str:
    return NAMES.get(method, method)


def forest_plot(tests: pd.DataFrame, path: str | Path | None = None, title: str = "") -> plt.Figure:
    """One row per test of ``tests`` (columns a, b, metric, n, mean_diff, ci_low, ci_high, p_holm,
    detectable_diff_80): the paired mean difference with its 95% CI, the band of +- the smallest
    difference detectable with 80% power, n and Holm p, and a zero line; ``title`` above the n line."""
    fig, ax = plt.subplots(figsize=(9, 0.75 * len(tests) + 2.2))
    y = np.arange(len(tests))[::-1]
    for yi, t in zip(y, tests.itertuples(), strict=True):
        ax.fill_between([-t.detectable_diff_80, t.detectable_diff_80], yi - 0.3, yi + 0.3, color="0.85", lw=0,
                        label="+- smallest detectable difference (80% power)" if yi == y[0] else None)
        verdict = ("no difference shown" if not t.p_holm < ALPHA_LEVEL else "better" if t.mean_diff > 0 else "worse")
        ax.errorbar(t.mean_diff, yi, xerr=[[t.mean_diff - t.ci_low], [t.ci_high - t.mean_diff]], fmt="o",
                    color=VERDICT_COLOURS[verdict], capsize=4)
        ax.annotate(f"n = {t.n}, {p_text(t.p_holm, 'Holm p')}", (1.01, yi), xycoords=("axes fraction", "data"),
                    va="center", fontsize=8)
    for verdict, colour in VERDICT_COLOURS.items():
        ax.errorbar([], [], fmt="o", color=colour, label=f"first method {verdict}" if verdict != "no difference shown"
                    else verdict + " (Holm p >= 0.05)")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [f"{_name(t.a)} - {_name(t.b)}\n{METRIC_NAMES.get(t.metric, t.metric)}"
                      for t in tests.itertuples()], fontsize=8)
    ax.set_xlabel("paired mean difference (95% BCa CI); > 0: the first method is better")
    ax.set_ylabel("comparison, metric")
    n = f"{tests['n'].min()}" + ("" if tests["n"].min() == tests["n"].max() else f"-{tests['n'].max()}")
    ax.set_title((f"{title}\n" if title else "") + f"Paired mean differences per photo (n = {n} photos), 95% BCa CIs",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)   # below: covers no data
    fig.tight_layout()
    return save(fig, path)


def differences_panel(ax: plt.Axes, rows: pd.DataFrame, metric: str, pairs: Sequence[tuple[str, str]],
                      seed: int = SEED) -> None:
    """Per-photo differences a - b of ``metric`` for each pair (one row each): the photos as dots, the mean
    and its 95% BCa CI as a bar; the title states n (photos where both have a value)."""
    rng = np.random.default_rng(seed)
    ns, spread = [], []
    for i, (a, b) in enumerate(pairs):
        x, z = paired_values(rows, metric, a, b)
        d = x - z
        ns.append(len(d))
        spread.append(np.abs(d))
        yi = len(pairs) - 1 - i
        ax.scatter(d, yi + rng.uniform(-0.25, 0.25, len(d)), s=4, alpha=0.25, color="0.4")
        lo, hi = bootstrap_ci(d, seed=seed)
        ax.errorbar(d.mean(), yi, xerr=[[d.mean() - lo], [hi - d.mean()]], fmt="o", color="C3", capsize=4)
        ax.annotate(f"{d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]", (1.01, yi), xycoords=("axes fraction", "data"),
                    va="center", fontsize=7)
    # the central 98% of the photos' differences: a few extreme photos would squeeze the means out of sight
    edge = float(np.quantile(np.concatenate(spread), 0.98)) if any(len(v) for v in spread) else 0.0
    if edge > 0:
        ax.set_xlim(-1.05 * edge, 1.05 * edge)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(pairs))[::-1], [f"{_name(a)} - {_name(b)}" for a, b in pairs], fontsize=7)
    n = f"n = {min(ns)}" if min(ns) == max(ns) else f"n = {min(ns)}-{max(ns)}"
    ax.set_title(f"{metric} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better), {n} photos", fontsize=9)
    ax.set_xlabel("per-photo difference (central 98% shown); red: mean, 95% BCa CI (right)")
    ax.set_ylabel("pair")


def paired_differences(rows: pd.DataFrame, metrics: Sequence[str], pairs: Sequence[tuple[str, str]],
                       path: str | Path | None = None, seed: int = SEED, cols: int = 2) -> plt.Figure:
    """One :func:`differences_panel` per metric measured on these rows (metrics that are all NaN are left
    out, so no panel is empty)."""
    measured = [m for m in metrics if m in rows and rows[m].notna().any()]
    if not measured:
        raise ValueError(f"none of the metrics {list(metrics)} is measured on these rows")
    nrows = -(-len(measured) // cols)
    fig, axes = plt.subplots(nrows, min(cols, len(measured)), figsize=(8 * min(cols, len(measured)),
                                                                       0.35 * len(pairs) * nrows + 1.5 * nrows),
                             squeeze=False)
    for ax, metric in zip(axes.ravel(), measured, strict=False):
        differences_panel(ax, rows, metric, pairs, seed)
    for ax in axes.ravel()[len(measured):]:
        fig.delaxes(ax)
    fig.tight_layout()
    return save(fig, path)


def proportion_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (``scipy.stats.binomtest``); NaN for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def proportions(rows: pd.DataFrame, metric: str, methods: Sequence[str], ax: plt.Axes | None = None) -> plt.Axes:
    """The share of photos where a 0/1 ``metric`` is 1, per method, with its 95% Wilson CI and n."""
    if ax is None:
        ax = plt.subplots(figsize=(6, 0.35 * len(methods) + 1.2))[1]
    ns = []
    for i, m in enumerate(methods):
        v = rows.loc[rows["method"] == m, metric].dropna().to_numpy()
        k, n = int(v.sum()), len(v)
        ns.append(n)
        lo, hi = proportion_ci(k, n)
        ax.errorbar(k / n, len(methods) - 1 - i, xerr=[[k / n - lo], [hi - k / n]], fmt="o", color="C0", capsize=3)
    ax.set_yticks(range(len(methods))[::-1], [_name(m) for m in methods], fontsize=7)
    ax.set_xlabel(f"share of photos with {metric} = 1 (95% Wilson CI)")
    ax.set_ylabel("method")
    ax.set_title(f"{metric}, n = {min(ns)}" + ("" if min(ns) == max(ns) else f"-{max(ns)}") + " photos", fontsize=9)
    return ax


#: The x axis and name of each kind of curve (ROAD's LeRF keeps the top fraction p and removes the rest).
CURVE_AXES: dict[str, str] = {"insertion": "fraction of pixels inserted", "deletion": "fraction of pixels deleted",
                              "road_morf": "p: fraction removed, most relevant first",
                              "road_lerf": "p: fraction kept, the least relevant rest removed"}
CURVE_NAMES: dict[str, str] = {"road_morf": "ROAD MoRF", "road_lerf": "ROAD LeRF"}


def mean_curves(rows: pd.DataFrame, groups: Sequence[Sequence[str]], modes: Sequence[str] = ("insertion", "deletion"),
                path: str | Path | None = None, x: Sequence[float] | None = None) -> plt.Figure:
    """Mean curves (columns ``<mode>_curve``: one array per row, at the fractions ``x``, default evenly spaced
    from 0 to 1) with 95% t-bands: one panel per group x mode, at most :data:`MAX_CURVES` methods per panel;
    the legend gives each method's n."""
    if any(len(g) > MAX_CURVES for g in groups):
        raise ValueError(f"at most {MAX_CURVES} methods per panel, got {[len(g) for g in groups]}")
    fig, axes = plt.subplots(len(groups), len(modes), figsize=(5 * len(modes), 3.2 * len(groups)), squeeze=False)
    for row, group in zip(axes, groups, strict=True):
        for ax, mode in zip(row, modes, strict=True):
            for m in group:
                c = np.stack(rows.loc[rows["method"] == m, f"{mode}_curve"].to_list()).astype(np.float64)
                xs = np.linspace(0, 1, c.shape[1]) if x is None else np.asarray(x, dtype=np.float64)
                mean = c.mean(0)
                half = stats.t.ppf(0.975, len(c) - 1) * c.std(0, ddof=1) / np.sqrt(len(c)) if len(c) > 1 else 0 * mean
                ax.plot(xs, mean, lw=1.2, marker="." if x is not None else None, label=f"{_name(m)} (n = {len(c)})")
                ax.fill_between(xs, mean - half, mean + half, alpha=0.15)
            ax.set(xlabel=CURVE_AXES.get(mode, "fraction of pixels removed"), ylabel="p(explained class)",
                   title=f"mean {CURVE_NAMES.get(mode, mode.replace('_', ' '))} curve, 95% band")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)
