"""ROAD of every method's map on one sample (the study's ``road`` parts, ``evaluate --metrics road``).

:func:`road_rows` gives the scores of :func:`helpers.evaluation.road.road_scores`: ``road_morf``,
``road_lerf``, ``road_combined`` and every percentage (``road_morf_10`` ... ``road_lerf_90``), on the
same maps the standard metrics use (the image's seed, the explained class of ``cfg.target``, the
scaling ``cfg.normalise``).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..cam.bundle import ModelBundle
from ..cam.maps import normalise
from .road import road_scores
from .runner import EvalConfig, MethodSpec, explain_rows, explained_class, image_seed

#: The metric families ``evaluate --metrics`` can add to the standard ones.
EXTRA_METRICS: tuple[str, ...] = ("road",)


def road_rows(bundle: ModelBundle, sample: Any, specs: Sequence[MethodSpec], cfg: EvalConfig,
              cls: int | None = None) -> list[dict]:
    """ROAD scores of every method on one sample: one JSON-ready row per method (``image``, ``method``, scores).
    ``cls`` is the class to explain when the caller has it (else ``cfg.target`` picks it, one forward)."""
    seed = image_seed(sample.file)
    cls = explained_class(bundle, sample, cfg.target)[0] if cls is None else cls
    xs, idxs = sample.tensor[None].expand(len(specs), -1, -1, -1), torch.tensor([cls]).expand(len(specs))
    maps = normalise(explain_rows(bundle, xs, idxs, specs, seed, dict(cfg.cam_options)), cfg.normalise)
    scores = road_scores(bundle, xs, maps, idxs, tie_seed=seed, chunk_size=cfg.chunk_size)
    return [{"image": sample.file, "method": s.label, **{k: float(v[i]) for k, v in scores.items()}}
            for i, s in enumerate(specs)]

