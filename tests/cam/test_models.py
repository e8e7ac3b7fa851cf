"""Model loading: the wrapped Lite0 is the original network, ResNet-50 never downloads."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers.cam.checks import check_class_idx
from helpers.cam.engine import compute_cams, gradcam, layercam
from helpers.cam.hooks import LayerCapture
from helpers.cam.inference import predict_topk
from helpers.cam.lite import build_lite_original
from helpers.cam.maps import normalise_max, upsample
from helpers.cam.models import as_bundle, load_model
from helpers.cam.weights import RESNET50_FILES, find_resnet50_weights
from helpers.evaluation import metrics as M
from helpers.evaluation.road import road_scores


def test_wrapped_lite0_gives_the_original_logits(lite0, photo_batch) -> None:
    original = build_lite_original()
    torch.manual_seed(0)
    x = torch.cat([photo_batch, torch.randn(2, 3, 224, 224)])
    with torch.inference_mode():
        assert torch.allclose(lite0.model(x), original(x), atol=1e-5)


def test_lite0_predicts_plausible_classes(lite0, photo_batch) -> None:
    top = predict_topk(lite0, photo_batch, k=5)
    assert top[0][0][:2] == (967, "espresso") and top[0][0][2] > 0.9
    assert {281, 282, 285} & {i for i, _, _ in top[1]}  # tabby / tiger cat / Egyptian cat
    assert {657, 812} & {i for i, _, _ in top[2]}  # missile / space shuttle
    assert all(sum(p for *_, p in t) <= 1 + 1e-6 and t[0][2] >= t[1][2] >= t[4][2] for t in top)


def test_lite0_layers_are_modules_with_the_expected_maps(lite0, photo_batch) -> None:
    assert lite0.target_layer == "head" and lite0.layers[0] == "stem" and lite0.layers[-1] == "head"
    with torch.enable_grad(), LayerCapture(lite0.model, lite0.layers) as cap:
        lite0.model(photo_batch[:1])
    shapes = {n: tuple(a.shape[1:]) for n, a in cap.activations.items()}
    assert shapes["head"] == (1280, 7, 7) and shapes["stem"] == (32, 112, 112)
    assert shapes["stages.0"] == (16, 112, 112) and shapes["stages.6"] == (320, 7, 7)
    assert (cap.activations["head"] >= 0).all() and (cap.activations["head"] <= 6).all()  # post-ReLU6
    with torch.inference_mode():  # the head map is exactly what feeds the pooling
        pooled = cap.activations["head"].mean(dim=(2, 3))
        assert torch.allclose(lite0.model.classifier(pooled), lite0.model(photo_batch[:1]), atol=1e-4)


def test_preprocess_uses_the_weights_normalisation(lite0) -> None:
    grey = Image.fromarray(np.full((300, 400, 3), 255, np.uint8))
    x = lite0.preprocess(grey)
    assert x.shape == (3, 224, 224) and torch.allclose(x, torch.ones_like(x))  # white -> +1 for [-1, 1] inputs
    assert lite0.mean == (0.5, 0.5, 0.5) and lite0.pretrained
    assert len(lite0.class_names) == 1000 and lite0.class_names[967] == "espresso"


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'no_such_net'.*efficientnet_lite0.*resnet50.*torchvision"):
        load_model("no_such_net")


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    return tmp_path


def test_resnet50_without_weights_says_where_to_put_them(empty_hub) -> None:
    # torchvision's default ResNet-50 weights are V2 (resnet50-11ad3fa6.pth); download=False never fetches them
    with pytest.raises(FileNotFoundError, match=f"resnet50: weights {RESNET50_FILES[1]} are not in .*checkpoints"):
        load_model("resnet50", download=False)
    with pytest.raises(FileNotFoundError, match="missing.pth: weight file for resnet50 not found"):
        load_model("resnet50", weights=empty_hub / "missing.pth")


def test_auto_picks_lite0_when_resnet_weights_are_absent(empty_hub, capsys) -> None:
    bundle = load_model("auto", device="cpu")
    assert bundle.name == "efficientnet_lite0" and "using efficientnet_lite0" in capsys.readouterr().err


def test_auto_picks_resnet50_when_its_weights_are_local(empty_hub) -> None:
    (empty_hub / "checkpoints").mkdir()
    state = load_model("resnet50", random_init=True, device="cpu").model.state_dict()
    torch.save(state, empty_hub / "checkpoints" / RESNET50_FILES[0])
    assert find_resnet50_weights() == empty_hub / "checkpoints" / RESNET50_FILES[0]
    bundle = load_model("auto", device="cpu")
    assert bundle.name == "resnet50" and bundle.pretrained and RESNET50_FILES[0] in bundle.weights_source
    assert torch.equal(bundle.model.fc.weight, state["fc.weight"])


def test_resnet50_layer_logic_with_random_weights(photo_batch) -> None:
    bundle = load_model("resnet50", random_init=True, device="cpu")
    assert not bundle.pretrained and bundle.target_layer == "layer4" and bundle.layers[-1] == "layer4"
    with torch.enable_grad(), LayerCapture(bundle.model, ["layer4", "layer4.2.bn3"]) as cap:
        bundle.model(photo_batch[:1])
    assert cap.activations["layer4"].shape == (1, 2048, 7, 7)
    for layer in ("layer4", ["layer3", "layer4"]):
        maps = compute_cams(bundle, photo_batch[:2], target=[1, 2], layer=layer)
        assert all(m.shape == (2, 224, 224) and not m.isnan().any() for m in maps.values())
    # bn3's output is changed in place right after it (``out += identity``, then an in-place ReLU): the maps
    # must be those of bn3's own output, captured here by a reference hook that hands on a copy instead
    got = compute_cams(bundle, photo_batch[:2], ("gradcam", "layercam"), target=[1, 2], layer="layer4.2.bn3")
    kept = {}

    def keep(module, inputs, out):
        kept["a"] = out
        return out.clone()
    handle = bundle.model.get_submodule("layer4.2.bn3").register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = bundle.model(photo_batch[:2].clone().requires_grad_(True))
            grads = torch.autograd.grad(logits[[0, 1], [1, 2]].sum(), kept["a"])[0]
    finally:
        handle.remove()
    acts = kept["a"].detach()
    assert not torch.equal(acts.clamp_min(0), acts)  # bn3's output has negatives, which the in-place ReLU would zero
    for name, raw in (("gradcam", gradcam(acts, grads)), ("layercam", layercam(acts, grads))):
        want = normalise_max(upsample(raw, (224, 224)))
        assert (got[name] - want).abs().max() < 1e-4, name
    with pytest.raises(ValueError, match="unknown layer 'layer5'.*layer4"):
        compute_cams(bundle, photo_batch[:1], layer="layer5")


def test_check_class_idx_broadcasts_an_int() -> None:
    assert torch.equal(check_class_idx(3, 2, 10), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="out of range"):
        check_class_idx([1, 10], 2, 10)


class GreyNet(nn.Module):
    """A plain one-channel classifier as in Captum's and pytorch-grad-cam's tests: conv, ReLU, conv, GAP, fc."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.conv1, self.relu = nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.relu(self.conv1(x))).mean(dim=(2, 3)))


def test_a_one_channel_module_is_supported_end_to_end(capsys) -> None:
    torch.manual_seed(0)
    model = GreyNet().eval()
    x = torch.rand(2, 1, 16, 16)
    maps = compute_cams(model, x)                                  # traced with a one-channel input
    assert maps["hybrid"].shape == (2, 16, 16) and "CAM layer 'conv2'" in capsys.readouterr().err
    bundle = as_bundle(model, input_size=16)
    assert bundle.mean == (pytest.approx(0.449),) and len(bundle.std) == 1
    photo = bundle.preprocess(Image.new("RGB", (20, 24), (200, 30, 90)))
    assert photo.shape == (1, 16, 16)                              # the photo turned grey
    classes = maps.class_idx
    aucs = M.insertion_deletion_auc(bundle, x, maps["gradcam"], classes, steps=4)
    change = M.confidence_change(bundle, x, maps["gradcam"], classes, space="pixel")
    normalised = (x - bundle.mean[0]) / bundle.std[0]              # x as pixels: ROAD reads them back
    road = road_scores(bundle, normalised, maps["gradcam"], classes, percentages=(0.5,))
    for value in (*aucs.values(), *change.values(), *road.values()):
        assert value.shape == (2,) and bool(torch.isfinite(value).all())


def test_normalisation_and_preprocessing_must_fit_the_channels() -> None:
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="GreyNet takes 1 input channel\\(s\\): mean and std need one value per "
                                         "channel; got 3 and 3"):
        as_bundle(GreyNet().eval(), input_size=16, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    four = GreyNet(channels=4).eval()
    assert compute_cams(four, torch.rand(1, 4, 16, 16))["gradcam"].shape == (1, 16, 16)
    bundle = as_bundle(four, input_size=16)
    assert len(bundle.mean) == 4
    with pytest.raises(ValueError, match="takes 4 input channels and a photo gives 1 \\(grey\\) or 3 \\(RGB\\)"):
        bundle.preprocess(Image.new("RGB", (20, 20)))
