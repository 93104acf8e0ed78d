"""Writes demo study exports (the results schema) for `make dashboard-demo` and the dashboard's tests.

Every number is a deterministic function of the trial's settings, so tests can recompute what a chart
must show. `python -m dashboards.demo OUT_DIR` writes the full set into OUT_DIR: healthy studies (a
synthetic scene_count, the newest, so the dashboard opens on it; a COCO graph_depth run on a two-node
cluster; a tune search), each with predictions/ and analysis.json as a finished study leaves them
(demo_stats.py), a RUNNING momentum study, a run whose epochs.csv holds a non-numeric cell, a run
whose trials.csv lost rows and a run whose study.json is not valid JSON. Rerun, it replaces the folder it
wrote before (and refuses any other non-empty folder).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from dashboards import demo_stats
from dashboards.shaping.scenes import contingency_nmi
from salgl_core.config import ExperimentConfig
from salgl_core.presets import synthetic_preset
from studies.exports.files import read_csv, write_csv, write_json
from studies.exports.schema import (
    EPOCH_COLUMNS,
    EPOCHS_CSV,
    SCENES_DIR,
    SCHEMA_VERSION,
    STUDY_JSON,
    TRIAL_KEY_COLUMNS,
    TRIAL_RESULT_COLUMNS,
    TRIALS_CSV,
)

COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]
SYN_CLASSES = [f"label_{i:02d}" for i in range(20)]
# Validation images of the demo's predictions: small, so the demo writes in seconds (COCO val2014 has 40,504).
SYN_VAL_IMAGES, COCO_VAL_IMAGES = 600, 800
PROTOCOL = "VOC-2012 envelope AP per class, unweighted mean over all classes (official SALGL VOCmAP), percent"
PROVENANCE = {
    "git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": False, "python": "3.11.9",
    "packages": {"torch": "2.14.1", "ray": "2.60.0", "optuna": "4.5.0", "numpy": "2.3.0"},
    "platform": "Linux-6.1-x86_64", "cpu": "x86_64", "cpu_count": 2, "gpus": [],
    "ray_cluster": {"nodes": 1, "cpus": 2, "gpus": 0},
}


def config_fields(overrides: dict[str, Any]) -> dict[str, Any]:
    """The flat config of a trial; `seed` and `device` are README columns of their own."""
    flat = ExperimentConfig.from_flat(overrides).to_flat()
    return {k: v for k, v in flat.items() if k not in ("seed", "device")}


def epoch_rows(trial_id: str, final: float, epochs: int, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for e in range(1, epochs + 1):
        m = round(final - (final - 20.0) * math.exp(-0.9 * (e - 1)) * (epochs - e) / max(epochs - 1, 1), 3)
        rows.append({"trial_id": trial_id, "epoch": e, "lr": round(1e-3 * math.sin(math.pi * e / (epochs + 1)), 6),
                     "loss_total": round(120.0 / e + 3.0, 3), "loss_cls": round(118.0 / e + 1.0, 3),
                     "loss_sample_entropy": round(1.2 / e + 0.3, 4), "loss_batch_entropy": round(0.4 / e, 4),
                     "mAP": m, "mAP_ema": round(m - 0.4 + 0.1 * e, 3), "mAP_present": m,
                     "CF1": round(m * 0.9, 3), "OF1": round(m * 0.95, 3), "CF1_top3": round(m * 0.85, 3),
                     "OF1_top3": round(m * 0.88, 3), "seconds": seconds / epochs, "images_per_second": 310.5})
    return rows


def trial_row(trial_id: str, seed: int, config: dict[str, Any], final: float, epochs: int, status: str = "FINISHED",
              is_paper: bool = False, device: str = "cpu", seconds: float = 60.0,
              scene_nmi: float | None = None, error: str | None = None) -> dict[str, Any]:
    ema = round(final + 0.2, 3)
    return {"trial_id": trial_id, "status": status, "seed": seed, "is_paper_config": is_paper, **config,
            "epochs_done": epochs, "best_epoch": epochs, "best_mAP": final, "best_mAP_ema": ema, "mAP": final,
            "mAP_ema": ema, "mAP_present": final, "CP": round(final + 3, 2), "CR": round(final - 8, 2),
            "CF1": round(final * 0.9, 3), "OP": round(final + 4, 2), "OR": round(final - 6, 2),
            "OF1": round(final * 0.95, 3), "CF1_top3": round(final * 0.85, 3), "OF1_top3": round(final * 0.88, 3),
            "scene_nmi": scene_nmi, "seconds": seconds, "device": device, "gpu_ids": "" if device == "cpu" else "0",
            "error": error}


def scene_json(trial_id: str, num_scenes: int, class_names: list[str], seed: int,
               true_scenes: int | None) -> dict[str, Any]:
    """Co-occurrence statistics in which each scene favours its own block of labels."""
    rng = np.random.default_rng(seed * 1000 + num_scenes)
    c = len(class_names)
    diag = rng.uniform(5, 20, size=(num_scenes, c))
    for k in range(num_scenes):
        block = slice(k * c // num_scenes, (k + 1) * c // num_scenes)
        diag[k, block] *= 8
    prob = rng.uniform(0, 0.3, size=(num_scenes, c, c))
    for k in range(num_scenes):
        block = slice(k * c // num_scenes, (k + 1) * c // num_scenes)
        prob[k][block, block] += 0.5
        np.fill_diagonal(prob[k], 1.0)
    prob = np.clip(prob, 0, 1)
    usage = diag.sum(1) / diag.sum()
    out: dict[str, Any] = {"trial_id": trial_id, "num_scenes": num_scenes, "class_names": class_names,
                           "cooccurrence_prob": prob.round(4).tolist(),
                           "cooccurrence_counts_diag": diag.round(2).tolist(),
                           "scene_usage": usage.round(4).tolist(), "true_scene_nmi": None, "contingency": None}
    if true_scenes:
        cont = rng.integers(0, 15, size=(num_scenes, true_scenes))
        for k in range(num_scenes):
            cont[k, k % true_scenes] += 200
        out["true_scene_nmi"] = round(contingency_nmi(cont), 4)
        out["contingency"] = cont.tolist()
    return out


def start_time(run: str) -> str:
    """The demo names a run by its start time, YYYY-MM-DD_HHMM: that time in ISO 8601 (UTC)."""
    return datetime.strptime(run, "%Y-%m-%d_%H%M").strftime("%Y-%m-%dT%H:%M:00Z")


def study_meta(study: str, run: str, axis: str | None, values: list | None, dataset: str, base: dict[str, Any],
               seeds: list[int], class_names: list[str], status: str, started: str, n_trials: int,
               n_finished: int, trial_seconds: float, device: str, paper_config: dict[str, Any],
               **extra: Any) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION, "study": study, "run": run, "axis": axis, "axis_values": values,
        "sampler": "GridSampler" if axis else "TPESampler", "scheduler": "FIFO" if axis else "ASHA",
        "metric": "mAP_ema", "mode": "max", "metric_protocol": PROTOCOL, "dataset": dataset,
        "backbone": base["backbone"], "image_size": base["image_size"], "base_config": base,
        "paper_config": paper_config, "seeds": seeds, "class_names": class_names, "status": status,
        "started": started, "finished": None if status == "RUNNING" else started.replace("T09", "T11"),
        "n_trials": n_trials, "n_finished": n_finished, "trial_seconds_total": trial_seconds,
        "wall_seconds": trial_seconds / 2, "max_concurrent": 2, "provenance": PROVENANCE,
        "optuna_storage": "optuna_journal.log", "device": device, **extra,
    }


def write_run(root: Path, study: str, run: str, meta: dict[str, Any], trials: list[dict[str, Any]],
              epochs: list[dict[str, Any]], scenes: dict[str, dict[str, Any]]) -> Path:
    d = root / study / run
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / STUDY_JSON, meta)
    config = tuple(k for k in trials[0] if k not in (*TRIAL_KEY_COLUMNS, *TRIAL_RESULT_COLUMNS))
    write_csv(d / TRIALS_CSV, (*TRIAL_KEY_COLUMNS, *config, *TRIAL_RESULT_COLUMNS), trials)
    write_csv(d / EPOCHS_CSV, EPOCH_COLUMNS, epochs)
    for tid, s in scenes.items():
        write_json(d / SCENES_DIR / f"{tid}.json", s)
    return d


def synthetic_final(num_scenes: int, seed: int) -> float:
    """The fixture's mAP of a synthetic scene_count trial (tests recompute expected chart values with it).

    Scene awareness helps and saturates (K = 1 -> 2 gains most); seed 1 is 0.5 better than seed 0, and each
    trial has its own deviation in [-0.25, 0.25], so the per-seed differences between arms vary as real ones do
    (and sc_4_1 stays the best trial)."""
    jitter = float(np.random.default_rng([num_scenes, seed]).uniform(-0.25, 0.25))
    return round(53.0 + 3.0 * (1.0 - 4.0 ** -math.log2(num_scenes)) + 0.5 * seed + jitter, 3)


def write_synthetic_scene_count(root: Path, run: str = "2025-06-03_0900", values: tuple[int, ...] = (1, 2, 4),
                                seeds: tuple[int, ...] = (0, 1)) -> Path:
    base = config_fields(synthetic_preset())
    trials, epochs, scenes = [], [], {}
    for k in values:
        for s in seeds:
            tid = f"sc_{k}_{s}"
            final = synthetic_final(k, s)
            scenes[tid] = scene_json(tid, k, SYN_CLASSES, s, true_scenes=4)
            trials.append(trial_row(tid, s, {**base, "num_scenes": k}, final, 6, is_paper=k == 4, seconds=80.0,
                                    scene_nmi=scenes[tid]["true_scene_nmi"]))
            epochs += epoch_rows(tid, final, 6, 80.0)
    meta = study_meta("scene_count", run, "num_scenes", list(values), "synthetic", base, list(seeds), SYN_CLASSES,
                      "FINISHED", start_time(run), len(trials), len(trials), 80.0 * len(trials), "cpu",
                      {"num_scenes": 4})
    d = write_run(root, "scene_count", run, meta, trials, epochs, scenes)
    demo_stats.write_predictions(d, trials, len(SYN_CLASSES), SYN_VAL_IMAGES)
    demo_stats.write_analysis_files(d)
    return d


# Where the COCO trials ran: (node_id, node_ip, retries, gpu_ids), as a cluster run's trials.csv has them.
COCO_PLACEMENT = {0: ("4f1c0d9e2b7a4c55a1e3d6f8b9c0a1b2c3d4e5f6a7b8c9d0e1f2a3b4", "10.0.0.11", 0, "0"),
                  3: ("9a8b7c6d5e4f30211a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", "10.0.0.12", 1, "1")}


def write_coco_graph_depth(root: Path, run: str = "2025-05-20_0900") -> Path:
    """A COCO ResNet-101 448 px graph_depth study on a two-node GPU cluster: 84.9 (T=0) and 85.5 (T=3, the
    paper's; Ray retried it once on its node). trials.csv has the cluster columns node_id, node_ip, retries."""
    base = config_fields({"dataset": "coco", "device": "cuda", "synthetic_seed": 0})
    gpu = "NVIDIA H100 80GB HBM3"
    trials, epochs, scenes = [], [], {}
    for t, final in ((0, 84.9), (3, 85.5)):
        tid = f"gd_{t}_0"
        node_id, node_ip, retries, gpu_ids = COCO_PLACEMENT[t]
        trials.append({**trial_row(tid, 0, {**base, "gnn_steps": t}, final, 4, is_paper=t == 3, device=gpu,
                                   seconds=4 * 300.0),
                       "gpu_ids": gpu_ids, "node_id": node_id, "node_ip": node_ip, "retries": retries})
        epochs += epoch_rows(tid, final, 4, 4 * 300.0)
        scenes[tid] = scene_json(tid, 4, COCO_CLASSES, 0, true_scenes=None)
    meta = study_meta("graph_depth", run, "gnn_steps", [0, 3], "coco", base, [0], COCO_CLASSES, "FINISHED",
                      start_time(run), 2, 2, 2400.0, gpu, {"gnn_steps": 3})
    meta["provenance"] = {**PROVENANCE, "gpus": [gpu, gpu], "ray_cluster": {"nodes": 2, "cpus": 32, "gpus": 2}}
    d = write_run(root, "graph_depth", run, meta, trials, epochs, scenes)
    demo_stats.write_predictions(d, trials, len(COCO_CLASSES), COCO_VAL_IMAGES)
    demo_stats.write_analysis_files(d)
    return d


def write_running_momentum(root: Path, run: str = "2025-05-30_0900") -> Path:
    """A momentum study still RUNNING: one trial running, one whose first epoch is in epochs.csv but which has
    no trials.csv row yet (the dashboard reads the two files at slightly different times)."""
    base = config_fields(synthetic_preset())
    trials = [trial_row("mo_1.0_0", 0, {**base, "comat_momentum": 1.0}, 56.0, 6, is_paper=True),
              trial_row("mo_0.9_0", 0, {**base, "comat_momentum": 0.9}, 55.0, 6),
              trial_row("mo_0.99_0", 0, {**base, "comat_momentum": 0.99}, 55.7, 3, status="RUNNING")]
    epochs = epoch_rows("mo_1.0_0", 56.0, 6, 60.0) + epoch_rows("mo_0.9_0", 55.0, 6, 60.0) + \
        epoch_rows("mo_0.99_0", 55.7, 6, 60.0)[:3] + epoch_rows("mo_0.999_0", 54.0, 6, 60.0)[:1]
    meta = study_meta("momentum", run, "comat_momentum", [0.9, 0.99, 0.999, 1.0], "synthetic", base, [0],
                      SYN_CLASSES, "RUNNING", start_time(run), 4, 2, 120.0, "cpu", {"comat_momentum": 1.0})
    return write_run(root, "momentum", run, meta, trials, epochs, {})


def write_damaged_epochs(root: Path, run: str = "2025-06-01_0900") -> Path:
    """A finished synthetic graph_depth study whose epochs.csv holds a non-numeric mAP cell (line 4)."""
    base = config_fields(synthetic_preset())
    trials, epochs = [], []
    for t in (0, 1, 3):
        tid = f"gds_{t}_0"
        trials.append(trial_row(tid, 0, {**base, "gnn_steps": t}, 52.0 + t, 6, is_paper=t == 3))
        epochs += epoch_rows(tid, 52.0 + t, 6, 60.0)
    epochs[2]["mAP"] = "oops"
    meta = study_meta("graph_depth", run, "gnn_steps", [0, 1, 3], "synthetic", base, [0], SYN_CLASSES,
                      "FINISHED", start_time(run), 3, 3, 180.0, "cpu", {"gnn_steps": 3})
    return write_run(root, "graph_depth", run, meta, trials, epochs, {})


def write_damaged_trials(root: Path, run: str = "2025-05-28_0900") -> Path:
    """A finished scene_count study of 8 trials (K in 1, 2, 4, 8; seeds 0, 1) whose trials.csv was cut
    short at a line boundary (4 rows left; not something the export writes: a copy that ran out of space)
    and holds a non-numeric best_mAP_ema cell (line 3). study.json still says 8 of 8 ended."""
    base = config_fields(synthetic_preset())
    trials, epochs = [], []
    for k in (1, 2, 4, 8):
        for s in (0, 1):
            tid = f"sd_{k}_{s}"
            final = synthetic_final(k, s)
            trials.append(trial_row(tid, s, {**base, "num_scenes": k}, final, 6, is_paper=k == 4))
            epochs += epoch_rows(tid, final, 6, 60.0)
    meta = study_meta("scene_count", run, "num_scenes", [1, 2, 4, 8], "synthetic", base, [0, 1], SYN_CLASSES,
                      "FINISHED", start_time(run), 8, 8, 480.0, "cpu", {"num_scenes": 4})
    trials[1]["best_mAP_ema"] = "n/a"
    d = write_run(root, "scene_count", run, meta, trials, epochs, {})
    rows = read_csv(d / TRIALS_CSV)
    write_csv(d / TRIALS_CSV, tuple(rows[0]), rows[:4])
    return d


def write_invalid_study_json(root: Path, run: str = "2025-06-02_0900") -> Path:
    """A run folder whose study.json is not valid JSON (not something the export writes: a hand edit)."""
    d = root / "scene_count" / run
    d.mkdir(parents=True, exist_ok=True)
    (d / STUDY_JSON).write_text('{"schema_version": 1, "study": "scene_count", "status": ')
    write_csv(d / TRIALS_CSV, ("trial_id", "status"), [{"trial_id": "x", "status": "FINISHED"}])
    return d


def write_tune(root: Path, run: str = "2025-05-25_0900") -> Path:
    """A joint search (axis null) with ASHA-stopped trials."""
    base = config_fields(synthetic_preset())
    rng = np.random.default_rng(3)
    trials, epochs = [], []
    for i in range(8):
        lr = float(10 ** rng.uniform(-4, -2))
        k = int(rng.choice([2, 4, 8]))
        final = round(55 - 4 * abs(math.log10(lr) + 3) + 0.3 * k, 3)
        status = "FINISHED" if i % 3 else "STOPPED"
        n_ep = 6 if status == "FINISHED" else 2
        tid = f"tu_{i:02d}"
        trials.append(trial_row(tid, 0, {**base, "lr": lr, "num_scenes": k}, final, n_ep, status=status,
                                is_paper=i == 0))
        epochs += epoch_rows(tid, final, n_ep, 40.0)
    space = {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}, "num_scenes": {"type": "choice",
                                                                                      "values": [2, 4, 8]}}
    meta = study_meta("tune", run, None, None, "synthetic", base, [0], SYN_CLASSES, "FINISHED",
                      start_time(run), 8, 8, 8 * 40.0, "cpu", {"lr": 2e-3, "num_scenes": 4},
                      search_space=space)
    d = write_run(root, "tune", run, meta, trials, epochs, {})
    demo_stats.write_predictions(d, trials, len(SYN_CLASSES), SYN_VAL_IMAGES)
    demo_stats.write_optuna_journal(d, f"tune/{run}", trials, space, meta["metric"])
    demo_stats.write_analysis_files(d)
    return d


def write_good(root: Path) -> dict[str, Path]:
    """The healthy studies only (no damaged files)."""
    return {"scene_count": write_synthetic_scene_count(root), "coco": write_coco_graph_depth(root),
            "tune": write_tune(root)}


def write_all(root: Path) -> dict[str, Path]:
    """Every case: healthy studies, a RUNNING one, an epochs.csv with a non-numeric cell, a trials.csv cut short,
    an invalid study.json. The healthy synthetic scene_count is the newest: the dashboard opens on it."""
    return {**write_good(root), "running": write_running_momentum(root), "damaged": write_damaged_epochs(root),
            "truncated": write_damaged_trials(root), "invalid": write_invalid_study_json(root)}


# Marks a folder this module wrote, so a rerun may replace it (and only such a folder).
MARKER = ".salgl_demo"


def written_by_demo(out: Path) -> bool:
    """`out` holds the marker, or is an older demo's output (before the marker): only study folders whose
    readable study.json files all carry the demo's made-up git commit."""
    if (out / MARKER).is_file():
        return True
    if any(not p.is_dir() for p in out.iterdir()):
        return False
    commits = []
    for f in out.glob(f"*/*/{STUDY_JSON}"):
        try:
            commits.append(json.loads(f.read_text()).get("provenance", {}).get("git_commit"))
        except (ValueError, AttributeError):
            continue  # the demo's own invalid study.json
    return bool(commits) and set(commits) == {PROVENANCE["git_commit"]}


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        sys.exit("usage: python -m dashboards.demo OUT_DIR")
    out = Path(args[0])
    if out.exists() and any(out.iterdir()):
        # A rerun starts afresh: runs left by an older demo could otherwise be the newest, and the dashboard
        # opens on the newest run.
        if not written_by_demo(out):
            sys.exit(f"{out} is not empty and was not written by this demo; name an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by python -m dashboards.demo; rerunning it replaces this folder\n")
    for name, path in write_all(out).items():
        print(f"{name:12s} {path}")


if __name__ == "__main__":
    main()
