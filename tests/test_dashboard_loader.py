"""dashboards/loader.py on fixture exports written into tmp_path (see fixtures_results.py)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_results import (
    synthetic_final,
    write_all,
    write_coco_graph_depth,
    write_damaged_epochs,
    write_running_momentum,
    write_synthetic_scene_count,
    write_tune,
)

from dashboards import loader as L

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    write_all(root)
    return root


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


# ---------------------------------------------------------------------------------------------
# results root


def test_results_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(L.ENV_VAR, raising=False)
    assert L.results_dir() == REPO / "results"
    monkeypatch.setenv(L.ENV_VAR, str(tmp_path / "env"))
    assert L.results_dir() == tmp_path / "env"
    assert L.results_dir("  ") == tmp_path / "env"
    assert L.results_dir(str(tmp_path / "box")) == tmp_path / "box"


def test_list_runs_newest_first_with_summaries(results):
    runs, warnings = L.list_runs(results)
    assert [r.key for r in runs] == ["momentum/2025-06-04_0900", "scene_count/2025-06-03_0900",
                                     "graph_depth/2025-06-01_0900", "tune/2025-05-25_0900",
                                     "graph_depth/2025-05-20_0900"]
    by = {r.key: r for r in runs}
    sc = by["scene_count/2025-06-03_0900"]
    assert (sc.status, sc.n_trials, sc.n_finished, sc.device, sc.dataset) == ("FINISHED", 6, 6, "cpu", "synthetic")
    assert sc.best_metric == "best_mAP_ema"
    assert sc.best_value == pytest.approx(synthetic_final(4, 1) + 0.2)
    assert sc.trial_seconds_total == 480.0
    coco = by["graph_depth/2025-05-20_0900"]
    assert (coco.dataset, coco.backbone, coco.image_size, coco.pretrain) == ("coco", "resnet101", 448, "ImageNet-1k")
    assert coco.best_trial["trial_id"] == "gd_3_0"
    assert "NVIDIA H100" in coco.label() and "2/2 trials" in coco.label() and "0:40:00" in coco.label()
    # The invalid study.json is skipped with a message naming the file and where JSON broke.
    assert len(warnings) == 1
    assert "scene_count/2025-06-02_0900/study.json" in warnings[0] and "line 1, column" in warnings[0]
    # The RUNNING study is listed; its half-written last line is reported, not fatal.
    mo = by["momentum/2025-06-04_0900"]
    assert mo.status == "RUNNING" and mo.n_trials == 4 and mo.n_finished == 2
    assert any("trials.csv" in w and "line 5" in w for w in mo.warnings)


def test_empty_missing_and_odd_results_roots(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert L.list_runs(empty) == ([], [])
    with pytest.raises(L.LoadError, match="does not exist") as e:
        L.list_runs(tmp_path / "nope")
    assert e.value.path == tmp_path / "nope"
    with pytest.raises(L.LoadError, match="not a folder"):
        L.list_runs(write(tmp_path / "file", "x"))
    # A run folder without study.json, hidden folders and the paper tables are not runs.
    write(empty / "scene_count" / "r1" / "trials.csv", "trial_id,status\n")
    (empty / "scene_count" / ".tmp").mkdir()
    write(empty / "paper" / "coco_comparison.csv", "method,mAP\n")
    runs, warnings = L.list_runs(empty)
    assert runs == []
    assert warnings == ["empty/scene_count/r1 has trials.csv but no study.json; skipped (a study export always "
                        "writes study.json first)"]


# ---------------------------------------------------------------------------------------------
# CSV and JSON damage


def test_half_written_trials_csv_keeps_complete_rows(tmp_path):
    run = L.load_run(write_running_momentum(tmp_path / "results"))
    assert run.trials["trial_id"].tolist() == ["mo_1.0_0", "mo_0.9_0", "mo_0.99_0"]
    assert run.trials["status"].tolist() == ["FINISHED", "FINISHED", "RUNNING"]
    assert run.trials["is_paper_config"].tolist() == [True, False, False]
    assert run.trials["comat_momentum"].tolist() == [1.0, 0.9, 0.99]
    (w,) = run.warnings
    assert "results/momentum/2025-06-04_0900/trials.csv" in w and "line 5 has 8 of" in w
    assert any("RUNNING (2 of 4 trials finished)" in n for n in run.notes)
    # epochs.csv holds a trial that has no trials.csv row yet.
    assert "mo_0.999_0" in set(run.epochs["trial_id"])


def test_damaged_epochs_csv_is_reported_by_line(tmp_path):
    run = L.load_run(write_damaged_epochs(tmp_path / "results"))
    assert len(run.warnings) == 2
    cut, bad = run.warnings
    assert "epochs.csv" in cut and "line 6 has 4 of 16" in cut
    assert "epochs.csv" in bad and "column mAP" in bad and "'oops' on line 4" in bad
    assert len(run.epochs) == 17
    assert run.epochs["mAP"].isna().sum() == 1
    assert run.epochs["mAP"].dtype == float and run.epochs["epoch"].dtype.kind in "if"
    assert len(run.trials) == 3 and not run.notes


def test_read_csv_table_failures(tmp_path):
    f = tmp_path / "results" / "s" / "r" / "trials.csv"
    with pytest.raises(L.LoadError, match="file not found"):
        L.read_trials(f)
    write(f, "")
    with pytest.raises(L.LoadError, match="is empty"):
        L.read_trials(f)
    write(f, "id,state\n1,FINISHED\n")
    with pytest.raises(L.LoadError, match="lacks the column.*trial_id, status.*header: id, state"):
        L.read_trials(f)
    # Missing result columns: added empty, and named in a warning.
    write(f, "trial_id,status,seed\nt1,finished,0\nt2,FINISHED,1")
    df, warnings = L.read_trials(f)
    assert df["status"].tolist() == ["FINISHED", "FINISHED"]
    assert df["best_mAP"].isna().all() and "error" in df
    assert df["is_paper_config"].tolist() == [False, False]
    assert any("missing column(s) is_paper_config, epochs_done" in w for w in warnings)
    assert any("last line (line 3) has no line break" in w for w in warnings)


def test_read_csv_table_values(tmp_path):
    f = write(tmp_path / "t.csv", "trial_id,status,num_scenes,best_mAP,is_paper_config,device,device,error\n"
                                  "007,FINISHED,4,55.5,true,cpu,cuda,\n"
                                  "008,unknown,2,n/a,yes,cpu,cuda,\"Traceback, with comma\nand newline\"\n"
                                  "008,FINISHED,2,abc,maybe,cpu,cuda,\n")
    df, warnings = L.read_trials(f)
    # trial ids stay text, repeated ids keep the last row, quoted multi-line cells survive.
    assert df["trial_id"].tolist() == ["007", "008"]
    assert df["num_scenes"].tolist() == [4, 2]
    assert df["best_mAP"].iloc[0] == 55.5 and math.isnan(df["best_mAP"].iloc[1])
    assert df["device"].tolist() == ["cuda", "cuda"]
    text = "\n".join(warnings)
    assert "column 'device' appears twice" in text
    assert "column best_mAP has 1 non-numeric value(s) (e.g. 'abc' on line 5)" in text
    assert "column is_paper_config has 1 value(s) that are not true/false (e.g. 'maybe' on line 5)" in text
    assert "1 repeated trial_id row(s)" in text
    df, warnings = L.read_trials(write(tmp_path / "u.csv", "trial_id,status,best_mAP\na,RUNNING,0.5\nb,ERROR,"
                                                            "0.6\nc,FINISHED,0.7\nd,DIVERGED,\n"))
    assert any("every mAP value is <= 1" in w for w in warnings)
    _, warnings = L.read_trials(write(tmp_path / "v.csv", b"trial_id,status,error\na,ERROR,caf\xe9\n"))
    assert any("not valid UTF-8" in w for w in warnings)


def test_study_json_problems(tmp_path):
    d = tmp_path / "results" / "scene_count" / "r"
    write(d / "study.json", "[1, 2]")
    with pytest.raises(L.LoadError, match="must hold a JSON object, found list"):
        L.load_run(d)
    write(d / "study.json", "")
    with pytest.raises(L.LoadError, match=r"not valid JSON \(empty file\)"):
        L.load_run(d)
    write(d / "study.json", json.dumps({"schema_version": 2, "study": "scene_count", "status": "weird",
                                        "seeds": "0,1"}))
    run = L.load_run(d)
    text = "\n".join(run.warnings)
    assert "schema_version is 2" in text and "missing key(s) dataset, axis" in text
    assert "unknown status 'weird'" in text and "seeds should be a JSON list" in text
    assert "trials.csv: file not found" in text and run.dataset == "unknown"


def test_running_study_without_trials_yet_and_stale(tmp_path):
    d = tmp_path / "results" / "momentum" / "r"
    write(d / "study.json", json.dumps({"schema_version": 1, "study": "momentum", "status": "RUNNING",
                                        "dataset": "synthetic", "axis": "comat_momentum", "n_trials": 4,
                                        "n_finished": 0}))
    run = L.load_run(d)
    assert run.warnings == [] and len(run.trials) == 0 and len(run.epochs) == 0
    assert any("trials.csv does not exist yet" in n for n in run.notes)
    old = time.time() - 5 * 3600
    os.utime(d / "study.json", (old, old))
    assert any("may have crashed" in n and "--resume" in n for n in L.load_run(d).notes)


# ---------------------------------------------------------------------------------------------
# Shaping


def test_ablation_summary_matches_the_exported_trials(tmp_path):
    run = L.load_run(write_synthetic_scene_count(tmp_path / "results"))
    ab = L.ablation_summary(run.trials, "num_scenes", "mAP", run.paper_config)
    assert ab.summary["label"].tolist() == ["1", "2", "4"]
    for _, row in ab.summary.iterrows():
        vals = [synthetic_final(int(row["value"]), s) for s in (0, 1)]
        assert row["n"] == 2
        assert row["mean"] == pytest.approx(np.mean(vals))
        assert row["std"] == pytest.approx(np.std(vals, ddof=1))
    assert ab.summary["is_paper"].tolist() == [False, False, True]
    assert ab.points["metric"].tolist() == [synthetic_final(k, s) for k in (1, 2, 4) for s in (0, 1)]


def test_ablation_summary_excludes_unfinished_and_counts_failures(tmp_path):
    run = L.load_run(write_running_momentum(tmp_path / "results"))
    t = pd.concat([run.trials, run.trials.iloc[[1]].assign(trial_id="x", status="DIVERGED", mAP=np.nan)],
                  ignore_index=True)
    ab = L.ablation_summary(t, "comat_momentum", "mAP", {"comat_momentum": 1.0})
    s = ab.summary.set_index("label")
    assert s.loc["0.99", "n"] == 0 and math.isnan(s.loc["0.99", "mean"])
    assert s.loc["0.9", "failed"] == 1 and s.loc["0.9", "n"] == 1 and math.isnan(s.loc["0.9", "std"])
    assert s.loc["1", "is_paper"]
    running = ab.points[ab.points["status"] == "RUNNING"]
    assert running["metric"].tolist() == [55.7] and not running["counted"].any()
    empty = L.ablation_summary(t, "not_a_column", "mAP")
    assert empty.points.empty and empty.summary.empty


def test_paper_reference_lookup():
    paper = L.load_paper_tables()
    assert paper.warnings == [] and paper.folder == REPO / "results" / "paper"
    coco = paper.coco
    assert L.paper_reference(coco, "coco", "resnet101", 448).value == 85.8
    assert L.paper_reference(coco, "coco", "resnet101", "576").value == 87.3
    assert L.paper_reference(coco, "coco", "resnet101", 448, "best_mAP_ema").value == 85.8
    assert L.paper_reference(coco, "coco", "resnet101", 448, "OF1").value == 82.4
    assert L.paper_reference(coco, "coco", "vit_large_patch16", 448).value == 87.6
    assert L.paper_reference(coco, "coco", "vit_large_patch16", 448, pretrain="ImageNet-22k").value == 90.1
    for args in (("synthetic", "small_cnn", 64), ("coco", "small_cnn", 448), ("coco", "resnet101", 224),
                 ("voc2007", "resnet101", 448), ("coco", "resnet101", None)):
        assert L.paper_reference(coco, *args) is None
    assert L.paper_reference(coco, "coco", "resnet101", 448, "scene_nmi") is None
    repro = L.reproduction_refs(paper.reproductions, "nuswide", "resnet101", 448)
    assert repro["mAP"].tolist() == [66.34, 66.24]


def test_paper_tables_hold_every_row_of_the_paper():
    paper = L.load_paper_tables()
    c = paper.coco
    assert list(c.columns) == list(L.PAPER_COCO_COLUMNS)
    assert len(c) == 17 and (c["dataset"] == "coco").all()
    assert c.groupby(["backbone", "resolution", "pretrain"]).size().to_dict() == {
        ("resnet101", 448, "ImageNet-1k"): 7, ("resnet101", 576, "ImageNet-1k"): 5,
        ("vit_large_patch16", 448, "ImageNet-1k"): 3, ("vit_large_patch16", 448, "ImageNet-22k"): 2}
    salgl = c[c["is_salgl"]]
    assert salgl["mAP"].tolist() == [85.8, 87.3, 87.6, 90.1]
    r448 = salgl.iloc[0]
    assert [r448[k] for k in L.PAPER_COCO_COLUMNS[5:18]] == [85.8, 87.2, 74.5, 80.4, 87.8, 77.6, 82.4, 90.4, 65.7,
                                                            76.1, 91.9, 67.9, 78.1]
    tsgcn = c[c["method"] == "TSGCN"].iloc[0]
    assert (tsgcn["OR_top3"], tsgcn["OF1_top3"]) == (69.3, 69.3)
    asl = c[c["method"] == "ASL"].iloc[0]
    assert (asl["mAP"], asl["CF1"], asl["OF1"]) == (85.0, 80.3, 82.3)
    assert asl[["CP", "CR", "OP", "OR", "CP_top3", "OF1_top3"]].isna().all()
    assert c["source"].str.contains("assets/coco2014.png").all()
    assert paper.reproductions["mAP"].tolist() == [85.75, 85.75, 66.34, 66.24]
    curve = paper.curve
    assert len(curve) == 27 and curve["epoch"].tolist() == list(range(27))
    assert curve.loc[21, "best_ema_mAP"] == 85.758 and curve.loc[0, "epoch_seconds"] == 285
    assert curve["best_ema_mAP"].is_monotonic_increasing


def test_paper_tables_fall_back_and_report(tmp_path, monkeypatch):
    assert L.paper_dir(tmp_path) == REPO / "results" / "paper"
    own = tmp_path / "paper"
    write(own / "coco_comparison.csv", "method,mAP\nX,1\n")
    paper = L.load_paper_tables(tmp_path)
    assert paper.folder == own and paper.coco["method"].tolist() == ["X"]
    text = "\n".join(paper.warnings)
    assert "coco_comparison.csv: missing column(s) dataset" in text
    assert "reproductions.csv: file not found" in text
    monkeypatch.setattr(L, "DEFAULT_RESULTS_DIR", tmp_path / "nowhere")
    (own / "coco_comparison.csv").unlink()
    paper = L.load_paper_tables(tmp_path)
    assert paper.folder is None and paper.coco.empty and "were not found" in paper.warnings[0]
    assert L.paper_reference(paper.coco, "coco", "resnet101", 448) is None


def test_best_per_dataset_and_comparison(results):
    runs, _ = L.list_runs(results)
    best = L.best_per_dataset(runs)
    assert best["dataset"].tolist() == ["coco", "synthetic"]
    coco = best.iloc[0]
    assert (coco["run"], coco["trial_id"], coco["value"]) == ("graph_depth/2025-05-20_0900", "gd_3_0", 85.7)
    table = L.comparison_table(best, L.load_paper_tables())
    ours = table[table["method"].str.startswith("ours")]
    assert ours["ours - SALGL paper"].iloc[0] == pytest.approx(85.7 - 85.8)
    assert math.isnan(ours["ours - SALGL paper"].iloc[1])
    assert table.iloc[0]["method"].startswith("ours: graph_depth")
    assert (table["dataset"] == "coco").sum() == 18 and (table["dataset"] == "synthetic").sum() == 1


def test_search_params_for_tune(tmp_path):
    run = L.load_run(write_tune(tmp_path / "results"))
    assert run.axis is None
    assert L.search_params(run) == ["lr", "num_scenes"]
    assert L.log_scale_params(run) == ["lr"]
    pts = L.search_points(run.trials, ["lr", "num_scenes"], "mAP")
    assert len(pts) == 16 and set(pts["status"]) == {"FINISHED", "STOPPED"}
    run.meta["search_space"] = None
    assert L.search_params(run) == ["num_scenes", "lr"]


# ---------------------------------------------------------------------------------------------
# Scenes


def test_load_scene_and_typical_labels(tmp_path):
    run = L.load_run(write_synthetic_scene_count(tmp_path / "results"))
    assert sorted(run.scene_files) == sorted(run.trials["trial_id"])
    scene = L.load_scene(run.scene_files["sc_4_0"])
    assert scene.prob.shape == (4, 20, 20) and scene.diag.shape == (4, 20) and scene.num_scenes == 4
    assert scene.nmi == 0.8 and scene.contingency.shape == (4, 4)
    top = L.typical_labels(scene, top=3)
    assert len(top) == 12
    # The fixture makes scene k favour labels 5k..5k+4.
    for k in range(4):
        labels = top[top["scene"] == k]["label"]
        assert all(5 * k <= int(name[-2:]) < 5 * k + 5 for name in labels)
    assert (top["lift"] > 1).all() and top["share"].between(0, 1).all()
    coco_run = L.load_run(write_coco_graph_depth(tmp_path / "results"))
    coco_scene = L.load_scene(coco_run.scene_files["gd_0_0"])
    assert coco_scene.class_names[0] == "person" and coco_scene.nmi is None and coco_scene.contingency is None


def test_load_scene_failures(tmp_path):
    good = {"trial_id": "t", "cooccurrence_prob": np.eye(3)[None].tolist(), "cooccurrence_counts_diag": [[1, 2, 3]],
            "scene_usage": [1.0]}
    f = tmp_path / "scenes" / "t.json"
    scene = L.load_scene(write(f, json.dumps(good)), ["a", "b", "c"])
    assert scene.class_names == ["a", "b", "c"] and scene.nmi is None
    assert L.load_scene(f).class_names == ["label 0", "label 1", "label 2"]
    cases = [
        ("{", "not valid JSON"),
        (json.dumps({**good, "scene_usage": None}), "missing key.*scene_usage"),
        (json.dumps({**good, "scene_usage": [0.5, 0.5]}), "shapes disagree"),
        (json.dumps({**good, "cooccurrence_prob": [[1, 2]]}), "should have 3 dimensions"),
        (json.dumps({**good, "cooccurrence_prob": [[[1, 2], [3]]]}), "not a numeric array"),
        (json.dumps({**good, "contingency": [[1], [2]]}), "contingency should have K = 1 rows"),
    ]
    for text, message in cases:
        with pytest.raises(L.LoadError, match=message) as e:
            L.load_scene(write(f, text))
        assert e.value.path == f


def test_formatters():
    assert [L.fmt_value(v) for v in (4, 4.0, 0.99, 1e-4, "x", True, np.int64(3), float("nan"))] == [
        "4", "4", "0.99", "0.0001", "x", "True", "3", "–"]
    assert L.fmt_seconds(3725.4) == "1:02:05" and L.fmt_seconds(None) == "–"
    assert L.fmt_num(85.756) == "85.76" and L.fmt_num("x") == "–"


def test_reads_what_studies_export_writes_without_warnings(tmp_path):
    """The contract end to end: rows written by studies/export.py load cleanly, NaN metrics as missing."""
    export = pytest.importorskip("studies.export")
    from salgl_core.config import ExperimentConfig, synthetic_preset

    cfg = ExperimentConfig.from_flat(synthetic_preset()).to_flat()
    meta = {"schema_version": 1, "study": "scene_count", "run": "r1", "axis": "num_scenes", "axis_values": [1, 4],
            "dataset": "synthetic", "backbone": "small_cnn", "image_size": 64, "base_config": cfg,
            "paper_config": {"num_scenes": 4}, "seeds": [0], "n_trials": 2}
    ex = export.StudyExport.open(tmp_path / "results" / "scene_count" / "r1", meta)
    ex.begin()
    for k in (1, 4):
        ex.trial_started(f"t{k}", {**cfg, "num_scenes": k}, 0, k == 4)
        for e in (1, 2):
            ex.trial_epoch(f"t{k}", {"epoch": e, "lr": 1e-3, "loss_total": 3.0, "mAP": 40.0 + e + k,
                                     "mAP_ema": 39.0 + e, "best_epoch": e, "best_mAP": 40.0 + e + k,
                                     "best_mAP_ema": 39.0 + e, "CF1": float("nan"), "device": "cpu"}, seconds=3.0)
        ex.trial_ended(f"t{k}", "FINISHED", scene_report={
            "num_scenes": k, "class_names": ["a", "b"], "cooccurrence_prob": [[[1, 0.5], [0.2, 1]]] * k,
            "cooccurrence_counts_diag": [[3, 4]] * k, "scene_usage": [1 / k] * k, "true_scene_nmi": None,
            "contingency": None})
    ex.finish("FINISHED")
    (summary,), warnings = L.list_runs(tmp_path / "results")
    assert warnings == [] and summary.warnings == []
    assert (summary.status, summary.n_finished, summary.n_trials, summary.device) == ("FINISHED", 2, 2, "cpu")
    run = L.load_run(summary.path)
    assert run.warnings == [] and run.notes == []
    assert run.trials["is_paper_config"].tolist() == [False, True]
    assert run.trials["best_mAP"].tolist() == [43.0, 46.0] and run.trials["CF1"].isna().all()
    ab = L.ablation_summary(run.trials, "num_scenes", "mAP", run.paper_config)
    assert ab.summary["mean"].tolist() == [43.0, 46.0] and ab.summary["is_paper"].tolist() == [False, True]
    assert L.load_scene(run.scene_files["t4"]).prob.shape == (4, 2, 2)
