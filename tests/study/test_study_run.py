"""The study runner: one process, staged shards with merges, and Dask give identical rows; merge refuses bad shards."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from helpers.config import ROOT
from helpers.study import store
from helpers.study.merge import merge
from helpers.study.run import code_commit, run_stage, run_study, shard_batches
from helpers.study.spec import FULL, QUICK, Part, StudySpec, load_spec

SWEEP = (("alphas", (0.0, 0.7, 1.0)), ("additive", ()), ("with_max", False), ("modes", ("insertion", "deletion")))
#: Every kind of part, as small as it gets (3-step curves, 1-3 photos).
TINY = StudySpec("tiny", (
    Part("alpha_head", "alpha_sweep", "val", n=3, batch=2, options=(("settings", ("head",)), *SWEEP)),
    Part("alpha_layers", "alpha_sweep", "val", n=3, batch=2, options=(("settings", ("stages.5",)), *SWEEP)),
    Part("main", "evaluate", "test", n=3, batch=1, alpha_from="alpha_head", options=(("methods", (
        ("gradcam", "gradcam", ()), ("hybrid@val", "hybrid", (("alpha", "val"),)), ("random", "random", ()))),)),
    Part("layers", "layers", "test", n=2, batch=1, alpha_from="alpha_layers", options=(("settings", ("stages.5",)),)),
    Part("lite0", "model", "test", n=2, batch=1, alpha_from="alpha_head"),
    Part("sanity", "sanity", "test", n=1, batch=1, alpha_from="alpha_head",
         options=(("methods", ("gradcam",)), ("steps", 2))),
    Part("features_val", "features", "val", n=3, batch=2),
    Part("oracle", "alpha_sweep", "test", n=3, batch=2, options=(("settings", ("head",)), *SWEEP[:3],
                                                                  ("modes", ("insertion",)))),
    Part("features_test", "features", "test", n=3, batch=2),
    Part("road", "road", "test", n=1, batch=1, alpha_from="alpha_head", options=(("methods", (
        ("gradcam", "gradcam", ()), ("random", "random", ()))),)),
), rise_steps=3, thesis_steps=3)


def rows(folder) -> dict[str, pd.DataFrame]:
    return {name: p.rows for name, p in store.read_folder(folder).items()}


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread, as each Dask worker has: float sums then run in the same order everywhere
    (across thread counts rows agree within the verification's tolerances, not bit for bit)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def single(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("single")
    run_study(TINY, out, cache=None, progress=False)
    return out


def test_single_run_writes_every_part_with_its_facts(single):
    parts = store.read_folder(single)
    assert sorted(parts) == sorted(p.name for p in TINY.parts)
    for name, part in parts.items():
        assert part.complete and len(part.facts["hash"]) == 16
        assert {"image", "model", "layer", "method", "class_idx", "pred_idx", "part", "hash"} <= set(part.rows.columns)
        assert set(part.rows["image"]) == set(part.facts["part_photos"]), name
    main = parts["main"].rows
    assert len(main) == 3 * 3 and main["insertion_auc"].between(0, 1).all()
    assert len(main.loc[0, "insertion_curve"]) == TINY.rise_steps + 1
    # hybrid@val uses the alpha chosen on ALL val photos (recorded, and the same as the sweep's choice)
    assert parts["main"].facts["alpha"] in (0.0, 0.7, 1.0)
    prov = json.loads((single / "PROVENANCE.json").read_text())
    assert set(prov["parts"]) == set(parts)
    shard = prov["parts"]["main"]["shards"][0]
    assert shard["machine"]["cpu"] and shard["packages"]["torch"] and shard["wall_s"] >= 0
    assert prov["parts"]["main"]["hash"] == parts["main"].facts["hash"]


def test_staged_shards_and_merges_equal_one_process(single, tmp_path):
    merged = tmp_path / "merged"
    for k in (1, 2):
        run_stage(TINY, "val", tmp_path / f"val{k}", (k, 2), cache=None, progress=False)
    merge([tmp_path / "val1", tmp_path / "val2"], merged)
    for k in (1, 2):
        run_stage(TINY, "test", tmp_path / f"test{k}", (k, 2), alpha_from=merged, cache=None, progress=False)
    merge([merged, tmp_path / "test1", tmp_path / "test2"], merged)
    a, b = rows(single), rows(merged)
    assert sorted(a) == sorted(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


def test_dask_local_cluster_equals_one_process(single, tmp_path):
    pytest.importorskip("dask.distributed")
    from helpers.study.distributed import run_dask
    out = run_dask(TINY, tmp_path / "dask", "local:2", cache=None)
    a, b = rows(single), rows(out)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)
    assert not (out / ".shards").exists()


def test_merge_refuses_mixed_hashes_overlaps_and_gaps(tmp_path):
    spec = StudySpec("two", (TINY.part("alpha_head"),), rise_steps=2)
    for k in (1, 2):
        run_stage(spec, "val", tmp_path / f"s{k}", (k, 2), cache=None, progress=False)
    with pytest.raises(store.StudyFileError, match="covered by no shard"):
        merge([tmp_path / "s1"], tmp_path / "out")
    with pytest.raises(store.StudyFileError, match="both cover"):
        merge([tmp_path / "s1", tmp_path / "s1"], tmp_path / "out")
    other = StudySpec("two", (TINY.part("alpha_head"),), rise_steps=3)  # another protocol: another hash
    run_stage(other, "val", tmp_path / "o2", (2, 2), cache=None, progress=False)
    with pytest.raises(store.StudyFileError, match=r"o2 has hash"):
        merge([tmp_path / "s1", tmp_path / "o2"], tmp_path / "out")
    assert not (tmp_path / "out").exists()   # nothing written when a part is refused
    names = merge([tmp_path / "s1", tmp_path / "s2"], tmp_path / "out")
    assert names == ["alpha_head"] and store.read_part(tmp_path / "out" / "alpha_head.parquet").complete


def test_test_stage_needs_the_merged_val_stage(tmp_path):
    spec = StudySpec("t", (TINY.part("alpha_head"), TINY.part("lite0")), rise_steps=2)
    with pytest.raises(store.StudyFileError, match="alpha_head.parquet is missing"):
        run_stage(spec, "test", tmp_path, cache=None, progress=False)
    run_stage(spec, "val", tmp_path / "v", (1, 2), cache=None, progress=False)
    with pytest.raises(store.StudyFileError, match="merge all its shards"):
        run_stage(spec, "test", tmp_path, alpha_from=tmp_path / "v", cache=None, progress=False)


@pytest.mark.parametrize("n_photos,batch,n", [(10, 4, 2), (600, 4, 8), (3, 1, 2), (5, 2, 4), (1, 4, 3)])
def test_shards_are_contiguous_batch_aligned_and_cover_everything(n_photos, batch, n):
    shards = [shard_batches(n_photos, batch, k, n) for k in range(1, n + 1)]
    flat = [i for s in shards for b in s for i in b]
    assert flat == list(range(n_photos))
    assert all(b.start % batch == 0 for s in shards for b in s)


def test_broken_and_foreign_files_are_refused_by_name(tmp_path):
    (tmp_path / "main.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(store.StudyFileError, match="main.parquet: not a readable study part"):
        store.read_part(tmp_path / "main.parquet")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(store.StudyFileError, match="without the study's facts"):
        store.read_part(tmp_path / "x.parquet")


def test_definitions_and_toml(tmp_path):
    assert [p.name for p in FULL.stage("val")] == ["alpha_head", "alpha_layers", "alpha_lite1", "alpha_lite2",
                                                   "features_val"]
    assert FULL.part("oracle").opts["modes"] == ("insertion",) and FULL.part("oracle").stage == "test"
    assert FULL.part("main").n is None and FULL.part("sanity").n == 50 and QUICK.part("main").n == 3
    assert FULL.part("road").n is None and FULL.part("road_extra").n is None and QUICK.part("road_extra").n == 2
    assert {m[0] for m in FULL.part("road").opts["methods"] + FULL.part("road_extra").opts["methods"]} == \
        {m[0] for m in FULL.part("main").opts["methods"]}
    assert {dataclasses.replace(p, n=None, batch=4) for p in QUICK.parts} == \
        {dataclasses.replace(p, n=None, batch=4) for p in FULL.parts}          # quick = the full design, smaller
    toml = tmp_path / "mine.toml"
    toml.write_text('rise_steps = 5\n[[parts]]\nname = "a"\nkind = "alpha_sweep"\nstage = "val"\nn = 2\n'
                    '[parts.options]\nsettings = ["head"]\nalphas = [0.0, 1.0]\n')
    spec = load_spec(toml)
    assert spec.rise_steps == 5 and spec.part("a").opts["alphas"] == (0.0, 1.0)
    toml.write_text('rise_step = 5\n')
    with pytest.raises(ValueError, match="unknown key"):
        load_spec(toml)
    with pytest.raises(ValueError, match="alpha_from"):
        StudySpec("bad", (Part("m", "model", "test", alpha_from="nope"),))


def test_command_line_merge_refusal_is_one_line(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "main.parquet").write_bytes(b"not parquet")
    done = subprocess.run([sys.executable, "-m", "helpers", "study", "merge", str(tmp_path / "s"), "--out",
                           str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "main.parquet: not a readable study part" in done.stderr


def test_adaptive_answer_from_the_study_files(single):
    from helpers.evaluation.adaptive import ADAPTIVE, FEATURES, ORACLE, ORACLE_INSERTION
    from helpers.study.adaptive import answer
    parts = store.read_folder(single)
    assert parts["oracle"].rows["deletion_auc"].isna().all()          # insertion only
    assert not parts["features_test"].rows[list(FEATURES)].isna().any().any()
    result = answer(single)
    sweep = parts["oracle"].rows.set_index(["image", "alpha"])["insertion_auc"]
    rows = result.test_rows.set_index(["image", "method"])["insertion_auc"]
    for image, a in result.predicted.items():
        assert a in (0.0, 0.7, 1.0)
        assert rows[(image, ADAPTIVE)] == sweep[(image, a)]            # read from the sweep, no new forward
        assert rows[(image, ORACLE)] == max(sweep[(image, b)] for b in (0.0, 0.7, 1.0))
        assert rows[(image, "gradcam")] == sweep[(image, 1.0)]
    assert (result.upper_bound[ORACLE_INSERTION].to_numpy() >= rows.xs("gradcam", level="method").to_numpy()).all()
    assert set(result.predicted.index) == set(parts["oracle"].facts["part_photos"])
    assert "upper bound" in result.verdict.lower() or "Upper bound" in result.verdict


def test_road_rows_score_the_evaluate_parts_maps(single):
    from helpers.cam.maps import normalise
    from helpers.cam.models import load_model
    from helpers.evaluation.road import road_scores
    from helpers.evaluation.runner import explain_rows, image_seed
    from helpers.study.parts import main_specs
    from helpers.study.run import part_photos
    road = store.read_part(single / "road.parquet")
    part = TINY.part("road")
    bundle = load_model("efficientnet_lite0")
    sample = part_photos(part, TINY).load(bundle, road.facts["photos"])[0]
    specs = main_specs(part, road.facts["alpha"])
    cls = int(road.rows["class_idx"].iloc[0])
    xs, idx = sample.tensor[None].expand(2, -1, -1, -1), torch.tensor([cls, cls])
    maps = normalise(explain_rows(bundle, xs, idx, specs, image_seed(sample.file), {}), "max")
    expected = road_scores(bundle, xs, maps, idx, tie_seed=image_seed(sample.file))
    rows = road.rows.set_index("method")
    for i, s in enumerate(specs):
        assert rows.loc[s.label, "road_combined"] == pytest.approx(float(expected["road_combined"][i]), abs=1e-6)
        assert rows.loc[s.label, "road_morf"] == pytest.approx(
            float(expected["road_morf"][i]), abs=1e-6) and 0 <= rows.loc[s.label, "road_lerf"] <= 1


def test_command_line_bad_options_are_one_line_before_any_work(tmp_path):
    for argv, message in ((["--spec", "quick", "--stage", "val", "--shard", "0/2"], "need 1 <= K <= N"),
                          (["--spec", "nope.toml"], "no such study definition"),
                          (["--spec", "quick", "--shard", "1/2"], "--shard needs --stage")):
        done = subprocess.run([sys.executable, "-m", "helpers", "study", *argv, "--out", str(tmp_path / "o")],
                              cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 2, argv
        assert message in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
        assert not (tmp_path / "o").exists()


def test_machine_record_names_the_cpu_and_its_speed_flags(tmp_path):
    from helpers.study.run import machine
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx2 fma\n")
    record = machine(info)
    assert record["cpu"] == "AMD EPYC 7B13" and record["cpu_flags"] == "avx2"
    info.write_text("model name\t: Intel Xeon\nflags\t: avx2 avx512f avx512_bf16 amx_tile\n")
    assert machine(info)["cpu_flags"] == "avx512f avx512_bf16 amx_tile avx2"


def test_verify_recomputes_a_sample_and_catches_a_changed_row(single, tmp_path):
    import shutil

    from helpers.study.verify import verify
    report = verify(TINY, single, n_test=2, n_val=2, parts=("main", "alpha_head"))
    assert report["passed"].all() and (report["unmatched"] == 0).all()
    assert report.set_index("part").loc["main", "rows"] == 2 * 3        # 2 photos x 3 methods
    tampered = tmp_path / "t"
    shutil.copytree(single, tampered)
    part = store.read_part(tampered / "main.parquet")
    part.rows.loc[:, "insertion_auc"] += 0.05                            # every committed AUC off by 0.05
    store.write_part(tampered, part)
    bad = verify(TINY, tampered, n_test=2, n_val=2, parts=("main",))
    assert not bad["passed"].any() and bad["max_abs_diff"].iloc[0] == pytest.approx(0.05, abs=1e-6)
    part.facts["hash"] = "0" * 16
    store.write_part(tampered, part)
    with pytest.raises(store.StudyFileError, match="stale"):
        verify(TINY, tampered, n_test=2, n_val=2, parts=("main",))


def test_commit_is_dirty_for_changed_code_not_for_changed_outputs(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    for name in ("code.py", "results/part.parquet", "nb.ipynb"):
        (tmp_path / name).write_text("v1")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "results/part.parquet").write_text("v2")
    (tmp_path / "nb.ipynb").write_text("v2")
    (tmp_path / "untracked.py").write_text("new")
    assert code_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("v2")
    assert code_commit(tmp_path) == head + "+dirty"
    assert code_commit(tmp_path / "results" / "missing") == "unknown"
