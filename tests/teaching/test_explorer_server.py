"""The explorer's server as a hostile page or a careless user on the same machine meets it.

One real server (`python -m helpers explore`) on 127.0.0.1 for the module; every HTTP request and
websocket read has a short timeout and every wait a deadline. The page's kernel is driven over its
websocket as the page's widgets drive it (comm messages), with forged values.
"""
from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import psutil
import pytest
import websocket
from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1, serialize_msg_to_ws_v1
from PIL import Image

from helpers import cli
from helpers.config import ROOT
from helpers.teaching import explorer as page
from helpers.teaching.interactive import MAX_UPLOAD_BYTES

TIMEOUT_S = 10  # each request, each websocket read
STARTUP_S = 120  # the server's start, a page's first load (its kernel loads the model)
IDLE_S = 6  # the test server's --kernel-idle-timeout
FORGED_HOSTS = ("rebind.attacker.example:{port}", "localhost:1", "127.0.0.1.nip.io:{port}", "localhost")


def wait_until(condition, timeout: float, what: str):
    """Poll ``condition`` every 0.2 s until it returns something truthy (returned), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} (after {timeout} s)"
        time.sleep(0.2)
    return result


def get(port: int, path: str, host: str | None = None, headers: dict | None = None,
        timeout: float = TIMEOUT_S) -> tuple[int, http.client.HTTPMessage, bytes]:
    """``GET path`` as given (no re-quoting) with the Host ``host``: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body, deadline = b"", time.monotonic() + STARTUP_S
        while chunk := response.read1(1 << 16):  # the page streams while its notebook runs
            body += chunk
            assert time.monotonic() < deadline, f"GET {path} did not end"
        return response.status, response.headers, body
    finally:
        conn.close()


class Server:
    def __init__(self, port: int, pid: int) -> None:
        self.port, self.pid = port, pid

    def kernels(self) -> list[int]:
        """The server's running kernels' process ids."""
        return [p.pid for p in psutil.Process(self.pid).children()
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(p.cmdline())]

    def open_page(self) -> str:
        """Load the page as a browser would (its notebook runs in a new kernel); the kernel's id."""
        status, _, body = get(self.port, "/", timeout=STARTUP_S)
        assert status == 200
        config = re.search(rb'<script id="jupyter-config-data" type="application/json">(.*?)</script>', body, re.S)
        return json.loads(config.group(1))["kernelId"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m helpers explore --no-browser` with a short kernel idle time; stopped with its kernels afterwards."""
    port, log = page.free_port(), tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "helpers", "explore", "--port", str(port), "--no-browser",
                                 "--kernel-idle-timeout", str(IDLE_S)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        def listening() -> bool:
            assert proc.poll() is None, f"the explorer server stopped: {log.read_text()[-2000:]}"
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_until(listening, STARTUP_S, "the explorer server did not listen")
        yield Server(port, proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


class Kernel:
    """The page's kernel over its websocket, as the page's widget manager talks to it (the binary protocol
    JupyterLab's front end speaks)."""

    PROTOCOL = "v1.kernel.websocket.jupyter.org"

    def __init__(self, server: Server, kernel_id: str) -> None:
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}",
            timeout=TIMEOUT_S, subprotocols=[self.PROTOCOL])
        self.states: dict[str, dict] = {}

    def send(self, msg_type: str, content: dict, buffers: tuple[bytes, ...] = ()) -> None:
        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "", "session": "test",
                  "version": "5.3", "date": "2026-01-01T00:00:00Z"}
        parts = [json.dumps(part).encode() for part in (header, {}, {}, content)]
        self.ws.send_binary(serialize_msg_to_ws_v1([*parts, *buffers], "shell"))

    def receive(self) -> dict:
        _, parts = deserialize_msg_from_ws_v1(self.ws.recv())
        return {"header": json.loads(parts[0]), "content": json.loads(parts[3]), "buffers": parts[4:]}

    def updates(self, done, timeout: float = 60) -> list[tuple[str, dict]]:
        """Read the kernel's widget updates ``(comm_id, state)`` (kept in :attr:`states`) until ``done(them)``."""
        seen, deadline = [], time.monotonic() + timeout
        while not done(seen):
            assert time.monotonic() < deadline, f"the kernel did not answer as expected; it sent {seen}"
            msg = self.receive()
            data = msg["content"].get("data", {})
            if msg["header"]["msg_type"] == "comm_msg" and data.get("method") == "update":
                comm = msg["content"]["comm_id"]
                self.states.setdefault(comm, {}).update(data["state"])
                seen.append((comm, data["state"]))
        return seen

    def widgets(self) -> dict[str, dict]:
        """Every widget's state, as the page asks for them when it opens."""
        self.send("comm_info_request", {"target_name": "jupyter.widget"})
        while (msg := self.receive())["header"]["msg_type"] != "comm_info_reply":
            pass
        comms = list(msg["content"]["comms"])
        for comm in comms:
            self.send("comm_msg", {"comm_id": comm, "data": {"method": "request_state"}})
        self.updates(lambda _: set(comms) <= set(self.states))
        return self.states

    def find(self, css_class: str) -> str:
        """The comm id of the widget with ``xai-<css_class>``."""
        [comm] = [c for c, s in self.states.items() if f"xai-{css_class}" in s.get("_dom_classes", ())]
        return comm

    def set(self, comm: str, state: dict, buffer_paths: list | None = None, buffers: tuple[bytes, ...] = ()) -> None:
        """What the page sends when the user changes a widget (or a hostile page forges it)."""
        self.send("comm_msg", {"comm_id": comm, "data": {"method": "update", "state": state,
                                                         "buffer_paths": buffer_paths or []}}, buffers)

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def kernel(server):
    """One page opened and its kernel connected, its widgets' states read."""
    k = Kernel(server, server.open_page())
    k.widgets()
    yield k
    k.close()


def test_a_forged_host_is_refused_for_every_url_and_starts_no_kernel(server) -> None:
    before = server.kernels()
    for host in (h.format(port=server.port) for h in FORGED_HOSTS):
        for path in ("/", "/voila/templates/lab/static/voila.js", "/api/kernels/x"):
            assert get(server.port, path, host)[0] == 403, (host, path)
        with pytest.raises(websocket.WebSocketBadStatusException, match="403"):
            websocket.create_connection(f"ws://127.0.0.1:{server.port}/api/kernels/{uuid.uuid4()}/channels",
                                        timeout=TIMEOUT_S, host=host)
    for host in ("localhost", "127.0.0.1", "[::1]"):
        assert get(server.port, "/voila/templates/lab/static/voila.js", f"{host}:{server.port}")[0] == 200
    assert server.kernels() == before


def test_malformed_urls_get_a_4xx_at_once_and_leave_no_kernel(server) -> None:
    before = server.kernels()
    for path in ("/?template=nope", "/?template=../..", "/?theme=dark", "/voila/templates/x", "/%00",
                 "/%0d%0aSet-Cookie:%20injected=1", "/x", "/voila/templates/lab/static/../../../../etc/passwd",
                 "/voila/templates/lab/x/y", "/voila/static/%00", "/voila/files/explorer.ipynb", "/api/kernels/x"):
        status, headers, _ = get(server.port, path)
        assert 400 <= status < 500 and "injected" not in str(headers), (path, status)
    # a page load that another web site's page started (a hidden <img> or <iframe>) runs nothing
    assert get(server.port, "/", headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert server.kernels() == before


def test_an_abandoned_pages_kernel_is_culled_after_the_idle_time(server) -> None:
    before = set(server.kernels())
    server.open_page()  # and never connect: a page closed at once, or a script's GET
    [new] = wait_until(lambda: set(server.kernels()) - before, TIMEOUT_S, "no kernel started")
    wait_until(lambda: new not in server.kernels(), 3 * IDLE_S + TIMEOUT_S, "the abandoned kernel was not culled")


def test_the_page_opens_at_the_thesis_a_with_the_predicted_a_beside_it(kernel) -> None:
    assert kernel.states[kernel.find("alpha")]["value"] == 0.7
    assert kernel.states[kernel.find("predicted-alpha")]["value"].startswith("predicted a = ")


def test_forged_slider_values_are_refused_in_the_kernel(kernel) -> None:
    slider = kernel.find("alpha")

    def captions(seen) -> list[str]:
        return [v for _, s in seen if isinstance(v := s.get("value"), str) and v.startswith("<b>hybrid (a =")]

    kernel.set(slider, {"value": "nan"})  # a float trait casts the string: the hybrid would be a NaN map
    kernel.set(slider, {"max": 5.0, "value": 5.0})  # the range is the kernel's, not the page's
    kernel.set(slider, {"value": 0.25})
    seen = kernel.updates(lambda seen: "<b>hybrid (a = 0.25)</b>" in captions(seen))
    assert captions(seen) == ["<b>hybrid (a = 0.25)</b>"]
    assert 0.7 in [s["value"] for c, s in seen if c == slider and "value" in s]  # the page's slider is set back


def test_uploads_are_read_up_to_the_limit_and_refused_with_their_size_beyond(kernel) -> None:
    upload, photo, message = kernel.find("upload"), kernel.find("photo"), kernel.find("message")

    def send(name: str, content: bytes) -> None:
        entry = {"name": name, "type": "image/png", "size": len(content), "last_modified": 0, "content": None}
        kernel.set(upload, {"value": [entry]}, [["value", 0, "content"]], (content,))

    noise = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG", compress_level=0)
    big = buffer.getvalue()
    assert 10 * 2**20 < len(big) <= MAX_UPLOAD_BYTES  # over tornado's default websocket limit of 10 MiB
    send("big.png", big)
    kernel.updates(lambda seen: any("upload: big.png" in s.get("_options_labels", ()) for c, s in seen if c == photo))
    send("huge.png", big + b"\0" * (MAX_UPLOAD_BYTES + 1 - len(big)))
    [text] = [s["value"] for c, s in kernel.updates(lambda seen: any(c == message for c, _ in seen)) if c == message]
    assert f"upload refused: huge.png: {(MAX_UPLOAD_BYTES + 1) / 2**20:.1f} MiB is over the upload limit" in text


def test_the_server_listens_on_the_given_port_or_exits(tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(page.voila_command(port), cwd=ROOT, capture_output=True, text=True, timeout=STARTUP_S,
                              env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert done.returncode == 1 and "no available port" in done.stderr  # never quietly on port + 1
    assert "is running at" not in done.stderr


@pytest.fixture()
def no_server(monkeypatch):
    monkeypatch.setattr(page.os, "execve", lambda *a: pytest.fail("the server was started"))


def one_line_error(capsys, argv: list[str]) -> str:
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1, (status, out, err)
    return err.strip()


def test_a_busy_port_is_refused_in_one_line(capsys, no_server) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = one_line_error(capsys, ["explore", "--port", str(port), "--no-browser"])
    assert err == f"error: port {port} on 127.0.0.1 is in use; give another --port, or none for a free one"


@pytest.mark.parametrize("port", ["70000", "65536", "0", "-1", "http"])
def test_a_port_outside_1_65535_is_refused_in_one_line(capsys, no_server, port) -> None:
    assert "--port" in one_line_error(capsys, ["explore", "--port", port, "--no-browser"])
