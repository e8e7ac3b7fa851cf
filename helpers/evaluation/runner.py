"""Evaluate CAM methods image by image: faithfulness, localisation and time, cached and resumable.

A method is a :class:`MethodSpec` -- a label, a registered CAM method (or a sanity floor,
``"random"`` / ``"gaussian"``) and its options, e.g. ``("hybrid@0.7", "hybrid", {"alpha": 0.7})``.
:func:`evaluate` runs every method on every sample and returns one row per image x method.
Each image's results go to a JSON file in the cache folder as soon as they exist, keyed by the
image, the methods, the settings and the model, so an interrupted run resumes where it stopped
(:mod:`helpers.evaluation.cache`: atomic entries, bad ones recomputed, concurrent runs safe);
an image that fails is reported and skipped, the others are kept.

Timing (:data:`helpers.timing.interleaved_medians`) is kept apart from the metrics (its own
table and CSV): it is the only part that changes between runs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import metrics as M
from ..cam.checks import check_images
from ..cam.engine import METHODS, compute_cams, method_inputs
from ..config import RESULTS_DIR, SEED
from .alpha import read_alpha_json
from .cache import cached
from ..cam.models import ModelBundle
from .timing import interleaved_medians

FLOORS: tuple[str, ...] = ("random", "gaussian")
THESIS_ALPHA = 0.7
#: Metric columns of the results table (higher is better except deletion AUCs, average drop, complexity).
METRICS: tuple[str, ...] = ("insertion_auc", "deletion_auc", "insertion_auc_thesis", "deletion_auc_thesis",
                            "average_drop", "increase_in_confidence", "coherency", "complexity", "adcc",
                            "pointing_game", "energy_pointing_game", "box_iou")
LOWER_IS_BETTER: frozenset[str] = frozenset({"deletion_auc", "deletion_auc_thesis", "average_drop", "complexity"})


@dataclass(frozen=True)
class MethodSpec:
    """A method to evaluate: ``label`` (its name in the tables), ``method`` and its ``options``."""

    label: str
    method: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


def as_spec(item: str | tuple | MethodSpec) -> MethodSpec:
    """``"gradcam"`` or ``("hybrid@0.7", "hybrid", {"alpha": 0.7})`` -> :class:`MethodSpec` (checked)."""
    if isinstance(item, MethodSpec):
        spec = item
    elif isinstance(item, str):
        spec = MethodSpec(item, item)
    else:
        label, method, *rest = item
        spec = MethodSpec(label, method, tuple(sorted((rest[0] if rest else {}).items())))
    if spec.method not in METHODS and spec.method not in FLOORS:
        raise ValueError(f"unknown method {spec.method!r} for {spec.label!r}; valid: "
                         f"{', '.join([*METHODS, *FLOORS])}")
    return spec


def read_chosen_alpha(results_dir: str | Path = RESULTS_DIR) -> float:
    """The alpha notebook 4 chose on the validation split (``hybrid_alpha.json``)."""
    return float(read_alpha_json(Path(results_dir) / "hybrid_alpha.json")["alpha"])


#: The thesis' methods and the floors: evaluated on every image even when other methods are not.
CORE_LABELS: tuple[str, ...] = ("gradcam", "layercam", "hybrid@val", f"hybrid@{THESIS_ALPHA}", *FLOORS)


def default_specs(alpha: float) -> list[MethodSpec]:
    """Grad-CAM, LayerCAM, the hybrid at the chosen ``alpha`` and at 0.7, every other registered
    method (as registered now), then the random and Gaussian floors."""
    first = [MethodSpec("gradcam", "gradcam"), MethodSpec("layercam", "layercam"),
             as_spec(("hybrid@val", "hybrid", {"alpha": alpha})),
             as_spec((f"hybrid@{THESIS_ALPHA}", "hybrid", {"alpha": THESIS_ALPHA}))]
    others = [MethodSpec(m, m) for m in METHODS if m not in ("gradcam", "layercam", "hybrid")]
    return first + others + [MethodSpec(f, f) for f in FLOORS]


@dataclass(frozen=True)
class EvalConfig:
    """Settings of an evaluation run (all of them key the cache)."""

    rise_steps: int = M.PRESETS["rise"]["steps"]
    thesis_steps: int = M.PRESETS["thesis"]["steps"]
    chunk_size: int = 32
    tolerance: float = 15.0
    iou_threshold: float = 0.2
    timing_repeats: int = 3
    timing_warmup: int = 1
    cam_options: tuple[tuple[str, Any], ...] = ()


def image_seed(file: str) -> int:
    """A per-image seed for the random floor, from the file name (independent of order and resumes)."""
    return SEED + int(hashlib.sha256(file.encode()).hexdigest()[:8], 16)


def explain(bundle: ModelBundle, images: torch.Tensor, class_idx: torch.Tensor, spec: MethodSpec, seed: int,
            cam_options: dict[str, Any]) -> torch.Tensor:
    """Maps (N, H, W) in [0, 1] of ``spec`` for the images' classes."""
    size = tuple(images.shape[-2:])
    if spec.method == "random":
        return M.random_maps(len(images), size, seed)
    if spec.method == "gaussian":
        return M.gaussian_maps(len(images), size)
    maps = compute_cams(bundle, images, (spec.method,), class_idx=class_idx, **(cam_options | spec.kwargs))
    return maps[spec.method].cpu()


def thesis_aucs(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: torch.Tensor,
                cfg: EvalConfig, rise_deletion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Insertion/deletion AUC under the thesis' protocol. Its deletion curve is every r-th point of the
    rise deletion curve when both use the same substrate and rise_steps = r * thesis_steps (the
    same inputs), so it is not run twice."""
    cfg_t = M.PRESETS["thesis"]
    out = {"insertion": M.auc(M.insertion_deletion_curves(bundle, images, maps, class_idx, "insertion",
                                                          cfg.thesis_steps, cfg_t["insertion_substrate"],
                                                          cfg.chunk_size))}
    if cfg.rise_steps % cfg.thesis_steps == 0 and cfg_t["deletion_substrate"] == M.PRESETS["rise"]["deletion_substrate"]:
        out["deletion"] = M.auc(rise_deletion[:, ::cfg.rise_steps // cfg.thesis_steps])
    else:
        out["deletion"] = M.auc(M.insertion_deletion_curves(bundle, images, maps, class_idx, "deletion",
                                                           cfg.thesis_steps, cfg_t["deletion_substrate"],
                                                           cfg.chunk_size))
    return out


#: Engine inputs that cost nothing beyond the one forward/backward of a pass.
ONE_PASS_INPUTS = frozenset({"acts", "grads", "classes", "head_weight"})


def one_pass(spec: MethodSpec) -> bool:
    """Whether a CAM method needs nothing beyond the pass itself (no extra forwards, e.g. not Score-CAM)."""
    return spec.method in METHODS and set(method_inputs(METHODS[spec.method])) <= ONE_PASS_INPUTS


def explain_rows(bundle: ModelBundle, images: torch.Tensor, class_idx: torch.Tensor, specs: Sequence[MethodSpec],
                 seed: int, cam_options: dict[str, Any]) -> torch.Tensor:
    """Row i explained by method i: (M, H, W) for M images and M specs (e.g. each method's masked image).

    One-pass methods with equal options share ONE compute_cams call on all rows (row i keeps
    method i's map); the others (floors, Score-CAM, Recipro-CAM) run on their own row only.
    """
    out: list[torch.Tensor | None] = [None] * len(specs)
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        if one_pass(s):
            groups.setdefault(s.options, []).append(i)
        else:
            out[i] = explain(bundle, images[i:i + 1], class_idx[i:i + 1], s, seed, cam_options)
    for options, rows in groups.items():
        methods = tuple(dict.fromkeys(specs[i].method for i in rows))
        maps = compute_cams(bundle, images[rows], methods, class_idx=class_idx[rows], **(cam_options | dict(options)))
        for j, i in enumerate(rows):
            out[i] = maps[specs[i].method][j:j + 1].cpu()
    return torch.cat(out)


def evaluate_sample(bundle: ModelBundle, sample: Any, specs: Sequence[MethodSpec], cfg: EvalConfig,
                    timed: bool = True) -> dict:
    """Every metric (and the time) of every method on one sample; JSON-ready.

    Returns ``{"rows": [...], "curves": {label: {"insertion": [...], "deletion": [...]}},
    "timings": {label: ms}}``. The methods' maps are stacked so all their insertion/deletion
    steps share chunked forwards.
    """
    x, seed, opts = sample.tensor[None], image_seed(sample.file), dict(cfg.cam_options)
    idx = torch.tensor([sample.label_idx])
    xs, idxs = x.expand(len(specs), -1, -1, -1), idx.expand(len(specs))
    maps = explain_rows(bundle, xs, idxs, specs, seed, opts)
    curves = M.insertion_deletion(bundle, xs, maps, idxs, "rise", steps=cfg.rise_steps, chunk_size=cfg.chunk_size)
    thesis = thesis_aucs(bundle, xs, maps, idxs, cfg, curves["deletion"])
    change = M.confidence_change(bundle, xs, maps, idxs, cfg.chunk_size)
    adcc = M.adcc(bundle, xs, maps, idxs, change=change,
                  explain=lambda images, classes: explain_rows(bundle, images, classes, specs, seed, opts))
    boxes = [[b for c, b in sample.boxes_crop if c == sample.label_idx]] * len(specs)
    columns = {"insertion_auc": M.auc(curves["insertion"]), "deletion_auc": M.auc(curves["deletion"]),
               "insertion_auc_thesis": thesis["insertion"], "deletion_auc_thesis": thesis["deletion"],
               "average_drop": change["average_drop"], "increase_in_confidence": change["increase_in_confidence"],
               "coherency": adcc["coherency"], "complexity": adcc["complexity"], "adcc": adcc["adcc"],
               "pointing_game": M.pointing_game(maps, boxes, cfg.tolerance),
               "energy_pointing_game": M.energy_pointing_game(maps, boxes),
               "box_iou": M.box_iou(maps, boxes, cfg.iou_threshold), "prob_full": change["prob_full"]}
    rows = [{"image": sample.file, "method": s.label, "kind": sample.kind, "source": sample.source,
             "label_idx": sample.label_idx, **{k: float(v[i]) for k, v in columns.items()}}
            for i, s in enumerate(specs)]
    timings = {}
    if timed:
        fns = {s.label: (lambda s=s: explain(bundle, x, idx, s, seed, opts)) for s in specs}
        medians = interleaved_medians(fns, cfg.timing_repeats, cfg.timing_warmup, bundle.device)
        timings = {label: 1000 * sec for label, sec in medians.items()}
    return {"rows": rows, "timings": timings,
            "curves": {s.label: {m: curves[m][i].tolist() for m in M.MODES} for i, s in enumerate(specs)}}


def cache_key(bundle: ModelBundle, sample: Any, specs: Sequence[MethodSpec], cfg: EvalConfig, timed: bool) -> str:
    """Hash of everything an image's results depend on: model, image content, label, methods, settings."""
    content = hashlib.sha256(sample.tensor.contiguous().numpy().tobytes()).hexdigest()
    facts = {"model": bundle.name, "weights": bundle.weights_source, "file": sample.file, "content": content,
             "label": sample.label_idx, "boxes": sample.boxes_crop, "specs": [dataclasses.astuple(s) for s in specs],
             "config": dataclasses.asdict(cfg), "timed": timed}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Evaluation:
    """What :func:`evaluate` returns: metrics, timings, mean-able curves and the failures."""

    results: pd.DataFrame
    timings: pd.DataFrame
    curves: dict[str, dict[str, np.ndarray]]
    failures: list[tuple[str, str]] = field(default_factory=list)
    methods: list[MethodSpec] = field(default_factory=list)


def evaluate(bundle: ModelBundle, samples: Sequence[Any], specs: Iterable[str | tuple | MethodSpec],
             cfg: EvalConfig = EvalConfig(), cache_dir: str | Path | None = RESULTS_DIR / ".cache",
             progress: bool = True, time_first: int | None = None) -> Evaluation:
    """Evaluate every method on every sample (:func:`evaluate_sample`), cached per image.

    ``cache_dir=None`` disables the cache. ``time_first`` times only the first that many images
    (None: all). A failing image is reported on stderr and skipped.
    """
    for sample in samples:
        check_images(sample.tensor[None], bundle, what=f"image {sample.file}")
    specs = [as_spec(s) for s in specs]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"method labels must be unique, got {labels}")
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    done, failures = [], []
    for i, sample in enumerate(tqdm(samples, desc="evaluating images", disable=not progress)):
        timed = time_first is None or i < time_first
        compute = partial(evaluate_sample, bundle, sample, specs, cfg, timed)
        try:
            result = compute() if cache is None else \
                cached(cache, cache_key(bundle, sample, specs, cfg, timed), sample.file, compute)
        except Exception as err:  # one bad image must not stop the others
            failures.append((sample.file, f"{type(err).__name__}: {err}"))
            print(f"evaluate: skipped {sample.file}: {type(err).__name__}: {err}\n"
                  + "".join(traceback.format_exception(err)[-3:]), file=sys.stderr)
            continue
        done.append(result)
    return collect(done, specs, failures)


def collect(done: list[dict], specs: Sequence[MethodSpec], failures: list[tuple[str, str]]) -> Evaluation:
    """Per-image results -> the tables: results (image x method), timings, stacked curves."""
    results = pd.DataFrame([row for r in done for row in r["rows"]])
    timings = pd.DataFrame([{"image": r["rows"][0]["image"], "method": label, "ms_per_image": ms}
                            for r in done for label, ms in r["timings"].items()],
                           columns=["image", "method", "ms_per_image"])
    curves = {s.label: {m: np.array([r["curves"][s.label][m] for r in done]) for m in M.MODES} for s in specs}
    return Evaluation(results, timings, curves, failures, list(specs))


def merge(*evaluations: Evaluation) -> Evaluation:
    """One evaluation from several with disjoint methods (e.g. extra methods run on fewer images).

    Statistics pair methods on the images both have, so methods may differ in n.
    """
    methods = [s for ev in evaluations for s in ev.methods]
    labels = [s.label for s in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"evaluations to merge must have disjoint method labels, got {labels}")
    return Evaluation(pd.concat([ev.results for ev in evaluations], ignore_index=True),
                      pd.concat([ev.timings for ev in evaluations], ignore_index=True),
                      {k: v for ev in evaluations for k, v in ev.curves.items()},
                      [f for ev in evaluations for f in ev.failures], methods)
