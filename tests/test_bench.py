"""The benchmark runs end to end on a tiny input (its numbers are not checked: speed is its own job)."""
from __future__ import annotations

import pandas as pd

from helpers import bench


def test_benchmark_runs_on_a_tiny_input(tmp_path, capsys) -> None:
    out = tmp_path / "bench.csv"
    table = bench.run(repeats=1, calls=10, eval_images=2, out=out, device="cpu", batches=(1, 2), curve_steps=2,
                      curve_images=1, eval_batch=3)
    written = pd.read_csv(out)
    assert list(written.columns) == list(table.columns) and len(written) == len(table)
    checks = table.dropna(subset=["target"])
    assert [name for name, _, _ in bench.TARGETS] == checks.measure.tolist()
    # the curves ran on one image, the evaluation forwards on 3, the peak RSS is of a 2-image evaluation
    assert (checks.value > 0).all() and checks.batch.tolist() == [2, 2, 1, 3, 3, 2, 2]
    assert {"evaluation forward, bare onnxruntime", "forward, package backend, bf16"} <= set(table.measure)
    assert {"forward only", "gc+lc+hybrid one pass", "gc, lc, hybrid as three passes"} <= set(table.measure)
    assert (table[table.batch == 1].measure == "forward only").any()
    assert table.taken.iloc[0].endswith("cpu") and "written to" in capsys.readouterr().out
