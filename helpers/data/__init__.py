"""Data: the one image reader, manifests, the packaged photos, composites with exact boxes, the dataset builder,
the real ImageNet photos.

May import :mod:`helpers.cam` (to ask a model for its top-5); never the evaluation or teaching packages.
"""
from .folders import import_folder
from .images import ImageLoadError, Sample, load_image, load_samples, read_manifest

__all__ = ["ImageLoadError", "Sample", "import_folder", "load_image", "load_samples", "read_manifest"]
