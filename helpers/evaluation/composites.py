"""Localisation on the composites: pointing game, energy pointing game and box IoU of each method's map.

The composites (notebook 1) paste an object at a known place, so their boxes are exact. Each map
explains the composite's LABEL (the pasted object's class), as the pointing game is defined (Zhang et
al.: the map of each category present in the image). The numbers are those of
:func:`helpers.evaluation.runner.evaluate_sample`'s localisation columns (same maps, same scaling,
same functions, the same tie seed per image) without its perturbation curves, which localisation
does not need: one CAM pass per image instead of hundreds of forwards.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd
import torch

from ..cam.bundle import ModelBundle
from ..cam.maps import normalise
from ..config import progress_bar
from . import metrics as M
from .runner import (
    LOCALISATION,
    SMALL_BOX_FRACTION,
    EvalConfig,
    MethodSpec,
    as_spec,
    crop_scale,
    explain_rows,
    explained_class,
    image_seed,
)
from .stats import summary_table

#: The composites' settings: the evaluation's defaults, explaining the label.
LABEL_TARGET = EvalConfig(target="label")


def localisation_rows(bundle: ModelBundle, samples: Sequence[Any], specs: Iterable[str | tuple | MethodSpec],
                      cfg: EvalConfig = LABEL_TARGET, progress: bool = True) -> pd.DataFrame:
    """One row per composite x method: image, method, source, label and explained class, and the four
    localisation metrics (NaN where the explained class has no box)."""
    specs = [as_spec(s) for s in specs]
    rows = []
    for sample in progress_bar(samples, desc="localisation", disable=not progress):
        seed, opts = image_seed(sample.file), dict(cfg.cam_options)
        cls, pred = explained_class(bundle, sample, cfg.target)
        xs = sample.tensor[None].expand(len(specs), -1, -1, -1)
        maps = normalise(explain_rows(bundle, xs, torch.tensor([cls]).expand(len(specs)), specs, seed, opts),
                         cfg.normalise)
        boxes = [[b for c, b in sample.boxes_crop if c == cls]] * len(specs)
        columns = {"pointing_game": M.pointing_game(maps, boxes, cfg.tolerance * crop_scale(sample), seed),
                   "energy_pointing_game": M.energy_pointing_game(maps, boxes),
                   "energy_pointing_game_small": M.energy_pointing_game(maps, boxes, SMALL_BOX_FRACTION),
                   "box_iou": M.box_iou(maps, boxes, cfg.iou_threshold)}
        rows += [{"image": sample.file, "method": s.label, "kind": sample.kind, "source": sample.source,
                  "label_idx": sample.label_idx, "class_idx": cls, "pred_idx": pred,
                  **{k: float(v[i]) for k, v in columns.items()}} for i, s in enumerate(specs)]
    return pd.DataFrame(rows)


def localisation_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """n, mean and CIs of the localisation metrics per method; the CIs resample source photos (a composite
    counts under the photo its object came from), and the mean of per-class means (Zhang et al.'s accuracy)."""
    photo = rows.assign(source_photo=rows["source"].astype(str).str.split("+").str[0])
    return summary_table(photo, LOCALISATION, cluster_col="source_photo", class_col="class_idx",
                         cluster_metrics=LOCALISATION)
