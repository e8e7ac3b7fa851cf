"""The model bundle: a classifier with its preprocessing, class names, CAM layers and inference settings.

:class:`ModelBundle` is what every function of the package takes as "the model"; the
preprocessing helpers here follow the ImageNet convention (resize the shorter side to
``size * 256 / 224``, centre-crop ``size``, normalise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torchvision import transforms

from .layers import Reshape

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelBundle:
    """A classifier ready for CAMs: network, preprocessing, labels and layer names."""

    model: nn.Module
    preprocess: Callable[..., torch.Tensor]
    class_names: list[str]
    target_layer: str
    layers: list[str]
    name: str
    weights_source: str
    device: torch.device
    #: The normalisation, one value per input channel (3 for RGB models, 1 for a one-channel model).
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pretrained: bool = True
    input_size: int = 224
    #: The shorter side's length before the centre crop; None: ``round(input_size * 256 / 224)``.
    resize: int | None = None
    #: Layers for multi-layer maps (LayerCAM's hierarchical fusion), shallow to deep.
    multi_layers: tuple[str, ...] = ()
    #: How gradient-free forwards run: "auto", "onnxruntime" or "torch"; None reads XAI_BACKEND
    #: (:mod:`helpers.cam.backend`). ``precision`` "fp32" (None) or the opt-in "bf16".
    backend: str | None = None
    precision: str | None = None
    #: The network's total downsampling factor: smaller inputs are rejected (:mod:`helpers.cam.checks`).
    stride: int = 1

    #: Layer output -> (N, C, h, w); None: :func:`helpers.cam.layers.as_map` (tokens, channels-last).
    reshape: Reshape | None = None
    #: ViT-style models: the patch size, which fixes the token grid.
    patch_size: int | None = None

    @property
    def resize_size(self) -> int:
        """The shorter side's length after the resize, before the centre crop of ``input_size``."""
        return self.resize if self.resize is not None else default_resize(self.input_size)


def default_resize(size: int) -> int:
    """The resize before a centre crop of ``size``: the ImageNet convention 256 -> 224."""
    return round(size * 256 / 224)


def make_preprocess(mean: Sequence[float], std: Sequence[float], size: int = 224) -> transforms.Compose:
    """PIL image -> normalised tensor: resize the shorter side to 256, centre-crop 224, normalise.

    One ``mean`` / ``std`` value per channel of the model's input: three (an RGB tensor) or one (the
    photo converted to grey first, for a one-channel model); any other count is a ValueError."""
    if len(mean) not in (1, 3) or len(std) != len(mean):
        raise ValueError(f"the default preprocessing makes 1 (grey) or 3 (RGB) channels, so mean and std need 1 or 3 "
                         f"values each; got {len(mean)} and {len(std)}: give a preprocess of your own")
    grey = [transforms.Grayscale(num_output_channels=1)] if len(mean) == 1 else []
    return transforms.Compose([
        transforms.Resize(default_resize(size)),
        transforms.CenterCrop(size),
        *grey,
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

