"""The study's report on toy rows: the answer first, identical methods once, the worked example's rule,
sections from the numbers, and "not computed yet" with the command for a missing part."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from helpers.report import present, sections
from helpers.report.render import GLANCE_END, GLANCE_START, update_readme, write_report
from helpers.study.results import Study
from helpers.study.spec import QUICK
from helpers.study.store import PartFile

matplotlib.use("Agg")
METHODS = ("gradcam", "layercam", "hybrid@0.7", "hybrid@val", "cam", "random")


def main_rows(n: int = 12) -> pd.DataFrame:
    """Every metric the report reads; hybrid@val = Grad-CAM (a = 1), cam = Grad-CAM up to rounding on 2 photos."""
    rng = np.random.default_rng(0)
    g = rng.uniform(0.4, 0.7, n)
    shift = {"gradcam": 0.0, "layercam": -0.02, "hybrid@0.7": 0.01, "hybrid@val": 0.0, "cam": 0.0, "random": -0.2}
    rows = []
    for m in METHODS:
        for i in range(n):
            ins = g[i] + shift[m] + (1e-3 if m == "cam" and i < 2 else 0) + rng.normal(0, 0.003) * (m == "hybrid@0.7")
            rows.append({"image": f"p{i:02d}.JPEG", "method": m, "insertion_auc": ins, "insertion_auc_thesis": ins,
                         "deletion_auc": 0.2 - shift[m] / 4, "deletion_auc_thesis": 0.2, "average_drop": 0.3,
                         "adcc": 0.6 + shift[m], "increase_in_confidence": float(i % 3 == 0),
                         "insertion_curve": np.array([0.1, ins, 0.9]), "deletion_curve": np.array([0.9, 0.5, 0.1])})
    return pd.DataFrame(rows)


def toy_study(tmp_path, **extra: PartFile) -> Study:
    rows = main_rows()
    photos = sorted(rows.image.unique())
    facts = {"part": "main", "stage": "test", "hash": "x", "shard": [1, 1], "photos": photos, "part_photos": photos,
             "dataset": "toy", "alpha": 1.0, "study": "quick"}
    return Study(tmp_path, QUICK, {"main": PartFile(rows, facts), **extra})


def test_identical_methods_appear_once_with_a_note() -> None:
    rows = main_rows()
    assert present.identical(rows, alpha=1.0) == {"hybrid@val": "gradcam", "cam": "gradcam"}
    assert present.identical(rows[rows.method != "cam"], alpha=0.0) == {"hybrid@val": "layercam"}
    assert present.distinct_methods(rows, 1.0) == ["gradcam", "layercam", "hybrid@0.7", "random"]
    table = present.leaderboards(rows, 1.0, ("insertion_auc",)).set_index("method")
    assert table.loc["gradcam", "note"] == "same maps: hybrid@val, cam" and "cam" not in table.index
    assert list(table.index[:2]) == ["hybrid@0.7", "gradcam"] and (table["n"] == 12).all()


def test_pairs_groups_and_the_worked_example_rule() -> None:
    methods = ["gradcam", "layercam", "hybrid@0.7", "scorecam", "xgradcam", "gradcam++", "reciprocam", "random"]
    assert present.difference_pairs(methods)[-1] == ("hybrid@0.7", "layercam")
    assert ("random", "gradcam") not in present.difference_pairs(methods)
    groups = present.curve_groups(methods)
    assert groups[0] == ["gradcam", "layercam", "hybrid@0.7", "random"] and all(len(g) <= 4 for g in groups)
    assert sorted(m for g in groups for m in g if m != "gradcam") == sorted(set(methods) - {"gradcam"})
    rows = pd.DataFrame({"image": list("abcde") * 2, "method": ["gradcam"] * 5 + ["random"] * 5,
                         "insertion_auc": [0.5, 0.6, 0.7, 0.8, 0.9, 0.6, 0.3, 0.2, 0.79, 0.1]})
    # differences -0.1, 0.3, 0.5, 0.01, 0.8: the median is 0.3 (photo b); random wins on a only
    assert present.worked_example(rows) == ("b", pytest.approx(0.3), 1)


def test_the_report_opens_with_the_answer_and_skips_missing_parts(tmp_path) -> None:
    ans = write_report(toy_study(tmp_path), tmp_path)
    report = (tmp_path / "REPORT.md").read_text()
    assert report.index("## The answer") < report.index("![The confirmatory family](answer.png)") < \
        report.index("- **Claim: hybrid@0.7 has a higher insertion AUC than Grad-CAM") < report.index("## Leaderboard")
    assert ans.n == 12 and ans.alpha == 1.0 and len(ans.lines) == 4
    assert "Identical maps (up to float rounding), shown once: hybrid@val = gradcam; cam = gradcam." in report
    assert ("Part `sanity`: not computed yet; run `python -m helpers study --spec quick --stage test --parts sanity "
            f"--out {tmp_path.resolve()}`") in report
    for name in ("answer.png", "leaderboard.csv", "confirmatory_tests.csv", "paired_differences.png", "proportions.png",
                 "mean_curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    tests = pd.read_csv(tmp_path / "confirmatory_tests.csv")
    assert (tests.family == "confirmatory").sum() == 4
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{GLANCE_START}\nstale block\n{GLANCE_END}\n\nrest\n")
    assert update_readme(readme, ans)
    text = readme.read_text()
    assert "stale block" not in text and "## Results at a glance" in text and text.endswith("\n\nrest\n")
    assert ans.lines[0] in text and "(results/answer.png)" in text and "Test photos: 12 photos;" in text


def test_sanity_verdicts_come_from_the_numbers(tmp_path) -> None:
    rows = pd.DataFrame([{"step": s, "randomised": r, "method": m, "image": f"i{k}", "spearman": v + 0.01 * k}
                         for s, r in ((0, "none"), (1, "classifier"), (2, "stem"))
                         for m, v in (("gradcam", {0: 1.0, 1: -0.4, 2: 0.1}[s]),
                                      ("layercam", {0: 1.0, 1: 0.96, 2: 0.8}[s]))
                         for k in range(3)])
    study = toy_study(tmp_path, sanity=PartFile(rows, {}))
    lines = sections.sanity_lines(study)
    assert "n = 3 photos" in lines[0]
    assert any(line.startswith("- **gradcam: passes** - classifier randomised: -0.390") for line in lines)
    assert any(line.startswith("- **layercam: FAILS** - classifier randomised: 0.970") for line in lines)
    assert lines[-1].startswith("layercam stay(s) close to the trained map")
    assert not any("its maps are" in line for line in lines)          # no alpha recorded: no parent named
    fig = sections.sanity_figure(study)
    assert "n = 3 photos" in fig.axes[0].get_title()
    for alpha, parent in ((1.0, "Grad-CAM"), (0.0, "LayerCAM")):
        named = sections.sanity_lines(toy_study(tmp_path, sanity=PartFile(rows, {"alpha": alpha})))
        assert any(f"a = {alpha:g}: its maps are {parent}'s" in line for line in named)
    mixed = sections.sanity_lines(toy_study(tmp_path, sanity=PartFile(rows, {"alpha": 0.7})))
    assert not any("its maps are" in line for line in mixed)


def test_consistency_counts_come_from_the_composites_rows() -> None:
    loc = pd.DataFrame({"image": ["photo_a.png", "c1.png", "c2.png", "photo_b.png"], "method": ["gradcam"] * 4,
                        "kind": ["photo", "composite", "composite", "photo"],
                        "source": ["a", "a+bg1", "b+bg1", "b"], "label_idx": [1, 1, 2, 3],
                        "pointing_game": [1.0, 0.0, 1.0, np.nan]})
    first = sections.consistency_lines(loc)[0]
    assert first == ("- Composites: 4 test images = 2 object photos + 2 composites (object-background pairs: 2 "
                     "distinct pairs); the CIs resample the 2 object photos (the independent unit). Localisation "
                     "n = 3 of 4: photo_b.png (label 3) has no box of its label's class.")


def test_adaptive_section_shows_a_parent_once_when_the_val_a_is_a_parent(tmp_path, monkeypatch) -> None:
    from helpers.evaluation.adaptive import adaptive_comparison
    from helpers.study.adaptive import AdaptiveAnswer
    rng = np.random.default_rng(3)
    base = rng.uniform(0.4, 0.6, 20)
    scores = {"gradcam": base, "hybrid@0.7": base - 0.002, "hybrid@1 (val)": base,
              "oracle (upper bound)": base + 0.01, "hybrid@adaptive": base + rng.normal(0.001, 0.002, 20)}
    rows = pd.DataFrame([(i, m, float(v[i])) for m, v in scores.items() for i in range(20)],
                        columns=["image", "method", "insertion_auc"])
    table = adaptive_comparison(rows, best_fixed="hybrid@1 (val)")
    parts = {n: PartFile(rows, {}) for n in ("alpha_head", "features_val", "oracle", "features_test")}
    for alpha, kept in ((1.0, 3), (0.7, len(table))):
        answer = AdaptiveAnswer(alpha, rows, pd.Series(dtype=float), rows, table, pd.DataFrame(), "verdict")
        monkeypatch.setattr(sections.adaptive, "answer", lambda folder, answer=answer: answer)
        lines = sections.adaptive_lines(toy_study(tmp_path, **parts))
        body = [line for line in lines if line.startswith("| ") and not line.startswith("| pair")]
        assert len(body) == kept                                   # a = 1: the "(val)" rows repeat Grad-CAM's
        assert ("its comparisons are the gradcam rows" in lines[2]) == (alpha == 1.0)
        assert not any("0.0000 |" in line.split("|")[6] for line in body)   # p formatted for reading


def test_adaptive_files_hold_one_row_per_test_photo(tmp_path, monkeypatch) -> None:
    from helpers.evaluation.adaptive import ORACLE_ALPHA, ORACLE_INSERTION
    from helpers.study.adaptive import AdaptiveAnswer
    images = [f"p{i}" for i in range(4)]
    rows = pd.DataFrame([(img, m, 0.5 + 0.1 * i + (0.01 if m == "oracle (upper bound)" else 0.0))
                         for m in ("gradcam", "hybrid@0.7", "oracle (upper bound)", "hybrid@adaptive")
                         for i, img in enumerate(images)], columns=["image", "method", "insertion_auc"])
    bound = pd.DataFrame({"image": images, ORACLE_ALPHA: [0.0, 1.0, 1.0, 0.3],
                          ORACLE_INSERTION: [0.51, 0.61, 0.71, 0.81]})
    answer = AdaptiveAnswer(1.0, bound, pd.Series([1.0, 0.9, 1.0, 0.0], index=images), rows,
                            pd.DataFrame({"pair": ["x"]}), pd.DataFrame({"feature": ["f"]}), "verdict")
    calls = []
    monkeypatch.setattr(sections.adaptive, "answer", lambda folder: calls.append(folder) or answer)
    parts = {n: PartFile(rows, {}) for n in ("alpha_head", "features_val", "oracle", "features_test")}
    study = toy_study(tmp_path, **parts)
    paths = sections.write_adaptive(study, tmp_path / "out")
    assert sections.adaptive_answer(study) is answer and len(calls) == 1              # the answer computed once
    table = pd.read_csv(paths["adaptive_a"]).set_index("image")
    assert list(table.index) == images and table.loc["p3", "predicted_alpha"] == 0.0
    assert table.loc["p2", ORACLE_ALPHA] == 1.0 and table.loc["p1", "oracle (upper bound)"] == pytest.approx(0.61)
    assert paths["adaptive_best_a"].stat().st_size > 0 and pd.read_csv(paths["adaptive_a_tests"]).pair.tolist() == ["x"]
    assert sections.write_adaptive(toy_study(tmp_path), tmp_path / "none") == {}      # parts missing: no files


def test_the_time_claim_is_judged_on_the_benchmark_beside_the_study(tmp_path) -> None:
    from helpers.report.present import TIMING_NOTE, timing_note
    assert timing_note(tmp_path / "benchmark.csv") == TIMING_NOTE                      # no benchmark: not judged
    rows = [("forward only", 1, 30.0), ("gradcam", 1, 20.0), ("hybrid", 1, 21.0), ("gradcam", 16, 10.0),
            ("hybrid", 16, 11.5), ("peak RSS (MB)", None, None)]
    table = pd.DataFrame(rows, columns=["measure", "batch", "ms_per_image"]).assign(taken="today | a cpu")
    table.to_csv(tmp_path / "benchmark.csv", index=False)
    note = timing_note(tmp_path / "benchmark.csv")                                    # 21/20 = 1.05, 11.5/10 = 1.15
    assert note.startswith("DOES NOT HOLD") and "batch 1: hybrid 21.0 vs Grad-CAM 20.0" in note
    assert "ratio 1.15" in note and "today | a cpu" in note
    table.loc[4, "ms_per_image"] = 10.9
    table.to_csv(tmp_path / "benchmark.csv", index=False)
    assert timing_note(tmp_path / "benchmark.csv").startswith("HOLDS")


def test_every_layer_setting_is_ranked_against_the_heads_grad_cam(tmp_path) -> None:
    # The head's Grad-CAM comes from main; at "deep" the hybrid (a = 1) repeats Grad-CAM up to rounding.
    head = main_rows().query("method == 'gradcam'")
    layer_rows = []
    for layer, shift in (("deep", {"gradcam": -0.01, "layercam": -0.03, "hybrid": -0.01}),
                         ("fused", {"gradcam": -0.02, "layercam": -0.005, "hybrid": 0.02})):
        for method, s in shift.items():
            layer_rows += [{"image": r.image, "method": method, "layer": layer,
                            "insertion_auc": r.insertion_auc + s + (1e-4 if method == "hybrid" and i % 2 else 0)}
                           for i, r in enumerate(head.itertuples())]
    study = toy_study(tmp_path, layers=PartFile(pd.DataFrame(layer_rows), {}))
    lines = sections.layers_vs_head_lines(study)
    table = [line for line in lines if line.startswith("| ")][1:]                # below the header
    assert [row.split(" | ")[1] for row in table] == ["hybrid @ fused", "gradcam @ head", "layercam @ fused",
                                                     "gradcam @ deep", "gradcam @ fused", "layercam @ deep"]
    assert "+0.0200" in table[0] and "same maps: hybrid @ deep" in table[3]
    assert sections.layers_vs_head_lines(Study(tmp_path, QUICK, {"layers": study.parts["layers"]})) == []


def test_road_section_keeps_the_thesis_comparisons_on_every_photo_when_road_extra_is_partial(tmp_path) -> None:
    rng = np.random.default_rng(4)
    base = rng.uniform(0.1, 0.3, 12)
    shift = {"gradcam": 0.0, "layercam": -0.01, "hybrid@0.7": 0.005, "hybrid@val": 0.0, "random": -0.1,
             "cam": 0.001, "scorecam": 0.02}

    def rows(methods, n):
        return pd.DataFrame([{"image": f"p{i:02d}.JPEG", "method": m, "road_combined": base[i] + shift[m] + noise,
                              "road_morf": 0.3 - shift[m], "road_lerf": 0.5 + shift[m] + noise}
                             for m in methods for i in range(n) for noise in [rng.normal(0, 1e-3)]])
    road = PartFile(rows(["gradcam", "layercam", "hybrid@0.7", "hybrid@val", "random"], 12),
                    {"alpha": 1.0, "photos": list(range(12)), "part_photos": list(range(12))})
    extra = PartFile(rows(["cam", "scorecam"], 6), {"photos": list(range(6)), "part_photos": list(range(12))})
    lines = sections.road_lines(toy_study(tmp_path, road=road, road_extra=extra))
    text = "\n".join(lines)
    assert "12 photos for the thesis methods and the floors, 6 of 12 photos (a partial part" in text
    first = lines.index("**road_combined** (the thesis methods and floors)")
    assert all(f"| {m} | 12 |" in "\n".join(lines[first:first + 10]) for m in ("gradcam", "layercam", "random"))
    assert "Under ROAD, Grad-CAM is above the random floor" in text
    assert "**road_combined, every method** (on the 6 photos all of them share)" in text and "| scorecam | 6 |" in text
    morf = lines.index("**road_morf** (the thesis methods and floors)")
    assert lines[morf + 4].startswith("| 1 | hybrid@0.7 |")                 # MoRF: lower is better, ranked so
    assert "beats Grad-CAM on road_lerf" not in text
    gc_lerf = road.rows.loc[road.rows["method"] == "gradcam", "road_lerf"].to_numpy()
    road.rows.loc[road.rows["method"] == "random", "road_lerf"] = gc_lerf + np.tile([0.05, -0.045], 6)
    assert "beats Grad-CAM on road_lerf" not in "\n".join(       # above on average, but its CI straddles 0
        sections.road_lines(toy_study(tmp_path, road=road)))
    road.rows.loc[road.rows["method"] == "random", "road_lerf"] = 0.9     # random keeps the class under LeRF
    assert "The random floor beats Grad-CAM on road_lerf alone" in "\n".join(
        sections.road_lines(toy_study(tmp_path, road=road)))
    assert sections.road_lines(toy_study(tmp_path))[0].startswith("- Part `road`: not computed yet")


def test_sections_read_from_the_notebooks_link_into_the_results_folder() -> None:
    lines = ["![MoRF and LeRF curves](road_curves.png)", "Per photo: [adaptive_a.csv](adaptive_a.csv); "
             "[paper](https://arxiv.org/abs/2202.00449), [up](#the-answer), [abs](/tmp/x.png)."]
    assert sections.in_folder(lines) == ("![MoRF and LeRF curves](results/road_curves.png)\nPer photo: "
                                         "[adaptive_a.csv](results/adaptive_a.csv); [paper](https://arxiv.org/abs/"
                                         "2202.00449), [up](#the-answer), [abs](/tmp/x.png).")


def test_coverage_of_several_parts_is_said_once_where_they_agree(tmp_path) -> None:
    def part(n: int, of: int) -> PartFile:
        return PartFile(pd.DataFrame(), {"photos": list(range(n)), "part_photos": list(range(of))})

    study = Study(tmp_path, QUICK, {"lite1": part(12, 12), "lite2": part(12, 12), "road": part(6, 12)})
    assert sections.coverage_text(study, ["lite1", "lite2"]) == "12 photos each"
    assert sections.coverage_text(study, ["lite1"]) == "12 photos"
    assert sections.coverage_text(study, ["lite1", "road"]) == (
        "lite1: 12 photos; road: 6 of 12 photos (a partial part: shards still running)")


def test_architectures_compare_each_models_parents_on_its_own_photos(tmp_path) -> None:
    gc = np.array([0.5, 0.6, 0.4, 0.7, 0.3])
    shifts = {"gradcam": np.zeros(5), "hybrid@0.7": np.full(5, -0.01), "layercam": -np.array([0.02, 0.03, 0.02, 0.03,
                                                                                               0.02])}
    lite = pd.DataFrame([{"image": f"q{i}", "method": m, "model": "efficientnet_lite1", "insertion_auc": gc[i] + d[i],
                          "alpha": 0.7 if m == "hybrid@0.7" else np.nan}
                         for m, d in shifts.items() for i in range(5)])
    study = toy_study(tmp_path, lite1=PartFile(lite, {"photos": list(range(5)), "part_photos": list(range(5))}))
    tests = sections.architecture_tests(study)
    assert sections.architecture_tests(study) is tests                    # once per study: answer and figure share it
    assert list(tests["model"]) == ["efficientnet_lite0"] * 2 + ["efficientnet_lite1"] * 2
    assert list(tests["a"]) == ["hybrid@0.7 (lite0)", "LayerCAM (lite0)", "hybrid@0.7 (lite1)", "LayerCAM (lite1)"]
    assert set(tests["b"]) == {"Grad-CAM (lite0)", "Grad-CAM (lite1)"} and set(tests["test"]) == {"paired t-test"}
    assert list(tests["n"]) == [12, 12, 5, 5]
    assert tests["mean_diff"].iloc[2:].tolist() == pytest.approx([-0.01, -0.024])        # worked out by hand
    assert tests["mean_diff"].iloc[1] == pytest.approx(-0.02)                            # main_rows' LayerCAM shift
    fig = sections.architectures_figure(study, tmp_path / "arch.png")
    assert (tmp_path / "arch.png").is_file() and len(fig.axes[0].get_yticklabels()) == 4
    assert fig.axes[0].get_title().startswith(sections.ARCHITECTURES_TITLE)
    lines = sections.secondary_lines(study)["Across architectures (exploratory)"]
    assert lines[-1] == f"![{sections.ARCHITECTURES_TITLE}]({sections.ARCHITECTURES_FIGURE})"
    assert not any("architectures.png" in line for line in sections.secondary_lines(toy_study(tmp_path))[
        "Across architectures (exploratory)"])
    with pytest.raises(ValueError, match="none of the parts"):
        sections.architectures_figure(Study(tmp_path, QUICK, {}))
    # the answer says whether Lite0's direction (toy: the hybrid better) recurs: here it does not
    line = present.answer(study).lines[-1]
    assert line.startswith("- **Other models (exploratory):** hybrid@0.7 minus Grad-CAM, insertion AUC: "
                           "efficientnet_lite1 -0.0100 [95% CI")
    assert line.endswith("On efficientnet_lite0 the hybrid is better than Grad-CAM: the same on no other model; "
                         "not on efficientnet_lite1 (worse than Grad-CAM).")
    lite["insertion_auc"] += np.where(lite["method"] == "hybrid@0.7", 0.02 + 0.001 * np.arange(len(lite)), 0.0)
    again = toy_study(tmp_path, lite1=PartFile(lite, {"photos": list(range(5)), "part_photos": list(range(5))}))
    assert present.answer(again).lines[-1].endswith("better than Grad-CAM: the same on every other model.")
    assert not any("Other models" in line for line in present.answer(toy_study(tmp_path)).lines)
