"""Benchmark of the study and the explorer: per-photo cost against model forwards, slider latency."""
from __future__ import annotations

import statistics
import time

import onnxruntime
import torch

from ..cam.backend import infer, onnx_path, ort_session
from ..cam.bundle import ModelBundle
from ..evaluation.runner import THESIS_ALPHA
from ..study.parts import RUNNERS
from ..study.run import part_photos
from ..study.spec import FULL
from ..teaching.interactive import HybridExplorer
from .common import photo_batch, timed

SLIDER_LIMIT_MS = 200.0


def slider_latency(bundle: ModelBundle, moves: int = 20) -> list[dict]:
    """The explorer's answer to a move of its a slider (re-fuse the cached raw maps, redraw the hybrid
    picture), median over ``moves`` moves, against the page's 200 ms target."""
    explorer = HybridExplorer(bundle, photo_batch(bundle, 1)[0])
    times = []
    for i in range(1, moves + 1):
        start = time.perf_counter()
        explorer.slider.value = round(0.05 * (i % 20), 2)  # every move a new value
        times.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(times)
    return [{"measure": f"explorer a-slider move: re-fuse + redraw, median of {moves} (ms)", "value": ms,
             "target": f"<= {SLIDER_LIMIT_MS:g}", "met": ms <= SLIDER_LIMIT_MS}]


STUDY_LIMIT = 1.15


def study_cost(bundle: ModelBundle, n_photos: int = 2, parts: tuple[str, ...] = ("main", "alpha_head"),
               batch: int = 32, repeats: int = 5) -> list[dict]:
    """The full study's per-photo cost against its own number of model forwards x one bare ONNX Runtime
    forward (batch ``batch``), part by part; the time split into forwards (inside ONNX Runtime) and the rest
    (pixel ranking, blur, CAM passes, caching, Python)."""
    x = photo_batch(bundle, batch).cpu().numpy()
    infer(bundle, torch.from_numpy(x[:1]))                       # export and load the session once
    session = ort_session(onnx_path(bundle.model, bundle.name, tuple(x.shape[1:])))
    session.run(None, {"x": x})
    bare = statistics.median(timed(lambda: session.run(None, {"x": x})) for _ in range(repeats)) / batch
    original, counts = onnxruntime.InferenceSession.run, {"images": 0, "seconds": 0.0}

    def counting(self, names, feeds, *args, **kwargs):
        start = time.perf_counter()
        out = original(self, names, feeds, *args, **kwargs)
        counts["seconds"] += time.perf_counter() - start
        counts["images"] += len(next(iter(feeds.values())))
        return out

    rows = [{"measure": "study: bare onnxruntime forward per image (ms)", "batch": batch, "value": 1000 * bare}]
    onnxruntime.InferenceSession.run = counting
    try:
        for name in parts:
            part = FULL.part(name)
            photos = part_photos(part, FULL)
            samples = photos.load(bundle, photos.files[:n_photos])
            counts.update(images=0, seconds=0.0)
            total = timed(lambda: RUNNERS[part.kind](part, FULL, bundle, samples, THESIS_ALPHA))
            ratio = total / (counts["images"] * bare)
            rows += [{"measure": f"study part {name}: seconds per photo", "value": total / n_photos},
                     {"measure": f"study part {name}: forwards per photo", "value": counts["images"] / n_photos},
                     {"measure": f"study part {name}: share of time inside the forwards",
                      "value": counts["seconds"] / total},
                     {"measure": f"study part {name}: time / (forwards x bare forward)", "value": ratio,
                      "target": f"<= {STUDY_LIMIT:g}", "met": ratio <= STUDY_LIMIT}]
    finally:
        onnxruntime.InferenceSession.run = original
    return rows
