"""ROAD beside the standard metrics of an evaluation: ``python -m helpers evaluate ... --metrics road``.

:func:`with_metrics` adds the columns of the asked-for extra metric families to an
:class:`~helpers.evaluation.runner.Evaluation`'s rows (one per image x method). For ROAD these are
the scores of :func:`helpers.evaluation.road.road_scores`: ``road_morf``, ``road_lerf``,
``road_combined`` and every percentage (``road_morf_10`` ... ``road_lerf_90``), on the same maps
the standard metrics used (the image's seed, the explained class of ``cfg.target``, the scaling
``cfg.normalise``). Each image's scores are cached beside its standard entry, so a rerun resumes.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from ..cam.bundle import ModelBundle
from ..cam.maps import normalise
from ..config import progress_bar
from .cache import cached
from .road import road_scores
from .runner import EvalConfig, Evaluation, MethodSpec, cache_key, explain_rows, explained_class, image_seed

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


def with_metrics(ev: Evaluation, metrics: Sequence[str], bundle: ModelBundle, samples: Sequence[Any],
                 cache_dir: str | Path | None = None, progress: bool = True) -> Evaluation:
    """``ev`` with the columns of ``metrics`` (names of :data:`EXTRA_METRICS`) joined to its rows.

    Runs on the images ``ev`` has rows for, with its methods and config; ``cache_dir`` (None: no
    cache) holds one entry per image, keyed like the standard entry plus the metric's name.
    """
    unknown = set(metrics) - set(EXTRA_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; valid: {', '.join(EXTRA_METRICS)}")
    if "road" not in metrics or ev.results.empty:
        return ev
    cfg = ev.config or EvalConfig()
    done = set(ev.results["image"])
    rows = []
    for sample in progress_bar([s for s in samples if s.file in done], desc="ROAD", disable=not progress):
        def compute(sample: Any = sample) -> dict:
            return {"rows": road_rows(bundle, sample, ev.methods, cfg)}
        if cache_dir is None:
            rows += compute()["rows"]
            continue
        key = hashlib.sha256(f"{cache_key(bundle, sample, ev.methods, cfg, False)}/road".encode()).hexdigest()[:16]
        rows += cached(cache_dir, key, sample.file, compute, parts=("rows",))["rows"]
    results = ev.results.merge(pd.DataFrame(rows), on=["image", "method"], how="left", validate="one_to_one")
    return dataclasses.replace(ev, results=results)
