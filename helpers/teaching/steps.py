"""Intermediate quantities of the CAM formulas, exposed for teaching and inspection.

Every function here is a step the lecture notebooks show on real tensors; the engine in
:mod:`helpers.cam.engine` computes the same things in one go.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from ..cam.backend import infer
from ..cam.bundle import ModelBundle
from ..cam.checks import check_class_idx
from ..cam.engine import METHODS, forward_backward, gradcam, gradcam_weights, layercam
from ..cam.layers import get_layer
from ..cam.maps import normalise_max, upsample
from ..evaluation.alpha_sweep import ALPHAS, sweep, sweep_plan
from ..evaluation.metrics.perturbation import insertion_deletion_auc
from ..evaluation.sanity import classifier_name, spearman


def gradcam_steps(acts: torch.Tensor, grads: torch.Tensor) -> dict[str, torch.Tensor]:
    """Grad-CAM for one layer, step by step: channel weights, weighted sum, and after ReLU."""
    weights = gradcam_weights(grads)
    weighted_sum = (weights[..., None, None] * acts).sum(dim=1)
    return {"weights": weights, "weighted_sum": weighted_sum, "cam": F.relu(weighted_sum)}


def layercam_steps(acts: torch.Tensor, grads: torch.Tensor) -> dict[str, torch.Tensor]:
    """LayerCAM step by step: element-wise weights ReLU(g), weighted maps, their sum after ReLU."""
    weights = F.relu(grads)
    weighted = weights * acts
    return {"weights": weights, "weighted": weighted, "cam": F.relu(weighted.sum(dim=1))}


def probability_gradcam_weights(weight: torch.Tensor, probs: torch.Tensor, class_idx: torch.Tensor,
                                area: int) -> torch.Tensor:
    """Grad-CAM weights (N, K) for the softmax probability p_c on a global-average-pool + linear head.

    With y = W mean_ij(A) + b, dy_j / dA^k_ij = W_jk / (h w), and the chain rule through the softmax
    gives d p_c / dA^k_ij = p_c (W_ck - sum_j p_j W_jk) / (h w): the class's weights minus their
    probability-weighted average over all classes, scaled by p_c. ``weight`` is W (C, K), ``probs``
    the softmax (N, C), ``area`` = h w of the layer.
    """
    idx = check_class_idx(class_idx, len(probs), probs.shape[1]).to(probs.device).view(-1, 1)
    return probs.gather(1, idx) * (weight[idx[:, 0]] - probs @ weight) / area


def classifier_weight(bundle: ModelBundle) -> torch.Tensor:
    """The weight W (classes, channels) of the linear classifier after the pooling: CAM's class weights."""
    return get_layer(bundle.model, classifier_name(bundle.model)).weight.detach()


def top_channels(weights: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Indices of the ``k`` channels with the largest weights, for a 1-D weight vector (K,)."""
    return weights.topk(min(k, weights.numel())).indices


def bilinear_by_formula(src: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of one map (h, w) written out, with ``align_corners=False`` sampling.

    Output pixel (i, j) samples the source at y = (i + 1/2) h / H - 1/2, x = (j + 1/2) w / W - 1/2,
    clamped to the grid; with y0 = floor(y), x0 = floor(x), dy = y - y0, dx = x - x0 the value is
    (1-dy)(1-dx) S[y0,x0] + (1-dy) dx S[y0,x0+1] + dy (1-dx) S[y0+1,x0] + dy dx S[y0+1,x0+1].
    """
    h, w = src.shape
    out = torch.empty(size, dtype=src.dtype)
    for i in range(size[0]):
        y = min(max((i + 0.5) * h / size[0] - 0.5, 0.0), h - 1)
        y0, dy = int(y), y - int(y)
        y1 = min(y0 + 1, h - 1)
        for j in range(size[1]):
            x = min(max((j + 0.5) * w / size[1] - 0.5, 0.0), w - 1)
            x0, dx = int(x), x - int(x)
            x1 = min(x0 + 1, w - 1)
            out[i, j] = ((1 - dy) * (1 - dx) * src[y0, x0] + (1 - dy) * dx * src[y0, x1]
                         + dy * (1 - dx) * src[y1, x0] + dy * dx * src[y1, x1])
    return out


def per_layer_cams(bundle: ModelBundle, images: torch.Tensor, layers: Sequence[str], method: str = "layercam",
                   class_idx: int | Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """One [0, 1] map (N, H, W) per layer from ONE forward/backward, shallow to deep."""
    cap = forward_backward(bundle, images, class_idx, list(layers))
    size = tuple(images.shape[-2:])
    return {n: normalise_max(upsample(METHODS[method](cap.activations[n], cap.gradients[n]), size))
            for n in cap.layers}


def head_cases(bundle: ModelBundle, samples: Sequence, k: int = 3) -> pd.DataFrame:
    """Grad-CAM at the CAM layer for every sample and each of its model's top-``k`` classes, from ONE pass.

    Columns: ``photo``, ``class_idx``, ``class_name``, ``p`` (softmax), ``negative`` (positions where the
    weighted sum is below 0, i.e. where the ReLU changes something) and ``bicubic_min`` / ``bicubic_max``
    (the max-scaled map bicubically upsampled to the input size, before clipping: outside [0, 1] it overshoots).
    """
    images = torch.stack([s.tensor for s in samples])
    top = infer(bundle, images).softmax(dim=1).cpu().topk(k)
    idx = top.indices.flatten()
    cap = forward_backward(bundle, images.repeat_interleave(k, dim=0), idx.tolist())
    layer = cap.layers[0]
    steps = gradcam_steps(cap.activations[layer], cap.gradients[layer])
    cubic = F.interpolate(normalise_max(steps["cam"])[:, None], size=tuple(images.shape[-2:]), mode="bicubic",
                          align_corners=False)[:, 0]
    return pd.DataFrame({"photo": [s.file for s in samples for _ in range(k)], "class_idx": idx.numpy(),
                         "class_name": [bundle.class_names[i] for i in idx.tolist()],
                         "p": top.values.flatten().numpy(),
                         "negative": (steps["weighted_sum"] < 0).sum(dim=(1, 2)).numpy(),
                         "bicubic_min": cubic.amin(dim=(1, 2)).numpy(), "bicubic_max": cubic.amax(dim=(1, 2)).numpy()})


def layer_agreement(bundle: ModelBundle, images: torch.Tensor, layers: Sequence[str],
                    class_idx: int | None = None) -> pd.Series:
    """Spearman correlation of Grad-CAM and LayerCAM at each layer (at its own resolution), from ONE pass;
    one image (1, 3, H, W), indexed by layer name."""
    cap = forward_backward(bundle, images, class_idx, list(layers))
    return pd.Series({n: spearman(gradcam(cap.activations[n], cap.gradients[n]),
                                  layercam(cap.activations[n], cap.gradients[n])) for n in layers}, name="spearman")


def parent_gaps(bundle: ModelBundle, samples: Sequence) -> pd.DataFrame:
    """Grad-CAM against LayerCAM at the CAM layer for each sample's asserted class, from ONE pass, each map
    scaled by its maximum: ``photo``, ``class_name``, ``p`` (its softmax probability), ``mean_gap`` and
    ``max_gap`` (mean and largest |GC / max GC - LC / max LC| over the grid), ``gc_zero`` and ``lc_zero``
    (cells where that map is 0)."""
    cap = forward_backward(bundle, torch.stack([s.tensor for s in samples]), [s.label_idx for s in samples])
    acts, grads = cap.activations[cap.layers[0]], cap.gradients[cap.layers[0]]
    gc, lc = normalise_max(gradcam(acts, grads)), normalise_max(layercam(acts, grads))
    gap = (gc - lc).abs().flatten(1)
    return pd.DataFrame({"photo": [s.file for s in samples],
                         "class_name": [bundle.class_names[s.label_idx] for s in samples],
                         "p": cap.logits.softmax(dim=1).gather(1, cap.class_idx[:, None])[:, 0].numpy(),
                         "mean_gap": gap.mean(dim=1).numpy(), "max_gap": gap.amax(dim=1).numpy(),
                         "gc_zero": (gc == 0).flatten(1).sum(dim=1).numpy(),
                         "lc_zero": (lc == 0).flatten(1).sum(dim=1).numpy()})


def insertion_by_alpha(bundle: ModelBundle, images: torch.Tensor, class_idx: int, steps: int = 28,
                       substrate: str = "blur", alphas: Sequence[float] = ALPHAS) -> pd.Series:
    """Insertion AUC of the hybrid at every ``a`` for one image (1, 3, H, W): the rise protocol with ``steps``
    steps onto the insertion ``substrate``, indexed by ``a`` (the raw maps come from one pass)."""
    metric = partial(insertion_deletion_auc, preset="rise", steps=steps, insertion_substrate=substrate)
    rows = sweep(bundle, images, [class_idx], metric, sweep_plan(alphas, with_max=False), progress=False)
    return rows.set_index("alpha")["insertion"]


def logit_vs_probability(bundle: ModelBundle, images: torch.Tensor, class_idx: Sequence[int]) -> pd.DataFrame:
    """Grad-CAM from the pre-softmax score y_c against Grad-CAM from the softmax probability p_c, per image.

    Columns: ``p`` (p_c), ``spearman`` (rank correlation of the two maps at the layer's resolution)
    and ``weight_ratio`` (norm of the probability's channel weights over the logit's).
    """
    caps = {s: forward_backward(bundle, images, class_idx, score=s) for s in ("logit", "probability")}
    layer = caps["logit"].layers[0]
    maps = {s: gradcam(c.activations[layer], c.gradients[layer]) for s, c in caps.items()}
    norms = {s: gradcam_weights(c.gradients[layer]).norm(dim=1) for s, c in caps.items()}
    probs = caps["logit"].logits.softmax(dim=1).gather(1, caps["logit"].class_idx[:, None])[:, 0]
    return pd.DataFrame({"p": probs.numpy(),
                         "spearman": [spearman(a, b) for a, b in zip(maps["logit"], maps["probability"], strict=True)],
                         "weight_ratio": (norms["probability"] / norms["logit"]).numpy()})
