"""The explorer page in a real headless Chromium: `python -m helpers explore` served, driven with Selenium.

Needs the Debian packages ``chromium`` and ``chromium-driver``; without them the test is skipped,
except under CI (``CI=true``), where it fails. ``XAI_EXPLORER_SCREENSHOT=results/explorer.png``
also saves a screenshot of the page after the faithfulness curves are drawn.
"""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from test_explorer_server import explore, stop

from helpers.config import ROOT
from helpers.evaluation.policy import THESIS_ALPHA
from helpers.teaching.explorer import free_port

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
INSTALL = "Chromium is missing: sudo apt-get install chromium chromium-driver"
STARTUP_S = 120

# the bytes of an <img> widget (its src is a blob: URL)
IMAGE_BYTES_JS = """
const done = arguments[arguments.length - 1];
fetch(document.querySelector(arguments[0]).src).then(r => r.arrayBuffer())
  .then(b => done(btoa(String.fromCharCode(...new Uint8Array(b))))).catch(e => done('error: ' + e));
"""

# the upload button opens a detached file input's dialog; put the input on the page instead, where
# Selenium can give it a file as a user would
SHOW_FILE_INPUT_JS = """
HTMLInputElement.prototype.click = function () {
  if (this.type === 'file') { this.style.display = 'block'; document.body.appendChild(this); }
};
"""

# from the page, send the kernel an execute_request (which must be dropped) and a kernel_info_request
# (which must be answered: the channel works); returns the message types that came back for each
PROBE_KERNEL_JS = """
const [code, done] = [arguments[0], arguments[arguments.length - 1]];
const id = JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId;
const ws = new WebSocket(`ws://${location.host}/api/kernels/${id}/channels`);
const seen = {execute: [], info: []};
const message = (msg_id, msg_type, content) => JSON.stringify({
  header: {msg_id, msg_type, username: '', session: 'probe', version: '5.3', date: new Date().toISOString()},
  parent_header: {}, metadata: {}, content, channel: 'shell', buffers: []});
ws.onmessage = e => { const m = JSON.parse(e.data), p = (m.parent_header || {}).msg_id;
  if (p in seen) seen[p].push(m.header.msg_type); };
ws.onopen = () => {
  ws.send(message('execute', 'execute_request', {code, silent: false, store_history: false, user_expressions: {},
                                                  allow_stdin: false, stop_on_error: true}));
  ws.send(message('info', 'kernel_info_request', {}));
  setTimeout(() => { ws.close(); done(seen); }, 3000);
};
ws.onerror = () => done('websocket error');
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m helpers explore --no-browser` on a free port (its log in a file, an address-space limit per
    process); stopped with its kernels afterwards."""
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{INSTALL} (CI must run the browser test)")
        pytest.skip(INSTALL)
    port, log = free_port(), tmp_path_factory.mktemp("explorer") / "server.log"
    with log.open("w") as out:
        proc = explore("--port", str(port), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                requests.get(f"{url}voila/static/voila.js", timeout=5)  # any answer: it listens
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        assert log.read_text().startswith(f"explorer: {url} ")
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser(server):
    """Headless Chromium on the page, once its widgets are drawn; quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1250"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(server)
        WebDriverWait(driver, STARTUP_S).until(lambda d: d.execute_script(
            "const i = document.querySelector('img.xai-hybrid'); return i && i.src.startsWith('blob:')"))
        yield driver
    finally:
        driver.quit()


def image_bytes(driver, selector: str) -> bytes:
    data = driver.execute_async_script(IMAGE_BYTES_JS, selector)
    assert not data.startswith("error"), data
    return base64.b64decode(data)


def changes(driver, selector: str, before: bytes, timeout: float = 30) -> bytes:
    """Wait until the picture under ``selector`` differs from ``before``; its new bytes."""
    deadline = time.monotonic() + timeout
    while (now := image_bytes(driver, selector)) == before:
        assert time.monotonic() < deadline, f"{selector} did not change"
        time.sleep(0.2)
    return now


def test_the_page_explores_reports_bad_uploads_and_runs_no_code(browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
    assert not errors, errors  # (network: the template's icon font from a CDN, absent offline)
    hybrid, gradcam = image_bytes(browser, "img.xai-hybrid"), image_bytes(browser, "img.xai-gradcam")
    assert hybrid[:8] == b"\x89PNG\r\n\x1a\n"
    # it opens at the thesis' a, the predicted a (or why there is none) beside the slider as text only
    text = browser.find_element(By.TAG_NAME, "body").text
    assert f"hybrid (a = {THESIS_ALPHA:.2f})" in text and "predicted a" in text
    assert browser.find_element(By.CSS_SELECTOR, ".xai-alpha .widget-readout").text == f"{THESIS_ALPHA:.2f}"
    assert hybrid != gradcam != image_bytes(browser, "img.xai-layercam")
    # progress goes to the server's terminal, never onto the page
    assert "checking the parts" not in text and "it/s" not in text
    assert not [e for e in browser.find_elements(By.CSS_SELECTOR, ".widget-progress") if e.is_displayed()]

    handle = browser.find_element(By.CSS_SELECTOR, ".xai-alpha .noUi-handle")
    handle.click()
    handle.send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT)  # a - 0.1
    changes(browser, "img.xai-hybrid", hybrid)
    assert image_bytes(browser, "img.xai-gradcam") == gradcam  # Grad-CAM does not depend on a
    handle.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # back to the thesis' a: the same picture
    WebDriverWait(browser, 30).until(lambda d: image_bytes(d, "img.xai-hybrid") == hybrid)

    if os.environ.get("XAI_EXPLORER_SCREENSHOT"):
        browser.find_element(By.CSS_SELECTOR, ".xai-faithfulness").click()
        WebDriverWait(browser, 120).until(
            lambda d: "AUC" in d.find_element(By.CSS_SELECTOR, ".xai-faithfulness-status").text)
        time.sleep(1)
        browser.save_screenshot(str(Path(ROOT, os.environ["XAI_EXPLORER_SCREENSHOT"])))

    Select(browser.find_element(By.CSS_SELECTOR, ".xai-top-classes select")).select_by_index(1)
    changes(browser, "img.xai-gradcam", gradcam)

    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 20)
    browser.execute_script(SHOW_FILE_INPUT_JS)
    browser.find_element(By.CSS_SELECTOR, ".xai-upload").click()
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(bad))
    WebDriverWait(browser, 30).until(lambda d: "corrupt.jpg" in d.find_element(By.CSS_SELECTOR, ".xai-message").text)
    assert "upload refused: corrupt.jpg: " in browser.find_element(By.CSS_SELECTOR, ".xai-message").text

    marker = tmp_path / "executed"
    seen = browser.execute_async_script(PROBE_KERNEL_JS, f"open({str(marker)!r}, 'w').close()")
    assert seen["execute"] == [] and "kernel_info_reply" in seen["info"] and not marker.exists()  # no code runs

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
    assert not errors, errors
