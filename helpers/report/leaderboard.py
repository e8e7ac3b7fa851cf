"""Tables that never mix samples: the leaderboard on the photos all methods share, and Markdown renderers.

:func:`leaderboard` ranks every distinct method on ONE set of photos (those where all of them have
a value), with the mean and its 95% BCa CI, the paired difference against a reference with its CI
and Holm-adjusted p, and n; a method identical to another (:func:`helpers.evaluation.policy.aliases`)
appears once, with a note naming its aliases.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import SEED
from ..evaluation.policy import GC, aliases
from ..evaluation.runner import LOCALISATION, LOWER_IS_BETTER
from ..evaluation.stats import bootstrap_ci, comparison_table
from .verdict import format_p


def shared_images(rows: pd.DataFrame, methods: Sequence[str], metric: str) -> list[str]:
    """The images on which every one of ``methods`` has a (non-NaN) ``metric``, in first-seen order."""
    have = rows[rows["method"].isin(methods) & rows[metric].notna()]
    counts = have.groupby("image", sort=False)["method"].nunique()
    return list(counts.index[counts == len(set(methods))])


def alias_note(method: str, same: Mapping[str, str]) -> str:
    """``same maps: cam, hirescam`` for a method others equal (``same``: {alias: original}), else ``""``."""
    folded = [a for a, o in same.items() if o == method]
    return "same maps: " + ", ".join(folded) if folded else ""


def leaderboard(rows: pd.DataFrame, metric: str, reference: str = GC, seed: int = SEED,
                same: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Every distinct method on the images all of them share: rank (1 = best, direction-aware), n, mean
    [95% BCa CI], paired difference vs ``reference`` [95% BCa CI], its paired t-test p and Holm-adjusted p
    (over this table's comparisons, exploratory), and a note naming the identical methods folded in (``same``:
    {alias: original}, default :func:`aliases` of the rows)."""
    same = aliases(rows) if same is None else same
    methods = [m for m in dict.fromkeys(rows["method"]) if m not in same]
    if reference not in methods:
        raise ValueError(f"leaderboard of {metric}: no reference method {reference!r} in the rows")
    images = shared_images(rows, methods, metric)
    if len(images) < 2:
        raise ValueError(f"leaderboard of {metric}: {len(images)} image(s) shared by all methods; need >= 2")
    sub = rows[rows["image"].isin(images) & rows["method"].isin(methods)]
    tests = comparison_table(sub, [metric], [(m, reference) for m in methods if m != reference], seed=seed)
    t = tests[tests["test"] == "paired t-test"].set_index("a")
    out = []
    for m in methods:
        v = sub.loc[sub["method"] == m, metric].to_numpy(dtype=np.float64)
        lo, hi = bootstrap_ci(v, seed=seed)
        diff = t.loc[m] if m in t.index else None
        out.append({"method": m, "n": len(v), "mean": v.mean(), "ci_low": lo, "ci_high": hi,
                    "diff": np.nan if diff is None else diff["mean_diff"],
                    "diff_low": np.nan if diff is None else diff["ci_low"],
                    "diff_high": np.nan if diff is None else diff["ci_high"],
                    "p": np.nan if diff is None else diff["p"], "p_holm": np.nan if diff is None else diff["p_holm"],
                    "note": alias_note(m, same)})
    table = pd.DataFrame(out)
    sign = 1 if metric in LOWER_IS_BETTER else -1
    table.insert(0, "rank", (sign * table["mean"]).rank(method="min").astype(int))
    table.insert(2, "metric", metric)
    return table.sort_values(["rank", "method"], kind="stable").reset_index(drop=True)


def leaderboard_view(table: pd.DataFrame, reference: str = GC) -> pd.DataFrame:
    """The leaderboard as display strings: ``mean [lo, hi]``, the difference with its CI, p formatted."""
    def interval(a: float, lo: float, hi: float, sign: str = "") -> str:
        return "" if np.isnan(a) else f"{a:{sign}.4f} [{lo:{sign}.4f}, {hi:{sign}.4f}]"
    return pd.DataFrame({
        "rank": table["rank"], "method": table["method"], "n": table["n"],
        "mean [95% CI]": [interval(*r) for r in table[["mean", "ci_low", "ci_high"]].to_numpy()],
        f"minus {reference} [95% CI]": [interval(*r, sign="+")
                                        for r in table[["diff", "diff_low", "diff_high"]].to_numpy()],
        "p (Holm)": ["" if np.isnan(p) else format_p(p) for p in table["p_holm"]],
        "identical methods": table["note"]})


def markdown_table(df: pd.DataFrame, digits: int = 4) -> list[str]:
    """A table as Markdown lines, floats rounded to ``digits`` (no extra dependency)."""
    def cell(v: object) -> str:
        return f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)
    return ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)] + \
        ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]


def localisation_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The localisation rows of a summary table: per metric x method, n, the mean with its BCa CI
    resampling source photos, and the mean of per-class means."""
    loc = summary[summary["metric"].isin(LOCALISATION)].sort_values("metric", kind="stable")
    cis = zip(loc["mean"], loc["ci_low_cluster"], loc["ci_high_cluster"], strict=True)
    return pd.DataFrame({"metric": loc["metric"].to_numpy(), "method": loc["method"].to_numpy(),
                         "n": loc["n"].to_numpy(),
                         "mean [95% CI, source photos]": [f"{m:.4f} [{lo:.4f}, {hi:.4f}]" for m, lo, hi in cis],
                         "mean of class means": loc["class_mean"].round(4).to_numpy()})
