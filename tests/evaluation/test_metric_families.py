"""The metric registry's families: hand-worked values, agreement with Quantus 0.6.0 on the same inputs, invariants."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import quantus
import torch
from skimage.metrics import structural_similarity
from torch import nn
from toy import GapLinear, toy_bundle

from helpers.cam.backend import infer
from helpers.cam.engine import compute_cams
from helpers.data.images import load_samples
from helpers.evaluation.metrics import METRICS, Metric, metric
from helpers.evaluation.metrics.quantus_export import to_quantus
from helpers.evaluation.metrics.randomisation import off_classes, ssim

TOL = 1e-5
ISSUE_NAMES = {
    "faithfulness": {"faithfulness_correlation", "monotonicity_correlation", "irof"},
    "robustness": {"max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate", "relative_input_stability"},
    "complexity": {"sparseness", "entropy_complexity", "effective_complexity"},
    "randomisation": {"random_logit"},
    "localisation": {"relevance_mass_accuracy", "relevance_rank_accuracy", "top_k_intersection"},
}


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run(name: str, bundle, images, maps, class_idx, **options) -> np.ndarray:
    return METRICS[name](bundle, images, maps, class_idx, **options).numpy()


def quantus_batch(model, x, y, maps, **extra) -> dict:
    """Quantus' keyword arguments for maps (N, H, W) of images x."""
    return dict(model=model, x_batch=x.numpy(), y_batch=np.asarray(y), a_batch=maps[:, None].numpy().astype(np.float32),
                device="cpu", **extra)


def peaked(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Random tie-free maps in [0, 1], each peaking at 1."""
    m = torch.rand(n, h, w, generator=torch.Generator().manual_seed(seed)) ** 3
    return m / m.flatten(1).amax(1)[:, None, None]


@pytest.fixture(scope="module")
def grey_toy():
    """A one-channel toy (conv -> ReLU -> GAP -> linear, 3 classes): there a pixel is one feature, for Quantus too."""
    torch.manual_seed(0)
    return toy_bundle(GapLinear(torch.randn(3, 4), nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())))


@pytest.fixture(scope="module")
def toy_inputs():
    x = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    return x, peaked(3, 12, 12, seed=2), [0, 1, 2]


@pytest.fixture(scope="module")
def photos(lite0):
    """Two packaged photos, their Grad-CAM maps and top-1 classes."""
    samples = [s for s in load_samples(lite0) if s.kind == "composite"][:2]
    x = torch.stack([s.tensor for s in samples])
    cams = compute_cams(lite0, x, "gradcam")
    return x, cams["gradcam"], cams.class_idx.tolist()


def lite0_explain(bundle):
    def explain(model, inputs, targets, **_) -> np.ndarray:
        return compute_cams(bundle, torch.as_tensor(inputs), "gradcam", target=[int(t) for t in targets])["gradcam"]\
            .numpy()
    return explain


# --- the registry -----------------------------------------------------------------------------------------------

def test_every_metric_states_its_facts():
    for family, names in ISSUE_NAMES.items():
        for name in names:
            m = METRICS[name]
            assert isinstance(m, Metric) and m.family == family and m.direction in ("higher", "lower")
            assert m.reference and any(c.isdigit() for c in m.reference)
    assert METRICS["top_k_intersection"].needs == {"masks"}
    assert {"model", "explain"} <= METRICS["max_sensitivity"].needs
    assert METRICS["sparseness"].direction == "higher" and METRICS["entropy_complexity"].direction == "lower"


def test_bad_calls_and_registrations_are_one_line():
    x, m = torch.zeros(1, 3, 4, 4), torch.rand(1, 4, 4)
    with pytest.raises(ValueError, match="sparseness has no option nr_runs"):
        METRICS["sparseness"](None, x, m, 0, nr_runs=3)
    with pytest.raises(ValueError, match="needs masks="):
        METRICS["relevance_mass_accuracy"](None, x, m, 0)
    with pytest.raises(ValueError, match="unknown metric family"):
        metric("x", family="style", direction="higher", reference="r")
    with pytest.raises(ValueError, match="direction must be"):
        metric("x", family="complexity", direction="up", reference="r")
    with pytest.raises(ValueError, match="registered twice"):
        metric("sparseness", family="complexity", direction="higher", reference="r")(lambda *a: None)


# --- complexity -------------------------------------------------------------------------------------------------

def test_complexity_worked_by_hand():
    x = torch.zeros(3, 3, 2, 2)
    maps = torch.tensor([[[0.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]], [[0.0, 1e-6], [0.5, 1.0]]])
    e = 1e-7  # Quantus' offset
    gini_one_hot = (-3 * e - e + e + 3 * (1 + e)) / (4 * (1 + 4 * e))
    assert run("sparseness", None, x, maps, 0)[:2] == pytest.approx([gini_one_hot, 0.0], abs=1e-9)
    assert run("entropy_complexity", None, x, maps, 0)[:2] == pytest.approx([0.0, math.log(4)], abs=1e-9)
    assert run("effective_complexity", None, x, maps, 0).tolist() == [1, 4, 2]
    assert run("effective_complexity", None, x, maps, 0, eps=0.6).tolist() == [1, 4, 1]


def test_an_all_zero_map_has_defined_complexity_where_quantus_has_nan():
    x, zero = torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4)
    assert run("sparseness", None, x, zero, 0) == pytest.approx([0.0], abs=1e-12)
    assert run("entropy_complexity", None, x, zero, 0) == pytest.approx([math.log(16)])
    assert run("effective_complexity", None, x, zero, 0).tolist() == [0.0]
    # Quantus refuses a batch of zero maps; beside another map, the zero one is NaN there
    pair = torch.cat([peaked(1, 4, 4), zero])
    quantus_says = quantus.Complexity(disable_warnings=True)(**quantus_batch(None, x.expand(2, -1, -1, -1), [0, 0],
                                                                             pair))
    assert np.isnan(quantus_says[1]) and not np.isnan(quantus_says[0])


@pytest.mark.parametrize("name, cls", [("sparseness", quantus.Sparseness), ("entropy_complexity", quantus.Complexity),
                                       ("effective_complexity", quantus.EffectiveComplexity)])
def test_complexity_equals_quantus(name, cls, photos):
    x, maps, y = photos
    signed = peaked(4, 16, 16) - 0.5   # abs=True makes |map| count
    for images, m in [(torch.zeros(4, 3, 16, 16), peaked(4, 16, 16)), (torch.zeros(4, 3, 16, 16), signed), (x, maps)]:
        want = np.asarray(cls(disable_warnings=True)(**quantus_batch(None, images, [0] * len(m), m)))
        assert np.abs(run(name, None, images, m, 0) - want).max() < TOL


def test_each_map_is_scaled_alone_where_quantus_scales_by_the_batch():
    x, maps = torch.zeros(2, 3, 8, 8), peaked(2, 8, 8)
    maps[1] *= 0.5
    both = run("effective_complexity", None, x, maps, 0, eps=0.3)
    assert both[1] == run("effective_complexity", None, x[1:], maps[1:], 0, eps=0.3)[0]
    q = quantus.EffectiveComplexity(eps=0.3, disable_warnings=True)
    in_batch = q(**quantus_batch(None, x, [0, 0], maps))[1]
    alone = q(**quantus_batch(None, x[1:], [0], maps[1:]))[0]
    assert in_batch != alone and alone == both[1]


# --- localisation -----------------------------------------------------------------------------------------------

def test_localisation_worked_by_hand():
    x = torch.zeros(2, 3, 2, 2)
    maps = torch.tensor([[[4.0, 3.0], [2.0, 1.0]], [[1.0, 2.0], [3.0, 4.0]]])
    masks = torch.tensor([[[True, True], [False, False]]] * 2)
    assert run("relevance_mass_accuracy", None, x, maps, 0, masks=masks) == pytest.approx([0.7, 0.3])
    assert run("relevance_rank_accuracy", None, x, maps, 0, masks=masks).tolist() == [1.0, 0.0]
    assert run("top_k_intersection", None, x, maps, 0, masks=masks, k=3) == pytest.approx([2 / 3, 1 / 3])
    influence = run("top_k_intersection", None, x, maps, 0, masks=masks, k=3, concept_influence=True)
    assert influence == pytest.approx([4 / 3, 2 / 3])


def test_localisation_conventions_zero_map_and_empty_mask():
    x = torch.zeros(2, 3, 2, 2)
    maps = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)])
    masks = torch.tensor([[[True, False], [False, False]], [[False, False], [False, False]]])
    for name in ISSUE_NAMES["localisation"]:
        out = run(name, None, x, maps, 0, masks=masks, **({"k": 2} if name == "top_k_intersection" else {}))
        assert out[0] == 0.0 and np.isnan(out[1]), name
    with pytest.raises(ValueError, match="masks must be a bool tensor"):
        run("relevance_mass_accuracy", None, x, maps, 0, masks=masks.float())


@pytest.fixture(scope="module")
def composites(lite0):
    samples = [s for s in load_samples(lite0) if s.kind == "composite"][:3]
    return to_quantus(lite0, samples, "gradcam", target="label", batch_size=3)


@pytest.mark.parametrize("name, cls, options", [
    ("relevance_mass_accuracy", quantus.RelevanceMassAccuracy, {}),
    ("relevance_rank_accuracy", quantus.RelevanceRankAccuracy, {}),
    ("top_k_intersection", quantus.TopKIntersection, {}),
    ("top_k_intersection", quantus.TopKIntersection, {"k": 5000, "concept_influence": True})])
def test_localisation_equals_quantus(name, cls, options, composites):
    maps, masks = torch.from_numpy(composites["a_batch"][:, 0]), torch.from_numpy(composites["s_batch"][:, 0] > 0)
    want = cls(disable_warnings=True, **options)(model=None, device="cpu", **composites)
    got = run(name, None, torch.from_numpy(composites["x_batch"]), maps, 0, masks=masks, **options)
    assert np.abs(got - np.asarray(want)).max() < TOL


# --- randomisation ----------------------------------------------------------------------------------------------

def test_off_classes_are_quantus_draws_and_never_the_own_class():
    own = torch.tensor([0, 5, 999, 5])
    off = off_classes(own, 1000, 42)
    assert (off != own).all() and off.min() >= 0 and off.max() < 1000
    np.random.seed(42)
    pick = np.random.randint(0, 999, 4)
    assert off.tolist() == [int(p) + (p >= o) for p, o in zip(pick, own.tolist(), strict=True)]
    assert off_classes(torch.from_numpy(pick), 1000, 42).tolist() == (pick + 1).tolist()   # the own class is skipped
    assert ssim(torch.ones(1, 8, 8), torch.ones(1, 8, 8)).tolist() == [1.0]


def test_random_logit_equals_quantus_with_2d_ssim_where_quantus_flattens(lite0, photos):
    x, maps, y = photos

    def ssim_2d(a, b, batched=True, **_):
        return [float(ssim(torch.from_numpy(p.reshape(1, 224, 224)), torch.from_numpy(q.reshape(1, 224, 224)))[0])
                for p, q in zip(a, b, strict=True)]
    kw = quantus_batch(lite0.model, x, y, maps, explain_func=lite0_explain(lite0))
    paper = np.asarray(quantus.RandomLogit(similarity_func=ssim_2d, disable_warnings=True)(**kw))
    flat = np.asarray(quantus.RandomLogit(disable_warnings=True)(**kw))
    got = run("random_logit", lite0, x, maps, y)
    assert np.abs(got - paper).max() < TOL
    assert np.abs(got - flat).min() > 1e-3   # Quantus' 1-D SSIM is another number
    other = compute_cams(lite0, x[:1], "gradcam", target=[int(off_classes(torch.tensor(y), 1000, 42)[0])])["gradcam"]
    assert got[0] == pytest.approx(structural_similarity(maps[0].double().numpy(), other[0].double().numpy(),
                                                         data_range=1.0), abs=1e-4)


# --- faithfulness -----------------------------------------------------------------------------------------------

def test_faithfulness_correlation_equals_quantus_on_the_same_subsets(grey_toy, toy_inputs, monkeypatch):
    x, maps, y = toy_inputs
    runs, size = 8, 20
    rng = np.random.RandomState(3)
    draws = [[rng.choice(144, size, replace=False) for _ in range(3)] for _ in range(runs)]
    order = iter([d for run_ in draws for d in run_])   # Quantus draws run by run, image by image
    monkeypatch.setattr(np.random, "choice", lambda *a, **k: next(order))
    want = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=size, return_aggregate=False,
                                           disable_warnings=True)(**quantus_batch(grey_toy.model, x, y, maps))
    subsets = torch.from_numpy(np.array(draws)).permute(1, 0, 2)
    got = run("faithfulness_correlation", grey_toy, x, maps, y, nr_runs=runs, subset_size=size, subsets=subsets)
    assert np.abs(got - np.asarray(want)).max() < TOL
    single = run("faithfulness_correlation", grey_toy, x[1:2], maps[1:2], y[1], nr_runs=runs, subset_size=size,
                 subsets=subsets[1:2])
    assert single[0] == pytest.approx(got[1], abs=1e-12)


@pytest.mark.parametrize("baseline", ["black", "mean", 0.3])
def test_monotonicity_correlation_equals_quantus(grey_toy, toy_inputs, baseline):
    x, maps, y = toy_inputs
    options = dict(nr_samples=2, features_in_step=4, perturb_baseline=baseline)
    want = quantus.MonotonicityCorrelation(disable_warnings=True, **options)(
        **quantus_batch(grey_toy.model, x, y, maps))
    assert np.abs(run("monotonicity_correlation", grey_toy, x, maps, y, **options) - np.asarray(want)).max() < TOL


def test_a_map_that_orders_the_effects_has_monotonicity_one(grey_toy, toy_inputs):
    """Each step's variance is known beforehand; a map equal to it correlates perfectly (and its reverse at -1)."""
    x, _, y = toy_inputs
    full = infer(grey_toy, x[:1])[0, 0]
    effects = torch.empty(144)
    for p in range(144):
        xp = x[:1].clone()
        xp.view(-1)[p] = 0.3
        effects[p] = (infer(grey_toy, xp)[0, 0] - full) ** 2
    effects = effects / effects.max()
    m = effects.view(1, 12, 12)
    options = dict(nr_samples=1, perturb_baseline=0.3, abs=False, softmax=False)
    assert run("monotonicity_correlation", grey_toy, x[:1], m, 0, **options)[0] == pytest.approx(1.0, abs=1e-6)
    assert run("monotonicity_correlation", grey_toy, x[:1], 1 - m, 0, **options)[0] == pytest.approx(-1.0, abs=1e-4)


def _stripes(n: int) -> torch.Tensor:
    seg = (torch.arange(144).view(12, 12) // 24).expand(n, 12, 12).clone()
    seg[1:] = (seg[1:] + 2) % 6
    return seg


def test_irof_equals_quantus_on_the_same_superpixels(grey_toy, toy_inputs, monkeypatch):
    x, maps, y = toy_inputs
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)   # Quantus 0.6.0 calls np.trapz, gone in NumPy 2
    segments = iter(_stripes(3).numpy())
    monkeypatch.setattr(quantus.helpers.utils, "get_superpixel_segments", lambda img, **_: next(segments))
    want = quantus.IROF(perturb_baseline=0.2, return_aggregate=False, disable_warnings=True)(
        **quantus_batch(grey_toy.model, x, y, maps))
    got = run("irof", grey_toy, x, maps, y, perturb_baseline=0.2, segments=_stripes(3))
    assert np.abs(got - np.asarray(want)).max() < TOL


def test_irof_by_hand_and_per_photo_mean_baseline(grey_toy, toy_inputs):
    """One segment: the curve is one point, AOC = 1 - 0 (trapezoid of one value). Several: S - trapezoid."""
    x, maps, y = toy_inputs
    one = torch.zeros(1, 12, 12, dtype=torch.long)
    assert run("irof", grey_toy, x[:1], maps[:1], 0, segments=one).tolist() == [1.0]
    both = run("irof", grey_toy, x, maps, y, segments=_stripes(3))
    alone = run("irof", grey_toy, x[2:], maps[2:], y[2], segments=_stripes(3)[2:])
    assert alone[0] == pytest.approx(both[2], abs=1e-12)   # Quantus' "mean" is the batch's, so it differs


def test_slic_superpixels_run_on_a_photo(lite0, photos):
    x, maps, y = photos
    out = run("irof", lite0, x[:1], maps[:1], y[0])
    assert np.isfinite(out).all() and out[0] > 0


def test_an_all_zero_map_scores_zero_correlation_never_nan(grey_toy, toy_inputs):
    x, _, y = toy_inputs
    zero = torch.zeros(3, 12, 12)
    assert run("faithfulness_correlation", grey_toy, x, zero, y, nr_runs=4, subset_size=10).tolist() == [0.0] * 3
    assert run("monotonicity_correlation", grey_toy, x, zero, y, nr_samples=1, features_in_step=36).tolist() == \
        [0.0] * 3
    assert np.isfinite(run("irof", grey_toy, x, zero, y, segments=_stripes(3))).all()


# --- robustness -------------------------------------------------------------------------------------------------

NOISES = {"max_sensitivity": lambda g, s: 0.4 * torch.rand(s, generator=g) - 0.2,
          "avg_sensitivity": lambda g, s: 0.4 * torch.rand(s, generator=g) - 0.2,
          "local_lipschitz_estimate": lambda g, s: 0.1 * torch.randn(s, generator=g),
          "relative_input_stability": lambda g, s: 0.02 + 0.18 * torch.rand(s, generator=g)}
QUANTUS_ROBUSTNESS = {"max_sensitivity": quantus.MaxSensitivity, "avg_sensitivity": quantus.AvgSensitivity,
                      "local_lipschitz_estimate": quantus.LocalLipschitzEstimate,
                      "relative_input_stability": quantus.RelativeInputStability}


def quantus_robustness(name, bundle, x, y, maps, noise, **options):
    """Quantus' metric fed the same noise, explaining by compute_cams."""
    draws = iter(noise.numpy())
    perturb = lambda arr, indices, **_: arr + next(draws).reshape(arr.shape)  # noqa: E731
    metric_ = QUANTUS_ROBUSTNESS[name](nr_samples=len(noise), perturb_func=perturb, disable_warnings=True, **options)
    return np.asarray(metric_(**quantus_batch(bundle.model, x, y, maps, explain_func=lite0_explain(bundle))))


@pytest.mark.parametrize("name", sorted(NOISES))
def test_robustness_equals_quantus_on_the_same_noise(name, lite0, photos):
    x, maps, y = photos
    noise = NOISES[name](torch.Generator().manual_seed(3), (2, *x.shape))
    keep = {"return_nan_when_prediction_changes": False}
    want = quantus_robustness(name, lite0, x, y, maps, noise, **keep)
    got = run(name, lite0, x, maps, y, nr_samples=2, noise=noise, **keep)
    assert np.abs(got - want).max() < TOL
    alone = run(name, lite0, x[1:], maps[1:], y[1], nr_samples=2, noise=noise[:, 1:], **keep)
    assert alone[0] == pytest.approx(got[1], rel=1e-9)


def test_sensitivity_worked_by_hand(grey_toy, toy_inputs):
    """No noise: the map is re-explained unchanged, sensitivity 0; the Lipschitz estimate divides by 1e-10."""
    x, _, y = toy_inputs
    maps = compute_cams(grey_toy, x, "gradcam", target=y)["gradcam"]
    still = torch.zeros(2, *x.shape)
    for name in ("max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate"):
        assert run(name, grey_toy, x, maps, y, nr_samples=2, noise=still) == pytest.approx([0.0] * 3, abs=1e-5)
    half = run("max_sensitivity", grey_toy, x, maps / 2, y, nr_samples=2, noise=still)
    assert half == pytest.approx([1.0] * 3, abs=1e-5)   # ||a/2 - a|| / ||a/2|| = 1


def test_stability_keeps_the_copies_that_keep_the_prediction_where_quantus_gives_nan(grey_toy, toy_inputs):
    x, _, y = toy_inputs
    x = x[:1]
    top = int(infer(grey_toy, x).argmax())
    maps = compute_cams(grey_toy, x, "gradcam", target=[top])["gradcam"]
    small = 0.02 + 0.18 * torch.rand((1, *x.shape), generator=torch.Generator().manual_seed(0))
    shift = next(c for c in (3.0, -3.0, 10.0, -10.0) if int(infer(grey_toy, x + c).argmax()) != top)
    noise = torch.cat([small, torch.full((1, *x.shape), shift)])   # the second copy changes the prediction
    want = run("relative_input_stability", grey_toy, x, maps, top, nr_samples=1, noise=small)
    got = run("relative_input_stability", grey_toy, x, maps, top, nr_samples=2, noise=noise)
    assert got[0] == pytest.approx(want[0], rel=1e-5)   # float32 passes of 1 and 2 copies
    quantus_says = quantus_robustness("relative_input_stability", grey_toy, x, [top], maps, noise)
    assert np.isnan(quantus_says[0])
