"""Studies on a simulated multi-node Ray cluster: ray.cluster_utils.Cluster starts a head and two worker
nodes on this machine, each its own raylet, as Ray's own tests do. Trials spread over the nodes under
readable names with Ray metrics; fractional GPUs pack four trials on one GPU; a killed driver resumes
on the same cluster; a lost node's trial moves to the other node from its checkpoint; a multi-node
study refuses storage its nodes cannot share.

One cluster serves the whole module (Ray starts in tens of seconds on 2 cores), shut down through the
cluster object whatever happens. The test that removes a node runs last.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
from helpers import descendants, header, kill, read_rows, wait_until
from ray.cluster_utils import Cluster
from ray.tune import ExperimentAnalysis
from ray.util.state import list_actors, list_tasks
from ray_cli import free_port, short_temp_dir

from studies import scene_count
from studies.design.spec import StudyError
from studies.exports.schema import STUDY_KEYS, TRIAL_COLUMNS
from studies.tuning.cluster import token_auth_on
from studies.tuning.internals import default_temp_dir
from studies.tuning.monitor import TRAINABLE_CLASS

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim():
    """Head (no CPUs: the driver's node, as on a real cluster) + a worker with 1 CPU and 1 declared GPU +
    a worker with 1 CPU. Metrics exported every second; a dead node noticed within seconds."""
    tmp = short_temp_dir("rc")
    # Cluster writes the head's address to <Ray's default temp dir>/ray_current_cluster ($TMPDIR/ray), whatever
    # temp_dir says, and does not create that folder: on a machine where Ray never ran it is missing.
    os.makedirs(default_temp_dir(), exist_ok=True)
    token_auth_on()  # every Ray we start has token authentication on; this cluster's nodes listen beyond 127.0.0.1
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "temp_dir": tmp, "include_dashboard": True, "dashboard_port": free_port(),
            "dashboard_agent_listen_port": free_port(),
            "_system_config": {"metrics_report_interval_ms": 1000, "health_check_period_ms": 1000,
                               "health_check_failure_threshold": 3}})
        gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
        cpu_node = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield SimpleNamespace(cluster=cluster, gpu_node=gpu_node, cpu_node=cpu_node, tmp=Path(tmp))
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _args(tmp: Path, name: str, *extra: str):
    return scene_count.get_args_parser().parse_args(
        ["--smoke", "--name", name, "--results-dir", str(tmp / "results"), "--storage-path", str(tmp / "ray"),
         *extra])


def _metric_lines(name: str) -> list[str]:
    """Lines of every node's Prometheus endpoint for the Ray metric `name`."""
    lines = []
    for n in ray.nodes():
        if n["Alive"]:
            url = f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            lines += [ln for ln in text.splitlines() if ln.startswith(name + "{")]
    return lines


def test_trials_spread_over_nodes_under_readable_names(sim, tmp_path):
    """Two one-CPU trials on two one-CPU workers: one on each, Ray's experiment folder behind a URI (pyarrow,
    as s3:// would be). The export is complete and schema-valid and says where each trial ran; Ray's state
    API lists the trials under their names; Ray metrics carry each trial's progress."""
    outcome = scene_count.main(_args(tmp_path, "spread", "--values", "1", "4", "--gpus-per-trial", "0",
                                     "--cpus-per-trial", "1", "--storage-path", f"file://{tmp_path}/uri"))
    assert outcome.status == "FINISHED"
    meta = json.loads((outcome.run_dir / "study.json").read_text())
    assert set(meta) == set(STUDY_KEYS) and meta["provenance"]["ray_cluster"]["nodes"] == 3
    assert header(outcome.run_dir / "trials.csv") == list(TRIAL_COLUMNS)
    trials = read_rows(outcome.run_dir / "trials.csv")
    assert sorted(t["num_scenes"] for t in trials) == ["1", "4"] and {t["status"] for t in trials} == {"FINISHED"}
    workers = {sim.gpu_node.node_id, sim.cpu_node.node_id}
    assert {t["node_id"] for t in trials} == workers  # one trial on each worker node
    assert all(t["node_ip"] and t["retries"] == "0" and t["gpu_ids"] == "" for t in trials)
    epochs = read_rows(outcome.run_dir / "epochs.csv")
    assert sorted(e["trial_id"] for e in epochs) == sorted(t["trial_id"] for t in trials)
    assert (tmp_path / "uri" / "scene_count" / "spread" / "study_args.json").is_file()  # Ray's folder, via the URI
    assert not list((tmp_path / "uri").glob(".salgl-probe-*"))  # the storage check cleans up after itself

    names = {"scene_count K=1 seed=0", "scene_count K=4 seed=0"}
    # The state API's own default is whichever cluster this machine started last: name ours.
    state = f"http://{sim.cluster.webui_url}"
    actors = list_actors(address=state, filters=[("class_name", "=", TRAINABLE_CLASS)], detail=True)
    assert {a.repr_name for a in actors} == names
    tasks = {t.name for t in list_tasks(address=state, filters=[("type", "=", "ACTOR_TASK")], detail=True)}
    assert {n + ".train" for n in names} <= tasks

    def progress() -> set[str]:
        lines = [ln for ln in _metric_lines("ray_salgl_trial_epoch") if 'run="spread"' in ln]
        return {n for n in names if any(f'trial="{n}"' in ln and ln.endswith(" 1.0") for ln in lines)}

    wait_until(lambda: progress() == names, 30, "both trials' epoch gauges on the nodes' metrics endpoints")
    assert any('run="spread"' in ln for ln in _metric_lines("ray_salgl_trial_map_ema"))


def test_quarter_gpus_pack_four_trials_on_one_gpu(sim, tmp_path):
    """--gpus-per-trial 0.25 with five trials and one (declared) GPU in the cluster: four trial actors hold a
    quarter of it at once, never five, and each trial saw that GPU's id."""
    # 512 images: trials of seconds more than the stagger of their actors' starts (one worker process at a
    # time on this node): four overlap by ~5 s (by ~3 s with the 32 smoke images, which a loaded machine could eat).
    outcome = scene_count.main(_args(tmp_path, "pack", "--values", "1", "2", "3", "4", "5", "--gpus-per-trial",
                                     "0.25", "--cpus-per-trial", "0.125", "--set", "synthetic_train_images=512"))
    assert outcome.status == "FINISHED"
    trials = read_rows(outcome.run_dir / "trials.csv")
    assert len(trials) == 5 and {t["status"] for t in trials} == {"FINISHED"}
    assert {(t["node_id"], t["gpu_ids"]) for t in trials} == {(sim.gpu_node.node_id, "0")}
    # Ray holds a trial's GPU share from its actor's start (a fresh actor per trial) to its last report:
    # Tune's time_total_s counts from that start.
    spans = []
    for df in ExperimentAnalysis(str(tmp_path / "ray" / "scene_count" / "pack")).trial_dataframes.values():
        end = df["reported_at"].max()
        spans.append((end - df["time_total_s"].max(), end))
    running = [sum(s <= t < e for s, e in spans) for t, _ in spans]  # the count peaks at some trial's start
    assert max(running) == 4, running


def test_a_multi_node_study_needs_storage_every_node_reaches(sim, tmp_path):
    parse = scene_count.get_args_parser().parse_args
    no_flag = parse(["--smoke", "--name", "x", "--results-dir", str(tmp_path / "results"), "--gpus-per-trial", "0"])
    with pytest.raises(StudyError, match=r"this Ray cluster has 3 nodes.*--storage-path") as e:
        scene_count.main(no_flag)
    assert ".ray_results" in str(e.value) and "s3://" in str(e.value)
    # /proc takes no new folders, not even from root: no node can write there.
    with pytest.raises(StudyError, match=r"--storage-path /proc/salgl-nowhere is not writable from node "):
        scene_count.main(_args(tmp_path, "y", "--gpus-per-trial", "0", "--storage-path", "/proc/salgl-nowhere"))
    assert not (tmp_path / "results" / "scene_count").exists()  # stopped before anything was written


def test_a_killed_driver_resumes_on_the_same_cluster(sim, tmp_path):
    """SIGKILL the driver (a separate process that joined the cluster) after its first trial finished, then
    --resume against the same cluster: the finished trial is not run again, the other one finishes."""
    storage, results = tmp_path / "ray", tmp_path / "results"
    run = results / "scene_count" / "k"
    common = [sys.executable, "studies/scene_count.py", "--address", sim.cluster.address, "--name", "k",
              "--storage-path", str(storage)]
    # Three sequential two-epoch trials on 768 images: the kill lands after Ray has recorded a finished trial
    # and, however long that record takes, before the last has finished (smaller versions raced).
    first = [*common, "--smoke", "--values", "4", "--seeds", "0", "1", "2", "--max-concurrent", "1",
             "--epochs", "2", "--set", "synthetic_train_images=768", "--gpus-per-trial", "0",
             "--results-dir", str(results)]
    # Ray saves its experiment state (what --resume starts from) every 10 s or more, or when a trial has made
    # its 2 kept checkpoints: just before that trial ends, so a trial's end is recorded only by a later save.
    # With ~7 s trials on an idle machine every trial could end in the export before a save recorded one
    # (this test failed 3 of 3 runs on its own that way). A save every second leaves the kill a whole trial.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        driver = subprocess.Popen(first, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        def one_finished() -> list[dict[str, str]]:
            assert driver.poll() is None, f"the study exited early:\n{log.read_text()[-3000:]}"
            done = [r for r in read_rows(run / "trials.csv") if r["status"] == "FINISHED"]
            recorded = {t.trial_id for t in ExperimentAnalysis(str(storage / "scene_count" / "k")).trials
                        if t.status == "TERMINATED"}
            return done if done and {r["trial_id"] for r in done} <= recorded else []

        finished = wait_until(one_finished, 150, "a finished trial recorded by Ray", poll=0.2)
        assert len(finished) < 3, "every trial finished before the kill"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        kill([driver.pid, *descendants(driver.pid)])

    resumed = subprocess.run([*common, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials = read_rows(run / "trials.csv")
    assert len(trials) == 3 and {t["status"] for t in trials} == {"FINISHED"}, \
        [(t["status"], t["error"]) for t in trials] + [resumed.stdout[-3000:]]
    for before in finished:
        again = next(t for t in trials if t["trial_id"] == before["trial_id"])
        assert (again["seconds"], again["mAP_ema"], again["node_id"]) == (before["seconds"], before["mAP_ema"],
                                                                          before["node_id"])
        assert f"start    {before['trial_id']}" not in resumed.stdout  # not run again
    rows = read_rows(run / "epochs.csv")  # each trial's two epochs, each exactly once
    assert sorted((e["trial_id"], e["epoch"]) for e in rows) == sorted((t["trial_id"], str(k)) for t in trials
                                                                       for k in (1, 2))


def test_a_lost_node_moves_its_trial_to_another_node(sim, tmp_path):
    """Remove the worker node that runs the only trial after the trial's epoch-1 checkpoint: the trial
    finishes on the other node from that checkpoint, once in the export, with its retry recorded.
    Runs last: the cluster has one worker node less afterwards."""
    args = _args(tmp_path, "lost", "--values", "4", "--epochs", "4", "--set", "synthetic_train_images=768",
                 "--gpus-per-trial", "0", "--cpus-per-trial", "1")
    out: dict = {}
    study = threading.Thread(target=lambda: out.update(outcome=scene_count.main(args)))
    study.start()
    run = tmp_path / "results" / "scene_count" / "lost"
    # Wait on the field read below: epochs.csv gets an epoch's line before trials.csv's snapshot has its node.
    rows = wait_until(lambda: (r := read_rows(run / "trials.csv")) and r[0]["node_id"] and r, 150,
                      "the first epoch's node in trials.csv")
    storage = str(tmp_path / "ray" / "scene_count" / "lost")
    wait_until(lambda: ExperimentAnalysis(storage).trials[0].checkpoint, 60, "Ray's record of the epoch-1 checkpoint",
               poll=0.2)
    first_node = rows[0]["node_id"]
    node = next(n for n in (sim.gpu_node, sim.cpu_node) if n.node_id == first_node)
    other = next(n for n in (sim.gpu_node, sim.cpu_node) if n is not node)
    # Ray may record a later epoch's checkpoint before the node goes: what matters is that the trial has
    # epochs left, so it must resume elsewhere from its latest checkpoint.
    assert read_rows(run / "epochs.csv")[-1]["epoch"] != "4", "the trial ended before the node was lost"
    sim.cluster.remove_node(node, allow_graceful=False)
    study.join(timeout=240)
    assert not study.is_alive() and out["outcome"].status == "FINISHED"
    trials = read_rows(run / "trials.csv")
    assert len(trials) == 1
    t = trials[0]
    assert (t["status"], t["epochs_done"], t["retries"], t["node_id"]) == ("FINISHED", "4", "1", other.node_id)
    assert [e["epoch"] for e in read_rows(run / "epochs.csv")] == ["1", "2", "3", "4"]
    (df,) = ExperimentAnalysis(storage).trial_dataframes.values()
    # The first k epochs on the lost node; the rest (and the final report) on the other, from the checkpoint:
    # no epoch is trained twice. Ray's own progress log may lack the row of an epoch reported just as the
    # node went (seen once in CI: [1, 3, 4, 4]); the export above has every epoch once, which is what counts.
    epochs, nodes = df["epoch"].tolist(), df["node_id"].tolist()
    assert epochs[-2:] == [4, 4] and epochs[:-1] == sorted(set(epochs[:-1])), epochs
    k = nodes.count(first_node)
    assert 1 <= k <= 3 and nodes == [first_node] * k + [other.node_id] * (len(nodes) - k), nodes
