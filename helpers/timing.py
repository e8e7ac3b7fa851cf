"""Wall-clock timing of CAM methods: medians over repeats after warm-up, in one run."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import pandas as pd
import torch

from .cams import compute_cams
from .models import ModelBundle


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
              device: torch.device | None = None) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def time_methods(bundle: ModelBundle, images: torch.Tensor, methods: Sequence[str],
                 class_idx: Sequence[int] | None = None, repeats: int = 5, warmup: int = 1,
                 **cam_kwargs) -> pd.DataFrame:
    """Median time per image of each method run alone on ``images`` (one row per method)."""
    rows = []
    for method in methods:
        times = time_call(lambda: compute_cams(bundle, images, (method,), class_idx=class_idx, **cam_kwargs),
                          repeats, warmup, bundle.device)
        median = float(pd.Series(times).median())
        rows.append({"method": method, "batch": len(images), "median_s": median,
                     "ms_per_image": 1000 * median / len(images)})
    return pd.DataFrame(rows)
