"""Benchmark of ROAD's noisy linear imputation against pytorch-grad-cam's, side by side in one run."""
from __future__ import annotations

import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer

from ..cam.bundle import ModelBundle
from ..cam.engine import compute_cams
from ..data.imagenet import study_samples
from ..evaluation.imputation import noisy_linear_impute
from ..evaluation.metrics import class_probabilities, from_pixels
from ..evaluation.road import (
    ORDERS,
    ROAD_PERCENTAGES,
    noise_generator,
    pixel_images,
    road_masks,
    road_scores,
)
from ..evaluation.timing import interleaved_medians

ROAD_TARGET = 5.0


def road_speed(bundle: ModelBundle, repeats: int = 5, percentages: tuple[float, ...] = (0.1, 0.5, 0.9)) -> list[dict]:
    """ROAD on one real photo and its Grad-CAM map, in one interleaved run: pytorch-grad-cam's
    ``NoisyLinearImputer`` vs :func:`noisy_linear_impute` on the MoRF masks at ``percentages``
    (ms and ratio, against :data:`ROAD_TARGET`); then seconds per image and method of a whole
    :func:`road_scores` (every order and p of :data:`ROAD_PERCENTAGES`) and its two parts, the
    imputations and the forwards, beside the reference's imputations of the same masks."""
    x = torch.stack([s.tensor for s in study_samples(bundle, "test", limit=1)[1]]).to(bundle.device)
    maps = compute_cams(bundle, x, ("gradcam",))
    cam, cls = maps["gradcam"], maps.class_idx
    pixels, reference = pixel_images(x, bundle)[0], NoisyLinearImputer(noise=0.01)
    morf = road_masks(cam, percentages=percentages)["morf"][0]
    fns = {}
    for k, p in enumerate(percentages):
        fns[f"reference {p}"] = lambda m=morf[k]: reference(pixels, (~m).to(torch.uint8))
        fns[f"ours {p}"] = lambda m=morf[k], p=p: noisy_linear_impute(pixels, m, 0.01, noise_generator(0, "morf", p))
    per_p = interleaved_medians(fns, repeats=repeats, warmup=1)
    rows = []
    for p in percentages:
        ratio = per_p[f"reference {p}"] / per_p[f"ours {p}"]
        rows += [{"measure": f"ROAD imputation, MoRF p={p}, {who}", "batch": 1,
                  "ms_per_image": 1000 * per_p[f"{who} {p}"]}
                 for who in ("reference", "ours")]
        rows.append({"measure": f"ROAD imputation, MoRF p={p}, reference / ours", "batch": 1, "value": ratio,
                     "target": f">= {ROAD_TARGET:g}", "met": ratio >= ROAD_TARGET})
    masks = road_masks(cam)
    jobs = [(order, k, p) for order in ORDERS for k, p in enumerate(ROAD_PERCENTAGES)]

    def imputed() -> list[torch.Tensor]:
        return [noisy_linear_impute(pixels, masks[o][0, k], 0.01, noise_generator(0, o, p)) for o, k, p in jobs]

    inputs = from_pixels(torch.stack(imputed()), bundle.mean, bundle.std).to(bundle.device)
    whole = interleaved_medians({
        "road_scores (7 MoRF + 7 LeRF imputations, 14 forwards)": lambda: road_scores(bundle, x, cam, cls),
        "its 14 imputations": imputed,
        "its 14 forwards": lambda: class_probabilities(bundle, lambda a, b: inputs[a:b], len(jobs),
                                                       cls.repeat(len(jobs))),
        "the reference's 14 imputations": lambda: [reference(pixels, (~masks[o][0, k]).to(torch.uint8))
                                                   for o, k, _ in jobs],
    }, repeats=max(1, repeats // 2), warmup=1, device=bundle.device)
    return rows + [{"measure": f"ROAD per image and method: {name} (s)", "batch": 1, "value": s}
                   for name, s in whole.items()]
