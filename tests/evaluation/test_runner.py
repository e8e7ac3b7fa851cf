"""Evaluation loop on a toy model and fake samples: table shape, cache/resume, failures, specs."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from helpers.evaluation import runner as E
from helpers.evaluation import metrics as M
from toy import GapLinear, toy_bundle

SPECS = ["gradcam", "layercam", ("hybrid@0.5", "hybrid", {"alpha": 0.5}), "random", "gaussian"]
CFG = E.EvalConfig(rise_steps=4, thesis_steps=2, chunk_size=8, tolerance=2.0, timing_repeats=1, timing_warmup=0)


@dataclass
class FakeSample:
    file: str
    tensor: torch.Tensor
    label_idx: int
    label_name: str = "x"
    boxes_crop: list = field(default_factory=list)
    kind: str = "photo"
    split: str = "test"
    source: str = "src"


def make_samples(n: int = 3) -> list[FakeSample]:
    gen = torch.Generator().manual_seed(0)
    return [FakeSample(f"im{i}.png", torch.randn(3, 12, 12, generator=gen), i % 2,
                       boxes_crop=[(i % 2, (2.0, 2.0, 8.0, 8.0)), (1 - i % 2, (0.0, 0.0, 3.0, 3.0))] if i else [])
            for i in range(n)]


@pytest.fixture
def bundle():
    torch.manual_seed(0)
    return toy_bundle(GapLinear(torch.randn(2, 4), features=nn.Conv2d(3, 4, 1)))


def test_one_row_per_image_and_method_with_every_metric(bundle, tmp_path) -> None:
    ev = E.evaluate(bundle, make_samples(), SPECS, CFG, cache_dir=tmp_path, progress=False)
    assert len(ev.results) == 3 * 5 and list(ev.results.method[:5]) == ["gradcam", "layercam", "hybrid@0.5",
                                                                         "random", "gaussian"]
    metrics = ev.results[list(E.METRICS)]
    # image 0 has no box: localisation is NaN ("not applicable"); everything else is a number in [0, 1]
    no_box = ev.results.image == "im0.png"
    loc = ["pointing_game", "energy_pointing_game", "box_iou"]
    assert metrics[no_box][loc].isna().all().all() and metrics[~no_box].notna().all().all()
    assert metrics[~no_box].ge(0).all().all() and metrics[~no_box].le(1).all().all()
    assert len(ev.timings) == 15 and (ev.timings.ms_per_image > 0).all()
    assert ev.curves["gradcam"]["insertion"].shape == (3, 5) and not ev.failures
    # the Gaussian floor does not look at the image: the same map for every image
    gauss = ev.results[ev.results.method == "gaussian"]
    assert gauss.complexity.nunique() == 1 and (gauss.coherency == 1.0).all()


def test_cache_resumes_and_gives_identical_tables(bundle, tmp_path) -> None:
    samples = make_samples()
    first = E.evaluate(bundle, samples[:2], SPECS, CFG, cache_dir=tmp_path, progress=False)  # "interrupted"
    calls: list[int] = []
    bundle.model.register_forward_hook(lambda *_: calls.append(1))
    full = E.evaluate(bundle, samples, SPECS, CFG, cache_dir=tmp_path, progress=False)
    assert calls  # the third image was computed ...
    calls.clear()
    again = E.evaluate(bundle, samples, SPECS, CFG, cache_dir=tmp_path, progress=False)
    assert not calls  # ... and now everything comes from the cache
    assert full.results.iloc[:10].equals(first.results)
    assert again.results.to_csv() == full.results.to_csv()
    fresh = E.evaluate(bundle, samples, SPECS, CFG, cache_dir=None, progress=False)
    assert fresh.results.to_csv() == full.results.to_csv()
    # other settings are a different cache entry
    E.evaluate(bundle, samples[:1], SPECS, E.EvalConfig(rise_steps=2, timing_repeats=1), cache_dir=tmp_path,
               progress=False)
    assert calls and len(list(tmp_path.glob("im0-*.json"))) == 2


def test_a_failing_image_is_reported_and_skipped(bundle, tmp_path, capsys) -> None:
    samples = make_samples()
    samples[1].label_idx = 7  # the toy model has 2 classes: fails inside the evaluation
    ev = E.evaluate(bundle, samples, SPECS, CFG, cache_dir=tmp_path, progress=False)
    assert [f for f, _ in ev.failures] == ["im1.png"] and set(ev.results.image) == {"im0.png", "im2.png"}
    assert "skipped im1.png" in capsys.readouterr().err


def test_a_bad_image_tensor_is_rejected_before_any_forward(bundle, tmp_path) -> None:
    samples = make_samples()
    samples[2].tensor = torch.randn(5, 12, 12)  # wrong channel count
    calls: list[int] = []
    bundle.model.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match="image im2.png must have 3 channels"):
        E.evaluate(bundle, samples, SPECS, CFG, cache_dir=tmp_path, progress=False)
    assert not calls and not list(tmp_path.iterdir())


def test_time_first_times_only_the_first_images(bundle) -> None:
    ev = E.evaluate(bundle, make_samples(), SPECS, CFG, cache_dir=None, progress=False, time_first=1)
    assert set(ev.timings.image) == {"im0.png"}


def test_specs_and_chosen_alpha(tmp_path) -> None:
    spec = E.as_spec(("hybrid@0.3", "hybrid", {"alpha": 0.3}))
    assert spec.kwargs == {"alpha": 0.3} and E.as_spec("gradcam") == E.MethodSpec("gradcam", "gradcam")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        E.as_spec("nope")
    labels = [s.label for s in E.default_specs(0.4)]
    assert labels[:4] == ["gradcam", "layercam", "hybrid@val", "hybrid@0.7"] and labels[-2:] == ["random", "gaussian"]
    assert E.default_specs(0.4)[2].kwargs == {"alpha": 0.4} and len(labels) == len(set(labels))
    with pytest.raises(FileNotFoundError, match="run 4_hybrid_gradcam_layercam.ipynb first"):
        E.read_chosen_alpha(tmp_path)
    (tmp_path / "hybrid_alpha.json").write_text(json.dumps({"alpha": 0.6, "split": "val"}))
    assert E.read_chosen_alpha(tmp_path) == 0.6
    with pytest.raises(ValueError, match="unique"):
        E.evaluate(None, [], ["gradcam", "gradcam"])


def test_random_floor_is_seeded_by_file_name() -> None:
    assert E.image_seed("a.png") == E.image_seed("a.png") != E.image_seed("b.png")
    assert np.isfinite(E.image_seed("a.png"))


# ---------------------------------------------------------------- report: verdicts from synthetic tables

from helpers.evaluation import report as R  # noqa: E402
from helpers.evaluation.stats import comparison_table  # noqa: E402

LABELS = ["gradcam", "layercam", "hybrid@val", "hybrid@0.7", "random", "gaussian"]


def synthetic(hybrid_gain: float, n: int = 12, slow: float = 1.0) -> E.Evaluation:
    """Insertion AUCs: Grad-CAM g_i, hybrid g_i + gain + noise; deletion: identical up to small symmetric noise."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.6, n)
    rows, times = [], []
    for i in range(n):
        jitter = 0.002 * (-1) ** i
        ins = {"gradcam": base[i], "layercam": base[i] - 0.01 + jitter, "hybrid@val": base[i] + hybrid_gain,
               "hybrid@0.7": base[i] + hybrid_gain + jitter, "random": 0.2, "gaussian": 0.25}
        for m in LABELS:
            row = {"image": f"im{i}", "method": m, "kind": "photo", "source": f"s{i % 4}+bg", "label_idx": 1}
            row |= {k: 0.5 for k in E.METRICS} | {"insertion_auc": ins[m], "insertion_auc_thesis": ins[m],
                                                  "deletion_auc": 0.2 + jitter * (m == "hybrid@0.7"),
                                                  "deletion_auc_thesis": 0.2 + rng.normal(0, 0.01)}
            rows.append(row)
            times.append({"image": f"im{i}", "method": m, "ms_per_image": 10.0 * (slow if "hybrid" in m else 1.0)})
    curves = {m: {"insertion": np.full((n, 3), 0.5), "deletion": np.full((n, 3), 0.2)} for m in LABELS}
    return E.Evaluation(pd.DataFrame(rows), pd.DataFrame(times), curves, [], [E.MethodSpec(m, "gradcam") for m in LABELS])


def verdicts(ev: E.Evaluation) -> dict[str, bool]:
    auc_metrics = [m for cols in R.PRESET_COLUMNS.values() for m in cols]  # all that the claims read
    tests = comparison_table(ev.results, auc_metrics, R.comparison_pairs(LABELS))
    return {c.claim: c.holds for c in R.thesis_claims(ev.results, tests, ev.timings)}


def test_verdicts_follow_the_numbers() -> None:
    good = verdicts(synthetic(hybrid_gain=0.03))
    assert good["[rise protocol] hybrid@0.7 has a higher mean insertion AUC than Grad-CAM and LayerCAM"]
    assert good["[rise protocol] hybrid@0.7 beats gradcam on insertion AUC, p < 0.05 (paired t-test)"]
    assert good["hybrid@0.7 costs no extra time over Grad-CAM (median ratio <= 1.1)"]
    assert all(v for k, v in good.items() if "deletion" in k)
    bad = verdicts(synthetic(hybrid_gain=-0.03, slow=1.5))
    assert not bad["[rise protocol] hybrid@0.7 has a higher mean insertion AUC than Grad-CAM and LayerCAM"]
    assert not bad["[thesis protocol] hybrid@0.7 beats gradcam on insertion AUC, p < 0.05 (paired t-test)"]
    assert not bad["hybrid@0.7 costs no extra time over Grad-CAM (median ratio <= 1.1)"]
    # layercam is 0.01 below Grad-CAM: equal to Grad-CAM means the hybrid is best only on a tie, and not
    # significantly better than Grad-CAM (the differences are +-0.002 around zero)
    tie = verdicts(synthetic(hybrid_gain=0.0))
    assert not tie["[rise protocol] hybrid@0.7 beats gradcam on insertion AUC, p < 0.05 (paired t-test)"]


def test_ranking_compares_only_methods_on_the_same_images() -> None:
    ev = synthetic(hybrid_gain=0.03)
    extra = ev.results[ev.results.method == "gradcam"].head(2).assign(method="reciprocam", insertion_auc=0.99)
    results = pd.concat([ev.results, extra], ignore_index=True)
    means, peers = R.comparable_means(results, "insertion_auc", "hybrid@0.7")
    assert means["reciprocam"] == 0.99 and "reciprocam" not in peers.index
    assert list(peers.index) == LABELS and peers.equals(means[LABELS])


def test_report_and_tables_are_generated_and_deterministic(tmp_path) -> None:
    ev = synthetic(hybrid_gain=0.03)
    tables = R.write_tables(ev, tmp_path / "a")
    R.write_tables(ev, tmp_path / "b")
    for name in ("evaluation_results", "summary_statistics", "statistical_tests"):
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (tmp_path / "b" / f"{name}.csv").read_bytes()
    report = R.render_report(ev, tables, alpha=0.6, facts={"model": "toy"})
    assert "n = 12 images** from **5 distinct source photos" in report and "a = 0.6" in report
    assert "**HOLDS** - [rise protocol] hybrid@0.7 beats gradcam" in report
    assert "What a reader should NOT conclude" in report
    R.plot_comparison(ev, metrics=("insertion_auc",), path=tmp_path / "plots.png")
    assert (tmp_path / "plots.png").is_file()
    tests = pd.read_csv(tmp_path / "a" / "statistical_tests.csv")
    assert {"pair", "metric", "test", "statistic", "p", "p_holm", "cohens_dz", "ci_low", "ci_high"} <= set(tests.columns)


def test_comparison_pairs() -> None:
    pairs = R.comparison_pairs(["gradcam", "layercam", "hybrid@val", "hybrid@0.7", "random"])
    assert pairs[:4] == [("hybrid@0.7", "gradcam"), ("hybrid@0.7", "layercam"), ("hybrid@0.7", "hybrid@val"),
                         ("hybrid@0.7", "random")]
    assert ("hybrid@val", "hybrid@0.7") not in pairs and pairs[-1] == ("gradcam", "layercam") and len(pairs) == 8


def test_thesis_deletion_reuses_the_rise_curve_exactly(bundle) -> None:
    x, maps, idx = torch.randn(2, 3, 12, 12), torch.rand(2, 12, 12), torch.tensor([0, 1])
    rise = M.insertion_deletion_curves(bundle, x, maps, idx, "deletion", steps=4)
    shared = E.thesis_aucs(bundle, x, maps, idx, E.EvalConfig(rise_steps=4, thesis_steps=2), rise)
    direct = M.insertion_deletion_auc(bundle, x, maps, idx, preset="thesis", steps=2)
    assert torch.allclose(shared["deletion"], direct["deletion"], atol=1e-6)
    assert torch.allclose(shared["insertion"], direct["insertion"], atol=1e-6)
    odd = E.thesis_aucs(bundle, x, maps, idx, E.EvalConfig(rise_steps=3, thesis_steps=2), rise[:, :0])
    assert torch.allclose(odd["deletion"], direct["deletion"], atol=1e-6)


def test_explain_rows_equals_one_call_per_row(bundle) -> None:
    specs = [E.as_spec(s) for s in SPECS]
    x, idx = torch.randn(5, 3, 12, 12), torch.tensor([0, 1, 1, 0, 1])
    rows = E.explain_rows(bundle, x, idx, specs, seed=3, cam_options={})
    singles = torch.cat([E.explain(bundle, x[i:i + 1], idx[i:i + 1], s, 3, {}) for i, s in enumerate(specs)])
    assert torch.allclose(rows, singles, atol=1e-5)
    assert E.one_pass(specs[0]) and not E.one_pass(specs[3])


def test_merge_keeps_methods_with_fewer_images(bundle) -> None:
    samples = make_samples()
    core = E.evaluate(bundle, samples, SPECS[:2], CFG, cache_dir=None, progress=False)
    extra = E.evaluate(bundle, samples[:2], SPECS[3:], CFG, cache_dir=None, progress=False)
    both = E.merge(core, extra)
    assert [s.label for s in both.methods] == ["gradcam", "layercam", "random", "gaussian"]
    assert both.results.groupby("method").size().to_dict() == {"gradcam": 3, "layercam": 3, "random": 2, "gaussian": 2}
    tests = comparison_table(both.results, ["insertion_auc"], [("gradcam", "random")])
    assert (tests.n == 2).all()
    with pytest.raises(ValueError, match="disjoint"):
        E.merge(core, core)
