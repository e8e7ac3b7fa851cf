"""The CAM engine: models and their layers, hooks, one forward + backward, the registered methods, map fusion.

Importing this package registers every method: :mod:`.engine` owns the registry and the built-in
Grad-CAM / LayerCAM / hybrid, :mod:`.methods` adds the further ones with ``@register``. Nothing here
imports the data, evaluation or teaching packages.
"""
from . import methods as _methods  # noqa: F401  (registers CAM, Grad-CAM++, XGrad-CAM, ..., Recipro-CAM)
from .engine import METHODS, CamMaps, compute_cams, forward_backward, register
from .maps import fuse_layers, geometric_fusion, normalise_max, upsample
from .models import ModelBundle, as_bundle, load_model, predict_topk, split_at

__all__ = ["METHODS", "CamMaps", "ModelBundle", "compute_cams", "forward_backward", "fuse_layers",
           "as_bundle", "geometric_fusion", "load_model", "normalise_max", "predict_topk", "register", "split_at", "upsample"]
