"""A tiny cached evaluation for the kill and concurrency tests, run in child processes.

Toy network, 12 x 12 images, 11-point curves: an image takes a few milliseconds, so cache writes
are frequent. ``slow_disk`` makes every write into the cache folder trickle out in
small flushed pieces (a slow disk), so kills and a second run often meet a write in progress;
with ``kill_at=k`` the process SIGKILLs itself in the middle of its k-th written piece.
"""
from __future__ import annotations

import builtins
import io
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from toy import GapLinear, toy_bundle

from helpers.evaluation import runner as E

SPECS = ["gradcam", ("hybrid@0.7", "hybrid", {"alpha": 0.7}), "random"]
CFG = E.EvalConfig(rise_steps=10, thesis_steps=10, chunk_size=128, tolerance=2.0)
PIECE = 256


@dataclass
class Sample:
    file: str
    tensor: torch.Tensor
    label_idx: int
    boxes_crop: list = field(default_factory=list)
    kind: str = "photo"
    source: str = "src"


def workload(n: int) -> tuple:
    """The toy bundle and ``n`` samples (always the same ones)."""
    torch.manual_seed(0)
    bundle = toy_bundle(GapLinear(torch.randn(3, 4), features=nn.Conv2d(3, 4, 3, padding=1)))
    gen = torch.Generator().manual_seed(1)
    samples = [Sample(f"im{i:02d}.png", torch.randn(3, 12, 12, generator=gen), i % 3,
                      [(i % 3, (2.0, 2.0, 8.0, 8.0))]) for i in range(n)]
    return bundle, samples


def results_csv(n: int, indices: Sequence[int], cache_dir: Path | None) -> tuple[str, list]:
    """The results table (CSV text, no timings) and the failures of evaluating ``indices`` of the workload."""
    bundle, samples = workload(n)
    ev = E.evaluate(bundle, [samples[i] for i in indices], SPECS, CFG, cache_dir=cache_dir, progress=False,
                    time_first=0)
    return ev.results.to_csv(index=False), ev.failures


class SlowFile:
    """A text file whose writes go out in flushed pieces of PIECE characters, ``delay`` seconds apart."""

    written = 0  # pieces written by this process
    kill_at: int | None = None

    def __init__(self, f: io.TextIOBase, delay: float) -> None:
        self._f, self._delay = f, delay

    def write(self, text: str) -> int:
        for start in range(0, len(text), PIECE):
            self._f.write(text[start:start + PIECE])
            self._f.flush()
            SlowFile.written += 1
            if SlowFile.written == SlowFile.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(self._delay)
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._f, name)

    def __enter__(self) -> "SlowFile":
        return self

    def __exit__(self, *exc) -> None:
        self._f.__exit__(*exc)


def slow_disk(folder: Path, delay: float, kill_at: int | None = None) -> None:
    """From now on, files opened for writing in ``folder`` (or by descriptor) are :class:`SlowFile` s."""
    real_open, prefix = io.open, str(folder)
    SlowFile.kill_at = kill_at

    def open_(file, mode: str = "r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        writing = "w" in mode and "b" not in mode
        return SlowFile(f, delay) if writing and (isinstance(file, int) or str(file).startswith(prefix)) else f

    io.open = builtins.open = open_


def child(n: int, indices: Sequence[int], cache_dir: Path, out: Path, delay: float,
          kill_at: int | None = None) -> None:
    """Body of a child process: evaluate on a slow disk, write the CSV and the failure count to ``out``."""
    torch.set_num_threads(1)
    slow_disk(cache_dir, delay, kill_at)
    csv, failures = results_csv(n, indices, cache_dir)
    out.with_suffix(".failures").write_bytes(str(len(failures)).encode())  # bytes: not slowed
    out.write_bytes(csv.encode())
