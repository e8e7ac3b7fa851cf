"""ROAD, Remove And Debias (Rong et al., ICML 2022): faithfulness with imputed, not blanked, pixels.

Deletion and insertion replace pixels with a constant or a blur, and the shape of what was
removed leaks the class. ROAD fills the removed pixels by noisy linear imputation instead
(:func:`helpers.evaluation.imputation.noisy_linear_impute`, in pixel space [0, 1] before the
normalisation, as the reference code tleemann/road_evaluation does) and reads the softmax
probability of the explained class at each removed fraction p of :data:`ROAD_PERCENTAGES`:

* MoRF (most relevant first) removes the top fraction p of the pixels by the map (lower is
  better), LeRF (least relevant first) removes the rest and keeps the top p (higher is better);
  both remove ``int(p * H * W)`` top pixels or all but them, as the reference does.
* Pixels are ranked by :func:`helpers.evaluation.metrics.pixel_ranks` (ties broken by a seeded
  permutation, as the insertion curves); the reference instead adds 1e-4 Gaussian noise to the
  rescaled map before sorting.
* The imputation noise of image i is seeded from its tie seed, the order and p
  (:func:`noise_generator`), so a result does not depend on the batch it ran in, and the maps of
  one image get the same noise draws (common random numbers for paired comparisons).
* Rows whose imputed inputs are those of an earlier row (the same image, tie seed, explained class
  and MoRF masks, as when two methods' maps rank the pixels alike, e.g. a hybrid at a = 1 and
  Grad-CAM) are computed once and share its curves (:func:`distinct_rows`); the results are the
  same bit for bit.
* ``road_combined = (road_lerf - road_morf) / 2`` as pytorch-grad-cam's ``ROADCombined``. That
  library scores each order by default as the change from the intact image's score (its
  ``return_diff``); the intact score cancels in the combined value, which is the same either way.
* pytorch-grad-cam applies the imputer to the normalised tensor; here, as in the reference code,
  it runs on pixel values and the result is normalised afterwards.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from ..cam.bundle import ModelBundle
from ..cam.checks import check_class_idx, check_images
from ..config import SEED
from .imputation import noisy_linear_impute
from .metrics.perturbation import _check_batch, _seeds, class_probabilities, from_pixels, pixel_ranks, to_pixels

#: Removed fractions, the reference's configuration without retraining.
ROAD_PERCENTAGES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
ORDERS: tuple[str, ...] = ("morf", "lerf")
#: How far round-trip pixel values (normalised -> pixels) may leave [0, 1] before it is an error.
PIXEL_TOLERANCE = 1e-4


def road_masks(maps: torch.Tensor, tie_seed: int | Sequence[int] = SEED,
               percentages: Sequence[float] = ROAD_PERCENTAGES) -> dict[str, torch.Tensor]:
    """Removed pixels of each order: ``{"morf": (N, P, H, W), "lerf": (N, P, H, W)}`` bool.

    At fraction p the top ``int(p * H * W)`` pixels by :func:`pixel_ranks` are removed (MoRF) or
    kept (LeRF), so the two masks are complements. Each mask must remove at least one pixel and
    keep at least one, else ValueError.
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must be (N, H, W); got shape {tuple(maps.shape)}")
    n, h, w = maps.shape
    counts = [int(p * h * w) for p in percentages]
    bad = [p for p, k in zip(percentages, counts, strict=True) if not 0 < k < h * w]
    if bad:
        raise ValueError(f"percentages {bad} remove no pixel or every pixel of a {h} x {w} map; "
                         f"each must lie in (0, 1) and leave at least one pixel on either side")
    ranks = pixel_ranks(maps, tie_seed).cpu().view(n, 1, h, w)
    top = ranks < torch.tensor(counts).view(1, -1, 1, 1)
    return {"morf": top, "lerf": ~top}


def noise_generator(seed: int, order: str, p: float) -> torch.Generator:
    """The generator of the imputation noise of one image (tie seed ``seed``), order and fraction."""
    digest = hashlib.sha256(f"road/{int(seed)}/{order}/{p!r}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def distinct_rows(pixels: torch.Tensor, masks: torch.Tensor, seeds: Sequence[int],
                  idx: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """Rows of a ROAD batch that need computing: ``(first, where)``, the first row of each distinct
    (image pixels, MoRF masks, tie seed, class) and, for every row, its position in ``first``. Rows
    that agree on all four get the same imputations, noise draws and forwards."""
    seen: dict[tuple, int] = {}
    first, where = [], []
    for i in range(len(seeds)):
        key = (int(seeds[i]), int(idx[i]), hashlib.sha256(pixels[i].numpy().tobytes()).digest(),
               hashlib.sha256(np.packbits(masks[i].numpy()).tobytes()).digest())
        if key not in seen:
            seen[key] = len(first)
            first.append(i)
        where.append(seen[key])
    return first, torch.tensor(where)


def pixel_images(images: torch.Tensor, bundle: ModelBundle) -> torch.Tensor:
    """Normalised images (N, 3, H, W) -> pixel values in [0, 1] on the CPU, the round trip's rounding
    clamped; values further than :data:`PIXEL_TOLERANCE` outside [0, 1] are a ValueError."""
    pixels = to_pixels(images.detach(), bundle.mean, bundle.std).cpu()
    low, high = float(pixels.min()), float(pixels.max())
    if low < -PIXEL_TOLERANCE or high > 1 + PIXEL_TOLERANCE:
        raise ValueError(f"images in pixel space (x * std + mean) span [{low:.4g}, {high:.4g}], outside [0, 1]: "
                         f"ROAD needs images normalised with the bundle's mean {tuple(bundle.mean)} and std "
                         f"{tuple(bundle.std)}")
    return pixels.clamp(0, 1)


def road_curves(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int],
                tie_seed: int | Sequence[int] = SEED, percentages: Sequence[float] = ROAD_PERCENTAGES,
                noise: float = 0.01, chunk_size: int = 32) -> dict[str, torch.Tensor]:
    """ROAD curves: ``{"morf": (N, P), "lerf": (N, P)}``, the probability of ``class_idx`` at each p.

    ``images`` are the model's normalised inputs (N, C, H, W), ``maps`` (N, H, W). Imputation
    runs in pixel space (module docstring); the imputed images run in chunked forwards of
    ``chunk_size`` on the inference backend, imputed chunk by chunk (memory stays bounded).
    Bad input is a ValueError before any imputation or forward.
    """
    check_images(images, bundle, maps)
    _check_batch(images, maps)
    n = images.shape[0]
    idx = check_class_idx(class_idx, n, len(bundle.class_names))
    if not 0 <= noise < float("inf"):
        raise ValueError(f"noise must be a finite number >= 0; got {noise}")
    seeds = _seeds(tie_seed, n)
    masks = road_masks(maps, seeds, percentages)
    pixels = pixel_images(images, bundle)
    first, where = distinct_rows(pixels, masks["morf"], seeds, idx)
    jobs = [(i, order, k) for i in first for order in ORDERS for k in range(len(percentages))]

    def batch(start: int, stop: int) -> torch.Tensor:
        imputed = [noisy_linear_impute(pixels[i], masks[order][i, k], noise,
                                       noise_generator(seeds[i], order, percentages[k]))
                   for i, order, k in jobs[start:stop]]
        return from_pixels(torch.stack(imputed), bundle.mean, bundle.std).to(images.dtype).to(images.device)

    probs = class_probabilities(bundle, batch, len(jobs),
                                idx[first].repeat_interleave(len(ORDERS) * len(percentages)), chunk_size)
    probs = probs.view(len(first), len(ORDERS), len(percentages))[where]
    return {order: probs[:, j] for j, order in enumerate(ORDERS)}


def road_scores(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int],
                tie_seed: int | Sequence[int] = SEED, percentages: Sequence[float] = ROAD_PERCENTAGES,
                noise: float = 0.01, chunk_size: int = 32) -> dict[str, torch.Tensor]:
    """ROAD scores per image, each (N,): ``road_morf`` and ``road_lerf`` (means over p of
    :func:`road_curves`; lower / higher is better), ``road_combined`` = (lerf - morf) / 2, and
    the per-p values ``road_morf_10``, ``road_lerf_10``, ... (the key ends in 100 p)."""
    curves = road_curves(bundle, images, maps, class_idx, tie_seed, percentages, noise, chunk_size)
    morf, lerf = curves["morf"].mean(dim=1), curves["lerf"].mean(dim=1)
    out = {"road_morf": morf, "road_lerf": lerf, "road_combined": (lerf - morf) / 2}
    for order in ORDERS:
        out |= {f"road_{order}_{round(100 * p)}": curves[order][:, k] for k, p in enumerate(percentages)}
    return out
