"""The thesis' claims across architectures: per model, the hybrid's alpha chosen on validation photos,
then Grad-CAM, LayerCAM, hybrid@0.7 and hybrid@val scored on the same test photos, and paired tests.

Each model is scored at its own target layer and input size (Lite1 240 px, Lite2 260 px), with the
evaluation's conventions: the model's top-1 class is explained and pixel-ranking ties are broken by
the image's seed. Grad-CAM and LayerCAM are the hybrid's limits a = 1 and a = 0 (equal to the
engine's maps within 1e-6, notebook 4), so ONE pass per batch gives all four maps
(:func:`helpers.evaluation.alpha_sweep.sweep`). The alpha grid is coarser than notebook 4's
(:data:`MODEL_ALPHAS`) to fit the reproduce budget; the rule is the same
(:func:`helpers.evaluation.alpha_sweep.choose_alpha`).
"""
from __future__ import annotations

import gc
from typing import Sequence

import pandas as pd
import torch

from ..cam.bundle import ModelBundle
from ..cam.models import load_model
from ..cam.weights import find_resnet50_weights
from ..config import SEED
from ..data.imagenet import study_samples
from ..data.images import seeded_subset
from .alpha_sweep import Metric, sweep, sweep_plan
from .layer_study import choose_layer_alphas, explained_classes, sweep_layers
from .policy import GC, HYBRID, HYBRID_VAL, LC, THESIS_ALPHA, aliases
from .runner import image_seed
from .stats import comparison_table

#: The alpha grid of the per-model choice on validation photos.
MODEL_ALPHAS: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 1.0)
#: The comparisons of the table: the thesis' two claims, and the hybrid at the model's own alpha.
MODEL_PAIRS: tuple[tuple[str, str], ...] = ((HYBRID, GC), (HYBRID, LC), (HYBRID_VAL, GC))
#: The methods' rows in a model's table.
MODEL_METHODS: tuple[str, ...] = (GC, LC, HYBRID, HYBRID_VAL)


def study_models(extra: Sequence[str] = ("efficientnet_lite1", "efficientnet_lite2")) -> list[str]:
    """The further models of the study: ``extra``, plus ResNet-50 when its ImageNet weights are on this machine."""
    return list(extra) + (["resnet50"] if find_resnet50_weights() is not None else [])


def choose_model_alpha(bundle: ModelBundle, val: Sequence, metric: Metric, alphas: Sequence[float] = MODEL_ALPHAS,
                       batch_size: int = 4, progress: bool = True) -> dict:
    """The hybrid's alpha at the bundle's target layer, chosen on validation samples by notebook 4's rule."""
    layer = bundle.target_layer
    table = sweep_layers(bundle, val, metric, {layer: layer}, alphas, batch_size, progress)
    return choose_layer_alphas(table)[layer]


def model_rows(bundle: ModelBundle, samples: Sequence, metric: Metric, val_alpha: float, batch_size: int = 4,
               progress: bool = True) -> pd.DataFrame:
    """Insertion and deletion AUC of :data:`MODEL_METHODS` on every sample (use test samples).

    One row per image x method: image, method, alpha, insertion_auc, deletion_auc. Grad-CAM is the
    hybrid at a = 1, LayerCAM at a = 0, so one pass per batch scores all four.
    """
    alphas = dict(zip(MODEL_METHODS, (1.0, 0.0, THESIS_ALPHA, float(val_alpha)), strict=True))
    plan = sweep_plan(sorted(set(alphas.values())), with_max=False)
    images = torch.stack([s.tensor for s in samples])
    table = sweep(bundle, images, explained_classes(bundle, samples), metric, plan, batch_size, progress,
                  tie_seeds=[image_seed(s.file) for s in samples])
    files = [s.file for s in samples]
    parts = [table[table["alpha"] == a].assign(method=m, image=lambda t: [files[i] for i in t["image"]])
             for m, a in alphas.items()]
    return (pd.concat(parts, ignore_index=True)
            .rename(columns={"insertion": "insertion_auc", "deletion": "deletion_auc"})
            [["image", "method", "alpha", "insertion_auc", "deletion_auc"]])


def run_model(name: str, n_val: int, n_test: int, metric: Metric, seed: int = SEED, batch_size: int = 4,
              progress: bool = True, **load_kwargs) -> tuple[dict, pd.DataFrame]:
    """One model of the study, loaded by name: ``(alpha choice, rows)``.

    The validation and test photos are the first ``n_val`` / ``n_test`` of the seeded orders that
    :func:`helpers.data.images.seeded_subset` gives every model (the same files for every model).
    The model is released before returning.
    """
    bundle = load_model(name, **load_kwargs)
    _, val_all = study_samples(bundle, "val")
    _, test_all = study_samples(bundle, "test")
    choice = choose_model_alpha(bundle, seeded_subset(val_all, n_val, seed), metric, batch_size=batch_size,
                                progress=progress)
    rows = model_rows(bundle, seeded_subset(test_all, n_test, seed), metric, choice["alpha"], batch_size, progress)
    del bundle, val_all, test_all
    gc.collect()
    return choice, rows.assign(model=name)


def rows_from_evaluation(results: pd.DataFrame, files: Sequence[str], model: str) -> pd.DataFrame:
    """:func:`model_rows`' table taken from an evaluation's results (:func:`helpers.evaluation.runner.evaluate`,
    labels ``gradcam``, ``layercam``, ``hybrid@0.7``, ``hybrid@val``) on ``files``: no second run of that model."""
    picked = results[results["image"].isin(list(files)) & results["method"].isin(MODEL_METHODS)]
    return picked[["image", "method", "insertion_auc", "deletion_auc"]].assign(model=model).reset_index(drop=True)


def model_pairs(rows: pd.DataFrame, metrics: Sequence[str]) -> list[tuple[str, str]]:
    """:data:`MODEL_PAIRS` that one model's rows can test: both methods present, neither equal to another
    method on every image (:func:`helpers.evaluation.policy.aliases`: hybrid@val is hybrid@0.7 when the
    model's alpha is 0.7, Grad-CAM when it is 1), so no comparison is made twice or of a method with itself."""
    dropped = set(aliases(rows, metrics))
    return [p for p in MODEL_PAIRS if set(p) <= set(rows["method"]) and not set(p) & dropped]


def model_tests(rows: pd.DataFrame, metrics: Sequence[str] = ("insertion_auc", "deletion_auc")) -> pd.DataFrame:
    """Per model (column ``model``): the paired tests of :func:`model_pairs` on ``metrics``
    (:func:`helpers.evaluation.stats.comparison_table`; an exploratory family per model)."""
    tables = [comparison_table(g, metrics, model_pairs(g, metrics)).assign(model=m)
              for m, g in rows.groupby("model", sort=False)]
    table = pd.concat(tables, ignore_index=True)
    return table[["model", *[c for c in table.columns if c != "model"]]]


def model_table(tests: pd.DataFrame, choices: dict[str, dict], metric: str = "insertion_auc") -> pd.DataFrame:
    """One line per model and comparison: the model's chosen alpha, n, the mean difference [95% BCa CI],
    the paired t-test's p (Holm within the model) and the smallest difference detectable with 80% power."""
    t = tests[(tests["metric"] == metric) & (tests["test"] == "paired t-test")]
    return pd.DataFrame([{"model": r.model, "alpha (val)": f"{choices[r.model]['alpha']:g}", "comparison": r.pair,
                          "n": int(r.n),
                          "mean diff [95% CI]": f"{r.mean_diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]",
                          "p (Holm)": f"{r.p_holm:.2g}", "detectable (80%)": f"{r.detectable_diff_80:.4f}"}
                         for r in t.itertuples()])
