"""The real-photo dataset: checksums, locating, download from file:// URLs (never the network), manifest."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers.config import IMAGENET_MANIFEST, IMAGENET_SAMPLE_ENV, ROOT
from helpers.data import imagenet as inet
from helpers.data.images import read_manifest

FAKE = {"n01440764_tench.JPEG": (200, 30, 30), "n01443537_goldfish.JPEG": (30, 200, 30),
        "n01484850_great_white_shark.JPEG": (30, 30, 200)}


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A tiny dataset folder: three JPEGs and their SHA256SUMS (sha256sum's format)."""
    src = tmp_path / "source"
    src.mkdir()
    for name, colour in FAKE.items():
        Image.new("RGB", (64, 48), colour).save(src / name, format="JPEG")
    lines = [f"{hashlib.sha256((src / n).read_bytes()).hexdigest()}  {n}" for n in sorted(FAKE)]
    (src / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return src, inet.read_checksums(src / "SHA256SUMS")


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IMAGENET_SAMPLE_ENV, raising=False)
    monkeypatch.delenv("XAI_DATA_CACHE", raising=False)


def test_read_checksums_parses_and_rejects(fake, tmp_path):
    src, sums = fake
    assert sorted(sums) == sorted(FAKE)
    assert sums["n01440764_tench.JPEG"] == hashlib.sha256((src / "n01440764_tench.JPEG").read_bytes()).hexdigest()
    bad = tmp_path / "bad.sha256"
    bad.write_text("abc  x.JPEG\n")
    with pytest.raises(ValueError, match="line 1"):
        inet.read_checksums(bad)


def test_packaged_registry_is_the_800_photos():
    sums = inet.read_checksums()
    assert len(sums) == 800 and all(len(d) == 64 for d in sums.values())
    # PROVENANCE: the folder keeps every class whose index i has i % 5 != 4
    index = inet.wnid_index()
    assert all(index[inet.parse_name(f)[0]] % 5 != 4 for f in sums)


def test_verify_names_the_bad_file(fake):
    src, sums = fake
    assert inet.verify(src, sums, progress=False) == src
    (src / "n01443537_goldfish.JPEG").write_bytes(b"changed")
    with pytest.raises(inet.ChecksumError, match="n01443537_goldfish.JPEG: sha256 .* differs"):
        inet.verify(src, sums, progress=False)
    (src / "n01440764_tench.JPEG").unlink()
    with pytest.raises(inet.ChecksumError, match=r"2 of 3 .*1 missing \(first: .*n01440764_tench.JPEG\)"):
        inet.verify(src, sums, progress=False)


def test_missing_photos_are_one_line_with_the_count_and_the_first(fake):
    src, sums = fake
    for name in sorted(FAKE)[:2]:
        (src / name).unlink()
    with pytest.raises(inet.ChecksumError) as err:
        inet.verify(src, sums, progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"2 of 3 photos in {src} fail verification"), message
    assert f"2 missing (first: {src / sorted(FAKE)[0]})" in message and "changed" not in message, message


def test_verify_hashes_once_until_a_file_changes(fake, monkeypatch):
    src, sums = fake
    hashed = []
    real = inet.pooch.file_hash
    monkeypatch.setattr(inet.pooch, "file_hash", lambda path, **kw: hashed.append(Path(path).name) or real(path, **kw))
    assert inet.verify(src, sums, progress=False) == src and sorted(hashed) == sorted(FAKE)
    assert inet.verify(src, sums, progress=False) == src and len(hashed) == 3       # unchanged: not read again
    (src / "n01443537_goldfish.JPEG").write_bytes(b"changed")
    with pytest.raises(inet.ChecksumError, match="goldfish"):                        # changed: hashed again, caught
        inet.verify(src, sums, progress=False)
    assert len(hashed) == 6


def test_configured_root_argument_env_default(monkeypatch, tmp_path):
    assert inet.configured_root() == ROOT.parent / "shared" / "data" / "imagenet-sample"
    monkeypatch.setenv(IMAGENET_SAMPLE_ENV, "elsewhere/photos")
    assert inet.configured_root() == ROOT / "elsewhere" / "photos"       # relative: from the repository root
    assert inet.configured_root(tmp_path) == tmp_path                      # the argument wins
    monkeypatch.setenv("XAI_DATA_CACHE", str(tmp_path / "c"))
    assert inet.download_dir() == tmp_path / "c" / "imagenet-sample"


def test_present_folder_is_verified_not_downloaded(fake, tmp_path):
    src, sums = fake
    cache = tmp_path / "cache"
    assert inet.locate(src, cache=cache, checksums=sums, base_url="file:///nowhere/", progress=False) == src
    assert not cache.exists()
    (src / "n01484850_great_white_shark.JPEG").write_bytes(b"x")
    with pytest.raises(inet.ChecksumError, match="great_white_shark"):
        inet.locate(src, cache=cache, checksums=sums, progress=False)


def test_download_from_file_urls_into_the_cache(fake, tmp_path):
    src, sums = fake
    cache = tmp_path / "cache"
    got = inet.locate(tmp_path / "absent", cache=cache, checksums=sums, base_url=src.as_uri() + "/", progress=False)
    assert got == cache / "imagenet-sample"
    assert all((got / n).read_bytes() == (src / n).read_bytes() for n in FAKE)
    assert not list(got.glob("*.part"))
    # complete and verified: nothing is fetched again (the source may be gone)
    for n in FAKE:
        (src / n).unlink()
    assert inet.locate(tmp_path / "absent", cache=cache, checksums=sums, base_url=src.as_uri() + "/",
                       progress=False) == got
    assert inet.locate(tmp_path / "absent", download_missing=False, cache=cache, checksums=sums, progress=False) == got


def test_download_checksum_mismatch_keeps_nothing(fake, tmp_path):
    src, sums = fake
    sums = dict(sums, **{"n01443537_goldfish.JPEG": "0" * 64})
    cache = tmp_path / "cache"
    with pytest.raises(inet.ChecksumError, match="n01443537_goldfish.JPEG: downloaded file's sha256"):
        inet.locate(tmp_path / "absent", cache=cache, checksums=sums, base_url=src.as_uri() + "/", progress=False)
    target = cache / "imagenet-sample"
    assert not (target / "n01443537_goldfish.JPEG").exists() and not list(target.glob("*.part"))


def test_offline_gives_one_clear_message_and_the_fallback(fake, tmp_path, capsys):
    _, sums = fake
    absent, cache = tmp_path / "absent", tmp_path / "cache"
    offline = (tmp_path / "no_server").as_uri() + "/"
    with pytest.raises(inet.DatasetUnavailable) as err:
        inet.locate(absent, cache=cache, checksums=sums, base_url=offline, progress=False)
    text = str(err.value)
    assert "3 of 3 files missing" in text and str(absent) in text and IMAGENET_SAMPLE_ENV in text
    assert "n01440764_tench.JPEG" in text and "packaged photos" in text
    dataset = inet.available_dataset(absent, cache=cache, checksums=sums, base_url=offline, progress=False)
    assert dataset == inet.PACKAGED
    assert capsys.readouterr().out.count("not available") == 1
    with pytest.raises(inet.DatasetUnavailable, match="downloads were not allowed"):
        inet.locate(absent, download_missing=False, cache=cache, checksums=sums, progress=False)
    assert inet.available_dataset(fake[0], checksums=sums, progress=False) == inet.IMAGENET


def test_parse_name():
    assert inet.parse_name("n01484850_great_white_shark.JPEG") == ("n01484850", "great white shark")
    with pytest.raises(ValueError, match="cat.jpg"):
        inet.parse_name("cat.jpg")


def test_label_table_indices_names_and_splits():
    from torchvision.models import ResNet50_Weights
    names = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    table = inet.label_table(inet.read_checksums(), names).set_index("file")
    assert table.loc["n01440764_tench.JPEG", "label_idx"] == 0
    assert table.loc["n01443537_goldfish.JPEG", "label_idx"] == 1
    assert table.loc["n01484850_great_white_shark.JPEG", "label_idx"] == 2
    assert (table["label_idx"] % 5 != 4).all() and table["label_idx"].is_unique
    assert table["split"].value_counts().to_dict() == {"test": 600, "val": 200}
    assert table.equals(inet.label_table(inet.read_checksums(), names).set_index("file"))  # seeded
    assert not table.equals(inet.label_table(inet.read_checksums(), names, seed=1).set_index("file"))
    wrong = list(names)
    wrong[1] = "carp"
    with pytest.raises(ValueError, match="n01443537_goldfish.JPEG: class 1 is 'carp'"):
        inet.label_table(inet.read_checksums(), wrong)


def test_accuracy_by_hand():
    df = pd.DataFrame({"label_idx": [3, 4, 5, 6],
                       "top5": [json.dumps([[3, "a", 0.9]]), json.dumps([[1, "b", 0.5], [4, "c", 0.4]]),
                                json.dumps([[7, "d", 0.6]]), json.dumps([[6, "e", 0.8]])]})
    assert inet.accuracy(df) == {"n": 4, "top1": 0.5, "top5": 0.75}


def test_committed_manifest_matches_registry_and_labels(lite0):
    df = read_manifest(IMAGENET_MANIFEST)
    sums = inet.read_checksums()
    assert len(df) == 800 and dict(zip(df["file"], df["sha256"], strict=True)) == sums
    labels = inet.label_table(sums, lite0.class_names)
    assert df[["file", "split", "label_idx", "label_name", "wnid"]].equals(labels[["file", "split", "label_idx",
                                                                                  "label_name", "wnid"]])
    assert (df["boxes"] == "[]").all() and all(len(json.loads(t)) == 5 for t in df["top5"])
    assert set(df["source"].str.split("/").str[-1]) == set(df["file"])  # one distinct source per photo
    acc = inet.accuracy(df)
    assert 0.75 < acc["top1"] <= acc["top5"] <= 1.0


def test_partial_manifest_is_never_written(lite0):
    with pytest.raises(ValueError, match="never written"):
        inet.build_imagenet_manifest(lite0, limit=2)


@pytest.mark.skipif(not inet.configured_root().is_dir(), reason="real photos not on this machine")
def test_real_photos_give_the_committed_top5_and_samples(lite0):
    part = inet.build_imagenet_manifest(lite0, out=None, limit=3, download_missing=False, progress=False)
    committed = read_manifest(IMAGENET_MANIFEST).head(3)
    # The committed top-5 was computed on another machine: the same classes in the same order, and
    # probabilities within 2e-4 (they are stored rounded to 4 digits; cross-machine noise is ~1e-7).
    for got, want in zip(part["top5"], committed["top5"], strict=True):
        got, want = json.loads(got), json.loads(want)
        assert [c for c, _, _ in got] == [c for c, _, _ in want]
        assert np.allclose([p for _, _, p in got], [p for _, _, p in want], rtol=0.0, atol=2e-4)
    samples = inet.load_imagenet_samples(lite0, "test", limit=2, download_missing=False, progress=False)
    test_files = committed.loc[committed["split"] == "test", "file"].tolist()
    first_test = read_manifest(IMAGENET_MANIFEST).query("split == 'test'")["file"].head(2).tolist()
    assert [s.file for s in samples] == first_test
    assert samples[0].file == test_files[0] and samples[0].boxes_crop == [] and samples[0].kind == "photo"
    assert samples[0].tensor.shape == (3, 224, 224) and samples[0].tensor.dtype == torch.float32
    name, same = inet.study_samples(lite0, "test", limit=2, download_missing=False, progress=False)
    assert name == inet.IMAGENET and [s.file for s in same] == [s.file for s in samples]


def test_load_samples_spread_keeps_evenly_spaced_rows(lite0):
    from helpers.config import MANIFEST
    from helpers.data.images import load_samples
    files = read_manifest(MANIFEST).query("split == 'test'")["file"].tolist()
    spread = load_samples(lite0, split="test", limit=3, spread=True)
    assert [s.file for s in spread] == [files[0], files[round((len(files) - 1) / 2)], files[-1]]
    assert [s.file for s in load_samples(lite0, split="test", limit=3)] == files[:3]
