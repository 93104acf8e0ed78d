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

from dashboards.data import files, paths
from dashboards.data.paper import load_paper_tables
from dashboards.data.runs import load_run
from dashboards.demo import (
    synthetic_final,
    write_damaged_epochs,
    write_damaged_trials,
    write_good,
    write_synthetic_scene_count,
    write_tune,
)
from dashboards.shaping import scenes
from dashboards.shaping.texts import REPORTED_CARD, REPORTED_LABEL

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "dashboards" / "app.py")


def start(monkeypatch, root: Path, run: str | None = None, timeout: float = 30):
    """The app on the results folder `root`, showing `run` (<study>/<run>) or the one it opens on."""
    monkeypatch.setenv(paths.ENV_VAR, str(root))
    at = AppTest.from_file(APP, default_timeout=timeout).run()
    if run is not None:
        at.sidebar.selectbox(key="run").select(paths.display_path(root / run)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def key(widget: str, root: Path, run: str) -> str:
    """A per-run widget's key: the widget's name and the run folder as the dashboard shows it."""
    return f"{widget}::{paths.display_path(root / run)}"


def trials_csv(path: Path) -> list[dict[str, str]]:
    """trials.csv as the file holds it, read without the dashboard's reader."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


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


@pytest.mark.slow
def test_one_reported_metric_everywhere(monkeypatch, results):
    """The chart, the header card and the comparison table all show trials.csv's best_mAP_ema by default,
    and each names it as the paper's reported number."""
    at = start(monkeypatch, results, "scene_count/2025-06-03_0900")
    assert not at.error, texts(at.error)
    assert at.selectbox(key="ablation_metric").value == "best_mAP_ema"
    rows = trials_csv(results / "scene_count/2025-06-03_0900/trials.csv")
    fig = spec(at, "ablation_chart")
    traces = {t["name"]: t for t in fig["data"]}
    for seed in (0, 1):
        t = traces[f"seed {seed}"]
        assert values(t["x"]) == ["1", "2", "4"]
        assert values(t["y"]) == [float(r["best_mAP_ema"]) for r in rows if r["seed"] == str(seed)]
    ema = {k: [synthetic_final(k, s) + 0.2 for s in (0, 1)] for k in (1, 2, 4)}
    mean = traces["mean ± std over seeds"]
    assert values(mean["y"]) == pytest.approx([np.mean(ema[k]) for k in (1, 2, 4)])
    assert values(mean["error_y"]["array"]) == pytest.approx([np.std(ema[k], ddof=1) for k in (1, 2, 4)])
    # On synthetic data the starred arm is the synthetic preset's value (study.json paper_config), not the paper's.
    assert values(traces["synthetic preset's value"]["x"]) == ["4"] and "paper's configuration" not in traces
    assert fig["layout"]["yaxis"]["title"]["text"] == REPORTED_LABEL == "best EMA mAP (%), the paper's reported number"
    assert f"Plotted: {REPORTED_LABEL}" in texts(at.caption)
    # The header card: the same metric, labelled as what it is, the best single trial (one seed), not a mean.
    best = max(float(r["best_mAP_ema"]) for r in rows)
    card = next(m for m in at.metric if m.label == REPORTED_CARD)
    assert card.value == f"{best:.2f}" and REPORTED_CARD == "best single trial (EMA mAP)"
    assert "one seed's best_mAP_ema, the paper's reported number; not an arm's mean" in texts(at.caption)
    assert "one seed of one setting" in card.help and "Ablation tab's verdict table" in card.help
    # The comparison with the paper: synthetic runs are left out (no "ours" row), and a caption line says why.
    (table,) = [df.value for df in at.dataframe if "ours - SALGL paper" in df.value]
    ours = table[table["method"].str.startswith("ours")]
    assert ours["dataset"].tolist() == ["coco"] and "synthetic" not in set(table["dataset"])
    assert ours["mAP"].tolist() == [85.7]  # the demo's COCO run, the one that stands beside the paper
    assert f"mAP of our rows: {REPORTED_LABEL}" in texts(at.caption)
    assert "Left out: 5 run(s) on the embedded synthetic data or of named arms" in texts(at.caption)
    # No paper number for synthetic data: no line, a plain note, and the COCO table for context.
    assert not fig["layout"].get("shapes")
    assert "The paper reports no mAP for synthetic" in texts(at.info)
    assert any("ML-GCN" in df.value["method"].tolist() for df in at.dataframe if "method" in df.value)
    # Another metric only when the user picks it: the chart re-plots from the same trials and names it.
    at.selectbox(key="ablation_metric").select("CF1").run()
    fig = spec(at, "ablation_chart")
    traces = {t["name"]: t for t in fig["data"]}
    assert values(traces["seed 0"]["y"]) == [round(synthetic_final(k, 0) * 0.9, 3) for k in (1, 2, 4)]
    assert fig["layout"]["yaxis"]["title"]["text"] == "last-epoch CF1 (%)"
    at.selectbox(key="ablation_metric").select("mAP").run()
    traces = {t["name"]: t for t in spec(at, "ablation_chart")["data"]}
    assert values(traces["seed 1"]["y"]) == [synthetic_final(k, 1) for k in (1, 2, 4)]
    assert "scene NMI, learned vs true (0-1)" in at.selectbox(key="ablation_metric").options
    assert {m.label: m.value for m in at.metric}[REPORTED_CARD] == f"{best:.2f}"


@pytest.mark.slow
def test_coco_reference_line_and_difference(monkeypatch, results):
    at = start(monkeypatch, results, "graph_depth/2025-05-20_0900")
    assert not at.error, texts(at.error)
    fig = spec(at, "ablation_chart")
    (line,) = fig["layout"]["shapes"]
    assert line["y0"] == line["y1"] == 85.8
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["SALGL paper (mAP)"] == "85.8"
    assert metrics["ours − paper, paper's config"] == "-0.10"  # best EMA mAP 85.7 (the last epoch's mAP: 85.5)
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


@pytest.mark.slow
def test_synthetic_scenes_and_trial_table(monkeypatch, results):
    run = "scene_count/2025-06-03_0900"
    at = start(monkeypatch, results, run)
    scene = json.loads((results / run / "scenes/sc_4_0.json").read_text())
    cont = spec(at, "contingency_chart")["data"][0]
    assert cont["z"] == scene["contingency"]
    # The learned NMI beside both ends of its scale on the same images: random assignment and the oracle.
    metrics = [(m.label, m.value) for m in at.metric]
    i = metrics.index(("NMI, learned vs true scene", f"{scene['true_scene_nmi']:.3f}"))
    random_nmi = scenes.random_assignment_nmis(np.array(scene["contingency"])).mean()
    assert metrics[i + 1] == ("random assignment (same images)", f"{random_nmi:.3f}") and random_nmi < 0.05
    assert metrics[i + 2] == ("oracle (learned = true scenes)", "1")
    assert "Random assignment: the mean over 200 seeded shuffles" in texts(at.caption)
    assert "near 0 when they are unrelated" in texts(at.caption)
    # Fractional counts say why they are fractional.
    assert "soft counts, fractional because the EMA model keeps a moving average" in texts(at.caption)
    at.selectbox(key=key("scene_k", results, run)).select(2).run()
    assert spec(at, "cooc_chart")["data"][0]["z"] == scene["cooccurrence_prob"][2]
    at.radio(key=key("scene_mode", results, run)).set_value("difference to the mean over scenes").run()
    prob = np.array(scene["cooccurrence_prob"])
    assert np.allclose(spec(at, "cooc_chart")["data"][0]["z"], prob[2] - prob.mean(0), atol=1e-4)
    # Trial table: filter by seed, download what is shown.
    seed_filter = at.multiselect(key=key("f_seed", results, run))
    seed_filter.unselect(1.0 if 1.0 in seed_filter.value else 1).run()
    shown = [df.value for df in at.dataframe if "is_paper_config" in df.value and "best_mAP" in df.value]
    assert shown and shown[0]["trial_id"].tolist() == ["sc_1_0", "sc_2_0", "sc_4_0"]
    assert at.get("download_button")


def test_coco_cluster_trials_show_where_they_ran(monkeypatch, results):
    at = start(monkeypatch, results, "graph_depth/2025-05-20_0900")
    (rows,) = [df.value for df in at.dataframe if "is_paper_config" in df.value and "node_ip" in df.value]
    assert rows["node_ip"].tolist() == ["10.0.0.11", "10.0.0.12"] and rows["retries"].tolist() == [0, 1]
    assert rows["gpu_ids"].tolist() == ["0", "1"]
    assert "node IP and retries" in texts(at.caption)
    # A local run has no such columns: its table draws without them.
    at.sidebar.selectbox(key="run").select(paths.display_path(results / "scene_count/2025-06-03_0900")).run()
    (rows,) = [df.value for df in at.dataframe if "is_paper_config" in df.value and "best_mAP" in df.value]
    assert "node_ip" not in rows and "gpu_ids" in rows and not at.exception


@pytest.mark.slow
def test_momentum_study_is_flagged_as_ours_and_running(monkeypatch, results):
    at = start(monkeypatch, results, "momentum/2025-05-30_0900")
    info = texts(at.info)
    assert "comat_momentum is our knob, not the paper's" in info
    assert "says RUNNING (2 of 4 trials finished)" in info
    # The unreadable run is named in the sidebar, beside the run picker, not above every run's page.
    assert "scene_count/2025-06-02_0900/study.json: is not valid JSON" in texts(at.sidebar.warning)
    assert not at.main.warning
    traces = {t["name"]: t for t in spec(at, "ablation_chart")["data"]}
    assert values(traces["not finished (RUNNING)"]["y"]) == [55.9]  # its best_mAP_ema so far
    assert not at.error


def test_tune_study_plots_metric_against_each_parameter(monkeypatch, results):
    at = start(monkeypatch, results, "tune/2025-05-25_0900")
    fig = spec(at, "search_chart")
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles == ["lr", "num_scenes"]
    assert fig["layout"]["xaxis"]["type"] == "log"
    trials = load_run(results / "tune/2025-05-25_0900").trials
    ys = sorted(y for t in fig["data"] if t["xaxis"] == "x" and t["name"] != "best trial" for y in values(t["y"]))
    assert ys == sorted(trials["best_mAP_ema"].tolist())
    assert not at.error


@pytest.mark.slow
def test_damaged_and_empty_results_give_messages(monkeypatch, tmp_path):
    write_damaged_epochs(tmp_path / "damaged")
    at = start(monkeypatch, tmp_path / "damaged")
    assert at.sidebar.selectbox(key="run").value == paths.display_path(tmp_path / "damaged/graph_depth/2025-06-01_0900")
    warnings = texts(at.warning)
    assert ("damaged/graph_depth/2025-06-01_0900/epochs.csv: column mAP has 1 non-numeric or non-finite value(s)"
            in warnings)
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
    assert f"No study runs in {tmp_path / 'empty'} yet" in texts(at.info)
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


def test_header_counts_what_a_damaged_trials_csv_holds(monkeypatch, tmp_path):
    """study.json says 8 of 8 ended; trials.csv lost 4 rows and one value: the header says what was read."""
    write_damaged_trials(tmp_path / "results")
    at = start(monkeypatch, tmp_path / "results")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["trials ended"] == "4 / 8"
    points = [y for t in spec(at, "ablation_chart")["data"] if t["name"].startswith("seed ") for y in values(t["y"])]
    assert len(points) == 3
    captions = texts(at.caption)
    assert "3 with a best EMA mAP (plotted)" in captions and "trials.csv has problems" in captions
    # The warnings come right under the counts, the file's own problems first.
    warnings = [w.value for w in at.main.warning]
    assert "column best_mAP_ema has 1 non-numeric or non-finite value(s) (e.g. 'n/a' on line 3)" in warnings[0]
    assert "holds 4 ended trial(s) where study.json says 8 ended" in warnings[1]
    assert metrics[REPORTED_CARD] == f"{synthetic_final(2, 1) + 0.2:.2f}"
    assert "4/8 trials" in at.sidebar.selectbox(key="run").options[0]


def test_the_demo_opens_on_a_healthy_run(monkeypatch, results):
    """`make dashboard-demo`: the first sight is a healthy study without warnings; the damaged runs are listed
    further down."""
    at = start(monkeypatch, results)
    picker = at.sidebar.selectbox(key="run")
    assert picker.value == paths.display_path(results / "scene_count/2025-06-03_0900")
    assert not at.main.warning and not at.error and not at.exception
    assert spec(at, "ablation_chart")["data"]
    # The run folder that could not be read is named in a folded sidebar box, not in the page.
    assert [e.label for e in at.sidebar.expander] == ["⚠ 1 folder(s) not listed"]
    assert "scene_count/2025-06-02_0900/study.json: is not valid JSON" in texts(at.sidebar.expander[0].warning)
    assert picker.options[0].startswith("scene_count/2025-06-03_0900 · FINISHED · 6/6 trials")
    (damaged,) = [o for o in picker.options[1:] if o.startswith("scene_count/2025-05-28_0900")]
    assert damaged.endswith("⚠ file problems") and any(o.startswith("graph_depth/2025-06-01_0900")
                                                        for o in picker.options[1:])


@pytest.mark.slow
def test_sidebar_box_overrides_the_environment(monkeypatch, tmp_path, results):
    (tmp_path / "empty").mkdir()
    at = start(monkeypatch, tmp_path / "empty")
    at.sidebar.text_input(key="results_dir").input(str(results)).run()
    assert not at.exception
    picker = at.sidebar.selectbox(key="run")
    assert picker.options[0].startswith("scene_count/2025-06-03_0900 · FINISHED")
    assert len(picker.options) == 6
    # Several folders in the box, separated by commas or os.pathsep.
    other = tmp_path / "other"
    write_tune(other, run="2025-07-01_0900")
    at.sidebar.text_input(key="results_dir").input(f"{results}{os.pathsep}{other}").run()
    picker = at.sidebar.selectbox(key="run")
    assert len(picker.options) == 7 and picker.options[0].startswith(f"{other} › tune/2025-07-01_0900")
    at.sidebar.text_input(key="results_dir").input(f"{other}, {tmp_path / 'missing'}").run()
    assert len(at.sidebar.selectbox(key="run").options) == 1
    assert "missing: the results folder does not exist" in texts(at.sidebar.warning) and not at.exception



def rewrite_like_the_export(path: Path, rows: list[dict]) -> None:
    """What studies/exports/writer.py does: write a new file, rename it over the old one (a newer mtime)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue())
    later = path.stat().st_mtime_ns + 10**9
    os.utime(tmp, ns=(later, later))
    tmp.replace(path)


@pytest.mark.slow
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
    at.selectbox(key=key("scene_k", tmp_path / "results", "scene_count/2025-06-03_0900")).select(2).run()
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


@pytest.mark.slow
def test_results_and_runs_are_both_listed_relative_to_the_repository(monkeypatch, tmp_path):
    """By default the committed exports (results/) and the user's study runs (runs/) are listed together, each
    run with its folder; the sidebar and the messages never show where the repository is checked out."""
    repo = tmp_path / "checkout"
    write_good(repo / "results")
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    monkeypatch.setattr(paths, "DEFAULT_RESULTS_DIR", repo / "results")
    monkeypatch.setattr(paths, "DEFAULT_RUNS_DIR", repo / "runs")
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    # A fresh clone: runs/ does not exist until the first study; that is no warning.
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception and not at.warning, texts(at.warning)
    assert at.sidebar.text_input(key="results_dir").value == "results, runs"
    assert "3 run(s): 3 in results, 0 in runs (folder not created yet)" in texts(at.sidebar.caption)
    # A user's runs appear beside the committed ones, newest first, each named with its folder.
    write_synthetic_scene_count(repo / "runs", run="2025-07-01_0900")
    write_tune(repo / "runs", run="2025-05-01_0900")
    at = AppTest.from_file(APP, default_timeout=30).run()
    picker = at.sidebar.selectbox(key="run")
    assert [o.split(" · ")[0] for o in picker.options] == [
        "runs › scene_count/2025-07-01_0900", "results › scene_count/2025-06-03_0900",
        "results › tune/2025-05-25_0900", "results › graph_depth/2025-05-20_0900", "runs › tune/2025-05-01_0900"]
    assert picker.value == "runs/scene_count/2025-07-01_0900"
    assert "5 run(s): 3 in results, 2 in runs" in texts(at.sidebar.caption)
    assert texts(at.caption).startswith("runs · synthetic")
    assert not at.main.warning and not at.exception
    shown = [texts(at.sidebar.caption), texts(at.caption), texts(at.info), texts(at.error), "\n".join(picker.options),
             str(picker.value)]
    assert not any(str(repo) in t for t in shown)
    # A relative $SALGL_RESULTS_DIR (as `make dashboard-demo` sets it) replaces both and is shown as it is.
    write_good(repo / ".cache" / "demo_results")
    monkeypatch.setenv(paths.ENV_VAR, ".cache/demo_results")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert at.sidebar.text_input(key="results_dir").value == ".cache/demo_results"
    assert "3 run(s) in .cache/demo_results" in texts(at.sidebar.caption)
    (tmp_path / "checkout" / "empty").mkdir()
    at.sidebar.text_input(key="results_dir").input("empty").run()
    assert "No study runs in empty yet" in texts(at.info) and str(repo) not in texts(at.info)


def test_the_committed_mechanism_export_is_a_ladder_of_arms(monkeypatch, tmp_path):
    """A study of named arms: arms in the study's order, its own note, no paper delta, the analysis's numbers."""
    shutil.copytree(REPO / "results" / "mechanism", tmp_path / "results" / "mechanism")
    at = start(monkeypatch, tmp_path / "results")
    assert "Where the gain comes from" in texts(at.info)
    assert not [m for m in at.metric if "paper" in m.label]  # no "ours − paper" for arms that are not the paper's
    analysis = json.loads((tmp_path / "results" / "mechanism" / "default" / "analysis.json").read_text())
    order = [a["value"] for a in analysis["arms"]]
    assert order == ["no_graph", "global", "learned", "oracle", "random"]
    chart = spec(at, "ablation_chart")
    assert chart["layout"]["xaxis"]["categoryarray"] == order  # the study's order, not alphabetical
    means = next(t for t in chart["data"] if t.get("name") == "mean ± std over seeds")
    assert values(means["x"]) == order
    assert values(means["y"]) == pytest.approx([a["mean"] for a in analysis["arms"]])
    assert values(next(t for t in chart["data"] if t.get("name") == "reference arm")["x"]) == ["global"]
    forest = {str(y): x for t in spec(at, "forest_chart")["data"]
              for y, x in zip(values(t["y"]), values(t["x"]), strict=True)}
    assert forest == pytest.approx({c["value"]: c["diff"] for c in analysis["comparisons"]})
    # Its best trial is the oracle arm's, on synthetic data: no "ours" row beside the paper's COCO numbers.
    (paper_rows,) = [df.value for df in at.dataframe if "ours - SALGL paper" in df.value]
    assert not paper_rows["method"].str.startswith("ours").any() and len(paper_rows) == 17
    assert "No listed run on a real dataset" in texts(at.info)
    assert "Left out: 1 run(s) on the embedded synthetic data or of named arms" in texts(at.caption)
