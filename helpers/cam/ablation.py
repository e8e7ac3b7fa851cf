"""Ablation-CAM: a channel's weight is the drop of the class score when that channel is removed.

Where global average pooling + a linear classifier follow the layer (the split's tail is a
:class:`helpers.cam.split.GapLinearHead`), the drop is known in closed form and no ablated
forward runs (:func:`closed_form_drops`); elsewhere the ablated maps run through the tail in
batches (:func:`ablated_drops`). Both give the same numbers at such a head (tested).
"""
from __future__ import annotations

import torch
from torch import nn

from .engine import register  # via the engine: its built-ins register first
from .methods import _class_scores, _combine, _safe_divide
from .options import ABLATION_BATCH, AblationCAM
from .split import GapLinearHead


def class_logits(acts: torch.Tensor, classes: torch.Tensor, tail: nn.Module) -> torch.Tensor:
    """The explained classes' logits (N, 1) of the unablated map."""
    with torch.inference_mode():
        return tail(acts).gather(1, classes.to(acts.device)[:, None])


def closed_form_drops(acts: torch.Tensor, classes: torch.Tensor, head: GapLinearHead) -> torch.Tensor:
    """y^c - y^c_k (N, K) at a GAP + linear head: removing channel k removes exactly w_ck mean_ij A^k_ij
    from the logit y^c = sum_k w_ck mean(A^k) + b_c (the bias and the other channels cancel)."""
    weight = head.linear.weight.detach()[classes.to(head.linear.weight.device)]
    return weight.to(acts) * acts.mean(dim=(2, 3))


def ablated_drops(acts: torch.Tensor, classes: torch.Tensor, tail: nn.Module,
                  batch_size: int = ABLATION_BATCH) -> torch.Tensor:
    """y^c - y^c_k (N, K) from forwards of ``tail`` on the map with channel k set to 0, ``batch_size`` per
    forward (N * K ablations, in inference mode)."""
    n, k = acts.shape[:2]
    keep = 1 - torch.eye(k, dtype=acts.dtype, device=acts.device)[:, :, None, None]

    def ablated(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = rows // k
        return acts[image] * keep[rows % k], classes[image]

    logits = class_logits(acts, classes, tail)
    return logits - _class_scores(tail, ablated, n * k, batch_size, "logit").view(n, k).to(logits)


@register("ablationcam", AblationCAM)
def ablationcam(acts: torch.Tensor, classes: torch.Tensor, tail: nn.Module,
                batch_size: int = ABLATION_BATCH) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020, Eq. 3): w_k = (y^c - y^c_k) / y^c, map = ReLU(sum_k w_k A^k).

    y^c is the class logit and y^c_k the logit with feature map k set to zero (the paper's
    ablation). pytorch-grad-cam zeroes a channel only when the layer's minimum is 0 and otherwise
    sets it to (minimum - 1e7), a departure its comments admit; on layers with negative
    activations this changes the weights, so here it is always 0 as in the paper (at Lite0's head,
    after ReLU6, both are the same). A logit y^c = 0 gives weight 0. At a GAP + linear head the
    drops are exact without any ablated forward (:func:`closed_form_drops`), so there
    w_k = w_ck mean(A^k) / y^c: CAM's weights times each channel's mean activation. pytorch-grad-cam's
    experimental ``ratio_channels_to_ablate`` (an SVD heuristic to skip channels) is not offered.
    """
    logits = class_logits(acts, classes, tail)
    drops = closed_form_drops(acts, classes, tail) if isinstance(tail, GapLinearHead) \
        else ablated_drops(acts, classes, tail, batch_size)
    return _combine(_safe_divide(drops, logits.expand_as(drops)), acts)
