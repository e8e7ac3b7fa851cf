"""Gradient CAMs that differentiate the network after the layer again: Shapley-CAM (second order) and Finer-CAM.

Both run the split's ``tail`` (feature map -> logits, :func:`helpers.cam.split.split_at`) on a
fresh leaf copy of the captured map with autograd, the tail's parameters frozen for the call
(:func:`helpers.cam.hooks.frozen`, restored also after an exception): derivatives are taken with
``torch.autograd.grad`` with respect to the map only, so no parameter gets a ``.grad`` and nothing
below the layer is recorded, as in the engine's pass (:mod:`helpers.cam.hooks`).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .engine import gradcam_weights, register  # via the engine: its built-ins register first
from .hooks import frozen
from .methods import _combine
from .options import FinerCAM

#: pytorch-grad-cam's guard on Finer-CAM's weighted mean (``FinerWeightedTarget``).
FINER_EPS = 1e-9


def _leaf(acts: torch.Tensor) -> torch.Tensor:
    """A copy of the captured map that is the root of a new graph."""
    return acts.detach().clone().requires_grad_(True)


def hessian_terms(acts: torch.Tensor, tail: nn.Module,
                  score: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """g = dS/dA and the Hessian-vector product H A = (d^2 S / dA^2) A (both (N, K, h, w)) of the score
    S = ``score(tail(A))``, by double backward with respect to the map only. H A is 0 where the tail is
    linear in A (e.g. a GAP + linear head explaining a logit)."""
    with torch.enable_grad(), frozen(tail):
        a = _leaf(acts)
        (g,) = torch.autograd.grad(score(tail(a)).sum(), a, create_graph=True)
        hvp = None
        if g.requires_grad:
            (hvp,) = torch.autograd.grad(g, a, grad_outputs=a.detach(), allow_unused=True)
    return g.detach(), torch.zeros_like(acts) if hvp is None else hvp.detach()


@register("shapleycam")
def shapleycam(acts: torch.Tensor, tail: nn.Module, score: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Shapley-CAM (Cai et al. 2025, "CAMs as Shapley value-based explainers"): a second-order Taylor
    estimate of each channel's Shapley value.

    w_k = mean_ij (g - 1/2 H A)^k_ij with g = dS/dA and H A the Hessian-vector product of the
    explained score S (:func:`hessian_terms`); map = ReLU(sum_k w_k A^k). S is the engine's target
    (default the class logit, as pytorch-grad-cam's default target). Where the tail is piecewise
    linear in A and S is a logit (Lite0 from any stage, all ReLU6 and BatchNorm), H A = 0 almost
    everywhere and Shapley-CAM equals Grad-CAM; a softmax target (``ClassProbability``,
    ``ClassLogProbability``) has second-order terms there.
    """
    g, hvp = hessian_terms(acts, tail, score)
    return _combine((g - 0.5 * hvp).mean(dim=(2, 3)), acts)


def most_similar(logits: torch.Tensor, classes: torch.Tensor, count: int) -> torch.Tensor:
    """(N, m) the ``count`` classes (at most C - 1) whose logits are closest to the explained class's,
    closest first, the class itself excluded."""
    own = logits.gather(1, classes[:, None])
    distance = (logits - own).abs().scatter(1, classes[:, None], float("inf"))
    return distance.topk(min(count, logits.shape[1] - 1), dim=1, largest=False).indices


def finer_score(logits: torch.Tensor, classes: torch.Tensor, alpha: float = 1.0, comparisons: int = 3) -> torch.Tensor:
    """(N,) Finer-CAM's target: sum_j p_j (y^c - alpha y^j) / sum_j p_j over the most similar classes j,
    p the softmax probabilities (differentiated too, as pytorch-grad-cam's ``FinerWeightedTarget``)."""
    similar = most_similar(logits.detach(), classes, comparisons)
    weights = logits.softmax(dim=1).gather(1, similar)
    gaps = logits.gather(1, classes[:, None]) - alpha * logits.gather(1, similar)
    return (weights * gaps).sum(dim=1) / (weights.sum(dim=1) + FINER_EPS)


@register("finercam", FinerCAM)
def finercam(acts: torch.Tensor, classes: torch.Tensor, tail: nn.Module, alpha: float = 1.0,
             comparisons: int = 3) -> torch.Tensor:
    """Finer-CAM (Zhang et al. 2025, "Finer-CAM: spotting the difference reveals finer details"): Grad-CAM of
    the explained class's logit minus those of its most similar classes.

    The ``comparisons`` classes j whose logits are closest to the explained class c's are its
    look-alikes (pytorch-grad-cam's rule: the next 3 in the order of |y^j - y^c|); the explained
    score is :func:`finer_score`, sum_j p_j (y^c - alpha y^j) / sum_j p_j, and the map is Grad-CAM's,
    ReLU(sum_k mean_ij(dS/dA^k) A^k), so features shared with the look-alikes cancel and those
    that tell c apart remain. ``alpha`` = 0 gives Grad-CAM of y^c exactly (the weights cancel). The
    class is the engine's (default each image's top-1); the score is always built from logits.
    """
    with torch.enable_grad(), frozen(tail):
        a = _leaf(acts)
        classes = classes.to(acts.device)
        (g,) = torch.autograd.grad(finer_score(tail(a), classes, alpha, comparisons).sum(), a)
    return _combine(gradcam_weights(g), acts)
