"""studies/exports/predictions.py without Ray running: a trial's validation predictions from the worker's final Tune
checkpoint to the export's predictions/ folder, and what the callback does when they are missing."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import read_rows
from ray import tune

from salgl_core.config import ExperimentConfig
from studies.analysis.bootstrap import mean_average_precision
from studies.exports.predictions import TRANSFER_FILE, export_trial, write_transfer
from studies.tuning.callback import ExportCallback


def _predictions(seed: int, ids: list) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((len(ids), 5)) < 0.3).astype(np.float32)
    targets[0] = 1  # every class has a positive
    ignore = np.zeros(targets.shape, dtype=bool)
    ignore[3, 2] = True  # a VOC "difficult"-only pair
    # Scores spread enough that float16 keeps their order: the transfer must not change the mAP.
    scores = np.clip(0.6 * targets + 0.4 * rng.random(targets.shape), 0, 1).astype(np.float32)
    return {"scores": scores, "targets": targets, "ignore": ignore, "image_ids": np.asarray(ids)}


def _checkpoint(folder, predictions: dict[str, np.ndarray] | None) -> tune.Checkpoint:
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"model")  # what travels beside it and must not be read
    if predictions is not None:
        write_transfer(folder, predictions)
    return tune.Checkpoint.from_directory(str(folder))


@pytest.mark.parametrize("ids", [[9, 25, 30, 42, 49, 61, 72, 73], [f"2007_{i:06d}" for i in range(8)]],
                         ids=["coco-ids", "voc-ids"])
def test_predictions_travel_from_the_final_checkpoint_to_the_export(tmp_path, ids):
    run = tmp_path / "run"
    first = _predictions(0, ids)
    export_trial(run, "a", _checkpoint(tmp_path / "ckpt-a", first))
    second = _predictions(1, ids)  # another trial: other scores, and (as a check) other targets
    export_trial(run, "b", _checkpoint(tmp_path / "ckpt-b", second))

    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["a.npz", "b.npz", "targets.npz"]
    with np.load(run / "predictions" / "targets.npz", allow_pickle=False) as z:
        assert (z["targets"].dtype, z["ignore"].dtype) == (np.int8, bool)
        np.testing.assert_array_equal(z["targets"], first["targets"])  # written once, by the first trial
        np.testing.assert_array_equal(z["ignore"], first["ignore"])
        np.testing.assert_array_equal(z["image_ids"], np.asarray(ids))
    for name, p in (("a", first), ("b", second)):
        with np.load(run / "predictions" / f"{name}.npz", allow_pickle=False) as z:
            scores, saved_ids = z["scores"], z["image_ids"]
        assert scores.dtype == np.float16 and scores.shape == p["scores"].shape
        np.testing.assert_array_equal(saved_ids, np.asarray(ids))
        assert mean_average_precision(scores.astype(np.float32), p["targets"], p["ignore"]) == pytest.approx(
            mean_average_precision(p["scores"], p["targets"], p["ignore"]), abs=1e-9)


def test_a_missing_transfer_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no {TRANSFER_FILE} in the trial's final checkpoint"):
        export_trial(tmp_path / "run", "a", _checkpoint(tmp_path / "ckpt", None))
    with pytest.raises(FileNotFoundError, match="trial a ended without a checkpoint"):
        export_trial(tmp_path / "run", "a", None)
    assert not (tmp_path / "run" / "predictions").exists()


def test_the_callback_saves_predictions_of_finished_trials_only_and_survives_their_absence(tmp_path, capsys):
    meta = {"study": "scene_count", "run": "r", "base_config": ExperimentConfig().to_flat(), "n_trials": 3,
            "provenance": {}}
    cb = ExportCallback(str(tmp_path / "run"), meta, {"num_scenes": 4}, 3, "num_scenes")
    cb.setup()
    final = {"final": True, "error": "", "scene_report": json.dumps({"num_scenes": 4}), "mAP_ema": 50.0,
             "time_total_s": 3.0}

    def trial(trial_id: str, status: str, checkpoint) -> SimpleNamespace:
        return SimpleNamespace(trial_id=trial_id, config={"num_scenes": 4, "seed": 0}, num_failures=0,
                               last_result={**final, "trial_status": status}, checkpoint=checkpoint)

    ids = list(range(8))
    done = trial("done", "FINISHED", _checkpoint(tmp_path / "c1", _predictions(0, ids)))
    lost = trial("lost", "FINISHED", _checkpoint(tmp_path / "c2", None))
    diverged = trial("div", "DIVERGED", _checkpoint(tmp_path / "c3", _predictions(1, ids)))
    for t in (done, lost, diverged):
        cb.on_trial_start(0, [t], t)
        cb.on_trial_complete(0, [t], t)
    cb.export.flush()  # trials.csv is a snapshot written every few seconds; now, here
    out = capsys.readouterr().out
    assert f"warning: trial lost: its validation predictions were not saved (no {TRANSFER_FILE}" in out
    assert {r["trial_id"]: r["status"] for r in read_rows(tmp_path / "run" / "trials.csv")} == {
        "done": "FINISHED", "lost": "FINISHED", "div": "DIVERGED"}
    assert sorted(p.name for p in (tmp_path / "run" / "predictions").iterdir()) == ["done.npz", "targets.npz"]
