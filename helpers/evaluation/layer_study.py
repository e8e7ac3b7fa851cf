"""The study below the head: Grad-CAM, LayerCAM and the hybrid at single layers and fused over layers.

A *setting* is one layer (``"stages.5"``) or several fused by the engine's multi-layer rule
(``("stages.4", "stages.5", "head")``, shallow to deep; :func:`helpers.cam.maps.fuse_layers`).
The hybrid's alpha is chosen per setting on validation samples (:func:`sweep_layers`, then
:func:`choose_layer_alphas`, which apply :func:`helpers.evaluation.alpha_sweep.choose_alpha`'s rule),
and every setting is then scored on test samples (:func:`layer_table`: one row per image x
setting x method), summarised with t-intervals (:func:`summarise_layers`) and plotted
(:func:`helpers.report.plots.plot_layers`).

For one layer the sweep is :func:`helpers.evaluation.alpha_sweep.sweep` (one pass per batch, every alpha
fused from the same raw maps). For a fused setting each alpha is one :func:`compute_cams` call of
the ``"hybrid"`` method over the layers (each layer's hybrid map, then the fusion), so the sweep's
maps are exactly the maps the test table scores.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..cam.bundle import ModelBundle
from ..cam.engine import Hybrid, compute_cams, method_options
from ..config import progress_bar
from .alpha_sweep import ALPHAS, Metric, choose_alpha, summarise, sweep, sweep_plan
from .runner import explained_class, image_seed
from .stats import mean_ci_table

#: The layers of the study per model, shallow to deep (Lite0: 14x14, 7x7 and the 1280x7x7 head map).
STUDY_LAYERS: dict[str, tuple[str, ...]] = {"efficientnet_lite0": ("stages.4", "stages.5", "head")}
#: The methods scored at every setting (all three from one pass).
LAYER_METHODS: tuple[str, ...] = ("gradcam", "layercam", "hybrid")

Setting = str | tuple[str, ...]


def layer_settings(bundle: ModelBundle, layers: Sequence[str] | None = None) -> dict[str, Setting]:
    """``{label: setting}``: each layer alone (deepest first) and all of them fused (label ``a+b+c``)."""
    if layers is None:
        if bundle.name not in STUDY_LAYERS:
            raise ValueError(f"no study layers for model {bundle.name!r}; pass layers=[...] (shallow to deep)")
        layers = STUDY_LAYERS[bundle.name]
    layers = tuple(layers)
    settings: dict[str, Setting] = {name: name for name in reversed(layers)}
    if len(layers) > 1:
        settings["+".join(layers)] = layers
    return settings


def explained_classes(bundle: ModelBundle, samples: Sequence) -> list[int]:
    """The class every map of the study explains: the model's top-1 prediction (as the evaluation's default)."""
    return [explained_class(bundle, s, "top1")[0] for s in samples]


def _batch(samples: Sequence, classes: Sequence[int], start: int, size: int
           ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Images, explained classes and pixel-ranking tie seeds (:func:`image_seed`) of one batch."""
    chunk = samples[start:start + size]
    return (torch.stack([s.tensor for s in chunk]), torch.tensor(list(classes[start:start + size])),
            [image_seed(s.file) for s in chunk])


def _fused_sweep(bundle: ModelBundle, samples: Sequence, setting: tuple[str, ...], metric: Metric,
                 alphas: Sequence[float], batch_size: int) -> pd.DataFrame:
    """:func:`sweep`'s table for a multi-layer setting: the engine's fused hybrid at every alpha."""
    rows = []
    classes = explained_classes(bundle, samples)
    for start in range(0, len(samples), batch_size):
        x, c, seeds = _batch(samples, classes, start, batch_size)
        maps = torch.cat([compute_cams(bundle, x, Hybrid(alpha=a), target=c, layer=list(setting))["hybrid"]
                          for a in alphas])
        scores = metric(bundle, x.repeat(len(alphas), 1, 1, 1), maps, c.repeat(len(alphas)),
                        tie_seed=seeds * len(alphas))
        ins, dele = (scores[k].detach().cpu().view(len(alphas), len(x)) for k in ("insertion", "deletion"))
        rows += [(start + i, "geometric", float(a), float(ins[p, i]), float(dele[p, i]))
                 for p, a in enumerate(alphas) for i in range(len(x))]
    return pd.DataFrame(rows, columns=["image", "fusion", "alpha", "insertion", "deletion"])


def sweep_layers(bundle: ModelBundle, samples: Sequence, metric: Metric, settings: Mapping[str, Setting] | None = None,
                 alphas: Sequence[float] = ALPHAS, batch_size: int = 4, progress: bool = True) -> pd.DataFrame:
    """The hybrid's geometric fusion at every alpha, every setting, every sample (use validation samples).

    Rows: layer (the setting's label), image (the sample's file), fusion, alpha, insertion, deletion.
    ``metric(bundle, images, maps, class_idx, tie_seed=...) -> {"insertion": (M,), "deletion": (M,)}``
    as for :func:`helpers.evaluation.alpha_sweep.sweep`; every map explains the model's top-1 class and
    breaks pixel-ranking ties by its image's seed, as the evaluation does.
    """
    settings = dict(settings) if settings is not None else layer_settings(bundle)
    files = [s.file for s in samples]
    classes = explained_classes(bundle, samples)
    tables = []
    for label, setting in progress_bar(settings.items(), desc="alpha sweep per layer", disable=not progress):
        if isinstance(setting, str):
            images = torch.stack([s.tensor for s in samples])
            table = sweep(bundle, images, classes, metric, sweep_plan(alphas, with_max=False), batch_size,
                          progress=False, layer=setting, tie_seeds=[image_seed(f) for f in files])
        else:
            table = _fused_sweep(bundle, samples, setting, metric, alphas, batch_size)
        tables.append(table.assign(layer=label, image=[files[i] for i in table["image"]]))
    return pd.concat(tables, ignore_index=True)[["layer", "image", "fusion", "alpha", "insertion", "deletion"]]


def choose_layer_alphas(sweep_table: pd.DataFrame) -> dict[str, dict]:
    """Per setting: :func:`choose_alpha` on the :func:`summarise` table of its sweep (the notebook-4 rule)."""
    return {label: choose_alpha(summarise(g.drop(columns="layer")))
            for label, g in sweep_table.groupby("layer", sort=False)}


def layer_table(bundle: ModelBundle, samples: Sequence, metric: Metric, alphas: Mapping[str, float],
                settings: Mapping[str, Setting] | None = None, batch_size: int = 4,
                progress: bool = True) -> pd.DataFrame:
    """Insertion and deletion AUC of Grad-CAM, LayerCAM and the hybrid (at ``alphas[setting label]``)
    at every setting, on every sample (use test samples).

    Long table, one row per image x setting x method: image, layer, method, alpha (the hybrid's;
    NaN for the others), insertion_auc, deletion_auc. Per batch and setting ONE pass gives all
    three maps and ONE metric call scores them.
    """
    settings = dict(settings) if settings is not None else layer_settings(bundle)
    missing = [label for label in settings if label not in alphas]
    if missing:
        raise ValueError(f"no alpha for the setting(s) {missing}; choose them with choose_layer_alphas first")
    rows = []
    n_methods = len(LAYER_METHODS)
    classes = explained_classes(bundle, samples)
    steps = [(label, start) for label in settings for start in range(0, len(samples), batch_size)]
    for label, start in progress_bar(steps, desc="layers x batches", disable=not progress):
        x, c, seeds = _batch(samples, classes, start, batch_size)
        files = [s.file for s in samples[start:start + batch_size]]
        setting = settings[label]
        maps = compute_cams(bundle, x, [method_options(m, {"alpha": float(alphas[label])}) for m in LAYER_METHODS],
                            target=c, layer=setting if isinstance(setting, str) else list(setting))
        scores = metric(bundle, x.repeat(n_methods, 1, 1, 1), torch.cat([maps[m].cpu() for m in LAYER_METHODS]),
                        c.repeat(n_methods), tie_seed=seeds * n_methods)
        ins, dele = (scores[k].detach().cpu().view(n_methods, len(x)) for k in ("insertion", "deletion"))
        rows += [(files[i], label, m, float(alphas[label]) if m == "hybrid" else np.nan,
                  float(ins[p, i]), float(dele[p, i])) for p, m in enumerate(LAYER_METHODS) for i in range(len(x))]
    return pd.DataFrame(rows, columns=["image", "layer", "method", "alpha", "insertion_auc", "deletion_auc"])


def summarise_layers(table: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, method) in table order: n, and mean with 95% t-interval of insertion and deletion AUC."""
    return mean_ci_table(table, ["layer", "method"], ["insertion_auc", "deletion_auc"])
