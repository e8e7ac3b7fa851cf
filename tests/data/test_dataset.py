"""helpers.data.composites / photos / dataset / overview: exact boxes, seeded disjoint splits, byte-identical
rebuilds."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from helpers.cam.bundle import make_preprocess
from helpers.cam.zoo import imagenet_class_names
from helpers.config import INPUT_DIR, MANIFEST
from helpers.data.composites import CANVAS, MARGIN, Placed, compose, find_place, fit_in, half_windows, overlaps
from helpers.data.dataset import assign_splits, build_dataset
from helpers.data.images import load_samples, read_manifest, to_crop_box
from helpers.data.photos import PHOTOS, load_offline, model_sized, network_disabled
from helpers.teaching.overview import class_counts, contact_sheet, counts

WINDOW = (MARGIN, MARGIN, CANVAS - MARGIN, CANVAS - MARGIN)


def _inside(box, region) -> bool:
    return region[0] <= box[0] and region[1] <= box[1] and box[2] <= region[2] and box[3] <= region[3]


def test_find_place_stays_in_window_and_avoids_taken_boxes() -> None:
    rng = np.random.default_rng(0)
    taken = [(16.0, 16.0, 140.0, 240.0)]
    for _ in range(50):
        box = find_place(rng, (60, 90), taken)
        assert box is not None and _inside(box, WINDOW) and not overlaps(box, taken[0])
        assert (box[2] - box[0], box[3] - box[1]) == (60, 90)
    assert find_place(rng, (120, 120), taken) is None                    # cannot fit beside the taken box


def test_half_windows_pick_the_layout_that_keeps_objects_large() -> None:
    wide = half_windows([(200, 100), (200, 100)])                       # wide objects: stacked
    assert wide[0][2] - wide[0][0] == 224 and wide[0][3] - wide[0][1] == 112
    tall = half_windows([(50, 200), (50, 200)])                         # tall objects: side by side
    assert tall[0][2] - tall[0][0] == 112 and not overlaps(*tall)
    rng = np.random.default_rng(1)
    for region in tall:
        size, box = fit_in(rng, (50, 200), region)
        assert _inside(box, region) and (box[2] - box[0], box[3] - box[1]) == size


def test_compose_puts_the_object_exactly_in_its_box() -> None:
    bg = Image.new("RGB", (CANVAS, CANVAS), (0, 0, 0))
    obj = Image.new("RGB", (30, 40), (255, 0, 0))
    placed = Placed("x", 1, "one", (50.0, 60.0, 80.0, 100.0))
    arr = np.asarray(compose(bg, [(obj, placed)]))
    ys, xs = np.nonzero(arr[..., 0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (50, 60, 80, 100)
    # and in the model's 224 input the box is shifted by the margin
    assert to_crop_box(placed.box, (CANVAS, CANVAS)) == (50 - MARGIN, 60 - MARGIN, 80 - MARGIN, 100 - MARGIN)


def test_assign_splits_is_seeded_and_sized() -> None:
    ids = [p.id for p in PHOTOS]
    a, b = assign_splits(ids, 3, seed=0), assign_splits(ids, 3, seed=0)
    assert a == b and sorted(a) == sorted(ids) and sum(v == "val" for v in a.values()) == 3
    assert any(assign_splits(ids, 3, seed=s) != a for s in range(1, 5))


def test_network_disabled_blocks_downloads_and_restores() -> None:
    import socket
    with network_disabled():
        with pytest.raises(OSError, match="network disabled"):
            socket.create_connection(("127.0.0.1", 9), timeout=1)
    broken = (SimpleNamespace(id="needs_download", package="test",
                              loader=lambda: socket.create_connection(("10.0.0.1", 80))),)
    images, skipped = load_offline(broken)
    assert images == {} and "needs_download" in skipped[0] and "not available offline" in skipped[0]


def test_model_sized_photo_gives_the_identical_model_input() -> None:
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8))
    pre = make_preprocess((0.5,) * 3, (0.5,) * 3)
    assert min(model_sized(photo).size) == 256 and torch.equal(pre(model_sized(photo)), pre(photo))


class _Favouring(nn.Module):
    """A stand-in classifier whose top-5 is always the same five classes (fast build tests)."""

    def __init__(self, classes: list[int]) -> None:
        super().__init__()
        logits = torch.zeros(1000)
        logits[classes] = torch.arange(len(classes), 0, -1, dtype=torch.float32) + 10
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


@pytest.fixture(scope="module")
def fake_bundle() -> SimpleNamespace:
    return SimpleNamespace(model=_Favouring([281, 967, 812, 872, 665]).eval(), device=torch.device("cpu"),
                           preprocess=make_preprocess((0.5,) * 3, (0.5,) * 3), class_names=imagenet_class_names())


QUOTAS = {"val": (3, 1), "test": (4, 2)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, fake_bundle: SimpleNamespace) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("built")
    return folder, build_dataset(fake_bundle, folder, quotas=QUOTAS)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.*"))}


def test_rebuild_is_byte_identical(tmp_path: Path, fake_bundle: SimpleNamespace, built: tuple) -> None:
    build_dataset(fake_bundle, tmp_path, quotas=QUOTAS)
    assert _digest(tmp_path) == _digest(built[0]) and len(_digest(tmp_path)) > len(PHOTOS)


def test_build_is_disjoint_filtered_and_loadable(fake_bundle: SimpleNamespace, built: tuple) -> None:
    folder, first = built
    m = first.manifest
    assert (m.kind == "photo").sum() == len(PHOTOS)
    for split, (single, double) in QUOTAS.items():
        mine = m[(m.kind == "composite") & (m.split == split)]
        assert (mine.n_objects == 1).sum() <= single and (mine.n_objects == 2).sum() <= double
    # every kept composite has all its asserted classes in its (favoured) top-5; dropped ones say which class
    favoured = {281, 967, 812, 872, 665}
    comps = m[m.kind == "composite"]
    assert len(comps) > 0 and all(int(r.label_idx) in favoured for r in comps.itertuples())
    assert all("not in top-5" in d for d in first.dropped)
    # disjoint by source: no source id is used in both splits
    used = {s: set("+".join(m[m.split == s]["source"]).split("+")) - {"plain", "noise"} for s in ("val", "test")}
    assert used["val"].isdisjoint(used["test"])
    # sha256 column matches the files; the manifest feeds load_samples
    for r in m.itertuples():
        assert hashlib.sha256((folder / r.file).read_bytes()).hexdigest() == r.sha256
    samples = load_samples(fake_bundle, manifest=folder / "manifest.csv")
    assert len(samples) == len(m) and all(s.tensor.shape == (3, 224, 224) for s in samples)
    two = [s for s in samples if s.n_objects == 2]
    assert two and all("_2obj_" in s.file and len({c for c, _ in s.boxes_crop}) == 2 for s in two)
    assert {s.n_objects for s in samples} == {1, 2}


def test_counts_and_contact_sheet(tmp_path: Path, built: tuple) -> None:
    folder, report = built
    table = counts(report.manifest)
    assert table.loc["total", "total"] == len(report.manifest) and table.loc["total", "photo"] == len(PHOTOS)
    assert class_counts(report.manifest).to_numpy().sum() == sum(len(json.loads(b)) for b in report.manifest.boxes)
    out = contact_sheet(tmp_path / "sheet.png", folder / "manifest.csv", cols=4, thumb=60)
    assert Image.open(out).size == (4 * 60, ((len(report.manifest) + 3) // 4) * (60 + 28))


@pytest.mark.skipif(not MANIFEST.is_file(), reason="dataset not built yet")
def test_committed_dataset_is_consistent() -> None:
    m = read_manifest()
    assert (m.split == "test").sum() >= 60 and 15 <= (m.split == "val").sum() <= 35
    for r in m.itertuples():
        assert hashlib.sha256((INPUT_DIR / r.file).read_bytes()).hexdigest() == r.sha256, r.file
        for box in json.loads(r.boxes):
            x0, y0, x1, y1 = box["crop"]
            assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224, r.file
    photos = m[m.kind == "photo"].set_index("source")["split"].to_dict()
    for r in m[m.kind == "composite"].itertuples():
        assert {photos[s] for s in r.source.split("+") if s in photos} <= {r.split}, r.file


@pytest.mark.skipif(not MANIFEST.is_file(), reason="dataset not built yet")
def test_loaded_boxes_equal_the_manifests_crop_boxes() -> None:
    """Every box ``load_samples`` returns lies within a pixel of the manifest's own crop box: a packaged
    photo is stored smaller than the original its ``orig`` box is measured in (coffee: 600 x 400 stored
    as 384 x 256), so the box must be mapped through ``orig_size``, not the stored size."""
    m = read_manifest()
    samples = load_samples(SimpleNamespace(preprocess=lambda image: torch.zeros(3, 1, 1)))
    assert [s.file for s in samples] == m.file.tolist()
    for r, s in zip(m.itertuples(), samples, strict=True):
        want = [(int(b["class_idx"]), b["crop"]) for b in json.loads(r.boxes)]
        assert [c for c, _ in s.boxes_crop] == [c for c, _ in want], r.file      # no box dropped
        for (_, got), (_, crop) in zip(s.boxes_crop, want, strict=True):
            assert np.abs(np.subtract(got, crop)).max() <= 1.0, (r.file, got, crop)
    coffee = next(s for s in samples if s.file == "photo_coffee.png")
    assert coffee.crop_scale == pytest.approx(256 / 400)                      # 15 px of the original: 9.6 px


def test_preview_is_a_small_jpeg(tmp_path: Path) -> None:
    from helpers.teaching.overview import preview
    Image.new("RGB", (2000, 1000), "white").save(tmp_path / "big.png")
    shown = preview(tmp_path / "big.png", width=500)
    assert shown.format == "jpeg" and shown.data[:2] == b"\xff\xd8"


@pytest.mark.skipif(not MANIFEST.is_file(), reason="dataset not built yet")
def test_stored_images_reproduce_the_recorded_top5(lite0, tmp_path: Path) -> None:
    """The PNGs on disk give the model the inputs the build scored (photos are stored resized)."""
    from helpers.cam.inference import predict_topk
    m = read_manifest()
    rows = pd.concat([m[m.kind == "photo"].head(2), m[m.n_objects.astype(int) == 2].head(1)])
    rows.to_csv(tmp_path / "manifest.csv", index=False)
    for r in rows.itertuples():
        (tmp_path / r.file).write_bytes((INPUT_DIR / r.file).read_bytes())
    samples = load_samples(lite0, manifest=tmp_path / "manifest.csv")
    got = predict_topk(lite0, torch.stack([s.tensor for s in samples]))
    for r, top5 in zip(rows.itertuples(), got, strict=True):
        recorded = json.loads(r.top5)
        assert [i for i, _, _ in top5] == [i for i, _, _ in recorded], r.file
        assert np.allclose([p for _, _, p in top5], [p for _, _, p in recorded], atol=2e-4), r.file
