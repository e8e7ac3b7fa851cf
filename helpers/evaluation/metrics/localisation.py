"""Localisation metrics against boxes: pointing game, energy-based pointing game, IoU of the largest region.


**Localisation** uses boxes (x0, y0, x1, y1) in crop pixel coordinates, where pixel (row i,
column j) covers [j, j+1) x [i, i+1) and its centre is (j + 0.5, i + 0.5). A map that is all
zero scores 0 on every localisation metric (never NaN); an image without a box of its class
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage
from torchvision.ops import box_iou as pairwise_iou

from ...config import SEED
from ...data.images import Box
from .perturbation import pixel_ranks


def pixel_distance_to_box(size: tuple[int, int], box: Box) -> torch.Tensor:
    """Euclidean distance (H, W) from each pixel centre (j + 0.5, i + 0.5) to the box (0 inside)."""
    x0, y0, x1, y1 = box
    cy = torch.arange(size[0], dtype=torch.float64)[:, None] + 0.5
    cx = torch.arange(size[1], dtype=torch.float64)[None, :] + 0.5
    dx = (x0 - cx).clamp_min(0) + (cx - x1).clamp_min(0)
    dy = (y0 - cy).clamp_min(0) + (cy - y1).clamp_min(0)
    return torch.sqrt(dx ** 2 + dy ** 2)


def box_mask(size: tuple[int, int], boxes: Sequence[Box], tolerance: float = 0.0) -> torch.Tensor:
    """Pixels (H, W) whose centre lies within ``tolerance`` pixels of any of the boxes."""
    mask = torch.zeros(size, dtype=torch.bool)
    for box in boxes:
        mask |= pixel_distance_to_box(size, box) <= tolerance
    return mask


def _per_image(maps: torch.Tensor, boxes: Sequence[Sequence[Box]],
               score: Callable[[int, torch.Tensor, list], float]) -> torch.Tensor:
    """``score(i, map_i, boxes_i)`` per image; NaN without boxes, 0 for an all-zero map."""
    if len(boxes) != len(maps):
        raise ValueError(f"boxes must hold one list per map: {len(boxes)} lists for {len(maps)} maps")
    return torch.tensor([float("nan") if not b else 0.0 if not (m > 0).any() else score(i, m, list(b))
                         for i, (m, b) in enumerate(zip(maps.detach().cpu(), boxes, strict=True))], dtype=torch.float64)


def pointing_game(maps: torch.Tensor, boxes: Sequence[Sequence[Box]], tolerance: float = 15.0,
                  tie_seed: int | Sequence[int] = SEED) -> torch.Tensor:
    """Pointing game (Zhang et al., ECCV 2016 / IJCV 2018): 1 if the map's maximum is a hit, else 0.

    ONE maximiser per map: the top pixel of :func:`pixel_ranks` (ties for the maximum go to the first
    in the seeded order ``tie_seed``, as in the insertion/deletion ranking). A hit: it lies within
    ``tolerance`` pixels (Euclidean, pixel centres) of a box of the class. All-zero map: 0. No box: NaN.
    """
    top = pixel_ranks(maps, tie_seed).argmin(dim=1).tolist()

    def hit(i: int, m: torch.Tensor, b: list) -> float:
        row, col = divmod(top[i], m.shape[-1])
        return float(box_mask(tuple(m.shape), b, tolerance)[row, col])
    return _per_image(maps, boxes, hit)


def energy_pointing_game(maps: torch.Tensor, boxes: Sequence[Sequence[Box]],
                         max_box_fraction: float | None = None) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., CVPRW 2020, Score-CAM): sum of the map inside the boxes / total.

    Pixels count as inside when their centre lies in a box of the class (union of boxes).
    ``max_box_fraction``: score only images whose boxes cover less than this fraction of the
    image (Score-CAM's paper reports the metric on boxes under half the image); NaN for the others.
    All-zero map: 0. No box: NaN.
    """
    def energy(_: int, m: torch.Tensor, b: list) -> float:
        inside = box_mask(tuple(m.shape), b)
        if max_box_fraction is not None and inside.float().mean() >= max_box_fraction:
            return float("nan")
        return float(m[inside].sum() / m.sum())
    return _per_image(maps, boxes, energy)


def largest_region_box(map_: torch.Tensor, threshold: float = 0.2) -> Box | None:
    """Box (x0, y0, x1, y1) around the largest 8-connected region of ``map >= threshold * max(map)``.

    As in CAM's localisation (Zhou et al., CVPR 2016: 20% of the maximum). Equal-sized regions:
    the first in row-major order (lowest label). None for an all-zero map.
    """
    m = map_.detach().cpu().numpy()
    if not (m > 0).any():
        return None
    labels, _ = ndimage.label(m >= threshold * m.max(), structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    rows, cols = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    return (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1), by ``torchvision.ops.box_iou``; 0 for empty boxes."""
    return _ious(a, [b])[0]


def _ious(a: Box, boxes: Sequence[Box]) -> list[float]:
    """IoU of box ``a`` with each of ``boxes`` (float64; 0 where the union is empty)."""
    pair = pairwise_iou(torch.tensor([a], dtype=torch.float64), torch.tensor(list(boxes), dtype=torch.float64))
    return torch.nan_to_num(pair[0], nan=0.0).tolist()


def box_iou(maps: torch.Tensor, boxes: Sequence[Sequence[Box]], threshold: float = 0.2) -> torch.Tensor:
    """IoU of :func:`largest_region_box` with the best-matching box of the class, per image.

    All-zero map: 0. No box: NaN.
    """
    return _per_image(maps, boxes, lambda _, m, b: max(_ious(largest_region_box(m, threshold), b)))
