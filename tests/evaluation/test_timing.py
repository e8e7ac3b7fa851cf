"""Timing helpers: the interleaving order and the medians, on a fake clock (no assertion on real speed)."""
from __future__ import annotations

from helpers.evaluation import timing


def test_interleaved_medians_warm_up_then_time_each_round_in_turn(monkeypatch) -> None:
    clock, calls = [0.0], []
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def takes(name: str, seconds: list[float]):
        def call() -> None:
            calls.append(name)
            clock[0] += seconds.pop(0)
        return call
    # 2 warm-up rounds (100 s each: ignored), then 3 timed rounds: a takes 5, 1, 3 s -> median 3; b 2, 8, 4 -> 4
    medians = timing.interleaved_medians({"a": takes("a", [100, 100, 5, 1, 3]), "b": takes("b", [100, 100, 2, 8, 4])},
                                         repeats=3, warmup=2)
    assert calls == ["a", "b"] * 5 and medians == {"a": 3.0, "b": 4.0}
