"""Teaching steps: the written-out formulas agree with the engine and with hand values."""
from __future__ import annotations

import pytest
import torch
from toy import FakeSample, GapLinear, toy_bundle

from helpers.cam.engine import compute_cams, forward_backward, gradcam_weights
from helpers.cam.maps import fuse_layers, upsample
from helpers.evaluation.metrics.perturbation import insertion_deletion_auc
from helpers.teaching.steps import (
    bilinear_by_formula,
    gradcam_steps,
    insertion_by_alpha,
    layercam_steps,
    logit_vs_probability,
    parent_gaps,
    per_layer_cams,
    probability_gradcam_weights,
    top_channels,
)

A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 1.0]]]])
W = torch.tensor([[1.0, -2.0], [0.5, 3.0]])


def test_bilinear_formula_matches_hand_values_and_interpolate() -> None:
    src = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert torch.allclose(bilinear_by_formula(src, (4, 4))[1], torch.tensor([0.5, 0.75, 1.25, 1.5]))
    torch.manual_seed(0)
    src = torch.rand(3, 5)
    assert torch.allclose(bilinear_by_formula(src, (10, 13)), upsample(src[None], (10, 13))[0], atol=1e-6)


def test_gradcam_steps_by_hand() -> None:
    cap = forward_backward(toy_bundle(GapLinear(W)), A, class_idx=0)
    steps = gradcam_steps(cap.activations["features"], cap.gradients["features"])
    assert torch.allclose(steps["weights"], torch.tensor([[0.25, -0.5]]))
    assert torch.allclose(steps["weighted_sum"], torch.tensor([[[-1.75, 0.5], [0.75, 0.5]]]))
    assert torch.allclose(steps["cam"], torch.tensor([[[0.0, 0.5], [0.75, 0.5]]]))
    lc = layercam_steps(cap.activations["features"], cap.gradients["features"])
    assert torch.equal(lc["weights"][0, 1], torch.zeros(2, 2)) and torch.allclose(lc["cam"], A[:, 0] / 4)


def test_probability_weights_follow_the_softmax_chain_rule() -> None:
    x = torch.cat([A, A.flip(-1) * 2])
    cap = forward_backward(toy_bundle(GapLinear(W)), x, class_idx=[0, 1], score="probability")
    probs = cap.logits.softmax(dim=1)
    by_formula = probability_gradcam_weights(W, probs, cap.class_idx, area=4)
    assert torch.allclose(gradcam_weights(cap.gradients["features"]), by_formula, atol=1e-7)
    p0 = probs[0, 0]  # by hand for image 0, class 0: p0 * (w_0 - p0 w_0 - p1 w_1) / 4 = p0 p1 (w_0 - w_1) / 4
    assert torch.allclose(by_formula[0], p0 * (1 - p0) * (W[0] - W[1]) / 4, atol=1e-7)


def test_logit_vs_probability_on_a_toy() -> None:
    x = torch.cat([A, A.flip(-1) * 2])
    table = logit_vs_probability(toy_bundle(GapLinear(W)), x, [0, 1])
    probs = GapLinear(W)(x).detach().softmax(dim=1)
    assert table["p"].tolist() == pytest.approx([float(probs[0, 0]), float(probs[1, 1])], rel=1e-6)
    # with two classes the probability weights are p0 p1 (w_c - w_other) / 4: a scaled "c against the rest"
    ratio = (probs[0, 0] * probs[0, 1] * (W[0] - W[1]).norm() / W[0].norm()).item()
    assert table["weight_ratio"][0] == pytest.approx(ratio, rel=1e-5)
    assert table["spearman"].between(-1, 1).all()


def test_top_channels() -> None:
    assert top_channels(torch.tensor([0.1, -3.0, 2.0, 0.5]), 2).tolist() == [2, 3]
    assert len(top_channels(torch.tensor([1.0, 2.0]), 10)) == 2


def test_per_layer_maps_fuse_to_the_engine_result(lite0, photo_batch) -> None:
    layers = ["stages.4", "stages.5", "head"]
    maps = per_layer_cams(lite0, photo_batch[:2], layers)
    assert list(maps) == layers and all(m.shape == (2, 224, 224) for m in maps.values())
    fused = compute_cams(lite0, photo_batch[:2], methods=("layercam",), layer=layers)["layercam"]
    assert torch.allclose(fuse_layers(list(maps.values())), fused, atol=1e-6)


def test_head_cases_and_layer_agreement_on_the_real_model(lite0, photo_batch) -> None:
    from types import SimpleNamespace

    from helpers.teaching.steps import head_cases, layer_agreement
    samples = [SimpleNamespace(tensor=t, file=f"p{i}.png") for i, t in enumerate(photo_batch[:2])]
    cases = head_cases(lite0, samples, k=2)
    assert len(cases) == 4 and cases["negative"].between(0, 49).all()
    assert (cases["bicubic_max"] >= 1.0 - 1e-6).all()   # a max-scaled map reaches 1 before clipping
    agree = layer_agreement(lite0, photo_batch[:1], ["head", "stages.5"])
    assert agree["head"] > 0.9 and agree.between(-1, 1).all()


def test_parent_gaps_by_hand() -> None:
    # class 0: Grad-CAM [[0, .5], [.75, .5]] / .75, LayerCAM A^0 / 4 = [[.25, .5], [.75, 1]] / 1
    bundle = toy_bundle(GapLinear(W))
    gaps = parent_gaps(bundle, [FakeSample("toy.png", A[0], 0)])
    row = gaps.iloc[0]
    with torch.no_grad():
        assert abs(row["p"] - float(bundle.model(A).softmax(dim=1)[0, 0])) < 1e-6
    assert row["photo"] == "toy.png" and row["class_name"] == "0"
    assert abs(row["mean_gap"] - (0.25 + 1 / 6 + 0.25 + 1 / 3) / 4) < 1e-6 and abs(row["max_gap"] - 1 / 3) < 1e-6
    assert (row["gc_zero"], row["lc_zero"]) == (1, 0)


def test_insertion_by_alpha_ends_are_the_parents(lite0, photo_batch) -> None:
    aucs = insertion_by_alpha(lite0, photo_batch[:1], 0, steps=4, alphas=(0.0, 1.0))
    assert list(aucs.index) == [0.0, 1.0] and aucs.between(0, 1).all()
    gc = compute_cams(lite0, photo_batch[:1], ("gradcam",), target=0)["gradcam"]
    assert abs(aucs[1.0] - float(insertion_deletion_auc(lite0, photo_batch[:1], gc, 0, steps=4)["insertion"][0])) < 1e-6
