"""The command line, run as a subprocess: help, one-line errors, explain's files, evaluate --shard + merge."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "helpers", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three tiny labelled photos in class subfolders."""
    root = tmp_path_factory.mktemp("images")
    for label, name, image, size in (("espresso", "coffee", data.coffee(), (72, 48)),
                                     ("tabby", "cat", data.chelsea(), (66, 44)),
                                     ("missile", "rocket", data.rocket(), (48, 72))):
        (root / label).mkdir()
        Image.fromarray(image).resize(size).save(root / label / f"{name}.png")
    return root


@pytest.mark.parametrize("command", ["explain", "evaluate", "merge"])
def test_help(command: str) -> None:
    out = run(command, "--help")
    assert out.returncode == 0 and "usage: python -m helpers " + command in out.stdout and "--out" in out.stdout


@pytest.mark.parametrize("args,message", [
    (["explain", "missing.png"], "missing.png"),
    (["explain", "{img}", "--model", "no_such_net"], "unknown model 'no_such_net'"),
    (["explain", "{img}", "--layer", "no_such_layer"], "unknown layer 'no_such_layer'"),
    (["explain", "{img}", "--class", "1000"], "class 1000 out of range"),
    (["explain", "{img}", "--class", "not a class"], "unknown ImageNet class 'not a class'"),
    (["explain", "{img}", "--methods", "gradcam,nope"], "unknown CAM method 'nope'"),
    (["evaluate", "--images", "no_such_dir"], "no_such_dir: no such image folder"),
    (["evaluate", "--images", "{dir}", "--shard", "3/2"], "--shard '3/2'"),
    (["merge", "no_such_shard"], "no_such_shard: no such study folder"),
])
def test_bad_input_exits_nonzero_with_one_line(args, message, folder) -> None:
    args = [a.format(img=folder / "espresso" / "coffee.png", dir=folder) for a in args]
    out = run(*args)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and message in lines[0], out.stderr


def test_explain_writes_overlays_maps_and_json(folder, tmp_path) -> None:
    img = folder / "espresso" / "coffee.png"
    out = run("explain", str(img), "--methods", "gradcam,hybrid", "--alpha", "0.5", "--class", "espresso",
              "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    record = json.loads((tmp_path / "coffee.json").read_text())
    assert record["explained_class"] == {"class_idx": 967, "class_name": "espresso"}
    assert record["settings"]["alpha"] == 0.5 and record["settings"]["layer"] == "head"
    assert record["model"]["name"] == "efficientnet_lite0" and "lite0" in record["model"]["weights"]
    assert len(record["prediction"]) == 5
    for method in ("gradcam", "hybrid"):
        m = np.load(tmp_path / f"coffee_{method}.npy")
        assert m.shape == (224, 224) and 0 <= m.min() and m.max() == pytest.approx(1.0)
        assert Image.open(tmp_path / f"coffee_{method}.png").size == (224, 224)


def test_explain_names_a_symlink_loop_and_explains_the_rest(folder, tmp_path) -> None:
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    out = run("explain", str(loop), str(folder / "espresso" / "coffee.png"), "--methods", "gradcam",
              "--out", str(tmp_path / "out"))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert len([line for line in out.stderr.splitlines() if str(loop) in line]) == 1, out.stderr
    assert (tmp_path / "out" / "coffee.json").is_file() and "skipped 1 unreadable file" in out.stdout
    alone = run("explain", str(loop), "--out", str(tmp_path / "alone"))
    lines = alone.stderr.strip().splitlines()
    assert alone.returncode == 2 and len(lines) == 1 and str(loop) in lines[0], alone.stderr


def test_merged_shards_give_the_single_run_report(folder, tmp_path) -> None:
    common = ["--images", str(folder), "--steps", "4", "--no-timing", "--cache", str(tmp_path / "cache")]
    single = run("evaluate", *common, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    for k in (1, 2):
        shard = run("evaluate", *common, "--shard", f"{k}/2", "--out", str(tmp_path / f"s{k}"))
        assert shard.returncode == 0 and f"shard {k}/2" in shard.stdout, shard.stderr
    merged = run("merge", str(tmp_path / "s2"), str(tmp_path / "s1"), "--out", str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stderr
    for name in ("evaluation_results.csv", "summary_statistics.csv", "leaderboard.csv", "confirmatory_tests.csv"):
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
    report = (tmp_path / "single" / "REPORT.md").read_text()
    assert (tmp_path / "merged" / "REPORT.md").read_text() == report.replace("/single/", "/merged/")
    assert "Test photos: 3 photos" in report and "## Sanity check" not in report
    incomplete = run("merge", str(tmp_path / "s1"), "--out", str(tmp_path / "bad"))
    lines = incomplete.stderr.strip().splitlines()
    assert incomplete.returncode == 2 and len(lines) == 1 and "photo(s) covered by no shard" in lines[0], lines
