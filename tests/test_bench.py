"""The benchmark runs end to end on a tiny input (its speed numbers are not checked: speed is its own job);
its memory check tells a leak from flat memory."""
from __future__ import annotations

import math
import mmap

import pandas as pd
import pytest
import torch

from helpers import bench
from helpers.evaluation.runner import MethodSpec
from helpers.study.spec import QUICK


def few_methods(alpha: float) -> list[MethodSpec]:
    """Stands in for every method in the memory check's evaluation, to keep the test short."""
    return [MethodSpec("gradcam", "gradcam"), MethodSpec("random", "random")]


def test_benchmark_runs_on_a_tiny_input(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(bench.engine, "default_specs", few_methods)
    out = tmp_path / "bench.csv"
    table = bench.run(repeats=1, calls=10, eval_images=2, out=out, device="cpu", batches=(1, 2), curve_steps=2,
                      curve_images=1, eval_batch=3, leak_images=2)
    written = pd.read_csv(out)
    assert list(written.columns) == list(table.columns) and len(written) == len(table)
    checks = table[table.measure.isin([name for name, _, _ in bench.GOALS])]
    assert [name for name, _, _ in bench.GOALS] == checks.measure.tolist()
    # the curves ran on one image, the evaluation forwards on 3, the peak RSS is of a 2-image evaluation
    assert (checks.value > 0).all() and checks.batch.tolist() == [2, 2, 1, 3, 3, 2, 2]
    assert {"evaluation forward, bare onnxruntime", "forward, package backend, bf16"} <= set(table.measure)
    assert {"forward only", "gc+lc+hybrid one pass", "gc, lc, hybrid as three passes"} <= set(table.measure)
    assert (table[table.batch == 1].measure == "forward only").any()
    assert table.taken.iloc[0].endswith("cpu") and "written to" in capsys.readouterr().out


def test_memory_check_flags_a_leak_and_passes_flat_memory(lite0, monkeypatch) -> None:
    monkeypatch.setattr(bench.engine, "default_specs", few_methods)
    flat = bench.rss_flat(lite0, calls=10, eval_images=3)
    # repeated CAM calls: flat. The 2-image evaluation is reported, but its growth is not asserted here:
    # with the Makefile's malloc settings RSS is the heap's high-water mark, which a 2-image run after a
    # 1-image warm-up can still raise by tens of MB without any leak; the 200-image benchmark run decides.
    assert flat[0]["met"]
    assert "2 evaluated images, every method" in flat[1]["measure"]
    # the rows are the RSS differences they name: with a scripted RSS (MB) read at the CAM calls' two
    # checkpoints, then before and after the evaluation, they are 110 - 100 and 260 - 200
    readings = iter([100.0, 110.0, 200.0, 260.0])
    monkeypatch.setattr(bench.engine, "rss_mb", lambda: next(readings))
    scripted = bench.rss_flat(lite0, calls=10, eval_images=3)
    assert [(r["value"], r["met"]) for r in scripted] == [(10.0, True), (60.0, False)]
    monkeypatch.undo()
    monkeypatch.setattr(bench.engine, "default_specs", few_methods)
    kept = []
    real = bench.engine.compute_cams

    def leaking(*args, **kwargs):
        # 30 MB kept per call and written, mapped outside malloc: with the Makefile's malloc settings the heap
        # never shrinks, so a malloc'd leak could reuse pages an earlier evaluation freed and leave RSS still.
        block = mmap.mmap(-1, 30 * 2**20)
        block.write(b"x" * len(block))
        kept.append(block)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench.engine, "compute_cams", leaking)
    cams, _ = bench.rss_flat(lite0, calls=10, eval_images=3)
    assert cams["value"] > bench.engine.RSS_LIMIT_MB and not cams["met"] and cams["target"] == "<= 50"


def test_slider_latency_moves_the_explorers_slider(lite0, monkeypatch) -> None:
    fused = []
    real = bench.study.HybridExplorer.show_hybrid
    monkeypatch.setattr(bench.study.HybridExplorer, "show_hybrid",
                        lambda self: fused.append(self.slider.value) or real(self))
    (row,) = bench.slider_latency(lite0, moves=21)
    assert fused == [0.7] + [round(0.05 * (i % 20), 2) for i in range(1, 22)]  # set-up, then one redraw per move
    assert row["value"] > 0 and row["target"] == "<= 200" and row["met"] == (row["value"] <= 200)


def test_dask_layout_times_both_layouts_on_the_same_photos(monkeypatch) -> None:
    ran = []
    real = bench.study.run_stage

    def counting(spec, stage, out, *args, **kwargs):
        ran.append((spec.parts[0].n, stage, str(out)))
        return real(spec, stage, out, *args, **kwargs)

    monkeypatch.setattr(bench.study, "run_stage", counting)
    rows = bench.study.dask_layout(photos=2, repeats=1, spec=QUICK)
    single, dask, ratio = (r["value"] for r in rows)
    assert [r[:2] for r in ran] == [(2, "val")] * 2       # in-process runs: the warm-up and one timed round
    assert ran[0][2] != ran[1][2]                         # each into a new folder: none skips a finished part
    assert ratio == pytest.approx(dask / single) and rows[2]["met"] == (dask < single)
    assert "2 photos" in rows[0]["measure"] and "1 process x 2 threads" in rows[0]["measure"]


def test_the_floor_stops_spinning_when_a_run_returns(lite0) -> None:
    session = bench.engine.floor_session(lite0, (3, 224, 224))
    options = session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert options.intra_op_num_threads == torch.get_num_threads()


def test_method_speed_times_the_package_and_pytorch_grad_cam_in_turn(lite0, monkeypatch) -> None:
    from helpers.bench import methods
    order = []
    monkeypatch.setattr(methods, "_reference", lambda bundle, name, images: lambda: order.append(name))
    monkeypatch.setattr(methods, "compute_cams", lambda *a, **k: order.append(k["layer"]))
    rows = methods.method_speed(lite0, repeats=2, names=("eigencam", "ablationcam"))
    # warm-up of the package's calls only, then two interleaved rounds of all four calls
    assert order == ["head", "head", "stages.4"] + ["head", "head", "stages.4", "eigencam", "ablationcam"] * 2
    assert [r["measure"] for r in rows] == ["eigencam at head", "ablationcam at head (closed form)",
                                            "ablationcam at stages.4 (batched ablations)"]
    assert all(r["ms_per_image"] > 0 for r in rows) and math.isnan(rows[2]["reference_ms_per_image"])
    first = rows[0]
    assert first["reference_over_package"] == pytest.approx(first["reference_ms_per_image"] / first["ms_per_image"])


def test_cpu_slug_names_a_file_per_cpu() -> None:
    from helpers.bench.profile import cpu_slug
    assert cpu_slug("AMD EPYC 9R14 96-Core Processor") == "amd-epyc-9r14-96-core"
    assert cpu_slug("Intel(R) Xeon(R) CPU @ 2.80GHz") == "intel-xeon"
    assert cpu_slug("AMD EPYC") == "amd-epyc" and cpu_slug("") == "unknown-cpu"


def test_the_profile_splits_the_cam_pass_into_parts_that_add_up(lite0, monkeypatch, tmp_path) -> None:
    from helpers.bench import profile
    monkeypatch.setattr(profile, "machine", lambda: {"cpu": "Test CPU 1", "cpu_flags": "avx2"})
    table, out = profile.cpu_profile(lite0, repeats=1, out_dir=tmp_path)
    assert out == tmp_path / "benchmark_test-1.csv" and set(table.cpu_flags) == {"avx2"}
    cam = table[table.part.str.startswith("CAM pass")].set_index("part").ms_per_image
    parts = cam.drop("CAM pass: whole")
    assert list(parts.index) == [f"CAM pass: {p}" for p in ("engine forward", "PyTorch tail", "autograd", "formulas",
                                                            "upsampling and scaling", "the rest")]
    # one round: every paired difference is exact, so the parts add up to the whole
    assert parts.sum() == pytest.approx(cam["CAM pass: whole"], rel=1e-9)
    assert {"ROAD: 14 imputations", "metric forward: bare onnxruntime", "study photo: file read"} <= set(table.part)
