"""Model-randomisation sanity check (Adebayo et al., NeurIPS 2018), cascading from the top.

An explanation that survives the randomisation of the weights it claims to explain is not
explaining the model. Layers are re-initialised one after another from the classifier down;
after each step every method's maps are compared with the maps of the trained model by
Spearman rank correlation (1: unchanged ranking, 0: unrelated).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from ..cam.bundle import ModelBundle
from ..cam.engine import Method, compute_cams
from ..cam.layers import get_layer
from ..config import SEED, progress_bar


def classifier_name(model: nn.Module) -> str:
    """Name of the last ``nn.Linear`` module (the classification head)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError("the model has no nn.Linear classifier")
    return names[-1]


def cascade_order(bundle: ModelBundle) -> list[str]:
    """Layers to randomise, top first: the classifier, then the CAM-able layers deep to shallow."""
    return [classifier_name(bundle.model)] + list(reversed(bundle.layers))


def randomise(module: nn.Module, seed: int) -> None:
    """Re-initialise every sub-module that has ``reset_parameters`` (seeded; BN stats reset too)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two maps; 0.0 when either is constant (no ranking to compare)."""
    x, y = a.flatten().cpu().numpy(), b.flatten().cpu().numpy()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def cascading_randomisation(bundle: ModelBundle, images: torch.Tensor, class_idx: Sequence[int],
                            methods: Sequence[Method], steps: Sequence[str] | None = None, progress: bool = True,
                            **cam_kwargs) -> pd.DataFrame:
    """Spearman correlation between trained and cascade-randomised maps, per step, method and image.

    Returns rows (step, layer, method, image, spearman); step 0 is the trained model (1.0 by
    construction) and step i has the first i layers of ``steps`` (default :func:`cascade_order`)
    re-initialised. The bundle's own model is never modified.
    """
    steps = list(steps) if steps is not None else cascade_order(bundle)
    reference = compute_cams(bundle, images, methods, target=class_idx, **cam_kwargs)
    # The copies run in PyTorch: exporting each randomised model to the engine would cost more than it saves.
    work = dataclasses.replace(bundle, model=copy.deepcopy(bundle.model), backend="torch")
    rows = [(0, "none", m, i, 1.0) for m in reference for i in range(len(images))]
    for step, layer in enumerate(progress_bar(steps, desc="randomising", disable=not progress), start=1):
        randomise(get_layer(work.model, layer), SEED + step)
        maps = compute_cams(work, images, methods, target=class_idx, **cam_kwargs)
        rows += [(step, layer, m, i, spearman(reference[m][i], maps[m][i]))
                 for m in reference for i in range(len(images))]
    return pd.DataFrame(rows, columns=["step", "layer", "method", "image", "spearman"])
