"""studies/tuning/trackers.py (and tracking.py, mlflow_tracker.py, wandb_tracker.py): `--log-to mlflow` /
`--log-to wandb`. Without Ray: the tags, config and metrics of a
trial, the pickling Ray does between sessions, the checks before Ray starts, and real MLflow (SQLite) and W&B
(offline) runs fed trial events as Ray delivers them, across a resume. With Ray: a smoke study logging to both,
read back (MlflowClient; W&B's offline .wandb files) against its export."""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import read_rows
from study_process import Study
from terminal_lines import foreign_lines

from salgl_core.checkpoint import BEST_EMA
from salgl_core.config import ExperimentConfig
from salgl_core.engine import fit
from salgl_core.presets import SMOKE, synthetic_preset
from studies import scene_count
from studies.analysis.summary import format_table
from studies.design.spec import StudyError
from studies.exports.schema import EPOCH_COLUMNS
from studies.tuning import resume, trackers, tracking, wandb_tracker
from studies.tuning.callback import trial_config
from studies.tuning.mlflow_tracker import MlflowCallback
from studies.tuning.tracking import Trackers
from studies.tuning.wandb_tracker import WandbCallback

REPO = Path(__file__).resolve().parents[1]
BASE = {k: v for k, v in ExperimentConfig().to_flat().items() if k != "cache_dir"}
META = {"base_config": BASE, "provenance": {"big": "x" * 100}, "started": "2025-06-03T09:00:00Z"}
# The numeric epochs.csv columns: what every epoch logs, among other numbers.
EPOCH_NUMBERS = tuple(c for c in EPOCH_COLUMNS if c not in ("trial_id", "epoch"))


def wandb_records(path: Path):
    """The protobuf `Record`s of an offline W&B run's .wandb file (W&B 0.31 has no reader of its own): a
    leveldb-style log of 32 KiB blocks, each record in chunks with a 7-byte header (crc, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL or LAST
            r = pb.Record()
            r.ParseFromString(buf)
            buf = b""
            yield r


def wandb_run(folder: Path) -> dict:
    """One offline W&B run folder: its run record, config, tags, history rows and summary."""
    (path,) = folder.glob("*.wandb")
    out = {"config": {}, "history": [], "summary": {}}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(id=r.run.run_id, name=r.run.display_name, group=r.run.run_group, job_type=r.run.job_type,
                       tags=list(r.run.tags))
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
    return out


def _trial(trial_id: str, config: dict, last_result: dict | None = None):
    return SimpleNamespace(trial_id=trial_id, config=config, last_result=last_result, num_failures=0)


def _result(epoch: int, **extra) -> dict:
    """One epoch's result as Ray delivers it: the trainable's metrics, where it ran, Ray's own keys."""
    return {**{c: float(epoch) + 0.5 for c in EPOCH_NUMBERS}, "epoch": epoch, "epochs": 2, "mAP_ema": 10.0 * epoch,
            "best_epoch": epoch, "device": "cpu", "node_ip": "10.0.0.5", "node_id": "abc123", "gpu_ids": "0",
            "trial_started": 1.75e9, "reported_at": 1.75e9 + epoch, "training_iteration": epoch,
            "time_total_s": 3.0 * epoch, "timestamp": 1750000000, "pid": 42, "done": False, "trial_id": "a",
            "date": "2025-06-03_09-00-00", "hostname": "h", **extra}


def test_trial_tags_config_and_metrics():
    flat = trial_config(META, {"num_scenes": 4, "seed": 1})
    assert flat == {**BASE, "num_scenes": 4, "seed": 1}
    assert tracking.trial_tags("scene_count", "r", "num_scenes", "a", {"num_scenes": 4, "seed": 1}, flat) == {
        "study": "scene_count", "run": "r", "trial_id": "a", "axis": "num_scenes", "value": "4", "seed": "1"}
    arms = {"base_config": BASE, "arms": {"no_graph": {"num_scenes": 1}}}
    config = {"arm": "no_graph", "seed": 0}
    tags = tracking.trial_tags("mechanism", "r", "arm", "b", config, trial_config(arms, config))
    assert (tags["arm"], tags["axis"], tags["value"], tags["seed"]) == ("no_graph", "arm", "no_graph", "0")
    search = tracking.trial_tags("tune", "r", None, "c", {"lr": 0.1, "seed": 2}, {**BASE, "lr": 0.1, "seed": 2})
    assert search == {"study": "tune", "run": "r", "trial_id": "c", "seed": "2"}
    assert wandb_tracker.wandb_tags(tags) == ["study=mechanism", "run=r", "arm=no_graph", "axis=arm", "value=no_graph",
                                         "seed=0"]

    # Only the epoch's own numbers: no texts, lists, flags, timestamps, epoch counter or Ray bookkeeping.
    metrics = tracking.epoch_metrics(_result(2, scene_usage=[0.5, 0.5], final=False))
    assert set(metrics) == {*EPOCH_NUMBERS, "best_epoch"} and metrics["mAP_ema"] == 20.0
    assert tracking.is_epoch(_result(1)) and not tracking.is_epoch(_result(1, final=True))
    assert wandb_tracker.wandb_id("scene_count", "my run/2", "a_00001") == "scene_count-my-run-2-a_00001"


def test_callbacks_pickle_as_plain_data(tmp_path):
    """Ray pickles the callbacks with every experiment snapshot: the clients and open runs of a session stay out."""
    t = Trackers(("mlflow", "wandb"), str(tmp_path))
    cbs = trackers.callbacks(t, "scene_count", "r", "num_scenes", META)
    assert [type(cb) for cb in cbs] == [MlflowCallback, WandbCallback]
    assert trackers.callbacks(Trackers((), str(tmp_path)), "s", "r", None, META) == []
    for cb in cbs:
        cb._runs["a"] = threading.Lock()  # what a session holds cannot be pickled
        cb._failed = True
        back = pickle.loads(pickle.dumps(cb))
        assert back._runs == {} and back._failed is False and back.trackers == t
        assert back.meta == {"base_config": BASE, "arms": None}  # not the whole study.json
        assert back.key == {"study": "scene_count", "run": "r", "started": "2025-06-03T09:00:00Z"}


def test_trackers_from_args_and_resume_keeps_the_flags(tmp_path):
    args = scene_count.get_args_parser().parse_args(
        ["--log-to", "wandb", "--log-to", "mlflow", "--log-to", "wandb", "--results-dir", str(tmp_path / "res")])
    t = Trackers.from_args(args)
    assert t.log_to == ("wandb", "mlflow")  # each once
    assert (t.wandb_project, t.wandb_mode, t.mlflow_uri) == ("salgl", "offline", None)
    assert t.tracking_uri == f"sqlite:///{tmp_path}/res/mlflow/mlflow.db"
    assert t.artifact_location == f"{tmp_path}/res/mlflow/artifacts"
    assert Trackers(mlflow_uri="http://h:5000").artifact_location is None  # the server decides
    saved = resume.saved_args(args, name="r")  # study_args.json: --resume restores them as it restores the rest
    assert (saved["log_to"], saved["mlflow_uri"], saved["wandb_mode"]) == (["wandb", "mlflow", "wandb"], None,
                                                                           "offline")
    assert not {"log_to", "mlflow_uri", "wandb_project", "wandb_mode"} & set(resume.RUNTIME_FLAGS)
    old = SimpleNamespace(results_dir=str(tmp_path))  # a run started before the flags existed
    assert Trackers.from_args(old).log_to == ()


def test_a_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails
    with pytest.raises(StudyError) as e:
        trackers.check(Trackers(("mlflow", "wandb")))
    assert str(e.value) == "--log-to wandb needs the wandb package: pip install -e '.[trackers]'"
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(StudyError, match=r"--log-to mlflow needs the mlflow package: pip install -e '\.\[trackers\]'"):
        trackers.check(Trackers(("mlflow",)))
    trackers.check(Trackers())  # no --log-to: nothing is imported


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_mlflow_server_that_does_not_answer(monkeypatch):
    refused = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(StudyError, match=rf"^--mlflow-uri {refused} does not answer within 5 s .*check the URI"):
        trackers.check_mlflow_uri(refused)
    # A server that accepts the connection and never answers: refused after the timeout.
    monkeypatch.setattr(trackers, "CONNECT_TIMEOUT_S", 0.3)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(StudyError, match=rf"^--mlflow-uri {uri} does not answer within 0.3 s"):
            trackers.check(Trackers(("mlflow",), mlflow_uri=uri))
    with pytest.raises(StudyError, match="^--mlflow-uri is for --log-to mlflow"):
        trackers.check(Trackers(("wandb",), mlflow_uri=uri))


def test_wandb_online_needs_a_login(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(StudyError, match=r"^--wandb-mode online needs a W&B login: run `wandb login`"):
        trackers.check(Trackers(("wandb",), wandb_mode="online"))
    trackers.check(Trackers(("wandb",)))  # offline: no login needed
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password k\n")
    assert trackers.wandb_logged_in()
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert trackers.wandb_logged_in()


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    """W&B's settings, cache and data folders inside tmp_path; its service process stopped afterwards."""
    for name, sub in (("HOME", "home"), ("WANDB_CONFIG_DIR", "wb/config"), ("WANDB_CACHE_DIR", "wb/cache"),
                      ("WANDB_DATA_DIR", "wb/data"), ("WANDB_DIR", "wb/dir")):
        (tmp_path / sub).mkdir(parents=True)
        monkeypatch.setenv(name, str(tmp_path / sub))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path
    import wandb

    wandb.teardown()


def _mlflow_runs(t: Trackers, study: str) -> tuple[object, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(t.tracking_uri)
    exp = client.get_experiment_by_name(study)
    return client, list(client.search_runs([exp.experiment_id]))


@pytest.mark.slow
def test_trial_events_to_mlflow_and_wandb_across_a_resume(wandb_home, capsys):
    """A trial logged in one session, Ray's pickle of the callbacks, the same trial finished in the next: one MLflow
    run (found by its tags) and one W&B run id, with both sessions' epochs; the end attaches the export's files. A
    run started again under the same name (--overwrite) gets a parent run of its own."""
    t = Trackers(("mlflow", "wandb"), str(wandb_home / "runs"))
    a = _trial("a", {"num_scenes": 4, "seed": 1})
    first = trackers.callbacks(t, "scene_count", "r", "num_scenes", META)
    for cb in first:
        cb.setup(stop=None, num_samples=1, total_num_samples=1)
        cb.on_trial_start(0, [a], a)
        cb.on_trial_result(0, [a], a, _result(1))
    snapshot = pickle.dumps(first)
    for cb in first:
        cb.on_experiment_end([a])  # a Ctrl-C: W&B closes the open runs; MLflow's stays RUNNING until the end

    second = pickle.loads(snapshot)  # what Tuner.restore hands back
    a.last_result = {**_result(2), "final": True, "trial_status": "FINISHED"}
    for cb in second:
        cb.setup()
        cb.on_trial_start(0, [a], a)
        cb.on_trial_result(0, [a], a, _result(2, node_ip="10.0.0.6"))  # retried on another node
        cb.on_trial_result(0, [a], a, a.last_result)  # the final report repeats the last epoch: not logged
        cb.on_trial_complete(0, [a], a)
    run_dir = wandb_home / "runs" / "scene_count" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "study.json").write_text(json.dumps({"study": "scene_count", "started": META["started"]}))
    trackers.finish_study(t, "scene_count", "r", "num_scenes", run_dir, "FINISHED")
    out = capsys.readouterr()
    assert "warning" not in out.out and out.err == "", out

    client, runs = _mlflow_runs(t, "scene_count")
    (parent,) = [r for r in runs if r.data.tags["kind"] == "study"]
    (child,) = [r for r in runs if r.data.tags["kind"] == "trial"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.run_name == "scene_count K=4 seed=1"  # the trial's name in the Ray dashboard
    assert {k: child.data.tags[k] for k in ("study", "run", "trial_id", "value", "seed", "status", "node_ip")} == {
        "study": "scene_count", "run": "r", "trial_id": "a", "value": "4", "seed": "1", "status": "FINISHED",
        "node_ip": "10.0.0.6"}
    assert child.data.params == {k: str(v) for k, v in {**BASE, "num_scenes": 4, "seed": 1}.items()}
    assert [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, "mAP_ema")] == [(1, 10.0),
                                                                                                    (2, 20.0)]
    assert (child.info.status, parent.info.status) == ("FINISHED", "FINISHED")
    assert [f.path for f in client.list_artifacts(parent.info.run_id)] == ["study.json"]
    assert Path(parent.info.artifact_uri).is_relative_to(wandb_home / "runs" / "mlflow" / "artifacts")

    # Select by the run id in each folder's records, not by its name: W&B names a folder by the second it started
    # and adds "-1" when two sessions of one run start within the same second. Sorted names keep the sessions' order.
    folders = sorted((wandb_home / "runs" / "wandb" / "scene_count" / "r" / "wandb").glob("offline-run-*"))
    runs_by_folder = {f: wandb_run(f) for f in folders}
    sessions = [w for w in runs_by_folder.values() if w["id"] == "scene_count-r-a"]
    assert [s["id"] for s in sessions] == ["scene_count-r-a"] * 2  # the same run, continued
    assert [[h["epoch"] for h in s["history"]] for s in sessions] == [[1], [2]]
    assert sessions[1]["history"][0]["mAP_ema"] == 20.0 and sessions[1]["summary"]["status"] == "FINISHED"
    assert sessions[1]["config"]["node_ip"] == "10.0.0.6" and sessions[0]["config"]["lr"] == BASE["lr"]
    assert (sessions[0]["group"], sessions[0]["job_type"]) == ("scene_count/r", "trial")
    (analysis,) = [f for f, w in runs_by_folder.items() if w["id"] == "scene_count-r-analysis-20250603090000"]
    assert (analysis / "files" / "study.json").is_file()

    (again,) = trackers.callbacks(Trackers(("mlflow",), t.results_dir), "scene_count", "r", "num_scenes",
                                  {**META, "started": "2025-06-04T09:00:00Z"})
    b = _trial("b", {"num_scenes": 2, "seed": 0})
    again.setup()
    again.on_trial_start(0, [b], b)
    _, runs = _mlflow_runs(t, "scene_count")
    parents = {r.data.tags["started"]: r.info.run_id for r in runs if r.data.tags["kind"] == "study"}
    assert set(parents) == {"2025-06-03T09:00:00Z", "2025-06-04T09:00:00Z"}
    assert {r.data.tags["trial_id"]: r.data.tags["mlflow.parentRunId"] for r in runs
            if r.data.tags["kind"] == "trial"} == {"a": parents["2025-06-03T09:00:00Z"],
                                                   "b": parents["2025-06-04T09:00:00Z"]}


def test_a_tracker_that_fails_is_one_warning_and_the_study_goes_on(tmp_path, capsys):
    t = Trackers(("mlflow",), str(tmp_path), mlflow_uri="bogus://nowhere")
    (cb,) = trackers.callbacks(t, "scene_count", "r", "num_scenes", META)
    a = _trial("a", {"num_scenes": 4, "seed": 1})
    cb.setup()
    cb.on_trial_start(0, [a], a)
    cb.on_trial_result(0, [a], a, _result(1))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: mlflow: opening the tracker failed (")
    assert lines[0].endswith("the study goes on without mlflow")
    trackers.finish_study(t, "scene_count", "r", "num_scenes", tmp_path, "FINISHED")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: mlflow: the analysis was not attached (")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["package", "server"])
def test_a_study_refuses_before_ray_starts(tmp_path, case):
    """The script's answer: exit code 2, one line, before Ray starts and before anything is written."""
    argv = ["studies/scene_count.py", "--smoke", "--results-dir", str(tmp_path / "res"), "--storage-path",
            str(tmp_path / "ray"), "--log-to", "wandb"]
    if case == "package":
        code = "import runpy, sys; sys.modules['wandb'] = None; sys.argv = sys.argv[1:]; " \
               "runpy.run_path(sys.argv[0], run_name='__main__')"
        cmd = [sys.executable, "-c", code, *argv]
        expected = "error: --log-to wandb needs the wandb package: pip install -e '.[trackers]'"
    else:
        uri = f"http://127.0.0.1:{_free_port()}"
        cmd = [sys.executable, *argv, "--log-to", "mlflow", "--mlflow-uri", uri]
        expected = f"error: --mlflow-uri {uri} does not answer within 5 s"
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.startswith(expected) and p.stderr.count("\n") == 1, p.stderr
    assert "Ray" not in p.stdout + p.stderr
    assert not (tmp_path / "res").exists() and not (tmp_path / "ray").exists()


def _top_level() -> set[str]:
    return set(os.listdir(REPO)) | {f"runs/{n}" for n in (os.listdir(REPO / "runs") if (REPO / "runs").is_dir()
                                                          else ())}


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_study_logs_to_mlflow_and_wandb(tmp_path, ray_tmp, monkeypatch):
    """scene_count --smoke, K in {2, 4}, one seed, logging to both trackers: one MLflow run per trial under the
    study run's parent, which holds the analysis; one offline W&B run per trial and the analysis one; the same
    config, tags and per-epoch metrics as the export. W&B's and MLflow's state stay inside tmp_path.
    For the suite's time, the same study checks two more of a study's options: its finished terminal holds only
    the project's lines (tests/test_studies_terminal.py), and every trial starts --init-from a smoke run
    (salgl_core/transfer.py; tests/test_transfer.py covers the loading itself)."""
    for name, sub in (("HOME", "home"), ("WANDB_CONFIG_DIR", "wb/config"), ("WANDB_CACHE_DIR", "wb/cache"),
                      ("WANDB_DATA_DIR", "wb/data"), ("WANDB_DIR", "wb/dir")):
        (tmp_path / sub).mkdir(parents=True)
        monkeypatch.setenv(name, str(tmp_path / sub))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    before = _top_level()
    results, storage = tmp_path / "results", tmp_path / "ray"
    src = tmp_path / "source"  # the run every trial starts from: one smoke epoch
    fit(ExperimentConfig.from_flat({**synthetic_preset(), **SMOKE, "cache_dir": str(tmp_path / "cache")}), src,
        log=None)
    s = Study(tmp_path, [sys.executable, "studies/scene_count.py", "--smoke", "--values", "2", "--seeds", "0",
                         "--name", "t", "--results-dir", str(results), "--storage-path", str(storage),
                         "--ray-temp-dir", ray_tmp, "--no-dashboard", "--log-to", "mlflow", "--log-to", "wandb",
                         "--init-from", str(src)],
              "study.log")
    assert s.end(timeout=300) == 0, s.out()[-4000:]
    out = s.out()
    # Only the study's own lines (tests/test_studies_terminal.py's allow-list: no Ray, Optuna, W&B or MLflow line);
    # this study is also the suite's check of a finished study's terminal.
    assert foreign_lines(out) == [], out
    assert not [ln for ln in out.splitlines() if ln.startswith("warning")], out
    # What a user waits for: progress with the time left, then the conclusion, the next study and the timing.
    lines = out.splitlines()
    first, last = (next(ln for ln in lines if ln.startswith(f"[{k}/2]")) for k in (1, 2))
    assert re.search(r"  time left ~\d+ (s|min)$", first) and "time left" not in last
    for start in ("  conclusion: ", "  next: ", "  preparation ", "  trials ", "  optuna: "):
        assert sum(ln.startswith(start) for ln in lines) == 1, (start, out)
    assert "(the synthetic preset's value), 95% intervals" in out and "paper_config" not in out
    # --init-from: checked once, up front (its table printed once), recorded in the export for every trial.
    assert out.count(f"init_from {src / BEST_EMA}: the EMA model of epoch 1 (its best)") == 1, out
    # Where the runs are, once each, before the summary (which ends with where to look next).
    assert f"logged to MLflow: experiment scene_count, run t; view: .venv/bin/mlflow ui --backend-store-uri " \
           f"sqlite:///{results}/mlflow/mlflow.db" in lines, out
    assert f"logged to W&B offline: group scene_count/t; upload to project salgl: .venv/bin/wandb sync " \
           f"{results}/wandb/scene_count/t/wandb/offline-run-*" in lines, out
    summary = lines.index(next(ln for ln in lines if ln.startswith("scene_count t: FINISHED")))
    assert [i for i, ln in enumerate(lines) if ln.startswith("logged to ")] == [summary - 3, summary - 2], out

    run = results / "scene_count" / "t"
    meta = json.loads((run / "study.json").read_text())
    trials = {r["trial_id"]: r for r in read_rows(run / "trials.csv")}
    epochs = read_rows(run / "epochs.csv")
    assert len(trials) == 2 and {r["num_scenes"] for r in trials.values()} == {"2", "4"}
    assert meta["base_config"]["init_from"] == str(src) and {r["init_from"] for r in trials.values()} == {str(src)}
    assert {r["status"] for r in trials.values()} == {"FINISHED"}
    assert json.loads((storage / "scene_count" / "t" / "study_args.json").read_text())["log_to"] == ["mlflow",
                                                                                                      "wandb"]

    # MLflow: experiment scene_count, a parent run for t with the analysis, a child run per trial.
    t = Trackers(("mlflow",), str(results))
    client, runs = _mlflow_runs(t, "scene_count")
    (parent,) = [r for r in runs if r.data.tags["kind"] == "study"]
    children = {r.data.tags["trial_id"]: r for r in runs if r.data.tags["kind"] == "trial"}
    assert set(children) == set(trials) and len(runs) == 3
    assert (parent.info.run_name, parent.info.status, parent.data.tags["run"]) == ("t", "FINISHED", "t")
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"analysis.json", "comparisons.csv", "study.json", "verdict_table.txt"} <= artifacts
    local = Path(parent.info.artifact_uri)
    assert local.is_relative_to(results / "mlflow" / "artifacts")
    analysis = json.loads((run / "analysis.json").read_text())
    assert json.loads((local / "analysis.json").read_text()) == analysis
    assert (local / "comparisons.csv").read_text() == (run / "comparisons.csv").read_text()
    assert (local / "verdict_table.txt").read_text() == format_table(analysis) + "\n"
    for tid, r in children.items():
        row = trials[tid]
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.info.status == "FINISHED"
        assert {k: r.data.tags[k] for k in ("study", "run", "value", "seed", "node_ip", "node_id")} == {
            "study": "scene_count", "run": "t", "value": row["num_scenes"], "seed": row["seed"],
            "node_ip": row["node_ip"], "node_id": row["node_id"]}
        config = {**meta["base_config"], "num_scenes": int(row["num_scenes"]), "seed": int(row["seed"])}
        assert r.data.params == {k: str(v) for k, v in config.items()}
        mine = [e for e in epochs if e["trial_id"] == tid]
        for col in EPOCH_NUMBERS:
            history = [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, col)]
            assert history == [(int(e["epoch"]), float(e[col])) for e in mine], col

    # W&B: one offline run per trial in the group scene_count/t, and the analysis run with its files.
    folders = list((results / "wandb" / "scene_count" / "t" / "wandb").glob("offline-run-*"))
    wb = {w["id"].removeprefix("scene_count-t-"): w for w in map(wandb_run, folders)}
    stamp = "".join(ch for ch in meta["started"] if ch.isdigit())
    assert set(wb) == {*trials, f"analysis-{stamp}"} and len(folders) == 3
    for tid, row in trials.items():
        w = wb[tid]
        assert (w["group"], w["job_type"]) == ("scene_count/t", "trial")
        assert {f"value={row['num_scenes']}", f"seed={row['seed']}", "study=scene_count", "run=t"} <= set(w["tags"])
        config = {**meta["base_config"], "num_scenes": int(row["num_scenes"]), "seed": int(row["seed"])}
        assert {k: w["config"][k] for k in config} == config
        assert (w["config"]["node_ip"], w["config"]["gpu_ids"]) == (row["node_ip"], row["gpu_ids"])
        mine = [e for e in epochs if e["trial_id"] == tid]
        assert [[h["_step"], *(h[c] for c in EPOCH_NUMBERS)] for h in w["history"]] == [
            [int(e["epoch"]), *(float(e[c]) for c in EPOCH_NUMBERS)] for e in mine]
    a = wb[f"analysis-{stamp}"]
    assert (a["group"], a["job_type"], a["summary"]["status"]) == ("scene_count/t", "analysis", "FINISHED")
    files = next(f for f in folders if f.name.endswith(f"-analysis-{stamp}")) / "files"
    assert json.loads((files / "analysis.json").read_text()) == analysis
    assert (files / "verdict_table.txt").read_text() == format_table(analysis) + "\n"
    (table,) = (files / "media" / "table").glob("verdict_table_*.table.json")  # the wandb.Table logged
    columns, rows = tracking.verdict_rows(analysis)
    assert json.loads(table.read_text()) == {"columns": columns, "data": rows} and len(rows) == 2

    assert _top_level() <= before, "the study left files in the repository"
