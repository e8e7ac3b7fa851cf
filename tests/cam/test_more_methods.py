"""Eigen-CAM, KPCA-CAM, Ablation-CAM, Shapley-CAM, Finer-CAM and FullGrad: hand-worked cases, invariants, and
agreement with pytorch-grad-cam 1.5.7 on packaged photos at Lite0's head (and ``stages.4`` for the gradient methods)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers.cam.ablation import ablated_drops, ablationcam, closed_form_drops
from helpers.cam.bundle import ModelBundle
from helpers.cam.engine import compute_cams
from helpers.cam.fullgrad import fullgrad
from helpers.cam.options import FinerCAM
from helpers.cam.projection_methods import eigencam, kpcacam, orient
from helpers.cam.split import split_at
from helpers.cam.tail_gradient_methods import finercam, hessian_terms, shapleycam
from helpers.cam.targets import ClassProbability
from helpers.data.images import load_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toy import SplitToy, toy_bundle  # noqa: E402

pgc = pytest.importorskip("pytorch_grad_cam")
NEW = ("eigencam", "kpcacam", "ablationcam", "shapleycam", "finercam", "fullgrad")
PHOTOS = sorted((Path(__file__).resolve().parents[2] / "input_images").glob("photo_*.png"))[:2]
MIN_R = 0.99


def pearson(a: np.ndarray, b: np.ndarray) -> list[float]:
    return [float(np.corrcoef(x.ravel(), y.ravel())[0, 1]) for x, y in zip(a, b, strict=True)]


@pytest.fixture(scope="module")
def batch(lite0: ModelBundle) -> torch.Tensor:
    return torch.stack([lite0.preprocess(load_image(p)) for p in PHOTOS])


@pytest.fixture(scope="module")
def ours(lite0: ModelBundle, batch: torch.Tensor) -> dict[str, dict[str, np.ndarray]]:
    head = compute_cams(lite0, batch, NEW, layer="head")
    mid = compute_cams(lite0, batch[:1], ("shapleycam", "finercam"), layer="stages.4")  # double backward: slow on CPU
    return {"head": {k: v.numpy() for k, v in head.items()}, "stages.4": {k: v.numpy() for k, v in mid.items()}}


REFERENCE = {"eigencam": "EigenCAM", "kpcacam": "KPCA_CAM", "shapleycam": "ShapleyCAM", "finercam": "FinerCAM",
             "fullgrad": "FullGrad"}


@pytest.mark.parametrize(("layer", "name"), [("head", m) for m in REFERENCE] +
                         [("stages.4", "shapleycam"), ("stages.4", "finercam")])
def test_agrees_with_pytorch_grad_cam(lite0, batch, ours, layer, name) -> None:
    with getattr(pgc, REFERENCE[name])(lite0.model, [lite0.model.get_submodule(layer)]) as cam:
        x = batch[:len(ours[layer][name])]
        ref = cam(x, None) if name != "finercam" else cam(x)
    assert min(pearson(ours[layer][name], ref)) >= MIN_R


def test_ablation_agrees_with_pytorch_grad_cam_on_the_split(lite0, batch, ours) -> None:
    """pytorch-grad-cam's AblationCAM (1280 ablated forwards) run on the same network cut at the head, fed the
    head's map: its 7 x 7 maps against ours at 7 x 7."""
    split = split_at(lite0, "head")
    with torch.no_grad():
        acts = split.features(batch[:1])
        classes = split.tail(acts).argmax(1)
    net = nn.Sequential(nn.Identity(), split.tail).eval()
    with pgc.AblationCAM(net, [net[0]], batch_size=256) as cam:
        ref = cam(acts, None)
    mine = ablationcam(acts, classes, split.tail).numpy()                 # the closed form
    assert min(pearson(mine, ref)) >= MIN_R
    assert np.allclose(ours["head"]["ablationcam"].max(axis=(1, 2)), 1.0)


def test_closed_form_ablation_equals_batched_ablations_at_the_head(lite0, batch) -> None:
    split = split_at(lite0, "head")
    with torch.no_grad():
        acts = split.features(batch[:1])
    classes = torch.tensor([3])
    closed = closed_form_drops(acts, classes, split.tail)
    batched = ablated_drops(acts, classes, split.tail, batch_size=128)
    assert torch.allclose(closed, batched, rtol=1e-3, atol=1e-5)


def test_eigencam_of_a_rank_one_map_is_its_spatial_factor() -> None:
    """A = v (x) m with v, m >= 0: the uncentred SVD's V_1 is v / |v| and the map is |v| m."""
    m, v = torch.rand(5, 6), torch.rand(4)
    acts = (v[:, None, None] * m)[None]
    assert torch.allclose(eigencam(acts, center=False)[0], v.norm() * m, atol=1e-5)


def test_the_sign_rule_points_to_the_active_half() -> None:
    acts = torch.zeros(1, 2, 2, 2)
    acts[0, :, 0, 0] = 3.0
    flipped = orient(torch.tensor([[-1.0, 1.0, 1.0, 1.0]]), acts)
    assert flipped.tolist() == [[1.0, -1.0, -1.0, -1.0]]
    assert eigencam(acts)[0, 0, 0] > 0 and kpcacam(acts)[0, 0, 0] > 0


def test_shapley_second_order_term_by_hand() -> None:
    """S = sum_k u_k mean(A_k^2): g = 2 u A / hw, H A = 2 u A / hw, so g - H A / 2 = u A / hw."""
    class Square(nn.Module):
        def __init__(self, u: torch.Tensor) -> None:
            super().__init__()
            self.u = nn.Parameter(u)

        def forward(self, a: torch.Tensor) -> torch.Tensor:
            return (a.pow(2).mean(dim=(2, 3)) * self.u)

    acts, u = torch.rand(2, 3, 4, 4), torch.tensor([1.0, -2.0, 0.5])
    tail = Square(u)
    g, hvp = hessian_terms(acts, tail, lambda y: y.sum(1))
    assert torch.allclose(g, 2 * u[None, :, None, None] * acts / 16) and torch.allclose(hvp, g)
    weights = u[None] * acts.mean(dim=(2, 3)) / 16             # mean_ij of u A / hw, with hw = 16
    want = torch.relu(torch.einsum("nk,nkij->nij", weights, acts))
    assert torch.allclose(shapleycam(acts, tail, lambda y: y.sum(1)), want)
    assert tail.u.grad is None and tail.u.requires_grad


def _toy() -> tuple[ModelBundle, torch.Tensor]:
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
    bundle = toy_bundle(SplitToy(torch.randn(5, 6), features))
    bundle.model.features[1].running_mean.uniform_(-0.5, 0.5)
    return bundle, torch.randn(3, 3, 8, 8)


def test_shapley_equals_gradcam_at_a_linear_head_and_differs_for_a_probability() -> None:
    bundle, x = _toy()
    logit = compute_cams(bundle, x, ("shapleycam", "gradcam"))
    assert torch.allclose(logit["shapleycam"], logit["gradcam"], atol=1e-6)
    prob = compute_cams(bundle, x, ("shapleycam", "gradcam"), target=ClassProbability())
    assert not torch.allclose(prob["shapleycam"], prob["gradcam"], atol=1e-3)


def test_finer_with_alpha_zero_is_gradcam_and_batch_equals_single() -> None:
    bundle, x = _toy()
    maps = compute_cams(bundle, x, (FinerCAM(alpha=0.0), "gradcam"))
    assert torch.allclose(maps["finercam"], maps["gradcam"], atol=1e-6)
    whole = compute_cams(bundle, x, NEW)
    for i in range(len(x)):
        one = compute_cams(bundle, x[i:i + 1], NEW)
        for m in NEW:
            assert torch.allclose(whole[m][i], one[m][0], atol=1e-5), m


def test_all_zero_activations_give_zero_maps() -> None:
    bundle, _ = _toy()
    tail = split_at(bundle).tail
    acts, classes = torch.zeros(2, 6, 4, 4), torch.tensor([0, 1])
    score = lambda y: y.gather(1, classes[:, None])[:, 0]  # noqa: E731
    for m in (eigencam(acts), kpcacam(acts), ablationcam(acts, classes, tail), shapleycam(acts, tail, score),
              finercam(acts, classes, tail)):
        assert torch.equal(m, torch.zeros(2, 4, 4))
    zero = toy_bundle(SplitToy(torch.zeros(5, 6), nn.Conv2d(3, 6, 3, padding=1)))
    nn.init.zeros_(zero.model.features.weight)
    nn.init.zeros_(zero.model.features.bias)
    m = fullgrad(torch.zeros(2, 3, 8, 8), zero.model, score)
    assert torch.isfinite(m).all() and torch.equal(m, torch.zeros_like(m))


def test_the_model_is_left_as_it_was_also_after_an_exception() -> None:
    bundle, x = _toy()
    model = bundle.model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="train mode"):
        compute_cams(bundle, x, NEW)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())
    hooks = [len(m._forward_hooks) for m in model.modules()]

    def broken(logits: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        fullgrad(x, model.eval(), broken)
    with pytest.raises(RuntimeError, match="boom"):
        shapleycam(torch.rand(1, 6, 8, 8), split_at(bundle).tail, broken)
    assert [len(m._forward_hooks) for m in model.modules()] == hooks
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
