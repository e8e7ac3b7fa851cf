"""Fusion rules by hand, the alpha sweep on a toy network with a fake metric, the JSON hand-over."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from toy import GapLinear, toy_bundle

from helpers.cam.engine import Hybrid, compute_cams
from helpers.cam.maps import FUSIONS, additive_fusion, max_fusion
from helpers.evaluation.alpha_sweep import (
    ALPHAS,
    choose_alpha,
    fused_maps,
    paired_differences,
    raw_maps,
    read_alpha_json,
    summarise,
    sweep,
    sweep_plan,
    write_alpha_json,
)
from helpers.report.plots import plot_paired, plot_sweep

GC = torch.tensor([[[0.0, 2.0], [4.0, 0.0]]])   # / max -> [[0, .5], [1, 0]]
LC = torch.tensor([[[1.0, 2.0], [2.0, 4.0]]])   # / max -> [[.25, .5], [.5, 1]]
W = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 1.0]]],
                  [[[0.0, 1.0], [2.0, 0.5]], [[1.0, 3.0], [0.0, 2.0]]],
                  [[[2.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [5.0, 0.0]]]])


def test_fusions_by_hand() -> None:
    assert torch.allclose(additive_fusion(GC, LC, 0.25), torch.tensor([[[0.1875, 0.5], [0.625, 0.75]]]))
    assert torch.allclose(max_fusion(GC, LC), torch.tensor([[[0.25, 0.5], [1.0, 1.0]]]))
    assert torch.allclose(FUSIONS["geometric"](GC, LC, 0.5), torch.tensor([[[0.0, 0.5], [0.5 ** 0.5, 0.0]]]))
    for name, fn in FUSIONS.items():
        with pytest.raises(ValueError, match="alpha"):
            fn(GC, LC, -0.1)
        zero = fn(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), 0.3)
        assert torch.equal(zero, torch.zeros(1, 2, 2)), name


def test_fused_maps_reproduce_the_engine() -> None:
    bundle = toy_bundle(GapLinear(W))
    raw = raw_maps(bundle, A, class_idx=[0, 0, 1])
    engine = compute_cams(bundle, A, ("gradcam", "layercam", Hybrid(alpha=0.3)), target=[0, 0, 1])
    assert torch.allclose(fused_maps(raw, 1.0, size=(2, 2)), engine["gradcam"], atol=1e-6)
    assert torch.allclose(fused_maps(raw, 0.0, size=(2, 2)), engine["layercam"], atol=1e-6)
    assert torch.equal(fused_maps(raw, 0.3, size=(2, 2)), engine["hybrid"])
    assert not torch.allclose(engine["gradcam"], engine["layercam"])  # class 0 has a negative weight
    with pytest.raises(ValueError, match="unknown fusion"):
        fused_maps(raw, 0.5, "median")


def test_sweep_plan() -> None:
    plan = sweep_plan(ALPHAS, additive=(0.0, 0.5, 1.0))
    assert [a for f, a in plan if f == "geometric"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert [(f, a) for f, a in plan if f == "additive"] == [("additive", 0.5)]
    assert plan[-1][0] == "max" and math.isnan(plan[-1][1])


def fake_metric(bundle, images, maps, class_idx):
    """Insertion = mean of the map, deletion = its top-left value: easy to recompute."""
    return {"insertion": maps.mean(dim=(1, 2)), "deletion": maps[:, 0, 0]}


def test_sweep_scores_every_fusion_with_one_pass_per_batch() -> None:
    model = GapLinear(W)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    bundle = toy_bundle(model)
    plan = sweep_plan((0.0, 0.5, 1.0), additive=(0.5,))
    results = sweep(bundle, A, [0, 0, 1], fake_metric, plan, batch_size=2, progress=False)
    assert len(calls) == 2  # two batches, one forward each, whatever the number of alphas
    assert len(results) == len(plan) * 3 and set(results["image"]) == {0, 1, 2}
    raw = raw_maps(bundle, A, [0, 0, 1])
    for fusion, alpha in plan:
        same_alpha = results["alpha"].fillna(-1) == (-1 if math.isnan(alpha) else alpha)
        rows = results[(results["fusion"] == fusion) & same_alpha]
        expected = fused_maps(raw, 0.5 if math.isnan(alpha) else alpha, fusion, (2, 2))
        assert torch.allclose(torch.tensor(rows["insertion"].to_numpy(), dtype=torch.float32),
                              expected.mean(dim=(1, 2)))
        assert torch.allclose(torch.tensor(rows["deletion"].to_numpy(), dtype=torch.float32), expected[:, 0, 0])
    with pytest.raises(ValueError, match="class_idx"):
        sweep(bundle, A, [0, 1], fake_metric, plan, progress=False)


def test_summary_by_hand() -> None:
    results = pd.DataFrame({"image": [0, 1, 0, 1, 0, 1], "fusion": ["geometric"] * 4 + ["max"] * 2,
                            "alpha": [0.0, 0.0, 1.0, 1.0, math.nan, math.nan],
                            "insertion": [0.1, 0.3, 0.5, 0.7, 0.2, 0.2], "deletion": [0.0, 0.2, 0.1, 0.1, 0.3, 0.5]})
    summary = summarise(results)
    assert list(summary["fusion"]) == ["geometric", "geometric", "max"] and list(summary["n"]) == [2, 2, 2]
    assert summary["insertion_mean"].tolist() == pytest.approx([0.2, 0.6, 0.2])
    assert summary["deletion_mean"].tolist() == pytest.approx([0.1, 0.1, 0.4])
    paired = paired_differences(results, ("geometric", 1.0))  # image 0: 0.1-0.5, 0.2-0.5; image 1: 0.3-0.7, 0.2-0.7
    assert list(zip(paired["fusion"], paired["n"], strict=True)) == [("geometric", 2), ("max", 2)]
    assert paired["insertion_diff"].tolist() == pytest.approx([-0.4, -0.4])
    assert paired["deletion_diff"].tolist() == pytest.approx([-0.0, 0.3])
    assert len(plot_sweep(summary, 1.0).axes) == 2 and len(plot_paired(paired).axes[0].lines) >= 1
    assert paired["insertion_lo"][0] == pytest.approx(-0.4)
    assert paired["deletion_lo"][1] == pytest.approx(0.3 - 12.706205 * 0.1, rel=1e-5)  # sd 0.1414, se 0.1
    by_model = plot_paired({"model A, n = 2": paired, "model B, n = 2": paired}, title="toy photos, n = 2")
    by_model.canvas.draw()   # the figure title sits above both panels' titles, not across them
    top = min(ax.title.get_window_extent().y1 for ax in by_model.axes)
    assert by_model.get_suptitle() == "toy photos, n = 2" and by_model._suptitle.get_window_extent().y0 >= top
    ax = by_model.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["model A, n = 2", "model B, n = 2"]
    xs = [bars.lines[0].get_xdata()[0] for bars in ax.containers]   # one errorbar series per model
    assert len(xs) == 2 and xs[0] < 0.0 < xs[1] and xs[0] == pytest.approx(-xs[1])  # shifted apart around a = 0
    assert plot_paired(paired).axes[0].get_legend() is None


def test_choose_alpha_rule_and_ties() -> None:
    summary = pd.DataFrame({"fusion": ["geometric"] * 4 + ["additive"], "alpha": [0.0, 0.3, 0.6, 0.9, 0.5],
                            "n": [7] * 5, "insertion_mean": [0.1, 0.5, 0.5, 0.5, 0.9],
                            "deletion_mean": [0.1, 0.2, 0.1, 0.1, 0.0]})
    choice = choose_alpha(summary)  # 0.3/0.6/0.9 tie on insertion; 0.6 and 0.9 tie on deletion -> larger alpha
    assert choice["alpha"] == 0.9 and choice["tied_alphas"] == [0.3, 0.6, 0.9] and choice["n_images"] == 7
    assert choose_alpha(summary, "additive")["alpha"] == 0.5
    with pytest.raises(ValueError, match="fusion"):
        choose_alpha(summary, "max")


def test_alpha_json_round_trip_and_errors(tmp_path) -> None:
    path = write_alpha_json(tmp_path / "sub" / "hybrid_alpha.json", {"alpha": 0.6, "rule": "r"}, split="val",
                            n_images=3)
    assert read_alpha_json(path) == {"alpha": 0.6, "rule": "r", "split": "val", "n_images": 3}
    with pytest.raises(FileNotFoundError, match="run 4_hybrid"):
        read_alpha_json(tmp_path / "missing.json")
    (tmp_path / "test.json").write_text(json.dumps({"alpha": 0.6, "split": "test"}))
    with pytest.raises(ValueError, match="'val' split"):
        read_alpha_json(tmp_path / "test.json")
    (tmp_path / "big.json").write_text(json.dumps({"alpha": 1.5, "split": "val"}))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        read_alpha_json(tmp_path / "big.json")
