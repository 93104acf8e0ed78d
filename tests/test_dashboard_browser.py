"""The dashboard in a real browser: `streamlit run` on demo exports, the system's headless Chromium, a screenshot.
The first view is the ablation view of the newest healthy run: its verdict table, its chart and its forest plot.

Playwright drives the installed Chromium (`executable_path`), so nothing is downloaded. Chromium's
one-shot `--screenshot` is not enough: it captures Streamlit's loading skeleton before the app's
websocket has delivered the page, so the test waits until Plotly has drawn the traces.
"""

from __future__ import annotations

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

from dashboards.charts import figures
from dashboards.charts import stats as chart_stats
from dashboards.demo import write_all
from dashboards.shaping import stats as S
from dashboards.shaping.texts import REPORTED_CARD, REPORTED_CARD_NOTE, REPORTED_LABEL

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")]
# The ablation chart is drawn: several traces, the paper's star among the points, fonts in, no rerun pending.
DRAWN = ("document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 3 && "
         "document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length >= 10 && "
         "document.querySelectorAll('.st-key-forest_chart .js-plotly-plot .scatterlayer .point').length >= 2 && "
         "document.fonts.status === 'loaded' && "
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


def near(img: np.ndarray, hex_color: str, tol: int = 10) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img[..., :3].astype(int) - rgb).max(-1) <= tol).sum())


def test_the_demo_opens_on_a_healthy_ablation_chart_in_chromium(tmp_path):
    """What `make dashboard-demo` shows first: the newest healthy run, no warning in sight, its chart drawn."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (it drives the "
                                                                  "system chromium: no browser download)")
    from PIL import Image

    results = tmp_path / "results"
    write_all(results)  # the demo's data, damaged runs included
    port = free_port()
    env = {**os.environ, "SALGL_RESULTS_DIR": str(results)}
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboards" / "app.py"), "--server.port", str(port),
         "--server.headless", "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: server.poll() is not None or healthy(f"http://127.0.0.1:{port}/_stcore/health"), 45,
                 "the streamlit server")
        assert server.poll() is None, (tmp_path / "streamlit.log").read_text()
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.goto(f"http://127.0.0.1:{port}/")
                try:
                    page.wait_for_function(DRAWN, timeout=40_000)
                except sync_api.TimeoutError:
                    # A fresh server can leave the first page load blank: load once more.
                    page.reload()
                    page.wait_for_function(DRAWN, timeout=40_000)
                png = page.screenshot()
                (tmp_path / "dashboard.png").write_bytes(png)
                box = page.locator(".js-plotly-plot").first.bounding_box()
                forest_box = page.locator(".st-key-forest_chart .js-plotly-plot").bounding_box()
                verdict_table = page.locator('[data-testid="stMain"] [data-testid="stTable"]')
                verdicts, table_box = verdict_table.inner_text(), verdict_table.bounding_box()
                page_text = page.inner_text("body")
                n_plots = page.locator(".js-plotly-plot").count()
                alerts = {kind: [a.is_visible() for a in page.locator(f'[data-testid="stAlertContent{kind}"]').all()]
                          for kind in ("Warning", "Error")}
                main_alerts = page.locator('[data-testid="stMain"] [data-testid="stAlertContentWarning"]').count()
            finally:
                browser.close()
    finally:
        stop(server)
        log.close()

    # The DOM: the newest run (the synthetic scene_count study), its no-reference note, several charts.
    assert "scene_count · 2025-06-03_0900" in page_text
    assert "The paper reports no mAP for synthetic" in page_text
    assert n_plots >= 3
    # The reported number, named: the header card and the metric picker's default.
    assert REPORTED_CARD in page_text and REPORTED_CARD_NOTE in page_text and REPORTED_LABEL in page_text
    # No warning in sight: the unreadable demo run is named in a folded sidebar box.
    assert main_alerts == 0 and not any(alerts["Error"]) and alerts["Warning"] == [False]
    assert "1 folder(s) not listed" in page_text
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert img.shape[1] == 1400
    # The pixels: not blank, and the ablation chart shows the seed points, the mean and the paper star.
    assert (img < 240).any(-1).mean() > 0.03
    left, top = int(round(box["x"])), int(round(box["y"]))
    right, bottom = left + int(round(box["width"])), top + int(round(box["height"]))
    chart = img[max(top, 0):bottom, max(left, 0):right]
    assert chart.size and bottom - top > 300
    assert len(np.unique(chart.reshape(-1, 3), axis=0)) > 200
    for color in (figures.SEED_COLORS[0], figures.SEED_COLORS[1], figures.MEAN_COLOR, figures.PAPER_COLOR):
        assert near(chart, color) > 30, f"colour {color} missing from the rendered chart"

    # The verdict table above the charts: every arm, the reference starred, each verdict as analysis.json says.
    analysis = json.loads((results / "scene_count/2025-06-03_0900/analysis.json").read_text())
    assert "Verdicts on best EMA mAP (%): each arm against ★ num_scenes = 4" in page_text
    assert "4 ★" in verdicts and "the reference arm" in verdicts
    for c in analysis["comparisons"]:
        assert c["verdict"] in " ".join(verdicts.split()), c["verdict"]
    assert table_box["y"] + table_box["height"] <= box["y"], "the verdict table is not above the chart"
    # The forest plot beside the chart: the reference's zero line and one colour per verdict of the comparisons.
    left, top = int(round(forest_box["x"])), int(round(forest_box["y"]))
    forest = img[top:top + int(round(forest_box["height"])), left:left + int(round(forest_box["width"]))]
    assert forest.size and forest_box["height"] > 200 and abs(forest_box["y"] - box["y"]) < 5
    assert near(forest, figures.PAPER_COLOR) > 100, "the reference's zero line is missing from the forest plot"
    for kind in {S.comparison_kind(c) for c in analysis["comparisons"]}:
        color = chart_stats.VERDICT_COLORS[kind]
        assert near(forest, color) > 30, f"{kind} ({color}) missing from the rendered forest plot"
