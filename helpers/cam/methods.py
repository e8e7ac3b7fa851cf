"""Further CAM methods, registered in the engine of :mod:`helpers.cam.engine`.

Gradient methods are pure functions of the layer's activations ``acts`` = A and gradients
``grads`` = dy^c/dA, both (N, K, h, w), with y^c the pre-softmax class score; they share the one
forward + backward of :func:`helpers.cam.engine.compute_cams`. CAM reads the classifier weights instead
(``head_weight``); Score-CAM and Recipro-CAM are gradient-free and run batched forwards under
``torch.inference_mode()`` (``images``/``forward`` -- the model on the inference backend -- and
``tail`` are supplied by the engine). Every method returns a raw non-negative map (N, h, w); the
engine upsamples it and scales it to [0, 1].
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .engine import FORWARD_BATCH, SCORECAM_TOP_K, register  # via the engine: its built-ins register first
from .maps import normalise_minmax, upsample
from .options import RECIPRO_KERNELS, SCORECAM_VARIANTS, ReciproCAM, ScoreCAM


def _combine(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_k w_k A^k) for per-image channel weights (N, K)."""
    return F.relu(torch.einsum("nk,nkij->nij", weights, acts))


def _safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den where den != 0, else 0 (no NaN, no inf)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), torch.zeros_like(num))


@register("cam")
def cam(acts: torch.Tensor, head_weight: torch.Tensor) -> torch.Tensor:
    """CAM (Zhou et al. 2016, Sec. 2): M_c(x, y) = sum_k w_k^c f_k(x, y).

    w^c (``head_weight``, N x K) are the linear classifier's weights of class c, valid only where
    global average pooling + that classifier follow the layer directly. ReLU keeps the positive
    evidence, as for Grad-CAM. On such a network CAM equals Grad-CAM up to the factor 1/(hw).
    """
    return _combine(head_weight, acts)


@register("gradcam++")
def gradcam_pp(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, Sec. 3: closed-form alpha for Y^c = exp(S^c)).

    With g = dS^c/dA^k_ij and a piecewise-linear network, d^2Y/dA^2 = exp(S) g^2 and
    d^3Y/dA^3 = exp(S) g^3, so alpha_ij^kc = g^2 / (2 g^2 + sum_ab A^k_ab g^3) (0 where that
    denominator is 0), w_k^c = sum_ij alpha_ij^kc ReLU(g_ij) (the common factor exp(S) dropped),
    map = ReLU(sum_k w_k^c A^k).
    """
    g2 = grads.pow(2)
    alpha = _safe_divide(g2, 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g2 * grads)
    return _combine((alpha * F.relu(grads)).sum(dim=(2, 3)), acts)


@register("xgradcam")
def xgradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020, Sec. 3): w_k = sum_ij (A^k_ij / sum_ab A^k_ab) dy/dA^k_ij; ReLU(sum_k w_k A^k).

    A channel whose activations sum to 0 gets weight 0.
    """
    weights = _safe_divide((acts * grads).sum(dim=(2, 3)), acts.sum(dim=(2, 3)))
    return _combine(weights, acts)


@register("hirescam")
def hirescam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020, Sec. 3): sum_k dy/dA^k (.) A^k, element-wise, no gradient averaging.

    The paper's map has no ReLU; like Grad-CAM's we keep its positive part. With gradients
    constant over each channel it equals Grad-CAM.
    """
    return F.relu((grads * acts).sum(dim=1))


def _class_scores(net: Callable[[torch.Tensor], torch.Tensor],
                  inputs: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], total: int,
                  batch_size: int, kind: str) -> torch.Tensor:
    """Class scores of ``total`` perturbed inputs built chunk by chunk: ``inputs(rows) -> (x, classes)``.

    ``kind`` "logit" or "probability" (softmax over classes). Batched forwards in inference mode.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    scores = []
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            x, classes = inputs(torch.arange(start, min(start + batch_size, total)))
            out = net(x)
            out = out.softmax(dim=1) if kind == "probability" else out
            scores.append(out.gather(1, classes.to(out.device)[:, None])[:, 0])
    return torch.cat(scores)


@register("scorecam", ScoreCAM)
def scorecam(acts: torch.Tensor, images: torch.Tensor, classes: torch.Tensor,
             forward: Callable[[torch.Tensor], torch.Tensor], top_k: int | None = SCORECAM_TOP_K,
             weights: str = "softmax", batch_size: int = FORWARD_BATCH) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020, Sec. 4 and Algorithm 1), gradient-free.

    Each kept channel A^k is upsampled to the input size and min-max scaled to [0, 1] (H^k); the
    masked input is X (.) H^k in the model's normalised input space, so masked-out pixels take
    the value 0 there, i.e. the training mean colour. Its class logit S_k^c gives the weights
    w_k = softmax_k(S_k^c) over the kept channels (Algorithm 1; the baseline f(X_b) is the same
    for every k and cancels in the softmax). ``weights`` picks the variant
    (:data:`helpers.cam.options.SCORECAM_VARIANTS`): "probability" uses each masked input's softmax probability of the
    class, "official" also uses all channels and skips constant ones, as the authors' code.
    Map = ReLU(sum_k w_k A^k). ``top_k``: keep the k channels of largest mean activation per
    image (None: all K, i.e. K forwards per image). The authors' code also min-max scales the final
    map; the engine divides by the maximum (``maps.normalise(..., "minmax")`` gives theirs).
    """
    if weights not in SCORECAM_VARIANTS:
        raise ValueError(f"unknown Score-CAM weights {weights!r}; use one of {', '.join(SCORECAM_VARIANTS)}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    n, k_all, h, w = acts.shape
    k = k_all if top_k is None or weights == "official" else min(top_k, k_all)
    keep = acts.mean(dim=(2, 3)).topk(k, dim=1).indices
    kept = acts.gather(1, keep[:, :, None, None].expand(n, k, h, w))
    size = tuple(images.shape[-2:])

    def masked(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = rows // k
        masks = normalise_minmax(upsample(kept.flatten(0, 1)[rows], size))
        return images[image] * masks[:, None], classes[image]

    kind = "logit" if weights == "softmax" else "probability"
    scores = _class_scores(forward, masked, n * k, batch_size, kind).view(n, k)
    channel_weights = scores.softmax(dim=1) if kind == "logit" else scores
    if weights == "official":
        flat = kept.flatten(2)
        channel_weights = torch.where(flat.amax(2) > flat.amin(2), channel_weights, torch.zeros_like(channel_weights))
    return _combine(channel_weights, kept)


def spatial_masks(h: int, w: int, kernel: str = "onehot") -> torch.Tensor:
    """Recipro-CAM's masks (h*w, h, w), one per position: a one-hot, or a 3x3 Gaussian around it.

    The Gaussian is [1, 2, 1]^T [1, 2, 1] / 4 (1 at the centre, 1/2 beside, 1/4 diagonal),
    truncated at the border.
    """
    onehot = torch.eye(h * w).view(h * w, 1, h, w)
    if kernel == "onehot":
        return onehot[:, 0]
    if kernel not in RECIPRO_KERNELS:
        raise ValueError(f"unknown Recipro-CAM kernel {kernel!r}; use one of {', '.join(RECIPRO_KERNELS)}")
    taps = torch.tensor([0.5, 1.0, 0.5])
    return F.conv2d(onehot, torch.outer(taps, taps)[None, None], padding=1)[:, 0]


@register("reciprocam", ReciproCAM)
def reciprocam(acts: torch.Tensor, classes: torch.Tensor, tail: nn.Module, kernel: str = "onehot",
               batch_size: int = FORWARD_BATCH) -> torch.Tensor:
    """Recipro-CAM (Byun & Lee 2022), gradient-free: one masked feature map per position.

    For each position (i, j) the layer's map F is masked, F (.) M^(i,j) (``spatial_masks``), and
    the rest of the network (``tail``) scores it; the map at (i, j) is the softmax probability
    of the class, min-max normalised over the map. The authors' code uses the one-hot mask by
    default (a 3x3 Gaussian variant is optional); so do we. h*w tail forwards per image, batched.
    """
    n, _, h, w = acts.shape
    masks = spatial_masks(h, w, kernel).to(acts)

    def masked(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = rows // (h * w)
        return acts[image] * masks[rows % (h * w)][:, None], classes[image]

    return normalise_minmax(_class_scores(tail, masked, n * h * w, batch_size, "probability").view(n, h, w))
