"""Every registered method against maps stored from a fixed random toy network (tests/cam/reference_maps.npz).

The file was written by ``python tests/cam/test_reference.py`` with the engine as it stood before the
method options became objects (each case then passed its options as keywords of
``compute_cams``: ``alpha=``, ``top_k=``, ``scorecam_weights=``, ``recipro_kernel=``, ``smooth_n=``,
``gamma=``, ``score=``, ``class_idx=``); the maps, explained classes and logits of every case must
stay bit-identical. Rerun the script only for a deliberate change of numbers, and say so in the commit.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers.cam.engine import METHODS, compute_cams
from helpers.cam.options import Hybrid, LayerFusion, ReciproCAM, ScoreCAM, Smooth
from helpers.cam.targets import ClassProbability

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toy import SplitToy, toy_bundle  # noqa: E402

FIXTURE = Path(__file__).with_name("reference_maps.npz")


def reference_setup():
    """The seeded toy (4 classes, layer "features", 8 x 8 maps) and two 16 x 16 images."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1, stride=2))
    bundle = dataclasses.replace(toy_bundle(SplitToy(torch.randn(4, 6), features)), backend="torch")
    return bundle, torch.randn(2, 3, 16, 16)


CASES = {
    "defaults": lambda b, x: compute_cams(b, x, tuple(METHODS)),
    "classes_alpha": lambda b, x: compute_cams(b, x, ("gradcam", "layercam", Hybrid(alpha=0.4)), target=[1, 2]),
    "probability": lambda b, x: compute_cams(b, x, ("gradcam", "hybrid", "gradcam++"), target=ClassProbability(2)),
    "scorecam_probability": lambda b, x: compute_cams(b, x, ScoreCAM(top_k=3, weights="probability", batch_size=5)),
    "scorecam_official": lambda b, x: compute_cams(b, x, ScoreCAM(top_k=None, weights="official"), target=[0, 3]),
    "reciprocam_gaussian": lambda b, x: compute_cams(b, x, ReciproCAM(kernel="gaussian", batch_size=7)),
    "smooth": lambda b, x: compute_cams(b, x, [Smooth(m, n=3, noise=0.2, seed=5) for m in ("gradcam", "layercam",
                                                                                         Hybrid(alpha=0.6))]
                                        + ["gradcam"]),
    "mid_layer": lambda b, x: compute_cams(b, x, ("gradcam", "layercam", "hybrid", "gradcam++", "xgradcam", "hirescam"),
                                           target=[3, 1], layer="features.1"),
    "layers_gamma": lambda b, x: compute_cams(b, x, ("gradcam", "layercam", "hybrid"), layer=["features.1", "features"],
                                              fusion=LayerFusion(gamma=1.5)),
}


def compute(case: str) -> dict[str, np.ndarray]:
    bundle, x = reference_setup()
    maps = CASES[case](bundle, x)
    out = {f"{case}/{m}": v.numpy() for m, v in maps.items()}
    return out | {f"{case}/:class_idx": maps.class_idx.numpy(), f"{case}/:logits": maps.logits.numpy()}


@pytest.mark.parametrize("case", CASES)
def test_maps_equal_the_stored_reference(case: str) -> None:
    stored = np.load(FIXTURE, allow_pickle=False)
    want = {k: stored[k] for k in stored.files if k.startswith(f"{case}/")}
    got = compute(case)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key


def test_every_registered_method_is_in_the_reference() -> None:
    stored = np.load(FIXTURE, allow_pickle=False)
    assert {f"defaults/{m}" for m in METHODS} <= set(stored.files)


if __name__ == "__main__":
    np.savez_compressed(FIXTURE, **{k: v for case in CASES for k, v in compute(case).items()})
    print(f"wrote {FIXTURE}")
