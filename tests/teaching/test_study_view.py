"""Notebook 4 and the explorer read a study folder: stale parts stop them, the explorer shows the predicted a."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from toy import GapLinear, toy_bundle

from helpers.evaluation.adaptive import FEATURES
from helpers.study.run import part_hash, part_photos
from helpers.study.spec import Part, StudySpec
from helpers.study.store import PartFile, write_part
from helpers.teaching.interactive import HybridExplorer
from helpers.teaching.study_view import StalePartError, StudyAlphaPredictor, fresh_part, layer_choices, sweep_rows

ALPHAS = (0.0, 0.5, 1.0)
SWEEP = (("settings", ("target",)), ("alphas", ALPHAS), ("additive", ()), ("with_max", False),
         ("modes", ("insertion", "deletion")))


@pytest.fixture()
def toy():
    torch.manual_seed(0)
    return toy_bundle(GapLinear(torch.randn(6, 3))), torch.rand(3, 8, 8)


def spec_for(bundle) -> StudySpec:
    return StudySpec("toy", (Part("alpha_head", "alpha_sweep", "val", bundle.name, n=2, options=SWEEP),
                             Part("features_val", "features", "val", bundle.name, n=2)))


def part_file(name: str, rows: pd.DataFrame, h: str = "0" * 16, shard=(1, 1), dataset: str | None = None) -> PartFile:
    photos = sorted(set(rows["image"]))
    return PartFile(rows.assign(part=name, hash=h), {"part": name, "stage": "val", "hash": h, "shard": list(shard),
                                                     "photos": photos, "part_photos": photos, "dataset": dataset})


def sweep_part(insertion: dict[str, dict[float, float]], layer: str) -> pd.DataFrame:
    return pd.DataFrame([{"image": img, "fusion": "geometric", "alpha": a, "insertion_auc": v, "deletion_auc": 0.1,
                          "layer": layer, "method": "hybrid"}
                         for img, by_a in insertion.items() for a, v in by_a.items()])


def test_fresh_part_takes_the_codes_hash_and_names_a_stale_part(toy, tmp_path) -> None:
    bundle, _ = toy
    spec = spec_for(bundle)
    part = spec.part("alpha_head")
    assert fresh_part(tmp_path, spec, "alpha_head", bundle) is None   # not computed yet
    rows = sweep_part({"a.jpg": {0.0: 0.4, 0.5: 0.5, 1.0: 0.6}}, "features")
    photos = part_photos(part, spec)
    good = part_hash(spec, part, bundle, photos, None)
    write_part(tmp_path, part_file("alpha_head", rows, good, dataset=photos.dataset))
    assert fresh_part(tmp_path, spec, "alpha_head", bundle).facts["hash"] == good
    write_part(tmp_path, part_file("alpha_head", rows, "f" * 16, dataset="elsewhere"))
    with pytest.warns(UserWarning, match="not checked against the code: computed on elsewhere"):
        fresh_part(tmp_path, spec, "alpha_head", bundle)                # its photos are not here: a warning
    write_part(tmp_path, part_file("alpha_head", rows, "f" * 16, dataset=photos.dataset))
    stale = r"part 'alpha_head': committed hash f+, the code gives .*--stage val --parts alpha_head"
    with pytest.raises(StalePartError, match=stale):
        fresh_part(tmp_path, spec, "alpha_head", bundle)
    # another model's weights give another hash: the committed part is stale for them
    other = dataclasses.replace(bundle, model=GapLinear(torch.randn(6, 3)).eval())
    write_part(tmp_path, part_file("alpha_head", rows, good, dataset=photos.dataset))
    with pytest.raises(StalePartError, match="alpha_head"):
        fresh_part(tmp_path, spec, "alpha_head", other)
    write_part(tmp_path, part_file("alpha_head", rows, good, shard=(1, 2)))
    with pytest.raises(StalePartError, match=r"shard \[1, 2\]"):
        fresh_part(tmp_path, spec, "alpha_head", bundle)


def test_sweep_rows_are_the_alpha_modules_table_of_one_setting() -> None:
    rows = pd.concat([sweep_part({"a.jpg": {0.0: 0.4, 1.0: 0.6}}, "head"), sweep_part({"a.jpg": {0.0: 0.9}}, "x")])
    table = sweep_rows(rows)
    assert list(table.columns) == ["image", "fusion", "alpha", "insertion", "deletion"]
    assert table["insertion"].tolist() == [0.4, 0.6]
    assert sweep_rows(rows, "x")["insertion"].tolist() == [0.9]
    with pytest.raises(ValueError, match="no layer setting 'y'"):
        sweep_rows(rows, "y")


def write_val(folder, bundle, threshold: float) -> None:
    """60 val photos whose best a is 0 when top1_prob > threshold and 1 otherwise (other features: noise)."""
    rng = np.random.default_rng(0)
    images = [f"val_{i:02d}.jpg" for i in range(60)]
    features = pd.DataFrame(rng.normal(size=(60, len(FEATURES))), columns=list(FEATURES))
    features["top1_prob"] = threshold + np.linspace(-0.3, 0.3, 60)
    sign = np.where(features["top1_prob"] > threshold, 1.0, -1.0)
    insertion = {img: {a: 0.5 + 0.1 * s * (1 - a) for a in ALPHAS} for img, s in zip(images, sign, strict=True)}
    write_part(folder, part_file("alpha_head", sweep_part(insertion, bundle.target_layer)))
    write_part(folder, part_file("features_val", features.assign(image=images, layer=bundle.target_layer)))


def test_the_explorer_shows_the_predicted_a_of_the_photo(toy, tmp_path) -> None:
    bundle, image = toy
    p = float(bundle.model(image[None]).detach().softmax(dim=1).max())   # the photo's top1_prob feature
    for threshold, expected in ((p - 0.2, 0.0), (p + 0.2, 1.0)):
        folder = tmp_path / f"t{threshold:.2f}"
        write_val(folder, bundle, threshold)
        predictor = StudyAlphaPredictor(folder, spec_for(bundle))
        assert predictor.n_val == 60 and predictor.layer == bundle.target_layer
        explorer = HybridExplorer(bundle, image, predict_alpha=predictor)
        assert explorer.predicted.value == f"predicted a = <b>{expected:.2f}</b>"
        assert explorer.predicted.layout.display is None


def test_without_the_val_files_the_explorer_says_why(toy, tmp_path) -> None:
    bundle, image = toy
    write_val(tmp_path, bundle, 0.5)
    (tmp_path / "features_val.parquet").unlink()
    explorer = HybridExplorer(bundle, image, predict_alpha=StudyAlphaPredictor(tmp_path, spec_for(bundle)))
    text = explorer.predicted.value
    assert "no predicted a" in text and "features_val" in text and "--parts features_val" in text
    assert "predicted a = " not in text and explorer.predicted.layout.display is None


def test_layer_choices_say_where_the_hybrid_is_a_parent() -> None:
    def table(best: float) -> pd.DataFrame:   # two photos whose insertion peaks at ``best``
        return pd.DataFrame([{"image": img, "fusion": "geometric", "alpha": a, "insertion": 0.5 - abs(a - best),
                              "deletion": 0.1} for img in ("p1", "p2") for a in ALPHAS])

    chosen = layer_choices({"head": table(1.0), "stages.4": table(0.0), "stages.5": table(0.5)})
    assert chosen["alpha"].to_dict() == {"head": 1.0, "stages.4": 0.0, "stages.5": 0.5}
    assert chosen["equals"].to_dict() == {"head": "Grad-CAM", "stages.4": "LayerCAM", "stages.5": ""}
    assert (chosen["n_images"] == 2).all() and chosen.loc["stages.5", "insertion_mean"] == 0.5
