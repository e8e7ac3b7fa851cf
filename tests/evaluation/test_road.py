"""ROAD: the noisy linear imputation by hand, against a dense solve and the reference imputer; the
MoRF / LeRF masks, the seeding, bad input, the curves on a toy network and on Lite0, and
``evaluate --metrics road`` on a tiny folder."""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from scipy.linalg import solveh_banded
from skimage import data, transform
from toy import GapLinear, toy_bundle

from helpers import cli
from helpers.cam.engine import compute_cams
from helpers.evaluation import mkl_solvers
from helpers.evaluation.floors import gaussian_maps, random_maps
from helpers.evaluation.imputation import (
    NEIGHBOURS,
    band_axis,
    banded_system,
    dissection_order,
    grid_laplacian,
    grid_weights,
    imputation_system,
    noisy_linear_impute,
    solve_banded,
    solve_on_grid,
    solve_sparse,
)
from helpers.evaluation.road import ROAD_PERCENTAGES, noise_generator, road_curves, road_masks, road_scores


def impute(image: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    return noisy_linear_impute(image, removed, noise=0.0)


def hole(h: int, w: int, pixels: list[tuple[int, int]]) -> torch.Tensor:
    removed = torch.zeros(h, w, dtype=torch.bool)
    for r, c in pixels:
        removed[r, c] = True
    return removed


def test_single_pixel_border_pixel_and_corner_by_hand():
    img = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = img[0]
    out = impute(img, hole(5, 6, [(2, 3), (0, 0), (4, 2)]))[0]
    inner = (v[1, 3] + v[3, 3] + v[2, 2] + v[2, 4]) / 6 + (v[1, 2] + v[1, 4] + v[3, 2] + v[3, 4]) / 12
    corner = (2 * v[0, 1] + 2 * v[1, 0] + v[1, 1]) / 5                  # weights 1/6, 1/6, 1/12 over their sum 5/12
    edge = (2 * v[4, 1] + 2 * v[4, 3] + 2 * v[3, 2] + v[3, 1] + v[3, 3]) / 8  # 1/6 x 3, 1/12 x 2: sum 2/3
    assert out[2, 3] == pytest.approx(float(inner), abs=1e-12)
    assert out[0, 0] == pytest.approx(float(corner), abs=1e-12)
    assert out[4, 2] == pytest.approx(float(edge), abs=1e-12)
    known = ~hole(5, 6, [(2, 3), (0, 0), (4, 2)])
    assert torch.equal(out[known], v[known])


def test_3x3_hole_is_filled_exactly_by_a_plane_and_two_pixels_by_hand():
    rows, cols = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    plane = (0.1 + 0.05 * rows + 0.08 * cols).double()          # a weighted mean of symmetric neighbours keeps planes
    img = torch.stack([plane, 1 - plane, torch.full_like(plane, 0.3)])
    removed = hole(5, 5, [(r, c) for r in range(1, 4) for c in range(1, 4)])
    assert torch.allclose(impute(img, removed), img, atol=1e-12)
    # Two removed neighbours x = (1, 1), y = (1, 2) of a 3 x 4 image whose known pixels are 0 except (0, 0) = 1:
    # x = 1/12 * 1 + 1/6 * y and y = 1/6 * x, so x = (1/12) / (1 - 1/36) = 3/35 and y = 1/70.
    img = torch.zeros(3, 3, 4, dtype=torch.float64)
    img[:, 0, 0] = 1
    out = impute(img, hole(3, 4, [(1, 1), (1, 2)]))
    assert out[:, 1, 1].tolist() == pytest.approx([3 / 35] * 3, abs=1e-12)
    assert out[:, 1, 2].tolist() == pytest.approx([1 / 70] * 3, abs=1e-12)


def dense_imputation(img: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The same equations written pixel by pixel, solved with numpy.linalg.solve."""
    h, w = removed.shape
    unknowns = [(r, c) for r in range(h) for c in range(w) if removed[r, c]]
    at = {p: i for i, p in enumerate(unknowns)}
    a, b = np.zeros((len(unknowns),) * 2), np.zeros((len(unknowns), img.shape[0]))
    for i, (r, c) in enumerate(unknowns):
        for dr, dc, wt in NEIGHBOURS:
            q = (r + dr, c + dc)
            if 0 <= q[0] < h and 0 <= q[1] < w:
                a[i, i] += wt
                if q in at:
                    a[i, at[q]] -= wt
                else:
                    b[i] += wt * img[:, q[0], q[1]]
    out = img.copy()
    out[:, removed] = np.linalg.solve(a, b).T
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_a_dense_solve(seed: int):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, 9, 7, generator=g, dtype=torch.float64)
    removed = torch.rand(9, 7, generator=g) < 0.3 + 0.3 * seed   # scattered holes, up to 90% removed
    expected = dense_imputation(img.numpy(), removed.numpy())
    assert np.abs(impute(img, removed).numpy() - expected).max() < 1e-12


@pytest.mark.parametrize("axis", ["rows", "columns"])
def test_the_banded_and_the_sparse_solve_equal_a_dense_solve(axis: str):
    g = torch.Generator().manual_seed(4)
    img = torch.rand(3, 12, 10, generator=g, dtype=torch.float64).numpy()
    removed = (torch.rand(12, 10, generator=g) < 0.6).numpy()
    expected = dense_imputation(img, removed)
    out = img.copy()
    along, where = (out.transpose(0, 2, 1), removed.T) if axis == "columns" else (out, removed)
    band, b = banded_system(along, where)
    along[:, where] = solve_banded(band, b).T
    assert np.abs(out - expected).max() < 1e-12
    out = img.copy()
    a, b, (rows, cols) = imputation_system(img, removed)                   # in the nested-dissection order
    out[:, rows, cols] = solve_sparse(a, b).T
    assert np.abs(out - expected).max() < 1e-12


@pytest.mark.skipif(not mkl_solvers.available(), reason="MKL ships for x86-64 only")
def test_mkl_banded_solve_equals_scipys_and_names_a_matrix_that_is_not_positive_definite():
    g = torch.Generator().manual_seed(8)
    img = torch.rand(3, 9, 11, generator=g, dtype=torch.float64).numpy()
    removed = np.zeros((9, 11), dtype=bool)
    removed[2:7, 3:8] = True
    band, b = banded_system(img, removed)
    expected = solveh_banded(band, b)
    assert np.abs(mkl_solvers.banded_cholesky_solve(band.copy(order="F"), b.copy(order="F")) - expected).max() < 1e-13
    with pytest.raises(RuntimeError, match="not positive definite"):
        mkl_solvers.banded_cholesky_solve(-band, b)


def test_the_band_by_hand_for_a_2x2_hole():
    # Pixels (1,1) (1,2) (2,1) (2,2) of a 4 x 4 grid: interior, degree 1; raster ranks 0 1 2 3.
    removed = np.zeros((4, 4), dtype=bool)
    removed[1:3, 1:3] = True
    band, b = banded_system(np.ones((1, 4, 4)), removed)
    # Upper band, kd = 3 (rank 0 to rank 3 is the diagonal neighbour): row kd the degrees, then the
    # couplings -1/6 (sides: 0-1, 0-2, 1-3, 2-3) and -1/12 (diagonals: 0-3, 1-2).
    assert band.shape == (4, 4)
    assert np.allclose(band[3], 1.0)
    assert np.allclose(band[2, [1, 3]], -1 / 6) and band[2, 2] == pytest.approx(-1 / 12)   # j - i = 1
    assert np.allclose(band[1, [2, 3]], -1 / 6)                                         # j - i = 2
    assert band[0, 3] == pytest.approx(-1 / 12)                                         # j - i = 3
    # b with every pixel 1: the degree 1 less the removed neighbours (2 sides, 1 diagonal).
    assert np.allclose(b[:, 0], 1 - (2 / 6 + 1 / 12))


@pytest.mark.skipif(not mkl_solvers.available(), reason="MKL's PARDISO ships for x86-64 only")
@pytest.mark.parametrize("shape", [(12, 10), (10, 12), (1, 9)])
def test_the_grid_solve_equals_a_dense_solve_on_one_pattern_for_every_mask(shape):
    # Each mask of a grid size reuses one analysis; transposed grids (same n) get their own.
    g = torch.Generator().manual_seed(6)
    for share in (0.6, 0.9, 0.3):
        img = torch.rand(3, *shape, generator=g, dtype=torch.float64).numpy()
        removed = (torch.rand(*shape, generator=g) < share).numpy()
        removed.flat[0] = False                                         # at least one known pixel
        out = img.copy()
        out[:, removed] = solve_on_grid(img, removed)
        assert np.abs(out - dense_imputation(img, removed)).max() < 1e-12
    upper, rows, cols = grid_laplacian(*shape)
    assert (rows <= cols).all() and np.array_equal(upper.indices[upper.indptr[:-1]], np.arange(upper.shape[0]))


@pytest.mark.skipif(not mkl_solvers.available(), reason="MKL's PARDISO ships for x86-64 only")
def test_grid_handles_are_kept_per_size_and_the_oldest_released(monkeypatch):
    monkeypatch.setattr(mkl_solvers, "_local", threading.local())
    removed = np.ones((6, 6), dtype=bool)
    removed[0, 0] = False
    for _ in range(3):                                                  # repeated calls: one handle
        solve_on_grid(np.ones((3, 6, 6)), removed)
    assert list(mkl_solvers._local.handles) == [(6, 6)]
    for size in range(7, 7 + mkl_solvers.MAX_HANDLES):
        solve_on_grid(np.ones((3, size, 6)), np.pad(removed, ((0, size - 6), (0, 0)), constant_values=True))
    assert len(mkl_solvers._local.handles) == mkl_solvers.MAX_HANDLES and (6, 6) not in mkl_solvers._local.handles


def test_without_mkl_every_mask_goes_to_the_sparse_solvers(monkeypatch):
    g = torch.Generator().manual_seed(7)
    img = torch.rand(3, 16, 16, generator=g, dtype=torch.float64)
    removed = torch.rand(16, 16, generator=g) < 0.9
    with_mkl = impute(img, removed)
    monkeypatch.setattr(mkl_solvers, "available", lambda: False)
    monkeypatch.setattr(mkl_solvers, "solver", lambda *a: pytest.fail("PARDISO called without MKL"))
    monkeypatch.setattr(mkl_solvers, "banded_cholesky_solve", lambda *a: pytest.fail("MKL's LAPACK called"))
    assert (impute(img, removed) - with_mkl).abs().max() < 1e-12
    compact = torch.zeros(16, 16, dtype=torch.bool)
    compact[3:9, 4:7] = True                                               # banded: SciPy's LAPACK
    assert np.abs(impute(img, compact).numpy() - dense_imputation(img.numpy(), compact.numpy())).max() < 1e-12


def test_band_axis_for_a_compact_hole_and_none_for_a_wide_one():
    tall = np.zeros((224, 224), dtype=bool)
    tall[20:200, 100:140] = True                                   # 40 columns: banded, row by row
    assert band_axis(tall) == "rows" and band_axis(tall.T) == "columns"
    wide = np.ones((224, 224), dtype=bool)
    wide[:20, :20] = False                                          # 90% removed, 224 wide: a sparse solve
    assert band_axis(wide) is None


def test_grid_weights_degrees_by_hand():
    grid, degree = grid_weights(4, 5)
    assert abs(grid - grid.T).max() == 0 and grid.diagonal().max() == 0
    assert degree.reshape(4, 5)[0, 0] == pytest.approx(5 / 12)                # 2 sides, 1 diagonal
    assert degree.reshape(4, 5)[0, 2] == pytest.approx(2 / 3)                 # 3 sides, 2 diagonals
    assert degree.reshape(4, 5)[2, 2] == pytest.approx(1.0)


def test_system_rows_sum_to_zero_and_matrix_symmetric():
    removed = torch.rand(11, 13, generator=torch.Generator().manual_seed(3)) < 0.5
    a, b, pixels = imputation_system(np.ones((3, 11, 13)), removed.numpy())
    # With every pixel 1, each row of the full Laplacian (A's row plus its known neighbours, b) sums to zero.
    assert np.abs(a @ np.ones(a.shape[0]) - b[:, 0]).max() < 1e-14
    assert abs(a - a.T).max() == 0
    assert sorted(map(tuple, pixels.T.tolist())) == sorted(map(tuple, torch.nonzero(removed).tolist()))


def test_dissection_order_is_a_permutation_with_separators_last():
    order = dissection_order(9, 20, leaf=4)
    assert sorted(order.tolist()) == list(range(180))
    assert set((order[-9:] % 20).tolist()) == {10}                 # the first cut: the middle column, last


def cam_like(size: int, seed: int) -> torch.Tensor:
    """A smooth map: a 7 x 7 grid of random values upsampled bilinearly, ReLU'd (ties on the zero plateau)."""
    coarse = torch.randn(1, 1, 7, 7, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")[0, 0].clamp_min(0)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_equals_pytorch_grad_cam_reference(p: float):
    img = torch.from_numpy(transform.resize(data.astronaut(), (64, 64), anti_aliasing=True)).permute(2, 0, 1).float()
    removed = road_masks(cam_like(64, 0)[None], 0, (p,))["morf"][0, 0]
    reference = NoisyLinearImputer(noise=0.0)(img, (~removed).to(torch.uint8))
    assert (impute(img, removed) - reference).abs().max() < 1e-4
    # With noise: the same draws as the reference from the same generator state.
    torch.manual_seed(5)
    noisy_reference = NoisyLinearImputer(noise=0.01)(img, (~removed).to(torch.uint8))
    ours = noisy_linear_impute(img, removed, 0.01, torch.Generator().manual_seed(5))
    assert (ours - noisy_reference).abs().max() < 1e-4


def test_noise_on_imputed_pixels_only_and_seeded():
    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    removed = torch.rand(16, 16, generator=torch.Generator().manual_seed(1)) < 0.4
    clean = impute(img, removed)
    a, b, c = (noisy_linear_impute(img, removed, 0.05, torch.Generator().manual_seed(s)) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, ~removed], img[:, ~removed])
    diff = (a - clean)[:, removed]
    assert 0.03 < float(diff.std()) < 0.07 and (diff != 0).all()


def test_a_grey_image_is_imputed_as_each_channel_of_a_colour_one():
    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    removed = torch.rand(16, 16, generator=torch.Generator().manual_seed(3)) < 0.4
    colour = noisy_linear_impute(img, removed, 0.0)
    for c in range(3):
        assert torch.allclose(noisy_linear_impute(img[c:c + 1], removed, 0.0), colour[c:c + 1], atol=1e-12)
    assert noisy_linear_impute(img[:1], removed, 0.05, torch.Generator().manual_seed(1)).shape == (1, 16, 16)


@pytest.mark.parametrize("image, removed, match", [
    (torch.rand(16, 16), torch.zeros(16, 16, dtype=torch.bool), "must be a .C, H, W. tensor"),
    (torch.rand(0, 16, 16), torch.zeros(16, 16, dtype=torch.bool), "must be a .C, H, W. tensor"),
    (torch.rand(1, 3, 16, 16), torch.zeros(16, 16, dtype=torch.bool), "must be a .C, H, W. tensor"),
    (torch.randint(0, 255, (3, 8, 8)), torch.ones(8, 8, dtype=torch.bool), "must be floats"),
    (torch.full((3, 8, 8), float("nan")), torch.ones(8, 8, dtype=torch.bool), "non-finite"),
    (torch.rand(3, 8, 8) * 255, torch.ones(8, 8, dtype=torch.bool), r"in \[0, 1\]"),
    (torch.rand(3, 8, 8), torch.ones(8, 8), "bool tensor"),
    (torch.rand(3, 8, 8), torch.ones(8, 9, dtype=torch.bool), "the image's shape"),
    (torch.rand(3, 8, 8), torch.ones(8, 8, dtype=torch.bool), "every pixel is removed"),
    (torch.rand(3, 8, 8), torch.zeros(8, 8, dtype=torch.bool), "no pixel is removed"),
])
def test_bad_input_is_a_clear_error(image, removed, match):
    with pytest.raises(ValueError, match=match):
        noisy_linear_impute(image, removed)


def test_morf_and_lerf_masks_are_complements_of_the_top_fraction():
    maps = torch.stack([cam_like(20, 1), random_maps(1, (20, 20), 0)[0]])
    masks = road_masks(maps, [3, 4])
    assert masks["morf"].shape == (2, len(ROAD_PERCENTAGES), 20, 20)
    assert torch.equal(masks["lerf"], ~masks["morf"])
    for k, p in enumerate(ROAD_PERCENTAGES):
        assert (masks["morf"][:, k].sum(dim=(1, 2)) == int(p * 400)).all()
        removed = masks["morf"][1, k]                               # top p of the random map: every removed value
        assert maps[1][removed].min() >= maps[1][~removed].max()    # is above every kept one
    with pytest.raises(ValueError, match="remove no pixel"):
        road_masks(maps, 0, (0.0, 0.5))


def toy() -> toy_bundle:
    return toy_bundle(GapLinear(torch.tensor([[4.0, -2.0, 1.0], [-3.0, 2.0, 0.5], [0.0, 1.0, -1.0]])))


def test_road_curves_on_a_toy_are_batch_independent_and_scores_are_their_means():
    bundle, g = toy(), torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 12, 12, generator=g)
    maps = torch.cat([gaussian_maps(1, (12, 12)), random_maps(2, (12, 12), 1)])
    curves = road_curves(bundle, images, maps, [0, 1, 2], tie_seed=[5, 6, 7], chunk_size=5)
    alone = road_curves(bundle, images[2:], maps[2:], 2, tie_seed=7)
    assert torch.allclose(curves["lerf"][2:], alone["lerf"], atol=1e-6)
    assert torch.allclose(curves["morf"][2:], alone["morf"], atol=1e-6)
    # The curve point equals the class probability of the imputed image, rebuilt here by hand.
    masks = road_masks(maps[:1], 5)
    imputed = noisy_linear_impute(images[0], masks["lerf"][0, 3], 0.01, noise_generator(5, "lerf", ROAD_PERCENTAGES[3]))
    with torch.inference_mode():
        prob = bundle.model(imputed[None]).softmax(dim=1)[0, 0]
    assert float(curves["lerf"][0, 3]) == pytest.approx(float(prob), abs=1e-5)
    scores = road_scores(bundle, images, maps, [0, 1, 2], tie_seed=[5, 6, 7])
    assert torch.allclose(scores["road_morf"], curves["morf"].mean(dim=1))
    assert torch.allclose(scores["road_combined"], (curves["lerf"].mean(dim=1) - curves["morf"].mean(dim=1)) / 2)
    assert torch.equal(scores["road_lerf_70"], curves["lerf"][:, 5])


def test_rows_ranking_the_pixels_alike_are_imputed_once_and_share_their_curves(monkeypatch):
    # Rows 0 and 2: one image, one class, and maps that rank the pixels alike (one is twice the other);
    # row 1: the same image and map under another class. Only rows 0 and 1 need imputing.
    from helpers.evaluation import road
    bundle, g = toy(), torch.Generator().manual_seed(1)
    image, cam = torch.rand(3, 10, 10, generator=g), torch.rand(10, 10, generator=g)
    images, maps = image.expand(3, -1, -1, -1), torch.stack([cam, cam, 2 * cam])
    calls = []
    real = road.noisy_linear_impute
    monkeypatch.setattr(road, "noisy_linear_impute", lambda *a: calls.append(1) or real(*a))
    curves = road_curves(bundle, images, maps, [0, 1, 0], tie_seed=3)
    assert len(calls) == 2 * 2 * len(ROAD_PERCENTAGES)
    for order in ("morf", "lerf"):
        assert torch.equal(curves[order][2], curves[order][0])
        assert not torch.equal(curves[order][1], curves[order][0])
        alone = road_curves(bundle, images[2:], maps[2:], 0, tie_seed=3)[order][0]
        assert torch.allclose(curves[order][2], alone, atol=1e-6)
    first, where = road.distinct_rows(images, road_masks(maps, 3)["morf"], [3, 3, 4], torch.tensor([0, 1, 0]))
    assert first == [0, 1, 2] and where.tolist() == [0, 1, 2]              # another tie seed: another row


def test_road_curves_reject_bad_input_before_any_work():
    bundle = toy()
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        road_curves(bundle, torch.rand(1, 3, 8, 8) * 5, torch.rand(1, 8, 8), 0)
    with pytest.raises(ValueError, match="noise"):
        road_curves(bundle, torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8), 0, noise=-1.0)
    with pytest.raises(ValueError, match="class index"):
        road_curves(bundle, torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8), 7)


def test_road_curves_on_lite0_in_range_and_batch_equals_single(lite0, photo_batch):
    bundle = dataclasses.replace(lite0, backend="torch")             # eager forwards: no export for this size
    x = torch.nn.functional.interpolate(photo_batch[:1], size=(96, 96), mode="bilinear", antialias=True)
    cams = compute_cams(bundle, x, ("gradcam", "layercam"))
    images, maps = x.expand(2, -1, -1, -1), torch.cat([cams["gradcam"], cams["layercam"]])
    cls = int(cams.class_idx[0])
    both = road_curves(bundle, images, maps, cls, tie_seed=11, percentages=(0.1, 0.9))
    single = road_curves(bundle, images[1:], maps[1:], cls, tie_seed=11, percentages=(0.1, 0.9))
    for order in ("morf", "lerf"):
        assert ((both[order] >= 0) & (both[order] <= 1)).all()
        assert torch.allclose(both[order][1:], single[order], atol=1e-5)
    assert (both["lerf"][:, 1] > both["morf"][:, 1]).all()          # keeping the top 90% beats removing it


def test_cli_evaluate_with_metrics_road_adds_the_road_columns(tmp_path, monkeypatch, capsys):
    # The command line end to end on three photos, with a toy network on 16 x 16 inputs so it runs in seconds.
    size = 16
    torch.manual_seed(0)                                                    # the conv layer's initial weights
    weights = torch.randn(3, 8)
    toy_net = GapLinear(weights, features=torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()))
    bundle = dataclasses.replace(toy_bundle(toy_net), input_size=size, resize=size, backend="torch",
                                 preprocess=lambda img: torch.from_numpy(np.asarray(img.convert("RGB").resize(
                                     (size, size)), dtype=np.float32) / 255).permute(2, 0, 1))
    monkeypatch.setattr(cli, "_bundle", lambda args: bundle)
    for label, name, image in (("espresso", "coffee", data.coffee()), ("tabby", "cat", data.chelsea()),
                               ("missile", "rocket", data.rocket())):
        (tmp_path / "images" / label).mkdir(parents=True)
        Image.fromarray(image).resize((48, 40)).save(tmp_path / "images" / label / f"{name}.png")
    common = ["evaluate", "--images", str(tmp_path / "images"), "--steps", "4", "--no-timing",
              "--cache", str(tmp_path / "cache")]
    assert cli.main([*common, "--metrics", "road", "--out", str(tmp_path / "road")]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "plain")]) == 0
    road = pd.read_csv(tmp_path / "road" / "evaluation_results.csv")
    plain = pd.read_csv(tmp_path / "plain" / "evaluation_results.csv")
    per_p = [f"road_{o}_{round(100 * p)}" for o in ("morf", "lerf") for p in ROAD_PERCENTAGES]
    assert not any(c.startswith("road_") for c in plain.columns)
    pd.testing.assert_frame_equal(road[plain.columns], plain)               # the standard columns are untouched
    assert set(road.method) >= {"gradcam", "layercam", "random"} and road[per_p].notna().all().all()
    assert ((road[per_p] >= 0) & (road[per_p] <= 1)).all().all()
    morf = road[[c for c in per_p if "morf" in c]].mean(axis=1)
    lerf = road[[c for c in per_p if "lerf" in c]].mean(axis=1)
    assert np.allclose(road.road_morf, morf, atol=1e-5) and np.allclose(road.road_lerf, lerf, atol=1e-5)
    assert np.allclose(road.road_combined, (lerf - morf) / 2, atol=1e-5)
    assert road.road_morf.nunique() > 1                                     # each method scored on its own map
    # Bad input is one line and status 2, before anything is written.
    with pytest.raises(SystemExit) as exit_:
        cli.main([*common, "--metrics", "roadd", "--out", str(tmp_path / "bad")])
    assert exit_.value.code == 2 and "invalid choice: 'roadd'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
