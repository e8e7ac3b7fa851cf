"""Classifiers by name from torchvision and timm, with each library's own weights and preprocessing.

``"resnet50"``, ``"convnext_tiny"``, ``"vit_b_16"``, ``"swin_t"`` ... are torchvision models (weights
API, preprocessing from ``weights.transforms()``); ``"timm/<name>[.<tag>]"`` is a timm model
(preprocessing from ``timm.data.resolve_data_config``/``create_transform``). Weights come from the
library's cache, are downloaded by the library when ``download=True`` and the machine is online,
or come from a local file (``weights=PATH``). A missing file is an error naming the model, the
file expected and its folder. ``random_init=True`` builds the untrained architecture, for tests only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .weights import RANDOM_SOURCE, hub_checkpoints, weight_file

TIMM_PREFIX = "timm/"


class UnknownModel(ValueError):
    """A model name that neither torchvision nor timm knows."""


@dataclass
class Loaded:
    """A network fresh from a library, with what a bundle needs besides its layers."""

    model: nn.Module
    preprocess: Callable[..., torch.Tensor]
    class_names: list[str]
    source: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    #: The shorter side's length before the centre crop, from the library's preprocessing.
    resize: int


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    state = torch.load(weight_file(path, name), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def _load_file(model: nn.Module, path: Path, name: str) -> None:
    """Load a local state dict into ``model``; a mismatch is an error naming the file."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = _state_dict(path, name)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: not a state dict of {name}: {str(err).splitlines()[0]}") from None


def random_model(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """An untrained network, seeded; zero-initialised linear layers (e.g. ViT heads) get small random
    weights so that gradients reach the layers below (tests of layer logic only)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        for module in model.modules():
            if isinstance(module, nn.Linear) and not module.weight.any():
                nn.init.normal_(module.weight, std=0.02)
    return model


def load_torchvision(name: str, weights: str | Path | None = None, random_init: bool = False,
                     download: bool = True) -> Loaded:
    """A torchvision classifier; weights: a member name of its enum (e.g. ``"IMAGENET1K_V2"``), a local file,
    or (None) the first of its ImageNet weights found in the torch hub cache, else the default one."""
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    members: Sequence = list(enum)
    chosen = enum.DEFAULT
    path = None
    if isinstance(weights, str) and weights in enum.__members__:
        chosen = enum[weights]
    elif weights is not None:
        path = Path(weights)
    elif not random_init:  # prefer whichever ImageNet file is already here (e.g. ResNet-50's V1 file)
        folder = hub_checkpoints()
        chosen = next((w for w in [enum.DEFAULT, *members] if (folder / Path(w.url).name).is_file()), chosen)
    if random_init:
        model, source = random_model(lambda: torchvision.models.get_model(name, weights=None)), RANDOM_SOURCE
    elif path is not None:
        model = torchvision.models.get_model(name, weights=None)
        _load_file(model, path, name)
        source = f"{path} (preprocessing of {chosen})"
    else:
        file, folder = Path(chosen.url).name, hub_checkpoints()
        if not (folder / file).is_file() and not download:
            raise FileNotFoundError(f"{name}: weights {file} are not in {folder}; put the file there, "
                                    "pass weights=PATH, or allow the download (download=True, needs the internet)")
        try:
            model = torchvision.models.get_model(name, weights=chosen)
        except Exception as err:  # offline, proxy, disk: the message says what to do
            raise FileNotFoundError(f"{name}: weights {file} are not in {folder} and could not be downloaded "
                                    f"({type(err).__name__}); put the file there or pass weights=PATH") from None
        source = f"{chosen} ({folder / file})"
    tf = chosen.transforms()
    return Loaded(model, tf, list(chosen.meta["categories"]), source, tuple(tf.mean), tuple(tf.std), tf.crop_size[0],
                  tf.resize_size[0])


def load_timm(name: str, weights: str | Path | None = None, random_init: bool = False,
              download: bool = True) -> Loaded:
    """A timm classifier, ``name`` = ``"timm/<architecture>[.<pretrained tag>]"``."""
    import timm
    from timm.data import DEFAULT_CROP_PCT, create_transform, resolve_data_config

    arch = name[len(TIMM_PREFIX):]
    if not timm.is_model(arch):
        raise ValueError(f"unknown model {name!r}: timm has no architecture {arch!r} (see timm.list_models())")
    model = random_model(lambda: timm.create_model(arch, pretrained=False))
    source = RANDOM_SOURCE
    if weights is not None and not random_init:
        _load_file(model, Path(weights), name)
        source = str(weights)
    elif not random_init:
        from huggingface_hub import constants, try_to_load_from_cache

        hub_id = model.pretrained_cfg.get("hf_hub_id") or arch
        folder = Path(constants.HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}"
        cached = next((p for f in ("model.safetensors", "pytorch_model.bin")
                       if isinstance(p := try_to_load_from_cache(hub_id, f), str)), None)
        if cached is not None:
            _load_file(model, Path(cached), name)
            source = f"{hub_id} ({cached})"
        elif not download:
            raise FileNotFoundError(f"{name}: weights model.safetensors are not in {folder}; pass weights=PATH "
                                    "or allow the download (download=True, needs the internet)")
        else:
            try:
                model = timm.create_model(arch, pretrained=True)
            except Exception as err:
                raise FileNotFoundError(f"{name}: weights model.safetensors are not in {folder} and could not be "
                                        f"downloaded ({type(err).__name__}); pass weights=PATH") from None
            source = f"{hub_id} (downloaded to {folder})"
    cfg = resolve_data_config({}, model=model)
    classes = imagenet_class_names() if model.num_classes == 1000 else [str(i) for i in range(model.num_classes)]
    size = cfg["input_size"][-1]
    return Loaded(model, create_transform(**cfg), classes, source, tuple(cfg["mean"]), tuple(cfg["std"]), size,
                  math.floor(size / (cfg.get("crop_pct") or DEFAULT_CROP_PCT)))


def load_by_name(name: str, weights: str | Path | None = None, random_init: bool = False,
                 download: bool = True) -> Loaded:
    """A torchvision (plain name) or timm (``timm/...``) classifier; an unknown name is an :class:`UnknownModel`."""
    if name.startswith(TIMM_PREFIX):
        return load_timm(name, weights, random_init, download)
    if name in torchvision_names():
        return load_torchvision(name, weights, random_init, download)
    raise UnknownModel(f"unknown model {name!r}")
