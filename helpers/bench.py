"""Speed benchmark against the physical floor: ``python -m helpers.bench`` (or ``make bench``).

Everything is measured in ONE run on the embedded model and reported as ratios (these machines
are noisy; absolute seconds do not transfer). Writes ``results/benchmark.csv`` and prints a table.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from skimage import data
from tqdm.auto import tqdm

from .cams import METHODS, compute_cams, forward_backward
from .config import RESULTS_DIR
from .models import ModelBundle, load_model
from .timing import interleaved_medians

#: The targets of the benchmark issue, as (row name, ratio column, bound, "<=" or ">=").
TARGETS = [
    ("gc+lc+hybrid one pass / gradcam alone, batch 16", "<=", 1.10),
    ("worst single-backward method / forward only, batch 16", "<=", 1.15),
    ("insertion+deletion batched speed-up over per-step loop", ">=", 4.0),
]


def photo_batch(bundle: ModelBundle, n: int) -> torch.Tensor:
    """``n`` preprocessed real photos (scikit-image's, cycled)."""
    names = ["chelsea", "coffee", "rocket", "astronaut"]
    images = [bundle.preprocess(Image.fromarray(getattr(data, names[i % len(names)])())) for i in range(n)]
    return torch.stack(images).to(bundle.device)


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux ``/proc``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def floor_and_methods(bundle: ModelBundle, batch: int, repeats: int) -> list[dict]:
    """Per-image times of the floors and of every single-pass method at one batch size."""
    x = photo_batch(bundle, batch)
    gradient_methods = [m for m in METHODS if m in ("gradcam", "layercam", "hybrid")]

    def forward() -> None:
        with torch.inference_mode():
            bundle.model(x)

    fns = {"forward only": forward, "forward + backward to layer": lambda: forward_backward(bundle, x)}
    fns |= {m: (lambda m=m: compute_cams(bundle, x, (m,))) for m in gradient_methods}
    fns["gc+lc+hybrid one pass"] = lambda: compute_cams(bundle, x, ("gradcam", "layercam", "hybrid"))
    fns["gc, lc, hybrid as three passes"] = lambda: [compute_cams(bundle, x, (m,)) for m in gradient_methods]
    medians = interleaved_medians(fns, repeats=repeats, warmup=1, device=bundle.device)
    floor = medians["forward only"]
    return [{"measure": name, "batch": batch, "ms_per_image": 1000 * s / batch, "ratio_to_forward": s / floor}
            for name, s in medians.items()]


def memory_growth(bundle: ModelBundle, calls: int) -> list[dict]:
    """RSS after the first 10% of ``calls`` batch-1 CAM calls and after all of them."""
    x = photo_batch(bundle, 1)
    checkpoints = {}
    for i in tqdm(range(1, calls + 1), desc="repeated CAM calls"):
        compute_cams(bundle, x)
        if i in (calls // 10, calls):
            checkpoints[i] = rss_mb()
    first, last = checkpoints[calls // 10], checkpoints[calls]
    return [{"measure": f"RSS after {calls // 10} calls (MB)", "value": first},
            {"measure": f"RSS after {calls} calls (MB)", "value": last},
            {"measure": f"RSS growth over the last {calls - calls // 10} calls (MB)", "value": last - first}]


def peak_rss_of_evaluation(n_images: int) -> float:
    """Peak RSS (MB) of a fresh process computing CAMs for ``n_images`` images in batches of 16."""
    code = (f"import resource, torch; from helpers.bench import photo_batch; from helpers.cams import compute_cams;"
            f"from helpers.models import load_model; b = load_model('efficientnet_lite0', device='cpu');"
            f"[compute_cams(b, photo_batch(b, 16)) for _ in range({n_images} // 16)];"
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """The target checks: measured ratio, bound and verdict for each target."""
    def at16(measure: str) -> float:
        return float(rows[(rows.measure == measure) & (rows.batch == 16)].ms_per_image.iloc[0])

    singles = ["gradcam", "layercam", "hybrid", "forward + backward to layer"]
    measured = {
        TARGETS[0][0]: at16("gc+lc+hybrid one pass") / at16("gradcam"),
        TARGETS[1][0]: max(at16(m) for m in singles) / at16("forward only"),
    }
    return pd.DataFrame([{"measure": name, "value": measured[name], "target": f"{op} {bound}",
                          "met": measured[name] <= bound if op == "<=" else measured[name] >= bound}
                         for name, op, bound in TARGETS if name in measured])


def run(repeats: int = 7, calls: int = 1000, eval_images: int = 64, out: Path = RESULTS_DIR / "benchmark.csv",
        device: str | None = None) -> pd.DataFrame:
    """Run every measurement, print the table and write it to ``out``."""
    bundle = load_model("efficientnet_lite0", device=device)
    rows = pd.DataFrame([r for b in (1, 16) for r in floor_and_methods(bundle, b, repeats)])
    checks = summarise(rows)
    extra = pd.DataFrame(memory_growth(bundle, calls)
                         + [{"measure": f"peak RSS, CAMs of {eval_images} images (MB)",
                             "value": peak_rss_of_evaluation(eval_images)}])
    table = pd.concat([rows, checks, extra], ignore_index=True)
    stamp = f"{datetime.date.today()} | {platform.machine()} | {torch.get_num_threads()} threads | {bundle.device}"
    table.insert(0, "taken", stamp)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.4g")
    print(table.drop(columns="taken").to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"\n{stamp}; written to {out}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=1000, help="repeated CAM calls for the memory-growth check")
    parser.add_argument("--eval-images", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "benchmark.csv")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    run(args.repeats, args.calls, args.eval_images, args.out, args.device)


if __name__ == "__main__":
    main()
