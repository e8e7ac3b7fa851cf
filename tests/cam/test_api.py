"""The edges of compute_cams: method objects and their keys, bad requests refused early, models never changed."""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn
from toy import GapLinear, toy_bundle, two_layer_toy

from helpers.cam.engine import METHODS, OPTIONS, compute_cams, forward_backward, gradcam, method_options, register
from helpers.cam.options import Hybrid, LayerFusion, MethodOptions, ReciproCAM, ScoreCAM, Smooth


def batch(n: int = 2):
    bundle, samples = two_layer_toy(n)
    return bundle, torch.stack([s.tensor for s in samples])


def forwards(bundle) -> list[int]:
    calls: list[int] = []
    bundle.model.register_forward_hook(lambda m, i, o: calls.append(1))
    return calls


def test_signature_is_small() -> None:
    assert len(inspect.signature(compute_cams).parameters) <= 8


def test_method_objects_equal_names_and_keep_the_names_as_keys() -> None:
    bundle, x = batch()
    names = compute_cams(bundle, x, ("gradcam", "layercam", "hybrid"))
    objects = compute_cams(bundle, x, ("gradcam", "layercam", Hybrid(alpha=0.7)))
    assert list(objects) == ["gradcam", "layercam", "hybrid"]
    assert all(torch.equal(objects[m], names[m]) for m in names)
    one = compute_cams(bundle, x, "gradcam")
    assert list(one) == ["gradcam"] and torch.equal(one["gradcam"], names["gradcam"])
    assert list(compute_cams(bundle, x, Hybrid(alpha=0.3))) == ["hybrid"]
    assert list(compute_cams(bundle, x, ("gradcam", "gradcam", "hybrid", Hybrid()))) == ["gradcam", "hybrid"]


def test_same_method_with_different_options_is_keyed_by_the_values_that_differ() -> None:
    bundle, x = batch()
    maps = compute_cams(bundle, x, (Hybrid(alpha=0.5), "gradcam", Hybrid(alpha=0.7)))
    assert list(maps) == ["hybrid@0.5", "gradcam", "hybrid@0.7"]
    for alpha in (0.5, 0.7):
        assert torch.equal(maps[f"hybrid@{alpha}"], compute_cams(bundle, x, Hybrid(alpha=alpha))["hybrid"])
    smooth = compute_cams(bundle, x, (Smooth("gradcam", n=2), Smooth("gradcam", n=3), Smooth("layercam", n=2)))
    assert list(smooth) == ["smooth-gradcam@2", "smooth-gradcam@3", "smooth-layercam"]
    for n in (2, 3):  # each setting has its own noisy copies in the one pass
        alone = compute_cams(bundle, x, Smooth("gradcam", n=n))["smooth-gradcam"]
        assert torch.equal(smooth[f"smooth-gradcam@{n}"], alone)


def test_layer_fusion_gamma() -> None:
    bundle, x = batch()
    layers = ["features.1", "features.3"]
    default, two, one = (compute_cams(bundle, x, "layercam", layer=layers, fusion=f)["layercam"]
                         for f in (LayerFusion(), LayerFusion(gamma=2.0), LayerFusion(gamma=1.0)))
    assert torch.equal(default, two) and not torch.allclose(one, two)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        LayerFusion(gamma=0.0)


def test_bad_requests_are_refused_before_any_forward() -> None:
    bundle, x = batch()
    calls = forwards(bundle)
    cases = [(dict(methods=()), ValueError, "methods is empty"),
             (dict(methods=[]), ValueError, "methods is empty"),
             (dict(target=9.5), ValueError, "class_idx must be an integer"),
             (dict(target=[1, 2.5]), ValueError, "class_idx must be an integer"),
             (dict(layer=[]), ValueError, "layer is empty"),
             (dict(methods=("gradcam", 3)), TypeError, "a CAM method is a name, an option object"),
             (dict(methods=Smooth("scorecam")), ValueError, "SmoothGrad wraps gradient methods only"),
             (dict(fusion=2.0), TypeError, "fusion must be a LayerFusion")]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            compute_cams(bundle, x, **kwargs)
    for dtype in (torch.float64, torch.float16):
        with pytest.raises(ValueError, match=f"images are {dtype} but the weights of toy are torch.float32"):
            compute_cams(bundle, x.to(dtype))
        with pytest.raises(ValueError, match=f"images are {dtype}"):
            forward_backward(bundle, x.to(dtype))
    assert calls == []
    double = toy_bundle(GapLinear(torch.randn(3, 3).double()).double())  # a float64 model takes float64 images
    maps = compute_cams(double, torch.rand(1, 3, 4, 4, dtype=torch.float64), "gradcam")
    assert maps["gradcam"].dtype == torch.float64


def test_option_objects_check_their_options() -> None:
    for make, message in ((lambda: Hybrid(alpha=1.5), "alpha must lie in"), (lambda: ScoreCAM(top_k=0), "top_k"),
                          (lambda: ScoreCAM(weights="x"), "Score-CAM weights"),
                          (lambda: ReciproCAM(kernel="box"), "kernel"), (lambda: Smooth(noise=-1.0), "noise >= 0")):
        with pytest.raises(ValueError, match=message):
            make()


def test_method_options_builds_objects_from_a_settings_dict() -> None:
    settings = {"alpha": 0.4, "top_k": 8, "kernel": "gaussian"}
    assert method_options("hybrid", settings) == Hybrid(alpha=0.4)
    assert method_options("scorecam", settings) == ScoreCAM(top_k=8)
    assert method_options("reciprocam", settings) == ReciproCAM(kernel="gaussian")
    assert method_options("gradcam", settings) == "gradcam"
    assert method_options("smooth-hybrid", settings | {"n": 3}) == Smooth(Hybrid(alpha=0.4), n=3)
    with pytest.raises(ValueError, match="unknown CAM method 'gradcan'"):
        method_options("gradcan", {})


@dataclass(frozen=True)
class Scaled(MethodOptions):
    """A test method's options: Grad-CAM times a factor."""

    name: ClassVar[str] = "scaled-test"
    factor: float = 2.0


def test_a_new_method_with_options_needs_no_engine_change() -> None:
    register("scaled-test", Scaled)(lambda acts, grads, factor=2.0: factor * gradcam(acts, grads))
    try:
        bundle, x = batch()
        maps = compute_cams(bundle, x, ("gradcam", Scaled(factor=3.0)))
        assert torch.allclose(maps["scaled-test"], maps["gradcam"], atol=1e-6)  # the max scaling removes the factor
    finally:
        METHODS.pop("scaled-test")
        OPTIONS.pop("scaled-test")


class BatchNormNet(GapLinear):
    """conv -> BatchNorm -> ReLU -> dropout -> conv: train mode changes both the maps and the running statistics."""


def batchnorm_toy():
    torch.manual_seed(5)
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                             nn.Conv2d(4, 5, 3, padding=1))
    bundle = toy_bundle(BatchNormNet(torch.randn(3, 5), features))
    with torch.no_grad():  # running statistics away from their initial 0 / 1, as after training
        features[1].running_mean.uniform_(-1, 1)
        features[1].running_var.uniform_(0.5, 2)
    return bundle, torch.randn(2, 3, 8, 8)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()}


def test_a_model_in_train_mode_is_never_changed_and_gives_eval_maps() -> None:
    bundle, x = batchnorm_toy()
    methods = ("gradcam", "layercam", "hybrid", "gradcam++", Smooth("gradcam", n=2))
    want = compute_cams(bundle, x, methods, target=[0, 2])
    bundle.model.train()
    bundle.model.features[3].eval()  # a module in its own mode gets it back
    modes = {name: m.training for name, m in bundle.model.named_modules()}
    before = state(bundle.model)
    assert any("running" in k for k in before) and "features.1.num_batches_tracked" in before
    with pytest.warns(UserWarning, match="in train mode: it runs in eval mode") as record:
        got = compute_cams(bundle, x, methods, target=[0, 2])
        cap = forward_backward(bundle, x, 0)
    assert len(record) == 2  # one warning per call
    after = state(bundle.model)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert {name: m.training for name, m in bundle.model.named_modules()} == modes
    assert all(torch.equal(got[m], want[m]) for m in want)
    assert cap.logits.shape == (2, 3)
    bundle.model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an eval-mode model: no warning
        compute_cams(bundle, x, "gradcam")


def test_lite0_in_train_mode_keeps_every_buffer(lite0, photo_batch) -> None:
    x = photo_batch[:1]
    want = compute_cams(lite0, x)
    before = state(lite0.model)
    lite0.model.train()
    try:
        with pytest.warns(UserWarning, match="in train mode"):
            got = compute_cams(lite0, x)
        assert lite0.model.training
    finally:
        lite0.model.eval()
    after = state(lite0.model)
    assert sum("running_mean" in k for k in before) > 40
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(torch.equal(got[m], want[m]) for m in want)
