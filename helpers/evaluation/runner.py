"""Evaluate CAM methods image by image: faithfulness, localisation and time, cached and resumable.

A method is a :class:`MethodSpec` -- a label, a registered CAM method (or a sanity floor,
``"random"`` / ``"gaussian"``) and its options, e.g. ``("hybrid@0.7", "hybrid", {"alpha": 0.7})`` --
or maps from outside, a :class:`~helpers.data.map_sources.MapSource` (stored maps have no ADCC
coherency, which re-explains another image, and no time).
:func:`evaluate` runs every method on every sample and returns one row per image x method.
Each image's results go to a JSON file in the cache folder as soon as they exist, keyed by the
image, the methods, the settings and the model, so an interrupted run resumes where it stopped
(:mod:`helpers.evaluation.cache`: atomic entries, bad ones recomputed, concurrent runs safe);
an image that fails is reported and skipped, the others are kept.

Timing (:func:`helpers.evaluation.timing.interleaved_medians`), the only part that changes between runs,
has its own table and CSV.
"""
from __future__ import annotations

import dataclasses
import errno
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

from ..cam.bundle import ModelBundle
from ..cam.checks import check_images
from ..cam.engine import METHODS, compute_cams, method_inputs, method_options
from ..cam.inference import predict_topk
from ..cam.maps import NORMALISATIONS, normalise
from ..config import RESULTS_DIR, SEED, progress_bar
from ..data import map_sources as sources
from . import metrics as M
from .cache import cached
from .floors import FLOORS, floor_maps
from .policy import GC, HYBRID, HYBRID_VAL, LC, THESIS_ALPHA
from .timing import interleaved_medians

#: Errors of the disk itself (full, over quota, read-only): they stop a run instead of failing one image.
DISK_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
#: Metric columns of the results table (higher is better except deletion AUCs, average drop, complexity).
METRICS: tuple[str, ...] = ("insertion_auc", "deletion_auc", "insertion_auc_thesis", "deletion_auc_thesis",
                            "average_drop", "increase_in_confidence", "coherency", "complexity", "adcc",
                            "pointing_game", "energy_pointing_game", "energy_pointing_game_small", "box_iou")
#: Localisation metrics: their CIs resample source photos (:func:`stats.cluster_bootstrap_ci`).
LOCALISATION: tuple[str, ...] = ("pointing_game", "energy_pointing_game", "energy_pointing_game_small", "box_iou")
#: The energy pointing game restricted to boxes under this fraction of the image (as Score-CAM's paper).
SMALL_BOX_FRACTION = 0.5
LOWER_IS_BETTER: frozenset[str] = frozenset({"deletion_auc", "deletion_auc_thesis", "average_drop", "complexity",
                                            "road_morf"})


@dataclass(frozen=True)
class MethodSpec:
    """A method to evaluate: ``label`` (its name in the tables), ``method`` and its ``options``."""

    label: str
    method: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


def as_spec(item: str | tuple | MethodSpec | sources.MapSource) -> MethodSpec:
    """``"gradcam"``, ``("hybrid@0.7", "hybrid", {"alpha": 0.7})`` or a map source -> :class:`MethodSpec` (checked)."""
    if isinstance(item, sources.MapSource):
        if item.name in METHODS or item.name in FLOORS:
            raise ValueError(f"maps {item.name!r}: the name of a method; give the maps another name")
        return MethodSpec(item.name, sources.SOURCE, sources.method_options(item))
    if isinstance(item, MethodSpec):
        spec = item
    elif isinstance(item, str):
        spec = MethodSpec(item, item)
    else:
        label, method, *rest = item
        spec = MethodSpec(label, method, tuple(sorted((rest[0] if rest else {}).items())))
    if spec.method not in METHODS and spec.method not in FLOORS and not sources.is_source(spec):
        raise ValueError(f"unknown method {spec.method!r} for {spec.label!r}; valid: "
                         f"{', '.join([*METHODS, *FLOORS])}")
    return spec


def default_specs(alpha: float, methods: Sequence[str] | None = None) -> list[MethodSpec]:
    """Grad-CAM, LayerCAM, the hybrid at the chosen ``alpha`` and at 0.7, the other ``methods`` (default:
    every registered method, as registered now), then the random and Gaussian floors."""
    first = [MethodSpec(GC, "gradcam"), MethodSpec(LC, "layercam"), as_spec((HYBRID_VAL, "hybrid", {"alpha": alpha})),
             as_spec((HYBRID, "hybrid", {"alpha": THESIS_ALPHA}))]
    others = [MethodSpec(m, m) for m in (METHODS if methods is None else methods)
              if m not in ("gradcam", "layercam", "hybrid")]
    return first + others + [MethodSpec(f, f) for f in FLOORS]


#: Which class every metric explains: the model's top-1 prediction (as RISE's and the CAM papers'
#: evaluation code) or the image's label.
TARGETS: tuple[str, ...] = ("top1", "label")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of an evaluation run (all of them key the cache).

    ``target``: the class explained (:data:`TARGETS`); ``explanation_space``: where Average Drop /
    Increase in Confidence / ADCC multiply the map into the image (:data:`metrics.EXPLANATION_SPACES`);
    ``normalise``: the scaling of every map (:data:`helpers.cam.maps.NORMALISATIONS`; "max", the thesis'
    division by the maximum, by default).
    """

    rise_steps: int = M.PRESETS["rise"]["steps"]
    thesis_steps: int = M.PRESETS["thesis"]["steps"]
    chunk_size: int = 32
    tolerance: float = 15.0  # pointing game, in the original image's pixels (x sample.crop_scale in the crop)
    iou_threshold: float = 0.2
    timing_repeats: int = 3
    timing_warmup: int = 1
    cam_options: tuple[tuple[str, Any], ...] = ()
    target: str = "top1"
    explanation_space: str = "normalised"
    normalise: str = "max"

    def __post_init__(self) -> None:
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"unknown normalise {self.normalise!r}; valid: {', '.join(NORMALISATIONS)}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; valid: {', '.join(TARGETS)}")
        if self.explanation_space not in M.EXPLANATION_SPACES:
            raise ValueError(f"unknown explanation_space {self.explanation_space!r}; valid: "
                             f"{', '.join(M.EXPLANATION_SPACES)}")


def crop_scale(sample: Any) -> float:
    """Crop pixels per original pixel of ``sample`` (1 for samples that do not say)."""
    return float(getattr(sample, "crop_scale", 1.0))


def image_seed(file: str) -> int:
    """A per-image seed from the file name (independent of order and resumes): the random floor's
    map and the tie-breaking order of the pixel ranking (the same for every method on the image)."""
    return SEED + int(hashlib.sha256(file.encode()).hexdigest()[:8], 16)


def explain(bundle: ModelBundle, images: torch.Tensor, class_idx: torch.Tensor, spec: MethodSpec, seed: int,
            cam_options: dict[str, Any], files: Sequence[str] | None = None) -> torch.Tensor:
    """Maps (N, H, W) in [0, 1] of ``spec`` for the images' classes (``files``: the images' files, which maps
    from outside are looked up by; None for images that are no photo's own)."""
    size = tuple(images.shape[-2:])
    if spec.method in FLOORS:
        return floor_maps(spec.method, len(images), size, seed)
    if sources.is_source(spec):
        return sources.source_maps(sources.live(spec), files, images, class_idx)
    maps = compute_cams(bundle, images, method_options(spec.method, cam_options | spec.kwargs), target=class_idx)
    return maps[spec.method].cpu()


def thesis_aucs(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: torch.Tensor,
                cfg: EvalConfig, rise_deletion: torch.Tensor, tie_seed: int = SEED) -> dict[str, torch.Tensor]:
    """Insertion/deletion AUC under the thesis' protocol. Its deletion curve is every r-th point of the
    rise deletion curve when both use the same substrate and rise_steps = r * thesis_steps (the
    same inputs), so it is not run twice."""
    cfg_t = M.PRESETS["thesis"]
    out = {"insertion": M.auc(M.insertion_deletion_curves(bundle, images, maps, class_idx, "insertion",
                                                          cfg.thesis_steps, cfg_t["insertion_substrate"],
                                                          cfg.chunk_size, tie_seed))}
    if (cfg.rise_steps % cfg.thesis_steps == 0
            and cfg_t["deletion_substrate"] == M.PRESETS["rise"]["deletion_substrate"]):
        out["deletion"] = M.auc(rise_deletion[:, ::cfg.rise_steps // cfg.thesis_steps])
    else:
        out["deletion"] = M.auc(M.insertion_deletion_curves(bundle, images, maps, class_idx, "deletion",
                                                           cfg.thesis_steps, cfg_t["deletion_substrate"],
                                                           cfg.chunk_size, tie_seed))
    return out


#: Engine inputs that cost nothing beyond the one forward/backward of a pass.
ONE_PASS_INPUTS = frozenset({"acts", "grads", "classes", "head_weight"})


def one_pass(spec: MethodSpec) -> bool:
    """Whether a CAM method needs nothing beyond the pass itself (no extra forwards, e.g. not Score-CAM)."""
    return spec.method in METHODS and set(method_inputs(METHODS[spec.method])) <= ONE_PASS_INPUTS


def explain_rows(bundle: ModelBundle, images: torch.Tensor, class_idx: torch.Tensor, specs: Sequence[MethodSpec],
                 seed: int, cam_options: dict[str, Any], files: Sequence[str] | None = None) -> torch.Tensor:
    """Row i explained by method i: (M, H, W) for M images and M specs (e.g. each method's masked image);
    ``files`` as :func:`explain`'s, one per row.

    One-pass methods with equal options share ONE compute_cams call on all rows (row i keeps
    method i's map); the others (floors, Score-CAM, Recipro-CAM) run on their own row only.
    """
    out: list[torch.Tensor | None] = [None] * len(specs)
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        if one_pass(s):
            groups.setdefault(s.options, []).append(i)
        else:
            out[i] = explain(bundle, images[i:i + 1], class_idx[i:i + 1], s, seed, cam_options,
                             None if files is None else files[i:i + 1])
    for options, rows in groups.items():
        methods = tuple(dict.fromkeys(specs[i].method for i in rows))
        maps = compute_cams(bundle, images[rows], [method_options(m, cam_options | dict(options)) for m in methods],
                            target=class_idx[rows])
        for j, i in enumerate(rows):
            out[i] = maps[specs[i].method][j:j + 1].cpu()
    return torch.cat(out)


def top1(bundle: ModelBundle, images: torch.Tensor) -> list[int]:
    """The model's top-1 class of each image: the class every map of the study and the evaluation explains."""
    return [top[0][0] for top in predict_topk(bundle, images, k=1)]


def explained_class(bundle: ModelBundle, sample: Any, target: str) -> tuple[int, int]:
    """(class to explain, the model's top-1 prediction) for a sample under ``target``."""
    pred = top1(bundle, sample.tensor[None])[0]
    return (pred if target == "top1" else int(sample.label_idx)), pred


def evaluate_sample(bundle: ModelBundle, sample: Any, specs: Sequence[MethodSpec], cfg: EvalConfig,
                    timed: bool = True) -> dict:
    """Every metric (and the time) of every method on one sample; JSON-ready.

    Every metric explains the class ``cfg.target`` picks (the top-1 prediction by default); each
    row records it (``class_idx``), the prediction (``pred_idx``) and whether it equals the label
    (``correct``). Localisation uses the boxes of the explained class (NaN when it has none).
    Returns ``{"rows": [...], "curves": {label: {"insertion": [...], "deletion": [...]}},
    "timings": {label: ms}}``. The methods' maps are stacked so all their insertion/deletion
    steps share chunked forwards; pixel-ranking ties are broken by the image's seed.
    """
    x, seed, opts = sample.tensor[None], image_seed(sample.file), dict(cfg.cam_options)
    cls, pred = explained_class(bundle, sample, cfg.target)
    idx = torch.tensor([cls])
    xs, idxs = x.expand(len(specs), -1, -1, -1), idx.expand(len(specs))
    maps = normalise(explain_rows(bundle, xs, idxs, specs, seed, opts, [sample.file] * len(specs)), cfg.normalise)
    curves = M.insertion_deletion(bundle, xs, maps, idxs, "rise", seed, steps=cfg.rise_steps,
                                  chunk_size=cfg.chunk_size)
    thesis = thesis_aucs(bundle, xs, maps, idxs, cfg, curves["deletion"], seed)
    change = M.confidence_change(bundle, xs, maps, idxs, cfg.chunk_size, cfg.explanation_space)
    # the random floor re-explains its explanation image with a fresh seed (a new random map)
    adcc = M.adcc(bundle, xs, maps, idxs, change=change, space=cfg.explanation_space,
                  explain=lambda images, classes: normalise(
                      explain_rows(bundle, images, classes, specs, seed + 1, opts), cfg.normalise))
    no_map = torch.tensor([sources.stored(s) for s in specs])   # stored maps of ADCC's explanation images: none
    adcc = {k: torch.where(no_map, float("nan"), v) if k in ("coherency", "adcc") else v for k, v in adcc.items()}
    boxes = [[b for c, b in sample.boxes_crop if c == cls]] * len(specs)
    columns = {"insertion_auc": M.auc(curves["insertion"]), "deletion_auc": M.auc(curves["deletion"]),
               "insertion_auc_thesis": thesis["insertion"], "deletion_auc_thesis": thesis["deletion"],
               "average_drop": change["average_drop"], "increase_in_confidence": change["increase_in_confidence"],
               "coherency": adcc["coherency"], "complexity": adcc["complexity"], "adcc": adcc["adcc"],
               "pointing_game": M.pointing_game(maps, boxes, cfg.tolerance * crop_scale(sample), seed),
               "energy_pointing_game": M.energy_pointing_game(maps, boxes),
               "energy_pointing_game_small": M.energy_pointing_game(maps, boxes, SMALL_BOX_FRACTION),
               "box_iou": M.box_iou(maps, boxes, cfg.iou_threshold), "prob_full": change["prob_full"]}
    rows = [{"image": sample.file, "method": s.label, "kind": sample.kind, "source": sample.source,
             "label_idx": sample.label_idx, "class_idx": cls, "pred_idx": pred,
             "correct": bool(pred == sample.label_idx), **{k: float(v[i]) for k, v in columns.items()},
             **sources.row_facts(s)}
            for i, s in enumerate(specs)]
    timings = {}
    if timed:
        fns = {s.label: (lambda s=s: explain(bundle, x, idx, s, seed, opts, [sample.file]))
               for s in specs if not sources.stored(s)}   # reading a stored map is not computing it
        medians = interleaved_medians(fns, cfg.timing_repeats, cfg.timing_warmup, bundle.device)
        timings = {s.label: 1000 * medians[s.label] if s.label in medians else float("nan") for s in specs}
    return {"rows": rows, "timings": timings,
            "curves": {s.label: {m: curves[m][i].tolist() for m in M.MODES} for i, s in enumerate(specs)}}


def cache_key(bundle: ModelBundle, sample: Any, specs: Sequence[MethodSpec], cfg: EvalConfig, timed: bool) -> str:
    """Hash of everything an image's results depend on: model, image content, label, methods, settings."""
    content = hashlib.sha256(sample.tensor.contiguous().numpy().tobytes()).hexdigest()
    facts = {"model": bundle.name, "weights": bundle.weights_source, "file": sample.file, "content": content,
             "label": sample.label_idx, "boxes": sample.boxes_crop, "crop_scale": crop_scale(sample),
             "specs": [dataclasses.astuple(s) for s in specs], "config": dataclasses.asdict(cfg), "timed": timed}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Evaluation:
    """What :func:`evaluate` returns: metrics, timings, mean-able curves and the failures."""

    results: pd.DataFrame
    timings: pd.DataFrame
    curves: dict[str, dict[str, np.ndarray]]
    failures: list[tuple[str, str]] = field(default_factory=list)
    methods: list[MethodSpec] = field(default_factory=list)
    config: EvalConfig | None = None


def evaluate(bundle: ModelBundle, samples: Sequence[Any], specs: Iterable[str | tuple | MethodSpec | sources.MapSource],
             cfg: EvalConfig = EvalConfig(), cache_dir: str | Path | None = RESULTS_DIR / ".cache",
             progress: bool = True, time_first: int | None = None) -> Evaluation:
    """Evaluate every method on every sample (:func:`evaluate_sample`), cached per image.

    Map sources among ``specs`` (:mod:`helpers.data.map_sources`) are checked against the samples' files
    before any forward. ``cache_dir=None`` disables the cache. ``time_first`` times only the first that many images
    (None: all). A failing image is reported on stderr and skipped; a full or read-only disk
    (:data:`DISK_ERRNOS`) stops the run with its ``OSError`` (the entries already written are kept).
    """
    for sample in samples:
        check_images(sample.tensor[None], bundle, what=f"image {sample.file}")
    specs = [as_spec(s) for s in specs]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"method labels must be unique, got {labels}")
    sources.check_specs(specs, [s.file for s in samples])
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    done, failures = [], []
    for i, sample in enumerate(progress_bar(samples, desc="evaluating images", disable=not progress)):
        timed = time_first is None or i < time_first
        compute = partial(evaluate_sample, bundle, sample, specs, cfg, timed)
        try:
            result = compute() if cache is None else \
                cached(cache, cache_key(bundle, sample, specs, cfg, timed), sample.file, compute)
        except OSError as err:
            if err.errno in DISK_ERRNOS:  # the cache cannot be written: stop, the entries written are kept
                raise
            failures.append((sample.file, f"{type(err).__name__}: {err}"))
            print(f"evaluate: skipped {sample.file}: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        except Exception as err:  # one bad image must not stop the others
            failures.append((sample.file, f"{type(err).__name__}: {err}"))
            print(f"evaluate: skipped {sample.file}: {type(err).__name__}: {err}\n"
                  + "".join(traceback.format_exception(err)[-3:]), file=sys.stderr)
            continue
        done.append(result)
    return collect(done, specs, failures, cfg)


def collect(done: list[dict], specs: Sequence[MethodSpec], failures: list[tuple[str, str]],
            cfg: EvalConfig | None = None) -> Evaluation:
    """Per-image results -> the tables: results (image x method), timings, stacked curves."""
    results = pd.DataFrame([row for r in done for row in r["rows"]])
    timings = pd.DataFrame([{"image": r["rows"][0]["image"], "method": label, "ms_per_image": ms}
                            for r in done for label, ms in r["timings"].items()],
                           columns=["image", "method", "ms_per_image"])
    curves = {s.label: {m: np.array([r["curves"][s.label][m] for r in done]) for m in M.MODES} for s in specs}
    return Evaluation(results, timings, curves, failures, list(specs), cfg)


def merge(*evaluations: Evaluation) -> Evaluation:
    """One evaluation from several with disjoint methods (e.g. extra methods run on fewer images).

    Statistics pair methods on the images both have, so methods may differ in n.
    """
    methods = [s for ev in evaluations for s in ev.methods]
    labels = [s.label for s in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"evaluations to merge must have disjoint method labels, got {labels}")
    configs = {ev.config for ev in evaluations}
    if len(configs) > 1:
        raise ValueError("evaluations to merge must share one EvalConfig (the same protocol)")
    return Evaluation(pd.concat([ev.results for ev in evaluations], ignore_index=True),
                      pd.concat([ev.timings for ev in evaluations], ignore_index=True),
                      {k: v for ev in evaluations for k, v in ev.curves.items()},
                      [f for ev in evaluations for f in ev.failures], methods, configs.pop())

