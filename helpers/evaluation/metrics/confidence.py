"""Confidence-based metrics: Average Drop / Increase in Confidence (Grad-CAM++) and ADCC (Poppi et al. 2021).

Both run the model on the explanation image (the map multiplied into the image,
:func:`explanation_images`) as chunked batched forwards; conventions as in
:mod:`helpers.evaluation.metrics.perturbation`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ...cam.bundle import ModelBundle
from ...cam.checks import check_class_idx, check_images
from .perturbation import _check_batch, class_probabilities, from_pixels, to_pixels

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
    return _change(bundle, images, maps, check_class_idx(class_idx, len(images), len(bundle.class_names)),
                   chunk_size, space)


def _change(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, idx: torch.Tensor, chunk_size: int,
            space: str) -> dict[str, torch.Tensor]:
    """:func:`confidence_change` of checked inputs (``idx``: N class indices)."""
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
    change = change if change is not None else _change(bundle, images, maps, idx, chunk_size, space)
    again = explain(explanation_images(images, maps, bundle.mean, bundle.std, space), idx)
    coherency = (pearson(again, maps) + 1) / 2
    comp = complexity(maps)
    drop = change["average_drop"]
    return {"coherency": coherency, "complexity": comp, "average_drop": drop,
            "adcc": harmonic_mean(coherency, 1 - comp, 1 - drop)}
