"""Evaluation loop on a toy model and fake samples: table shape, cache/resume, failures, specs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from toy import GapLinear, toy_bundle

from helpers.cam.engine import compute_cams
from helpers.cam.inference import predict_topk
from helpers.config import SEED
from helpers.evaluation import metrics as M
from helpers.evaluation import runner as E

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
    crop_scale: float = 1.0


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
    # the boxes (2, 2, 8, 8) cover a quarter of the 12 x 12 image: the small-box energy game scores them
    assert ev.results.energy_pointing_game_small.equals(ev.results.energy_pointing_game)
    assert ev.curves["gradcam"]["insertion"].shape == (3, 5) and not ev.failures
    # the Gaussian floor does not look at the image: the same map for every image
    gauss = ev.results[ev.results.method == "gaussian"]
    assert gauss.complexity.nunique() == 1 and (gauss.coherency == 1.0).all()


def test_pointing_game_tolerance_is_in_original_pixels(bundle, tmp_path) -> None:
    # the Gaussian floor's maximum is one of the 12 x 12 map's 4 centre pixels (centres at x = 5.5 or 6.5);
    # a full-height box from x = 9 is 2.5 or 3.5 px away: a miss at tolerance 2, a hit once the image was
    # downscaled 2x into the crop (2 original px = 4 crop px) ... and a miss again at scale 0.5 (1 crop px)
    box = [(c, (9.0, 0.0, 12.0, 12.0)) for c in (0, 1)]
    x = torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(1))
    hits = [E.evaluate(bundle, [FakeSample(f"s{scale}.png", x, 0, boxes_crop=box, crop_scale=scale)], ["gaussian"],
                       CFG, cache_dir=tmp_path, progress=False).results.pointing_game.item()
            for scale in (1.0, 2.0, 0.5)]
    assert hits == [0.0, 1.0, 0.0]
    assert "original image's pixels" in R.describe_protocol(CFG)["localisation"]


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
    samples[1].label_idx = 7  # the toy model has 2 classes: explaining the label fails inside the evaluation
    ev = E.evaluate(bundle, samples, SPECS, dataclasses.replace(CFG, target="label"), cache_dir=tmp_path,
                    progress=False)
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


def test_specs() -> None:
    spec = E.as_spec(("hybrid@0.3", "hybrid", {"alpha": 0.3}))
    assert spec.kwargs == {"alpha": 0.3} and E.as_spec("gradcam") == E.MethodSpec("gradcam", "gradcam")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        E.as_spec("nope")
    labels = [s.label for s in E.default_specs(0.4)]
    assert labels[:4] == ["gradcam", "layercam", "hybrid@val", "hybrid@0.7"] and labels[-2:] == ["random", "gaussian"]
    assert E.default_specs(0.4)[2].kwargs == {"alpha": 0.4} and len(labels) == len(set(labels))
    with pytest.raises(ValueError, match="unique"):
        E.evaluate(None, [], ["gradcam", "gradcam"])


def test_metrics_explain_the_top1_prediction_by_default(bundle) -> None:
    samples = make_samples()
    preds = [predict_topk(bundle, smp.tensor[None], 1)[0][0][0] for smp in samples]
    for smp, p in zip(samples, preds, strict=True):
        smp.label_idx = 1 - p  # every label disagrees with the model
    top1 = E.evaluate(bundle, samples, ["gradcam", "random"], CFG, cache_dir=None, progress=False).results
    assert top1.class_idx.tolist() == [p for p in preds for _ in range(2)] and top1.pred_idx.equals(top1.class_idx)
    assert not top1.correct.any()
    label = E.evaluate(bundle, samples, ["gradcam", "random"], dataclasses.replace(CFG, target="label"),
                       cache_dir=None, progress=False).results
    assert label.class_idx.equals(label.label_idx) and not label.insertion_auc.equals(top1.insertion_auc)
    # the rise curve of a row is the metric run on the explained class, ties broken by the image's seed
    x = samples[2].tensor[None]
    gc = compute_cams(bundle, x, ("gradcam",), target=preds[2])["gradcam"].cpu()
    by_hand = M.insertion_deletion_auc(bundle, x, gc, preds[2], tie_seed=E.image_seed("im2.png"),
                                       steps=CFG.rise_steps, chunk_size=CFG.chunk_size)["insertion"]
    assert top1.insertion_auc.iloc[4] == pytest.approx(float(by_hand), abs=1e-6)
    with pytest.raises(ValueError, match="unknown target 'guess'"):
        E.EvalConfig(target="guess")
    with pytest.raises(ValueError, match="unknown explanation_space"):
        E.EvalConfig(explanation_space="rgb")


def test_minmax_scaling_changes_only_the_value_based_metrics(bundle) -> None:
    samples = make_samples(2)
    base = E.evaluate(bundle, samples, ["gaussian"], CFG, cache_dir=None, progress=False).results
    mm = E.evaluate(bundle, samples, ["gaussian"], dataclasses.replace(CFG, normalise="minmax"),
                    cache_dir=None, progress=False).results
    # the Gaussian floor's minimum is above 0: min-max lowers its complexity; rankings are unchanged
    assert (mm.complexity < base.complexity - 0.01).all()
    assert np.allclose(mm.insertion_auc, base.insertion_auc) and np.allclose(mm.deletion_auc, base.deletion_auc)
    with pytest.raises(ValueError, match="unknown normalise"):
        E.EvalConfig(normalise="sum")


def test_random_floor_re_explains_with_a_fresh_seed(bundle) -> None:
    ev = E.evaluate(bundle, make_samples(), SPECS, CFG, cache_dir=None, progress=False).results
    rand = ev[ev.method == "random"]
    assert (rand.coherency < 0.75).all()  # a new random map: correlation near 0, not 1 by construction


def test_random_floor_is_seeded_by_file_name() -> None:
    assert E.image_seed("a.png") == E.image_seed("a.png") != E.image_seed("b.png")
    # the project seed plus the first 32 bits of the name's sha256 (sha256("a.png") begins 7f071235)
    assert E.image_seed("a.png") == SEED + 0x7f071235 and E.image_seed("b.png") == SEED + 0x5f59d8e8


# ---------------------------------------------------------------- report: verdicts from synthetic tables

from helpers.evaluation import policy as P  # noqa: E402
from helpers.evaluation import stats as S  # noqa: E402
from helpers.evaluation.stats import comparison_table  # noqa: E402
from helpers.report import leaderboard as L  # noqa: E402
from helpers.report import protocol as R  # noqa: E402

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
    return E.Evaluation(pd.DataFrame(rows), pd.DataFrame(times), curves, [],
                        [E.MethodSpec(m, "gradcam") for m in LABELS])


def test_a_method_equal_to_another_on_a_subset_of_its_images_is_an_alias() -> None:
    ev = synthetic(hybrid_gain=0.03)
    first = ev.results[ev.results.method == "hybrid@0.7"].head(3)
    results = pd.concat([ev.results[ev.results.method != "hybrid@val"], first.assign(method="hybrid@val")],
                        ignore_index=True)
    assert P.aliases(results) == {"hybrid@val": "hybrid@0.7"}
    changed = results.copy()
    changed.loc[changed.method == "hybrid@val", "insertion_auc"] += 0.01
    assert P.aliases(changed) == {}


def test_confirmatory_family_of_four_and_no_identical_pairs(tmp_path) -> None:
    ev = synthetic(hybrid_gain=0.03)
    same = ev.results.method == "hybrid@val"
    # equal up to the float noise of batched forwards (seen on real runs: 4e-7 in average_drop)
    ev.results.loc[same, E.METRICS] = ev.results.loc[ev.results.method == "hybrid@0.7", E.METRICS].to_numpy() + 4e-7
    ev.results["correct"] = ev.results.image.isin([f"im{i}" for i in range(8)])
    ev.config = E.EvalConfig()
    assert P.aliases(ev.results) == {"hybrid@val": "hybrid@0.7"}
    assert not [p for p in P.comparison_pairs(LABELS, ev.results) if "hybrid@val" in p]
    with_photo = ev.results.assign(source_photo=ev.results.source.str.split("+").str[0])
    summary = S.summary_table(with_photo, E.METRICS, cluster_col="source_photo", class_col="label_idx",
                             cluster_metrics=E.LOCALISATION)
    tests = comparison_table(ev.results, E.METRICS, P.comparison_pairs(LABELS, ev.results), seed=0,
                             confirmatory=P.CONFIRMATORY_TESTS)
    pg = summary[(summary.method == "gradcam") & (summary.metric == "pointing_game")].iloc[0]
    assert (pg.ci_low_cluster, pg.ci_high_cluster, pg.class_mean) == (0.5, 0.5, 0.5)
    assert summary[summary.metric == "insertion_auc"].ci_low_cluster.isna().all()
    conf = tests[tests.family == "confirmatory"]
    assert len(conf) == 4 and set(zip(conf.b, conf.metric, strict=True)) == {
        ("gradcam", "insertion_auc"), ("layercam", "insertion_auc"),
        ("gradcam", "insertion_auc_thesis"), ("layercam", "insertion_auc_thesis")}
    assert np.allclose(conf.p_holm, S.holm(conf.p))
    described = R.describe_protocol(ev.config)
    assert "28 steps of 1792 pixels at 224x224" in described["insertion/deletion, rise preset"]
    assert "top-1 prediction" in described["explained class"]


def test_comparison_pairs() -> None:
    pairs = P.comparison_pairs(["gradcam", "layercam", "hybrid@val", "hybrid@0.7", "random"])
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


def test_markdown_tables() -> None:
    table = pd.DataFrame({"layer": ["head", "stages.5"], "method": ["gradcam", "gradcam"], "n": [3, 3],
                          "insertion_auc": ["0.5000 [0.4000, 0.6000]", "0.2500 [0.1250, 0.3750]"]})
    lines = L.markdown_table(table)
    assert lines[:2] == ["| layer | method | n | insertion_auc |", "|---|---|---|---|"]
    assert lines[3] == "| stages.5 | gradcam | 3 | 0.2500 [0.1250, 0.3750] |"


def test_localisation_table_takes_the_source_photo_intervals() -> None:
    summary = pd.DataFrame({"method": ["gradcam", "gradcam"], "metric": ["insertion_auc", "pointing_game"],
                            "n": [4, 4], "mean": [0.3, 0.75], "ci_low_cluster": [np.nan, 0.5],
                            "ci_high_cluster": [np.nan, 1.0], "class_mean": [np.nan, 0.625]})
    table = L.localisation_table(summary)
    assert table.to_dict("records") == [{"metric": "pointing_game", "method": "gradcam", "n": 4,
                                         "mean [95% CI, source photos]": "0.7500 [0.5000, 1.0000]",
                                         "mean of class means": 0.625}]
