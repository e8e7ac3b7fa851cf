"""The CAM engine against values worked out by hand, invariants and the real model."""
from __future__ import annotations

import gc

import pytest
import torch
from torch import nn
from toy import GapLinear, toy_bundle

from helpers.cam.engine import (
    METHODS,
    compute_cams,
    forward_backward,
    gradcam,
    gradcam_weights,
    gradient_methods,
    layercam,
    shared,
)
from helpers.cam.hooks import LayerCapture
from helpers.cam.maps import fuse_layers, geometric_fusion, normalise_max, scale_maps, upsample
from helpers.cam.options import Hybrid

# A = the input itself (2 channels, 2x2); w = [[1, -2], [0.5, 3]].
A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 1.0]]]])
W = torch.tensor([[1.0, -2.0], [0.5, 3.0]])


def test_toy_gradients_are_w_over_area() -> None:
    cap = forward_backward(toy_bundle(GapLinear(W)), A, class_idx=0)
    expected = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2) / 4
    assert torch.allclose(cap.gradients["features"], expected)
    assert torch.equal(cap.activations["features"], A)


def test_gradcam_and_layercam_by_hand() -> None:
    # class 0: alpha = [1/4, -1/2]; 0.25*A0 - 0.5*A1 = [[-1.75, 0.5], [0.75, 0.5]] -> ReLU
    maps = compute_cams(toy_bundle(GapLinear(W)), A, methods=("gradcam", "layercam"), target=0)
    assert torch.allclose(maps["gradcam"][0], torch.tensor([[0.0, 0.5], [0.75, 0.5]]) / 0.75)
    # LayerCAM: ReLU(1/4)*A0 + ReLU(-1/2)*A1 = A0/4 -> [[.25, .5], [.75, 1]]
    assert torch.allclose(maps["layercam"][0], torch.tensor([[0.25, 0.5], [0.75, 1.0]]))
    # class 1: both weights positive, so the gradient is positive everywhere and the two agree
    maps = compute_cams(toy_bundle(GapLinear(W)), A, methods=("gradcam", "layercam"), target=1)
    assert torch.allclose(maps["gradcam"], maps["layercam"])


def test_gradcam_equals_cam_on_gap_linear() -> None:
    torch.manual_seed(0)
    w, x = torch.randn(5, 8), torch.randn(2, 8, 6, 6)
    maps = compute_cams(toy_bundle(GapLinear(w)), x, methods=("gradcam",), target=[3, 1])
    cam = torch.relu(torch.einsum("nk,nkij->nij", w[[3, 1]], x))  # Zhou et al.'s CAM
    assert torch.allclose(maps["gradcam"], normalise_max(cam), atol=1e-6)


def test_hybrid_by_hand_and_limits() -> None:
    gc_raw = torch.tensor([[[0.0, 2.0], [1.0, 4.0]]])
    lc_raw = torch.tensor([[[1.0, 1.0], [4.0, 2.0]]])
    half = geometric_fusion(gc_raw, lc_raw, 0.5)  # sqrt((gc/4) * (lc/4))
    assert torch.allclose(half, torch.tensor([[[0.0, (0.5 * 0.25) ** 0.5], [(0.25 * 1.0) ** 0.5, (1 * 0.5) ** 0.5]]]))
    assert torch.equal(geometric_fusion(gc_raw, lc_raw, 1.0), gc_raw / 4)
    assert torch.equal(geometric_fusion(gc_raw, lc_raw, 0.0), lc_raw / 4)
    with pytest.raises(ValueError, match="alpha"):
        geometric_fusion(gc_raw, lc_raw, 1.5)


def test_hybrid_limits_on_real_model(lite0, photo_batch) -> None:
    one = compute_cams(lite0, photo_batch[:2], methods=("gradcam", "layercam", Hybrid(alpha=1.0)))
    zero = compute_cams(lite0, photo_batch[:2], methods=Hybrid(alpha=0.0))
    assert torch.allclose(one["hybrid"], one["gradcam"], atol=1e-5)
    assert torch.allclose(zero["hybrid"], one["layercam"], atol=1e-5)
    assert not torch.allclose(one["gradcam"], one["layercam"], atol=1e-2)


def test_maps_shape_range_and_predicted_class(lite0, photo_batch) -> None:
    maps = compute_cams(lite0, photo_batch)
    assert set(maps) == {"gradcam", "layercam", "hybrid"}
    for m in maps.values():
        assert m.shape == (3, 224, 224) and m.dtype == torch.float32
        assert m.min() >= 0 and torch.allclose(m.flatten(1).amax(1), torch.ones(3))
    with torch.inference_mode():
        assert torch.equal(maps.class_idx, lite0.model(photo_batch).argmax(1))


def test_batch_equals_single_calls(lite0, photo_batch) -> None:
    batch = compute_cams(lite0, photo_batch, target=[967, 281, 657])
    for i, c in enumerate([967, 281, 657]):
        single = compute_cams(lite0, photo_batch[i:i + 1], target=c)
        for name in batch:
            assert torch.allclose(batch[name][i], single[name][0], atol=1e-5), name


def test_same_input_gives_identical_maps(lite0, photo_batch) -> None:
    a, b = compute_cams(lite0, photo_batch), compute_cams(lite0, photo_batch)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_all_zero_map_stays_zero_without_nan() -> None:
    maps = compute_cams(toy_bundle(GapLinear(torch.zeros(2, 2))), A, target=0)
    for m in maps.values():
        assert not torch.isnan(m).any() and torch.count_nonzero(m) == 0
    assert torch.equal(normalise_max(torch.zeros(2, 3, 3)), torch.zeros(2, 3, 3))


def test_bad_class_index_and_names_are_clear_errors() -> None:
    bundle = toy_bundle(GapLinear(W))
    with pytest.raises(ValueError, match="class index 7 out of range"):
        compute_cams(bundle, A, target=7)
    with pytest.raises(ValueError, match="class index -1"):
        compute_cams(bundle, A, target=-1)
    with pytest.raises(ValueError, match="2 entries for a batch of 1"):
        compute_cams(bundle, A, target=[0, 1])
    with pytest.raises(ValueError, match="unknown CAM method 'gradcan'.*gradcam"):
        compute_cams(bundle, A, methods=("gradcan",))
    with pytest.raises(ValueError, match="unknown layer 'feature'.*features"):
        compute_cams(bundle, A, layer="feature")


def test_no_parameter_gets_grad_and_flags_restored(lite0, photo_batch) -> None:
    frozen = next(lite0.model.parameters())
    frozen.requires_grad_(False)
    try:
        compute_cams(lite0, photo_batch[:1])
        assert all(p.grad is None for p in lite0.model.parameters())
        flags = [p.requires_grad for p in lite0.model.parameters()]
        assert flags[0] is False and all(flags[1:])
    finally:
        frozen.requires_grad_(True)


def test_inplace_relu_after_layer_is_safe() -> None:
    x = torch.tensor([[[[1.0, -2.0], [3.0, -4.0]], [[-1.0, 0.5], [2.0, 1.0]]]])
    model = GapLinear(W, features=nn.Conv2d(2, 2, 1, bias=False), inplace_relu=True)
    with torch.no_grad():
        model.features.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    cap = forward_backward(toy_bundle(model), x, class_idx=0)
    assert torch.equal(cap.activations["features"], x)  # the pre-ReLU map, not overwritten in place
    relu_mask = (x > 0).float()  # gradient passes the ReLU only where the map is positive
    assert torch.allclose(cap.gradients["features"], relu_mask * torch.tensor([1.0, -2.0]).view(1, 2, 1, 1) / 4)


def test_module_reused_in_forward_is_rejected() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.fc = nn.ReLU(), nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(self.features(self.features(x)).mean(dim=(2, 3)))

    with pytest.raises(RuntimeError, match="ran 2 times"):
        compute_cams(toy_bundle(Twice()), A, target=0)


def test_probability_score_gradient_by_hand() -> None:
    model = GapLinear(W)
    cap = forward_backward(toy_bundle(model), A, class_idx=0, score="probability")
    p = model(A).softmax(1)[0].detach()
    # d p_0 / dA^k = p_0 (w_0k - sum_j p_j w_jk) / (h w)
    expected = p[0] * (W[0] - p @ W) / 4
    assert torch.allclose(cap.gradients["features"][0, :, 0, 0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="unknown score"):
        forward_backward(toy_bundle(model), A, score="logits")


def test_bilinear_upsampling_by_hand() -> None:
    up = upsample(torch.tensor([[[0.0, 1.0], [2.0, 3.0]]]), (4, 4))
    row = torch.tensor([0.0, 0.25, 0.75, 1.0])
    assert torch.allclose(up[0], row[None, :] + 2 * row[:, None])
    assert torch.equal(upsample(torch.tensor([[[0.0, 1.0], [2.0, 3.0]]]), (4, 4), "nearest")[0, :2, :2],
                       torch.zeros(2, 2))


def test_fuse_layers_scales_shallow_maps_then_takes_max() -> None:
    shallow = torch.tensor([[[0.1, 0.2], [0.0, 0.05]]])
    deep = torch.tensor([[[0.2, 0.0], [1.0, 0.5]]])
    fused = fuse_layers([shallow, deep], gamma=2.0)
    scaled = torch.tanh(2 * shallow / 0.2)
    expected = torch.maximum(scaled, deep)
    assert torch.allclose(fused, expected / expected.max())


def test_multi_layer_cams_on_real_model(lite0, photo_batch) -> None:
    maps = compute_cams(lite0, photo_batch[:1], methods=("layercam",), layer=["stages.3", "stages.5", "head"])
    head = compute_cams(lite0, photo_batch[:1], methods=("layercam",))
    assert maps["layercam"].shape == (1, 224, 224)
    assert not torch.allclose(maps["layercam"], head["layercam"])


def test_hooks_removed_and_flags_restored_after_exception() -> None:
    class Boom(GapLinear):
        def forward(self, x):
            self.features(x)
            raise RuntimeError("boom")

    model = Boom(W)
    with pytest.raises(RuntimeError, match="boom"):
        compute_cams(toy_bundle(model), A)
    assert not model.features._forward_hooks
    assert all(p.requires_grad for p in model.parameters())


def test_repeated_calls_do_not_grow_memory() -> None:
    torch.manual_seed(0)
    bundle, x = toy_bundle(GapLinear(torch.randn(4, 8))), torch.randn(3, 8, 5, 5)

    def live_tensors() -> int:
        gc.collect()
        return sum(type(o) is torch.Tensor or type(o) is nn.Parameter for o in gc.get_objects())

    compute_cams(bundle, x)
    before = live_tensors()
    for _ in range(30):
        compute_cams(bundle, x)
    assert live_tensors() <= before
    assert not bundle.model.features._forward_hooks


def test_every_gradient_method_is_nonnegative_and_nan_free() -> None:
    torch.manual_seed(1)
    acts, grads = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 4)
    assert {"gradcam", "layercam", "hybrid", "gradcam++", "xgradcam", "hirescam"} <= set(gradient_methods())
    for name in gradient_methods():
        fn = METHODS[name]
        out = fn(acts, grads)
        assert out.shape == (2, 4, 4) and (out >= 0).all() and not out.isnan().any(), name
        zero = fn(torch.zeros_like(acts), grads)
        assert not zero.isnan().any() and torch.count_nonzero(zero) == 0, name


def test_gradcam_weights_are_spatial_means() -> None:
    grads = torch.arange(8.0).view(1, 2, 2, 2)
    assert torch.equal(gradcam_weights(grads), torch.tensor([[1.5, 5.5]]))
    assert torch.equal(gradcam(A, torch.ones_like(A)), (A.sum(1)))
    assert torch.equal(layercam(A, -torch.ones_like(A)), torch.zeros(1, 2, 2))


def test_normalise_max_scales_each_map_and_zeroes_maps_without_a_positive_peak() -> None:
    maps = torch.tensor([[[1.0, 4.0]], [[0.0, 0.0]], [[-1.0, -3.0]], [[0.5, 0.25]]])
    out = normalise_max(maps)
    assert torch.equal(out, torch.tensor([[[0.25, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 0.5]]]))
    assert not out.signbit().any()  # +0, not -0, where a map has no positive peak
    assert torch.equal(normalise_max(maps[[0, 3]]), out[[0, 3]])  # every peak positive: the one-division branch


def test_a_pass_computes_each_shared_map_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    @shared
    def base(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.relu((grads * acts).sum(dim=1))

    def twice(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return 2 * base(acts, grads)

    monkeypatch.setitem(METHODS, "base", base)
    monkeypatch.setitem(METHODS, "twice", twice)
    torch.manual_seed(0)
    bundle, x = toy_bundle(GapLinear(torch.randn(3, 4))), torch.rand(2, 4, 5, 5)
    maps = compute_cams(bundle, x, ["base", "twice"], target=[0, 2])
    assert len(calls) == 1  # "twice" reused the map of "base"
    assert torch.equal(maps["base"], maps["twice"])  # 2 M / max(2 M) = M / max M, exactly (powers of two)
    base(x, x)
    base(x, x)
    assert len(calls) == 3  # outside a pass every call runs


def test_hybrid_with_its_parts_equals_hybrid_alone() -> None:
    torch.manual_seed(0)
    bundle, x = toy_bundle(GapLinear(torch.randn(3, 4))), torch.randn(2, 4, 5, 5)
    together = compute_cams(bundle, x, ("gradcam", "layercam", Hybrid(alpha=0.3)))
    for name, method in (("gradcam", "gradcam"), ("layercam", "layercam"), ("hybrid", Hybrid(alpha=0.3))):
        assert torch.equal(together[name], compute_cams(bundle, x, method)[name]), name
    assert not torch.equal(together["gradcam"], together["layercam"])


def test_maps_scaled_together_equal_maps_scaled_one_by_one() -> None:
    torch.manual_seed(0)
    raw = [torch.rand(2, 3, 3), torch.zeros(2, 3, 3), torch.rand(2, 4, 4), 7 * torch.rand(2, 3, 3),
           -torch.rand(2, 4, 4)]
    out = scale_maps(raw, (9, 11))
    assert len(out) == len(raw)
    for r, o in zip(raw, out, strict=True):
        assert torch.equal(o, normalise_max(upsample(r, (9, 11))))


def test_fed_map_is_copied_unless_asked_not_to() -> None:
    model = GapLinear(W)
    given = torch.rand(1, 2, 2, 2)
    with LayerCapture(model, ["features"]) as cap:
        copied, itself = cap.feed("features", given), cap.feed("features", given, copy=False)
        assert copied is not cap.activations["features"] and torch.equal(copied, given)
        assert itself is cap.activations["features"] and itself.requires_grad


def test_layers_are_found_by_path_and_unknown_paths_are_clear_errors() -> None:
    model = GapLinear(W, features=nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU()))
    with LayerCapture(model, ["features.0", "features"]) as cap:
        assert cap.modules == {"features.0": model.features[0], "features": model.features}
    for name in ("features.5", "feature", ""):
        with pytest.raises(ValueError, match=f"unknown layer '{name}'.*features"):
            LayerCapture(model, [name])
