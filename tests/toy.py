"""Toy networks whose gradients are known in closed form, wrapped as ModelBundles."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from helpers.cam.bundle import ModelBundle
from helpers.cam.split import GapLinearHead, ModelSplit, register_split


class GapLinear(nn.Module):
    """features (a named module) -> optional in-place ReLU -> global average pool -> linear.

    With A = features(x) of size h x w, y_c = sum_k w_ck mean_ij A^k_ij + b_c, so
    dy_c / dA^k_ij = w_ck / (h w) at every position.
    """

    def __init__(self, weight: torch.Tensor, features: nn.Module | None = None, inplace_relu: bool = False) -> None:
        super().__init__()
        self.features = features if features is not None else nn.Identity()
        self.after = nn.ReLU(inplace=True) if inplace_relu else nn.Identity()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.fill_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.after(self.features(x)).mean(dim=(2, 3)))


def toy_bundle(model: nn.Module, layer: str = "features") -> ModelBundle:
    """A ModelBundle around a toy network (no preprocessing, numeric class names)."""
    n = model.fc.out_features
    return ModelBundle(model=model.eval(), preprocess=lambda x: x, class_names=[str(i) for i in range(n)],
                       target_layer=layer, layers=[layer], name="toy", weights_source="hand-set",
                       device=torch.device("cpu"), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), pretrained=False)


@dataclass
class FakeSample:
    """What the studies read of a sample: file name, preprocessed tensor, label."""

    file: str
    tensor: torch.Tensor
    label_idx: int


def two_layer_toy(n_samples: int = 5) -> tuple[ModelBundle, list[FakeSample]]:
    """A seeded 3-class toy with two conv layers (``features.1``, ``features.3``) and ``n_samples`` 12 x 12 samples."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU())
    bundle = toy_bundle(GapLinear(torch.randn(3, 5), features), layer="features.3")
    return bundle, [FakeSample(f"img{i}.png", torch.randn(3, 12, 12), i % 3) for i in range(n_samples)]


def mean_and_corner(bundle, images, maps, class_idx, tie_seed=None) -> dict[str, torch.Tensor]:
    """A stand-in metric easy to recompute: insertion = mean of the map, deletion = its top-left value."""
    return {"insertion": maps.mean(dim=(1, 2)), "deletion": maps[:, 0, 0]}


class SplitToy(GapLinear):
    """GapLinear with a registered split after ``features``: GAP + linear, so CAM and the engine's split apply."""


@register_split(SplitToy)
def _split_toy(model: SplitToy, layer: str) -> ModelSplit:
    if layer != "features":
        raise ValueError(f"cannot split at layer {layer!r}; valid split layers: features")
    return ModelSplit(layer, model.features, GapLinearHead(nn.AdaptiveAvgPool2d(1), model.fc))
