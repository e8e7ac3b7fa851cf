"""Inference on a preprocessed batch: the top-k classes with their softmax probabilities."""
from __future__ import annotations

import torch

from .backend import infer
from .bundle import ModelBundle


@torch.inference_mode()
def predict_topk(bundle: ModelBundle, images: torch.Tensor, k: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-k (class index, name, softmax probability) for each image of a preprocessed batch."""
    probs = infer(bundle, images).softmax(dim=1)
    values, indices = probs.topk(k, dim=1)
    return [[(int(i), bundle.class_names[int(i)], float(p)) for p, i in zip(vs, ix, strict=True)]
            for vs, ix in zip(values.cpu(), indices.cpu(), strict=True)]
