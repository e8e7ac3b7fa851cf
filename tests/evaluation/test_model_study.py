"""The study across architectures: per-model alpha choice, the four methods from one pass, the paired tests,
the table and the plot; one real model end to end on a couple of photos."""
from __future__ import annotations

from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from toy import mean_and_corner, two_layer_toy

from helpers.cam.engine import Hybrid, compute_cams
from helpers.config import SEED
from helpers.data.imagenet import study_samples
from helpers.data.images import seeded_subset
from helpers.evaluation import model_study as MS
from helpers.evaluation.metrics import insertion_deletion_auc
from helpers.evaluation.runner import explained_class
from helpers.report.plots import plot_models

fake_metric = mean_and_corner


@pytest.fixture(scope="module")
def toy():
    return two_layer_toy()


def test_the_four_methods_equal_the_engines_maps(toy) -> None:
    bundle, samples = toy
    rows = MS.model_rows(bundle, samples, fake_metric, val_alpha=0.3, batch_size=2, progress=False)
    assert len(rows) == 4 * len(samples) and list(dict.fromkeys(rows.method)) == list(MS.MODEL_METHODS)
    x = torch.stack([s.tensor for s in samples])
    c = [explained_class(bundle, s, "top1")[0] for s in samples]
    engine = compute_cams(bundle, x, ("gradcam", "layercam"), target=c)
    expected = {"gradcam": engine["gradcam"], "layercam": engine["layercam"],
                "hybrid@0.7": compute_cams(bundle, x, Hybrid(alpha=0.7), target=c)["hybrid"],
                "hybrid@val": compute_cams(bundle, x, Hybrid(alpha=0.3), target=c)["hybrid"]}
    for method, maps in expected.items():
        got = rows[rows.method == method]
        assert got.image.tolist() == [s.file for s in samples]
        assert np.allclose(got.insertion_auc, maps.mean(dim=(1, 2)), atol=1e-6), method
        assert np.allclose(got.deletion_auc, maps[:, 0, 0], atol=1e-6), method


def test_the_alpha_is_the_grid_point_with_the_best_mean_insertion(toy) -> None:
    bundle, samples = toy
    x = torch.stack([s.tensor for s in samples])
    c = [explained_class(bundle, s, "top1")[0] for s in samples]
    means = {a: float(compute_cams(bundle, x, Hybrid(alpha=a), target=c)["hybrid"].mean())
             for a in MS.MODEL_ALPHAS}
    choice = MS.choose_model_alpha(bundle, samples, fake_metric, batch_size=2, progress=False)
    assert choice["alpha"] == max(means, key=means.get) and choice["n_images"] == len(samples)
    assert choice["insertion_mean"] == pytest.approx(max(means.values()), abs=1e-6)


def synthetic_rows(model: str, shift: dict[str, float], n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.6, n)
    return pd.concat([pd.DataFrame({"model": model, "image": [f"i{i}" for i in range(n)], "method": m,
                                    "insertion_auc": base + d + rng.normal(0, 1e-3, n), "deletion_auc": base})
                      for m, d in shift.items()], ignore_index=True)


def test_tests_and_table_per_model() -> None:
    rows = pd.concat([synthetic_rows("a", {"gradcam": 0.0, "layercam": -0.05, "hybrid@0.7": 0.02, "hybrid@val": 0.03}),
                      synthetic_rows("b", {"gradcam": 0.01, "layercam": 0.0, "hybrid@0.7": 0.0, "hybrid@val": 0.01})])
    tests = MS.model_tests(rows)
    # 2 models x 3 pairs x 2 metrics x 2 tests; Holm within each model's family
    assert len(tests) == 24 and list(tests.columns[:2]) == ["model", "family"]
    # a model whose val-chosen alpha was 1: hybrid@val IS Grad-CAM there, so it is not tested against it
    same = synthetic_rows("c", {"gradcam": 0.0, "layercam": -0.05, "hybrid@0.7": 0.02})
    same = pd.concat([same, same[same.method == "gradcam"].assign(method="hybrid@val")], ignore_index=True)
    assert MS.model_pairs(same, ["insertion_auc"]) == [("hybrid@0.7", "gradcam"), ("hybrid@0.7", "layercam")]
    assert set(MS.model_tests(same).pair) == {"hybrid@0.7 vs gradcam", "hybrid@0.7 vs layercam"}
    t = tests[(tests.test == "paired t-test") & (tests.metric == "insertion_auc")].set_index(["model", "pair"])
    assert t.loc[("a", "hybrid@0.7 vs gradcam"), "mean_diff"] == pytest.approx(0.02, abs=1e-3)
    assert t.loc[("a", "hybrid@0.7 vs layercam"), "mean_diff"] == pytest.approx(0.07, abs=1e-3)
    assert t.loc[("b", "hybrid@0.7 vs gradcam"), "mean_diff"] == pytest.approx(-0.01, abs=1e-3)
    assert t.loc[("a", "hybrid@0.7 vs gradcam"), "p"] < 1e-6
    table = MS.model_table(tests, {"a": {"alpha": 1.0}, "b": {"alpha": 0.3}})
    assert table.model.tolist() == ["a"] * 3 + ["b"] * 3 and table["alpha (val)"].tolist() == ["1"] * 3 + ["0.3"] * 3
    first = table.iloc[0]
    assert first.comparison == "hybrid@0.7 vs gradcam" and first.n == 12
    assert first["mean diff [95% CI]"].startswith("+0.020")
    fig = plot_models(tests)
    assert len(fig.axes[0].get_yticklabels()) == 2
    plt.close(fig)


def test_one_real_model_end_to_end(lite0) -> None:
    metric = partial(insertion_deletion_auc, preset="rise", steps=2)
    choice, rows = MS.run_model("efficientnet_lite0", n_val=1, n_test=2, metric=metric, progress=False, device="cpu")
    _, test_all = study_samples(lite0, "test")
    files = [s.file for s in seeded_subset(test_all, 2, SEED)]
    assert choice["alpha"] in MS.MODEL_ALPHAS and choice["n_images"] == 1
    assert len(rows) == 8 and set(rows.model) == {"efficientnet_lite0"}
    assert rows[rows.method == "gradcam"].image.tolist() == files
    assert rows[["insertion_auc", "deletion_auc"]].apply(lambda v: v.between(0, 1)).all().all()


def test_rows_from_an_evaluation_keep_the_four_methods_on_the_files() -> None:
    results = pd.DataFrame({"image": ["x", "x", "y", "x"], "method": ["gradcam", "random", "gradcam", "hybrid@val"],
                            "insertion_auc": [0.1, 0.2, 0.3, 0.4], "deletion_auc": [0.5, 0.6, 0.7, 0.8],
                            "kind": "photo"})
    rows = MS.rows_from_evaluation(results, ["x"], "lite")
    assert rows.to_dict("records") == [
        {"image": "x", "method": "gradcam", "insertion_auc": 0.1, "deletion_auc": 0.5, "model": "lite"},
        {"image": "x", "method": "hybrid@val", "insertion_auc": 0.4, "deletion_auc": 0.8, "model": "lite"}]


def test_resnet50_joins_only_when_its_weights_are_here(monkeypatch) -> None:
    monkeypatch.setattr(MS, "find_resnet50_weights", lambda: None)
    assert MS.study_models() == ["efficientnet_lite1", "efficientnet_lite2"]
    monkeypatch.setattr(MS, "find_resnet50_weights", lambda: "resnet50.pth")
    assert MS.study_models()[-1] == "resnet50"
