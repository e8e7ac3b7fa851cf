"""Models by name: torchvision/timm with random weights (never downloaded), Lite1/Lite2 with their real weights."""
from __future__ import annotations

import pytest
import torch
import torchvision
from PIL import Image
from skimage import data

from helpers.cam.engine import compute_cams, gradient_methods
from helpers.cam.inference import predict_topk
from helpers.cam.lite import build_lite_original
from helpers.cam.models import as_bundle, load_model
from helpers.cam.zoo import random_model

#: (torchvision name, input size, the layer the automatic choice must pick). Small inputs keep the tests fast.
CASES = [("resnet18", 64, "layer4"), ("mobilenet_v3_small", 64, "features"), ("densenet121", 64, "features"),
         ("convnext_tiny", 64, "features"), ("swin_t", 64, "permute")]


def no_hooks(model: torch.nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def small(request):
    name, size, layer = request.param
    model = random_model(lambda: torchvision.models.get_model(name)).eval()
    return as_bundle(model, input_size=size, name=name, pretrained=False), size, layer


def test_auto_layer_and_every_gradient_method(small) -> None:
    bundle, size, expected = small
    assert bundle.target_layer == expected and bundle.layers[-1] == expected and len(bundle.layers) >= 3
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    methods = gradient_methods()
    batch = compute_cams(bundle, x, methods=methods, target=[3, 7])
    single = compute_cams(bundle, x[1:], methods=methods, target=7)
    for m in methods:
        assert batch[m].shape == (2, size, size) and torch.isfinite(batch[m]).all(), m
        assert batch[m].min() >= 0 and batch[m].max() <= 1, m
        assert torch.allclose(batch[m][1], single[m][0], atol=1e-4), m
    assert no_hooks(bundle.model) and all(p.grad is None for p in bundle.model.parameters())
    multi = compute_cams(bundle, x, methods=("layercam",), layer=list(bundle.multi_layers))
    assert multi["layercam"].shape == (2, size, size) and torch.isfinite(multi["layercam"]).all()


@pytest.fixture(scope="module")
def vit():
    return load_model("vit_b_16", random_init=True, download=False, device="cpu")


def test_vit_b_16_last_block_tokens_give_a_14x14_map(vit) -> None:
    from helpers.cam.engine import capture
    assert vit.target_layer == "encoder.layers.encoder_layer_11.ln_1" and vit.patch_size == 16
    assert vit.layers[-1] == vit.target_layer and all(n.endswith(".ln_1") for n in vit.layers)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    cap = capture(vit, x)
    assert cap.activations[vit.target_layer].shape == (2, 768, 14, 14)
    assert cap.gradients[vit.target_layer].abs().sum() > 0
    maps = compute_cams(vit, x, methods=("gradcam", "layercam", "hybrid"), target=[1, 2])
    single = compute_cams(vit, x[:1], methods=("gradcam", "layercam", "hybrid"), target=1)
    for m, v in maps.items():
        assert v.shape == (2, 224, 224) and torch.isfinite(v).all() and 0 <= v.min() and v.max() <= 1
        assert torch.allclose(v[0], single[m][0], atol=1e-4)
    assert no_hooks(vit.model)
    with pytest.raises(ValueError, match="no model split is known for VisionTransformer"):
        compute_cams(vit, x[:1], methods=("reciprocam",))


def test_torchvision_preprocessing_and_names_come_from_the_weights(vit) -> None:
    weights = torchvision.models.ViT_B_16_Weights.DEFAULT
    assert vit.class_names == weights.meta["categories"] and vit.mean == tuple(weights.transforms().mean)
    x = vit.preprocess(Image.fromarray(data.coffee()))
    assert x.shape == (3, 224, 224) and not vit.pretrained and "random init" in vit.weights_source


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_missing_weights_name_the_model_the_file_and_the_folder(empty_caches) -> None:
    with pytest.raises(FileNotFoundError, match=f"convnext_tiny: weights convnext_tiny-983f1562.pth are not in "
                                                f"{empty_caches}/checkpoints"):
        load_model("convnext_tiny", download=False, device="cpu")
    with pytest.raises(FileNotFoundError, match="timm/resnet18.a1_in1k: weights model.safetensors are not in "
                                                ".*hf/models--timm--resnet18.a1_in1k"):
        load_model("timm/resnet18.a1_in1k", download=False, device="cpu")
    with pytest.raises(ValueError, match="unknown model 'timm/no_such_net'"):
        load_model("timm/no_such_net", device="cpu")


def test_local_weight_files_load(empty_caches) -> None:
    state = random_model(lambda: torchvision.models.get_model("resnet18")).state_dict()
    torch.save(state, empty_caches / "r18.pth")
    bundle = load_model("resnet18", weights=empty_caches / "r18.pth", device="cpu")
    assert bundle.pretrained and torch.equal(bundle.model.fc.weight, state["fc.weight"])
    torch.save({"fc.weight": state["fc.weight"]}, empty_caches / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth: not a state dict of resnet18"):
        load_model("resnet18", weights=empty_caches / "bad.pth", device="cpu")


def test_timm_model_by_name_with_its_data_config() -> None:
    bundle = load_model("timm/resnet18.a1_in1k", random_init=True, device="cpu")
    assert bundle.target_layer == "layer4" and bundle.input_size == 224 and len(bundle.class_names) == 1000
    # timm's config for this tag: bicubic resize to 224 / 0.95 = 235, centre crop 224
    assert "235" in repr(bundle.preprocess) and "bicubic" in repr(bundle.preprocess)
    assert bundle.resize_size == 235  # the same geometry maps the manifest's boxes into the crop
    maps = compute_cams(bundle, torch.randn(1, 3, 64, 64), methods=("gradcam",))
    assert maps["gradcam"].shape == (1, 64, 64) and torch.isfinite(maps["gradcam"]).all()


@pytest.mark.parametrize("name,size,grid", [("efficientnet_lite1", 240, 8), ("efficientnet_lite2", 260, 9)])
def test_lite1_lite2_wrappers_give_the_original_logits(name, size, grid, photos) -> None:
    bundle = load_model(name, device="cpu")
    assert bundle.input_size == size and bundle.target_layer == "head" and len(bundle.layers) == 9
    x = torch.stack([bundle.preprocess(im) for im in photos.values()])
    assert x.shape == (3, 3, size, size)
    with torch.inference_mode():
        assert torch.allclose(bundle.model(x), build_lite_original(name)(x), atol=1e-4)
    top = predict_topk(bundle, x, k=5)
    assert top[0][0][1] == "espresso" and {281, 282, 285} & {i for i, _, _ in top[1]}
    maps = compute_cams(bundle, x[:1], methods=("gradcam",), layer="stages.6")
    assert maps["gradcam"].shape == (1, size, size)
    from helpers.cam.engine import capture
    assert capture(bundle, x[:1]).activations["head"].shape == (1, 1280, grid, grid)
