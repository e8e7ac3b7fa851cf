"""Input checks of the public entry points: a bad batch or map is a clear ValueError before any forward runs.

:func:`check_images` is called first thing by :func:`helpers.cam.engine.compute_cams`,
:func:`helpers.cam.engine.forward_backward`, the metrics that run the model
(:mod:`helpers.evaluation.metrics`) and :func:`helpers.evaluation.runner.evaluate`. It rejects,
saying what was expected and what came: a non-tensor; a single image without batch axis
(``images[None]``) or any other number of dims; a channels-last batch (N, H, W, C); a wrong
channel count; integer or boolean pixels (not preprocessed); floats of another precision than the
model's weights (e.g. float64 or float16 for a float32 model: convert, ``images.float()``; no silent
conversion, so the numbers are those of the batch given); a batch on another accelerator than
the model (CPU batches are accepted: the engine moves them); images smaller than the network's
downsampling factor ``bundle.stride`` (32 for both real models: a 16 x 16 image would leave the CAM
layer less than one cell); NaN or infinite values. With ``maps`` it also checks them: (N, H, W)
like the images, finite.

The channel count expected is the ``in_channels`` of the model's first ``nn.Conv2d`` (in
registration order, the stem of every model here); a model without one (e.g. a toy network) is
not checked for channels.

:func:`check_class_idx` is the one rule for class indices, used by every entry point that takes them
(the class targets of :func:`helpers.cam.engine.compute_cams`, the metrics, ROAD, the alpha sweep, the
teaching code): one integer for every image, or exactly one integer per image; never a float or a bool.
"""
from __future__ import annotations

from numbers import Integral
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from .bundle import ModelBundle


def expected_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first convolution, None if it has none."""
    return next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _non_finite(t: torch.Tensor, what: str) -> None:
    # One read of the tensor first: a NaN or an infinity anywhere makes the sum NaN or infinite, so a
    # finite sum proves every value finite. Only a non-finite sum (or an overflow) takes the full check.
    if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t.sum())):
        bad = ~torch.isfinite(t)
        if bad.any():
            nan, first = int(torch.isnan(t).sum()), tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(f"{what} must be finite; got {nan} NaN and {int(bad.sum()) - nan} infinite values "
                             f"(the first at index {first}) in shape {tuple(t.shape)}")


def _not_a_tensor(x: Any, what: str, layout: str) -> ValueError:
    shape = getattr(x, "shape", None)
    got = f"{type(x).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")
    return ValueError(f"{what} must be a torch.Tensor {layout}; got {got} "
                      f"(convert with torch.as_tensor, channels first, then preprocess)")


def check_maps(maps: Any, images: torch.Tensor, what: str = "maps") -> None:
    """Maps must be a finite (N, H, W) tensor matching the images' N, H, W."""
    want = (images.shape[0], *images.shape[-2:])
    if not isinstance(maps, torch.Tensor):
        raise _not_a_tensor(maps, what, f"(N, H, W) = {want}")
    if tuple(maps.shape) != want:
        raise ValueError(f"{what} must be (N, H, W) = {want} to match images {tuple(images.shape)}; "
                         f"got shape {tuple(maps.shape)}")
    _non_finite(maps, what)


def check_images(images: Any, bundle: ModelBundle | nn.Module, maps: Any = None, what: str = "images") -> None:
    """Raise a ValueError naming the problem if ``images`` is not a batch ``bundle``'s model can take
    (see the module docstring); with ``maps``, check those too. Runs no forward. A plain module is
    checked as a bundle with no known downsampling factor."""
    if not isinstance(bundle, ModelBundle):
        device = next(iter(bundle.parameters()), torch.empty(0)).device
        bundle = SimpleNamespace(model=bundle, name=type(bundle).__name__, device=device, stride=1)
    channels = expected_channels(bundle.model)
    c = "C" if channels is None else str(channels)
    layout = f"(N, {c}, H, W)"
    if not isinstance(images, torch.Tensor):
        raise _not_a_tensor(images, what, layout)
    shape = tuple(images.shape)
    if images.dim() == 3:
        raise ValueError(f"{what} must be a batch {layout}; got a single image of shape {shape}: "
                         f"add a batch axis: images[None]")
    if images.dim() != 4:
        raise ValueError(f"{what} must be a batch {layout} (4 dims); got {images.dim()} dims, shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{what} is an empty batch, shape {shape}")
    if channels is not None and shape[1] != channels:
        if shape[-1] == channels:
            raise ValueError(f"{what} must be channels-first {layout}; got shape {shape}, which looks "
                             f"channels-last (N, H, W, {c}): use images.permute(0, 3, 1, 2)")
        raise ValueError(f"{what} must have {channels} channels {layout} for {bundle.name}; got {shape[1]} "
                         f"in shape {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be floats, preprocessed for the model (bundle.preprocess, or "
                         f"images.float() / 255 then normalised with bundle.mean / bundle.std); got dtype "
                         f"{images.dtype}")
    weights = next((p.dtype for p in bundle.model.parameters() if p.is_floating_point()), images.dtype)
    if images.dtype != weights:
        raise ValueError(f"{what} are {images.dtype} but the weights of {bundle.name} are {weights}: "
                         f"convert the batch first, images.to({weights})")
    if images.device.type != "cpu" and not _same_device(images.device, bundle.device):
        raise ValueError(f"{what} are on {images.device} but the model is on {bundle.device}: "
                         f"use images.to(bundle.device)")
    if min(shape[-2:]) < bundle.stride:
        raise ValueError(f"{what} are {shape[-2]} x {shape[-1]} pixels: too small for {bundle.name}, which "
                         f"downsamples by {bundle.stride}; give at least {bundle.stride} x {bundle.stride} "
                         f"(bundle.preprocess gives {bundle.input_size} x {bundle.input_size})")
    _non_finite(images, what)
    if maps is not None:
        check_maps(maps, images)


def _integer_dtype(values: torch.Tensor | np.ndarray) -> bool:
    if isinstance(values, torch.Tensor):
        return not (values.is_floating_point() or values.is_complex() or values.dtype == torch.bool)
    return bool(np.issubdtype(values.dtype, np.integer))


def _is_integer(value: Any) -> bool:
    """A Python or NumPy integer or a 0-d integer tensor / array; never a bool, a float or a string."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim == 0 and _integer_dtype(value)
    return isinstance(value, (Integral, np.integer))


def _describe(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"a {type(value).__name__} of dtype {value.dtype} and shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def check_class_idx(class_idx: Any, n: int | None = None, num_classes: int | None = None) -> torch.Tensor:
    """The one check of class indices, at every entry point: ``class_idx`` as a long tensor on the CPU.

    ``class_idx`` is ONE integer (Python, NumPy, or a 0-d integer tensor), which stands for every image
    of the batch, or a 1-D list / tuple / array / tensor of exactly ``n`` integers, one per image. Refused,
    with a ValueError naming what came: floats (``0.7``, even ``1.0``: never rounded), booleans, strings,
    nested or 2-D values, a sequence of another length than ``n``, including one entry for ``n > 1``
    images (``[c]`` does not broadcast: give ``c`` itself), and indices outside ``0..num_classes - 1``.
    Without ``n`` only the form is checked (an int gives one entry); without ``num_classes`` no range.
    """
    if _is_integer(class_idx):
        values, scalar = [int(class_idx)], True
    else:
        scalar = False
        if isinstance(class_idx, (torch.Tensor, np.ndarray)):
            ok = class_idx.ndim == 1 and _integer_dtype(class_idx)
            values = [int(v) for v in class_idx.tolist()] if ok else []
        else:
            ok = isinstance(class_idx, (list, tuple, range)) and all(_is_integer(v) for v in class_idx)
            values = [int(v) for v in class_idx] if ok else []
        if not ok:
            raise ValueError(f"class_idx must be an integer (the class of every image) or a 1-D sequence of integers "
                             f"(one per image); got {_describe(class_idx)}")
    if n is not None and len(values) != n and not scalar:
        hint = f": give one per image, or the int {values[0]} itself for all of them" if len(values) == 1 else ""
        raise ValueError(f"class_idx has {len(values)} {'entry' if len(values) == 1 else 'entries'} for a batch of "
                         f"{n} images{hint}")
    bad = [v for v in values if not 0 <= v < (num_classes if num_classes is not None else 2 ** 63)]
    if bad:
        known = "" if num_classes is None else f": the model has {num_classes} classes (0..{num_classes - 1})"
        raise ValueError(f"class index {bad[0]} out of range{known}")
    return torch.tensor(values * (n if scalar and n is not None else 1), dtype=torch.long)
