"""The project's maps as Quantus' inputs, so any of Quantus' metrics runs on them.

Quantus (Hedström et al. 2023, ``quantus.<Metric>()(model=..., x_batch=..., y_batch=..., a_batch=...,
s_batch=..., device=...)``) takes NumPy batches, channels first:

* ``x_batch`` (N, C, H, W) float32: the images as the model takes them (preprocessed);
* ``y_batch`` (N,) int64: the explained classes;
* ``a_batch`` (N, 1, H, W) float32: the maps, scaled to [0, 1] as every map of the package;
* ``s_batch`` (N, 1, H, W) float32 0/1: the pixels inside the boxes of each image's explained class,
  given only when every image has such a box (Quantus' localisation metrics need one per image).

Use ``model=bundle.model`` (it takes the preprocessed images) and ``explain_func`` only for Quantus'
metrics that re-explain (robustness, randomisation): pass one of your own or Quantus' built-ins.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...cam.bundle import ModelBundle
from ...cam.engine import Method, compute_cams
from ...cam.inference import predict_topk
from ...data.map_sources import MapSource, check_source, source_maps
from .localisation import box_mask

#: Which class is explained: the model's top-1 prediction or the image's label.
QUANTUS_TARGETS = ("top1", "label")


def _maps(bundle: ModelBundle, samples: Sequence[Any], method: Method | MapSource, target: str,
          ) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([s.tensor for s in samples])
    labels = torch.tensor([int(s.label_idx) for s in samples])
    if isinstance(method, MapSource):
        classes = labels if target == "label" else \
            torch.tensor([top[0][0] for top in predict_topk(bundle, images, k=1)])
        return source_maps(method, [s.file for s in samples], images, classes), classes
    cams = compute_cams(bundle, images, method, target=labels if target == "label" else None)
    return next(iter(cams.values())), cams.class_idx


def to_quantus(bundle: ModelBundle, samples: Sequence[Any], method: Method | MapSource = "gradcam",
               target: str = "top1", batch_size: int = 16) -> dict[str, np.ndarray]:
    """``x_batch``, ``y_batch``, ``a_batch`` (and ``s_batch`` where every image has a box of its class) of
    ``samples`` (:func:`helpers.data.images.load_samples`) explained by ``method`` (a registered method, an
    option object or a :class:`~helpers.data.map_sources.MapSource`), in batches of ``batch_size``."""
    if target not in QUANTUS_TARGETS:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(QUANTUS_TARGETS)}")
    if not samples:
        raise ValueError("to_quantus: no samples")
    if isinstance(method, MapSource):
        check_source(method, [s.file for s in samples])
    maps, classes = [], []
    for start in range(0, len(samples), batch_size):
        m, c = _maps(bundle, samples[start:start + batch_size], method, target)
        maps.append(m)
        classes.append(c)
    a = torch.cat(maps)
    y = torch.cat(classes)
    out = {"x_batch": torch.stack([s.tensor for s in samples]).numpy().astype(np.float32),
           "y_batch": y.numpy().astype(np.int64), "a_batch": a[:, None].numpy().astype(np.float32)}
    boxes = [[b for c, b in s.boxes_crop if c == int(k)] for s, k in zip(samples, y.tolist(), strict=True)]
    if all(boxes):
        size = tuple(a.shape[-2:])
        out["s_batch"] = torch.stack([box_mask(size, b) for b in boxes])[:, None].numpy().astype(np.float32)
    return out
