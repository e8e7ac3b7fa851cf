"""Grad-CAM, LayerCAM and their hybrid: a CAM toolkit with an honest evaluation.

Start here (each name is imported on first use, so ``import helpers`` stays light):

- :func:`load_model` -- a :class:`~helpers.cam.bundle.ModelBundle` (network, preprocessing, classes, layers);
- :func:`compute_cams` -- every requested method's maps (N, H, W) in [0, 1] from one forward + backward;
- :func:`load_image` -- the one image reader (RGB, EXIF, clear errors naming the file);
- :func:`load_samples` -- a manifest's images, preprocessed for a model;
- :func:`evaluate` -- cached, resumable faithfulness/localisation evaluation of methods on samples.

Layout (imports point downwards only): :mod:`helpers.config` < :mod:`helpers.cam` (engine) <
:mod:`helpers.data` < :mod:`helpers.evaluation` < :mod:`helpers.teaching`.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_ENTRY_POINTS = {"load_model": "helpers.cam.models", "compute_cams": "helpers.cam.engine",
                 "load_image": "helpers.data.images", "load_samples": "helpers.data.images",
                 "evaluate": "helpers.evaluation.runner"}

__all__ = sorted(_ENTRY_POINTS)


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        return getattr(import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")
