"""The evaluation cache: bad entries recomputed (one warning), killed runs resume exactly, concurrent runs agree."""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import time
from multiprocessing import forkserver
from pathlib import Path

import cache_worker as W
import pytest

from helpers.evaluation import cache as C
from helpers.evaluation import runner as E

N = 24  # images of the kill test's workload: more than four killed runs get through
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ctx():
    """Child processes forked from a server that imported torch and the package once (no threads started)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["cache_worker"])
    with pytest.MonkeyPatch.context() as mp:  # the server finds this worktree's package and the tests' modules
        mp.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
        forkserver.ensure_running()
    return context


def entries(folder) -> list:
    return sorted(folder.glob("im*.json"))


# ------------------------------------------------------------------ single process: what a bad entry does

BAD_ENTRIES = {
    "empty file": lambda good: "",
    "cut in the middle": lambda good: good[: len(good) // 2],
    "garbage bytes": lambda good: "\udcff\x00{{",
    "not an entry": lambda good: json.dumps([1, 2, 3]),
    "another key": lambda good: good.replace(json.loads(good)["key"], "0" * 16),
    "another image": lambda good: good.replace('"file": "im01.png"', '"file": "im07.png"'),
    "no curves": lambda good: json.dumps({**json.loads(good), "result": {"rows": [], "timings": {}}}),
}


@pytest.fixture(scope="module")
def complete(tmp_path_factory) -> tuple[str, Path]:
    """The results CSV of three images and a cache folder holding their entries."""
    folder = tmp_path_factory.mktemp("complete")
    want, _ = W.results_csv(3, range(3), folder)
    return want, folder


@pytest.mark.parametrize("damage", list(BAD_ENTRIES))
def test_a_bad_entry_is_recomputed_with_one_warning_never_a_failure(damage, complete, tmp_path, capsys) -> None:
    want, folder = complete
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    path = entries(tmp_path)[1]
    good = path.read_text()
    path.write_text(BAD_ENTRIES[damage](good), errors="surrogateescape")
    capsys.readouterr()
    got, failures = W.results_csv(3, range(3), tmp_path)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert got == want and not failures
    assert len(warnings) == 1 and path.name in warnings[0] and "recomputing" in warnings[0]
    assert path.read_text() == good  # rewritten, whole


def test_writes_are_atomic_and_leave_no_temporary_file(tmp_path, monkeypatch) -> None:
    path, empty = tmp_path / "x.json", {"rows": [], "timings": {}, "curves": {}}
    C.store(path, "k", "x.png", empty)
    assert C.read_entry(path, "k", "x.png") == empty and [p.name for p in tmp_path.iterdir()] == ["x.json"]

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # a write that fails half-way ...
    with pytest.raises(OSError, match="No space"):
        C.store(path, "k", "x.png", {**empty, "rows": [{"image": "x.png"}]})
    assert C.read_entry(path, "k", "x.png") == empty  # ... leaves the old entry whole and no temporary file
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


# ------------------------------------------------------------------ kills and concurrency (child processes)

def test_killed_runs_resume_to_the_csv_of_an_uninterrupted_run(ctx, tmp_path) -> None:
    want, _ = W.results_csv(N, range(N), None)
    cache, rng = tmp_path / "cache", random.Random(0)
    cache.mkdir()
    for round_ in range(4):
        # even rounds: killed after a seeded time (anywhere); odd rounds: killed inside a seeded write
        kill_at = None if round_ % 2 == 0 else rng.randint(1, 30)
        p = ctx.Process(target=W.child, args=(N, range(N), cache, tmp_path / "out.csv", 0.004, kill_at))
        p.start()
        if kill_at is None:
            time.sleep(rng.uniform(0.05, 0.3))
            p.kill()
        p.join(timeout=60)
        assert p.exitcode == -signal.SIGKILL, f"round {round_}: the run was not killed while running"
    assert list(cache.glob(".*.tmp")), "no kill met a write in progress: the test did not test"
    assert len(entries(cache)) < N
    got, failures = W.results_csv(N, range(N), cache)
    assert not failures and got == want


def test_two_concurrent_runs_on_one_cache_agree(ctx, tmp_path) -> None:
    n, cache = 16, tmp_path / "cache"
    a, b = list(range(0, 12)), list(range(0, 16))  # overlapping; b trails a, so meets its writes in progress
    runs = [ctx.Process(target=W.child, args=(n, idx, cache, tmp_path / f"{name}.csv", 0.005))
            for name, idx in (("a", a), ("b", b))]
    for p in runs:
        p.start()
        time.sleep(0.05)
    for p in runs:
        p.join(timeout=60)
    assert [p.exitcode for p in runs] == [0, 0]
    assert [(tmp_path / f"{x}.failures").read_text() for x in "ab"] == ["0", "0"]
    header, *lines = W.results_csv(n, range(n), None)[0].splitlines(keepends=True)
    k = len(W.SPECS)

    def want(idx) -> str:  # the fresh run's rows of images idx, in that order
        return header + "".join(lines[k * i + j] for i in idx for j in range(k))

    assert [(tmp_path / f"{x}.csv").read_text() for x in "ab"] == [want(a), want(b)]
    # one valid entry per image, and a third run finds everything in the cache, equal to a fresh run
    assert [p.name.split("-")[0] for p in entries(cache)] == [f"im{i:02d}" for i in range(n)]
    bundle, samples = W.workload(n)
    calls: list[int] = []
    bundle.model.register_forward_hook(lambda *_: calls.append(1))
    again = E.evaluate(bundle, samples, W.SPECS, W.CFG, cache_dir=cache, progress=False, time_first=0)
    assert not calls and again.results.to_csv(index=False) == want(range(n))
    assert not list(cache.glob(".*.tmp"))
