"""Benchmark of the CAM engine and the evaluation: floors, one-pass methods, backends, curves and memory."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import onnxruntime
import torch

from ..cam.backend import infer, onnx_path
from ..cam.bundle import ModelBundle
from ..cam.engine import compute_cams, forward_backward
from ..cam.inference import predict_topk
from ..config import progress_bar
from ..data.images import Sample
from ..evaluation.metrics import (
    MODES,
    insertion_deletion_auc,
    insertion_deletion_curves,
)
from ..evaluation.runner import THESIS_ALPHA, EvalConfig, default_specs, evaluate
from ..evaluation.timing import interleaved_medians
from .common import photo_batch, rss_mb


def floor_and_methods(bundle: ModelBundle, batch: int, repeats: int) -> list[dict]:
    """Per-image times of the floors and of every single-pass method at one batch size."""
    x = photo_batch(bundle, batch)
    gradient_methods = ["gradcam", "layercam", "hybrid"]

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


def floor_session(bundle: ModelBundle, shape: tuple[int, ...]) -> onnxruntime.InferenceSession:
    """The floor: a bare ONNX Runtime session of the bundle's exported model (per-image input ``shape``) with
    the runtime's defaults, torch's thread count, and workers that stop spinning when a run returns.

    By default they spin on for 2^20 pauses after each run (tens of ms where PAUSE is slow, as on AVX-512
    Xeons), taking a core from whatever is timed next in the interleaved round: the CAM pass, measured
    right after the floor, came out 30-50 ms per batch of 16 slower on 2 cores. While it runs, the floor
    spins as by default.
    """
    infer(bundle, torch.zeros((1, *shape), device=bundle.device))  # exported (or found in the cache) first
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return onnxruntime.InferenceSession(str(onnx_path(bundle.model, bundle.name, shape)), options,
                                        providers=["CPUExecutionProvider"])


def engine_speed(bundle: ModelBundle, eval_batch: int, cam_batch: int, repeats: int) -> list[dict]:
    """Evaluation forwards (eager torch, the package's backend, a bare ONNX Runtime session: the floor)
    at ``eval_batch``; GC + LC + hybrid in one pass and the opt-in bf16 forward at ``cam_batch``
    (the floor: :func:`floor_session`)."""
    x, xc = photo_batch(bundle, eval_batch), photo_batch(bundle, cam_batch)
    eager, fast = (dataclasses.replace(bundle, backend="torch"), dataclasses.replace(bundle, precision="bf16"))
    bare = floor_session(bundle, tuple(x.shape[1:]))  # the model exported (or found in the cache) before any timing
    arrays = {len(x): x.cpu().numpy(), len(xc): xc.cpu().numpy()}
    fns = {"evaluation forward, eager torch": lambda: infer(eager, x),
           "evaluation forward, package backend": lambda: infer(bundle, x),
           "evaluation forward, bare onnxruntime": lambda: bare.run(None, {"x": arrays[len(x)]}),
           "bare onnxruntime forward (cam batch)": lambda: bare.run(None, {"x": arrays[len(xc)]}),
           "gc+lc+hybrid one pass (package backend)": lambda: compute_cams(bundle, xc),
           "forward, package backend, bf16": lambda: infer(fast, xc)}
    medians = interleaved_medians(fns, repeats=repeats, warmup=1, device=bundle.device)
    sizes = {name: len(x) if name.startswith("evaluation") else len(xc) for name in fns}
    return [{"measure": name, "batch": sizes[name], "ms_per_image": 1000 * s / sizes[name]}
            for name, s in medians.items()]


def bf16_auc_shift(bundle: ModelBundle, n_images: int, steps: int) -> list[dict]:
    """How far the opt-in bf16 precision moves insertion / deletion AUCs of Grad-CAM maps vs fp32."""
    x = photo_batch(bundle, n_images)
    maps = compute_cams(bundle, x, ("gradcam",))
    fp32, bf16 = (insertion_deletion_auc(b, x, maps["gradcam"], maps.class_idx, steps=steps)
                  for b in (bundle, dataclasses.replace(bundle, precision="bf16")))
    return [{"measure": f"bf16 vs fp32, {mode} AUC, max abs difference ({n_images} images)", "batch": n_images,
             "value": float((fp32[mode] - bf16[mode]).abs().max())} for mode in MODES]


def memory_growth(bundle: ModelBundle, calls: int) -> list[dict]:
    """RSS after the first 10% of ``calls`` batch-1 CAM calls and after all of them."""
    x = photo_batch(bundle, 1)
    checkpoints = {}
    for i in progress_bar(range(1, calls + 1), desc="repeated CAM calls"):
        compute_cams(bundle, x)
        if i in (calls // 10, calls):
            checkpoints[i] = rss_mb()
    first, last = checkpoints[calls // 10], checkpoints[calls]
    return [{"measure": f"RSS after {calls // 10} calls (MB)", "value": first},
            {"measure": f"RSS after {calls} calls (MB)", "value": last},
            {"measure": f"RSS growth over the last {calls - calls // 10} calls (MB)", "value": last - first}]


#: Largest RSS growth (MB) after warm-up that still counts as flat memory.
RSS_LIMIT_MB = 50.0


def rss_flat(bundle: ModelBundle, calls: int = 1000, eval_images: int = 200) -> list[dict]:
    """Memory stays flat: RSS growth after a warm-up (the first 10%) over ``calls`` repeated CAM calls
    and over an evaluation of ``eval_images`` images with every method, each checked against
    :data:`RSS_LIMIT_MB`.

    The evaluation cycles four photos with their predicted classes, without cache or timing, on
    a short protocol (10-step curves): what leaks per image does not depend on the step count.
    """
    cam_growth = memory_growth(bundle, calls)[-1]["value"]
    photos = photo_batch(bundle, 4).cpu()
    classes = [top[0][0] for top in predict_topk(bundle, photos, 1)]
    samples = [Sample(f"photo{i}.png", photos[i % 4], classes[i % 4], "", [], "photo", "test", "skimage")
               for i in range(eval_images)]
    specs, cfg = default_specs(THESIS_ALPHA), EvalConfig(rise_steps=10, thesis_steps=10)
    first = max(1, eval_images // 10)
    evaluate(bundle, samples[:first], specs, cfg, cache_dir=None, progress=False, time_first=0)
    before = rss_mb()
    evaluate(bundle, samples[first:], specs, cfg, cache_dir=None, time_first=0)
    growth = [(f"RSS growth over {calls - calls // 10} CAM calls after warm-up (MB)", cam_growth),
              (f"RSS growth over {eval_images - first} evaluated images, every method, after warm-up (MB)",
               rss_mb() - before)]
    return [{"measure": name, "value": value, "target": f"<= {RSS_LIMIT_MB:g}", "met": value <= RSS_LIMIT_MB}
            for name, value in growth]


def curve_speed(bundle: ModelBundle, n_images: int, steps: int, repeats: int, chunk_size: int) -> list[dict]:
    """Insertion + deletion curves of Grad-CAM maps: chunked batches vs one forward per step."""
    x = photo_batch(bundle, n_images)
    maps = compute_cams(bundle, x, ("gradcam",))
    idx = maps.class_idx.tolist()

    def curves(chunk: int):
        return lambda: [insertion_deletion_curves(bundle, x, maps["gradcam"], idx, mode, steps, chunk_size=chunk)
                        for mode in MODES]

    medians = interleaved_medians({"batched": curves(chunk_size), "per step": curves(1)}, repeats=repeats,
                                  warmup=1, device=bundle.device)
    return [{"measure": f"insertion+deletion ({steps} steps), {name}", "batch": n_images,
             "images_per_s": n_images / s} for name, s in medians.items()]


#: Speed-up of ROAD's imputation over pytorch-grad-cam's ``NoisyLinearImputer`` that the issue asks for.


def peak_rss_of_evaluation(n_images: int, batch: int, steps: int) -> float:
    """Peak RSS (MB) of a fresh process evaluating ``n_images`` images in batches of ``batch``.

    Each batch: Grad-CAM, LayerCAM and hybrid maps, then insertion and deletion AUC of each
    (``steps`` steps per curve).
    """
    code = (f"import resource; from helpers.bench.common import photo_batch; "
            f"from helpers.cam.engine import compute_cams;"
            f"from helpers.evaluation.metrics import insertion_deletion_auc; from helpers.cam.models import load_model;"
            f"b = load_model('efficientnet_lite0', device='cpu')\n"
            f"for _ in range({n_images} // {batch}):\n"
            f"    x = photo_batch(b, {batch}); m = compute_cams(b, x)\n"
            f"    [insertion_deletion_auc(b, x, v, m.class_idx, steps={steps}) for v in m.values()]\n"
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])
