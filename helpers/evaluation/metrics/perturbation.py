"""Insertion and deletion curves (Petsiuk et al. 2018): substrates, pixel ranking, chunked forwards, AUC.

Conventions: ``images`` are preprocessed batches (N, C, H, W) in the model's normalised space;
``maps`` are (N, H, W) in [0, 1] at input resolution; ``class_idx`` is an int (every image) or
exactly N ints (:func:`helpers.cam.checks.check_class_idx`: never floats or bools); the
class score is the softmax probability of the class. Every metric that runs the model runs it
as chunked batched forwards under ``torch.inference_mode()`` (``chunk_size`` inputs per
forward), never one forward per step or per image.

**Substrates** (what replaces / underlies pixels), all in normalised space:

* ``"black"``: pixel value 0 in every channel, i.e. ``(0 - mean) / std`` per channel once
  normalised (-1 for EfficientNet-Lite0's mean = std = 0.5). This is what "black" means.
* ``"zero"``: the zero tensor *in normalised space*, i.e. the pixel value ``mean`` (mid-grey
  0.5 for Lite0, ImageNet's mean colour for ResNet-50). The thesis' substrate, and also what
  RISE's reference code feeds (it zeroes the normalised tensor).
* ``"blur"``: the image blurred as RISE's reference code does it (:func:`gaussian_blur`): each
  channel of the *normalised* image convolved with ``rise_kernel()`` (scipy's ``gaussian_filter``
  with sigma 5 applied to an 11 x 11 delta -- nearly flat, see there), zero padding at the border.

**Pixel ranking** (:func:`pixel_ranks`): map values equal to within ``TIE_RESOLUTION`` of the
map's maximum are ties, and ties are broken by a seeded random permutation of the pixels (one
seed per image, the same for every method on it), never by raster order.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ...cam.backend import infer
from ...cam.bundle import ModelBundle
from ...cam.checks import check_class_idx, check_images
from ...config import SEED

SUBSTRATES: tuple[str, ...] = ("black", "zero", "blur")
MODES: tuple[str, ...] = ("insertion", "deletion")

#: Insertion/deletion protocols. "rise": Petsiuk et al. (2018) as their reference code
#: (eclique/RISE, ``evaluation.py`` and ``Evaluation.ipynb``) runs it -- 224 * 8 pixels per step at
#: 224 x 224, i.e. 28 steps (HW / 28 pixels per step at other sizes); deletion to the zero tensor in
#: normalised space (their ``torch.zeros_like``; ``deletion_substrate="black"`` gives true black
#: pixels); insertion over :func:`gaussian_blur`; softmax probability; :func:`auc`. ``steps=224``
#: gives a finer curve of the same protocol. "thesis": the thesis' protocol -- 10 steps, the zero
#: tensor for both modes.
RISE_PIXELS_PER_STEP = 224 * 8
PRESETS: dict[str, dict] = {
    "rise": {"steps": 224 * 224 // RISE_PIXELS_PER_STEP, "insertion_substrate": "blur", "deletion_substrate": "zero",
             "chunk_size": 32},
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


def rise_kernel(klen: int = 11, sigma: float = 5.0) -> np.ndarray:
    """RISE's blur kernel (``gkern``): ``scipy.ndimage.gaussian_filter`` (sigma, its default
    truncation at 4 sigma and reflect mode) applied to a ``klen`` x ``klen`` delta at the centre.

    With sigma 5 the filter's reach (20 px) exceeds the 11 x 11 array, so the reflected copies of
    the delta add up: the kernel is nearly flat (corner / centre = 0.88) and sums to 1.
    """
    delta = np.zeros((klen, klen))
    delta[klen // 2, klen // 2] = 1.0
    return ndimage.gaussian_filter(delta, sigma)


def gaussian_blur(images: torch.Tensor, klen: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion substrate: each channel convolved with :func:`rise_kernel`, zero padding
    (``conv2d(x, kern, padding=klen // 2)``, as their code), on the normalised image."""
    kernel = torch.as_tensor(rise_kernel(klen, sigma), dtype=images.dtype, device=images.device)
    c = images.shape[1]
    return F.conv2d(images, kernel.expand(c, 1, klen, klen).contiguous(), padding=klen // 2, groups=c)


def make_substrate(images: torch.Tensor, kind: str, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The substrate ``kind`` (see the module docstring) for each image, in normalised space."""
    if kind == "black":
        return from_pixels(torch.zeros_like(images), mean, std)
    if kind == "zero":
        return torch.zeros_like(images)
    if kind == "blur":
        return gaussian_blur(images)
    raise ValueError(f"unknown substrate {kind!r}; valid substrates: {', '.join(SUBSTRATES)}")


#: Map values closer than this fraction of the map's maximum |value| rank as ties.
TIE_RESOLUTION = 1e-6


def tie_orders(n_pixels: int, seeds: Sequence[int]) -> torch.Tensor:
    """One seeded random permutation of the pixels per seed, (N, H*W): the tie-breaking order."""
    return torch.stack([torch.randperm(n_pixels, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def _seeds(seed: int | Sequence[int], n: int) -> list[int]:
    seeds = [int(seed)] * n if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"tie_seed has {len(seeds)} entries for {n} maps")
    return seeds


def pixel_ranks(maps: torch.Tensor, tie_seed: int | Sequence[int] = SEED) -> torch.Tensor:
    """Rank of every pixel by map value, (N, H*W): 0 = most important.

    Values are compared on a grid of ``TIE_RESOLUTION`` x the map's max |value|, so float noise
    does not reorder pixels; ties (e.g. a ReLU map's zero plateau) are broken by a seeded random
    permutation (:func:`tie_orders`, ``tie_seed`` one int for all maps or one per map), not by position.
    The last result is kept (:data:`_LAST_RANKS`), so ranking the same maps again costs a hash.
    """
    flat = maps.detach().flatten(1).double().cpu()
    seeds = _seeds(tie_seed, len(flat))
    memo = (hashlib.sha1(flat.numpy().tobytes()).digest(), tuple(flat.shape), tuple(seeds))
    if memo not in _LAST_RANKS:
        scale = flat.abs().amax(dim=1, keepdim=True)
        key = torch.round(flat / torch.where(scale > 0, scale, 1.0) / TIE_RESOLUTION)
        perm = tie_orders(flat.shape[1], seeds)
        order = perm.gather(1, torch.argsort(-key.gather(1, perm), dim=1, stable=True))
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
        _LAST_RANKS.clear()
        _LAST_RANKS[memo] = ranks
    return _LAST_RANKS[memo].clone().to(maps.device)


#: The last :func:`pixel_ranks` result, by its maps' bytes, shape and seeds: an evaluation ranks the same maps
#: for each curve, preset and the pointing game, and the sort is most of the time outside the forwards.
_LAST_RANKS: dict[tuple, torch.Tensor] = {}


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
            probs = infer(bundle, batches(start, stop)).softmax(dim=1)
            out[start:stop] = probs.gather(1, class_idx[start:stop, None].to(probs.device))[:, 0].float().cpu()
    return out


def _representatives(keys: Sequence[object]) -> torch.Tensor:
    """For each position, the first position with an equal key."""
    first: dict[object, int] = {}
    return torch.tensor([first.setdefault(k, i) for i, k in enumerate(keys)], dtype=torch.long)


def _digest(t: torch.Tensor) -> bytes:
    return hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).digest()


def insertion_deletion_curves(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor,
                              class_idx: int | Sequence[int], mode: str, steps: int = PRESETS["rise"]["steps"],
                              substrate: str | None = None, chunk_size: int = 32,
                              tie_seed: int | Sequence[int] = SEED) -> torch.Tensor:
    """Insertion or deletion curves (Petsiuk et al., BMVC 2018, Sec. 4.1), shape (N, steps + 1).

    Pixels are ranked by the map (:func:`pixel_ranks`, ties broken by ``tie_seed``). Point k is
    the class probability after the top ``floor(k HW / steps)`` pixels were changed (all channels
    of a pixel together):
    *deletion* replaces them in the image by the substrate (default ``"zero"``, as RISE's
    reference code), *insertion* copies them from the image onto the substrate (default
    ``"blur"``). Point 0 is the intact image (deletion) or the bare substrate (insertion).

    The N (steps + 1) inputs are built lazily and run in chunks of ``chunk_size``. Identical
    inputs run once: a point is fixed by the image, the class and the *set* of changed pixels,
    so points of rows with the same image and class share a forward whenever their sets agree
    -- always at the two end points, and at every step for maps that rank alike (e.g. several
    methods' maps of one image, or maps equal up to float noise).
    """
    check_images(images, bundle, maps)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use 'insertion' or 'deletion'")
    idx = check_class_idx(class_idx, images.shape[0], len(bundle.class_names))
    return _curves(bundle, images, maps, idx, mode, steps, substrate, chunk_size, tie_seed)


def _curves(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, idx: torch.Tensor, mode: str, steps: int,
            substrate: str | None, chunk_size: int, tie_seed: int | Sequence[int]) -> torch.Tensor:
    """:func:`insertion_deletion_curves` of checked inputs (``idx``: N class indices)."""
    substrate = substrate or PRESETS["rise"][f"{mode}_substrate"]
    n, points = images.shape[0], steps + 1
    base = make_substrate(images, substrate, bundle.mean, bundle.std)
    first, second = (base, images) if mode == "deletion" else (images, base)  # changed pixels come from `first`
    ranks = pixel_ranks(maps, tie_seed).cpu().to(torch.int32)
    counts = step_counts(ranks.shape[1], steps).to(torch.int32)
    inputs = [(_digest(images[i]), int(idx[i])) for i in range(n)]
    keys = [(*inputs[i], k if k in (0, steps) else _digest(ranks[i] < counts[k]))
            for i in range(n) for k in range(points)]
    rep = _representatives(keys)                                # flat job (row * points + k) computing each point
    unique, where = torch.unique(rep, return_inverse=True)
    same_image = _representatives([digest for digest, _ in inputs])   # row -> first row of the same image

    def batch(start: int, stop: int) -> torch.Tensor:
        img, step = unique[start:stop] // points, unique[start:stop] % points
        changed = (ranks[img] < counts[step, None]).view(-1, 1, *images.shape[-2:]).to(images.device)
        source = same_image[img]
        groups = torch.unique(source).tolist()
        if len(groups) == 1:                                    # one image (the usual chunk): broadcast, no copies
            return torch.where(changed, first[groups[0]], second[groups[0]])
        out = torch.empty((len(img), *images.shape[1:]), dtype=images.dtype, device=images.device)
        for s in groups:
            sel = (source == s).to(images.device)
            out[sel] = torch.where(changed[sel], first[s], second[s])
        return out

    probs = class_probabilities(bundle, batch, len(unique), idx[unique // points], chunk_size)
    return probs[where].view(n, points)


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under curves (N, K+1) sampled at x = 0, 1/K, ..., 1: the trapezoid rule, in [0, 1].

    RISE's ``auc``: (sum - first / 2 - last / 2) / K."""
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
                       class_idx: int | Sequence[int], preset: str = "rise", tie_seed: int | Sequence[int] = SEED,
                       **overrides) -> dict[str, torch.Tensor]:
    """Both curves of a preset (options overridable): ``{"insertion": (N, K+1), "deletion": (N, K+1)}``."""
    check_images(images, bundle, maps)
    return _both(bundle, images, maps, class_idx, _preset(preset, overrides), tie_seed)


def _both(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int], cfg: dict,
          tie_seed: int | Sequence[int]) -> dict[str, torch.Tensor]:
    """Both curves of checked inputs under the options ``cfg`` (a preset's)."""
    idx = check_class_idx(class_idx, images.shape[0], len(bundle.class_names))
    return {mode: _curves(bundle, images, maps, idx, mode, cfg["steps"], cfg[f"{mode}_substrate"], cfg["chunk_size"],
                          tie_seed) for mode in MODES}


def insertion_deletion_auc(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor,
                           class_idx: int | Sequence[int], preset: str = "rise", tie_seed: int | Sequence[int] = SEED,
                           **overrides) -> dict[str, torch.Tensor]:
    """Insertion and deletion AUC of each image: ``{"insertion": (N,), "deletion": (N,)}``.

    Higher insertion and lower deletion AUC mean a more faithful map. ``preset`` is a key of
    :data:`PRESETS`; ``overrides`` replace its options (steps, *_substrate, chunk_size).
    """
    check_images(images, bundle, maps)
    curves = _both(bundle, images, maps, class_idx, _preset(preset, overrides), tie_seed)
    return {mode: auc(c) for mode, c in curves.items()}

