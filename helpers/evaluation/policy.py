"""The comparison policy: the thesis' methods and alpha, the confirmatory family, and which methods are aliases.

One place that the runner, the report, the model study and the study's presentation import, so the
labels, the thesis' ``a`` and the pre-registered comparisons cannot drift apart.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

#: The thesis' fixed fusion weight.
THESIS_ALPHA = 0.7
GC, LC, HYBRID, HYBRID_VAL = "gradcam", "layercam", f"hybrid@{THESIS_ALPHA}", "hybrid@val"
#: The study's main comparison: label -> (registered method or floor, options; ``"val"``: the a chosen on val).
MAIN_METHODS: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = (
    (GC, "gradcam", ()), (LC, "layercam", ()),
    (HYBRID, "hybrid", (("alpha", THESIS_ALPHA),)), (HYBRID_VAL, "hybrid", (("alpha", "val"),)),
    ("cam", "cam", ()), ("gradcam++", "gradcam++", ()), ("xgradcam", "xgradcam", ()),
    ("hirescam", "hirescam", ()), ("scorecam", "scorecam", ()), ("reciprocam", "reciprocam", ()),
    ("random", "random", ()), ("gaussian", "gaussian", ()))
#: The six further methods researchers compare against (pytorch-grad-cam's options and defaults), in the study's
#: part ``methods_2`` on the same photos as ``main``; ``main`` itself is unchanged (its hash is kept).
METHODS_2: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = tuple(
    (name, name, ()) for name in ("eigencam", "kpcacam", "ablationcam", "shapleycam", "finercam", "fullgrad"))
#: The thesis' methods and the floors: evaluated on every photo even when the other methods are not.
CORE_LABELS: tuple[str, ...] = (GC, LC, HYBRID, HYBRID_VAL, "random", "gaussian")
#: Significance level of every test.
ALPHA_LEVEL = 0.05
#: The insertion / deletion columns of each preset.
PRESET_COLUMNS: dict[str, tuple[str, str]] = {"rise": ("insertion_auc", "deletion_auc"),
                                              "thesis": ("insertion_auc_thesis", "deletion_auc_thesis")}
#: The confirmatory family, fixed before the data: hybrid@0.7 vs Grad-CAM and vs LayerCAM on insertion
#: AUC, under the rise preset (primary) and the thesis preset (secondary) -- 4 paired t-tests, Holm-adjusted
#: among themselves. Every other test is exploratory.
CONFIRMATORY_TESTS: tuple[tuple[str, str, str], ...] = tuple(
    (HYBRID, other, PRESET_COLUMNS[preset][0]) for preset in ("rise", "thesis") for other in (GC, LC))
#: Equivalence margin of the thesis' "the deletion AUC differences are not significant" (two one-sided tests,
#: exploratory): half of the mean Grad-CAM - LayerCAM insertion AUC gap under the thesis preset on the 600 test
#: photos of the study's ``main`` part (0.01181 / 2, rounded to 4 decimals), fixed here from the insertion rows
#: before the deletion test ran: a deletion difference under half the gap between the two maps the hybrid fuses
#: is too small to choose between them.
DELETION_EQUIVALENCE_MARGIN = 0.0059
#: Two methods whose metrics differ by less than this on every image and metric are the same method.
ALIAS_TOLERANCE = 1e-6
#: Maps equal up to float rounding (e.g. CAM, HiResCAM, XGrad-CAM and Grad-CAM behind a global-average-pooled
#: linear head, or the hybrid at a = 1) give equal metrics on most photos; where a map has near-ties, rounding
#: reorders the tied pixels and the AUCs move by up to ~1e-3 (here 8-24% of photos; distinct methods agree on
#: none). :func:`aliases` with these settings folds them.
ROUNDING_SHARE, ROUNDING_BOUND = 0.5, 1e-2


def parent_at(alpha: float | None) -> str | None:
    """The parent the hybrid IS at this a (its map, by definition): Grad-CAM's label at a = 1, LayerCAM's at
    a = 0, None otherwise (and for no a)."""
    return None if alpha is None else {1.0: GC, 0.0: LC}.get(float(alpha))


def aliases(results: pd.DataFrame, metrics: Sequence[str] | None = None, share: float = 1.0,
            bound: float = ALIAS_TOLERANCE) -> dict[str, str]:
    """Methods whose every metric (of ``metrics``; default every float column) equals an earlier method's on
    every image they share (the alias's images all among the earlier method's), up to ``ALIAS_TOLERANCE``
    (float noise of batched forwards): {alias: original}, e.g. hybrid@val when the validation split chose
    a = 0.7. Comparing them would test nothing. The confirmatory methods (hybrid@0.7, Grad-CAM, LayerCAM)
    count as earliest: they are never aliases. ``share`` < 1 and ``bound`` relax "every image" to "at least
    that share of images within ``ALIAS_TOLERANCE`` and none further apart than ``bound``" (:data:`ROUNDING_SHARE`,
    :data:`ROUNDING_BOUND`: the same maps up to float rounding)."""
    metrics = [m for m in (metrics if metrics is not None else results.select_dtypes("floating").columns)
               if m in results]
    wide = {m: g.set_index("image")[metrics].sort_index() for m, g in results.groupby("method", sort=False)}
    out: dict[str, str] = {}
    names = sorted(wide, key=lambda m: m not in (HYBRID, GC, LC))

    def same(a: pd.DataFrame, b: pd.DataFrame) -> bool:   # a equals b on every image of a (b may have more)
        if not a.index.isin(b.index).all():
            return False
        x, y = a.to_numpy(dtype=np.float64), b.loc[a.index].to_numpy(dtype=np.float64)
        gap = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
        gap = np.where(np.isnan(gap), np.inf, gap)           # NaN on one side only: not the same
        close = (gap <= ALIAS_TOLERANCE).all(axis=1)
        return bool(len(close)) and bool(close.mean() >= share and gap.max(initial=0.0) <= max(bound, ALIAS_TOLERANCE))
    for i, m in enumerate(names):
        for earlier in names[:i]:
            if earlier not in out and same(wide[m], wide[earlier]):
                out[m] = earlier
                break
    return out


def comparison_pairs(labels: Sequence[str], results: pd.DataFrame | None = None) -> list[tuple[str, str]]:
    """Each hybrid (0.7 and the val-chosen alpha) against every other method, plus Grad-CAM vs LayerCAM;
    methods identical to an earlier one in ``results`` (:func:`aliases`) are left out."""
    dropped = set(aliases(results)) if results is not None else set()
    labels = [m for m in labels if m not in dropped]
    pairs: list[tuple[str, str]] = []
    for h in (HYBRID, HYBRID_VAL):
        if h in labels:
            pairs += [(h, m) for m in labels if m != h and (m, h) not in pairs]
    if GC in labels and LC in labels:
        pairs.append((GC, LC))
    return pairs
