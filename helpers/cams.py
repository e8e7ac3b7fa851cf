"""The CAM engine: one forward and one backward per batch, every method from the same tensors.

A CAM method is a small pure function ``f(activations, gradients, **options) -> map``: the
activations ``A`` and gradients ``dy/dA`` of one layer, shaped (N, K, h, w), give a raw,
non-negative map (N, h, w). Registering a method is one function and one ``@register`` line.
:func:`compute_cams` runs the network once, takes gradients with ``torch.autograd.grad`` with
respect to the hooked maps only, applies every requested method, upsamples bilinearly to the
input size and scales each map to [0, 1] by its maximum.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .hooks import LayerCapture
from .models import ModelBundle, check_class_idx

CamMethod = Callable[..., torch.Tensor]
METHODS: dict[str, CamMethod] = {}


def register(name: str) -> Callable[[CamMethod], CamMethod]:
    """Decorator adding a method to :data:`METHODS` under ``name``."""
    def add(fn: CamMethod) -> CamMethod:
        METHODS[name] = fn
        return fn
    return add


def normalise_max(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map of a batch (N, ...) by its maximum; an all-zero map stays zero (no NaN)."""
    peak = maps.flatten(1).amax(dim=1).view(-1, *([1] * (maps.dim() - 1)))
    positive = peak > 0
    return torch.where(positive, maps / torch.where(positive, peak, torch.ones_like(peak)), torch.zeros_like(maps))


@register("gradcam")
def gradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k alpha_k A^k), alpha_k = mean_ij dy/dA^k_ij."""
    return F.relu((gradcam_weights(grads)[..., None, None] * acts).sum(dim=1))


def gradcam_weights(grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights alpha_k^c: the spatial mean of the gradients, shape (N, K)."""
    return grads.mean(dim=(2, 3))


@register("layercam")
def layercam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): ReLU(sum_k ReLU(dy/dA^k) * A^k), weights per element."""
    return F.relu((F.relu(grads) * acts).sum(dim=1))


def geometric_fusion(gc: torch.Tensor, lc: torch.Tensor, alpha: float) -> torch.Tensor:
    """(gc / max gc)^alpha * (lc / max lc)^(1 - alpha): a weighted geometric mean of two maps."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return normalise_max(gc).pow(alpha) * normalise_max(lc).pow(1.0 - alpha)


@register("hybrid")
def hybrid(acts: torch.Tensor, grads: torch.Tensor, alpha: float = 0.7) -> torch.Tensor:
    """The thesis' hybrid: norm(Grad-CAM)^alpha * norm(LayerCAM)^(1-alpha), at the layer's resolution."""
    return geometric_fusion(gradcam(acts, grads), layercam(acts, grads), alpha)


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize maps (N, h, w) to ``size``; bilinear/bicubic use ``align_corners=False``."""
    extra = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(maps[:, None], size=size, mode=mode, **extra)[:, 0]
    return out.clamp_min(0) if mode == "bicubic" else out


def fuse_layers(maps: Sequence[torch.Tensor], gamma: float = 2.0) -> torch.Tensor:
    """Multi-layer LayerCAM fusion (Jiang et al. 2021, Sec. III-C).

    ``maps`` are [0, 1] maps at input resolution, shallow to deep. Shallow maps have small
    values, so every map but the deepest is rescaled as tanh(gamma * M / max M) (the paper's
    gamma = 2); the maps are then fused by the element-wise maximum and scaled to [0, 1].
    """
    scaled = [torch.tanh(gamma * normalise_max(m)) for m in maps[:-1]] + [maps[-1]]
    return normalise_max(torch.stack(scaled).amax(dim=0))


@dataclass
class Capture:
    """What one forward + backward gives: logits, the explained classes, maps and their gradients."""

    logits: torch.Tensor
    class_idx: torch.Tensor
    activations: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor]
    layers: list[str]


def forward_backward(bundle: ModelBundle, images: torch.Tensor, class_idx: int | Sequence[int] | None = None,
                     layers: str | Sequence[str] | None = None, score: str = "logit") -> Capture:
    """One forward and one backward: activations of ``layers`` and d score / d activations.

    ``score`` is the pre-softmax class score ``"logit"`` (the CAM papers' y^c) or the softmax
    ``"probability"``. ``class_idx=None`` explains each image's predicted class. ``layers`` lists
    the layers in forward order in the result (default: the bundle's target layer).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be a batch (N, 3, H, W), got shape {tuple(images.shape)}")
    names = [bundle.target_layer] if layers is None else [layers] if isinstance(layers, str) else list(layers)
    images = images.to(bundle.device)
    with torch.enable_grad(), LayerCapture(bundle.model, names, bundle.layers) as cap:
        logits = bundle.model(images)
        idx = logits.argmax(dim=1).cpu() if class_idx is None else check_class_idx(class_idx, len(images), logits.shape[1])
        idx = idx.to(logits.device)
        if score == "logit":
            y = logits.gather(1, idx[:, None])
        elif score == "probability":
            y = logits.softmax(dim=1).gather(1, idx[:, None])
        else:
            raise ValueError(f"unknown score {score!r}; use 'logit' or 'probability'")
        grads = cap.gradients(y)
        order = [n for n in cap.activations if n in names]  # dict order = firing order
        acts = {n: cap.activations[n].detach() for n in order}
    return Capture(logits.detach(), idx.cpu(), acts, {n: grads[n].detach() for n in order}, order)


class CamMaps(dict):
    """``{method: (N, H, W) map in [0, 1]}``, plus ``class_idx`` and ``logits`` of the pass."""

    class_idx: torch.Tensor
    logits: torch.Tensor


def _options_for(fn: CamMethod, options: dict) -> dict:
    accepted = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in accepted}


def compute_cams(bundle: ModelBundle, images: torch.Tensor, methods: Sequence[str] = ("gradcam", "layercam", "hybrid"),
                 class_idx: int | Sequence[int] | None = None, alpha: float = 0.7,
                 layer: str | Sequence[str] | None = None, score: str = "logit", gamma: float = 2.0) -> CamMaps:
    """CAMs of a preprocessed batch (N, 3, H, W) for every method, from ONE forward and ONE backward.

    Returns ``{method: (N, H, W)}`` float maps in [0, 1], bilinearly upsampled to the input size.
    ``class_idx``: None (each image's predicted class), an int, or N ints. ``layer``: one layer
    name or several (multi-layer fusion, :func:`fuse_layers` with ``gamma``); default the
    bundle's target layer. ``alpha`` is the hybrid's Grad-CAM exponent.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown CAM method {unknown[0]!r}; valid methods: {', '.join(METHODS)}")
    cap = forward_backward(bundle, images, class_idx, layer, score)
    size = tuple(images.shape[-2:])
    out = CamMaps()
    for name in methods:
        fn = METHODS[name]
        opts = _options_for(fn, {"alpha": alpha})
        per_layer = [normalise_max(upsample(fn(cap.activations[n], cap.gradients[n], **opts), size))
                     for n in cap.layers]
        out[name] = per_layer[0] if len(per_layer) == 1 else fuse_layers(per_layer, gamma)
    out.class_idx, out.logits = cap.class_idx, cap.logits
    return out
