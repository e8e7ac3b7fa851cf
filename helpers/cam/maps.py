"""Map arithmetic: scaling to [0, 1], upsampling, and the fusion rules (the hybrid, additive, max, multi-layer).

Every rule here is a pure tensor function of maps; the engine (:mod:`helpers.cam.engine`) applies
them after its one forward/backward, and the alpha sweep re-fuses the same raw maps without another pass.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def normalise_max(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map of a batch (N, ...) by its maximum; an all-zero map stays zero (no NaN)."""
    peak = maps.flatten(1).amax(dim=1).view(-1, *([1] * (maps.dim() - 1)))
    positive = peak > 0
    if bool(positive.all()):  # the usual case: one pass over the maps
        return maps / peak
    return torch.where(positive, maps / torch.where(positive, peak, torch.ones_like(peak)), torch.zeros_like(maps))


def normalise_minmax(maps: torch.Tensor) -> torch.Tensor:
    """(M - min M) / (max M - min M) per map of a batch (N, ...); a constant map becomes zero (no NaN)."""
    flat = maps.flatten(1)
    low = flat.amin(1).view(-1, *([1] * (maps.dim() - 1)))
    span = flat.amax(1).view(-1, *([1] * (maps.dim() - 1))) - low
    positive = span > 0
    return torch.where(positive, (maps - low) / torch.where(positive, span, torch.ones_like(span)),
                       torch.zeros_like(maps))


#: Map scalings: "max" divides by the maximum (the thesis' and the engine's default for every method);
#: "minmax" maps [min, max] to [0, 1] (Score-CAM's and Recipro-CAM's released code). Rankings, hence
#: insertion / deletion AUC and the pointing game, are the same under both; Average Drop, Increase in
#: Confidence, ADCC (complexity, coherency), the energy pointing game and the box IoU's 20% threshold
#: change wherever a map's minimum is above 0.
NORMALISATIONS = {"max": normalise_max, "minmax": normalise_minmax}


def normalise(maps: torch.Tensor, kind: str = "max") -> torch.Tensor:
    """Scale each map of a batch to [0, 1] by ``kind`` (:data:`NORMALISATIONS`)."""
    if kind not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {kind!r}; valid: {', '.join(NORMALISATIONS)}")
    return NORMALISATIONS[kind](maps)


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize maps (N, h, w) to ``size``; bilinear/bicubic use ``align_corners=False``."""
    extra = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(maps[:, None], size=size, mode=mode, **extra)[:, 0]
    return out.clamp_min(0) if mode == "bicubic" else out


def scale_maps(raw: Sequence[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
    """``normalise_max(upsample(m, size))`` of each raw map batch (N, h, w), with one upsampling and one scaling
    for all batches of the same shape (each map is still resized and scaled on its own: the same values)."""
    out: list[torch.Tensor | None] = [None] * len(raw)
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(raw):
        groups.setdefault((tuple(m.shape), m.dtype), []).append(i)
    for members in groups.values():
        maps = normalise_max(upsample(torch.cat([raw[i] for i in members]), size)).split([len(raw[i]) for i in members])
        for i, m in zip(members, maps, strict=True):
            out[i] = m
    return out


def check_alpha(alpha: float) -> None:
    """Raise ValueError unless 0 <= alpha <= 1."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")


def geometric_fusion(gc: torch.Tensor, lc: torch.Tensor, alpha: float) -> torch.Tensor:
    """(gc / max gc)^alpha * (lc / max lc)^(1 - alpha): a weighted geometric mean of two maps."""
    check_alpha(alpha)
    return normalise_max(gc).pow(alpha) * normalise_max(lc).pow(1.0 - alpha)


def additive_fusion(gc: torch.Tensor, lc: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * gc / max gc + (1 - alpha) * lc / max lc: a weighted arithmetic mean of two maps."""
    check_alpha(alpha)
    return alpha * normalise_max(gc) + (1.0 - alpha) * normalise_max(lc)


def max_fusion(gc: torch.Tensor, lc: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Element-wise max(gc / max gc, lc / max lc); ``alpha`` is accepted for a uniform signature and ignored."""
    check_alpha(alpha)
    return torch.maximum(normalise_max(gc), normalise_max(lc))


#: Fusion rules ``f(gc, lc, alpha) -> map`` compared in the ablation.
FUSIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "geometric": geometric_fusion, "additive": additive_fusion, "max": max_fusion}


def fuse_layers(maps: Sequence[torch.Tensor], gamma: float = 2.0) -> torch.Tensor:
    """Multi-layer LayerCAM fusion (Jiang et al. 2021, Sec. III-C).

    ``maps`` are [0, 1] maps at input resolution, shallow to deep. Shallow maps have small
    values, so every map but the deepest is rescaled as tanh(gamma * M / max M) (the paper's
    gamma = 2); the maps are then fused by the element-wise maximum and scaled to [0, 1].
    """
    scaled = [torch.tanh(gamma * normalise_max(m)) for m in maps[:-1]] + [maps[-1]]
    return normalise_max(torch.stack(scaled).amax(dim=0))
