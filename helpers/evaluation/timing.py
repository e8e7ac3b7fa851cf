"""Wall-clock timing of CAM methods: medians over interleaved repeats after warm-up, in one run.

These machines are noisy, so only ratios taken in the same run mean anything; interleaving
the candidates (A, B, C, A, B, C, ...) spreads any slow spell over all of them.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch

from ..cam.bundle import ModelBundle
from ..cam.engine import compute_cams


def interleaved_medians(fns: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                        device: torch.device | None = None) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds after ``warmup`` rounds."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def time_methods(bundle: ModelBundle, images: torch.Tensor, methods: Sequence[str],
                 class_idx: Sequence[int] | None = None, repeats: int = 5, warmup: int = 1,
                 **cam_kwargs) -> pd.DataFrame:
    """Median time per image of each method run alone on ``images`` (one row per method)."""
    def run(method: str) -> Callable[[], object]:
        return lambda: compute_cams(bundle, images, (method,), target=class_idx, **cam_kwargs)

    medians = interleaved_medians({m: run(m) for m in methods}, repeats, warmup, bundle.device)
    return pd.DataFrame([{"method": m, "batch": len(images), "median_s": s, "ms_per_image": 1000 * s / len(images)}
                         for m, s in medians.items()])
