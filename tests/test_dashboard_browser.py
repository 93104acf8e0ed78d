"""The dashboard in a real browser: `streamlit run` on fixture exports, headless Chromium, a screenshot.

Chromium's one-shot `--screenshot` (even with --virtual-time-budget) captures Streamlit's loading
skeleton: virtual time runs out without waiting for the app's websocket. So the test drives the
same headless Chromium over the DevTools protocol (a websocket; `websockets` ships with streamlit),
waits until Plotly has drawn the traces, and only then takes the screenshot.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fixtures_results import write_good

from dashboards import charts

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
PLOTTED = ("document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 3 && "
           "!document.querySelector('[data-testid=\"stStatusWidget\"]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, and its children, by its process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_for(check, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class DevTools:
    """The few DevTools protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.n = 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self.n:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def js(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


def near(img: np.ndarray, hex_color: str, tol: int = 10) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img[..., :3].astype(int) - rgb).max(-1) <= tol).sum())


def test_dashboard_renders_the_ablation_chart_in_chromium(tmp_path):
    connect = pytest.importorskip("websockets.sync.client").connect
    from PIL import Image

    results = tmp_path / "results"
    write_good(results)
    port = free_port()
    env = {**os.environ, "SALGL_RESULTS_DIR": str(results)}
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboards" / "app.py"), "--server.port", str(port),
         "--server.headless", "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    browser = None
    try:
        wait_for(lambda: server.poll() is not None or healthy(f"http://127.0.0.1:{port}/_stcore/health"), 45,
                 "the streamlit server")
        assert server.poll() is None, (tmp_path / "streamlit.log").read_text()
        profile = tmp_path / "chromium-profile"
        browser = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
             "--window-size=1400,1800", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        active = profile / "DevToolsActivePort"
        wait_for(lambda: active.exists() and active.read_text().strip(), 30, "chromium's DevTools port")
        dt_port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{dt_port}/json", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            devtools = DevTools(ws)
            devtools.call("Page.enable")
            url = f"http://127.0.0.1:{port}/"
            # A fresh server can leave the first page load blank: load again if nothing is drawn.
            for attempt in range(2):
                devtools.call("Page.navigate", url=url)
                try:
                    wait_for(lambda: devtools.js(PLOTTED), 40, "plotly traces on the page")
                    break
                except AssertionError:
                    if attempt == 1:
                        raise
            time.sleep(1.0)  # let plotly finish its draw and the fonts settle
            png = base64.b64decode(devtools.call("Page.captureScreenshot", format="png")["data"])
            (tmp_path / "dashboard.png").write_bytes(png)
            box = devtools.js("(() => { const r = document.querySelector('.js-plotly-plot')"
                              ".getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })()")
            page_text = devtools.js("document.body.innerText")
            n_plots = devtools.js("document.querySelectorAll('.js-plotly-plot').length")
    finally:
        if browser is not None:
            stop(browser)
        stop(server)
        log.close()

    # The DOM: the newest run (the synthetic scene_count study), its no-reference note, several charts.
    assert "scene_count · 2025-06-03_0900" in page_text
    assert "The paper reports no mAP for synthetic" in page_text
    assert n_plots >= 3
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert img.shape[1] == 1400
    # The pixels: not blank, and the ablation chart shows the seed points, the mean and the paper star.
    assert (img < 240).any(-1).mean() > 0.03
    left, top, right, bottom = (int(round(v)) for v in box)
    chart = img[max(top, 0):bottom, max(left, 0):right]
    assert chart.size and bottom - top > 300
    assert len(np.unique(chart.reshape(-1, 3), axis=0)) > 200
    for color in (charts.SEED_COLORS[0], charts.SEED_COLORS[1], charts.MEAN_COLOR, charts.PAPER_COLOR):
        assert near(chart, color) > 30, f"colour {color} missing from the rendered chart"
