"""dashboards/api.py, the notebook API: the export's tables as the files hold them, the dashboard's own figures,
one clear line for a folder that is no export."""

from __future__ import annotations

import csv
import json
import shutil
import tomllib
from pathlib import Path

import pytest

from dashboards import demo
from dashboards.api import ExportWarning, LoadError, StudyExport, load_run
from dashboards.data import paths
from studies.exports.schema import COMPARISON_COLUMNS, REPORTED_METRIC

REPO = Path(__file__).resolve().parents[1]
SCENE_COUNT = REPO / "results" / "scene_count" / "default"
MECHANISM = REPO / "results" / "mechanism" / "default"


def rows(path: Path) -> list[dict[str, str]]:
    """A CSV as the file holds it, read without the dashboard's reader."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def scene_count() -> StudyExport:
    if not (SCENE_COUNT / "study.json").is_file():
        pytest.skip("results/scene_count/default is not in this checkout")
    return load_run(SCENE_COUNT)


def test_trials_epochs_and_comparisons_are_the_files(scene_count):
    trials, epochs = rows(SCENE_COUNT / "trials.csv"), rows(SCENE_COUNT / "epochs.csv")
    assert scene_count.trials["trial_id"].tolist() == [r["trial_id"] for r in trials]
    assert scene_count.trials[REPORTED_METRIC].tolist() == pytest.approx([float(r[REPORTED_METRIC]) for r in trials])
    assert len(scene_count.epochs) == len(epochs) and scene_count.axis == "num_scenes"
    cmp = scene_count.comparisons
    assert list(cmp.columns) == list(COMPARISON_COLUMNS)
    on_disk = rows(SCENE_COUNT / "comparisons.csv")
    assert [str(v) for v in cmp["value"]] == [r["value"] for r in on_disk] == ["1", "2", "8"]
    assert cmp["diff"].tolist() == pytest.approx([float(r["diff"]) for r in on_disk])
    assert cmp["verdict"].tolist() == [r["verdict"] for r in on_disk]
    assert scene_count.analysis.source == "file" and scene_count.warnings == []
    assert repr(scene_count) == "<StudyExport scene_count/default: num_scenes ablation, 12 trials, FINISHED>"


def test_trial_intervals_and_verdicts_are_analysis_json(scene_count):
    analysis = json.loads((SCENE_COUNT / "analysis.json").read_text())
    iv = scene_count.intervals.set_index("trial_id")
    for t in analysis["trials"]:
        assert (iv.loc[t["trial_id"], "ci_low"], iv.loc[t["trial_id"], "ci_high"]) == (t["ci_low"], t["ci_high"])
    assert scene_count.verdicts.iloc[:, 0].tolist() == ["1", "2", "4 ★", "8"]
    assert scene_count.arms["mean"].tolist() == [a["mean"] for a in analysis["arms"]]
    assert scene_count.table("markdown").count("\n| ") == 2 + 4  # the header, its rule and one row per arm


def test_scenes_summarise_every_scene_file(scene_count):
    files = sorted((SCENE_COUNT / "scenes").glob("*.json"))
    s = scene_count.scenes
    assert sorted(set(s["trial_id"])) == [f.stem for f in files]
    for f in files:
        raw = json.loads(f.read_text())
        mine = s[s["trial_id"] == f.stem]
        assert mine["scene"].tolist() == list(range(raw["num_scenes"]))
        assert mine["usage"].tolist() == raw["scene_usage"]
        assert mine["images"].tolist() == [sum(r) for r in raw["contingency"]]
        # The true scene most of a learned scene's images come from, and their share of it.
        assert mine["true_scene"].tolist() == [max(range(len(r)), key=r.__getitem__) for r in raw["contingency"]]
        assert mine["purity"].tolist() == pytest.approx([max(r) / sum(r) for r in raw["contingency"]])
        assert set(mine["true_scene_nmi"]) == {raw["true_scene_nmi"]}
    with pytest.raises(KeyError, match="has no nope.json"):
        scene_count.scene("nope")


def test_figures_are_the_dashboards(scene_count):
    ablation = scene_count.ablation_figure()
    assert list(ablation.layout.xaxis.categoryarray) == ["1", "2", "4", "8"]
    mean = next(t for t in ablation.data if t.name == "mean ± std over seeds")
    assert list(mean.y) == pytest.approx(scene_count.arms["mean"].tolist())
    star = next(t for t in ablation.data if t.name == "synthetic preset's value")
    assert list(star.x) == ["4"]
    forest = scene_count.forest_figure()
    assert sorted(y for t in forest.data for y in t.y) == ["1", "2", "8"]
    curves = scene_count.learning_curves_figure()
    assert len(curves.data) == 2 * 6  # the dashboard's first six trials, mAP and EMA mAP each
    picked = scene_count.learning_curves_figure([scene_count.trials["trial_id"][0]])
    assert len(picked.data) == 2
    with pytest.raises(ValueError, match="no epochs in .*epochs.csv for trial\\(s\\) nope"):
        scene_count.learning_curves_figure(["nope"])


def test_a_study_of_named_arms_keeps_its_order():
    if not (MECHANISM / "study.json").is_file():
        pytest.skip("results/mechanism/default is not in this checkout")
    run = load_run(MECHANISM)
    order = [a for a in json.loads((MECHANISM / "study.json").read_text())["arms"]]
    assert list(run.ablation_figure().layout.xaxis.categoryarray) == order
    assert run.verdicts.iloc[:, 0].str.rstrip(" ★").tolist() == order


def test_a_coco_run_shows_the_papers_number(tmp_path):
    coco = load_run(demo.write_coco_graph_depth(tmp_path))
    lines = [s for s in coco.ablation_figure().layout.shapes if s.type == "line"]
    assert [s.y0 for s in lines] == [85.8]  # SALGL's COCO R101 448 px mAP, from results/paper


def test_a_joint_search_has_no_ablation_plot(tmp_path):
    tune = load_run(demo.write_tune(tmp_path))
    with pytest.raises(ValueError, match="is a joint search"):
        tune.ablation_figure()
    assert tune.comparisons.empty


def test_a_damaged_file_is_a_warning_not_an_error(tmp_path):
    with pytest.warns(ExportWarning, match="epochs.csv: column mAP has 1 non-numeric"):
        run = load_run(demo.write_damaged_epochs(tmp_path))
    assert run.warnings and len(run.trials)


@pytest.mark.parametrize("where", ["empty", "missing", "results"])
def test_a_folder_that_is_no_export_is_one_line_saying_what_was_expected(tmp_path, where):
    path = {"empty": tmp_path, "missing": tmp_path / "nope", "results": REPO / "results"}[where]
    with pytest.raises(LoadError) as e:
        load_run(path)
    text = str(e.value)
    assert "\n" not in text and text.startswith(str(path))
    assert "expected a folder holding study.json, trials.csv, epochs.csv" in text
    if where == "results":
        assert str(MECHANISM) in text  # where the exports are
    demo.write_invalid_study_json(tmp_path / "r")
    with pytest.raises(LoadError, match="study.json: is not valid JSON"):
        load_run(tmp_path / "r" / "scene_count" / "2025-06-02_0900")


def test_the_api_may_not_import_streamlit():
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (streamlit,) = [c for c in contracts if c["id"] == "dashboards-streamlit"]
    assert "dashboards.api" in streamlit["source_modules"] and streamlit["forbidden_modules"] == ["streamlit"]


@pytest.mark.slow
def test_the_figures_equal_the_charts_the_dashboard_draws(monkeypatch, tmp_path):
    """The dashboard (Streamlit's AppTest) and the API on the same export: the same plotly JSON, chart by chart."""
    AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
    if not (SCENE_COUNT / "study.json").is_file():
        pytest.skip("results/scene_count/default is not in this checkout")
    shutil.copytree(SCENE_COUNT, tmp_path / "results" / "scene_count" / "default")
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "results"))
    at = AppTest.from_file(str(REPO / "dashboards" / "app.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    run = load_run(tmp_path / "results" / "scene_count" / "default")
    for key, fig in (("ablation_chart", run.ablation_figure()), ("forest_chart", run.forest_figure()),
                     ("curves_chart", run.learning_curves_figure())):
        (shown,) = [spec for cid, spec in charts.items() if key in cid]
        assert shown == json.loads(fig.to_json()), key
    # Beside the verdict table, the table for a paper (dashboards/ui/stats.py; its text: tests/test_studies_tables.py).
    buttons = {b.proto.label: b.proto.url for b in at.get("download_button")}
    assert buttons["Download the table (LaTeX)"].endswith(".tex")
    assert buttons["Download the table (Markdown)"].endswith(".md")
