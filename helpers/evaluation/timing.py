"""Wall-clock timing of candidate calls: medians over interleaved repeats after warm-up, in one run.

These machines are noisy, so only ratios taken in the same run mean anything; interleaving
the candidates (A, B, C, A, B, C, ...) spreads any slow spell over all of them.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

import torch


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
