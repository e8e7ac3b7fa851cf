"""Reading the study back: stale parts stop with the re-run command, missing parts are skipped with it."""
from __future__ import annotations

import pandas as pd
import pytest

from helpers.study import results as R
from helpers.study.run import dataset_source
from helpers.study.spec import Part, StudySpec
from helpers.study.store import PartFile, StudyFileError, read_part, write_part

#: One val sweep on one photo: the smallest part whose hash the code recomputes for real.
ONE = StudySpec("one", (Part("alpha_head", "alpha_sweep", "val", n=1, batch=1, options=(
    ("settings", ("head",)), ("alphas", (0.0, 1.0)), ("additive", ()), ("with_max", False),
    ("modes", ("insertion",)))),), rise_steps=2, thesis_steps=2)


def fake_part(folder, name: str, hash_: str, dataset: str | None = None) -> None:
    """A part file with the given hash, computed (by default) on the photos this machine has."""
    rows = pd.DataFrame({"part": [name], "hash": [hash_], "image": ["a.JPEG"], "insertion_auc": [0.5]})
    facts = {"part": name, "stage": "val", "hash": hash_, "shard": [1, 1], "photos": ["a.JPEG"],
             "part_photos": ["a.JPEG"], "dataset": dataset or dataset_source()[0], "study": "one", "alpha": None}
    write_part(folder, PartFile(rows, facts))


def test_a_part_with_a_wrong_hash_is_stale_and_names_the_command(tmp_path) -> None:
    fake_part(tmp_path, "alpha_head", "0000000000000000")
    with pytest.raises(R.StalePartError) as err:
        R.load_study(tmp_path, ONE)
    text = str(err.value)
    assert "part 'alpha_head': committed hash 0000000000000000, the code gives" in text
    assert f"python -m helpers study --spec one --stage val --parts alpha_head --out {tmp_path.resolve()}" in text


def test_a_part_with_the_codes_hash_loads(tmp_path) -> None:
    dataset, now = R.expected_hash(ONE, "alpha_head", tmp_path, R.Bundles())
    fake_part(tmp_path, "alpha_head", now, dataset)
    study = R.load_study(tmp_path, ONE)
    assert study.has("alpha_head") and study.unverified == {} and study.coverage("alpha_head") == "1 photos"
    assert read_part(tmp_path / "alpha_head.parquet").facts["hash"] == now


def test_missing_and_unverifiable_parts(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(R, "expected_hash", lambda spec, name, folder, bundles, dataset=None: ("packaged", "abc"))
    fake_part(tmp_path, "alpha_head", "def", dataset="imagenet-sample")
    spec = StudySpec("one", (*ONE.parts, Part("main", "evaluate", "test", n=1, alpha_from="alpha_head")))
    study = R.load_study(tmp_path, spec)
    assert "not on this machine" in study.unverified["alpha_head"]      # other photos here: shown, not checked
    assert not study.has("main")
    assert study.missing("main") == (f"Part `main`: not computed yet; run `python -m helpers study --spec one "
                                     f"--stage test --parts main --out {tmp_path.resolve()}`.")
    with pytest.raises(StudyFileError, match="not computed yet"):
        study.rows("main")
    with pytest.raises(StudyFileError, match="no such study folder"):
        R.load_study(tmp_path / "absent", spec)


def test_the_command_names_the_folder_as_a_reader_types_it() -> None:
    assert R.shown_folder(R.STUDY_DIR) == "results/study"
    assert R.rerun_command(ONE, "alpha_head", R.STUDY_DIR).endswith("--parts alpha_head --out results/study")


def test_a_part_still_in_shards_is_joined_in_photo_order(tmp_path) -> None:
    every = ["a.JPEG", "b.JPEG", "c.JPEG", "d.JPEG"]

    def shard(k: int, photos: list[str], hash_: str = "h") -> None:
        rows = pd.DataFrame({"part": "main", "hash": hash_, "image": photos, "insertion_auc": [0.5] * len(photos)})
        write_part(tmp_path / "shards" / f"main-{k}-of-3", PartFile(rows, {
            "part": "main", "stage": "test", "hash": hash_, "shard": [k, 3], "photos": photos, "part_photos": every}))
    shard(3, ["d.JPEG"])
    shard(1, ["a.JPEG", "b.JPEG"])
    joined = R.join_shards(tmp_path, "main")
    assert list(joined.rows.image) == ["a.JPEG", "b.JPEG", "d.JPEG"]
    assert joined.facts["photos"] == list(joined.rows.image)
    assert R.join_shards(tmp_path, "road") is None
    study = R.Study(tmp_path, ONE, {"main": joined})
    assert study.coverage("main") == "3 of 4 photos (a partial part: shards still running)"
    shard(2, ["b.JPEG", "c.JPEG"])
    with pytest.raises(StudyFileError, match="cover the same photos"):
        R.join_shards(tmp_path, "main")
    shard(2, ["c.JPEG"], hash_="other")
    with pytest.raises(StudyFileError, match="different hashes"):
        R.join_shards(tmp_path, "main")


def test_the_model_identity_cache_makes_its_folder_and_is_read_back(lite0, tmp_path, monkeypatch):
    from helpers.study import results
    from helpers.study.run import Bundles, model_identity
    cache = tmp_path / "not" / "yet" / "models.json"
    held = Bundles.holding(lite0)
    monkeypatch.setattr(held, "name", "other")        # not the held model: the identity comes from a load
    monkeypatch.setattr(held, "get", lambda name: lite0)
    first = results.known_identity("efficientnet_lite0", held, cache)
    assert cache.is_file() and first == model_identity(lite0)
    monkeypatch.setattr(held, "get", lambda name: pytest.fail("loaded although cached"))
    assert results.known_identity("efficientnet_lite0", held, cache) == first
