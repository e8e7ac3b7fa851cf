"""Faithfulness and localisation metrics of explanation maps, batched.

Conventions: ``images`` are preprocessed batches (N, 3, H, W) in the model's normalised space;
``maps`` are (N, H, W) in [0, 1] at input resolution; ``class_idx`` is an int or N ints; the
class score is the softmax probability of the class. Every metric that runs the model runs it
as chunked batched forwards under ``torch.inference_mode()`` (``chunk_size`` inputs per
forward), never one forward per step or per image.

**Substrates** (what replaces / underlies pixels), all in normalised space:

* ``"black"``: pixel value 0 in every channel, i.e. ``(0 - mean) / std`` per channel once
  normalised (-1 for EfficientNet-Lite0's mean = std = 0.5). This is what "black" means.
* ``"zero"``: the zero tensor *in normalised space*, i.e. the pixel value ``mean`` (mid-grey
  0.5 for Lite0, ImageNet's mean colour for ResNet-50). The thesis' substrate, and also what
  RISE's reference code feeds (it zeroes the normalised tensor).
* ``"blur"``: the image blurred with RISE's Gaussian kernel (11 x 11, sigma 5), reflect-padded.

**Localisation** uses boxes (x0, y0, x1, y1) in crop pixel coordinates, where pixel (row i,
column j) covers [j, j+1) x [i, i+1) and its centre is (j + 0.5, i + 0.5). A map that is all
zero scores 0 on every localisation metric (never NaN); an image without a box of its class
gets NaN ("not applicable"), which pandas' means skip.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .models import ModelBundle, check_class_idx

Box = tuple[float, float, float, float]
SUBSTRATES: tuple[str, ...] = ("black", "zero", "blur")
MODES: tuple[str, ...] = ("insertion", "deletion")

#: Insertion/deletion protocols. "rise": Petsiuk et al. (2018) -- deletion to black pixels,
#: insertion over a blurred copy, a fine curve. "thesis": the thesis' protocol -- 10 steps,
#: the zero tensor in normalised space for both modes.
PRESETS: dict[str, dict] = {
    "rise": {"steps": 50, "insertion_substrate": "blur", "deletion_substrate": "black", "chunk_size": 32},
    "thesis": {"steps": 10, "insertion_substrate": "zero", "deletion_substrate": "zero", "chunk_size": 32},
}


def _channel(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def to_pixels(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised images -> pixel values (nominally [0, 1]): ``x * std + mean``."""
    return images * _channel(std, images) + _channel(mean, images)


def from_pixels(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Pixel values -> normalised images: ``(p - mean) / std``."""
    return (pixels - _channel(mean, pixels)) / _channel(std, pixels)


def gaussian_blur(images: torch.Tensor, klen: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion substrate: a per-channel Gaussian blur (``klen`` x ``klen``), reflect padding."""
    x = torch.arange(klen, dtype=images.dtype, device=images.device) - (klen - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = torch.outer(g, g) / g.sum() ** 2
    c = images.shape[1]
    padded = F.pad(images, [klen // 2] * 4, mode="reflect")
    return F.conv2d(padded, kernel.expand(c, 1, klen, klen).contiguous(), groups=c)


def make_substrate(images: torch.Tensor, kind: str, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The substrate ``kind`` (see the module docstring) for each image, in normalised space."""
    if kind == "black":
        return from_pixels(torch.zeros_like(images), mean, std)
    if kind == "zero":
        return torch.zeros_like(images)
    if kind == "blur":
        return gaussian_blur(images)
    raise ValueError(f"unknown substrate {kind!r}; valid substrates: {', '.join(SUBSTRATES)}")


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel by map value, (N, H*W): 0 = most important.

    Ties are broken deterministically by position: among equal values the pixel earlier in
    row-major order ranks first (a stable sort of the negated map).
    """
    order = torch.argsort(-maps.flatten(1).float(), dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def step_counts(n_pixels: int, steps: int) -> torch.Tensor:
    """Pixels changed after step k = 0..steps: ``floor(k * n_pixels / steps)`` (0 ... all)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.arange(steps + 1) * n_pixels // steps


def _check_batch(images: torch.Tensor, maps: torch.Tensor) -> None:
    if images.dim() != 4 or maps.dim() != 3 or images.shape[0] != maps.shape[0] \
            or images.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"images must be (N, C, H, W) and maps (N, H, W) of the same N, H, W; got "
                         f"images {tuple(images.shape)} and maps {tuple(maps.shape)}")


def class_probabilities(bundle: ModelBundle, batches: Callable[[int, int], torch.Tensor], total: int,
                        class_idx: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
    """Softmax probability of ``class_idx[j]`` for inputs j = 0..total-1, in chunked forwards.

    ``batches(start, stop)`` builds inputs ``start:stop`` on demand, so memory stays bounded by
    ``chunk_size`` inputs however many there are.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out = torch.empty(total)
    with torch.inference_mode():
        for start in range(0, total, chunk_size):
            stop = min(start + chunk_size, total)
            probs = bundle.model(batches(start, stop).to(bundle.device)).softmax(dim=1)
            out[start:stop] = probs.gather(1, class_idx[start:stop, None].to(probs.device))[:, 0].float().cpu()
    return out


def insertion_deletion_curves(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor,
                              class_idx: int | Sequence[int], mode: str, steps: int = PRESETS["rise"]["steps"],
                              substrate: str | None = None, chunk_size: int = 32) -> torch.Tensor:
    """Insertion or deletion curves (Petsiuk et al., BMVC 2018, Sec. 4.1), shape (N, steps + 1).

    Pixels are ranked by the map (:func:`pixel_ranks`). Point k is the class probability after
    the top ``floor(k HW / steps)`` pixels were changed (all channels of a pixel together):
    *deletion* replaces them in the image by the substrate (default ``"black"``), *insertion*
    copies them from the image onto the substrate (default ``"blur"``). Point 0 is the intact
    image (deletion) or the bare substrate (insertion). All N (steps + 1) inputs are built
    lazily and run in chunks of ``chunk_size``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use 'insertion' or 'deletion'")
    _check_batch(images, maps)
    substrate = substrate or PRESETS["rise"][f"{mode}_substrate"]
    n, points = images.shape[0], steps + 1
    idx = check_class_idx(class_idx, n, len(bundle.class_names))
    base = make_substrate(images, substrate, bundle.mean, bundle.std)
    first, second = (base, images) if mode == "deletion" else (images, base)  # changed pixels come from `first`
    ranks = pixel_ranks(maps)
    counts = step_counts(ranks.shape[1], steps)

    def batch(start: int, stop: int) -> torch.Tensor:
        jobs = torch.arange(start, stop)
        img, k = jobs // points, jobs % points
        changed = (ranks[img] < counts[k, None]).view(-1, 1, *images.shape[-2:])
        return torch.where(changed, first[img], second[img])

    probs = class_probabilities(bundle, batch, n * points, idx.repeat_interleave(points), chunk_size)
    return probs.view(n, points)


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under curves (N, K+1) sampled at x = 0, 1/K, ..., 1: the trapezoid rule, in [0, 1]."""
    if curves.dim() != 2 or curves.shape[1] < 2:
        raise ValueError(f"curves must be (N, K+1) with K >= 1, got shape {tuple(curves.shape)}")
    return (curves[:, 1:] + curves[:, :-1]).sum(dim=1) / (2 * (curves.shape[1] - 1))


def _preset(preset: str, overrides: dict) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    unknown = set(overrides) - set(PRESETS[preset])
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; valid: {', '.join(PRESETS[preset])}")
    return PRESETS[preset] | overrides


def insertion_deletion(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor,
                       class_idx: int | Sequence[int], preset: str = "rise", **overrides) -> dict[str, torch.Tensor]:
    """Both curves of a preset (options overridable): ``{"insertion": (N, K+1), "deletion": (N, K+1)}``."""
    cfg = _preset(preset, overrides)
    return {mode: insertion_deletion_curves(bundle, images, maps, class_idx, mode, cfg["steps"],
                                            cfg[f"{mode}_substrate"], cfg["chunk_size"]) for mode in MODES}


def insertion_deletion_auc(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor,
                           class_idx: int | Sequence[int], preset: str = "rise", **overrides) -> dict[str, torch.Tensor]:
    """Insertion and deletion AUC of each image: ``{"insertion": (N,), "deletion": (N,)}``.

    Higher insertion and lower deletion AUC mean a more faithful map. ``preset`` is a key of
    :data:`PRESETS`; ``overrides`` replace its options (steps, *_substrate, chunk_size).
    """
    return {mode: auc(c) for mode, c in insertion_deletion(bundle, images, maps, class_idx, preset,
                                                             **overrides).items()}
