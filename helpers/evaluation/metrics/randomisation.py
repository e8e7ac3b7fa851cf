"""Randomisation metrics: the random logit test (Sixt et al. 2020), which re-explains another class.

The cascading model randomisation is :mod:`helpers.evaluation.sanity`. Re-explaining runs through
:func:`helpers.cam.engine.compute_cams`, one pass per batch, with the CAM method ``method``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from skimage.metrics import structural_similarity

from ...cam.bundle import ModelBundle
from ...cam.checks import check_class_idx, check_images
from ...cam.engine import Method, compute_cams
from .registry import MapOptions, attributions, metric


@dataclass(frozen=True)
class RandomLogitOptions(MapOptions):
    """``num_classes`` the classes drawn from (None: the model's, 1000 for ImageNet as Quantus' default),
    ``seed`` of the draw (Quantus' 42), ``method`` the CAM method that re-explains."""

    num_classes: int | None = None
    seed: int = 42
    method: Method = "gradcam"


def off_classes(class_idx: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """One class per image other than its own, uniform over the other ``num_classes - 1``, drawn as Quantus
    0.6.0 draws it (``np.random.seed(seed)``, one ``randint`` per batch), so the same batch gets the same
    classes."""
    pick = torch.from_numpy(np.random.RandomState(seed).randint(0, num_classes - 1, len(class_idx)))
    return pick + (pick >= class_idx).long()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004; scikit-image's 7 x 7 windows) of each pair of 2-D maps
    (N, H, W), the data range being that of the pair together, as Quantus sets it; 1 for two equal
    constant maps."""
    out = []
    for x, y in zip(a.double().numpy(), b.double().numpy(), strict=True):
        span = float(max(x.max(), y.max()) - min(x.min(), y.min()))
        out.append(1.0 if span == 0 else structural_similarity(x, y, data_range=span))
    return torch.tensor(out, dtype=torch.float64)


@metric("random_logit", RandomLogitOptions, family="randomisation", direction="lower", needs=("model", "explain"),
        reference="Sixt et al. 2020, When explanations lie: why many modified BP attributions fail (ICML)")
def random_logit(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int],
                 options: RandomLogitOptions) -> torch.Tensor:
    """SSIM between each map and the map of a random other class (:func:`off_classes`), re-explained by
    ``method`` (Sixt et al. 2020): a map that ignores the class scores near 1.

    The SSIM compares the maps as images, as the paper does; Quantus 0.6.0 flattens them to 1-D
    signals first, so its windows run along raster rows.
    """
    check_images(images, bundle, maps)
    k = len(bundle.class_names) if options.num_classes is None else options.num_classes
    idx = check_class_idx(class_idx, len(images), k)
    other = compute_cams(bundle, images, options.method, target=off_classes(idx, k, options.seed).tolist())
    return ssim(attributions(maps, options), attributions(next(iter(other.values())), options))
