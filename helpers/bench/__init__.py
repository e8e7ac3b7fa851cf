"""Speed benchmark against the physical floor: ``python -m helpers.bench`` (or ``make bench``).

Everything is measured in ONE run on the embedded model and reported as ratios (these machines
are noisy; absolute seconds do not transfer). Writes ``results/benchmark.csv`` and prints a table.
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import pandas as pd
import torch

from ..cam.bundle import ModelBundle
from ..cam.models import load_model
from ..config import RESULTS_DIR
from ..study.run import machine
from .engine import (
    bf16_auc_shift,
    curve_speed,
    engine_speed,
    floor_and_methods,
    peak_rss_of_evaluation,
    rss_flat,
)
from .methods import method_speed
from .profile import cpu_profile
from .road import road_speed
from .study import dask_layout, slider_latency, study_cost

#: The goals of the benchmark issues: (name, "<=" or ">=", bound); ratios read at the large batch
#: (the evaluation forwards at the curves' chunk size).
GOALS = [
    ("gc+lc+hybrid one pass / gradcam alone", "<=", 1.10),
    ("worst single-backward method / forward only", "<=", 1.15),
    ("insertion+deletion batched speed-up over per-step loop", ">=", 4.0),
    ("evaluation forward: package backend / bare onnxruntime", "<=", 1.15),
    ("evaluation forward: eager torch / package backend", ">=", 2.3),
    ("gc+lc+hybrid one pass / bare onnxruntime forward", "<=", 1.3),
    ("peak RSS of an evaluation (MB)", "<=", 2560),
]


def check_goals(rows: pd.DataFrame, engine: pd.DataFrame, peak_rss: float, eval_images: int) -> pd.DataFrame:
    """The goal checks: measured ratio, bound and verdict for each of :data:`GOALS`, at the largest batch."""
    large = rows[rows.batch == rows.batch.max()]

    def at(measure: str, table: pd.DataFrame = large) -> float:
        return float(table[table.measure == measure].ms_per_image.iloc[0])

    curves = rows.dropna(subset=["images_per_s"])
    singles = ["gradcam", "layercam", "hybrid", "forward + backward to layer"]
    batch = int(large.batch.iloc[0])
    backend = at("evaluation forward, package backend", engine)
    bare = at("evaluation forward, bare onnxruntime", engine)
    eval_batch = int(engine.batch.iloc[0])
    measured = [(at("gc+lc+hybrid one pass") / at("gradcam"), batch),
                (max(at(m) for m in singles) / at("forward only"), batch),
                (float(curves.images_per_s.iloc[0] / curves.images_per_s.iloc[1]), int(curves.batch.iloc[0])),
                (backend / bare, eval_batch),
                (at("evaluation forward, eager torch", engine) / backend, eval_batch),
                (at("gc+lc+hybrid one pass (package backend)", engine)
                 / at("bare onnxruntime forward (cam batch)", engine), int(engine.batch.iloc[-1])),
                (peak_rss, eval_images)]
    return pd.DataFrame([{"measure": name, "batch": n, "value": value,
                          "target": f"{op} {bound}", "met": value <= bound if op == "<=" else value >= bound}
                         for (name, op, bound), (value, n) in zip(GOALS, measured, strict=True)])


def run(repeats: int = 7, calls: int = 1000, eval_images: int = 64, out: Path = RESULTS_DIR / "benchmark.csv",
        device: str | None = None, batches: tuple[int, int] = (1, 16), curve_steps: int = 50,
        curve_images: int = 4, eval_batch: int = 32, leak_images: int = 200) -> pd.DataFrame:
    """Run every measurement, print the table and write it to ``out``.

    ``batches`` are the small and the large batch size; the targets are read at the large one.
    The curve speed is measured on ``curve_images`` images with ``curve_steps`` steps per curve;
    the evaluation forwards at ``eval_batch`` images (the curves' chunk size). Memory:
    :func:`rss_flat` with ``calls`` CAM calls and ``leak_images`` evaluated images.
    """
    bundle = load_model("efficientnet_lite0", device=device)
    rows = pd.DataFrame([r for b in batches for r in floor_and_methods(bundle, b, repeats)]
                        + curve_speed(bundle, curve_images, curve_steps, max(1, repeats // 3), chunk_size=32))
    engine = pd.DataFrame(engine_speed(bundle, eval_batch, batches[-1], repeats))
    peak = peak_rss_of_evaluation(eval_images, batches[-1], curve_steps)
    checks = check_goals(rows, engine, peak, eval_images)
    extra = pd.DataFrame(rss_flat(bundle, calls, leak_images) + bf16_auc_shift(bundle, curve_images, curve_steps)
                         + slider_latency(bundle) + study_cost(bundle)
                         + [{"measure": f"peak RSS, evaluation of {eval_images} images (MB)", "value": peak}])
    table = pd.concat([rows, engine, checks, extra], ignore_index=True)
    write_table(table, out, bundle)
    return table


def write_table(table: pd.DataFrame, out: Path, bundle: ModelBundle) -> pd.DataFrame:
    """Stamp ``table`` with the date, CPU, threads and device, write it to ``out`` and print it."""
    cpu = machine()["cpu"]
    stamp = f"{datetime.date.today()} | {cpu} | {torch.get_num_threads()} threads | {bundle.device}"
    table.insert(0, "taken", stamp)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.4g")
    print(table.drop(columns="taken").to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep=""))
    print(f"\n{stamp}; written to {out}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=1000, help="repeated CAM calls for the memory-growth check")
    parser.add_argument("--eval-images", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "benchmark.csv")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batches", type=int, nargs=2, default=(1, 16), metavar=("SMALL", "LARGE"))
    parser.add_argument("--curve-steps", type=int, default=50)
    parser.add_argument("--eval-batch", type=int, default=32, help="images per evaluation forward")
    parser.add_argument("--leak-images", type=int, default=200, help="images of the memory-flat evaluation check")
    parser.add_argument("--road", action="store_true",
                        help="only the ROAD imputation benchmark (road_speed), written to results/benchmark_road.csv")
    parser.add_argument("--study", action="store_true", help="only the study's cost and its two-core layouts "
                        "(study_cost, dask_layout), written to results/benchmark_study.csv")
    parser.add_argument("--profile", action="store_true", help="only the profile of this CPU (helpers.bench.profile), "
                        "written to results/benchmark_<cpu>.csv")
    parser.add_argument("--methods", action="store_true", help="only the six methods added to the thesis' ten "
                        "against pytorch-grad-cam (method_speed), written to results/benchmark_methods.csv")
    args = parser.parse_args()
    if args.profile:
        bundle = load_model("efficientnet_lite0", device=args.device)
        table, out = cpu_profile(bundle, args.repeats)
        write_table(table, out, bundle)
        return
    only = {"road": args.road, "study": args.study, "methods": args.methods}
    if any(only.values()):
        bundle = load_model("efficientnet_lite0", device=args.device)
        part = next(name for name, asked in only.items() if asked)
        rows = {"road": lambda: road_speed(bundle, args.repeats), "study": lambda: study_cost(bundle) + dask_layout(),
                "methods": lambda: method_speed(bundle, min(args.repeats, 3))}[part]()
        write_table(pd.DataFrame(rows), RESULTS_DIR / f"benchmark_{part}.csv", bundle)
        return
    run(args.repeats, args.calls, args.eval_images, args.out, args.device, tuple(args.batches), args.curve_steps,
        eval_batch=args.eval_batch, leak_images=args.leak_images)

