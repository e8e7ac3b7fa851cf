"""A profile per CPU: the CAM pass, a metric forward, a ROAD evaluation and a study photo split into their parts.

``python -m helpers.bench --profile`` times each part in one interleaved run on this CPU and writes
``results/benchmark_<cpu>.csv`` (one file per CPU model, the latest run kept), with the CPU model and its vector
units in every row. The parts of the CAM pass (Grad-CAM + LayerCAM + hybrid, the default methods):

* engine forward: the network up to the hooked layer, on the inference engine (ONNX Runtime);
* PyTorch tail: the hooked layer's map through pooling + classifier in PyTorch, hooks in place;
* autograd: the backward from the class logits to the map;
* formulas: the three methods' weights and sums on the 7 x 7 maps;
* upsampling and scaling: the three maps to 224 x 224, each divided by its maximum;
* the rest: ``compute_cams`` as a whole minus the parts above (checks, mode switches, bookkeeping);

beside the floor, a bare ONNX Runtime forward of the whole network. A metric forward is the package's
``infer`` against the same bare session; ROAD is its ranking, its 14 imputations and its 14 forwards;
a study photo is the file read (a packaged photo of ``input_images/``) and its preprocessing.
"""
from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from skimage import data

from ..cam.backend import forward_fn, infer
from ..cam.bundle import ModelBundle
from ..cam.engine import capture, compute_cams, engine_split, gradcam, hybrid, layercam
from ..cam.maps import scale_maps
from ..config import RESULTS_DIR, ROOT
from ..data.images import load_image
from ..evaluation.imputation import noisy_linear_impute
from ..evaluation.metrics import class_probabilities, from_pixels
from ..evaluation.road import ORDERS, ROAD_PERCENTAGES, noise_generator, pixel_images, road_masks
from ..evaluation.timing import interleaved_medians
from ..study.run import machine
from .common import photo_batch
from .engine import floor_session


def _rounds(fns: dict[str, Callable[[], object]], repeats: int, batch: int) -> dict[str, list[float]]:
    """ms per image of each call in each of ``repeats`` interleaved rounds, after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(1000 * (time.perf_counter() - start) / batch)
    return times


def cam_parts(bundle: ModelBundle, batch: int = 16, repeats: int = 7) -> list[dict]:
    """The CAM pass split into its parts (module docstring), ms per image at ``batch``."""
    x = photo_batch(bundle, batch)
    split = engine_split(bundle, [bundle.target_layer])
    if split is None:
        raise ValueError(f"{bundle.name}: its target layer has no engine split; the profile needs one")
    features = forward_fn(split.features, bundle.device, name=f"{bundle.name}-to-{split.layer}",
                          backend=bundle.backend, precision=bundle.precision)
    cap = capture(bundle, x)
    acts, grads = cap.activations[split.layer], cap.gradients[split.layer]
    raw = [gradcam(acts, grads), layercam(acts, grads), hybrid(acts, grads)]
    bare = floor_session(bundle, tuple(x.shape[1:]))
    array = x.cpu().numpy()
    fns = {"floor: bare onnxruntime forward": lambda: bare.run(None, {"x": array}),
           "engine forward": lambda: features(x),
           "capture, no backward": lambda: capture(bundle, x, backward=False),
           "capture with backward": lambda: capture(bundle, x),
           "formulas": lambda: [gradcam(acts, grads), layercam(acts, grads), hybrid(acts, grads)],
           "upsampling and scaling": lambda: scale_maps(raw, tuple(x.shape[-2:])),
           "whole CAM pass": lambda: compute_cams(bundle, x)}
    rounds = _rounds(fns, repeats, batch)
    t = {name: statistics.median(v) for name, v in rounds.items()}

    def gap(a: str, *b: str) -> float:
        """Median over rounds of a's time minus b's in the same round (a paired difference)."""
        return statistics.median(x - sum(ys) for x, *ys in zip(rounds[a], *(rounds[n] for n in b), strict=True))

    parts = {"engine forward": t["engine forward"],
             "PyTorch tail": gap("capture, no backward", "engine forward"),
             "autograd": gap("capture with backward", "capture, no backward"),
             "formulas": t["formulas"], "upsampling and scaling": t["upsampling and scaling"],
             "the rest": gap("whole CAM pass", "capture with backward", "formulas", "upsampling and scaling")}
    floor = t["floor: bare onnxruntime forward"]
    rows = [{"part": f"CAM pass: {name}", "batch": batch, "ms_per_image": ms, "share_of_floor": ms / floor}
            for name, ms in parts.items()]
    return rows + [{"part": "CAM pass: whole", "batch": batch, "ms_per_image": t["whole CAM pass"],
                    "share_of_floor": t["whole CAM pass"] / floor},
                   {"part": "floor: bare onnxruntime forward", "batch": batch, "ms_per_image": floor,
                    "share_of_floor": 1.0}]


def metric_road_and_io(bundle: ModelBundle, batch: int = 32, repeats: int = 7) -> list[dict]:
    """A metric forward against the bare session at ``batch``; ROAD's parts on one photo; a study photo's I/O."""
    x = photo_batch(bundle, batch)
    bare = floor_session(bundle, tuple(x.shape[1:]))
    array = x.cpu().numpy()
    one = x[:1]
    maps = compute_cams(bundle, one, ("gradcam",))
    cam, cls = maps["gradcam"], maps.class_idx
    pixels = pixel_images(one, bundle)[0]
    masks = road_masks(cam)
    jobs = [(order, k, p) for order in ORDERS for k, p in enumerate(ROAD_PERCENTAGES)]

    def imputed() -> list[torch.Tensor]:
        return [noisy_linear_impute(pixels, masks[o][0, k], 0.01, noise_generator(0, o, p)) for o, k, p in jobs]

    inputs = from_pixels(torch.stack(imputed()), bundle.mean, bundle.std).to(bundle.device)
    path = next(iter(sorted((ROOT / "input_images").glob("photo_*.png"))), None)
    image = load_image(path) if path is not None else Image.fromarray(data.coffee())
    fns = {"metric forward: package backend": lambda: infer(bundle, x),
           "metric forward: bare onnxruntime": lambda: bare.run(None, {"x": array}),
           "ROAD: ranking (MoRF + LeRF masks)": lambda: road_masks(cam),
           "ROAD: 14 imputations": imputed,
           "ROAD: 14 forwards": lambda: class_probabilities(bundle, lambda a, b: inputs[a:b], len(jobs),
                                                            cls.repeat(len(jobs))),
           "study photo: preprocessing": lambda: bundle.preprocess(image)}
    if path is not None:
        fns["study photo: file read"] = lambda: load_image(path)
    t = interleaved_medians(fns, repeats=repeats, warmup=1, device=bundle.device)
    per = {name: batch if name.startswith("metric") else 1 for name in fns}
    return [{"part": name, "batch": per[name], "ms_per_image": 1000 * s / per[name]} for name, s in t.items()]


def cpu_slug(cpu: str) -> str:
    """A file-name form of a CPU model: ``"AMD EPYC 9R14 96-Core Processor"`` -> ``"amd-epyc-9r14-96-core"``."""
    words = re.sub(r"\(r\)|\(tm\)|\bprocessor\b|\bcpu\b|@.*", "", cpu.lower())
    return re.sub(r"[^a-z0-9]+", "-", words).strip("-") or "unknown-cpu"


def cpu_profile(bundle: ModelBundle, repeats: int = 7, out_dir: Path = RESULTS_DIR) -> tuple[pd.DataFrame, Path]:
    """Every part of :func:`cam_parts` and :func:`metric_road_and_io`, stamped with the CPU and its vector units;
    written to ``out_dir / benchmark_<cpu>.csv``."""
    info = machine()
    table = pd.DataFrame(cam_parts(bundle, repeats=repeats) + metric_road_and_io(bundle, repeats=repeats))
    table.insert(0, "cpu_flags", info["cpu_flags"])
    return table, out_dir / f"benchmark_{cpu_slug(info['cpu'])}.csv"
