"""The explorer's server for real: `python -m helpers explore` on 127.0.0.1, probed over HTTP and its websocket.

One server for the module, started with an address-space limit per process (the server and each kernel)
in its own process group, which is killed afterwards with its kernels; every request has a timeout.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket
from tornado.httputil import HTTPHeaders, HTTPServerRequest

from helpers.config import ROOT
from helpers.teaching.explorer import free_port
from helpers.teaching.explorer_server import MAX_KERNELS, refusal

#: Address space per process: a kernel with torch maps ~6 GB of it and uses ~1.5 GB.
ADDRESS_SPACE = 12 * 2**30
STARTUP_S, IDLE_S, TIMEOUT_S = 120, 4, 20
FORGED = ("rebind.attacker.example", "rebind.attacker.example:80", "localhost.attacker.example", "127.0.0.2")


def limited() -> None:
    """In the child: the address-space limit, and a lower priority."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    os.nice(10)


def stop(proc: subprocess.Popen) -> None:
    """End ``proc``'s whole process group and its kernels (which jupyter_client starts in sessions of their own)."""
    left = kernel_pids(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass
    for pid in left:
        try:
            if b"ipykernel_launcher" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:  # already gone
            pass


def explore(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "helpers", "explore", "--no-browser", *args], cwd=ROOT,
                            start_new_session=True, preexec_fn=limited, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m helpers explore --no-browser --kernel-idle-timeout 4`: (base URL, its process id)."""
    port, log = free_port(), tmp_path_factory.mktemp("explorer") / "server.log"
    with log.open("w") as out:
        proc = explore("--port", str(port), "--kernel-idle-timeout", str(IDLE_S), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                requests.get(f"{url}/voila/static/voila.js", timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        assert log.read_text().startswith(f"explorer: {url}/ ")
        yield url, proc.pid
    finally:
        stop(proc)


def kernel_pids(server: int) -> list[int]:
    """The kernels of the server process ``server`` (its children running ipykernel; each in its own session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == server \
                    and b"ipykernel_launcher" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except (OSError, IndexError, ValueError):  # ended meanwhile
            pass
    return pids


def kernels(server: int) -> int:
    """How many kernels the server process ``server`` runs."""
    return len(kernel_pids(server))


def get(url: str, path: str, **headers: str) -> int:
    """The status of ``GET path`` sent as it is (no client normalises it), ``headers`` as given (Host too)."""
    connection = http.client.HTTPConnection(*url.split("//")[1].split(":"), timeout=TIMEOUT_S)
    try:
        connection.request("GET", path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_only_loopback_hosts_and_no_cross_site_requests_are_served(server) -> None:
    url, pid = server
    port = url.rsplit(":", 1)[1]
    websocket_path = f"/api/kernels/{uuid.uuid4()}/channels"
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    before = kernels(pid)
    for host in FORGED:
        assert get(url, "/", Host=host) == 403, host  # DNS rebinding: the name resolves to 127.0.0.1
        assert get(url, "/voila/static/voila.js", Host=host) == 403, host
        assert get(url, websocket_path, Host=host, **upgrade) == 403, host
    assert get(url, "/", **{"Sec-Fetch-Site": "cross-site"}) == 403
    assert get(url, websocket_path, **{"Sec-Fetch-Site": "cross-site"}, **upgrade) == 403
    assert kernels(pid) == before == 0  # no kernel was started
    for host in ("localhost", f"localhost:{port}", f"LOCALHOST:{port}", "127.0.0.1", f"127.0.0.1:{port}", "[::1]",
                 f"[::1]:{port}"):
        assert get(url, "/voila/static/voila.js", Host=host) == 200, host
    assert get(url, "/voila/static/voila.js", **{"Sec-Fetch-Site": "same-origin"}) == 200


def test_malformed_urls_get_400_or_404_and_leave_no_kernel(server) -> None:
    url, pid = server
    expected = {"/?template=nope": 400, "/?template=../..": 400, "/?": 400, "/?theme=dark": 400,
                "/voila/templates/x": 404, "/voila/templates/nope/static/x.css": 404, "/%00": 404, "/a%0d%0ab": 404,
                "/voila/static/%2e%2e/%2e%2e/app.py": 404, "/foo": 404, "/explorer.ipynb": 404,
                "/voila/files/explorer.ipynb": 404, "/voila/render/explorer.ipynb": 404, "/login": 404,
                "/api/kernels": 404, "/voila/static/voila.js": 200}
    assert {path: get(url, path) for path in expected} == expected
    time.sleep(1)
    assert kernels(pid) == 0


def test_a_page_has_one_kernel_takes_large_messages_and_its_kernel_goes_when_it_is_left(server) -> None:
    url, pid = server
    page = requests.get(f"{url}/", timeout=STARTUP_S)
    assert page.status_code == 200 and kernels(pid) == 1
    assert "checking the parts" not in page.text and "it/s" not in page.text  # progress is the terminal's
    kernel = re.search(r'"kernelId": "([0-9a-f-]+)"', page.text).group(1)
    ws = websocket.create_connection(f"ws://{url.split('//')[1]}/api/kernels/{kernel}/channels", timeout=60)
    try:  # a 12 MiB message (a 12 MiB photo's upload is one): over tornado's default 10 MiB limit
        ws.send(json.dumps({"header": {"msg_id": "large", "msg_type": "kernel_info_request", "username": "",
                                       "session": "test", "version": "5.3", "date": ""},
                            "parent_header": {}, "metadata": {"padding": "x" * 12 * 2**20}, "content": {},
                            "channel": "shell", "buffers": []}))
        deadline = time.monotonic() + 60
        while True:
            reply = json.loads(ws.recv())
            if reply.get("parent_header", {}).get("msg_id") == "large" and reply["msg_type"] == "kernel_info_reply":
                break
            assert time.monotonic() < deadline, "no reply to the large message"
    finally:
        ws.close()
    deadline = time.monotonic() + 60  # left: culled after IDLE_S idle seconds (checked every IDLE_S // 2)
    while kernels(pid):
        assert time.monotonic() < deadline, "the left page's kernel was not shut down"
        time.sleep(0.5)


def test_a_new_page_over_the_kernel_limit_gets_503() -> None:
    def request(path: str, host: str = "127.0.0.1:8866") -> HTTPServerRequest:
        return HTTPServerRequest("GET", path, headers=HTTPHeaders({"Host": host}))

    assert refusal(request("/"), MAX_KERNELS - 1) is None and refusal(request("/"), MAX_KERNELS) == 503
    assert refusal(request("/voila/static/voila.js"), MAX_KERNELS) is None  # open pages still load
    assert refusal(request("/", "evil.example"), 0) == 403 and refusal(request("/x"), 0) == 404


def test_explore_refuses_ports_out_of_range_and_a_busy_port_in_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        runs = {p: explore("--port", p, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for p in ("70000", "-1", "0", str(port))}
        try:
            done = {p: proc.communicate(timeout=120) + (proc.returncode,) for p, proc in runs.items()}
        finally:
            for proc in runs.values():
                stop(proc)
    for p in ("70000", "-1", "0"):
        assert done[p] == ("", f"error: --port {p} is not a TCP port (1-65535)\n", 2)
    assert done[str(port)] == ("", f"error: port {port} on 127.0.0.1 is in use; choose another --port or leave "
                                   "it out\n", 2)
