"""The layer study on a toy network: settings, per-layer alpha sweep and choice, the long test table, summary, plot."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from toy import GapLinear, mean_and_corner, toy_bundle, two_layer_toy

from helpers.cam.engine import compute_cams, forward_backward
from helpers.evaluation.alpha_sweep import ALPHAS
from helpers.evaluation.layer_study import (
    LAYER_METHODS,
    choose_layer_alphas,
    layer_settings,
    layer_table,
    summarise_layers,
    sweep_layers,
)
from helpers.evaluation.runner import explained_class, image_seed
from helpers.report.plots import plot_layers

LAYERS = ("features.1", "features.3")


SEEN_SEEDS: list = []


def fake_metric(bundle, images, maps, class_idx, tie_seed=None):
    """:func:`mean_and_corner`, recording the tie seeds."""
    SEEN_SEEDS.append(tie_seed)
    return mean_and_corner(bundle, images, maps, class_idx)


@pytest.fixture(scope="module")
def toy():
    return two_layer_toy()


def test_lite0_settings_are_the_7x7_14x14_and_head_maps(lite0):
    settings = layer_settings(lite0)
    assert settings == {"head": "head", "stages.5": "stages.5", "stages.4": "stages.4",
                        "stages.4+stages.5+head": ("stages.4", "stages.5", "head")}
    cap = forward_backward(lite0, torch.zeros(1, 3, 224, 224), class_idx=0, layers=["stages.4", "stages.5", "head"])
    assert {k: tuple(v.shape[-2:]) for k, v in cap.activations.items()} == \
        {"stages.4": (14, 14), "stages.5": (7, 7), "head": (7, 7)}
    with pytest.raises(ValueError, match="pass layers="):
        layer_settings(toy_bundle(GapLinear(torch.ones(2, 3))))


def test_sweep_layers_matches_the_engine_at_the_ends(toy):
    bundle, samples = toy
    settings = layer_settings(bundle, LAYERS)
    table = sweep_layers(bundle, samples, fake_metric, settings, batch_size=2, progress=False)
    assert len(table) == len(settings) * len(ALPHAS) * len(samples)
    assert list(table["layer"].unique()) == ["features.3", "features.1", "features.1+features.3"]
    x = torch.stack([s.tensor for s in samples])
    c = [explained_class(bundle, s, "top1")[0] for s in samples]   # the study explains the top-1 class
    assert c != [s.label_idx for s in samples]                     # ... which is not the label here
    for label, setting in settings.items():
        layer = setting if isinstance(setting, str) else list(setting)
        engine = compute_cams(bundle, x, ("gradcam", "layercam"), target=c, layer=layer)
        for alpha, method in ((1.0, "gradcam"), (0.0, "layercam")):
            rows = table[(table["layer"] == label) & (table["alpha"] == alpha)]
            assert rows["image"].tolist() == [s.file for s in samples]
            expected = fake_metric(bundle, x, engine[method], c)
            assert np.allclose(rows["insertion"], expected["insertion"], atol=1e-6), (label, method)
            assert np.allclose(rows["deletion"], expected["deletion"], atol=1e-6), (label, method)


def test_choose_layer_alphas_per_layer():
    rows = [("a", f"i{i}", "geometric", alpha, ins, 0.5) for i in range(3)
            for alpha, ins in ((0.0, 0.2), (0.5, 0.6), (1.0, 0.4))]
    rows += [("b", f"i{i}", "geometric", alpha, 0.3, dele) for i in range(3)
             for alpha, dele in ((0.0, 0.1), (0.5, 0.3), (1.0, 0.1))]
    table = pd.DataFrame(rows, columns=["layer", "image", "fusion", "alpha", "insertion", "deletion"])
    chosen = choose_layer_alphas(table)
    assert chosen["a"]["alpha"] == 0.5 and chosen["a"]["n_images"] == 3
    # tie: lower deletion, larger a
    assert chosen["b"]["alpha"] == 1.0 and chosen["b"]["tied_alphas"] == [0.0, 0.5, 1.0]


def test_layer_table_rows_batches_and_consistency(toy):
    bundle, samples = toy
    settings = layer_settings(bundle, LAYERS)
    alphas = {"features.3": 0.7, "features.1": 0.3, "features.1+features.3": 0.5}
    table = layer_table(bundle, samples, fake_metric, alphas, settings, batch_size=2, progress=False)
    assert list(table.columns) == ["image", "layer", "method", "alpha", "insertion_auc", "deletion_auc"]
    assert len(table) == len(samples) * len(settings) * len(LAYER_METHODS)
    hyb = table[table["method"] == "hybrid"]
    assert dict(zip(hyb["layer"], hyb["alpha"], strict=True)) == alphas
    assert table[table["method"] != "hybrid"]["alpha"].isna().all()
    single = layer_table(bundle, samples, fake_metric, alphas, settings, batch_size=1, progress=False)
    pd.testing.assert_frame_equal(table.sort_values(["layer", "method", "image"]).reset_index(drop=True),
                                  single.sort_values(["layer", "method", "image"]).reset_index(drop=True), atol=1e-6)
    sweep = sweep_layers(bundle, samples, fake_metric, settings, alphas=(0.3, 1.0), progress=False)
    for label, alpha, method in (("features.1", 1.0, "gradcam"), ("features.1", 0.3, "hybrid"),
                                 ("features.1+features.3", 1.0, "gradcam")):
        a = sweep[(sweep["layer"] == label) & (sweep["alpha"] == alpha)]["insertion"].to_numpy()
        b = table[(table["layer"] == label) & (table["method"] == method)]["insertion_auc"].to_numpy()
        assert np.allclose(a, b, atol=1e-6), (label, method)
    with pytest.raises(ValueError, match="no alpha for the setting"):
        layer_table(bundle, samples, fake_metric, {"features.3": 0.7}, settings, progress=False)


def test_summary_by_hand_and_plot():
    table = pd.DataFrame({"image": ["a", "b", "a", "b"], "layer": ["head"] * 2 + ["s5"] * 2,
                          "method": ["gradcam"] * 4, "alpha": np.nan,
                          "insertion_auc": [0.2, 0.4, 0.1, 0.1], "deletion_auc": [0.1, 0.3, 0.2, 0.2]})
    summary = summarise_layers(table)
    assert summary[["layer", "method", "n"]].values.tolist() == [["head", "gradcam", 2], ["s5", "gradcam", 2]]
    assert summary["insertion_auc_mean"].tolist() == pytest.approx([0.3, 0.1])
    # t-interval with n = 2: mean +- t_{0.975, 1} * sd / sqrt(2), sd = 0.1414..., t = 12.7062
    assert summary.loc[0, "insertion_auc_hi"] == pytest.approx(0.3 + 12.7062047 * 0.1, rel=1e-6)
    assert summary.loc[1, "deletion_auc_lo"] == summary.loc[1, "deletion_auc_hi"] == pytest.approx(0.2)
    fig = plot_layers(summary)
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["head", "s5"]


def test_every_metric_call_breaks_ties_by_the_images_seeds(toy):
    bundle, samples = toy
    settings = layer_settings(bundle, LAYERS)
    SEEN_SEEDS.clear()
    sweep_layers(bundle, samples[:2], fake_metric, settings, alphas=(0.5, 1.0), batch_size=2, progress=False)
    layer_table(bundle, samples[:2], fake_metric, {k: 0.5 for k in settings}, settings, batch_size=2, progress=False)
    seeds = [image_seed(s.file) for s in samples[:2]]
    assert SEEN_SEEDS and all(s is not None and s[:2] == seeds and set(s) == set(seeds) for s in SEEN_SEEDS)
