"""Floors of the comparison: seeded random maps and a centred Gaussian, maps that every method must beat."""
from __future__ import annotations

import torch

#: The floors' names, as evaluated methods.
FLOORS: tuple[str, ...] = ("random", "gaussian")

def random_maps(n: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """Floor: maps of i.i.d. uniform [0, 1) noise (n, H, W), seeded (same seed -> same maps)."""
    return torch.rand((n, *size), generator=torch.Generator().manual_seed(seed))


def gaussian_maps(n: int, size: tuple[int, int], sigma: float = 0.25) -> torch.Tensor:
    """Floor: the centred isotropic Gaussian exp(-r^2 / (2 (sigma * side)^2)) at pixel centres, max 1, (n, H, W).

    ``sigma`` is a fraction of the shorter side. A centre-bias baseline: objects are often
    centred, so a method must beat this to show it uses the image.
    """
    h, w = size
    y = torch.arange(h, dtype=torch.float64)[:, None] + 0.5 - h / 2
    x = torch.arange(w, dtype=torch.float64)[None, :] + 0.5 - w / 2
    g = torch.exp(-(x ** 2 + y ** 2) / (2 * (sigma * min(h, w)) ** 2))
    return (g / g.max()).float().expand(n, h, w).clone()


def floor_maps(name: str, n: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """The floor ``name`` (:data:`FLOORS`) for n images of ``size``; ``seed`` seeds the random one."""
    if name == "random":
        return random_maps(n, size, seed)
    if name == "gaussian":
        return gaussian_maps(n, size)
    raise ValueError(f"unknown floor {name!r}; valid floors: {', '.join(FLOORS)}")
