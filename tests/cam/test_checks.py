"""Bad images and maps are rejected at every public entry point, with a clear message, before any forward."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from toy import GapLinear, toy_bundle

from helpers.cam.checks import check_images, expected_channels
from helpers.cam.engine import compute_cams, forward_backward
from helpers.evaluation import metrics as M


@pytest.fixture
def counted():
    """A toy bundle (3 input channels, downsampling factor 4) and the list its forwards append to
    (on the PyTorch backend, so that every forward, gradient-free ones included, passes the hook)."""
    torch.manual_seed(0)
    bundle = dataclasses.replace(toy_bundle(GapLinear(torch.randn(2, 4), features=nn.Conv2d(3, 4, 1))), stride=4,
                                 backend="torch")
    calls: list[int] = []
    bundle.model.register_forward_hook(lambda *_: calls.append(1))
    return bundle, calls


def good() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def with_value(value: float) -> torch.Tensor:
    x = good()
    x[1, 2, 3, 4] = value
    return x


#: bad batch -> what the message must say
BAD_IMAGES = {
    "NaN": (lambda: with_value(float("nan")), r"must be finite; got 1 NaN and 0 infinite .* index \(1, 2, 3, 4\)"),
    "Inf": (lambda: with_value(float("-inf")), "must be finite; got 0 NaN and 1 infinite"),
    "single image": (lambda: good()[0], r"got a single image of shape \(3, 8, 8\): add a batch axis: images\[None\]"),
    "five dims": (lambda: good()[None], r"must be a batch \(N, 3, H, W\) \(4 dims\); got 5 dims"),
    "channels-last": (lambda: good().permute(0, 2, 3, 1), r"looks channels-last .* images.permute\(0, 3, 1, 2\)"),
    "two channels": (lambda: good()[:, :2], r"must have 3 channels \(N, 3, H, W\) for toy; got 2"),
    "integer pixels": (lambda: (good() * 50).to(torch.uint8), "must be floats, preprocessed .* got dtype torch.uint8"),
    "another device": (lambda: good().to("meta"), "are on meta but the model is on cpu: use images.to"),
    "too small": (lambda: good()[..., :3, :3], "are 3 x 3 pixels: too small for toy, which downsamples by 4"),
    "numpy channels-last": (lambda: good().permute(0, 2, 3, 1).numpy(),
                            r"must be a torch.Tensor \(N, 3, H, W\); got ndarray of shape \(2, 8, 8, 3\)"),
    "empty batch": (lambda: good()[:0], "is an empty batch"),
}


def maps_for(images) -> torch.Tensor:
    return torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(2))


#: every public entry point that runs the model: (bundle, images, maps) -> call
ENTRY_POINTS = {
    "compute_cams": lambda b, x, m: compute_cams(b, x, target=0),
    "forward_backward": lambda b, x, m: forward_backward(b, x, class_idx=0),
    "insertion_deletion_curves": lambda b, x, m: M.insertion_deletion_curves(b, x, m, 0, "deletion", 4),
    "insertion_deletion": lambda b, x, m: M.insertion_deletion(b, x, m, 0, steps=4),
    "insertion_deletion_auc": lambda b, x, m: M.insertion_deletion_auc(b, x, m, 0, steps=4),
    "confidence_change": lambda b, x, m: M.confidence_change(b, x, m, 0),
    "adcc": lambda b, x, m: M.adcc(b, x, m, 0, explain=lambda im, c: compute_cams(b, im, ("gradcam",), c)["gradcam"]),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("bad", list(BAD_IMAGES))
def test_bad_images_are_rejected_before_any_forward(bad, entry, counted) -> None:
    bundle, calls = counted
    make, message = BAD_IMAGES[bad]
    with pytest.raises(ValueError, match=message):
        ENTRY_POINTS[entry](bundle, make(), maps_for(None))
    assert not calls


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_good_images_pass(entry, counted) -> None:
    bundle, calls = counted
    ENTRY_POINTS[entry](bundle, good(), maps_for(None))
    assert calls


BAD_MAPS = {
    "NaN": (lambda: maps_for(None).index_put_((torch.tensor(0),), torch.tensor(float("nan"))), "maps must be finite"),
    "other size": (lambda: torch.rand(2, 8, 9), r"maps must be \(N, H, W\) = \(2, 8, 8\) to match images"),
    "channel axis": (lambda: torch.rand(2, 1, 8, 8), r"got shape \(2, 1, 8, 8\)"),
    "other N": (lambda: torch.rand(3, 8, 8), r"= \(2, 8, 8\)"),
    "numpy": (lambda: np.zeros((2, 8, 8)), "maps must be a torch.Tensor"),
}


@pytest.mark.parametrize("entry", [e for e in ENTRY_POINTS if e not in ("compute_cams", "forward_backward")])
@pytest.mark.parametrize("bad", list(BAD_MAPS))
def test_bad_maps_are_rejected_before_any_forward(bad, entry, counted) -> None:
    bundle, calls = counted
    make, message = BAD_MAPS[bad]
    with pytest.raises(ValueError, match=message):
        ENTRY_POINTS[entry](bundle, good(), make())
    assert not calls


def test_the_real_model_rejects_small_and_channels_last_batches(lite0) -> None:
    assert expected_channels(lite0.model) == 3 and lite0.stride == 32
    calls: list[int] = []
    hook = lite0.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(ValueError, match="16 x 16 pixels: too small for efficientnet_lite0, which downsamples "
                                             "by 32"):
            compute_cams(lite0, torch.zeros(1, 3, 16, 16))
        with pytest.raises(ValueError, match="looks channels-last"):
            compute_cams(lite0, torch.zeros(1, 224, 224, 3))
        check_images(torch.zeros(1, 3, 32, 32), lite0)  # the smallest accepted
    finally:
        hook.remove()
    assert not calls


def test_a_model_without_convolution_is_not_checked_for_channels() -> None:
    bundle = toy_bundle(GapLinear(torch.randn(2, 5)))
    assert expected_channels(bundle.model) is None
    check_images(torch.zeros(1, 5, 4, 4), bundle)
    with pytest.raises(ValueError, match="add a batch axis"):
        check_images(torch.zeros(5, 4, 4), bundle)


def test_finiteness_is_exact_where_a_sum_alone_would_not_be() -> None:
    # the check reads the sum first: finite values whose sum overflows must pass, and +inf with -inf (sum NaN)
    # or a value at the very first or last position must still be counted and located exactly
    bundle = toy_bundle(GapLinear(torch.randn(2, 3)))
    check_images(torch.full((2, 3, 8, 8), 3e38), bundle)
    both = good()
    both[0, 0, 0, 0], both[1, 2, 7, 7] = float("inf"), float("-inf")
    with pytest.raises(ValueError, match=r"0 NaN and 2 infinite values \(the first at index \(0, 0, 0, 0\)\)"):
        check_images(both, bundle)
    last = good()
    last[1, 2, 7, 7] = float("nan")
    with pytest.raises(ValueError, match=r"1 NaN and 0 infinite values \(the first at index \(1, 2, 7, 7\)\)"):
        check_images(last, bundle)
