"""Metrics: hand-worked toy cases, invariants (batch == single, chunk size), edge cases."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import ndimage
from toy import GapLinear, toy_bundle

from helpers.evaluation import floors
from helpers.evaluation import metrics as M


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


@pytest.fixture
def toy():
    """Class 0's logit is mean(channel 0) + 0.1 and class 1's is 0.1: p0 = sigmoid(mean(channel 0))."""
    return toy_bundle(GapLinear(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])))


def image(values: list[list[float]]) -> torch.Tensor:
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor(values)
    return x


# channel 0 = [[4, 1], [2, 3]] and the map ranks 4 > 3 > 2 > 1: pixel order (0,0), (1,1), (1,0), (0,1)
X = image([[4.0, 1.0], [2.0, 3.0]])
MAP = torch.tensor([[[1.0, 0.25], [0.5, 0.75]]])


def test_insertion_by_hand(toy) -> None:
    # revealed sums 0, 4, 7, 9, 10 over a zero substrate -> means / 4 pixels
    curve = M.insertion_deletion_curves(toy, X, MAP, 0, "insertion", steps=4, substrate="zero")
    expected = torch.tensor([[sigmoid(v / 4) for v in (0, 4, 7, 9, 10)]])
    assert torch.allclose(curve, expected, atol=1e-6)


def test_deletion_by_hand_and_two_pixels_per_step(toy) -> None:
    curve = M.insertion_deletion_curves(toy, X, MAP, 0, "deletion", steps=2, substrate="black")
    # toy bundle: mean 0, std 1, so black = 0; remaining sums 10, 10 - 4 - 3 = 3, 0
    assert torch.allclose(curve, torch.tensor([[sigmoid(2.5), sigmoid(0.75), sigmoid(0.0)]]), atol=1e-6)


def test_black_means_pixel_zero_in_normalised_space() -> None:
    x = torch.randn(2, 3, 4, 4)
    black = M.make_substrate(x, "black", (0.5, 0.4, 0.3), (0.5, 0.2, 0.1))
    assert torch.allclose(black[0, :, 0, 0], torch.tensor([-1.0, -2.0, -3.0]))
    assert torch.allclose(M.to_pixels(black, (0.5, 0.4, 0.3), (0.5, 0.2, 0.1)), torch.zeros_like(x), atol=1e-6)
    assert torch.equal(M.make_substrate(x, "zero", (0.5,) * 3, (0.5,) * 3), torch.zeros_like(x))
    with pytest.raises(ValueError, match="unknown substrate 'grey'.*black, zero, blur"):
        M.make_substrate(x, "grey", (0.5,) * 3, (0.5,) * 3)


def test_rise_kernel_by_hand() -> None:
    # scipy's gaussian_filter (sigma 5, radius 4 sigma = 20, reflect mode) of an 11-long delta at 5:
    # the reflected input repeats with period 22 and holds the delta at 5 + 22 m and 16 + 22 m, so
    # within reach of i in 0..10 at c = 5, -6, 16, 27, -17; weight g(t) = exp(-t^2 / 50) / sum_{|t|<=20} g
    z = sum(math.exp(-t * t / 50) for t in range(-20, 21))
    k1 = [sum(math.exp(-(i - c) ** 2 / 50) for c in (5, -6, 16, 27, -17) if abs(i - c) <= 20) / z
          for i in range(11)]
    kern = M.rise_kernel()
    assert kern.shape == (11, 11) and kern.sum() == pytest.approx(1.0)
    assert kern[5, 5] == pytest.approx(k1[5] ** 2) and kern[0, 0] == pytest.approx(k1[0] ** 2)
    assert kern[0, 3] == pytest.approx(k1[0] * k1[3])
    assert kern[0, 0] / kern[5, 5] == pytest.approx(0.876, abs=1e-3)  # nearly flat


def test_blur_zero_pads_like_rise() -> None:
    # RISE: conv2d(x, kern, padding=klen // 2) on the normalised image -- zero padding, per channel
    const = torch.full((1, 3, 16, 16), 0.3)
    blurred = M.gaussian_blur(const)
    assert torch.allclose(blurred[..., 5:11, 5:11], const[..., 5:11, 5:11], atol=1e-6)
    assert blurred[0, 0, 0, 0] == pytest.approx(0.3 * M.rise_kernel()[5:, 5:].sum(), abs=1e-6)
    x = torch.randn(1, 3, 13, 9, generator=torch.Generator().manual_seed(0))
    by_hand = torch.stack([torch.from_numpy(ndimage.correlate(x[0, c].double().numpy(), M.rise_kernel(),
                                                              mode="constant", cval=0.0)) for c in range(3)])
    assert torch.allclose(M.gaussian_blur(x)[0], by_hand.float(), atol=1e-5)


def test_rise_preset_is_224_times_8_pixels_per_step() -> None:
    rise = M.PRESETS["rise"]
    assert (rise["steps"], rise["insertion_substrate"], rise["deletion_substrate"]) == (28, "blur", "zero")
    assert set(M.step_counts(224 * 224, rise["steps"]).diff().tolist()) == {224 * 8}


def test_ties_are_broken_by_a_seeded_permutation_not_raster_order() -> None:
    # a map with a big zero plateau: after its one positive pixel, the plateau must not be removed
    # top rows first (raster order would take the first 64 plateau pixels from rows 0-3 only)
    m = torch.zeros(1, 16, 16)
    m[0, 15, 15] = 1.0
    ranks = M.pixel_ranks(m, tie_seed=5)[0].view(16, 16)
    assert ranks[15, 15] == 0
    first = (ranks >= 1) & (ranks <= 64)
    assert first[:4].sum() < 32
    assert torch.equal(ranks, M.pixel_ranks(m, tie_seed=5)[0].view(16, 16))  # seeded: same seed, same order
    assert not torch.equal(ranks, M.pixel_ranks(m, tie_seed=6)[0].view(16, 16))
    per_row = M.pixel_ranks(m.expand(2, 16, 16), tie_seed=[5, 6])
    assert torch.equal(per_row[0], M.pixel_ranks(m, 5)[0]) and torch.equal(per_row[1], M.pixel_ranks(m, 6)[0])
    with pytest.raises(ValueError, match="tie_seed has 1 entries for 2 maps"):
        M.pixel_ranks(m.expand(2, 16, 16), tie_seed=[5])


def test_ranking_the_same_maps_again_reuses_the_sort_and_hands_out_copies(monkeypatch) -> None:
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2))
    first = M.pixel_ranks(maps, 4)
    first[0, 0] = -1                                                      # the caller's copy, not the kept one
    sorts = []
    real = torch.argsort
    monkeypatch.setattr(torch, "argsort", lambda *a, **k: sorts.append(1) or real(*a, **k))
    again = M.pixel_ranks(maps.clone(), 4)
    assert sorts == [] and again[0, 0] != -1 and torch.equal(again[1:], first[1:])
    assert torch.equal(M.pixel_ranks(maps * 2 + 1, 4), again) and len(sorts) == 1   # other values: sorted anew
    M.pixel_ranks(maps, 5)                                                          # another seed: sorted anew
    assert len(sorts) == 2


def test_float_noise_does_not_change_the_auc(toy) -> None:
    # the evidence (channel 0) grows row by row; the map is a bump in one corner on a zero plateau
    x = torch.zeros(1, 3, 16, 16)
    x[0, 0] = torch.arange(16.0)[:, None].expand(16, 16) / 4
    m = torch.zeros(1, 16, 16)
    m[0, 10:, 10:] = torch.rand(6, 6, generator=torch.Generator().manual_seed(0)) + 0.1
    noisy = m + 1e-7 * torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(1))
    for mode in M.MODES:
        a, b = (M.auc(M.insertion_deletion_curves(toy, x, mp, 0, mode, steps=16, substrate="zero", tie_seed=3))
                for mp in (m, noisy))
        assert abs(float(a - b)) <= 1e-4


def test_step_counts() -> None:
    assert M.step_counts(10, 4).tolist() == [0, 2, 5, 7, 10]
    with pytest.raises(ValueError, match="steps"):
        M.step_counts(10, 0)


def test_auc_of_known_curves() -> None:
    curves = torch.tensor([[0.3, 0.3, 0.3], [0.0, 0.5, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert torch.allclose(M.auc(curves), torch.tensor([0.3, 0.5, 0.75, 0.25]))
    # RISE's auc: (sum - first / 2 - last / 2) / (n - 1) = (1.75 - 0.5 - 0.125) / 2
    assert M.auc(torch.tensor([[1.0, 0.5, 0.25]])).item() == pytest.approx(0.5625)
    with pytest.raises(ValueError, match="K >= 1"):
        M.auc(torch.ones(2, 1))


def test_curves_are_monotone_when_the_map_is_the_evidence(toy) -> None:
    torch.manual_seed(0)
    x = torch.zeros(2, 3, 8, 8)
    x[:, 0] = torch.rand(2, 8, 8)
    maps = x[:, 0] / x[:, 0].amax(dim=(1, 2), keepdim=True)
    ins = M.insertion_deletion_curves(toy, x, maps, 0, "insertion", steps=16, substrate="zero")
    dele = M.insertion_deletion_curves(toy, x, maps, 0, "deletion", steps=16, substrate="zero")
    assert (ins.diff(dim=1) >= -1e-7).all() and (dele.diff(dim=1) <= 1e-7).all()
    # the map ranks the evidence best-first, so its insertion beats the reverse ranking's
    worst = M.insertion_deletion_curves(toy, x, 1 - maps, 0, "insertion", steps=16, substrate="zero")
    assert (M.auc(ins) > M.auc(worst)).all()


def test_batch_equals_single_and_chunk_size_does_not_matter(toy) -> None:
    torch.manual_seed(1)
    x, maps = torch.randn(3, 3, 6, 6), torch.rand(3, 6, 6)
    batch = M.insertion_deletion_curves(toy, x, maps, [0, 1, 0], "insertion", steps=5, chunk_size=4)
    singles = torch.cat([M.insertion_deletion_curves(toy, x[i:i + 1], maps[i:i + 1], [0, 1, 0][i], "insertion",
                                                     steps=5, chunk_size=1) for i in range(3)])
    big = M.insertion_deletion_curves(toy, x, maps, [0, 1, 0], "insertion", steps=5, chunk_size=1000)
    assert torch.allclose(batch, singles, atol=1e-6) and torch.allclose(batch, big, atol=1e-6)


def test_curves_run_in_chunked_forwards_not_one_per_step(toy) -> None:
    calls: list[int] = []
    toy.backend = "torch"  # counts forwards with a module hook, which the inference engine does not run
    toy.model.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    M.insertion_deletion_curves(toy, torch.randn(2, 3, 4, 4), torch.rand(2, 4, 4), 0, "deletion", steps=4,
                                chunk_size=4)
    assert calls == [4, 4, 2]


def test_presets_and_overrides(toy) -> None:
    x, maps = torch.randn(2, 3, 4, 4), torch.rand(2, 4, 4)
    thesis = M.insertion_deletion_auc(toy, x, maps, 0, preset="thesis")
    assert set(thesis) == {"insertion", "deletion"} and thesis["insertion"].shape == (2,)
    curves = M.insertion_deletion(toy, x, maps, 0, preset="thesis", steps=3)
    assert curves["deletion"].shape == (2, 4)
    by_hand = M.auc(M.insertion_deletion_curves(toy, x, maps, 0, "insertion", steps=10, substrate="zero"))
    assert torch.allclose(thesis["insertion"], by_hand)
    with pytest.raises(ValueError, match="unknown option"):
        M.insertion_deletion_auc(toy, x, maps, 0, stepz=3)
    with pytest.raises(ValueError, match="unknown preset"):
        M.insertion_deletion_auc(toy, x, maps, 0, preset="nope")


def test_bad_shapes_and_modes(toy) -> None:
    with pytest.raises(ValueError, match="maps"):
        M.insertion_deletion_curves(toy, torch.randn(2, 3, 4, 4), torch.rand(1, 4, 4), 0, "insertion")
    with pytest.raises(ValueError, match="unknown mode"):
        M.insertion_deletion_curves(toy, torch.randn(1, 3, 4, 4), torch.rand(1, 4, 4), 0, "both")


# ---------------------------------------------------------------- confidence-based metrics

def test_explanation_images_multiply_in_normalised_space_by_default() -> None:
    # TorchCAM / pytorch-grad-cam / the ADCC code: map x normalised input (0 = the mean colour)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    x = torch.full((1, 3, 2, 2), 0.6)
    maps = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]])
    assert torch.allclose(M.explanation_images(x, maps, mean, std)[0, 1], torch.tensor([[0.6, 0.3], [0.0, 0.15]]))
    with pytest.raises(ValueError, match="unknown explanation space 'rgb'"):
        M.explanation_images(x, maps, mean, std, space="rgb")


def test_explanation_images_multiply_in_pixel_space() -> None:
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    x = torch.full((1, 3, 2, 2), 0.6)  # pixel value 0.8
    maps = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]])
    pixels = M.to_pixels(M.explanation_images(x, maps, mean, std, space="pixel"), mean, std)
    assert torch.allclose(pixels[0, 1], torch.tensor([[0.8, 0.4], [0.0, 0.2]]))


def test_average_drop_and_increase_by_hand(toy) -> None:
    # p0 = sigmoid(mean channel 0). Image 1: all 2 -> Y = sigmoid(2); map 0.5 everywhere -> O = sigmoid(1).
    # Image 2: all -2 -> Y = sigmoid(-2); halving the pixels raises p0 to sigmoid(-1): an increase, no drop.
    x = torch.zeros(2, 3, 2, 2)
    x[0, 0], x[1, 0] = 2.0, -2.0
    out = M.confidence_change(toy, x, torch.full((2, 2, 2), 0.5), 0)
    assert torch.allclose(out["average_drop"], torch.tensor([(sigmoid(2) - sigmoid(1)) / sigmoid(2), 0.0]))
    assert out["increase_in_confidence"].tolist() == [0.0, 1.0]
    assert torch.allclose(out["prob_explanation"], torch.tensor([sigmoid(1), sigmoid(-1)]))


def test_pearson_complexity_and_harmonic_mean_by_hand() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.allclose(M.pearson(a, 2 * a + 1), torch.tensor([1.0]))
    assert torch.allclose(M.pearson(a, torch.tensor([[1.0, 3.0, 2.0, 4.0]])), torch.tensor([0.8]))
    assert M.pearson(a, torch.zeros(1, 4)).tolist() == [0.0]
    assert torch.allclose(M.complexity(torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])), torch.tensor([0.5]))
    # 3 / (1/0.5 + 1/1 + 1/0.25) = 3 / 7
    hm = M.harmonic_mean(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), torch.tensor([0.25, 0.3]))
    assert torch.allclose(hm, torch.tensor([3 / 7, 0.0]))


def test_adcc_by_hand(toy) -> None:
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = 2.0
    maps = torch.tensor([[[1.0, 0.5], [0.5, 0.0]]])  # complexity 0.5; revealed mean 2 * 2 / 4 = 1
    out = M.adcc(toy, x, maps, 0, explain=lambda imgs, idx: maps.flip(-1))
    # the re-explained map [[0.5, 1], [0, 0.5]] correlates 0 with the map -> coherency 0.5
    drop = (sigmoid(2) - sigmoid(1)) / sigmoid(2)
    assert torch.allclose(out["coherency"], torch.tensor([0.5]))
    assert torch.allclose(out["complexity"], torch.tensor([0.5]))
    assert torch.allclose(out["adcc"], torch.tensor([3 / (2 + 2 + 1 / (1 - drop))]))


def test_all_zero_maps_never_give_nan(toy) -> None:
    x, zero = torch.randn(1, 3, 8, 8), torch.zeros(1, 8, 8)
    out = M.adcc(toy, x, zero, 0, explain=lambda imgs, idx: torch.zeros(1, 8, 8))
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["coherency"].item() == 0.5 and out["complexity"].item() == 0.0
    boxes = [[(0.0, 0.0, 4.0, 4.0)]]
    for fn in (M.pointing_game, M.energy_pointing_game, M.box_iou):
        assert fn(zero, boxes).tolist() == [0.0]
    curves = M.insertion_deletion(toy, x, zero, 0, steps=4)
    assert all(torch.isfinite(c).all() for c in curves.values())


# ---------------------------------------------------------------- localisation

def test_pointing_game_tolerance_and_ties() -> None:
    maps = torch.zeros(3, 40, 40)
    maps[0, 10, 30] = 1.0  # centre (30.5, 10.5): 10.5 px right of the box -> hit with 15 px tolerance
    maps[1, 10, 36] = 1.0  # 16.5 px right -> miss
    maps[2, 5, 5] = maps[2, 35, 35] = 1.0  # tie: one max inside, one far outside
    boxes = [[(0.0, 0.0, 20.0, 20.0)]] * 3
    assert M.pointing_game(maps[:2], boxes[:2]).tolist() == [1.0, 0.0]
    assert M.pointing_game(maps[:2], boxes[:2], tolerance=0.0).tolist() == [0.0, 0.0]
    # ONE maximiser per map: of the tied maxima, the first in the seeded order decides
    for seed in range(20):
        order = M.tie_orders(1600, [seed])[0].tolist()
        inside_first = order.index(5 * 40 + 5) < order.index(35 * 40 + 35)
        assert M.pointing_game(maps[2:], boxes[2:], tie_seed=seed).tolist() == [float(inside_first)]
    assert {M.pointing_game(maps[2:], boxes[2:], tie_seed=s).item() for s in range(20)} == {0.0, 1.0}
    # a second box of the class catches the other maximum
    assert M.pointing_game(maps[2:], [[(0.0, 0.0, 20.0, 20.0), (30.0, 30.0, 40.0, 40.0)]]).tolist() == [1.0]
    assert torch.isnan(M.pointing_game(maps[:1], [[]])).all()
    with pytest.raises(ValueError, match="one list per map"):
        M.pointing_game(maps, boxes[:2])


def test_energy_pointing_game_by_hand() -> None:
    m = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 2.0], [0.0] * 4, [0.0] * 4]])
    # box (0, 0, 2, 2) holds the four ones: energy 4 of 6; pixel centres decide (1.9 excludes column 1)
    assert torch.allclose(M.energy_pointing_game(m, [[(0.0, 0.0, 2.0, 2.0)]]),
                          torch.tensor([4 / 6], dtype=torch.float64))
    assert torch.allclose(M.energy_pointing_game(m, [[(0.0, 0.0, 1.4, 2.0)]]),
                          torch.tensor([2 / 6], dtype=torch.float64))
    # boxes under half the image only: the 2x2 box covers 4 of 16 pixels, a 4x2 box exactly half (NaN)
    assert torch.allclose(M.energy_pointing_game(m, [[(0.0, 0.0, 2.0, 2.0)]], max_box_fraction=0.5),
                          torch.tensor([4 / 6], dtype=torch.float64))
    assert torch.isnan(M.energy_pointing_game(m, [[(0.0, 0.0, 4.0, 2.0)]], max_box_fraction=0.5)).all()


def test_largest_region_box_and_iou_by_hand() -> None:
    m = torch.zeros(10, 10)
    m[1:3, 1:3] = 1.0  # 4 pixels
    m[5:9, 4:7] = 0.5  # 12 pixels, the largest region at threshold 0.2 (0.5 >= 0.2)
    m[4, 3] = 0.5      # diagonal neighbour: joins with 8-connectivity
    assert M.largest_region_box(m) == (3.0, 4.0, 7.0, 9.0)
    assert M.largest_region_box(m, threshold=0.6) == (1.0, 1.0, 3.0, 3.0)
    assert M.largest_region_box(torch.zeros(4, 4)) is None
    assert M.iou((0, 0, 2, 2), (1, 1, 3, 3)) == 1 / 7 and M.iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    # best of the boxes of the class: (3, 4, 7, 9) vs itself = 1
    assert M.box_iou(m[None], [[(0.0, 0.0, 1.0, 1.0), (3.0, 4.0, 7.0, 9.0)]]).tolist() == [1.0]


def test_sanity_floors() -> None:
    r = floors.random_maps(2, (5, 6), seed=3)
    assert r.shape == (2, 5, 6) and torch.equal(r, floors.random_maps(2, (5, 6), seed=3))
    assert not torch.equal(r, floors.random_maps(2, (5, 6), seed=4)) and 0 <= r.min() and r.max() < 1
    g = floors.gaussian_maps(1, (4, 4), sigma=0.25)[0]
    # pixel centres at +-0.5, +-1.5 from the centre; sigma = 1 px -> corner / centre = exp(-(2.25+2.25)/2 + 0.25)
    assert g.max() == 1.0 and torch.equal(g, g.flip(0)) and torch.equal(g, g.T)
    assert abs(g[0, 0].item() - math.exp(-(4.5 - 0.5) / 2)) < 1e-6


def test_identical_inputs_run_once_and_give_the_same_points(toy) -> None:
    torch.manual_seed(2)
    x = torch.randn(1, 3, 4, 4).expand(3, -1, -1, -1)
    m = torch.rand(1, 4, 4)
    maps = torch.cat([m, 0.5 * m, torch.rand(1, 4, 4)])  # rows 0 and 1 rank the pixels the same way
    seen: list[int] = []
    toy.backend = "torch"  # counts forwards with a module hook, which the inference engine does not run
    toy.model.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    curves = M.insertion_deletion_curves(toy, x, maps, 0, "insertion", steps=4, chunk_size=100)
    assert seen == [2 + 2 * 3]  # the two end points once, the 3 inner points per distinct ranking
    singles = torch.cat([M.insertion_deletion_curves(toy, x[i:i + 1], maps[i:i + 1], 0, "insertion", steps=4)
                         for i in range(3)])
    assert torch.allclose(curves, singles, atol=1e-6) and torch.equal(curves[0], curves[1])


def test_points_with_the_same_set_of_changed_pixels_share_a_forward(toy) -> None:
    x = X.expand(2, -1, -1, -1)
    maps = torch.tensor([[[4.0, 3.0], [2.0, 1.0]], [[3.0, 4.0], [1.0, 2.0]]]) / 4  # same top-2 set, other order
    seen: list[int] = []
    toy.backend = "torch"  # counts forwards with a module hook, which the inference engine does not run
    toy.model.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    curves = M.insertion_deletion_curves(toy, x, maps, 0, "deletion", steps=2, substrate="zero")
    assert seen == [3] and torch.equal(curves[0], curves[1])
    seen.clear()
    M.insertion_deletion_curves(toy, x, maps, 0, "deletion", steps=4, substrate="zero")
    assert seen == [2 + 3 + 2]  # k = 1 and 3 differ between the maps, k = 2 is shared
