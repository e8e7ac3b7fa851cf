"""helpers.data: the one image reader, box geometry, the manifest and user folders."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.cam.bundle import make_preprocess
from helpers.data.folders import import_folder
from helpers.data.images import (
    ImageLoadError,
    crop_geometry,
    load_image,
    load_images,
    load_samples,
    parse_boxes,
    read_manifest,
    to_crop_box,
    write_manifest,
)


def _rgb(w: int = 48, h: int = 40, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h pixels, with a token data chunk (a decompression bomb's shape)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- load_image: conversions

def test_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    im = _rgb()
    im.save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), np.asarray(im))


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(40 * 50, dtype=np.uint32).reshape(40, 50) % 256
    Image.fromarray(gray.astype(np.uint8), mode="L").save(tmp_path / "g.png")
    out = np.asarray(load_image(tmp_path / "g.png"))
    assert out.shape == (40, 50, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], gray)


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 0] = 200                       # red-ish everywhere
    rgba[:, :16, 3] = 0                      # left half fully transparent -> white
    rgba[:, 16:, 3] = 255                    # right half opaque -> the colour
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png"))
    assert (out[:, :16] == 255).all()
    assert (out[:, 16:] == (200, 0, 0)).all()


def test_palette_with_transparency_uses_white(tmp_path: Path) -> None:
    im = Image.new("P", (32, 32), 0)
    im.putpalette([0, 0, 255, 10, 20, 30] + [0] * 762)
    im.paste(1, (0, 0, 32, 16))              # top half: index 1 (10, 20, 30); bottom: index 0 (transparent)
    im.save(tmp_path / "p.png", transparency=0)
    out = np.asarray(load_image(tmp_path / "p.png"))
    assert (out[:16] == (10, 20, 30)).all() and (out[16:] == 255).all()


def test_16bit_grayscale_scaled_to_8bit(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 65535, 257 * 37 + 100]], dtype=np.uint16).repeat(32, 0).repeat(8, 1)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = np.asarray(load_image(tmp_path / "g16.png"))
    assert out[0, ::8, 0].tolist() == [0, 100, 255, 37]
    assert (out[..., 0] == out[..., 2]).all()


def test_16bit_rgb_reduced_to_8bit(tmp_path: Path) -> None:
    rgb16 = np.zeros((32, 32, 3), dtype=np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 257 * 128, 0
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])          # OpenCV writes BGR
    out = np.asarray(load_image(tmp_path / "c16.png")).astype(int)
    assert out.shape == (32, 32, 3)
    assert np.abs(out - np.array([255, 128, 0])).max() <= 1


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((60, 40, 3), dtype=np.uint8)  # 40 wide, 60 high: left half red, right half blue
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6                                 # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = np.asarray(load_image(tmp_path / "r.jpg")).astype(int)
    assert out.shape == (40, 60, 3)                  # now 60 wide, 40 high
    top, bottom = out[:15].mean(axis=(0, 1)), out[-15:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 50              # the stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 50


# ---------------------------------------------------------------- load_image: rejections

def _write_text_jpg(p: Path) -> None:
    p.write_text("this is not an image\n")


def _write_truncated_jpg(p: Path) -> None:
    _rgb(200, 150).save(p, quality=90)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _write_corrupt_png(p: Path) -> None:
    _rgb(64, 64).save(p)
    data = bytearray(p.read_bytes())
    data[60:400] = b"\xff" * 340
    p.write_bytes(bytes(data))


def _write_tiny_png(p: Path) -> None:
    _rgb(4, 4).save(p)


def _write_float_tiff(p: Path) -> None:
    Image.fromarray(np.full((40, 40), 0.5, dtype=np.float32), mode="F").save(p)


@pytest.mark.parametrize("name, writer, reason", [
    ("notes.jpg", _write_text_jpg, "not an image"),
    ("cut.jpg", _write_truncated_jpg, "truncated"),
    ("broken.png", _write_corrupt_png, "corrupt"),
    ("tiny.png", _write_tiny_png, r"too small \(4x4 px"),
    ("float.tif", _write_float_tiff, "unsupported pixel format F"),
    ("bomb.png", lambda p: _png_header_only(p, 12_000, 12_000), "too large"),
    ("bigbomb.png", lambda p: _png_header_only(p, 30_000, 30_000), "too large"),
    ("empty.png", lambda p: p.write_bytes(b""), "not an image"),
    ("a_folder.png", lambda p: p.mkdir(), "no such file"),
    ("cut_in_data.png", lambda p: p.write_bytes(_png_header_only(p, 64, 64).read_bytes()[:45]), "corrupt or truncated"),
    ("bad_crc.png", lambda p: p.write_bytes(_png_header_only(p, 64, 64).read_bytes().replace(b"IEND", b"IENX")),
     "corrupt or truncated"),
    ("png_named.jpg", lambda p: _png_header_only(p, 20_000, 20_000), "too large"),
])
def test_bad_files_raise_naming_file_and_reason(tmp_path: Path, name: str, writer, reason: str) -> None:
    path = tmp_path / name
    writer(path)
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file_and_size_limits_are_parameters(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")
    _rgb(40, 30).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png", min_side=30).size == (40, 30)
    with pytest.raises(ImageLoadError, match="too small"):
        load_image(tmp_path / "a.png", min_side=31)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(tmp_path / "a.png", max_pixels=40 * 30 - 1)


def test_load_images_skips_bad_files_and_keeps_good_ones(tmp_path: Path) -> None:
    good = [tmp_path / f"g{i}.png" for i in range(3)]
    for i, p in enumerate(good):
        _rgb(seed=i).save(p)
    bad = tmp_path / "bad.jpg"
    _write_text_jpg(bad)
    images, rejected = load_images([good[0], bad, good[1], tmp_path / "missing.png", good[2]])
    assert list(images) == good
    assert len(rejected) == 2 and str(bad) in rejected[0] and "missing.png" in rejected[1]


# ---------------------------------------------------------------- crop geometry

@pytest.mark.parametrize("size", [(451, 300), (300, 451), (640, 427), (256, 256), (741, 500), (224, 224)])
def test_to_crop_box_matches_the_real_preprocessing(size: tuple[int, int]) -> None:
    w, h = size
    box = (round(w * 0.35), round(h * 0.3), round(w * 0.6), round(h * 0.7))
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[box[1]:box[3], box[0]:box[2]] = 255
    tensor = make_preprocess((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(Image.fromarray(arr))
    ys, xs = np.nonzero(tensor[0].numpy() > 0.5)
    seen = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert np.abs(np.array(to_crop_box(box, size)) - np.array(seen)).max() <= 1.0


def test_crop_geometry_hand_worked() -> None:
    # 451x300 -> 384x256 (int(256*451/300) = 384), crop offset ((384-224)/2, (256-224)/2) = (80, 16)
    sx, sy, left, top = crop_geometry((451, 300))
    assert (left, top) == (80, 16) and sx == pytest.approx(384 / 451) and sy == pytest.approx(256 / 300)
    assert to_crop_box((80 * 451 / 384, 0, 451, 300), (451, 300)) == (0.0, 0.0, 224.0, 224.0)  # clipped
    with pytest.raises(ValueError, match="outside the centre crop"):
        to_crop_box((0, 0, 50, 300), (451, 300))


# ---------------------------------------------------------------- manifest and samples

def _tiny_manifest(folder: Path) -> Path:
    rows = []
    for i, split in enumerate(["test", "val", "test"]):
        _rgb(300, 256, seed=i).save(folder / f"im{i}.png")
        # 300 x 256 at 256 -> 224: scale 1, crop offset (38, 16),
        # so orig (39, 18, 68 + i, 56) is crop (1, 2, 30 + i, 40)
        boxes = [{"class_idx": 281 + i, "class_name": f"c{i}", "crop": [1, 2, 30 + i, 40],
                  "orig": [39, 18, 68 + i, 56]}]
        rows.append({"file": f"im{i}.png", "sha256": "x", "source": f"s{i}", "licence": "CC0", "kind": "photo",
                     "split": split, "label_idx": 281 + i, "label_name": f"c{i}", "boxes": json.dumps(boxes),
                     "top5": "[]"})
    return write_manifest(pd.DataFrame(rows), folder / "manifest.csv")


def test_load_samples_order_split_limit_and_boxes(tmp_path: Path) -> None:
    manifest = _tiny_manifest(tmp_path)
    bundle = SimpleNamespace(preprocess=make_preprocess((0.5,) * 3, (0.5,) * 3))
    samples = load_samples(bundle, manifest=manifest)
    assert [s.file for s in samples] == ["im0.png", "im1.png", "im2.png"]
    assert samples[1].tensor.shape == (3, 224, 224) and samples[1].split == "val"
    assert samples[2].boxes_crop == [(283, (1.0, 2.0, 32.0, 40.0))] and samples[2].label_idx == 283
    assert [s.file for s in load_samples(bundle, split="test", manifest=manifest)] == ["im0.png", "im2.png"]
    assert [s.file for s in load_samples(bundle, split="test", limit=1, manifest=manifest)] == ["im0.png"]
    with pytest.raises(ValueError, match="unknown split"):
        load_samples(bundle, split="train", manifest=manifest)


def test_load_samples_maps_boxes_and_scale_with_the_models_own_geometry(tmp_path: Path) -> None:
    manifest = _tiny_manifest(tmp_path)
    lite0 = SimpleNamespace(preprocess=make_preprocess((0.5,) * 3, (0.5,) * 3), input_size=224, resize_size=256)
    assert load_samples(lite0, manifest=manifest)[2].crop_scale == 1.0
    # Lite2's geometry: shorter side 256 -> 297 (scale 297/256), width 300 -> 348, crop 260 at (44, 18)
    lite2 = SimpleNamespace(preprocess=make_preprocess((0.5,) * 3, (0.5,) * 3, 260), input_size=260, resize_size=297)
    s = load_samples(lite2, manifest=manifest)[2]
    scale = 297 / 256
    assert s.tensor.shape == (3, 260, 260) and s.crop_scale == pytest.approx(scale, rel=1e-3)
    expected = (39 * 348 / 300 - 44, 18 * scale - 18, 70 * 348 / 300 - 44, 56 * scale - 18)
    assert s.boxes_crop[0][0] == 283 and s.boxes_crop[0][1] == pytest.approx(expected, abs=0.01)
    # a box outside this model's crop is dropped; a record without "orig" keeps its stored crop box
    assert parse_boxes(json.dumps([{"class_idx": 1, "crop": [0, 0, 1, 1], "orig": [0, 0, 20, 9]}]), (300, 256)) == []
    assert parse_boxes(json.dumps([{"class_idx": 1, "crop": [0, 0, 5, 6]}]), (300, 256)) == [(1, (0.0, 0.0, 5.0, 6.0))]


def test_load_samples_skips_a_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = _tiny_manifest(tmp_path)
    _write_text_jpg(tmp_path / "im1.png")
    bundle = SimpleNamespace(preprocess=make_preprocess((0.5,) * 3, (0.5,) * 3))
    assert [s.file for s in load_samples(bundle, manifest=manifest)] == ["im0.png", "im2.png"]
    assert "im1.png" in capsys.readouterr().err


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="1_create_dataset.ipynb"):
        read_manifest(tmp_path / "manifest.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_manifest(tmp_path / "other.csv")


# ---------------------------------------------------------------- user folders

def _voc(path: Path, size: tuple[int, int], objects: list[tuple[str, tuple[int, int, int, int]]]) -> None:
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    path.write_text(f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
                    f"{objs}</annotation>")


def test_import_folder_class_subfolders_voc_boxes_and_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "mine"
    for folder in ("tabby", "Egyptian_cat", "285", "no such class"):
        (root / folder).mkdir(parents=True)
    _rgb(300, 200, seed=1).save(root / "tabby" / "a.jpg")
    _voc(root / "tabby" / "a.xml", (300, 200), [("n02123045", (31, 21, 150, 120)), ("tabby", (200, 50, 260, 190))])
    _rgb(64, 64, seed=2).save(root / "Egyptian_cat" / "b.png")
    _rgb(64, 64, seed=3).save(root / "285" / "c.png")
    _rgb(64, 64, seed=4).save(root / "no such class" / "d.png")
    _write_text_jpg(root / "tabby" / "broken.jpg")
    _rgb(64, 64, seed=5).save(root / "tabby" / "e.png")
    _voc(root / "tabby" / "e.xml", (99, 99), [("tabby", (1, 1, 10, 10))])           # wrong size: reported
    synsets = tmp_path / "LOC_synset_mapping.txt"
    synsets.write_text("".join(f"n{i:08d} class {i}\n" for i in range(1000)).replace("n00000281", "n02123045"))

    df = import_folder(root, synsets=synsets)
    assert list(df["file"]) == ["285/c.png", "Egyptian_cat/b.png", "tabby/a.jpg"]
    assert list(df["label_idx"]) == [285, 285, 281] and list(df["split"]) == ["test"] * 3
    boxes = json.loads(df.loc[2, "boxes"])
    assert [b["class_idx"] for b in boxes] == [281, 281]
    assert boxes[0]["orig"] == [30.0, 20.0, 150.0, 120.0]                       # VOC 1-based -> 0-based
    assert tuple(boxes[0]["crop"]) == to_crop_box((30, 20, 150, 120), (300, 200))
    rejected = df.attrs["rejected"]
    assert len(rejected) == 3
    assert any("broken.jpg" in r and "not an image" in r for r in rejected)
    assert any("d.png" in r and "unknown ImageNet class 'no such class'" in r for r in rejected)
    assert any("e.png" in r and "99x99" in r for r in rejected)
    assert "skipped 3 file(s)" in capsys.readouterr().out
    bundle = SimpleNamespace(preprocess=make_preprocess((0.5,) * 3, (0.5,) * 3))
    samples = load_samples(bundle, manifest=root / "manifest.csv")
    assert [s.label_idx for s in samples] == [285, 285, 281] and len(samples[2].boxes_crop) == 2


def test_import_folder_labels_csv_imagenet_wnids_and_unknown_wnid(tmp_path: Path) -> None:
    for i, name in enumerate("xyz"):
        _rgb(64, 64, seed=i).save(tmp_path / f"{name}.png")
    (tmp_path / "labels.csv").write_text("file,label,split\nx.png,tripod,val\ny.png,n04485082,test\n"
                                         "z.png,n99999999,test\n")
    _voc(tmp_path / "x.xml", (64, 64), [("n01494475", (1, 1, 10, 10))])     # a WordNet id in a box file too
    df = import_folder(tmp_path, labels_csv=tmp_path / "labels.csv", out=tmp_path / "out" / "m.csv")
    assert list(df["file"]) == ["../x.png", "../y.png"] and list(df["label_idx"]) == [872, 872]  # no synsets file
    assert [b["class_idx"] for b in json.loads(df.loc[0, "boxes"])] == [4]                   # hammerhead shark
    assert len(df.attrs["rejected"]) == 1
    assert "'n99999999': not one of the 1000 class names nor an ImageNet-1k WordNet id" in df.attrs["rejected"][0]
    assert read_manifest(tmp_path / "out" / "m.csv")["label_name"].tolist() == ["tripod", "tripod"]
    with pytest.raises(ValueError, match="'file' and 'label'"):
        (tmp_path / "bad.csv").write_text("name,class\n")
        import_folder(tmp_path, labels_csv=tmp_path / "bad.csv")


def test_wordnet_ids_are_known_offline_for_imagenet_classes_only() -> None:
    from helpers import cli
    from helpers.cam.zoo import imagenet_class_names
    from helpers.data.folders import class_index

    names = imagenet_class_names()
    assert [class_index(w, names) for w in ("n01440764", "n01494475", "n15075141")] == [0, 4, 999]
    assert cli.class_index("n01494475", names) == 4                              # explain --class
    assert class_index("n01494475", names, {"n01494475": 7}) == 7                # a synsets file wins
    with pytest.raises(ValueError, match="the model's classes are not ImageNet's: a WordNet id needs synsets="):
        class_index("n01494475", ["cat", "dog"])


# ---------------------------------------------------------------- every other rejection path, built on the fly


def test_a_pixel_format_that_cannot_become_rgb_is_rejected(tmp_path: Path, monkeypatch) -> None:
    # no file Pillow reads decodes to such a mode (every mode was tried): the guard is exercised by a
    # file whose conversion fails
    path = tmp_path / "odd.tif"
    Image.new("CMYK", (40, 40)).save(path)
    real = Image.Image.convert

    def convert(self, mode=None, *args, **kwargs):
        if self.mode == "CMYK":
            raise ValueError("conversion from CMYK to RGB not supported")
        return real(self, mode, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", convert)
    with pytest.raises(ImageLoadError, match=f"{path}: cannot convert pixel format CMYK to RGB"):
        load_image(path)


def test_import_folder_reports_every_bad_row_and_box_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for i, name in enumerate("abcdefg"):
        _rgb(64, 64, seed=i).save(tmp_path / f"{name}.png")
    (tmp_path / "b.xml").write_text("<annotation><object>")                                  # not XML
    _voc(tmp_path / "c.xml", (64, 64), [("no such class", (1, 1, 10, 10))])                  # unknown box class
    (tmp_path / "d.xml").write_text("<annotation><object><name>tabby</name><bndbox><xmin>1</xmin>"
                                    "</bndbox></object></annotation>")                       # box lacks corners
    _rgb(8, 8).save(tmp_path / "tiny.png")
    (tmp_path / "labels.csv").write_text("file,label,split\na.png,tabby,\nb.png,tabby,\nc.png,tabby,\n"
                                         "d.png,tabby,\ne.png,tabby,train\nmissing.png,tabby,\ntiny.png,tabby,\n"
                                         "f.png,,\n")
    df = import_folder(tmp_path, labels_csv=tmp_path / "labels.csv")
    assert list(df["file"]) == ["a.png"]
    rejected = df.attrs["rejected"]
    expected = {"b.png": "", "c.png": "unknown ImageNet class 'no such class'", "d.png": "",
                "e.png": "unknown split 'train'", "missing.png": "no such file", "tiny.png": "too small",
                "f.png": "unknown ImageNet class ''"}
    assert len(rejected) == len(expected)
    for (file, reason), message in zip(expected.items(), rejected, strict=True):
        assert file in message and reason in message, message
    assert f"skipped {len(expected)} file(s)" in capsys.readouterr().out


def test_import_folder_rejects_a_bad_split_or_folder_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown split 'train'; valid: val, test"):
        import_folder(tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        import_folder(tmp_path / "nowhere")
