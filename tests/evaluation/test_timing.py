"""Timing helpers: call counts and table shape (no assertion on speed: that is the benchmark's job)."""
from __future__ import annotations

import torch

from helpers.evaluation.timing import interleaved_medians, time_methods
from toy import GapLinear, toy_bundle


def test_interleaved_medians_warm_up_then_time_each_round_in_turn() -> None:
    calls: list[str] = []
    medians = interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                  repeats=3, warmup=2)
    assert calls == ["a", "b"] * 5 and set(medians) == {"a", "b"} and all(t >= 0 for t in medians.values())


def test_time_methods_one_row_per_method() -> None:
    torch.manual_seed(0)
    df = time_methods(toy_bundle(GapLinear(torch.randn(3, 4))), torch.randn(2, 4, 5, 5), ("gradcam", "hybrid"),
                      repeats=2)
    assert list(df.method) == ["gradcam", "hybrid"] and (df.batch == 2).all()
    assert (df.ms_per_image * 2 / 1000 - df.median_s).abs().max() < 1e-12
