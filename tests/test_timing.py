"""Timing helpers: call counts and table shape (no assertion on speed: that is the benchmark's job)."""
from __future__ import annotations

import torch

from helpers.timing import time_call, time_methods
from toy import GapLinear, toy_bundle


def test_time_call_warms_up_then_times_each_repeat() -> None:
    calls = []
    times = time_call(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and len(times) == 4 and all(t >= 0 for t in times)


def test_time_methods_one_row_per_method() -> None:
    torch.manual_seed(0)
    df = time_methods(toy_bundle(GapLinear(torch.randn(3, 4))), torch.randn(2, 4, 5, 5), ("gradcam", "hybrid"),
                      repeats=2)
    assert list(df.method) == ["gradcam", "hybrid"] and (df.batch == 2).all()
    assert (df.ms_per_image * 2 / 1000 - df.median_s).abs().max() < 1e-12
