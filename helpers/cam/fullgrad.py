"""FullGrad: the input-gradients and the bias-gradients of every layer, summed into one map.

Unlike the other CAMs it does not read one layer: it runs its own forward and backward through
the whole network, with :class:`helpers.cam.hooks.LayerCapture` on every layer that adds a bias
(its guarantees hold: parameters frozen and restored, hooks removed also after an exception,
gradients by ``torch.autograd.grad`` with respect to the input and the hooked outputs only, so
no parameter gets a ``.grad``). The ``layer`` of the call is ignored, as in pytorch-grad-cam.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .engine import register  # via the engine: its built-ins register first
from .hooks import LayerCapture
from .maps import normalise_minmax, upsample


def bias_layers(model: nn.Module) -> dict[str, torch.Tensor]:
    """{name: bias (C,)} of every 2-d convolution with a bias and every BatchNorm2d (its implicit bias
    b - mu gamma / sqrt(var + eps) in eval mode), in the model's module order."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
            scale = torch.rsqrt(module.running_var + module.eps)
            if module.weight is not None:
                scale = scale * module.weight
            shift = module.bias if module.bias is not None else torch.zeros_like(scale)
            out[name] = (shift - module.running_mean * scale).detach()
        elif isinstance(module, nn.Conv2d) and module.bias is not None:
            out[name] = module.bias.detach()
    return out


def channel_minmax(x: torch.Tensor) -> torch.Tensor:
    """Each (image, channel) map of (N, C, h, w) min-max scaled to [0, 1] (0 where constant)."""
    return normalise_minmax(x.flatten(0, 1)).view_as(x)


def _post(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """psi summed over channels: |x| min-max scaled per channel, summed, upsampled (N, H, W). Bilinear
    upsampling is linear, so summing before it gives the per-channel upsampled sum at 1/C the cost."""
    return upsample(channel_minmax(x.abs()).sum(dim=1), size)


@register("fullgrad")
def fullgrad(images: torch.Tensor, model: nn.Module, score: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """FullGrad (Srinivas & Fleuret 2019, Eq. 5): S(x) = psi(|x (.) dS/dx|) + sum_l sum_c psi(|b_lc dS/dz_lc|).

    The full-gradient decomposition of the score S (the engine's target, default the class logit):
    the input-gradient term and, for every layer l with a bias b_l (convolutions with a bias and
    BatchNorm's implicit bias, :func:`bias_layers`), the bias-gradient b_lc dS/dz_lc at every
    position of its output z_l. psi takes the absolute value and scales each channel to [0, 1]
    (min-max), and every term is bilinearly upsampled to the input size before the sum: the paper's
    equation and pytorch-grad-cam's ``FullGrad`` (whose layer list is Conv2d / BatchNorm2d of exactly
    that type; subclasses with a bias count here too). The authors' code instead scales each layer's
    whole tensor at once. The map is at the input's resolution; a network without any bias layer gives
    the input-gradient term alone.

    The sum runs over every layer of the network (49 BatchNorm layers in Lite0), shallow layers at
    112 x 112 as well as the head at 7 x 7, so the map depends on every layer's resolution and on how
    each small term is upsampled and rescaled: pytorch-grad-cam resizes with OpenCV, here with
    PyTorch, and each channel's own min-max scaling magnifies any difference in a near-constant
    channel. See the README for the measured agreement.
    """
    biases = bias_layers(model)
    with torch.enable_grad(), LayerCapture(model, list(biases)) as cap:
        x = images.detach().clone().requires_grad_(True)
        scores = score(model(x))
        cap.check_captured()
        names = list(cap.activations)
        grads = torch.autograd.grad(scores.sum(), [x, *(cap.activations[n] for n in names)], allow_unused=True)
    size = tuple(images.shape[-2:])
    total = _post(grads[0] * x.detach(), size)
    for name, grad in zip(names, grads[1:], strict=True):
        if grad is not None and grad.dim() == 4:
            total = total + _post(biases[name].to(grad)[None, :, None, None] * grad, size)
    return total
