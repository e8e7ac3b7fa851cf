"""The project's maps as Quantus 0.6.0's inputs: shapes, classes, boxes, and Quantus' metrics run on them."""
from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch

from helpers.cam.engine import compute_cams
from helpers.data.images import load_samples
from helpers.data.map_sources import from_mapping
from helpers.evaluation.metrics.quantus_export import to_quantus


@pytest.fixture(scope="module")
def composites(lite0):
    """Three packaged composites (exact boxes), whose top-1 class has a box on each."""
    samples = [s for s in load_samples(lite0) if s.kind == "composite"]
    assert len(samples) >= 3
    return samples[:3]


@pytest.fixture(scope="module")
def exported(lite0, composites):
    return to_quantus(lite0, composites, "gradcam", target="label", batch_size=2)


def test_the_batches_have_quantus_shapes_and_the_packages_maps(lite0, composites, exported):
    n = len(composites)
    assert exported["x_batch"].shape == (n, 3, 224, 224) and exported["x_batch"].dtype == np.float32
    assert exported["y_batch"].tolist() == [s.label_idx for s in composites]
    assert exported["a_batch"].shape == (n, 1, 224, 224)
    images = torch.stack([s.tensor for s in composites])
    want = compute_cams(lite0, images, "gradcam", target=exported["y_batch"].tolist())["gradcam"]
    assert np.allclose(exported["a_batch"][:, 0], want.numpy(), atol=1e-6)
    assert set(np.unique(exported["s_batch"])) <= {0.0, 1.0} and exported["s_batch"].shape == (n, 1, 224, 224)


def test_the_box_mask_covers_the_explained_class_boxes(composites, exported):
    for s, k, mask in zip(composites, exported["y_batch"], exported["s_batch"][:, 0], strict=True):
        (x0, y0, x1, y1), *_ = [b for c, b in s.boxes_crop if c == k]
        cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
        assert mask[cy, cx] == 1.0 and mask.sum() < mask.size


def test_quantus_localisation_and_complexity_run_on_the_export_as_worked_out_by_hand(lite0, exported):
    rma = quantus.RelevanceMassAccuracy(disable_warnings=True)(
        model=lite0.model, x_batch=exported["x_batch"], y_batch=exported["y_batch"], a_batch=exported["a_batch"],
        s_batch=exported["s_batch"], device="cpu")
    a, s = exported["a_batch"].reshape(3, -1), exported["s_batch"].reshape(3, -1)
    assert np.allclose(rma, (a * s).sum(1) / a.sum(1), atol=1e-6)
    gini = quantus.Sparseness(disable_warnings=True)(
        model=lite0.model, x_batch=exported["x_batch"], y_batch=exported["y_batch"], a_batch=exported["a_batch"],
        device="cpu")
    v = np.sort(a + 1e-7, axis=1)  # Quantus adds 1e-7 before the Gini index
    n = v.shape[1]
    by_hand = ((2 * np.arange(1, n + 1) - n - 1) * v).sum(1) / (n * v.sum(1))
    assert np.allclose(gini, by_hand, atol=1e-6)


def test_the_top1_class_and_a_map_source(lite0, composites):
    images = torch.stack([s.tensor for s in composites[:2]])
    top1 = compute_cams(lite0, images, "gradcam").class_idx.tolist()
    source = from_mapping("mine", {s.file: np.eye(7) for s in composites[:2]})
    out = to_quantus(lite0, composites[:2], source)
    assert out["y_batch"].tolist() == top1
    assert out["a_batch"].shape == (2, 1, 224, 224) and float(out["a_batch"].max()) == 1.0


def test_bad_requests_are_one_line(lite0, composites):
    with pytest.raises(ValueError, match="unknown target 'nope'"):
        to_quantus(lite0, composites, target="nope")
    with pytest.raises(ValueError, match="no samples"):
        to_quantus(lite0, [])
    with pytest.raises(ValueError, match="no map for 1 image"):
        to_quantus(lite0, composites[:2], from_mapping("m", {composites[0].file: np.ones((3, 3))}))
