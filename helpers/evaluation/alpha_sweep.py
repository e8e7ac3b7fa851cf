"""The choice of alpha: raw Grad-CAM and LayerCAM maps from one pass, the sweep on a split, the chosen alpha on disk.

Raw Grad-CAM and LayerCAM maps come from ONE forward/backward per batch (:func:`raw_maps`); every
fusion rule at every alpha is then a cheap tensor operation on them, followed by the engine's own
upsampling and max-normalisation, so a fused map at alpha = 1 (0) is the engine's Grad-CAM (LayerCAM)
and the geometric fusion is exactly the engine's ``"hybrid"``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch

from ..cam.bundle import ModelBundle
from ..cam.checks import check_class_idx
from ..cam.engine import forward_backward, gradcam, layercam
from ..cam.maps import FUSIONS, normalise_max, upsample
from ..config import progress_bar
from .stats import mean_ci, mean_ci_table

#: The sweep's grid: a = 0, 0.1, ..., 1.0.
ALPHAS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))

#: How the chosen alpha is picked (written into ``hybrid_alpha.json``).
RULE = ("largest mean insertion AUC of the geometric fusion on the validation split; means within 1e-6 "
        "count as tied, ties go to the lower mean deletion AUC, then to the larger alpha")

TIE_TOLERANCE = 1e-6


@dataclass
class RawMaps:
    """Unnormalised Grad-CAM and LayerCAM maps (N, h, w) at the layer's resolution, from one pass."""

    gc: torch.Tensor
    lc: torch.Tensor
    class_idx: torch.Tensor
    logits: torch.Tensor


def raw_maps(bundle: ModelBundle, images: torch.Tensor, class_idx: int | Sequence[int] | None = None,
             layer: str | None = None) -> RawMaps:
    """Grad-CAM and LayerCAM of one layer from ONE forward and ONE backward of the batch."""
    cap = forward_backward(bundle, images, class_idx, layer)
    acts, grads = cap.activations[cap.layers[0]], cap.gradients[cap.layers[0]]
    return RawMaps(gradcam(acts, grads), layercam(acts, grads), cap.class_idx, cap.logits)


def fused_maps(raw: RawMaps, alpha: float, fusion: str = "geometric",
               size: tuple[int, int] = (224, 224)) -> torch.Tensor:
    """Fuse at the layer's resolution, upsample bilinearly to ``size`` and scale to [0, 1]: (N, H, W)."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; valid fusions: {', '.join(FUSIONS)}")
    return normalise_max(upsample(FUSIONS[fusion](raw.gc, raw.lc, alpha), size))


def sweep_plan(alphas: Sequence[float] = ALPHAS, additive: Sequence[float] = (), with_max: bool = True
               ) -> list[tuple[str, float]]:
    """The (fusion, alpha) pairs to score: geometric at every alpha, additive at ``additive``, max once.

    Additive at alpha 0 or 1 equals the geometric map there, so those are left out; max ignores
    alpha and is listed once with alpha NaN.
    """
    plan = [("geometric", float(a)) for a in alphas]
    plan += [("additive", float(a)) for a in additive if 0.0 < a < 1.0]
    return plan + ([("max", math.nan)] if with_max else [])


Metric = Callable[[ModelBundle, torch.Tensor, torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]]


def sweep(bundle: ModelBundle, images: torch.Tensor, class_idx: Sequence[int], metric: Metric,
          plan: Sequence[tuple[str, float]] | None = None, batch_size: int = 4, progress: bool = True,
          layer: str | None = None, tie_seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Score every (fusion, alpha) of ``plan`` on every image: rows (image, fusion, alpha, insertion, deletion).

    ``layer``: the layer whose raw maps are fused (default the bundle's target layer). ``tie_seeds``:
    one pixel-ranking tie seed per image (the evaluation uses ``runner.image_seed(file)``), passed to
    ``metric`` as ``tie_seed``; None leaves the metric's default.

    Per batch: ONE forward/backward for the raw maps, then all fused maps of the plan are scored
    by ONE call of ``metric(bundle, images, maps, class_idx) -> {"insertion": (M,), "deletion": (M,)}``.
    """
    plan = list(plan) if plan is not None else sweep_plan()
    idx = check_class_idx(class_idx, len(images), len(bundle.class_names))
    rows = []
    for start in progress_bar(range(0, len(images), batch_size), desc="alpha sweep", disable=not progress):
        x, c = images[start:start + batch_size], idx[start:start + batch_size]
        raw = raw_maps(bundle, x, c, layer)
        maps = torch.cat([fused_maps(raw, 0.5 if math.isnan(a) else a, f, tuple(x.shape[-2:])) for f, a in plan])
        seeds = {} if tie_seeds is None else {"tie_seed": list(tie_seeds[start:start + batch_size]) * len(plan)}
        scores = metric(bundle, x.repeat(len(plan), 1, 1, 1), maps, c.repeat(len(plan)), **seeds)
        ins, dele = (scores[k].detach().cpu().view(len(plan), len(x)) for k in ("insertion", "deletion"))
        rows += [(start + i, f, a, float(ins[p, i]), float(dele[p, i]))
                 for p, (f, a) in enumerate(plan) for i in range(len(x))]
    return pd.DataFrame(rows, columns=["image", "fusion", "alpha", "insertion", "deletion"])


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per (fusion, alpha): n and mean with 95% t-interval of insertion and deletion AUC."""
    return mean_ci_table(results, ["fusion", "alpha"], ["insertion", "deletion"])


def paired_differences(results: pd.DataFrame, baseline: tuple[str, float]) -> pd.DataFrame:
    """Per (fusion, alpha): mean and 95% t-interval of the per-image difference to ``baseline``.

    Differences are taken image by image (insertion - baseline insertion, likewise deletion), so
    the spread between images cancels; the baseline's own row is left out.
    """
    key = results["alpha"].fillna(-1.0)
    base = results[(results["fusion"] == baseline[0]) & (key == baseline[1])].set_index("image")
    rows = []
    for (fusion, alpha), g in results.groupby(["fusion", "alpha"], dropna=False, sort=False):
        if (fusion, alpha) == baseline:
            continue
        g = g.set_index("image")
        row = {"fusion": fusion, "alpha": alpha, "n": len(g)}
        for metric in ("insertion", "deletion"):
            diff = (g[metric] - base[metric].reindex(g.index)).dropna()
            row[f"{metric}_diff"], row[f"{metric}_lo"], row[f"{metric}_hi"] = mean_ci(diff)
        rows.append(row)
    return pd.DataFrame(rows)


def choose_alpha(summary: pd.DataFrame, fusion: str = "geometric") -> dict:
    """Apply :data:`RULE` to a :func:`summarise` table: the chosen alpha, its scores and the tied alphas."""
    rows = summary[summary["fusion"] == fusion]
    if rows.empty:
        raise ValueError(f"no rows for fusion {fusion!r} in the summary")
    best = rows["insertion_mean"].max()
    tied = rows[rows["insertion_mean"] >= best - TIE_TOLERANCE].sort_values(["deletion_mean", "alpha"],
                                                                           ascending=[True, False])
    pick = tied.iloc[0]
    return {"alpha": float(pick["alpha"]), "rule": RULE, "fusion": fusion, "n_images": int(pick["n"]),
            "insertion_mean": float(pick["insertion_mean"]), "deletion_mean": float(pick["deletion_mean"]),
            "tied_alphas": sorted(float(a) for a in tied["alpha"])}


def write_alpha_json(path: str | Path, choice: Mapping, **extra) -> Path:
    """Write the choice (plus ``extra`` facts, e.g. split, preset, model) as JSON for notebook 5."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**choice, **extra}, indent=2, sort_keys=True) + "\n")
    return path


def read_alpha_json(path: str | Path) -> dict:
    """Read ``hybrid_alpha.json``; a missing file, an alpha outside [0, 1] or a non-val split is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no chosen alpha yet; run 4_hybrid_gradcam_layercam.ipynb first")
    choice = json.loads(path.read_text())
    if not 0.0 <= float(choice.get("alpha", -1)) <= 1.0:
        raise ValueError(f"{path}: alpha must lie in [0, 1], got {choice.get('alpha')!r}")
    if choice.get("split") != "val":
        raise ValueError(f"{path}: alpha must be chosen on the 'val' split, file says {choice.get('split')!r}")
    return choice
