"""Localisation metrics against object masks: relevance mass and rank accuracy, top-k intersection, batched.

Each takes ``masks=`` (N, H, W) booleans, the pixels of the explained object (e.g. the boxes of the
class, :func:`helpers.evaluation.metrics.localisation.box_mask`). As the other localisation metrics of
the package: an image without object pixels scores NaN (as Quantus), an all-zero map scores 0 (Quantus
gives NaN or a score of an arbitrary pixel order). Pixels are ranked by :func:`.perturbation.pixel_ranks`
(ties broken by the seeded order ``tie_seed``, never by position). Defaults are Quantus 0.6.0's:
``abs=False``, ``normalise=True`` (per map, see :mod:`.registry`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ...cam.bundle import ModelBundle
from ...cam.checks import check_maps
from ...config import SEED
from .perturbation import pixel_ranks
from .registry import MapOptions, attributions, metric


@dataclass(frozen=True)
class RankOptions(MapOptions):
    """``tie_seed``: the seeded order that breaks ties in the pixel ranking (one int, or one per map)."""

    tie_seed: int | Sequence[int] = SEED


@dataclass(frozen=True)
class TopKOptions(RankOptions):
    """``k`` pixels; ``concept_influence``: divide by the object's share of the image (Quantus' names)."""

    k: int = 1000
    concept_influence: bool = False


def _inputs(images: torch.Tensor, maps: torch.Tensor, masks: torch.Tensor, options: MapOptions,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked maps and masks, flattened to (N, H*W)."""
    check_maps(maps, images)
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool or masks.shape != maps.shape:
        raise ValueError(f"masks must be a bool tensor shaped like the maps {tuple(maps.shape)}; got "
                         f"{getattr(masks, 'dtype', type(masks).__name__)} {tuple(getattr(masks, 'shape', ()))}")
    return attributions(maps, options).flatten(1), masks.flatten(1).cpu()


def _defined(score: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``score`` with the conventions: NaN without object pixels, 0 for an all-zero map."""
    score = torch.where((a != 0).any(1), score, 0.0)
    return torch.where(s.any(1), score, float("nan"))


def _top_hits(a: torch.Tensor, s: torch.Tensor, k: torch.Tensor, tie_seed: int | Sequence[int]) -> torch.Tensor:
    """How many of each map's ``k`` (N,) highest-ranked pixels lie in its mask."""
    return ((pixel_ranks(a, tie_seed) < k[:, None]) & s).sum(1).double()


#: Both relevance accuracies' paper.
ARRAS_2022 = ("Arras et al. 2022, CLEVR-XAI: a benchmark dataset for the ground truth evaluation of neural "
              "network explanations (Information Fusion)")


@metric("relevance_mass_accuracy", MapOptions, family="localisation", direction="higher", needs=("masks",),
        reference=ARRAS_2022)
def relevance_mass_accuracy(bundle: ModelBundle | None, images: torch.Tensor, maps: torch.Tensor,
                            class_idx: int | Sequence[int], options: MapOptions, masks: torch.Tensor) -> torch.Tensor:
    """Share of each map's relevance that falls on the object (Arras et al. 2022): ``sum_{S} a / sum a``."""
    a, s = _inputs(images, maps, masks, options)
    total = a.sum(1)
    return _defined((a * s).sum(1) / torch.where(total != 0, total, 1.0), a, s)


@metric("relevance_rank_accuracy", RankOptions, family="localisation", direction="higher", needs=("masks",),
        reference=ARRAS_2022)
def relevance_rank_accuracy(bundle: ModelBundle | None, images: torch.Tensor, maps: torch.Tensor,
                            class_idx: int | Sequence[int], options: RankOptions, masks: torch.Tensor) -> torch.Tensor:
    """Share of the K = |S| highest-ranked pixels that lie on the object S (Arras et al. 2022)."""
    a, s = _inputs(images, maps, masks, options)
    size = s.sum(1)
    return _defined(_top_hits(a, s, size, options.tie_seed) / size.clamp_min(1), a, s)


@metric("top_k_intersection", TopKOptions, family="localisation", direction="higher", needs=("masks",),
        reference="Theiner et al. 2021, Interpretable semantic photo geolocation (WACV)")
def top_k_intersection(bundle: ModelBundle | None, images: torch.Tensor, maps: torch.Tensor,
                       class_idx: int | Sequence[int], options: TopKOptions, masks: torch.Tensor) -> torch.Tensor:
    """Share of the ``k`` highest-ranked pixels that lie on the object (Theiner et al. 2021); with
    ``concept_influence``, divided by the object's share of the image."""
    a, s = _inputs(images, maps, masks, options)
    k = options.k
    if not 0 < k <= a.shape[1]:
        raise ValueError(f"k must be in 1..{a.shape[1]} (the pixel count), got {k}")
    score = _top_hits(a, s, torch.full((len(a),), k), options.tie_seed) / k
    if options.concept_influence:
        score = score * a.shape[1] / s.sum(1).clamp_min(1)
    return _defined(score, a, s)
