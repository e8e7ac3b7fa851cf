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
* ``"blur"``: the image blurred as RISE's reference code does it (:func:`gaussian_blur`): each
  channel of the *normalised* image convolved with ``rise_kernel()`` (scipy's ``gaussian_filter``
  with sigma 5 applied to an 11 x 11 delta -- nearly flat, see there), zero padding at the border.

**Pixel ranking** (:func:`pixel_ranks`): map values equal to within ``TIE_RESOLUTION`` of the
map's maximum are ties, and ties are broken by a seeded random permutation of the pixels (one
seed per image, the same for every method on it), never by raster order.

**Localisation** uses boxes (x0, y0, x1, y1) in crop pixel coordinates, where pixel (row i,
column j) covers [j, j+1) x [i, i+1) and its centre is (j + 0.5, i + 0.5). A map that is all
zero scores 0 on every localisation metric (never NaN); an image without a box of its class
gets NaN ("not applicable"), which pandas' means skip.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..cam.backend import infer
from ..cam.bundle import ModelBundle
from ..cam.checks import check_class_idx, check_images
from ..config import SEED

Box = tuple[float, float, float, float]
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
    """
    flat = maps.detach().flatten(1).double().cpu()
    scale = flat.abs().amax(dim=1, keepdim=True)
    key = torch.round(flat / torch.where(scale > 0, scale, 1.0) / TIE_RESOLUTION)
    perm = tie_orders(flat.shape[1], _seeds(tie_seed, len(flat)))
    order = perm.gather(1, torch.argsort(-key.gather(1, perm), dim=1, stable=True)).to(maps.device)
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
    _check_batch(images, maps)
    substrate = substrate or PRESETS["rise"][f"{mode}_substrate"]
    n, points = images.shape[0], steps + 1
    idx = check_class_idx(class_idx, n, len(bundle.class_names))
    base = make_substrate(images, substrate, bundle.mean, bundle.std)
    first, second = (base, images) if mode == "deletion" else (images, base)  # changed pixels come from `first`
    ranks = pixel_ranks(maps, tie_seed).cpu()
    counts = step_counts(ranks.shape[1], steps)
    inputs = [(_digest(images[i]), int(idx[i])) for i in range(n)]
    keys = [(*inputs[i], k if k in (0, steps) else _digest(ranks[i] < counts[k]))
            for i in range(n) for k in range(points)]
    rep = _representatives(keys)                                # flat job (row * points + k) computing each point
    unique, where = torch.unique(rep, return_inverse=True)

    def batch(start: int, stop: int) -> torch.Tensor:
        img, step = unique[start:stop] // points, unique[start:stop] % points
        changed = (ranks[img] < counts[step, None]).view(-1, 1, *images.shape[-2:]).to(images.device)
        return torch.where(changed, first[img], second[img])

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
    cfg = _preset(preset, overrides)
    return {mode: insertion_deletion_curves(bundle, images, maps, class_idx, mode, cfg["steps"],
                                            cfg[f"{mode}_substrate"], cfg["chunk_size"], tie_seed) for mode in MODES}


def insertion_deletion_auc(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor,
                           class_idx: int | Sequence[int], preset: str = "rise", tie_seed: int | Sequence[int] = SEED,
                           **overrides) -> dict[str, torch.Tensor]:
    """Insertion and deletion AUC of each image: ``{"insertion": (N,), "deletion": (N,)}``.

    Higher insertion and lower deletion AUC mean a more faithful map. ``preset`` is a key of
    :data:`PRESETS`; ``overrides`` replace its options (steps, *_substrate, chunk_size).
    """
    check_images(images, bundle, maps)
    return {mode: auc(c) for mode, c in insertion_deletion(bundle, images, maps, class_idx, preset, tie_seed,
                                                             **overrides).items()}


# ---------------------------------------------------------------- confidence-based metrics

#: How the explanation image x * L is formed: "normalised" multiplies the map into the model's
#: normalised input (as TorchCAM, pytorch-grad-cam and the ADCC authors' code do: masked pixels
#: become the normalised zero, the mean colour); "pixel" multiplies it into the pixel values
#: (masked pixels become black).
EXPLANATION_SPACES: tuple[str, ...] = ("normalised", "pixel")


def explanation_images(images: torch.Tensor, maps: torch.Tensor, mean: Sequence[float],
                       std: Sequence[float], space: str = "normalised") -> torch.Tensor:
    """The explanation map multiplied into the image, in ``space`` (:data:`EXPLANATION_SPACES`).

    ``"normalised"``: ``x * L``; ``"pixel"``: ``norm(pixels(x) * L)``, i.e. black where L = 0.
    Where the map is 1 the input is untouched either way.
    """
    _check_batch(images, maps)
    if space == "normalised":
        return images * maps[:, None]
    if space == "pixel":
        return from_pixels(to_pixels(images, mean, std) * maps[:, None], mean, std)
    raise ValueError(f"unknown explanation space {space!r}; valid: {', '.join(EXPLANATION_SPACES)}")


def _probs(bundle: ModelBundle, images: torch.Tensor, idx: torch.Tensor, chunk_size: int) -> torch.Tensor:
    return class_probabilities(bundle, lambda a, b: images[a:b], len(images), idx, chunk_size)


def confidence_change(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int],
                      chunk_size: int = 32, space: str = "normalised") -> dict[str, torch.Tensor]:
    """Average Drop and Increase in Confidence (Chattopadhay et al., WACV 2018, Sec. 5.1), per image.

    With Y = p(c | x) and O = p(c | :func:`explanation_images` in ``space``), the paper's
    ``Average Drop % = 100/N sum_i max(0, Y_i - O_i) / Y_i`` and
    ``% Increase in Confidence = 100/N sum_i 1[Y_i < O_i]``; here each image's term (as a
    fraction, not %) is returned, so their mean over images is the paper's number / 100.
    Returns ``{"average_drop", "increase_in_confidence", "prob_full", "prob_explanation"}``, each (N,).
    """
    check_images(images, bundle, maps)
    idx = check_class_idx(class_idx, len(images), len(bundle.class_names))
    full = _probs(bundle, images, idx, chunk_size)
    masked = _probs(bundle, explanation_images(images, maps, bundle.mean, bundle.std, space), idx, chunk_size)
    drop = torch.where(full > 0, (full - masked).clamp_min(0) / torch.where(full > 0, full, 1.0), 0.0)
    return {"average_drop": drop, "increase_in_confidence": (masked > full).float(),
            "prob_full": full, "prob_explanation": masked}


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair of maps (N, ...) -> (N,); 0 where either map is constant."""
    x, y = a.flatten(1).double(), b.flatten(1).double()
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    den = x.norm(dim=1) * y.norm(dim=1)
    return torch.where(den > 0, (x * y).sum(1) / torch.where(den > 0, den, 1.0), 0.0).float()


def complexity(maps: torch.Tensor) -> torch.Tensor:
    """Poppi et al. (2021): Complexity = ||L^c(x)||_1, divided by the pixel count so that it lies in [0, 1]."""
    return maps.flatten(1).abs().mean(dim=1)


def harmonic_mean(*terms: torch.Tensor) -> torch.Tensor:
    """Element-wise harmonic mean of non-negative terms; 0 wherever any term is 0 (its limit)."""
    stacked = torch.stack(terms)
    positive = (stacked > 0).all(dim=0)
    inv = (1 / torch.where(stacked > 0, stacked, 1.0)).sum(dim=0)
    return torch.where(positive, len(terms) / inv, 0.0)


Explainer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def adcc(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int],
         explain: Explainer, chunk_size: int = 32,
         change: dict[str, torch.Tensor] | None = None, space: str = "normalised") -> dict[str, torch.Tensor]:
    """ADCC (Poppi, Cornia, Baraldi, Cucchiara, CVPRW 2021, Sec. 3), per image.

    With L = L^c(x) the map and x * L the explanation image (:func:`explanation_images` in ``space``):

    * Coherency = (CC(L^c(x * L), L) + 1) / 2, CC the Pearson correlation; ``explain(images,
      class_idx)`` re-explains the explanation images with the *same* method (0 correlation,
      i.e. coherency 0.5, where a map is constant);
    * Complexity = ||L||_1 (per pixel, :func:`complexity`);
    * AverageDrop = max(0, Y^c - O^c) / Y^c (as in :func:`confidence_change`);
    * ADCC = 3 (1 / Coherency + 1 / (1 - Complexity) + 1 / (1 - AverageDrop))^-1, the harmonic
      mean of the three (0 where a term is 0, e.g. an all-zero map whose drop is total).

    ``change`` reuses a :func:`confidence_change` result of the same inputs and ``space`` (saves
    two forwards).
    Returns ``{"coherency", "complexity", "average_drop", "adcc"}``, each (N,).
    """
    check_images(images, bundle, maps)
    idx = check_class_idx(class_idx, len(images), len(bundle.class_names))
    change = change if change is not None else confidence_change(bundle, images, maps, idx, chunk_size, space)
    again = explain(explanation_images(images, maps, bundle.mean, bundle.std, space), idx)
    coherency = (pearson(again, maps) + 1) / 2
    comp = complexity(maps)
    drop = change["average_drop"]
    return {"coherency": coherency, "complexity": comp, "average_drop": drop,
            "adcc": harmonic_mean(coherency, 1 - comp, 1 - drop)}


# ---------------------------------------------------------------- localisation against boxes

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
                         for i, (m, b) in enumerate(zip(maps.detach().cpu(), boxes))], dtype=torch.float64)


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
    labels, count = ndimage.label(m >= threshold * m.max(), structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    rows, cols = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    return (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_iou(maps: torch.Tensor, boxes: Sequence[Sequence[Box]], threshold: float = 0.2) -> torch.Tensor:
    """IoU of :func:`largest_region_box` with the best-matching box of the class, per image.

    All-zero map: 0. No box: NaN.
    """
    return _per_image(maps, boxes, lambda _, m, b: max(iou(largest_region_box(m, threshold), box) for box in b))


# ---------------------------------------------------------------- sanity floors

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
