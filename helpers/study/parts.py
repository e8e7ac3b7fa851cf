"""What each kind of study part computes on one batch of photos: rows of a long table.

Every runner takes ``(part, spec, bundle, samples, alpha)`` and returns a DataFrame with at least
the columns ``image``, ``model``, ``layer``, ``method``, ``class_idx`` (the explained class: the
model's top-1 prediction, as everywhere in the study) and ``pred_idx``, plus its metrics. The
runners only call the evaluation's own functions, so a study row is exactly what notebooks 4-5
compute for the same photo.

Options per kind (``Part.options``):

* ``alpha_sweep``: ``settings`` (layer names, ``"target"`` for the model's CAM layer, or tuples of
  layers fused shallow to deep), ``alphas``, ``additive`` (alphas of the additive fusion), ``with_max``,
  ``modes`` (``insertion`` and/or ``deletion``; an absent mode is NaN). Rows: one per image x setting
  x (fusion, alpha).
* ``evaluate``: ``methods`` ((label, method, options) with the option value ``"val"`` for the chosen
  alpha). Rows: :func:`helpers.evaluation.runner.evaluate_sample`'s, plus the rise curves.
* ``layers``: ``settings``. Rows: Grad-CAM, LayerCAM and the hybrid (at the setting's chosen alpha).
* ``model``: Grad-CAM, LayerCAM, hybrid@0.7 and hybrid@val at the model's CAM layer.
* ``road``: ``methods`` as ``evaluate``; ROAD of each method's map (one row per photo x method).
* ``features``: the adaptive-a predictor's features of each photo (no options).
* ``sanity``: ``methods`` (``hybrid``: at the chosen alpha; ``hybrid@A``: at a fixed A), ``steps`` (the first
  steps of the cascade; default all); cascading randomisation,
  one row per image x step x method.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch

from ..cam.bundle import ModelBundle
from ..cam.options import Hybrid
from ..cam.registry import plan
from ..config import SEED
from ..evaluation import metrics as M
from ..evaluation.adaptive import map_features
from ..evaluation.alpha_sweep import sweep, sweep_plan
from ..evaluation.layer_study import layer_table, sweep_layers
from ..evaluation.model_study import model_rows
from ..evaluation.road_runner import road_rows
from ..evaluation.runner import EvalConfig, MethodSpec, evaluate_sample, explained_class, image_seed, top1
from ..evaluation.sanity import cascade_order, cascading_randomisation
from .spec import Part, StudySpec, fixed_hybrid_alpha

Alpha = float | Mapping[str, float] | None
Runner = Callable[[Part, StudySpec, ModelBundle, Sequence[Any], Alpha], pd.DataFrame]
#: An evaluate part's column of each method's median time per image, in ms (option ``timed``).
TIME_COLUMN = "ms_per_image"


def setting_label(setting: str | Sequence[str]) -> str:
    """A layer setting's name in the rows: the layer, or the fused layers joined by ``+``."""
    return setting if isinstance(setting, str) else "+".join(setting)


def resolve_setting(setting: str | Sequence[str], bundle: ModelBundle) -> str | tuple[str, ...]:
    """``"target"`` -> the model's CAM layer; other names and tuples unchanged."""
    if isinstance(setting, str):
        return bundle.target_layer if setting == "target" else setting
    return tuple(setting)


def rise_aucs(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: Any,
              tie_seed: Any = SEED, steps: int = M.PRESETS["rise"]["steps"],
              modes: Sequence[str] = M.MODES) -> dict[str, torch.Tensor]:
    """Rise-preset insertion/deletion AUCs of the given ``modes`` only (the others NaN): the same numbers
    as :func:`helpers.evaluation.metrics.insertion_deletion_auc` for the modes computed."""
    cfg = M.PRESETS["rise"]
    out = {mode: torch.full((len(maps),), float("nan")) for mode in M.MODES}
    for mode in modes:
        out[mode] = M.auc(M.insertion_deletion_curves(bundle, images, maps, class_idx, mode, steps,
                                                      cfg[f"{mode}_substrate"], cfg["chunk_size"], tie_seed))
    return out


def _frame(rows: pd.DataFrame, part: Part, bundle: ModelBundle, classes: Mapping[str, int],
           preds: Mapping[str, int]) -> pd.DataFrame:
    """Add the columns every part has (model, explained and predicted class)."""
    return rows.assign(model=bundle.name, class_idx=rows["image"].map(classes).astype("int64"),
                       pred_idx=rows["image"].map(preds).astype("int64"))


def run_alpha_sweep(part: Part, spec: StudySpec, bundle: ModelBundle, samples: Sequence[Any],
                    alpha: Alpha = None) -> pd.DataFrame:
    """Every (fusion, alpha) of the part's plan at every setting, scored by the rise preset's AUCs."""
    o = part.opts
    images = torch.stack([s.tensor for s in samples])
    files = [s.file for s in samples]
    classes = top1(bundle, images)
    metric = partial(rise_aucs, steps=spec.rise_steps, modes=tuple(o.get("modes", M.MODES)))
    tables = []
    for setting in o["settings"]:
        layer = resolve_setting(setting, bundle)
        if isinstance(layer, str):
            plan = sweep_plan(o["alphas"], o.get("additive", ()), o.get("with_max", False))
            t = sweep(bundle, images, classes, metric, plan, len(samples), progress=False, layer=layer,
                      tie_seeds=[image_seed(f) for f in files])
            t = t.assign(image=[files[i] for i in t["image"]])
        else:
            t = sweep_layers(bundle, samples, metric, {setting_label(layer): layer}, o["alphas"], len(samples),
                             progress=False).drop(columns="layer")
        tables.append(t.assign(layer=setting_label(layer), method="hybrid"))
    rows = pd.concat(tables, ignore_index=True).rename(columns={"insertion": "insertion_auc",
                                                                "deletion": "deletion_auc"})
    mapping = dict(zip(files, classes, strict=True))
    return _frame(rows, part, bundle, mapping, mapping)


def main_specs(part: Part, alpha: Alpha) -> list[MethodSpec]:
    """The evaluate part's methods, with ``"val"`` replaced by the chosen alpha."""
    return [MethodSpec(label, method, tuple((k, float(alpha) if v == "val" else v) for k, v in options))
            for label, method, options in part.opts["methods"]]


def run_evaluate(part: Part, spec: StudySpec, bundle: ModelBundle, samples: Sequence[Any],
                 alpha: Alpha = None) -> pd.DataFrame:
    """Every metric of every method (both presets), one photo at a time, with the rise curves; with the option
    ``timed``, each method's median time per image too (``ms_per_image``, the only run-dependent column)."""
    cfg = EvalConfig(rise_steps=spec.rise_steps, thesis_steps=spec.thesis_steps)
    specs = main_specs(part, alpha)
    timed = bool(part.opts.get("timed", False))
    tables = []
    for sample in samples:
        result = evaluate_sample(bundle, sample, specs, cfg, timed=timed)
        rows = pd.DataFrame(result["rows"])
        for mode in M.MODES:
            rows[f"{mode}_curve"] = [result["curves"][s.label][mode] for s in specs]
        if timed:
            rows[TIME_COLUMN] = [result["timings"][s.label] for s in specs]
        tables.append(rows.assign(model=bundle.name, layer=bundle.target_layer))
    return pd.concat(tables, ignore_index=True)


def _rise_metric(spec: StudySpec) -> Callable:
    return partial(M.insertion_deletion_auc, preset="rise", steps=spec.rise_steps)


def _classes(bundle: ModelBundle, samples: Sequence[Any]) -> dict[str, int]:
    return dict(zip([s.file for s in samples], top1(bundle, torch.stack([s.tensor for s in samples])), strict=True))


def run_layers(part: Part, spec: StudySpec, bundle: ModelBundle, samples: Sequence[Any],
               alpha: Alpha = None) -> pd.DataFrame:
    """Grad-CAM, LayerCAM and the hybrid at each layer setting (the setting's chosen alpha)."""
    settings = {setting_label(s): resolve_setting(s, bundle) for s in part.opts["settings"]}
    rows = layer_table(bundle, list(samples), _rise_metric(spec), dict(alpha), settings, len(samples), progress=False)
    classes = _classes(bundle, samples)
    return _frame(rows, part, bundle, classes, classes)


def run_model(part: Part, spec: StudySpec, bundle: ModelBundle, samples: Sequence[Any],
              alpha: Alpha = None) -> pd.DataFrame:
    """Grad-CAM, LayerCAM, hybrid@0.7 and hybrid@val of another model at its CAM layer."""
    rows = model_rows(bundle, list(samples), _rise_metric(spec), float(alpha), len(samples), progress=False)
    classes = _classes(bundle, samples)
    return _frame(rows.assign(layer=bundle.target_layer), part, bundle, classes, classes)


def run_sanity(part: Part, spec: StudySpec, bundle: ModelBundle, samples: Sequence[Any],
               alpha: Alpha = None) -> pd.DataFrame:
    """Cascading model randomisation: Spearman correlation of each step's maps with the trained maps; the rows'
    ``method`` is the part's name for it (``hybrid``: at the chosen alpha; ``hybrid@A``: at the fixed A)."""
    images = torch.stack([s.tensor for s in samples])
    classes = top1(bundle, images)
    steps = part.opts.get("steps")
    labels = part.opts["methods"]
    fixed = {m: fixed_hybrid_alpha(m) for m in labels}
    methods = [Hybrid(alpha=float(alpha)) if m == "hybrid" else m if fixed[m] is None else Hybrid(alpha=fixed[m])
               for m in labels]
    rows = cascading_randomisation(bundle, images, classes, methods, progress=False,
                                   steps=None if steps is None else cascade_order(bundle)[:steps])
    names = dict(zip((step.key for step in plan(methods)), labels, strict=True))   # the engine's keys -> labels
    files = [s.file for s in samples]
    rows = rows.rename(columns={"layer": "randomised"}).assign(image=lambda t: [files[i] for i in t["image"]],
                                                               layer=bundle.target_layer,
                                                               method=lambda t: t["method"].map(names))
    mapping = dict(zip(files, classes, strict=True))
    return _frame(rows, part, bundle, mapping, mapping)


def run_features(part: Part, spec: StudySpec, bundle: ModelBundle, samples: Sequence[Any],
                 alpha: Alpha = None) -> pd.DataFrame:
    """The adaptive-a predictor's features of each photo (:func:`helpers.evaluation.adaptive.map_features`):
    computed from the maps and the forward only, never from a metric."""
    images = torch.stack([s.tensor for s in samples])
    classes = top1(bundle, images)
    rows = map_features(bundle, images, classes).assign(image=[s.file for s in samples], method="features",
                                                         layer=bundle.target_layer)
    mapping = dict(zip(rows["image"], classes, strict=True))
    return _frame(rows, part, bundle, mapping, mapping)


def run_road(part: Part, spec: StudySpec, bundle: ModelBundle, samples: Sequence[Any],
             alpha: Alpha = None) -> pd.DataFrame:
    """ROAD (MoRF, LeRF, combined, and every percentage) of every method's map, one photo at a time: the maps
    are the evaluate part's (same methods, seeds and scaling), the rows
    :func:`helpers.evaluation.road_runner.road_rows`'s (the command line's ``--metrics road``)."""
    specs = main_specs(part, alpha)
    cfg = EvalConfig(rise_steps=spec.rise_steps, thesis_steps=spec.thesis_steps)
    rows = []
    for sample in samples:
        cls, pred = explained_class(bundle, sample, "top1")
        rows += [{**row, "class_idx": cls, "pred_idx": pred} for row in road_rows(bundle, sample, specs, cfg, cls)]
    return pd.DataFrame(rows).assign(model=bundle.name, layer=bundle.target_layer)


RUNNERS: dict[str, Runner] = {"road": run_road, "alpha_sweep": run_alpha_sweep, "evaluate": run_evaluate,
                              "layers": run_layers, "model": run_model, "sanity": run_sanity, "features": run_features}
