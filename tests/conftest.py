"""Shared fixtures: the embedded model (loaded once) and a few real photos, all offline."""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import pytest
import torch
from PIL import Image
from skimage import data

from helpers.cam.bundle import ModelBundle
from helpers.cam.models import load_model


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory):
    """The inference engine's exported models go to a fresh folder, never the user's cache."""
    old = os.environ.get("XAI_CACHE_DIR")
    os.environ["XAI_CACHE_DIR"] = str(tmp_path_factory.mktemp("onnx"))
    yield os.environ["XAI_CACHE_DIR"]
    if old is None:
        del os.environ["XAI_CACHE_DIR"]
    else:
        os.environ["XAI_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def close_figures():
    """Figures a test draws are closed after it: pyplot would keep every one of them open."""
    yield
    plt.close("all")


@pytest.fixture(scope="session")
def lite0() -> ModelBundle:
    """EfficientNet-Lite0 with its real ImageNet weights, on the CPU."""
    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    """Real photos that ship inside scikit-image."""
    return {name: Image.fromarray(getattr(data, name)()) for name in ("coffee", "chelsea", "rocket")}


@pytest.fixture(scope="session")
def photo_batch(lite0: ModelBundle, photos: dict[str, Image.Image]) -> torch.Tensor:
    """The photos preprocessed for Lite0, as one batch (3, 3, 224, 224)."""
    return torch.stack([lite0.preprocess(im) for im in photos.values()])
