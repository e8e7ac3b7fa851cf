"""What compute_cams explains: class indices, class targets, callables on the logits, regression outputs."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from toy import GapLinear, toy_bundle, two_layer_toy

from helpers.cam.engine import compute_cams, forward_backward, gradcam_weights
from helpers.cam.maps import normalise_max
from helpers.cam.targets import ClassLogit, ClassLogProbability, ClassProbability, as_target, class_target

GRADIENT = ("gradcam", "layercam", "hybrid", "gradcam++", "xgradcam", "hirescam")


def forwards(bundle) -> list[int]:
    """A list that grows by one for every forward of the bundle's model."""
    calls: list[int] = []
    bundle.model.register_forward_hook(lambda m, i, o: calls.append(1))
    return calls


def test_callable_equal_to_the_class_logit_gives_the_class_map() -> None:
    bundle, samples = two_layer_toy(3)
    x = torch.stack([s.tensor for s in samples])
    by_class = compute_cams(bundle, x, GRADIENT, target=2)
    for target in (lambda y: y[:, 2], ClassLogit(2), [2, 2, 2]):
        got = compute_cams(bundle, x, GRADIENT, target=target)
        assert all(torch.equal(got[m], by_class[m]) for m in GRADIENT)
    assert compute_cams(bundle, x, GRADIENT, target=lambda y: y[:, 2]).class_idx is None
    assert torch.equal(by_class.class_idx, torch.tensor([2, 2, 2]))


def test_gradcam_weights_of_a_sum_are_the_sum_of_weights() -> None:
    # Grad-CAM's weights are spatial means of d score / dA, linear in the score: alpha(y1 + y2) = alpha(y1) + alpha(y2)
    bundle, samples = two_layer_toy(4)
    x = torch.stack([s.tensor for s in samples])
    layer = "features.1"  # a ReLU inside the network: the gradients vary over positions and images
    weights = {t: gradcam_weights(forward_backward(bundle, x, c, layer).gradients[layer])
               for t, c in (("a", 0), ("b", 2), ("sum", lambda y: y[:, 0] + y[:, 2]))}
    assert not torch.allclose(weights["a"], weights["b"])
    assert torch.allclose(weights["sum"], weights["a"] + weights["b"], atol=1e-6)


def test_gradcam_of_a_sum_of_two_logits_where_relu_is_inactive() -> None:
    # features = input, y_c = sum_k W_ck mean(A^k) + 0.1: alpha_k(y3 + y7) = (W_3k + W_7k) / (h w). Positive
    # weights and positive inputs keep sum_k alpha_k A^k > 0, so the map is that sum over its maximum.
    torch.manual_seed(1)
    weight, x = torch.rand(8, 4) + 0.1, torch.rand(2, 4, 5, 5) + 0.1
    bundle = toy_bundle(GapLinear(weight))
    maps = compute_cams(bundle, x, ("gradcam", "layercam"), target=lambda y: y[:, 3] + y[:, 7])
    expected = normalise_max(torch.einsum("k,nkij->nij", (weight[3] + weight[7]) / 25, x))
    assert torch.allclose(maps["gradcam"], expected, atol=1e-6)
    assert torch.allclose(maps["layercam"], expected, atol=1e-6)  # positive gradients: LayerCAM = Grad-CAM here
    assert not torch.allclose(maps["gradcam"], compute_cams(bundle, x, ("gradcam",), target=3)["gradcam"], atol=1e-3)


def test_regression_model_with_one_output() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 1)).eval()
    x = torch.randn(2, 3, 8, 8)
    maps = compute_cams(model, x, ("gradcam", "hybrid"), target=lambda y: y[:, 0], layer="1")
    acts = model[1](model[0](x)).detach()
    expected = normalise_max(torch.relu(torch.einsum("k,nkij->nij", model[4].weight[0].detach() / 64, acts)))
    assert maps.class_idx is None and maps.logits.shape == (2, 1)
    assert torch.allclose(maps["gradcam"], expected, atol=1e-6)
    assert torch.equal(compute_cams(model, x, ("gradcam",), target=0, layer="1")["gradcam"], maps["gradcam"])


def test_log_probability_gradient_by_hand() -> None:
    # d log p_0 / dA^k = (w_0k - sum_j p_j w_jk) / (h w) on GapLinear
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 1.0]]]])
    model = GapLinear(w)
    p = model(a).softmax(1)[0].detach()
    for target in (ClassLogProbability(0), class_target(0, "log-probability")):
        cap = forward_backward(toy_bundle(model), a, target)
        assert torch.allclose(cap.gradients["features"][0, :, 0, 0], (w[0] - p @ w) / 4, atol=1e-6)
    prob = forward_backward(toy_bundle(model), a, ClassProbability(0)).gradients["features"][0, :, 0, 0]
    assert torch.allclose(prob, p[0] * (w[0] - p @ w) / 4, atol=1e-6)


def test_class_targets_and_their_errors() -> None:
    assert class_target(3, "probability") == ClassProbability(3) and as_target(None) == ClassLogit()
    fn = lambda y: y[:, 0]  # noqa: E731
    assert as_target(fn) is fn and as_target(ClassProbability(1), "logit") == ClassProbability(1)
    with pytest.raises(ValueError, match="unknown score 'logits'"):
        class_target(0, "logits")
    for bad in (9.5, [1, 2.5], torch.tensor([1.5]), True):
        with pytest.raises(ValueError, match="class_idx must be an integer"):
            ClassLogit(bad)


def test_methods_that_need_a_class_refuse_a_callable_before_any_forward() -> None:
    bundle, samples = two_layer_toy(1)
    calls = forwards(bundle)
    for method in ("cam", "scorecam", "reciprocam"):
        with pytest.raises(ValueError, match=f"{method} explain a class.*callable target has none"):
            compute_cams(bundle, samples[0].tensor[None], ("gradcam", method), target=lambda y: y[:, 0])
    assert calls == []


def test_callable_with_a_wrong_shape_or_no_gradient_is_a_clear_error() -> None:
    bundle, samples = two_layer_toy(2)
    x = torch.stack([s.tensor for s in samples])
    with pytest.raises(ValueError, match=r"one score per image, shape \(2,\); got \(2, 3\)"):
        compute_cams(bundle, x, target=lambda y: y)
    with pytest.raises(ValueError, match="do not depend on the logits"):
        compute_cams(bundle, x, target=lambda y: torch.ones(len(y)))
