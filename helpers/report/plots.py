"""The figures of the sweeps and studies below the report: the alpha sweep, the best a per photo, layers, models,
the cascading randomisation (each from the table its evaluation module computes)."""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..config import SEED
from ..evaluation.adaptive import ORACLE_ALPHA
from ..evaluation.alpha_sweep import ALPHAS
from ..evaluation.stats import bootstrap_ci


def plot_sweep(summary: pd.DataFrame, chosen: float | None = None, title: str = "") -> plt.Figure:
    """Insertion and deletion AUC against alpha, mean with 95% CI, one line/marker set per fusion;
    ``title`` (e.g. the photos and their n) above both panels."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"geometric": ("tab:blue", "o-"), "additive": ("tab:orange", "s--"), "max": ("tab:green", ":")}
    for ax, metric, better in zip(axes, ("insertion", "deletion"), ("higher", "lower"), strict=True):
        for fusion, g in summary.groupby("fusion", sort=False):
            colour, style = styles.get(fusion, ("gray", "x-"))
            mean, lo, hi = (g[f"{metric}_{s}"].to_numpy() for s in ("mean", "lo", "hi"))
            lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)  # AUCs lie in [0, 1]; tiny n gives wide t-intervals
            if g["alpha"].isna().all():  # alpha-free rule: a horizontal line and band
                ax.axhline(mean[0], color=colour, ls=style, label=fusion)
                ax.axhspan(lo[0], hi[0], color=colour, alpha=0.1)
                continue
            ax.plot(g["alpha"], mean, style, color=colour, label=fusion)
            ax.fill_between(g["alpha"], lo, hi, color=colour, alpha=0.15)
        if chosen is not None:
            ax.axvline(chosen, color="k", lw=0.8, label=f"chosen a = {chosen:g}")
        ax.set_xlabel("a (weight of Grad-CAM)")
        ax.set_title(f"{metric} AUC ({better} is better), mean and 95% CI")
        ax.legend(fontsize=8)
    return laid_out(fig, title)


def plot_paired(paired: pd.DataFrame | Mapping[str, pd.DataFrame], baseline: str = "Grad-CAM (a = 1)",
                fusion: str = "geometric", title: str = "") -> plt.Figure:
    """Per-image paired differences to the baseline against alpha: mean and 95% CI, insertion and deletion.

    A mapping ``{label: table}`` (tables of :func:`paired_differences`, e.g. one per model) draws one
    labelled series each, shifted slightly along alpha so that their intervals do not hide each other.
    ``title`` goes above both panels.
    """
    series = paired if isinstance(paired, Mapping) else {"": paired}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for ax, metric in zip(axes, ("insertion", "deletion"), strict=True):
        for k, (label, table) in enumerate(series.items()):
            g = table[table["fusion"] == fusion]
            mean = g[f"{metric}_diff"].to_numpy()
            err = np.vstack([mean - g[f"{metric}_lo"].to_numpy(), g[f"{metric}_hi"].to_numpy() - mean])
            shift = 0.015 * (k - (len(series) - 1) / 2)
            ax.errorbar(g["alpha"] + shift, mean, yerr=err, fmt="o", capsize=3, label=label or None)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xlabel("a (weight of Grad-CAM)")
        ax.set_title(f"{metric} AUC minus {baseline}, per image (mean, 95% CI)", fontsize=9)
        if len(series) > 1:
            ax.legend(fontsize=7)
    return laid_out(fig, title)


def laid_out(fig: plt.Figure, title: str = "") -> plt.Figure:
    """``fig`` with ``title`` above its panels (if any), laid out so the title clears the panels' own titles."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_best_alpha(oracle_table: pd.DataFrame) -> plt.Figure:
    """Histogram of the oracle's best a per image (an UPPER BOUND: the metric chose it), one bar per grid alpha."""
    best = oracle_table[ORACLE_ALPHA].to_numpy(np.float64)
    half = float(np.diff(ALPHAS).min()) / 2
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.hist(best, bins=np.append(np.asarray(ALPHAS) - half, ALPHAS[-1] + half), edgecolor="white")
    ax.set_xticks(ALPHAS)
    ax.set_xlabel("best a of the image (weight of Grad-CAM)")
    ax.set_ylabel("images")
    ax.set_title(f"Best a per image by insertion AUC: an upper bound (the metric chooses), n = {len(best)}",
                 fontsize=9)
    fig.tight_layout()
    return fig


def plot_layers(summary: pd.DataFrame) -> plt.Figure:
    """Insertion and deletion AUC by setting (x) and method (marker), mean with 95% CI (clipped to [0, 1])."""
    layers = list(dict.fromkeys(summary["layer"]))
    methods = list(dict.fromkeys(summary["method"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(len(methods), 1)
    for ax, metric, better in zip(axes, ("insertion_auc", "deletion_auc"), ("higher", "lower"), strict=True):
        for j, method in enumerate(methods):
            g = summary[summary["method"] == method].set_index("layer").reindex(layers)
            mean = g[f"{metric}_mean"].to_numpy()
            lo, hi = (np.clip(g[f"{metric}_{s}"].to_numpy(), 0, 1) for s in ("lo", "hi"))  # AUCs lie in [0, 1]
            err = np.abs(np.vstack([mean - lo, hi - mean]))
            ax.errorbar(np.arange(len(layers)) + (j - (len(methods) - 1) / 2) * width, mean, yerr=err, fmt="o",
                        capsize=3, label=method)
        ax.set_xticks(np.arange(len(layers)), layers, rotation=15, ha="right", fontsize=8)
        ax.set_title(f"{metric} ({better} is better), mean and 95% CI", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_models(tests: pd.DataFrame, metric: str = "insertion_auc") -> plt.Figure:
    """Mean paired difference with its 95% BCa CI, per model (rows) and comparison (colour)."""
    t = tests[(tests["metric"] == metric) & (tests["test"] == "paired t-test")]
    models, pairs = list(dict.fromkeys(t["model"])), list(dict.fromkeys(t["pair"]))
    fig, ax = plt.subplots(figsize=(8, 0.7 + 0.8 * len(models)))
    height = 0.8 / max(len(pairs), 1)
    for j, pair in enumerate(pairs):
        g = t[t["pair"] == pair].set_index("model").reindex(models)
        y = np.arange(len(models)) + (j - (len(pairs) - 1) / 2) * height
        err = np.abs(np.vstack([g["mean_diff"] - g["ci_low"], g["ci_high"] - g["mean_diff"]]))
        ax.errorbar(g["mean_diff"], y, xerr=err, fmt="o", capsize=3, label=pair)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(np.arange(len(models)), models)
    ax.invert_yaxis()
    ax.set(xlabel=f"mean paired difference of {metric} (first method - second)",
           title=f"The thesis' claims per architecture: {metric}, mean and 95% BCa CI")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_randomisation(results: pd.DataFrame, dodge: float = 0.0) -> plt.Figure:
    """Mean Spearman correlation per method along the cascade with its 95% BCa bootstrap CI over images; the
    methods are shifted ``dodge`` apart along x, so that no line hides another."""
    fig, ax = plt.subplots(figsize=(10, 4))
    labels = results.drop_duplicates("step").sort_values("step")["layer"].tolist()
    methods = list(dict.fromkeys(results["method"]))
    for k, (method, group) in enumerate(results.groupby("method", sort=False)):
        by_step = group.groupby("step")["spearman"]
        mean = by_step.mean()
        ci = np.array([bootstrap_ci(v.to_numpy(np.float64), seed=SEED) for _, v in by_step]).reshape(-1, 2)
        err = np.abs(np.vstack([mean.to_numpy() - ci[:, 0], ci[:, 1] - mean.to_numpy()]))
        ax.errorbar(mean.index + dodge * (k - (len(methods) - 1) / 2), mean, yerr=np.nan_to_num(err), label=method,
                    marker="o", ms=4, capsize=3)
    ax.set_xticks(range(len(labels)), ["trained"] + [f"+{n}" for n in labels[1:]], rotation=45, ha="right")
    ax.set_ylabel("Spearman vs trained map (mean, 95% CI)")
    ax.set_title("cascading model randomisation (lower = more model-dependent)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig
