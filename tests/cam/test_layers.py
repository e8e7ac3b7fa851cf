"""Layer outputs as maps (tokens, channels-last) and the automatic CAM layer, on hand-made tensors and toy nets."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from toy import GapLinear, toy_bundle

from helpers.cam.engine import capture, compute_cams
from helpers.cam.layers import as_map, auto_layer, block_pattern, token_grid, trace_layers
from helpers.cam.models import as_bundle


def test_tokens_drop_the_class_token_and_fill_the_grid_row_by_row() -> None:
    # 1 class token + a 2x3 grid of 2-channel tokens; token t (1..6) has channels (t, -t)
    t = torch.arange(7.0)
    tokens = torch.stack([t, -t], dim=1)[None]  # (1, 7, 2)
    m = as_map(tokens, (32, 48), patch=16)
    assert m.shape == (1, 2, 2, 3)
    assert torch.equal(m[0, 0], torch.tensor([[1.0, 2, 3], [4, 5, 6]])) and torch.equal(m[0, 1], -m[0, 0])
    assert torch.equal(as_map(tokens, (32, 48)), m)  # same grid inferred from the count and the aspect ratio


def test_token_grid_prefixes_and_errors() -> None:
    assert token_grid(197, (224, 224), 16) == (1, 14, 14)  # ViT-B/16: class token
    assert token_grid(198, (224, 224)) == (2, 14, 14)  # DeiT: class + distillation tokens
    assert token_grid(196, (224, 224)) == (0, 14, 14)  # no prefix (global-pool ViTs)
    with pytest.raises(ValueError, match="cannot lay 197 tokens out .* patch size 32"):
        token_grid(197, (224, 224), 32)


def test_channels_last_maps_are_permuted_and_channels_first_kept() -> None:
    x = torch.randn(2, 7, 7, 768)
    assert torch.equal(as_map(x, (224, 224)), x.permute(0, 3, 1, 2))
    y = torch.randn(2, 64, 112, 112)
    assert as_map(y, (224, 224)) is y
    z = torch.randn(1, 6, 8, 16)  # (N, H, W, C) of a 3:4 input
    assert as_map(z, (300, 400)).shape == (1, 16, 6, 8)
    with pytest.raises(ValueError, match=r"shape \(2, 5\) is not a spatial map"):
        as_map(torch.randn(2, 5), (224, 224))


def test_block_pattern_matches_the_same_module_in_other_blocks() -> None:
    import re
    pat = re.compile(block_pattern("encoder.layers.encoder_layer_11.ln_1"))
    assert pat.match("encoder.layers.encoder_layer_3.ln_1") and not pat.match("encoder.layers.encoder_layer_3.ln_2")
    assert re.match(block_pattern("blocks.11.norm1"), "blocks.0.norm1")


class TinyViT(nn.Module):
    """Patch embedding -> one token mixer -> class token read-out: the patch tokens of `mixer` reach the
    class token, those of `after` never do (per-token layer, then the class token is read)."""

    patch_size = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.mixer = nn.Linear(8, 8)
        self.after = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), self.embed(x).flatten(2).transpose(1, 2)], dim=1)
        tokens = self.mixer(tokens)
        tokens = tokens + tokens.mean(dim=1, keepdim=True)  # mixing: every token reaches the class token
        return self.head(self.after(tokens)[:, 0])


def test_auto_layer_skips_token_layers_the_class_score_never_sees(capsys) -> None:
    model = TinyViT().eval()
    infos = {i.name: i for i in trace_layers(model, torch.randn(1, 3, 16, 16), patch=4)}
    assert infos["after"].map_shape == (8, 4, 4) and not infos["after"].used
    assert infos["mixer"].used and infos["embed"].used
    bundle = as_bundle(model, input_size=16)
    assert bundle.target_layer == "mixer" and bundle.patch_size == 4 and bundle.class_names == list("01234")
    assert "CAM layer 'mixer'" in capsys.readouterr().err
    assert not any(m._forward_hooks for m in model.modules())


def test_token_gradients_are_the_map_gradients_by_hand() -> None:
    """y = sum of the class weights over the mean of the tokens: dy/dA^k_ij = w_k / (T) at every patch."""
    model = TinyViT().eval()
    x = torch.randn(2, 3, 16, 16)
    cap = capture(as_bundle(model, input_size=16, layer="mixer"), x, target=[1, 2], layers="mixer")
    assert cap.activations["mixer"].shape == (2, 8, 4, 4) and cap.gradients["mixer"].shape == (2, 8, 4, 4)
    # numeric check of one entry: perturb patch token (row 1, col 2) channel 3 of image 0 at the layer
    eps, token = 1e-3, 1 + 1 * 4 + 2

    def score(delta: float) -> float:
        def bump(module, inputs, out):
            out = out.clone()
            out[0, token, 3] += delta
            return out
        handle = model.mixer.register_forward_hook(bump)
        try:
            with torch.no_grad():
                return float(model(x)[0, 1])
        finally:
            handle.remove()
    numeric = (score(eps) - score(-eps)) / (2 * eps)
    assert abs(numeric - float(cap.gradients["mixer"][0, 3, 1, 2])) < 1e-3


def test_plain_module_equals_its_bundle_and_reshape_overrides() -> None:
    torch.manual_seed(0)
    net = GapLinear(torch.randn(4, 6), features=nn.Conv2d(3, 6, 3, padding=1)).eval()
    x = torch.randn(2, 3, 16, 16)
    direct = compute_cams(net, x, methods=("gradcam", "layercam"))
    ref = compute_cams(toy_bundle(net), x, methods=("gradcam", "layercam"))
    assert all(torch.allclose(direct[m], ref[m]) for m in ref)
    seen = []

    def reshape(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return t.flip(-1)  # a deliberately different layout: the maps come out mirrored
    flipped = compute_cams(net, x, methods=("gradcam",), layer="features", reshape=reshape)
    assert seen and torch.allclose(flipped["gradcam"], ref["gradcam"].flip(-1), atol=1e-6)


def test_no_spatial_layer_is_a_clear_error() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    infos = trace_layers(model, torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="no layer outputs a spatial map"):
        auto_layer(infos)
