"""Faithfulness metrics that perturb the input: faithfulness correlation, monotonicity correlation, IROF.

All perturbed inputs of a batch run as chunked batched forwards (``chunk_size`` per forward) on the
inference backend. Options keep Quantus 0.6.0's names and defaults. Two departures from Quantus, which
follow the papers: a *feature* is a pixel (all its channels at once), where Quantus broadcasts the map
over the channels and perturbs single channel values; and every photo's score depends on that photo
only (Quantus' IROF takes its "mean" baseline over the whole batch, and its monotonicity and faithfulness
correlation draw from NumPy's global generator). The baselines keep Quantus' names: ``"black"`` is the
image's minimum, ``"white"`` its maximum, ``"mean"`` its mean (over all channels, in the space the model
takes), ``"uniform"`` a draw from U(0, 1) per perturbed input; a number is used as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from skimage.segmentation import slic

from ...cam.backend import infer
from ...cam.bundle import ModelBundle
from ...cam.checks import check_class_idx, check_images
from ...config import SEED
from .confidence import pearson
from .perturbation import pixel_ranks, to_pixels
from .registry import MapOptions, attributions, metric

BASELINES: tuple[str, ...] = ("black", "white", "mean", "uniform")


@dataclass(frozen=True)
class PerturbOptions(MapOptions):
    """What every metric here shares: the baseline, softmax or logit, forwards per chunk, the seed."""

    perturb_baseline: str | float = "black"
    softmax: bool = False
    chunk_size: int = 32
    seed: int = SEED


@dataclass(frozen=True)
class FaithfulnessCorrelationOptions(PerturbOptions):
    """``nr_runs`` random subsets of ``subset_size`` pixels; ``subsets`` (N, nr_runs, subset_size) flat
    pixel indices given instead of drawn."""

    nr_runs: int = 100
    subset_size: int = 224
    subsets: torch.Tensor | None = field(default=None, compare=False)


@dataclass(frozen=True)
class MonotonicityOptions(PerturbOptions):
    """``nr_samples`` perturbations of each step of ``features_in_step`` pixels (Quantus' defaults:
    |map|, a uniform baseline, softmax)."""

    abs: bool = True
    perturb_baseline: str | float = "uniform"
    softmax: bool = True
    nr_samples: int = 100
    features_in_step: int = 1


@dataclass(frozen=True)
class IrofOptions(PerturbOptions):
    """The "mean" baseline and softmax (Quantus' defaults; the baseline value is one per photo, kept through
    the removal); ``segments`` (N, H, W) integer superpixels given instead of SLIC's."""

    perturb_baseline: str | float = "mean"
    softmax: bool = True
    segments: torch.Tensor | None = field(default=None, compare=False)


def baseline_values(images: torch.Tensor, kind: str | float, repeats: int, generator: torch.Generator,
                    ) -> torch.Tensor:
    """The value that replaces perturbed pixels, (N, repeats): one per image and perturbed input."""
    flat = images.detach().flatten(1).double().cpu()
    if isinstance(kind, (int, float)):
        return torch.full((len(flat), repeats), float(kind), dtype=torch.float64)
    if kind == "uniform":
        return torch.rand((len(flat), repeats), generator=generator, dtype=torch.float64)
    stats = {"black": lambda: flat.amin(1), "white": lambda: flat.amax(1), "mean": lambda: flat.mean(1)}
    if kind not in stats:
        raise ValueError(f"unknown perturb_baseline {kind!r}; valid: {', '.join(BASELINES)} or a number")
    return stats[kind]()[:, None].expand(-1, repeats).clone()


def class_scores(bundle: ModelBundle, batches: Callable[[int, int], torch.Tensor], total: int, idx: torch.Tensor,
                 options: PerturbOptions) -> torch.Tensor:
    """Softmax probability (``options.softmax``) or logit of ``idx[j]`` for inputs j = 0..total-1, float64,
    ``options.chunk_size`` inputs per forward, each built on demand by ``batches(start, stop)``."""
    if options.chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {options.chunk_size}")
    out = torch.empty(total, dtype=torch.float64)
    with torch.inference_mode():
        for start in range(0, total, options.chunk_size):
            stop = min(start + options.chunk_size, total)
            y = infer(bundle, batches(start, stop))
            y = y.softmax(dim=1) if options.softmax else y
            out[start:stop] = y.gather(1, idx[start:stop, None].to(y.device))[:, 0].double().cpu()
    return out


def perturbed_scores(bundle: ModelBundle, images: torch.Tensor, owner: torch.Tensor,
                     removed: Callable[[int, int], torch.Tensor], values: torch.Tensor, idx: torch.Tensor,
                     options: PerturbOptions) -> torch.Tensor:
    """:func:`class_scores` of perturbed copies: input j is image ``owner[j]`` with the pixels
    ``removed(start, stop)[j - start]`` ((B, H*W) booleans) set to ``values[j]`` in every channel."""
    def batches(start: int, stop: int) -> torch.Tensor:
        x = images[owner[start:stop]].clone()
        mask = removed(start, stop).view(stop - start, 1, *x.shape[-2:]).to(x.device)
        return torch.where(mask, values[start:stop].to(x).view(-1, 1, 1, 1), x)
    return class_scores(bundle, batches, len(owner), idx[owner], options)


def _setup(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int],
           options: MapOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked inputs: the maps as the metric reads them (N, H*W) and the class indices (N,)."""
    check_images(images, bundle, maps)
    return attributions(maps, options).flatten(1), check_class_idx(class_idx, len(images), len(bundle.class_names))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of each pair of rows (N, T) -> (N,): ties get their mean rank (as
    ``scipy.stats.spearmanr``); 0 where either row is constant."""
    rank = lambda t: torch.from_numpy(rankdata(t.detach().cpu().numpy(), axis=1))  # noqa: E731
    return pearson(rank(a), rank(b)).double()


@metric("faithfulness_correlation", FaithfulnessCorrelationOptions, family="faithfulness", direction="higher",
        needs=("model",), reference="Bhatt et al. 2020, Evaluating and aggregating feature-based model "
                                    "explanations (IJCAI)")
def faithfulness_correlation(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor,
                             class_idx: int | Sequence[int], options: FaithfulnessCorrelationOptions) -> torch.Tensor:
    """Pearson correlation, over ``nr_runs`` random subsets S of ``subset_size`` pixels, between the map's sum
    over S and the drop of the class score when S is set to the baseline (Bhatt et al. 2020); 0 where
    either is constant (e.g. an all-zero map), where Quantus gives NaN."""
    a, idx = _setup(bundle, images, maps, class_idx, options)
    n, d = a.shape
    runs, size = options.nr_runs, options.subset_size
    gen = torch.Generator().manual_seed(options.seed)
    subsets = options.subsets if options.subsets is not None else \
        torch.stack([torch.stack([torch.randperm(d, generator=gen)[:size] for _ in range(runs)]) for _ in range(n)])
    if tuple(subsets.shape) != (n, runs, size) or not 0 < size <= d:
        raise ValueError(f"subsets must be (N, nr_runs, subset_size) = {(n, runs, size)} pixel indices "
                         f"below {d}; got {tuple(subsets.shape)}")
    flat = subsets.reshape(n * runs, size)

    def removed(start: int, stop: int) -> torch.Tensor:
        return torch.zeros(stop - start, d, dtype=torch.bool).scatter_(1, flat[start:stop], True)
    values = baseline_values(images, options.perturb_baseline, runs, gen).flatten()
    owner = torch.arange(n).repeat_interleave(runs)
    full = class_scores(bundle, lambda s, e: images[s:e], n, idx, options)
    drops = full[:, None] - perturbed_scores(bundle, images, owner, removed, values, idx, options).view(n, runs)
    return pearson(a.gather(1, subsets.flatten(1)).view(n, runs, size).sum(2), drops).double()


@metric("monotonicity_correlation", MonotonicityOptions, family="faithfulness", direction="higher",
        needs=("model",), reference="Nguyen and Martinez 2020, On quantitative aspects of model "
                                    "interpretability (arXiv:2007.07584)")
def monotonicity_correlation(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor,
                             class_idx: int | Sequence[int], options: MonotonicityOptions) -> torch.Tensor:
    """Spearman correlation between each step's attribution and the variance its perturbation causes
    (Nguyen and Martinez 2020).

    Pixels in ascending order of attribution (:func:`.perturbation.pixel_ranks`) are taken ``features_in_step``
    at a time; each step alone is set to the baseline ``nr_samples`` times, giving
    ``E[(f(x') - f(x))^2]``. Quantus also divides each image's variances by f(x)^2 (its ``eps`` guards that
    division); a positive factor per image leaves the rank correlation unchanged, so it is not applied.
    """
    a, idx = _setup(bundle, images, maps, class_idx, options)
    n, d = a.shape
    step, samples = options.features_in_step, options.nr_samples
    steps = -(-d // step)
    order = (d - 1 - pixel_ranks(a, options.seed)) // step  # each pixel's step: 0 = the least important
    owner = torch.arange(n).repeat_interleave(steps * samples)
    which = torch.arange(steps).repeat_interleave(samples).repeat(n)

    def removed(start: int, stop: int) -> torch.Tensor:
        return order[owner[start:stop]] == which[start:stop, None]
    values = baseline_values(images, options.perturb_baseline, steps * samples,
                             torch.Generator().manual_seed(options.seed)).flatten()
    full = class_scores(bundle, lambda s, e: images[s:e], n, idx, options)
    y = perturbed_scores(bundle, images, owner, removed, values, idx, options).view(n, steps, samples)
    variance = ((y - full[:, None, None]) ** 2).mean(2)
    attribution = torch.zeros(n, steps, dtype=torch.float64).scatter_add_(1, order, a)
    return spearman(attribution, variance)


def superpixels(bundle: ModelBundle, images: torch.Tensor) -> torch.Tensor:
    """SLIC superpixels (Achanta et al. 2012; scikit-image's defaults, labels from 0) of each image's pixel
    values, (N, H, W) int64. Quantus segments the normalised tensor instead."""
    pixels = to_pixels(images.detach().cpu().double(), bundle.mean, bundle.std).clamp(0, 1)
    return torch.stack([torch.from_numpy(slic(p.permute(1, 2, 0).numpy(), start_label=0).astype(np.int64))
                        for p in pixels])


@metric("irof", IrofOptions, family="faithfulness", direction="higher", needs=("model",),
        reference="Rieger and Hansen 2020, IROF: a low resource evaluation metric for explanation methods "
                  "(ICLR workshop)")
def irof(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int],
         options: IrofOptions) -> torch.Tensor:
    """Iterative Removal Of Features (Rieger and Hansen 2020): superpixels in descending order of mean
    attribution are set to the baseline one after the other, and the area over the curve of
    p(c | x_k) / p(c | x), k = 1..S, is ``S - trapezoid(curve)`` (Quantus' definition; up to S - 1).

    Quantus pads a batch to its largest superpixel count, which adds a zero step to the curves of photos
    with fewer segments; here each photo's curve has its own S steps.
    """
    a, idx = _setup(bundle, images, maps, class_idx, options)
    n, d = a.shape
    segments = (options.segments if options.segments is not None else superpixels(bundle, images)).flatten(1)
    if tuple(segments.shape) != (n, d):
        raise ValueError(f"segments must be (N, H, W) like the maps {tuple(maps.shape)}")
    counts = [int(s.max()) + 1 for s in segments]
    rank = torch.zeros_like(segments)  # each pixel's segment's place in the removal order
    for i, (seg, k) in enumerate(zip(segments, counts, strict=True)):
        mean = torch.zeros(k, dtype=torch.float64).index_add_(0, seg, a[i]) / torch.bincount(seg, minlength=k)
        rank[i] = torch.argsort(torch.argsort(-mean.nan_to_num(-np.inf), stable=True))[seg]
    owner = torch.arange(n).repeat_interleave(torch.tensor(counts))
    step = torch.cat([torch.arange(1, k + 1) for k in counts])

    def removed(start: int, stop: int) -> torch.Tensor:
        return rank[owner[start:stop]] < step[start:stop, None]
    base = baseline_values(images, options.perturb_baseline, 1, torch.Generator().manual_seed(options.seed))[:, 0]
    full = class_scores(bundle, lambda s, e: images[s:e], n, idx, options)
    curve = perturbed_scores(bundle, images, owner, removed, base[owner], idx, options) / full[owner]
    return torch.stack([len(c) - (c.sum() - (c[0] + c[-1]) / 2) for c in curve.split(counts)])
