"""The six methods added after the thesis' ten, against pytorch-grad-cam 1.5.7 on the same photos, in one run.

Ablation-CAM is timed three ways: the closed form at Lite0's GAP + linear head (no ablated forward), the
package's batched ablations at ``stages.4`` (where no closed form exists), and pytorch-grad-cam's
``AblationCAM`` at the head (one ablated forward per channel, 1280 of them, on the whole network above the
layer). Every other method is timed against its pytorch-grad-cam class at the head. Each call runs
``repeats`` times, the package's and the reference's in turn (interleaved), and the fastest of each counts
(a reference's time includes building its CAM object, which registers its hooks: well under a millisecond).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..cam.bundle import ModelBundle
from ..cam.engine import compute_cams
from .common import photo_batch

#: The package's method -> pytorch-grad-cam's class of the same name.
REFERENCE = {"eigencam": "EigenCAM", "kpcacam": "KPCA_CAM", "ablationcam": "AblationCAM",
             "shapleycam": "ShapleyCAM", "finercam": "FinerCAM", "fullgrad": "FullGrad"}


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _reference(bundle: ModelBundle, name: str, images: torch.Tensor) -> Callable[[], object]:
    """One call of pytorch-grad-cam's method: its CAM object is built and closed within the call, so its hooks
    never record the other calls' forwards (with all six objects alive at once, Ablation-CAM's 1280 ablated
    forwards were recorded by every other object's hooks: 24 GB)."""
    import pytorch_grad_cam as pgc

    def call() -> object:
        with getattr(pgc, REFERENCE[name])(bundle.model, [bundle.model.get_submodule("head")]) as cam:
            if name == "ablationcam":
                cam.batch_size = 64
            return cam(images) if name == "finercam" else cam(images, None)
    return call


def method_speed(bundle: ModelBundle, repeats: int = 3, photos: int = 1,
                 names: tuple[str, ...] = tuple(REFERENCE)) -> list[dict]:
    """ms per photo of each method of ``names`` (of :data:`REFERENCE`), the package's and pytorch-grad-cam's,
    and their ratio; Ablation-CAM also at ``stages.4`` (batched ablations)."""
    images = photo_batch(bundle, photos)
    calls = {(name, "head"): (lambda n=name: compute_cams(bundle, images, n, layer="head")) for name in names}
    if "ablationcam" in names:
        calls[("ablationcam", "stages.4")] = lambda: compute_cams(bundle, images, "ablationcam", layer="stages.4")
    calls |= {(name, "reference"): _reference(bundle, name, images) for name in names}
    for key, fn in calls.items():  # warm-up: the split, the engine session (a reference's call builds nothing)
        if key[1] != "reference":
            fn()
    times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, fn in calls.items():
            times[key].append(_seconds(fn))
    best = {key: min(t) for key, t in times.items()}
    rows = []
    for (name, layer), sec in best.items():
        if layer == "reference":
            continue
        ref = best[(name, "reference")] if layer == "head" else float("nan")
        how = "closed form" if (name, layer) == ("ablationcam", "head") else \
            "batched ablations" if name == "ablationcam" else ""
        rows.append({"measure": f"{name} at {layer}{f' ({how})' if how else ''}", "batch": photos,
                     "ms_per_image": 1000 * sec / photos, "reference_ms_per_image": 1000 * ref / photos,
                     "reference_over_package": ref / sec})
    return rows
