"""The study command against careless and hostile input: bad TOML specs, bad options, a wrong ``--dask``
address; each refused in one line, exit status 2, before any work."""
from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from helpers import cli
from helpers.study import distributed, run
from helpers.study.spec import load_spec

#: A valid one-part spec; each case below overrides (or with None drops) some of its keys.
PART = {"name": '"a"', "kind": '"alpha_sweep"', "stage": '"val"', "n": "2"}
OPTIONS = {"settings": '["head"]', "alphas": "[0.0, 1.0]"}


def spec_text(top: dict | None = None, part: dict | None = None, options: dict | None = None) -> str:
    """The TOML of the valid spec with ``top``, ``part`` and ``options`` keys replaced (None: removed)."""
    def lines(table: dict) -> list[str]:
        return [f"{k} = {v}" for k, v in table.items() if v is not None]
    return "\n".join([*lines(top or {}), "[[parts]]", *lines({**PART, **(part or {})}), "[parts.options]",
                      *lines({**OPTIONS, **(options or {})})]) + "\n"


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any model loads or any photo is looked for (bad input must be refused before)."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started")
    monkeypatch.setattr(run, "load_model", refuse)
    monkeypatch.setattr(run, "dataset_source", refuse)


def study(capsys, *args) -> tuple[int, list[str]]:
    """``python -m helpers study ARGS`` in this process: (exit status, stderr lines)."""
    try:
        status = cli.main(["study", *map(str, args)])
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err.strip().splitlines()


def test_the_base_spec_is_valid(tmp_path):
    (tmp_path / "ok.toml").write_text(spec_text())
    spec = load_spec(tmp_path / "ok.toml")
    assert spec.part("a").n == 2 and spec.part("a").opts["alphas"] == (0.0, 1.0)


@pytest.mark.parametrize("text,words", [
    (spec_text(part={"n": '"ten"'}), ("'a'", "n must", "'ten'")),
    (spec_text(top={"rise_steps": "nan"}), ("rise_steps", "nan")),
    (spec_text(top={"thesis_steps": "2.5"}), ("thesis_steps", "2.5")),
    (spec_text(top={"seed": "-1"}), ("seed", "-1")),
    (spec_text(top={"description": "5"}), ("description",)),
    (spec_text(part={"name": '"../escaped"'}), ("name", "../escaped", "plain file name")),
    (spec_text(part={"name": '".hidden"'}), ("name", ".hidden")),
    (spec_text(part={"name": "5"}), ("name", "5")),
    (spec_text(part={"kind": None}), ("part 1", "kind")),
    (spec_text(part={"batch": "true"}), ("batch", "True")),
    (spec_text(part={"n": "inf"}), ("n", "inf")),
    (spec_text(part={"model": '"no_such_net"'}), ("model", "no_such_net")),
    (spec_text(options={"alphas": "[0.0, nan]"}), ("alphas", "nan")),
    (spec_text(options={"alphas": "[1.5]"}), ("alphas", "1.5")),
    (spec_text(options={"alphas": "[]"}), ("alphas",)),
    (spec_text(options={"settings": None}), ("settings", "missing")),
    (spec_text(options={"setings": '["head"]'}), ("setings",)),
    (spec_text(options={"modes": '["sideways"]'}), ("modes", "sideways")),
    (spec_text(options={"with_max": '"yes"'}), ("with_max", "yes")),
    ("rise_steps = 5\n", ("no parts",)),
    ("parts = 5\n", ("parts",)),
    (spec_text() + '[[parts]]\nname = "A"\nkind = "features"\nstage = "val"\n', ("repeated", "'A'")),
    ('[[parts]]\nname = "m"\nkind = "model"\nstage = "test"\n', ("'m'", "alpha_from")),
    ('[[parts]]\nname = "s"\nkind = "sanity"\nstage = "val"\n[parts.options]\nmethods = ["gradcam"]\nsteps = 0\n',
     ("'s'", "steps", "0")),
    ('[[parts]]\nname = "s"\nkind = "sanity"\nstage = "val"\n[parts.options]\nmethods = ["nope"]\n',
     ("'s'", "methods", "nope")),
    # a fixed-alpha hybrid needs an a in [0, 1]: one outside would fail after the work began
    ('[[parts]]\nname = "s"\nkind = "sanity"\nstage = "val"\n[parts.options]\nmethods = ["hybrid@1.5"]\n',
     ("'s'", "methods", "hybrid@1.5")),
])
def test_a_bad_spec_is_one_line_naming_the_key_before_any_work(tmp_path, capsys, no_work, text, words):
    (tmp_path / "bad.toml").write_text(text)
    status, lines = study(capsys, "--spec", tmp_path / "bad.toml", "--out", tmp_path / "out")
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "bad.toml" in lines[0] and all(w in lines[0] for w in words), lines
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped.parquet").exists()


@pytest.mark.parametrize("args,words", [
    (["--spec", "quick"], ("--out", "required")),
    (["--spec", "quick", "--out", "o", "--stage", "nope"], ("--stage", "nope")),
    (["verify", "--n-test", "many"], ("--n-test", "many")),
    (["verify", "--n-val", "0"], ("--n-val", "0")),
    (["merge", "a"], ("--out",)),
    (["--spec", "quick", "--out", "o", "--parts", "no_such_part"], ("no_such_part",)),
    (["--spec", "quick", "--out", "o", "--stage", "test", "--parts", "alpha_head"], ("alpha_head", "test")),
    (["--spec", "quick", "--out", "o", "--dask", "local", "--parts", "no_such_part"], ("no_such_part",)),
    (["--spec", "quick", "--out", "o", "--parts", ","], ("--parts", "no part named")),
    (["--spec", "quick", "--out", "f"], ("--out f", "is a file")),
    (["--spec", "quick", "--out", "f/o"], ("--out f/o", "is a file")),
    (["--spec", "quick", "--out", "o", "--cache", "f"], ("--cache f", "is a file")),
    (["--spec", "quick", "--out", "o", "--device", "gpu0"], ("--device 'gpu0'",)),
    (["--spec", "quick", "--out", "o", "--stage", "test", "--alpha-from", "nowhere"], ("--alpha-from nowhere",)),
    (["merge", "a", "--out", "f"], ("--out f", "is a file")),
])
def test_option_errors_are_one_line_and_status_2(tmp_path, capsys, monkeypatch, no_work, args, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("a file, not a folder")
    status, lines = study(capsys, *args)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(w in lines[0] for w in words), lines
    assert not (tmp_path / "o").exists()


@pytest.fixture
def http_server():
    """A tiny HTTP server on 127.0.0.1 (something that answers, but not a Dask scheduler): its port."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:   # not on the test's stderr
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("where", ["http", "closed"])
def test_dask_address_without_a_scheduler_fails_fast_in_one_line(tmp_path, capsys, monkeypatch, no_work,
                                                                 http_server, where):
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", 2.0)
    address = f"tcp://127.0.0.1:{http_server if where == 'http' else closed_port()}"
    result: dict = {}
    command = threading.Thread(daemon=True, target=lambda: result.update(
        out=study(capsys, "--spec", "quick", "--out", tmp_path / "o", "--dask", address)))
    start = time.monotonic()
    command.start()
    command.join(30)                                      # a hung connection fails the test, never hangs it
    assert "out" in result and time.monotonic() - start < 15, "no answer within 15 s"
    status, lines = result["out"]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert address in lines[0] and "2 s" in lines[0], lines


def test_a_real_scheduler_passes_the_check():
    from dask.distributed import LocalCluster
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        start = time.monotonic()
        distributed.check_scheduler(cluster.scheduler_address, timeout=5)
        assert time.monotonic() - start < 5
