"""Benchmark of the study and the explorer: per-photo cost against model forwards, slider latency."""
from __future__ import annotations

import dataclasses
import functools
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

from ..cam.backend import infer, onnx_path, ort_session
from ..cam.bundle import ModelBundle
from ..evaluation.runner import THESIS_ALPHA
from ..study.distributed import shard_task
from ..study.parts import RUNNERS
from ..study.run import part_photos, run_stage
from ..study.spec import FULL, StudySpec
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
            total = timed(functools.partial(RUNNERS[part.kind], part, FULL, bundle, samples, THESIS_ALPHA))
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


def dask_layout(photos: int = 8, repeats: int = 2, part: str = "alpha_head", spec: StudySpec = FULL) -> list[dict]:
    """``make study``'s two ways to use two cores, on the same ``photos`` photos of ``part`` (no cache),
    interleaved ``repeats`` times: 1 process of 2 threads against 2 Dask workers of 1 thread each (each
    worker one contiguous shard; the cluster is started once, before the clock). The faster is
    ``make study``'s default."""
    from dask.distributed import Client, LocalCluster

    chosen = dataclasses.replace(spec.part(part), n=photos, alpha_from=None)
    small = dataclasses.replace(spec, name=f"{spec.name}-bench", parts=(chosen,))
    times: dict[str, list[float]] = {"1 process x 2 threads": [], "2 Dask workers x 1 thread": []}
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with tempfile.TemporaryDirectory() as tmp, cluster, Client(cluster) as client:
        runs = iter(range(10**6))

        def fresh(name: str) -> Path:          # a new folder per run: a finished part file would be skipped
            return Path(tmp) / f"{name}-{next(runs)}"

        def single() -> None:
            threads = torch.get_num_threads()
            torch.set_num_threads(2)
            try:
                run_stage(small, chosen.stage, fresh("single"), cache=None, progress=False)
            finally:
                torch.set_num_threads(threads)

        def dask() -> None:
            client.gather([client.submit(shard_task, small, chosen.stage, str(fresh(f"dask-{k}")), (k, 2),
                                         tmp, None, None, 1, pure=False) for k in (1, 2)])

        layouts = (("1 process x 2 threads", single), ("2 Dask workers x 1 thread", dask))
        for i in range(repeats + 1):                                # round 0 warms both up (export, load)
            for name, fn in (layouts if i % 2 else layouts[::-1]):  # alternate which goes first
                seconds = timed(fn)
                if i:
                    times[name].append(seconds)
    single_s, dask_s = (statistics.median(t) / photos for t in times.values())
    return [{"measure": f"study ({part}, {photos} photos): seconds per photo, {name}", "value": s}
            for name, s in zip(times, (single_s, dask_s), strict=True)] + [
        {"measure": "study: 2 Dask workers x 1 thread / 1 process x 2 threads (time)", "value": dask_s / single_s,
         "target": "< 1 picks Dask for make study", "met": dask_s < single_s}]
