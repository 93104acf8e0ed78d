"""dashboards/data/files.py: reading and validating the results files, and the clear messages for bad ones."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from dashboards.data import files as F
from studies.exports.schema import EPOCH_COLUMNS, SCHEMA_VERSION, TRIAL_REQUIRED


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def csv_text(columns, *rows) -> str:
    return "\n".join([",".join(columns), *(",".join(map(str, r)) for r in rows)]) + "\n"


def trial_row(trial_id="t1", status="FINISHED", **values) -> list:
    return [values.get(c, {"trial_id": trial_id, "status": status}.get(c, "")) for c in TRIAL_REQUIRED]


# ---------------------------------------------------------------------------------------------
# Files that cannot be used


def test_missing_empty_and_undecodable_files(tmp_path):
    f = tmp_path / "results" / "s" / "r" / "trials.csv"
    with pytest.raises(F.LoadError, match="file not found") as e:
        F.read_trials(f)
    assert e.value.path == f
    write(f, "")
    with pytest.raises(F.LoadError, match="is empty"):
        F.read_trials(f)
    write(f, b"trial_id,status\nt1,caf\xe9\n")
    with pytest.raises(F.LoadError, match="not UTF-8"):
        F.read_trials(f)


def test_foreign_csv_is_named_not_guessed(tmp_path):
    f = write(tmp_path / "trials.csv", "id,state\n1,FINISHED\n")
    with pytest.raises(F.LoadError, match=r"lacks the column\(s\) trial_id, status, .*\(its header: id, state\): "
                                          r"not a trials.csv of the results schema"):
        F.read_trials(f)
    # An older export without the result columns is foreign too: no columns are made up for it.
    write(f, "trial_id,status,seed\nt1,FINISHED,0\n")
    with pytest.raises(F.LoadError, match="lacks the column.*is_paper_config"):
        F.read_trials(f)
    write(f, csv_text([*TRIAL_REQUIRED, "device"], [*trial_row(), "cpu"]))
    with pytest.raises(F.LoadError, match="repeats the column.*'device'"):
        F.read_trials(f)
    e = write(tmp_path / "epochs.csv", csv_text(EPOCH_COLUMNS[:-1], ["t1", 1, *[""] * 13]))
    with pytest.raises(F.LoadError, match="lacks the column.*images_per_second"):
        F.read_epochs(e)


def test_row_with_the_wrong_number_of_fields_is_an_error_not_a_repair(tmp_path):
    """The export rewrites files whole, so a short row means a damaged or foreign file: say so."""
    text = csv_text(EPOCH_COLUMNS, ["t1", 1, *range(14)], ["t1", 2, *range(14)])
    f = write(tmp_path / "epochs.csv", text + "t1,3,0.001\n")
    with pytest.raises(F.LoadError, match="line 4 has 3 fields where the header has 16: the file is damaged"):
        F.read_epochs(f)


# ---------------------------------------------------------------------------------------------
# Values


def test_trials_values_and_cell_messages(tmp_path):
    cols = [*TRIAL_REQUIRED[:4], "num_scenes", "randaugment", *TRIAL_REQUIRED[4:]]
    rows = [["007", "FINISHED", 0, "True", 4, "False", *trial_row(best_mAP=55.5, error="")[4:]],
            ["008", "ERROR", 1, "maybe", 2, "True", *trial_row(best_mAP="abc", error='"Traceback, with comma\nand '
                                                                                   'newline"')[4:]],
            ["009", "finished", 1, "", 2, "", *trial_row()[4:]]]
    df, warnings = F.read_trials(write(tmp_path / "trials.csv", csv_text(cols, *rows)))
    # Trial ids stay text, config columns get their type, quoted multi-line cells survive.
    assert df["trial_id"].tolist() == ["007", "008", "009"]
    assert df["num_scenes"].tolist() == [4, 2, 2] and df["num_scenes"].dtype == "int64"
    assert df["randaugment"].tolist() == [False, True, None]
    assert df["is_paper_config"].tolist() == [True, False, False]
    assert df["best_mAP"].iloc[0] == 55.5 and df["best_mAP"].iloc[1:].isna().all()
    assert df["error"].iloc[1] == "Traceback, with comma\nand newline"
    text = "\n".join(warnings)
    assert "column best_mAP has 1 non-numeric or non-finite value(s) (e.g. 'abc' on line 3)" in text
    assert "column is_paper_config has 1 value(s) that are not true/false (e.g. 'maybe' on line 3)" in text
    # Statuses are the schema's, as written: a lower-case one is named, not fixed.
    assert "unknown trial status(es) finished" in text
    assert len(warnings) == 3


def test_nan_and_infinite_cells_are_missing_with_a_warning(tmp_path):
    """'nan' and 'inf' parse as floats but are no result: a mean or chart over them would mislead."""
    rows = [trial_row("001", best_mAP_ema="inf"), trial_row("002", best_mAP_ema="nan")]
    df, warnings = F.read_trials(write(tmp_path / "trials.csv", csv_text(list(TRIAL_REQUIRED), *rows)))
    assert df["best_mAP_ema"].isna().all()
    assert "column best_mAP_ema has 2 non-numeric or non-finite value(s) (e.g. 'inf' on line 2)" in "\n".join(warnings)


def test_cluster_placement_columns_keep_their_types(tmp_path):
    """node_id / node_ip stay text (an id of digits too), retries are numbers, gpu_ids text; absent is fine."""
    cols = [*TRIAL_REQUIRED, "node_id", "node_ip", "retries"]
    rows = [[*trial_row("t1", gpu_ids='"0,1"'), "0123", "10.0.0.11", 0],  # the export quotes "0,1"
            [*trial_row("t2", gpu_ids="1"), "9f8e", "10.0.0.12", "two"]]
    df, warnings = F.read_trials(write(tmp_path / "trials.csv", csv_text(cols, *rows)))
    assert df["node_id"].tolist() == ["0123", "9f8e"] and df["node_ip"].tolist() == ["10.0.0.11", "10.0.0.12"]
    assert df["gpu_ids"].tolist() == ["0,1", "1"]
    assert df["retries"].iloc[0] == 0 and math.isnan(df["retries"].iloc[1])
    (w,) = warnings
    assert "column retries has 1 non-numeric or non-finite value(s) (e.g. 'two' on line 3)" in w
    df, warnings = F.read_trials(write(tmp_path / "old.csv", csv_text(TRIAL_REQUIRED, trial_row())))
    assert warnings == [] and not set(F.PLACEMENT_COLUMNS) & set(df.columns)


def test_epochs_keep_the_exported_order_and_types(tmp_path):
    rows = [["b", e, 1e-3, 3.0, *[""] * 3, 40 + e, *[""] * 6, 2.5, 100] for e in (1, 2)]
    rows.append(["a", 1, 1e-3, 3.0, *[""] * 3, "oops", *[""] * 6, 2.5, 100])
    df, warnings = F.read_epochs(write(tmp_path / "epochs.csv", csv_text(EPOCH_COLUMNS, *rows)))
    assert df["trial_id"].tolist() == ["b", "b", "a"] and df["epoch"].tolist() == [1, 2, 1]
    assert df["mAP"].tolist()[:2] == [41, 42] and math.isnan(df["mAP"].iloc[2]) and df["mAP"].dtype == float
    assert df["CF1"].isna().all()
    (w,) = warnings
    assert w.endswith(f"{tmp_path.name}/epochs.csv: column mAP has 1 non-numeric or non-finite value(s) (e.g. 'oops' "
                      f"on line 4); read as missing")


def test_header_only_files_give_empty_tables(tmp_path):
    df, warnings = F.read_trials(write(tmp_path / "trials.csv", ",".join(TRIAL_REQUIRED) + "\n"))
    assert len(df) == 0 and list(df.columns) == list(TRIAL_REQUIRED) and warnings == []


# ---------------------------------------------------------------------------------------------
# study.json


def test_study_json_problems(tmp_path):
    f = tmp_path / "results" / "scene_count" / "r" / "study.json"
    write(f, "[1, 2]")
    with pytest.raises(F.LoadError, match="must hold a JSON object, found list"):
        F.read_study_json(f)
    write(f, "")
    with pytest.raises(F.LoadError, match=r"not valid JSON \(empty file\)"):
        F.read_study_json(f)
    write(f, '{"schema_version": 1, "study": ')
    with pytest.raises(F.LoadError, match="not valid JSON: Expecting value at line 1, column"):
        F.read_study_json(f)
    # Another tool's JSON: named as foreign, with its version when that differs too.
    write(f, json.dumps({"name": "x"}))
    with pytest.raises(F.LoadError, match=r"lacks the key\(s\) schema_version, study, run, status \(its "
                                          r"schema_version is None, this dashboard reads 1\): not a study.json"):
        F.read_study_json(f)
    write(f, json.dumps({"schema_version": 2, "study": "scene_count", "run": "r", "status": "weird",
                         "seeds": "0,1"}))
    meta, warnings = F.read_study_json(f)
    text = "\n".join(warnings)
    assert f"schema_version is 2, this dashboard reads {SCHEMA_VERSION}" in text
    assert "missing key(s) dataset, axis" in text
    assert "unknown status 'weird'" in text and "seeds should be a JSON list; ignored" in text
    assert meta["seeds"] is None and meta["search_space"] is None and meta["provenance"] is None


# ---------------------------------------------------------------------------------------------
# scenes/<trial_id>.json


GOOD_SCENE = {"trial_id": "t", "cooccurrence_prob": np.eye(3)[None].tolist(), "cooccurrence_counts_diag": [[1, 2, 3]],
              "scene_usage": [1.0]}


def test_load_scene_names_and_optional_fields(tmp_path):
    f = write(tmp_path / "scenes" / "t.json", json.dumps(GOOD_SCENE))
    scene = F.load_scene(f, ["a", "b", "c"])
    assert scene.class_names == ["a", "b", "c"] and scene.nmi is None and scene.contingency is None
    assert scene.num_scenes == 1 and scene.prob.shape == (1, 3, 3)
    assert F.load_scene(f).class_names == ["label 0", "label 1", "label 2"]
    write(f, json.dumps({**GOOD_SCENE, "class_names": ["x", "y", "z"], "true_scene_nmi": 0.5,
                         "contingency": [[3, 4]]}))
    scene = F.load_scene(f, ["a", "b", "c"])
    assert scene.class_names == ["x", "y", "z"] and scene.nmi == 0.5 and scene.contingency.shape == (1, 2)


def test_load_scene_failures(tmp_path):
    f = tmp_path / "scenes" / "t.json"
    cases = [
        ("{", "not valid JSON"),
        ("[]", "must hold a JSON object"),
        (json.dumps({**GOOD_SCENE, "scene_usage": None}), "missing key.*scene_usage"),
        (json.dumps({**GOOD_SCENE, "scene_usage": [0.5, 0.5]}), "shapes disagree"),
        (json.dumps({**GOOD_SCENE, "cooccurrence_prob": [[1, 2]]}), "should have 3 dimensions"),
        (json.dumps({**GOOD_SCENE, "cooccurrence_prob": [[[1, 2], [3]]]}), "not a numeric array"),
        (json.dumps({**GOOD_SCENE, "cooccurrence_prob": np.ones((1, 2, 3)).tolist()}), "K x C x C"),
        (json.dumps({**GOOD_SCENE, "contingency": [[1], [2]]}), "contingency should have K = 1 rows"),
    ]
    for text, message in cases:
        with pytest.raises(F.LoadError, match=message) as e:
            F.load_scene(write(f, text))
        assert e.value.path == f


# ---------------------------------------------------------------------------------------------
# Cache keys


def test_stamp_changes_when_a_file_is_replaced(tmp_path):
    f = write(tmp_path / "trials.csv", "a\n")
    before = F.stamp(f, tmp_path / "absent.csv")
    assert before[1] == (str(tmp_path / "absent.csv"), 0, -1)
    assert F.stamp(f, tmp_path / "absent.csv") == before
    # What the export does: write a new file and rename it over the old one.
    tmp = write(tmp_path / ".trials.csv.tmp", "a\n")
    os.utime(tmp, ns=(before[0][1] + 10**9, before[0][1] + 10**9))
    tmp.replace(f)
    assert F.stamp(f, tmp_path / "absent.csv") != before
