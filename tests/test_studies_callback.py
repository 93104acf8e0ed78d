"""studies/tuning/callback.py without Ray running: trial events as Ray delivers them -> the export and the console."""

from __future__ import annotations

import json
from types import SimpleNamespace

from helpers import read_rows

from salgl_core.config import ExperimentConfig
from studies.exports.schema import EPOCH_COLUMNS
from studies.tuning.callback import ExportCallback, error_message


def _trial(trial_id: str, num_scenes: int, seed: int = 0, last_result: dict | None = None, error_file=None,
           num_failures: int = 0):
    return SimpleNamespace(trial_id=trial_id, config={"num_scenes": num_scenes, "seed": seed},
                           last_result=last_result, error_file=error_file, get_error=lambda: None,
                           num_failures=num_failures, checkpoint=None)


def _epoch(epoch: int, **extra) -> dict:
    m = {c: float(epoch) for c in EPOCH_COLUMNS[2:]}
    m.update(epoch=epoch, epochs=2, mAP=10.0 * epoch, mAP_ema=11.0 * epoch, best_epoch=epoch,
             best_mAP_ema=11.0 * epoch, device="cpu", time_total_s=3.0 * epoch, **extra)
    return m


def _callback(tmp_path, n_trials: int = 2) -> ExportCallback:
    base = {**ExperimentConfig().to_flat(), "cache_dir": "/somewhere/cache"}
    meta = {"study": "scene_count", "run": "r", "base_config": base, "n_trials": n_trials, "provenance": {}}
    cb = ExportCallback(str(tmp_path), meta, {"num_scenes": 4}, n_trials, "num_scenes")
    cb.setup()
    return cb


def test_a_trial_from_start_to_finish(tmp_path, capsys):
    cb = _callback(tmp_path)
    a = _trial("a", 4)
    cb.on_step_begin(0, [a])
    cb.on_trial_start(0, [a], a)
    assert "start    a num_scenes=4 seed=0  (the paper's configuration)" in capsys.readouterr().out
    cb.export.flush()  # trials.csv is a snapshot written every few seconds; now, here
    (row,) = read_rows(tmp_path / "trials.csv")
    assert (row["status"], row["is_paper_config"], row["num_scenes"], row["cache_dir"]) == ("RUNNING", "True", "4", "")
    for e in (1, 2):
        cb.on_trial_result(0, [a], a, _epoch(e, node_id="n" * 56, node_ip="10.0.0.7", gpu_ids="1"))
    assert "a epoch 2/2  mAP 20.00  EMA mAP 22.00" in capsys.readouterr().out
    cb.export.flush()
    (row,) = read_rows(tmp_path / "trials.csv")
    assert (row["node_id"], row["node_ip"], row["gpu_ids"], row["retries"]) == ("n" * 56, "10.0.0.7", "1", "0")
    scene = {"num_scenes": 4, "scene_usage": [0.25] * 4}
    a.last_result = _epoch(2, final=True, trial_status="FINISHED", error="", scene_report=json.dumps(scene))
    cb.on_trial_result(0, [a], a, a.last_result)  # the final report repeats the last epoch: no new row
    cb.on_trial_complete(0, [a], a)
    assert "[1/2] FINISHED a num_scenes=4 seed=0  mAP_ema 22.00 (best 22.00, epoch 2)  6s" in capsys.readouterr().out
    cb.export.flush()
    (row,) = read_rows(tmp_path / "trials.csv")
    assert (row["status"], row["epochs_done"], row["seconds"], row["error"]) == ("FINISHED", "2", "6.0", "")
    assert [r["epoch"] for r in read_rows(tmp_path / "epochs.csv")] == ["1", "2"]
    assert json.loads((tmp_path / "scenes" / "a.json").read_text()) == {"trial_id": "a", **scene}
    cb.on_experiment_end([a])  # one of two trials: the study did not finish
    assert json.loads((tmp_path / "study.json").read_text())["status"] == "INTERRUPTED"


def test_stopped_failed_and_retried_trials(tmp_path, capsys):
    cb = _callback(tmp_path)
    stopped = _trial("s", 1, last_result=_epoch(1))  # ASHA stopped it: no final report
    cb.on_trial_start(0, [stopped], stopped)
    cb.on_trial_complete(0, [stopped], stopped)
    error_file = tmp_path / "error.txt"
    error_file.write_text("Traceback (most recent call last):\n  ...\nCorruptImageError: img_3.jpg is truncated\n")
    failed = _trial("f", 1, seed=1, error_file=str(error_file), num_failures=1)
    cb.on_trial_recover(0, [failed], failed)
    assert "trial f failed (CorruptImageError: img_3.jpg is truncated); retrying from its last checkpoint " \
           "(retry 1)" in capsys.readouterr().out
    failed.num_failures = 2  # the retry failed too: Ray gives up
    cb.on_trial_error(0, [failed], failed)
    cb.on_trial_error(0, [failed], failed)  # a second report of the same end is ignored
    out = capsys.readouterr().out
    assert out.count("ERROR    f num_scenes=1 seed=1  CorruptImageError") == 1
    cb.export.flush()
    rows = {r["trial_id"]: r for r in read_rows(tmp_path / "trials.csv")}
    assert rows["s"]["status"] == "STOPPED" and rows["f"]["status"] == "ERROR"
    assert rows["f"]["error"] == "CorruptImageError: img_3.jpg is truncated" and rows["f"]["retries"] == "2"
    cb.on_experiment_end([stopped, failed])
    meta = json.loads((tmp_path / "study.json").read_text())
    assert (meta["status"], meta["n_finished"]) == ("FINISHED", 2)


def test_error_message_without_a_file():
    trial = SimpleNamespace(error_file=None, get_error=lambda: None)
    assert "without a message" in error_message(trial)


def test_each_end_says_the_time_left(tmp_path, capsys, monkeypatch):
    import studies.tuning.callback as callback_mod

    now = [0.0]
    monkeypatch.setattr(callback_mod, "time", SimpleNamespace(monotonic=lambda: now[0]))
    cb = _callback(tmp_path, n_trials=4)
    cb.export.meta["max_concurrent"] = 2
    a, b, c, d = (_trial(t, 4, seed=i) for i, t in enumerate("abcd"))
    for t in (a, b):
        cb.on_trial_start(0, [a, b], t)

    def end(trial, at: float) -> str:
        now[0] = at
        trial.last_result = _epoch(1, final=True, trial_status="FINISHED", error="", scene_report="")
        cb.on_trial_complete(0, [trial], trial)
        return capsys.readouterr().out.strip().splitlines()[-1]

    # a took 60 s; b, as long in, is about done; c and d wait for a slot each: 60 s.
    assert end(a, 60.0).endswith("  3s  time left ~60 s")
    now[0] = 60.0
    cb.on_trial_start(0, [c], c)
    # mean 65 s: c, 10 s in, needs 55 s more; d starts in the slot b frees and needs 65 s.
    assert end(b, 70.0).endswith("  time left ~65 s")
    now[0] = 70.0
    cb.on_trial_start(0, [d], d)
    assert end(c, 125.0).endswith("time left ~10 s")  # mean 65 s; d is 55 s in
    assert "time left" not in end(d, 190.0)  # the last one: nothing left to estimate
