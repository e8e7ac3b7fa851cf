"""Bad images and maps are rejected at every public entry point, with a clear message, before any forward."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from toy import GapLinear, toy_bundle

from helpers.cam.checks import check_class_idx, check_images, expected_channels
from helpers.cam.engine import compute_cams, forward_backward
from helpers.cam.inference import predict_topk
from helpers.cam.models import as_bundle, ensure_bundle
from helpers.cam.targets import ClassProbability
from helpers.evaluation import metrics as M
from helpers.evaluation import runner
from helpers.evaluation.adaptive import map_features
from helpers.evaluation.alpha_sweep import sweep
from helpers.evaluation.road import road_curves, road_scores
from helpers.teaching.steps import logit_vs_probability, per_layer_cams, probability_gradcam_weights


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


#: every public entry point that runs the model: (bundle, images, maps, class index) -> call
ENTRY_POINTS = {
    "compute_cams": lambda b, x, m, c=0: compute_cams(b, x, target=c),
    "forward_backward": lambda b, x, m, c=0: forward_backward(b, x, class_idx=c),
    "insertion_deletion_curves": lambda b, x, m, c=0: M.insertion_deletion_curves(b, x, m, c, "deletion", 4),
    "insertion_deletion": lambda b, x, m, c=0: M.insertion_deletion(b, x, m, c, steps=4),
    "insertion_deletion_auc": lambda b, x, m, c=0: M.insertion_deletion_auc(b, x, m, c, steps=4),
    "confidence_change": lambda b, x, m, c=0: M.confidence_change(b, x, m, c),
    "adcc": lambda b, x, m, c=0: M.adcc(b, x, m, c,
                                         explain=lambda im, k: compute_cams(b, im, ("gradcam",), k)["gradcam"]),
}
#: the other entry points that take class indices (their images in [0, 1]: ROAD imputes pixels)
CLASS_ENTRY_POINTS = ENTRY_POINTS | {
    "ClassProbability": lambda b, x, m, c: compute_cams(b, x, target=ClassProbability(c)),
    "road_curves": lambda b, x, m, c: road_curves(b, x, m, c, percentages=(0.5,)),
    "road_scores": lambda b, x, m, c: road_scores(b, x, m, c, percentages=(0.5,)),
    "sweep": lambda b, x, m, c: sweep(b, x, c, lambda *a, **k: M.insertion_deletion_auc(*a, steps=2, **k),
                                      plan=[("geometric", 0.5)], progress=False),
    "map_features": lambda b, x, m, c: map_features(b, x, c),
    "per_layer_cams": lambda b, x, m, c: per_layer_cams(b, x, ["features"], class_idx=c),
    "logit_vs_probability": lambda b, x, m, c: logit_vs_probability(b, x, c),
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


# ---------------------------------------------------------------- class indices: one rule at every door

#: class indices of a 2-image batch that every entry point refuses -> what the message says
BAD_CLASSES = {
    "fraction": (0.7, "must be an integer .* got 0.7"),
    "fractions in a list": ([1.9, 0], r"got \[1.9, 0\]"),
    "a bool in a list": ([False, 0], r"got \[False, 0\]"),
    "a bool": (True, "got True"),
    "a float tensor": (torch.tensor([1.0, 0.0]), "dtype torch.float32"),
    "a float array": (np.array([1.0, 0.0]), "dtype float64"),
    "a string": ("1", "got '1'"),
    "2-D": (torch.tensor([[1], [0]]), r"shape \(2, 1\)"),
    "one entry for two images": ([1], "1 entry for a batch of 2 images: give one per image, or the int 1 itself"),
    "three for two": ([1, 0, 1], "3 entries for a batch of 2 images"),
    "out of range": ([0, 2], "class index 2 out of range: the model has 2 classes"),
    "negative": (-1, "class index -1 out of range"),
}


@pytest.mark.parametrize("entry", list(CLASS_ENTRY_POINTS))
@pytest.mark.parametrize("bad", list(BAD_CLASSES))
def test_bad_class_indices_are_refused_alike_before_any_forward(bad, entry, counted) -> None:
    bundle, calls = counted
    value, message = BAD_CLASSES[bad]
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=message):
        CLASS_ENTRY_POINTS[entry](bundle, x, maps_for(None), value)
    assert not calls


@pytest.mark.parametrize("entry", ["compute_cams", "insertion_deletion_auc", "confidence_change", "road_scores"])
def test_every_spelling_of_integers_gives_the_same_numbers(entry, counted) -> None:
    bundle, _ = counted
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    call = CLASS_ENTRY_POINTS[entry]
    for same in ((1, np.int64(1), torch.tensor(1), [1, 1]), ([1, 0], (1, 0), np.array([1, 0]), torch.tensor([1, 0]))):
        results = [call(bundle, x, maps_for(None), c) for c in same]
        for got in results[1:]:
            assert all(torch.equal(got[k], results[0][k]) for k in results[0])


def test_the_one_check_without_a_batch_checks_the_form_only() -> None:
    assert check_class_idx(3).tolist() == [3] and check_class_idx(range(3), 3, 3).tolist() == [0, 1, 2]
    assert check_class_idx(np.uint8(4), 2, 5).tolist() == [4, 4]
    for bad in (2.0, [np.float32(1)], None, [None], [[1, 2]]):
        with pytest.raises(ValueError, match="must be an integer"):
            check_class_idx(bad)
    with pytest.raises(ValueError, match="class_idx must be an integer"):
        probability_gradcam_weights(torch.randn(3, 4), torch.rand(2, 3).softmax(1), [0.7, 1], 4)


# ---------------------------------------------------------------- a model in train mode is never changed

def train_mode_bundle():
    """A toy with BatchNorm (running statistics away from 0 / 1) and dropout, put in train mode."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5))
    bundle = dataclasses.replace(toy_bundle(GapLinear(torch.randn(2, 4), features=features)), stride=4,
                                 backend="torch")
    with torch.no_grad():
        features[1].running_mean.uniform_(-1, 1)
        features[1].running_var.uniform_(0.5, 2)
    bundle.model.train()
    features[2].eval()  # a module in its own mode gets it back
    return bundle


#: every entry point that runs a model, and those that build a bundle from one (traced forwards)
MODEL_RUNNERS = CLASS_ENTRY_POINTS | {
    "class_probabilities": lambda b, x, m, c: M.class_probabilities(b, lambda i, j: x[i:j], 2, torch.tensor([c, c])),
    "predict_topk": lambda b, x, m, c: predict_topk(b, x, k=1),
    "evaluate": lambda b, x, m, c: runner.evaluate(
        b, [runner_sample(x[0])], ["gradcam", "random"], runner.EvalConfig(rise_steps=2, thesis_steps=2,
                                                                           timing_repeats=1, timing_warmup=0),
        cache_dir=None, progress=False),
    "as_bundle": lambda b, x, m, c: as_bundle(b.model, input_size=8),
    "compute_cams on the module": lambda b, x, m, c: compute_cams(b.model, x, target=c),
    "ensure_bundle": lambda b, x, m, c: ensure_bundle(b.model, (9, 9)),
}


def runner_sample(tensor: torch.Tensor):
    from types import SimpleNamespace
    return SimpleNamespace(file="a.png", tensor=tensor, label_idx=0, label_name="0", boxes_crop=[], kind="photo",
                           split="test", source="a.png", crop_scale=1.0)


@pytest.mark.parametrize("entry", list(MODEL_RUNNERS))
def test_no_entry_point_changes_a_model_in_train_mode(entry) -> None:
    bundle = train_mode_bundle()
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    modes = {name: m.training for name, m in bundle.model.named_modules()}
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning, match="in train mode: it runs in eval mode"):
        MODEL_RUNNERS[entry](bundle, x, maps_for(None), 1)
    after = bundle.model.state_dict()
    assert "features.1.num_batches_tracked" in before and after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(after[k], before[k])]
    assert not changed, f"{entry} changed {changed}"
    assert {name: m.training for name, m in bundle.model.named_modules()} == modes
