"""Complexity metrics of explanation maps: sparseness (Gini), entropy and effective complexity, batched.

They read only the maps (the bundle, images and classes are taken for the common call; the images give
the shape the maps are checked against). Defaults are Quantus 0.6.0's: ``abs=True``, ``normalise=True``
(per map, see :mod:`.registry`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ...cam.bundle import ModelBundle
from ...cam.checks import check_maps
from .registry import MapOptions, attributions, metric


@dataclass(frozen=True)
class ComplexityOptions(MapOptions):
    """Quantus' defaults for its complexity metrics: |map|, each map divided by its maximum."""

    abs: bool = True


@dataclass(frozen=True)
class EffectiveComplexityOptions(ComplexityOptions):
    """``eps``: the value a pixel's attribution must exceed to count."""

    eps: float = 1e-5


def _read(images: torch.Tensor, maps: torch.Tensor, options: MapOptions) -> torch.Tensor:
    check_maps(maps, images)
    return attributions(maps, options).flatten(1)


@metric("sparseness", ComplexityOptions, family="complexity", direction="higher",
        reference="Chalasani et al. 2020, Concise explanations of neural networks using adversarial training (ICML)")
def sparseness(bundle: ModelBundle | None, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int],
               options: ComplexityOptions) -> torch.Tensor:
    """Gini index of each map's values (Chalasani et al. 2020): 0 for a constant map, near 1 for one hot pixel.

    With the d values sorted ascending, v_(1) <= ... <= v_(d):
    ``G = sum_k (2k - d - 1) v_(k) / (d sum_k v_(k))``, after adding 1e-7 to every value as Quantus does
    (so an all-zero map is a constant map, G = 0, never NaN).
    """
    a = torch.sort(_read(images, maps, options) + 1e-7, dim=1).values
    d = a.shape[1]
    k = torch.arange(1, d + 1, dtype=a.dtype)
    return ((2 * k - d - 1) * a).sum(1) / (d * a.sum(1))


@metric("entropy_complexity", ComplexityOptions, family="complexity", direction="lower",
        reference="Bhatt et al. 2020, Evaluating and aggregating feature-based model explanations (IJCAI)")
def entropy_complexity(bundle: ModelBundle | None, images: torch.Tensor, maps: torch.Tensor,
                       class_idx: int | Sequence[int], options: ComplexityOptions) -> torch.Tensor:
    """Entropy of each map's fractional contributions p_i = |a_i| / sum_j |a_j| (Bhatt et al. 2020):
    ``-sum_i p_i ln(p_i + 1e-12)``; ln(d) for a constant map of d pixels, 0 for one hot pixel.

    Quantus gives NaN for an all-zero map (0 / 0); here it scores as a constant map, ln(d): no pixel is
    singled out.
    """
    a = _read(images, maps, options).abs()
    total = a.sum(1, keepdim=True)
    p = torch.where(total > 0, a / torch.where(total > 0, total, 1.0), 1.0 / a.shape[1])
    return -(p * torch.log(p + 1e-12)).sum(1)


@metric("effective_complexity", EffectiveComplexityOptions, family="complexity", direction="lower",
        reference="Nguyen and Martinez 2020, On quantitative aspects of model interpretability (arXiv:2007.07584)")
def effective_complexity(bundle: ModelBundle | None, images: torch.Tensor, maps: torch.Tensor,
                         class_idx: int | Sequence[int], options: EffectiveComplexityOptions) -> torch.Tensor:
    """Number of pixels whose attribution exceeds ``eps`` (Nguyen and Martinez 2020), as a float; 0 for an
    all-zero map."""
    return (_read(images, maps, options) > options.eps).sum(1).double()
