"""The command line against careless and hostile use: shards as checked study parts, bad options, unwritable
or full outputs, Ctrl-C, clashing names, odd labels CSVs; one line each and nothing computed lost."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data

from helpers import cli
from helpers.data import import_folder
from helpers.study import folder as study_folder
from helpers.study import parts as study_parts
from helpers.study.store import read_part

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--steps", "2", "--no-timing", "--methods", "gradcam"]
PHOTOS = (("espresso", "coffee", data.coffee(), (72, 48)), ("tabby", "cat", data.chelsea(), (66, 44)),
          ("missile", "rocket", data.rocket(), (48, 72)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three tiny labelled photos in class subfolders."""
    root = tmp_path_factory.mktemp("images")
    for label, name, image, size in PHOTOS:
        (root / label).mkdir()
        Image.fromarray(image).resize(size).save(root / label / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    """The first two of them (fewer images: faster runs)."""
    root = tmp_path_factory.mktemp("pair")
    for label, name, image, size in PHOTOS[:2]:
        (root / label).mkdir()
        Image.fromarray(image).resize(size).save(root / label / f"{name}.png")
    return root


def main(capsys, *args: str) -> tuple[int, list[str]]:
    """Run the command line in this process: (exit status, stderr lines)."""
    status = cli.main([str(a) for a in args])
    return status, capsys.readouterr().err.strip().splitlines()


def one_line(status: int, lines: list[str], want_status: int, *words: str) -> None:
    assert status == want_status and len(lines) == 1, (status, lines)
    assert all(w in lines[0] for w in words), lines


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if any model loads (bad input must be refused before)."""
    def load(*args, **kwargs):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(cli, "load_model", load)


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (size in bytes, read-only on request); skipped where mounting is not allowed."""
    mounted = []

    def mount(size: int, read_only: bool = False) -> Path:
        path = tmp_path / f"mnt{len(mounted)}"
        path.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                               capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(path)
        return path
    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=True)


# ---------------------------------------------------------------- shards are data, merge checks them

@pytest.fixture(scope="module")
def runs(pair, tmp_path_factory) -> Path:
    """A single run and two shards: shard 1 with an absolute --images, shard 2 with a relative one and
    its --out two folders deeper; plus a shard 2 cut from another image list (one label changed)."""
    base = tmp_path_factory.mktemp("runs")
    (base / "labels.csv").write_text("file,label\nespresso/coffee.png,espresso\ntabby/cat.png,tiger cat\n")
    folder = pair
    here = os.getcwd()
    os.chdir(folder.parent)
    try:
        for args in (["--images", folder, "--out", base / "single"],
                     ["--images", folder, "--shard", "1/2", "--out", base / "s1"],
                     ["--images", folder.name, "--shard", "2/2", "--out", base / "deeper" / "still" / "s2"],
                     ["--images", folder, "--labels", base / "labels.csv", "--shard", "2/2", "--out", base / "other"]):
            assert cli.main(["evaluate", *map(str, args), *FAST]) == 0
    finally:
        os.chdir(here)
    return base


def test_shards_are_study_parts_and_merge_to_the_single_run(runs, capsys) -> None:
    s2 = runs / "deeper" / "still" / "s2"
    assert sorted(p.name for p in (runs / "s1").iterdir() if p.is_file()) == \
        ["PROVENANCE.json", "main.parquet", "manifest.csv"]
    assert read_part(runs / "s1" / "main.parquet").facts["shard"] == [1, 2]
    status, _ = main(capsys, "merge", s2, runs / "s1", "--out", runs / "merged")
    assert status == 0
    for name in ("evaluation_results.csv", "summary_statistics.csv", "leaderboard.csv"):
        assert (runs / "merged" / name).read_bytes() == (runs / "single" / name).read_bytes(), name
    assert len(json.loads((runs / "merged" / "PROVENANCE.json").read_text())["parts"]["main"]["shards"]) == 2


def test_moving_out_or_spelling_images_differently_changes_no_number(runs) -> None:
    # shard 2 ran from another working folder, --images relative, --out deeper: its rows equal the single run's
    single = pd.read_csv(runs / "single" / "evaluation_results.csv")
    part = read_part(runs / "deeper" / "still" / "s2" / "main.parquet").rows[single.columns]
    assert sorted(single.image.unique()) == ["espresso/coffee.png", "tabby/cat.png"]
    pd.testing.assert_frame_equal(single[single.image.isin(part.image)].reset_index(drop=True),
                                  part.reset_index(drop=True), check_dtype=False, rtol=0, atol=1e-6)


def test_a_pickle_in_a_shard_folder_is_never_loaded(tmp_path, capsys) -> None:
    marker = tmp_path / "pwned"

    class Bomb:
        def __reduce__(self):
            return (Path.touch, (marker,))
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "main.pkl").write_bytes(pickle.dumps(Bomb()))
    status, lines = main(capsys, "merge", tmp_path / "evil", "--out", tmp_path / "out")
    one_line(status, lines, 2, "evil", "no study part files")
    assert not marker.exists()


def test_a_shard_of_the_older_format_is_refused_in_one_line(runs, tmp_path, capsys) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for name in ("results.parquet", "timings.parquet", "curves.parquet"):
        (old / name).write_bytes(b"PAR1")
    (old / "shard.json").write_text('{"format": "xai-cam evaluation shard", "version": 1}')
    status, lines = main(capsys, "merge", old, runs / "s1", "--out", tmp_path / "out")
    one_line(status, lines, 2, f"shard {old}", "written by an older version of helpers: re-run")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage,words", [
    (lambda d: (d / "main.parquet").write_bytes((d / "main.parquet").read_bytes()[:200]),
     ["main.parquet", "not a readable study part"]),
    (lambda d: pd.DataFrame({"image": ["x"]}).to_parquet(d / "main.parquet"), ["without the study's facts"]),
    (lambda d: (d / "PROVENANCE.json").write_text("{"), ["PROVENANCE.json", "not valid JSON"]),
    (lambda d: (d / "main.parquet").unlink(), ["no study part files"]),
])
def test_a_broken_truncated_or_foreign_shard_is_refused_naming_it(runs, tmp_path, capsys, damage, words) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(runs / "s1", bad)
    damage(bad)
    status, lines = main(capsys, "merge", bad, runs / "deeper" / "still" / "s2", "--out", tmp_path / "out")
    one_line(status, lines, 2, str(bad), *words)


def test_merge_refuses_other_image_lists_repeats_and_gaps(runs, tmp_path, capsys) -> None:
    out = ["--out", tmp_path / "out"]
    status, lines = main(capsys, "merge", runs / "s1", runs / "other", *out)
    one_line(status, lines, 2, "part 'main'", str(runs / "other"), "has hash")      # a label changed
    status, lines = main(capsys, "merge", runs / "s1", runs / "s1", runs / "deeper" / "still" / "s2", *out)
    one_line(status, lines, 2, "both cover 1 photo(s): espresso/coffee.png")
    status, lines = main(capsys, "merge", runs / "s1", *out)
    one_line(status, lines, 2, "1 photo(s) covered by no shard: tabby/cat.png")


# ---------------------------------------------------------------- bad options, before any model loads

@pytest.mark.parametrize("options,words", [
    (["--steps", "0"], ["--steps 0", "2..1000"]), (["--steps", "-5"], ["--steps -5"]),
    (["--steps", "60000"], ["--steps 60000"]), (["--steps", "1"], ["--steps 1"]),
    (["--alpha", "1.5"], ["--alpha 1.5", "[0, 1]"]), (["--alpha", "nan"], ["--alpha nan"]),
    (["--shard", "0/2"], ["--shard '0/2'"]), (["--shard", "2/0"], ["--shard '2/0'"]),
    (["--shard", "1/2/3"], ["--shard '1/2/3'"]), (["--methods", ","], ["no method"]),
    (["--labels", "{folder}"], ["is a folder"]), (["--out", "{file}"], ["is a file"]),
    (["--out", "{file}/sub"], ["is a file"]), (["--cache", "{file}"], ["--cache", "is a file"]),
    (["--synsets", "{folder}"], ["synsets file {folder}", "cannot be read"]),
    (["--synsets", "{binary}"], ["synsets file {binary}", "cannot be read"]),
    (["--boxes", "{file}"], ["--boxes {file}: no such folder"]),
])
def test_bad_evaluate_options_are_refused_before_any_work(folder, tmp_path, capsys, no_model, options, words) -> None:
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "b.bin").write_bytes(b"\xff\xfe\x00\xd8")
    fill = {"folder": folder, "file": tmp_path / "f.txt", "binary": tmp_path / "b.bin"}
    options = [o.format(**fill) for o in options]
    status, lines = main(capsys, "evaluate", "--images", folder, *(["--out", tmp_path / "o"] if "--out" not in
                                                                    options else []), *options)
    one_line(status, lines, 2, *[w.format(**fill) for w in words])


def test_explain_refuses_a_bad_alpha_device_or_unwritable_out(folder, tmp_path, capsys, no_model) -> None:
    img = folder / "espresso" / "coffee.png"
    one_line(*main(capsys, "explain", img, "--device", "gpu0", "--out", tmp_path), 2, "--device 'gpu0'")
    if not torch.cuda.is_available():
        one_line(*main(capsys, "explain", img, "--device", "cuda", "--out", tmp_path), 2, "CUDA is not available")
    one_line(*main(capsys, "explain", img, "--alpha", "-0.1", "--out", tmp_path), 2, "--alpha -0.1")
    (tmp_path / "f").write_text("x")
    one_line(*main(capsys, "explain", img, "--out", tmp_path / "f"), 2, f"--out {tmp_path / 'f'}", "is a file")
    one_line(*main(capsys, "explain", img, "--out", tmp_path / "f" / "x"), 2, "is a file")


def test_a_read_only_out_is_refused_in_one_line(folder, tmpfs, capsys, no_model) -> None:
    ro = tmpfs(1 << 20, read_only=True)
    one_line(*main(capsys, "explain", folder / "tabby" / "cat.png", "--out", ro), 2, str(ro), "cannot write")
    one_line(*main(capsys, "evaluate", "--images", folder, "--out", ro / "x"), 2, "cannot write")


def test_argparse_errors_are_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "--images", "x", "--steps", "abc"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and "invalid int value: 'abc'" in lines[0]


# ---------------------------------------------------------------- nothing computed is lost

def test_a_repeated_labels_row_is_evaluated_once_with_one_warning(pair, tmp_path, capsys) -> None:
    (tmp_path / "labels.csv").write_text("file,label\ntabby/cat.png,tabby\nespresso/coffee.png,espresso\n"
                                         "tabby/cat.png,tabby\n")
    status, lines = main(capsys, "evaluate", "--images", pair, "--labels", tmp_path / "labels.csv",
                         "--out", tmp_path / "out", *FAST)
    assert status == 0 and sum("repeated row" in line for line in lines) == 1, lines
    results = pd.read_csv(tmp_path / "out" / "evaluation_results.csv")
    assert results.groupby("image").size().to_dict() == {"espresso/coffee.png": 6, "tabby/cat.png": 6}
    assert (tmp_path / "out" / "REPORT.md").is_file()


def test_every_image_failing_is_one_line_and_status_1(folder, tmp_path, capsys, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no forward today")
    monkeypatch.setattr(study_parts, "evaluate_sample", broken)
    status, lines = main(capsys, "evaluate", "--images", folder, "--out", tmp_path, *FAST)
    assert status == 1 and lines[-1].startswith("error: every one of the 3 images failed"), lines
    assert "no forward today" in lines[-1] and not (tmp_path / "REPORT.md").exists()


def test_a_failing_report_keeps_the_measured_results(folder, tmp_path, capsys, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise ValueError("operands could not be broadcast")
    monkeypatch.setattr(study_folder, "summary_table", broken)
    (tmp_path / "labels.csv").write_text("file,label\ntabby/cat.png,tabby\n")
    status, lines = main(capsys, "evaluate", "--images", folder, "--labels", tmp_path / "labels.csv", "--out",
                         tmp_path / "out", *FAST)
    one_line(status, [ln for ln in lines if ln.startswith("error")], 1, "the report failed", "evaluation_results.csv")
    assert len(pd.read_csv(tmp_path / "out" / "evaluation_results.csv")) == 6


def test_a_full_disk_stops_explain_with_no_half_written_file(folder, tmpfs, capsys) -> None:
    out = tmpfs(64 * 1024)   # smaller than one 224 x 224 float32 map
    status, lines = main(capsys, "explain", folder / "tabby" / "cat.png", "--methods", "gradcam", "--out", out)
    assert status == 1 and "No space left on device" in lines[-1] and str(out) in lines[-1], lines
    assert [p.name for p in out.iterdir()] == []


def test_a_full_disk_stops_evaluate_non_zero_keeping_whole_files(folder, tmpfs, capsys) -> None:
    out = tmpfs(16 * 1024)
    status, lines = main(capsys, "evaluate", "--images", folder, "--out", out, *FAST)
    assert status == 1 and "No space left on device" in lines[-1] and "run the same command again" in lines[-1]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")]
    for p in files:
        if p.suffix == ".json":
            json.loads(p.read_text())   # every entry kept is whole


def test_ctrl_c_says_what_is_kept_and_exits_130(tmp_path) -> None:
    # 40 photos (each of the three, renamed): the run lasts minutes, so the signal surely arrives mid-run,
    # however loaded the machine is; it is sent as soon as the progress bar shows
    images = tmp_path / "images"
    for i in range(40):
        label, name, image, size = PHOTOS[i % len(PHOTOS)]
        (images / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize(size).save(images / label / f"{name}{i}.png")
    tmp_path = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the child starts with Ctrl-C's default disposition, as from a terminal (a library used by an earlier test
    # in this process may leave SIGINT ignored, and an ignored SIGINT is inherited)
    proc = subprocess.Popen([sys.executable, "-m", "helpers", "evaluate", "--images", str(images), "--no-timing",
                             "--out", str(tmp_path)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, deadline = b"", time.monotonic() + 120
    while b"main (test, shard 1/1)" not in seen and time.monotonic() < deadline:
        seen += os.read(proc.stderr.fileno(), 4096)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    text = (seen + rest).decode()
    last = text.strip().splitlines()[-1]
    assert proc.returncode == 130 and "Traceback" not in text, text
    assert last == f"interrupted: the finished images are kept in the cache {tmp_path / '.cache'}; " \
                   "run the same command again to resume"


# ---------------------------------------------------------------- names: outputs, classes, labels files

def test_explain_gives_same_named_images_their_own_files(tmp_path, capsys) -> None:
    for sub, image in (("a", data.coffee()), ("b", data.chelsea())):
        (tmp_path / sub).mkdir()
        Image.fromarray(image).resize((64, 48)).save(tmp_path / sub / "bird.png")
    out = tmp_path / "out"
    status = cli.main(["explain", str(tmp_path / "a" / "bird.png"), str(tmp_path / "b" / "bird.png"),
                       str(tmp_path / "a" / ".." / "a" / "bird.png"), "--methods", "gradcam",
                       "--class", "great_grey_owl", "--out", str(out)])
    assert status == 0 and "wrote 2 overlays and maps, 2 JSON files" in capsys.readouterr().out
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert sorted(r["image"] for r in records) == [str(tmp_path / s / "bird.png") for s in "ab"]
    assert {r["explained_class"]["class_name"] for r in records} == {"great grey owl"}
    maps = [np.load(out / r["files"]["gradcam"][1]) for r in records]
    assert len(list(out.glob("*.npy"))) == 2 and not np.array_equal(*maps)


def test_class_names_equal_but_for_case_need_the_exact_spelling(folder, tmp_path, capsys) -> None:
    one_line(*main(capsys, "explain", folder / "tabby" / "cat.png", "--class", "CARDIGAN", "--out", tmp_path), 2,
             "'CARDIGAN' is ambiguous", "264, 474")
    names = cli.load_model("efficientnet_lite0").class_names
    assert [cli.class_index(c, names) for c in ("Cardigan", "cardigan", "great_grey_owl", "Great Grey  Owl")] == \
        [264, 474, 24, 24]


def _rgb(path: Path, seed: int) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)


def test_labels_csv_encodings_spaces_and_paths_outside(tmp_path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    _rgb(root / "x.png", 0)
    _rgb(root / "y.png", 1)
    _rgb(tmp_path / "outside.png", 2)
    (tmp_path / "utf16.csv").write_text("file,label\n x.png , tabby\ny.png,great_grey_owl\n", encoding="utf-16")
    df = import_folder(root, labels_csv=tmp_path / "utf16.csv", out=tmp_path / "m.csv", relative_to=root)
    assert df.file.tolist() == ["x.png", "y.png"] and df.label_idx.tolist() == [281, 24]
    (tmp_path / "latin1.csv").write_bytes("file,label\nx.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"labels CSV {tmp_path / 'latin1.csv'}: not UTF-8"):
        import_folder(root, labels_csv=tmp_path / "latin1.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=f"labels CSV {tmp_path / 'empty.csv'}: not a CSV table"):
        import_folder(root, labels_csv=tmp_path / "empty.csv")
    (tmp_path / "out.csv").write_text(f"file,label\n../outside.png,tabby\n{tmp_path / 'outside.png'},tabby\n"
                                      "x.png,tabby\n")
    df = import_folder(root, labels_csv=tmp_path / "out.csv", out=tmp_path / "m.csv")
    assert df.file.tolist() == ["images/x.png"] and len(df.attrs["rejected"]) == 2
    assert all("outside the image folder" in r and "--allow-outside" in r for r in df.attrs["rejected"])
    df = import_folder(root, labels_csv=tmp_path / "out.csv", out=tmp_path / "m.csv", relative_to=root,
                       allow_outside=True)
    assert df.file.tolist() == ["../outside.png", "x.png"]   # the absolute path names the same file: kept once


def test_same_named_files_in_two_class_folders_are_two_source_photos(tmp_path) -> None:
    for seed, label in enumerate(("tabby", "espresso")):
        (tmp_path / label).mkdir()
        _rgb(tmp_path / label / "1.png", seed)
    df = import_folder(tmp_path, out=tmp_path / "m.csv")
    assert df.source.tolist() == ["espresso/1.png", "tabby/1.png"]   # not "1" twice: one cluster in the CIs


def test_more_shards_than_images_is_refused(pair, tmp_path, capsys) -> None:
    one_line(*main(capsys, "evaluate", "--images", pair, "--shard", "3/3", "--out", tmp_path, *FAST), 2,
             "--shard 3/3: only 2 images")


def test_atomic_writes_keep_usual_permissions_and_name_the_path_on_a_full_disk(tmp_path, monkeypatch) -> None:
    from helpers.config import write_atomic
    mask = os.umask(0)
    os.umask(mask)
    write_atomic(tmp_path / "a.csv", "x\n")
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o666 & ~mask

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device") as err:
        write_atomic(tmp_path / "b.npy", b"\x93NUMPY")
    assert err.value.filename == str(tmp_path / "b.npy") and sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_an_output_folder_inside_a_class_folder_is_not_imported_as_photos(tmp_path) -> None:
    (tmp_path / "tabby" / "eval").mkdir(parents=True)
    _rgb(tmp_path / "tabby" / "1.png", 0)
    _rgb(tmp_path / "tabby" / "eval" / "comparison_plots.png", 1)   # what `evaluate --out images/tabby/eval` wrote
    df = import_folder(tmp_path, out=tmp_path / "tabby" / "eval" / "manifest.csv", relative_to=tmp_path)
    assert df.file.tolist() == ["tabby/1.png"]
