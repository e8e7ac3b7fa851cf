"""Models cut at a CAM layer (``tail(features(x)) == model(x)``), a registry of splitters per model class.

Gradient-free CAMs (CAM, Score-CAM, Recipro-CAM, ...) run the part after the CAM layer on
modified maps; :func:`split_at` finds the splitter registered for the bundle's model class
(:func:`register_split` adds one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torchvision.models.resnet import ResNet

from .bundle import ModelBundle
from .lite import EfficientNetLite


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
