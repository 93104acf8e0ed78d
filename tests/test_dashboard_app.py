"""dashboards/app.py through Streamlit's AppTest, on demo exports written into tmp_path."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dashboards import files, paths
from dashboards.demo import synthetic_final, write_all, write_damaged_epochs, write_good
from dashboards.paper import load_paper_tables
from dashboards.runs import load_run

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "dashboards" / "app.py")


def start(monkeypatch, root: Path, run: str | None = None):
    monkeypatch.setenv(paths.ENV_VAR, str(root))
    at = AppTest.from_file(APP, default_timeout=30).run()
    if run is not None:
        at.sidebar.selectbox(key="run").select(run).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def spec(at, key: str) -> dict:
    charts_ = [c for c in at.get("plotly_chart") if key in c.proto.id]
    assert charts_, f"no plotly chart with key {key}"
    return json.loads(charts_[0].proto.spec)


def values(v) -> list:
    """Trace data as a list, whether plotly wrote it as a list or as a typed array."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    write_all(tmp_path / "results")
    return tmp_path / "results"


def test_synthetic_ablation_chart_holds_the_exported_values(monkeypatch, results):
    at = start(monkeypatch, results, "scene_count/2025-06-03_0900")
    assert not at.error, texts(at.error)
    fig = spec(at, "ablation_chart")
    traces = {t["name"]: t for t in fig["data"]}
    for seed in (0, 1):
        t = traces[f"seed {seed}"]
        assert values(t["x"]) == ["1", "2", "4"]
        assert values(t["y"]) == [synthetic_final(k, seed) for k in (1, 2, 4)]
    mean = traces["mean ± std over seeds"]
    assert values(mean["y"]) == pytest.approx([np.mean([synthetic_final(k, s) for s in (0, 1)]) for k in (1, 2, 4)])
    assert values(mean["error_y"]["array"]) == pytest.approx([np.std([synthetic_final(k, s) for s in (0, 1)],
                                                                     ddof=1) for k in (1, 2, 4)])
    assert values(traces["paper's configuration"]["x"]) == ["4"]
    # No paper number for synthetic data: no line, a plain note, and the COCO table for context.
    assert not fig["layout"].get("shapes")
    assert "The paper reports no mAP for synthetic" in texts(at.info)
    assert any("ML-GCN" in df.value["method"].tolist() for df in at.dataframe if "method" in df.value)
    # Selectable metrics re-plot from the same trials.
    at.selectbox(key="ablation_metric").select("CF1").run()
    traces = {t["name"]: t for t in spec(at, "ablation_chart")["data"]}
    assert values(traces["seed 0"]["y"]) == [round(synthetic_final(k, 0) * 0.9, 3) for k in (1, 2, 4)]
    assert "scene_nmi" in at.selectbox(key="ablation_metric").options


def test_coco_reference_line_and_difference(monkeypatch, results):
    at = start(monkeypatch, results, "graph_depth/2025-05-20_0900")
    assert not at.error, texts(at.error)
    fig = spec(at, "ablation_chart")
    (line,) = fig["layout"]["shapes"]
    assert line["y0"] == line["y1"] == 85.8
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["SALGL paper (mAP)"] == "85.8"
    assert metrics["ours − paper, paper's config"] == "-0.30"
    # OF1 compares with the paper's OF1 for the same setting.
    at.selectbox(key="ablation_metric").select("OF1").run()
    assert spec(at, "ablation_chart")["layout"]["shapes"][0]["y0"] == 82.4
    # Learning curves carry the published COCO reproduction (its epoch 0 drawn at 1).
    curves = {t["name"]: t for t in spec(at, "curves_chart")["data"]}
    ref = curves["published COCO reproduction (best EMA mAP so far)"]
    paper = load_paper_tables()
    assert values(ref["y"]) == paper.curve["best_ema_mAP"].tolist()
    assert values(ref["x"])[:2] == [1, 2]
    # Scene heatmap with the COCO label names and the exported probabilities.
    heat = spec(at, "cooc_chart")["data"][0]
    scene = json.loads((results / "graph_depth/2025-05-20_0900/scenes/gd_3_0.json").read_text())
    assert heat["x"][:3] == ["person", "bicycle", "car"]
    assert heat["z"] == scene["cooccurrence_prob"][0]
    assert values(spec(at, "usage_chart")["data"][0]["y"]) == pytest.approx(np.round(
        np.array(scene["scene_usage"]) * 100, 2).tolist())
    assert not [c for c in at.get("plotly_chart") if "contingency_chart" in c.proto.id]


def test_synthetic_scenes_and_trial_table(monkeypatch, results):
    at = start(monkeypatch, results, "scene_count/2025-06-03_0900")
    scene = json.loads((results / "scene_count/2025-06-03_0900/scenes/sc_4_0.json").read_text())
    cont = spec(at, "contingency_chart")["data"][0]
    assert cont["z"] == scene["contingency"]
    assert any(m.label == "NMI (learned vs true scene)" and m.value == "0.800" for m in at.metric)
    key = "scene_k::scene_count/2025-06-03_0900"
    at.selectbox(key=key).select(2).run()
    assert spec(at, "cooc_chart")["data"][0]["z"] == scene["cooccurrence_prob"][2]
    at.radio(key="scene_mode::scene_count/2025-06-03_0900").set_value("difference to the mean over scenes").run()
    prob = np.array(scene["cooccurrence_prob"])
    assert np.allclose(spec(at, "cooc_chart")["data"][0]["z"], prob[2] - prob.mean(0), atol=1e-4)
    # Trial table: filter by seed, download what is shown.
    seed_filter = at.multiselect(key="f_seed::scene_count/2025-06-03_0900")
    seed_filter.unselect(1.0 if 1.0 in seed_filter.value else 1).run()
    shown = [df.value for df in at.dataframe if "is_paper_config" in df.value and "best_mAP" in df.value]
    assert shown and shown[0]["trial_id"].tolist() == ["sc_1_0", "sc_2_0", "sc_4_0"]
    assert at.get("download_button")


def test_momentum_study_is_flagged_as_ours_and_running(monkeypatch, results):
    at = start(monkeypatch, results)  # the newest run is the RUNNING momentum study
    assert at.sidebar.selectbox(key="run").value == "momentum/2025-06-04_0900"
    info = texts(at.info)
    assert "comat_momentum is our knob, not the paper's" in info
    assert "says RUNNING (2 of 4 trials finished)" in info
    warnings = texts(at.warning)
    assert "scene_count/2025-06-02_0900/study.json: is not valid JSON" in warnings
    assert "momentum/2025-06-04_0900" not in warnings
    traces = {t["name"]: t for t in spec(at, "ablation_chart")["data"]}
    assert values(traces["not finished (RUNNING)"]["y"]) == [55.7]
    assert not at.error


def test_tune_study_plots_metric_against_each_parameter(monkeypatch, results):
    at = start(monkeypatch, results, "tune/2025-05-25_0900")
    fig = spec(at, "search_chart")
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles == ["lr", "num_scenes"]
    assert fig["layout"]["xaxis"]["type"] == "log"
    trials = load_run(results / "tune/2025-05-25_0900").trials
    ys = sorted(y for t in fig["data"] if t["xaxis"] == "x" and t["name"] != "best trial" for y in values(t["y"]))
    assert ys == sorted(trials["mAP"].tolist())
    assert not at.error


def test_damaged_and_empty_results_give_messages(monkeypatch, tmp_path):
    write_damaged_epochs(tmp_path / "damaged")
    at = start(monkeypatch, tmp_path / "damaged")
    warnings = texts(at.warning)
    assert "damaged/graph_depth/2025-06-01_0900/epochs.csv: column mAP has 1 non-numeric value(s)" in warnings
    assert "'oops' on line 4" in warnings
    assert spec(at, "curves_chart")["data"]

    # A file of another layout: the run still opens and the message names the file and what it lacks.
    d = tmp_path / "damaged/graph_depth/2025-06-01_0900"
    (d / "epochs.csv").write_text("id,epoch,score\ngds_0_0,1,50\n")
    at = start(monkeypatch, tmp_path / "damaged")
    assert "graph_depth/2025-06-01_0900/epochs.csv: lacks the column(s) trial_id, lr" in texts(at.warning)
    assert "epochs.csv has no rows yet" in texts(at.info)
    assert spec(at, "ablation_chart")["data"] and not at.error

    (tmp_path / "empty").mkdir()
    at = start(monkeypatch, tmp_path / "empty")
    assert "No study runs in" in texts(at.info)
    assert not at.error

    at = start(monkeypatch, tmp_path / "missing")
    assert "missing: the results folder does not exist" in texts(at.error)

    # A scenes file that is not valid JSON: that view says so, the others still draw.
    write_good(tmp_path / "good")
    bad_scene = tmp_path / "good/scene_count/2025-06-03_0900/scenes/sc_4_0.json"
    bad_scene.write_text("{")
    at = start(monkeypatch, tmp_path / "good", "scene_count/2025-06-03_0900")
    assert "Scene analysis: scene_count/2025-06-03_0900/scenes/sc_4_0.json: is not valid JSON" in texts(at.error)
    assert spec(at, "ablation_chart")["data"]


def test_sidebar_box_overrides_the_environment(monkeypatch, tmp_path, results):
    (tmp_path / "empty").mkdir()
    at = start(monkeypatch, tmp_path / "empty")
    at.sidebar.text_input(key="results_dir").input(str(results)).run()
    assert not at.exception
    assert at.sidebar.selectbox(key="run").options[0].startswith("momentum/2025-06-04_0900")
    assert len(at.sidebar.selectbox(key="run").options) == 5



def rewrite_like_the_export(path: Path, rows: list[dict]) -> None:
    """What studies/export.py does: write a new file, rename it over the old one (a newer mtime)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue())
    later = path.stat().st_mtime_ns + 10**9
    os.utime(tmp, ns=(later, later))
    tmp.replace(path)


def test_widget_clicks_reuse_the_parsed_run_until_its_files_change(monkeypatch, tmp_path):
    reads: list[str] = []
    real = files.read_csv_table

    def counting(path, *args, **kwargs):
        reads.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(files, "read_csv_table", counting)
    d = write_good(tmp_path / "results")["scene_count"]
    at = start(monkeypatch, tmp_path / "results", "scene_count/2025-06-03_0900")
    assert {"trials.csv", "epochs.csv"} <= set(reads)
    n = len(reads)
    at.selectbox(key="ablation_metric").select("CF1").run()
    at.selectbox(key="scene_k::scene_count/2025-06-03_0900").select(2).run()
    at.checkbox(key="f_allcols").check().run()
    at.selectbox(key="ablation_metric").select("mAP").run()
    assert len(reads) == n and not at.exception
    # A running study's export rewrites trials.csv: the next rerun reads it again and shows the new value.
    with open(d / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[0]["mAP"] = "61.5"
    rewrite_like_the_export(d / "trials.csv", rows)
    at.run()
    assert len(reads) > n and "trials.csv" in reads[n:]
    seed0 = {t["name"]: t for t in spec(at, "ablation_chart")["data"]}["seed 0"]
    assert values(seed0["y"])[0] == 61.5


def test_results_folder_is_shown_relative_to_the_repository(monkeypatch, tmp_path):
    """The sidebar and the messages never show where the repository is checked out."""
    repo = tmp_path / "checkout"
    write_good(repo / "results")
    shutil.copytree(REPO / "results" / "paper", repo / "results" / "paper")
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    monkeypatch.setattr(paths, "DEFAULT_RESULTS_DIR", repo / "results")
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception and not at.warning, texts(at.warning)
    assert at.sidebar.text_input(key="results_dir").value == "results"
    assert "3 run(s) in results" in texts(at.sidebar.caption)
    shown = [texts(at.sidebar.caption), texts(at.caption), texts(at.info), texts(at.error),
             texts(at.sidebar.selectbox)]
    assert not any(str(repo) in t for t in shown)
    # A relative $SALGL_RESULTS_DIR (as `make dashboard-demo` sets it) is shown as it is.
    write_good(repo / ".cache" / "demo_results")
    monkeypatch.setenv(paths.ENV_VAR, ".cache/demo_results")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert at.sidebar.text_input(key="results_dir").value == ".cache/demo_results"
    assert "3 run(s) in .cache/demo_results" in texts(at.sidebar.caption)
    (tmp_path / "checkout" / "empty").mkdir()
    at.sidebar.text_input(key="results_dir").input("empty").run()
    assert "No study runs in empty yet" in texts(at.info) and str(repo) not in texts(at.info)
