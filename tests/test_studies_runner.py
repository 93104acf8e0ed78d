"""studies/tuning/runner.py end to end, real Ray and real Optuna: smoke studies against the schema, GPU allocation on a
cluster that declares two GPUs, and trials that fail (ERROR), diverge (DIVERGED) or crash (retried) while the
study goes on."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import optuna
import pytest
import ray
from helpers import header, read_rows, trial_workers, wait_until
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray.tune import ExperimentAnalysis
from ray_cli import short_temp_dir

from salgl_core.config import ExperimentConfig
from salgl_core.data import build_datasets
from salgl_core.metrics import mean_average_precision
from salgl_core.presets import SMOKE, synthetic_preset
from studies import mechanism, momentum, scene_count
from studies import tune as tune_study
from studies.analysis import analyze
from studies.analysis.summary import format_table, reference_label
from studies.exports.schema import (
    ANALYSIS_KEYS,
    COMPARISON_COLUMNS,
    EPOCH_COLUMNS,
    SCENE_KEYS,
    SEARCH_STUDY_KEYS,
    STUDY_KEYS,
    TRIAL_COLUMNS,
)
from studies.tuning import workspace
from studies.tuning.internals import ray_temp_dir

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_two_gpus():
    """One Ray for the whole module: 2 CPUs and 2 declared (fake) GPUs. Ray's socket paths must stay short."""
    tmp = short_temp_dir("rt")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, **ray_temp_dir(tmp))
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def _args(module, tmp: Path, *extra: str):
    return module.get_args_parser().parse_args(
        ["--smoke", "--results-dir", str(tmp / "results"), "--storage-path", str(tmp / "ray"), "--name", "t",
         "--cpus-per-trial", "1", "--reuse-actors", *extra])


@pytest.fixture(scope="module")
def smoke(ray_two_gpus, tmp_path_factory):
    """scene_count --smoke over K in {1, 4} x seeds {0, 1}: 4 trials, each asking for one of the two GPUs.
    What the driver printed is kept in <tmp>/stdout.txt."""
    tmp = tmp_path_factory.mktemp("smoke")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        outcome = scene_count.main(_args(scene_count, tmp, "--seeds", "0", "1"))
    (tmp / "stdout.txt").write_text(printed.getvalue())
    return outcome, tmp


def test_smoke_study_export_follows_the_schema(smoke):
    outcome, tmp = smoke
    run = outcome.run_dir
    assert outcome.status == "FINISHED" and run == (tmp / "results" / "scene_count" / "t").resolve()

    meta = json.loads((run / "study.json").read_text())
    assert set(meta) == set(STUDY_KEYS)
    assert (meta["study"], meta["axis"], meta["axis_values"], meta["seeds"]) == ("scene_count", "num_scenes",
                                                                                 [1, 4], [0, 1])
    assert (meta["sampler"], meta["scheduler"], meta["status"], meta["n_trials"], meta["n_finished"]) == (
        "GridSampler", "FIFO", "FINISHED", 4, 4)
    assert meta["paper_config"] == {"num_scenes": 4} and meta["finished"] and meta["metric"] == "mAP_ema"
    assert meta["provenance"]["ray_cluster"] == {"nodes": 1, "cpus": 2.0, "gpus": 2.0}
    assert 0 < meta["trial_seconds_total"] and 0 < meta["wall_seconds"]
    ExperimentConfig.from_flat(meta["base_config"])  # a complete, valid config
    assert "cache_dir" not in meta["base_config"]  # a machine-local folder: not exported

    assert header(run / "trials.csv") == list(TRIAL_COLUMNS)
    trials = read_rows(run / "trials.csv")
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4
    assert sorted((t["num_scenes"], t["seed"]) for t in trials) == [("1", "0"), ("1", "1"), ("4", "0"), ("4", "1")]
    assert all(t["status"] == "FINISHED" and t["epochs_done"] == "1" and t["error"] == "" for t in trials)
    assert {t["cache_dir"] for t in trials} == {""}
    assert {t["is_paper_config"] for t in trials if t["num_scenes"] == "4"} == {"True"}
    assert {t["is_paper_config"] for t in trials if t["num_scenes"] == "1"} == {"False"}
    for t in trials:
        assert 0 <= float(t["mAP_ema"]) <= 100 and float(t["seconds"]) > 0 and t["device"] == "cpu"
        assert 0 <= float(t["scene_nmi"]) <= 1  # synthetic data: learned vs true scenes

    assert header(run / "epochs.csv") == list(EPOCH_COLUMNS)
    epochs = read_rows(run / "epochs.csv")
    assert sorted(e["trial_id"] for e in epochs) == sorted(t["trial_id"] for t in trials)

    for t in trials:
        scene = json.loads((run / "scenes" / f"{t['trial_id']}.json").read_text())
        assert set(scene) == set(SCENE_KEYS)
        k, c = int(t["num_scenes"]), len(meta["class_names"])
        assert len(scene["cooccurrence_prob"]) == k and len(scene["cooccurrence_prob"][0]) == c
        assert len(scene["scene_usage"]) == k and abs(sum(scene["scene_usage"]) - 1) < 1e-6
        assert 0 <= scene["true_scene_nmi"] <= 1 and len(scene["contingency"]) == k


def test_optuna_study_is_persisted_next_to_the_export(smoke):
    outcome, _ = smoke
    storage = JournalStorage(JournalFileBackend(str(outcome.run_dir / "optuna_journal.log")))
    study = optuna.load_study(study_name="scene_count/t", storage=storage)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert sorted((t.params["num_scenes"], t.params["seed"]) for t in study.trials) == [(1, 0), (1, 1), (4, 0),
                                                                                        (4, 1)]
    mAP = {(r["num_scenes"], r["seed"]): float(r["mAP_ema"]) for r in read_rows(outcome.run_dir / "trials.csv")}
    for t in study.trials:
        assert t.value == pytest.approx(mAP[(str(t.params["num_scenes"]), str(t.params["seed"]))])


def _map_range(scores16: np.ndarray, targets: np.ndarray, ignore: np.ndarray) -> tuple[float, float]:
    """The lowest and highest mAP of the rankings float16 scores leave open. Rounding is monotone, so the float32
    scores' ranking breaks the float16 ties one way; AP is lowest with every tie's negatives ranked first, highest
    with its positives first. (A barely trained smoke model scores its 16 images almost alike: ties abound.)"""
    out = []
    for sign in (-1, 1):
        ranks = np.empty(scores16.shape)
        for c in range(scores16.shape[1]):
            ranks[np.lexsort((sign * targets[:, c], scores16[:, c])), c] = np.arange(len(scores16))
        out.append(100 * mean_average_precision(ranks, targets, ignore))
    return out[0], out[1]


def test_smoke_study_keeps_predictions_and_ends_with_its_analysis(smoke):
    """Every FINISHED trial's reported model (best EMA epoch) left its validation scores, whose mAP is the
    reported one (within what float16 ties allow); the study ended with analysis.json, comparisons.csv and the
    verdict table on the console, and `python -m studies.analyze` recomputes the same analysis from the export."""
    outcome, tmp = smoke
    run = outcome.run_dir
    trials = read_rows(run / "trials.csv")
    with np.load(run / "predictions" / "targets.npz", allow_pickle=False) as z:
        targets, ignore, ids = z["targets"], z["ignore"], z["image_ids"]
    assert targets.dtype == np.int8 and ignore.dtype == bool and len(ids) == len(targets) == 16  # SMOKE's images
    assert sorted(p.stem for p in (run / "predictions").glob("*.npz")) == sorted(
        [t["trial_id"] for t in trials if t["status"] == "FINISHED"] + ["targets"])
    for t in trials:
        with np.load(run / "predictions" / f"{t['trial_id']}.npz", allow_pickle=False) as z:
            scores, trial_ids = z["scores"], z["image_ids"]
        assert scores.dtype == np.float16 and scores.shape == targets.shape
        np.testing.assert_array_equal(trial_ids, ids)
        low, high = _map_range(scores, targets, ignore)
        assert low - 1e-6 <= float(t["best_mAP_ema"]) <= high + 1e-6, (t["trial_id"], low, high)

    analysis = json.loads((run / "analysis.json").read_text())
    assert set(analysis) == set(ANALYSIS_KEYS) and analysis["kind"] == "ablation" and analysis["reference"] == 4
    assert analysis["bootstrap"]["trials_with_predictions"] == 4
    assert [(a["value"], a["n"]) for a in analysis["arms"]] == [(1, 2), (4, 2)]
    assert header(run / "comparisons.csv") == list(COMPARISON_COLUMNS)
    (row,) = read_rows(run / "comparisons.csv")
    assert (row["value"], row["n"], row["n_reference"], row["paired"], row["interval"]) == (
        "1", "2", "2", "True", "seeds+images")
    printed = (tmp / "stdout.txt").read_text()
    arms, table = printed.index("mean over seeds:"), printed.index(
        format_table(analysis, reference_label("synthetic")).splitlines()[0])
    assert arms < table and f"  1: {row['verdict']}" in printed[table:]

    assert analyze.main([str(run)]) == 0
    again = json.loads((run / "analysis.json").read_text())
    assert {**again, "bootstrap": None} == {**analysis, "bootstrap": None}  # its clock aside


def test_gpu_allocation_two_gpus_four_trials(smoke):
    """Never more than two trials at once, and trials running together saw different GPU ids."""
    outcome, tmp = smoke
    gpu = {t["trial_id"]: t["gpu_ids"] for t in read_rows(outcome.run_dir / "trials.csv")}
    assert set(gpu.values()) <= {"0", "1"} and len(gpu) == 4
    # Each trial's own clock: from its start to its last report (inside the span Ray held its resources).
    spans = {}
    for df in ExperimentAnalysis(str(tmp / "ray" / "scene_count" / "t")).trial_dataframes.values():
        spans[df["trial_id"].iloc[0]] = (df["trial_started"].min(), df["reported_at"].max())
    assert set(spans) == set(gpu)
    most = 0
    for t, _ in spans.values():  # the number of running trials peaks at some trial's start
        running = [tid for tid, (s, e) in spans.items() if s <= t < e]
        assert len(running) <= 2, f"{running} ran at once"
        assert len({gpu[r] for r in running}) == len(running), f"{running} shared a GPU"
        most = max(most, len(running))
    # Both GPUs were used: at once, or (when the scheduler happened to run these seconds-long trials one after
    # another, as a loaded CI machine once did) each by some trial. Running trials never share one (above).
    assert most == 2 or set(gpu.values()) == {"0", "1"}, (most, gpu)


def test_a_trial_that_raises_is_recorded_as_error(ray_two_gpus, tmp_path):
    """A corrupt training image makes every trial raise inside its worker: each is recorded once with the
    error naming the file, and the study still finishes."""
    cache = tmp_path / "cache"
    cfg = ExperimentConfig.from_flat({**synthetic_preset(), **SMOKE, "cache_dir": str(cache)})
    bad = Path(build_datasets(cfg.data).train.paths[3])
    bad.write_bytes(bad.read_bytes()[:200])
    outcome = momentum.main(_args(momentum, tmp_path, "--cache-dir", str(cache), "--max-failures", "0"))
    assert outcome.status == "FINISHED"
    trials = read_rows(outcome.run_dir / "trials.csv")
    assert len(trials) == 2 and {t["status"] for t in trials} == {"ERROR"}
    assert all("CorruptImageError" in t["error"] and bad.name in t["error"] for t in trials)
    assert json.loads((outcome.run_dir / "study.json").read_text())["n_finished"] == 2


def test_a_nan_loss_is_recorded_as_diverged(ray_two_gpus, tmp_path):
    outcome = scene_count.main(_args(scene_count, tmp_path, "--lr", "1e6"))
    assert outcome.status == "FINISHED"
    trials = read_rows(outcome.run_dir / "trials.csv")
    assert len(trials) == 2 and {t["status"] for t in trials} == {"DIVERGED"}
    assert all("diverged" in t["error"] for t in trials)
    assert not list(outcome.run_dir.glob("scenes/*.json"))  # nothing to report for a diverged model


def test_a_crashed_trial_is_retried_from_its_last_checkpoint(ray_two_gpus, tmp_path):
    """SIGKILL the trial's worker once Ray has recorded a checkpoint: Ray retries it (FailureConfig) from that
    checkpoint, so no epoch is trained twice, and the export holds each epoch once."""
    # 4 epochs: Ray records a checkpoint in the state save it forces after a trial's second (num_to_keep)
    # checkpoint, or at its 10 s period; epochs of ~2 s must leave the kill at least one epoch (3 raced).
    args = _args(scene_count, tmp_path, "--values", "4", "--epochs", "4", "--set", "synthetic_train_images=768")
    out: dict = {}
    study = threading.Thread(target=lambda: out.update(outcome=scene_count.main(args)))
    study.start()
    epochs_csv = tmp_path / "results" / "scene_count" / "t" / "epochs.csv"
    wait_until(lambda: read_rows(epochs_csv), 120, "the first epoch in epochs.csv")
    # The driver exports an epoch before it registers that report's checkpoint as the trial's latest; the
    # experiment state it saves after that says the retry has it to restore.
    storage = str(tmp_path / "ray" / "scene_count" / "t")
    wait_until(lambda: ExperimentAnalysis(storage).trials[0].checkpoint, 60, "Ray's record of the epoch-1 checkpoint",
               poll=0.2)
    workers = trial_workers()
    # Ray may record a later epoch's checkpoint first: what matters is that epochs are left to resume.
    assert len(workers) == 1 and read_rows(epochs_csv)[-1]["epoch"] != "4", "the trial ended before the kill"
    os.kill(workers[0], signal.SIGKILL)
    study.join(timeout=180)
    assert out["outcome"].status == "FINISHED"
    trials = read_rows(out["outcome"].run_dir / "trials.csv")
    assert len(trials) == 1 and trials[0]["status"] == "FINISHED" and trials[0]["epochs_done"] == "4"
    assert [e["epoch"] for e in read_rows(epochs_csv)] == ["1", "2", "3", "4"]
    (df,) = ExperimentAnalysis(str(tmp_path / "ray" / "scene_count" / "t")).trial_dataframes.values()
    # Reports in order: the epochs before the crash, the rest from the latest checkpoint, the final report. Epoch 1
    # is never trained twice. Ray's own result log may lack the report the kill interrupted (seen once: [1, 3, 3],
    # the kill landing as epoch 2's report was being registered), while the export above holds every epoch once.
    epochs, final = df["epoch"].tolist(), df["final"].fillna(False).tolist()
    assert epochs == sorted(epochs) and epochs.count(1) == 1 and epochs[-2:] == [4, 4], epochs
    assert final == [False] * (len(final) - 1) + [True]


def test_checkpoint_every_leaves_the_expected_checkpoints(ray_two_gpus, tmp_path):
    """--checkpoint-every 2 over 3 epochs: epoch 2's report carries a checkpoint and so does the final one (epoch
    3's, with the predictions); epochs 1 and 3 report without. Ray keeps both (num_to_keep=2)."""
    import torch

    args = _args(scene_count, tmp_path, "--values", "4", "--seeds", "0", "--epochs", "3", "--checkpoint-every", "2",
                 "--keep-checkpoints")
    assert scene_count.main(args).status == "FINISHED"
    exp = tmp_path / "ray" / "scene_count" / "t"
    (df,) = ExperimentAnalysis(str(exp)).trial_dataframes.values()
    assert df["epoch"].tolist() == [1, 2, 3, 3] and df["final"].fillna(False).tolist() == [False] * 3 + [True]
    assert df["checkpoint_dir_name"].fillna("").tolist() == ["", "checkpoint_000000", "", "checkpoint_000001"]
    dirs = workspace.checkpoint_dirs(exp)
    assert [d.name for d in dirs] == ["checkpoint_000000", "checkpoint_000001"]
    assert [torch.load(d / "checkpoint.pt", weights_only=True)["epoch"] for d in dirs] == [2, 3]


def test_joint_search_tpe_asha(ray_two_gpus, tmp_path):
    outcome = tune_study.main(_args(tune_study, tmp_path, "--num-samples", "3", "--epochs", "3", "--grace-period",
                                    "1", "--reduction-factor", "2"))
    assert outcome.status == "FINISHED"
    meta = json.loads((outcome.run_dir / "study.json").read_text())
    assert (meta["axis"], meta["sampler"], meta["scheduler"], meta["n_trials"]) == (None, "TPESampler", "ASHA", 3)
    assert set(meta) == set(STUDY_KEYS) | set(SEARCH_STUDY_KEYS)
    assert set(meta["search_space"]) == {"num_scenes", "gnn_steps", "comat_momentum", "lr", "weight_decay",
                                         "sample_entropy_weight", "batch_entropy_weight", "soft_assignment", "seed"}
    assert meta["asha"] == {"time_attr": "training_iteration", "grace_period": 1, "max_t": 2, "reduction_factor": 2.0}
    trials = read_rows(outcome.run_dir / "trials.csv")
    assert len(trials) == 3 and {t["status"] for t in trials} <= {"FINISHED", "STOPPED"}
    assert any(t["status"] == "FINISHED" for t in trials)
    for t in trials:  # ASHA may stop a trial before its last epoch; the others run to the end, scenes included
        assert (t["epochs_done"] == "3") == (t["status"] == "FINISHED")
        assert (outcome.run_dir / "scenes" / f"{t['trial_id']}.json").is_file() == (t["status"] == "FINISHED")
    paper = [t for t in trials if t["is_paper_config"] == "True"]
    assert len(paper) == 1
    p = paper[0]
    assert (p["num_scenes"], p["gnn_steps"], p["comat_momentum"], p["soft_assignment"]) == ("4", "3", "1.0", "False")


def test_joint_search_with_repeats_and_parameter_importances(ray_two_gpus, tmp_path):
    """--repeats 2: each of three sampled configurations trains with seeds 0 and 1, Optuna is told the mean of
    the two, and analysis.json holds Optuna's parameter importances of that study."""
    outcome = tune_study.main(_args(tune_study, tmp_path, "--num-samples", "3", "--repeats", "2"))
    assert outcome.status == "FINISHED"
    run = outcome.run_dir
    meta = json.loads((run / "study.json").read_text())
    assert (meta["n_trials"], meta["seeds"], meta["scheduler"]) == (6, [0, 1], "FIFO")
    space = list(meta["search_space"])
    assert "seed" not in space
    trials = read_rows(run / "trials.csv")
    assert len(trials) == 6 and {t["status"] for t in trials} == {"FINISHED"}
    groups: dict[tuple, list[dict]] = {}
    for t in trials:
        groups.setdefault(tuple(t[k] for k in space), []).append(t)
    assert sorted(sorted(t["seed"] for t in g) for g in groups.values()) == [["0", "1"]] * 3
    assert sorted(len(list(run.glob(f"predictions/{t['trial_id']}.npz"))) for t in trials) == [1] * 6
    storage = JournalStorage(JournalFileBackend(str(run / "optuna_journal.log")))
    study = optuna.load_study(study_name="tune/t", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert all(set(t.params) == set(space) for t in study.trials)
    means = [sum(float(t["mAP_ema"]) for t in g) / 2 for g in groups.values()]
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(means))

    analysis = json.loads((run / "analysis.json").read_text())
    assert analysis["kind"] == "search"
    for kind in ("fanova", "ped_anova"):
        imp = analysis["search"]["importances"].get(kind)
        assert imp is not None, analysis["notes"]
        assert set(imp) <= set(space) and all(v >= 0 for v in imp.values())



def test_mechanism_study_of_named_arms(ray_two_gpus, tmp_path, capsys):
    """studies/mechanism.py: each trial runs its arm's config, the export names the arm and holds what it set,
    and the analysis compares every arm with the global graph. In the synthetic studies' default regime:
    the trials train on the frozen backbone's features that the driver cached before they started."""
    # Two arms (the reference is always added): one round of trials on the module's two CPUs. A random-init
    # frozen backbone, so that nothing is pretrained here.
    cache = tmp_path / "cache"
    outcome = mechanism.main(_args(mechanism, tmp_path, "--values", "oracle", "--gpus-per-trial", "0",
                                   "--cache-dir", str(cache), "--set", "freeze_backbone=true",
                                   "--set", "feature_cache=true"))
    assert outcome.status == "FINISHED"
    # One cache per split, built by the driver and read by both trials (a trial would build its own otherwise).
    assert sorted(p.name.split("-")[2] for p in cache.glob("features-*")) == ["train", "val"]
    out = capsys.readouterr().out
    meta = json.loads((outcome.run_dir / "study.json").read_text())
    assert meta["axis"] == "arm" and meta["axis_values"] == ["global", "oracle"]
    k = meta["base_config"]["synthetic_scenes"]
    assert meta["arms"]["oracle"] == {"num_scenes": k, "scene_source": "oracle"}
    assert header(outcome.run_dir / "trials.csv") == list(TRIAL_COLUMNS)
    trials = {t["arm"]: t for t in read_rows(outcome.run_dir / "trials.csv")}
    assert set(trials) == {"global", "oracle"} and {t["status"] for t in trials.values()} == {"FINISHED"}
    assert (trials["global"]["num_scenes"], trials["global"]["scene_source"]) == ("1", "learned")
    assert (trials["oracle"]["num_scenes"], trials["oracle"]["scene_source"]) == (str(k), "oracle")
    assert trials["global"]["is_paper_config"] == "True" and trials["oracle"]["is_paper_config"] == "False"
    assert float(trials["oracle"]["scene_nmi"]) == pytest.approx(1.0)  # it was given the true scenes
    a = json.loads((outcome.run_dir / "analysis.json").read_text())
    assert a["reference"] == "global" and [c["value"] for c in a["comparisons"]] == ["oracle"]
    assert "arm = oracle" in out and "scene NMI 1.00" in out and "(the reference arm)" in out
