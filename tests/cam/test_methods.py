"""The further methods (CAM, Grad-CAM++, XGrad-CAM, HiResCAM, Score-CAM, Recipro-CAM, SmoothGrad) and the model
split."""
from __future__ import annotations

import pytest
import torch
from toy import GapLinear, SplitToy, toy_bundle

from helpers.cam.engine import METHODS, compute_cams, gradient_methods, noisy_copies
from helpers.cam.maps import normalise, normalise_max
from helpers.cam.methods import gradcam_pp, hirescam, normalise_minmax, spatial_masks, xgradcam
from helpers.cam.models import load_model
from helpers.cam.options import ReciproCAM, ScoreCAM, Smooth
from helpers.cam.split import GapLinearHead, split_at

# A = the input itself (2 channels, 2x2); w = [[1, -2], [0.5, 3]]; bias 0.1 (see tests/toy.py).
A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 1.0]]]])
W = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
NEW = ("cam", "gradcam++", "xgradcam", "hirescam", "scorecam", "reciprocam")
#: NEW with Score-CAM keeping 2 channels and 4 images per forward of both gradient-free methods.
OPTIONED = NEW[:4] + (ScoreCAM(top_k=2, batch_size=4), ReciproCAM(batch_size=4))


def toy(weight: torch.Tensor = W) -> object:
    return toy_bundle(SplitToy(weight))


def test_all_methods_are_registered() -> None:
    assert set(NEW) <= set(METHODS)
    assert {"gradcam++", "xgradcam", "hirescam"} <= set(gradient_methods())
    assert not {"cam", "scorecam", "reciprocam"} & set(gradient_methods())


def test_cam_xgradcam_hirescam_equal_gradcam_on_gap_linear() -> None:
    # dy/dA^k = w_k / (hw) everywhere: CAM = (hw) Grad-CAM; XGrad-CAM's weights are w_k/(hw) too
    # (sum_ij A_ij / sum A = 1); HiResCAM with a spatially constant gradient is Grad-CAM.
    torch.manual_seed(0)
    w, x = torch.randn(5, 8), torch.rand(2, 8, 6, 6) + 0.1
    maps = compute_cams(toy(w), x, methods=("gradcam", "cam", "xgradcam", "hirescam"), target=[3, 1])
    expected = normalise_max(torch.relu(torch.einsum("nk,nkij->nij", w[[3, 1]], x)))
    for name in ("gradcam", "cam", "xgradcam", "hirescam"):
        assert torch.allclose(maps[name], expected, atol=1e-6), name


def test_xgradcam_and_hirescam_by_hand_with_varying_gradient() -> None:
    grads = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, -1.0]]]])
    # XGrad-CAM: w_0 = (1*1)/10 = 0.1, w_1 = (1*-1)/5 = -0.2 -> 0.1*A0 - 0.2*A1
    assert torch.allclose(xgradcam(A, grads)[0], torch.relu(0.1 * A[0, 0] - 0.2 * A[0, 1]))
    # HiResCAM: element-wise g*A summed over channels: only (0,0) -> 1 and (1,1) -> -1
    assert torch.equal(hirescam(A, grads)[0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    # a channel summing to zero gets weight zero, not NaN
    assert torch.equal(xgradcam(torch.zeros_like(A), grads), torch.zeros(1, 2, 2))


def test_gradcam_pp_by_hand() -> None:
    # Class 1 on the toy: g = [0.5, 3] / 4 = [0.125, 0.75] constant per channel; sum A = [10, 5].
    # alpha = g^2 / (2 g^2 + S g^3) = 1 / (2 + S g): [1/3.25, 1/5.75]; w_k = 4 alpha_k g_k.
    maps = compute_cams(toy(), A, methods=("gradcam++",), target=1)
    w = torch.tensor([0.5 / 3.25, 3.0 / 5.75])
    raw = w[0] * A[0, 0] + w[1] * A[0, 1]
    assert torch.allclose(maps["gradcam++"][0], raw / raw.max())
    # Class 0: g = [0.25, -0.5]: the negative channel is dropped (ReLU(g) = 0): the map is A0 scaled
    assert torch.allclose(compute_cams(toy(), A, methods=("gradcam++",), target=0)["gradcam++"][0], A[0, 0] / 4)


def test_gradcam_pp_zero_denominator_gives_zero_weight() -> None:
    # sum A = -8 and g = 0.25: 2 g^2 + S g^3 = 0.125 - 0.125 = 0 -> alpha = 0 (no inf)
    acts = torch.full((1, 1, 2, 2), -2.0)
    out = gradcam_pp(acts, torch.full((1, 1, 2, 2), 0.25))
    assert torch.equal(out, torch.zeros(1, 2, 2))


def test_scorecam_by_hand() -> None:
    # Masks: H^0 = (A0 - 1) / 3, H^1 = A1 / 4. Input X = A, so the masked copy X * H^k gives
    # class-1 logits 0.5 * mean(A0 H^k) + 3 * mean(A1 H^k) + 0.1:
    #   k=0: means (0 + 2/3 + 2 + 4)/4 = 5/3 and (0 + 0 + 0 + 1)/4 = 1/4
    #   k=1: means (1 + 0 + 0 + 1)/4 = 1/2 and (4 + 0 + 0 + 1/4)/4 = 17/16
    s = torch.tensor([0.5 * 5 / 3 + 3 * 0.25 + 0.1, 0.5 * 0.5 + 3 * 17 / 16 + 0.1])
    w = s.softmax(0)
    raw = w[0] * A[0, 0] + w[1] * A[0, 1]
    maps = compute_cams(toy(), A, methods=ScoreCAM(top_k=None), target=1)
    assert torch.allclose(maps["scorecam"][0], raw / raw.max(), atol=1e-6)
    # "probability": each masked input's softmax probability of class 1 (2 classes: a sigmoid)
    s0 = torch.tensor([1 * 5 / 3 - 2 * 0.25 + 0.1, 1 * 0.5 - 2 * 17 / 16 + 0.1])
    p = torch.sigmoid(s - s0)
    raw = p[0] * A[0, 0] + p[1] * A[0, 1]
    maps = compute_cams(toy(), A, methods=ScoreCAM(top_k=None, weights="probability"), target=1)
    assert torch.allclose(maps["scorecam"][0], raw / raw.max(), atol=1e-6)
    # "official" (the authors' code): probability weights and ALL channels, whatever top_k says
    official = compute_cams(toy(), A, methods=ScoreCAM(top_k=1, weights="official"), target=1)
    assert torch.allclose(official["scorecam"][0], raw / raw.max(), atol=1e-6)
    # ... and a constant channel is skipped: with A1 = 2 everywhere only A0 is weighted -> A0 / max A0;
    # the "probability" variant instead adds p(class 1 | zero input) * 2 = sigmoid(0) * 2 = 1 everywhere
    flat = A.clone()
    flat[0, 1] = 2.0
    official = compute_cams(toy(), flat, methods=ScoreCAM(top_k=None, weights="official"), target=1)
    assert torch.allclose(official["scorecam"][0], A[0, 0] / 4, atol=1e-6)
    h0 = (A[0, 0] - 1) / 3
    p0 = torch.sigmoid((0.5 - 1.0) * (A[0, 0] * h0).mean() + (3.0 + 2.0) * (2.0 * h0).mean())
    prob = compute_cams(toy(), flat, methods=ScoreCAM(top_k=None, weights="probability"), target=1)
    expected = p0 * A[0, 0] + 1.0
    assert torch.allclose(prob["scorecam"][0], expected / expected.max(), atol=1e-6)
    # top_k=1 keeps the channel with the larger mean (A0: 2.5 > 1.25); its weight is softmax of one = 1
    maps = compute_cams(toy(), A, methods=ScoreCAM(top_k=1, batch_size=1), target=1)
    assert torch.allclose(maps["scorecam"][0], A[0, 0] / 4)


def test_reciprocam_by_hand() -> None:
    # One-hot mask at p keeps A[:, p]; GAP divides by 4; with 2 classes and equal biases the
    # class-1 probability is sigmoid((w1 - w0) . A[:, p] / 4), w1 - w0 = [-0.5, 5]:
    # p = (0,0): (-0.5 + 20)/4, (0,1): -1/4, (1,0): -1.5/4, (1,1): (-2 + 5)/4; then min-max.
    probs = torch.sigmoid(torch.tensor([[4.875, -0.25], [-0.375, 0.75]]))
    expected = (probs - probs.min()) / (probs.max() - probs.min())
    maps = compute_cams(toy(), A, methods=ReciproCAM(batch_size=3), target=1)
    assert torch.allclose(maps["reciprocam"][0], expected, atol=1e-6)


def test_spatial_masks() -> None:
    onehot = spatial_masks(2, 3)
    assert onehot.shape == (6, 2, 3) and torch.equal(onehot.sum(0), torch.ones(2, 3))
    assert onehot[4, 1, 1] == 1
    gauss = spatial_masks(3, 3, "gaussian")
    assert torch.equal(gauss[4], torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]))
    assert torch.equal(gauss[0], torch.tensor([[1.0, 0.5, 0.0], [0.5, 0.25, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="unknown Recipro-CAM kernel 'box'"):
        spatial_masks(2, 2, "box")


def test_normalise_max_or_minmax() -> None:
    m = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    assert torch.allclose(normalise(m), m / 5) and torch.allclose(normalise(m, "minmax"), (m - 1) / 4)
    assert torch.equal(normalise(torch.zeros(1, 2, 2), "minmax"), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="unknown normalisation 'sum'"):
        normalise(m, "sum")


def test_normalise_minmax_constant_map_is_zero() -> None:
    maps = torch.stack([torch.full((2, 2), 3.0), torch.tensor([[1.0, 2.0], [3.0, 5.0]])])
    out = normalise_minmax(maps)
    assert torch.equal(out[0], torch.zeros(2, 2)) and torch.equal(out[1], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))


def test_all_zero_maps_stay_zero_without_nan() -> None:
    zeros = torch.zeros(1, 2, 2, 2)
    maps = compute_cams(toy(), zeros, methods=NEW + (Smooth("gradcam++", noise=0.0),), target=0)
    for name, m in maps.items():
        assert not m.isnan().any() and torch.count_nonzero(m) == 0, name


def test_batch_equals_single_on_toy() -> None:
    torch.manual_seed(2)
    bundle, x = toy(torch.randn(3, 4)), torch.rand(3, 4, 5, 5)
    batch = compute_cams(bundle, x, methods=OPTIONED, target=[0, 2, 1])
    for i, c in enumerate([0, 2, 1]):
        single = compute_cams(bundle, x[i:i + 1], methods=OPTIONED, target=c)
        for name in NEW:
            assert torch.allclose(batch[name][i], single[name][0], atol=1e-6), name


def test_smoothgrad_noise_and_averaging() -> None:
    torch.manual_seed(3)
    x = torch.rand(2, 3, 4, 4)
    a, b = noisy_copies(x, 5, 0.2, seed=1), noisy_copies(x, 5, 0.2, seed=1)
    assert a.shape == (10, 3, 4, 4) and torch.equal(a, b)
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    noise = (a.view(5, 2, -1) - x.view(1, 2, -1))
    assert torch.allclose(noise.std(dim=(0, 2)) / spread, torch.full((2,), 0.2), rtol=0.25)
    # zero noise: every copy is the image, so the smoothed map is the plain one
    bundle, imgs = toy(torch.randn(3, 4)), torch.rand(2, 4, 3, 3)
    maps = compute_cams(bundle, imgs, methods=("gradcam++", Smooth("gradcam++", n=3, noise=0.0)))
    assert torch.allclose(maps["gradcam++"], maps["smooth-gradcam++"], atol=1e-6)
    # with noise, the smoothed map is the mean of the raw maps over the copies, computed by hand
    maps = compute_cams(bundle, imgs, methods=Smooth("hirescam", n=3, noise=0.3), target=[1, 2])
    copies = noisy_copies(imgs, 3, 0.3)
    grads = bundle.model.fc.weight[[1, 2] * 3].detach()[:, :, None, None] / 9
    raw = hirescam(copies, grads.expand_as(copies)).view(3, 2, 3, 3).mean(0)
    assert torch.allclose(maps["smooth-hirescam"], normalise_max(raw), atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_one_pass_for_all_gradient_methods_and_smoothing(backend: str) -> None:
    bundle = toy()
    bundle.backend = backend  # "auto": the part below the layer runs on the engine, the classifier in torch
    calls = []
    bundle.model.fc.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    compute_cams(bundle, A, methods=("gradcam", "cam", "gradcam++", "xgradcam", "hirescam", Smooth("layercam", n=4)))
    assert calls == [5]  # one forward: the image and its 4 noisy copies together


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match="SmoothGrad wraps gradient methods only"):
        compute_cams(toy(), A, methods=("smooth-scorecam",))
    with pytest.raises(ValueError, match="unknown CAM method 'smooth-gradcan'"):
        compute_cams(toy(), A, methods=("smooth-gradcan",))
    with pytest.raises(ValueError, match="n >= 1"):
        Smooth("gradcam", n=0)
    with pytest.raises(ValueError, match="CAM needs the classifier weights.*no model split is known for GapLinear"):
        compute_cams(toy_bundle(GapLinear(W)), A, methods=("cam",))
    with pytest.raises(ValueError, match="no model split is known for GapLinear"):
        compute_cams(toy_bundle(GapLinear(W)), A, methods=("reciprocam",))
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        ScoreCAM(top_k=0)
    with pytest.raises(ValueError, match="unknown Score-CAM weights"):
        ScoreCAM(weights="logit")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ReciproCAM(batch_size=0)


def test_split_lite0_every_layer(lite0, photo_batch) -> None:
    x = photo_batch[:1, :, 64:160, 64:160]  # a 96x96 crop keeps it cheap; the split holds at any size
    with torch.inference_mode():
        logits = lite0.model(x)
        for layer in lite0.layers:
            split = split_at(lite0, layer)
            assert torch.allclose(split.tail(split.features(x)), logits, atol=1e-5), layer
    assert isinstance(split_at(lite0).tail, GapLinearHead)
    with pytest.raises(ValueError, match="valid split layers: stem, stages.0"):
        split_at(lite0, "classifier")


def test_split_resnet50_every_layer() -> None:
    bundle = load_model("resnet50", device="cpu", random_init=True)
    torch.manual_seed(4)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        logits = bundle.model(x)
        for layer in bundle.layers:
            split = split_at(bundle, layer)
            assert torch.allclose(split.tail(split.features(x)), logits, atol=1e-4), layer
    assert isinstance(split_at(bundle, "layer4").tail, GapLinearHead)
    assert split_at(bundle, "layer4").tail.linear is bundle.model.fc
    # the class whose score minus bias (= the mean of its raw CAM) is largest: a map that is not all zero
    c = int((logits - bundle.model.fc.bias).argmax())
    maps = compute_cams(bundle, x, methods=("cam", "gradcam"), target=c)
    assert torch.allclose(maps["cam"], maps["gradcam"], atol=1e-5)  # ResNet's head: GAP + linear
    assert maps["cam"].amax() > 0.99
    with pytest.raises(ValueError, match="layer 'layer3' of resnet50 is followed by more layers.*'layer4'"):
        compute_cams(bundle, x, methods=("cam",), layer="layer3")


def test_every_method_on_real_model(lite0, photo_batch) -> None:
    x = photo_batch[:2]
    names = NEW + ("smooth-gradcam",)
    maps = compute_cams(lite0, x, methods=NEW[:4] + (ScoreCAM(top_k=4), "reciprocam", Smooth("gradcam", n=2)))
    for name in names:
        m = maps[name]
        assert m.shape == (2, 224, 224) and m.dtype == torch.float32, name
        assert m.min() >= 0 and torch.allclose(m.flatten(1).amax(1), torch.ones(2)), name
    plain = compute_cams(lite0, x, methods=("gradcam",))
    assert torch.allclose(maps["cam"], plain["gradcam"], atol=1e-5)  # Lite0's head: GAP + linear
    assert not torch.allclose(maps["smooth-gradcam"], plain["gradcam"], atol=1e-2)
    with pytest.raises(ValueError, match="CAM needs global average pooling"):
        compute_cams(lite0, x[:1], methods=("cam",), layer="stages.5")
    shallow = compute_cams(lite0, x[:1], methods=ReciproCAM(batch_size=98), layer="stages.5")
    # the masked copies' batching is an implementation detail: 7-copy batches give the same map
    again = compute_cams(lite0, x[:1], methods=ReciproCAM(batch_size=7), layer="stages.5")
    assert torch.allclose(shallow["reciprocam"], again["reciprocam"], atol=1e-5)
    assert shallow["reciprocam"].amax() > 0.99 and shallow["reciprocam"].min() >= 0


def test_forward_only_methods_batch_equals_single_on_real_model(lite0, photo_batch) -> None:
    x = photo_batch[:2]
    batch = compute_cams(lite0, x, methods=(ScoreCAM(top_k=3, batch_size=5), ReciproCAM(batch_size=5)),
                         target=[967, 281])
    for i, c in enumerate([967, 281]):
        single = compute_cams(lite0, x[i:i + 1], methods=(ScoreCAM(top_k=3), "reciprocam"), target=c)
        for name in ("scorecam", "reciprocam"):
            assert torch.allclose(batch[name][i], single[name][0], atol=1e-4), name
