"""Shared pieces of the benchmark: the real photos it runs on, resident memory and one timed call."""
from __future__ import annotations

import resource
import time
from pathlib import Path

import torch
from PIL import Image
from skimage import data

from ..cam.bundle import ModelBundle


def photo_batch(bundle: ModelBundle, n: int) -> torch.Tensor:
    """``n`` preprocessed real photos (scikit-image's, cycled)."""
    names = ["chelsea", "coffee", "rocket", "astronaut"]
    images = [bundle.preprocess(Image.fromarray(getattr(data, names[i % len(names)])())) for i in range(n)]
    return torch.stack(images).to(bundle.device)


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux ``/proc``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def timed(fn) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
