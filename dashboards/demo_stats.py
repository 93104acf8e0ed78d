"""What a real study writes beside its tables, for the demo's healthy runs: each trial's validation scores
(predictions/), a joint search's Optuna journal, and analysis.json + comparisons.csv from studies.analysis.analyze.

The scores are drawn so that their mAP is the trial's reported number (trials.csv best_mAP_ema) to within
float16 rounding, as a real trial's saved scores are. Every image-label pair has a difficulty shared by all
trials of the run (a hard image is hard for every model), so the image bootstrap finds trials correlated
image by image, as it finds real ones. Deterministic: the same run gives the same files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from studies.analysis.analyze import analyze_run, write_analysis
from studies.analysis.bootstrap import mean_average_precision
from studies.exports.predictions import save_predictions, save_targets
from studies.exports.schema import OPTUNA_JOURNAL, REPORTED_METRIC

LABELS_PER_IMAGE = 2.9  # MS-COCO's average
MIN_POSITIVES = 3  # every label has a few positives, so no class scores 0 by having none
TRIAL_NOISE = 0.4  # each trial's own noise beside the shared difficulty (standard normal, logit scale)
TOLERANCE = 0.02  # mAP points between the scores' mAP and the reported number (analyze warns above 0.05)


def demo_targets(n_images: int, n_classes: int, seed: int) -> np.ndarray:
    """int8 [N, C] 0/1 labels: label frequencies as uneven as a real dataset's, LABELS_PER_IMAGE on average."""
    rng = np.random.default_rng([seed, n_images, n_classes])
    freq = np.clip(rng.dirichlet(np.full(n_classes, 2.0)) * LABELS_PER_IMAGE, 0.01, 0.5)
    t = rng.random((n_images, n_classes)) < freq
    for j in np.flatnonzero(t.sum(0) < MIN_POSITIVES):
        t[rng.choice(n_images, MIN_POSITIVES, replace=False), j] = True
    return t.astype(np.int8)


def demo_scores(target_map: float, targets: np.ndarray, difficulty: np.ndarray, seed: int) -> np.ndarray:
    """float16 scores [N, C] whose mAP (percent, the official protocol) is `target_map` within TOLERANCE.

    Logit = a * (+1 positive / -1 negative) + difficulty + the trial's noise; the signal a is found by
    bisection (mAP rises with it) on the float16 scores, i.e. on exactly what is saved."""
    rng = np.random.default_rng([seed, 7])
    noise = difficulty + TRIAL_NOISE * rng.standard_normal(targets.shape)
    sign = 2.0 * targets - 1.0
    lo, hi = 0.0, 16.0
    for _ in range(60):
        a = (lo + hi) / 2
        scores = (1.0 / (1.0 + np.exp(-(a * sign + noise)))).astype(np.float16)
        got = mean_average_precision(scores, targets)
        if abs(got - target_map) < TOLERANCE:
            return scores
        lo, hi = (a, hi) if got < target_map else (lo, a)
    raise ValueError(f"no scores reach mAP {target_map} on {targets.shape[0]} images (reached {got:.3f})")


def write_predictions(run_dir: Path, trials: Sequence[Mapping[str, Any]], n_classes: int, n_images: int,
                      seed: int = 0) -> None:
    """predictions/targets.npz and predictions/<trial_id>.npz for every FINISHED trial, as a study saves them."""
    targets = demo_targets(n_images, n_classes, seed)
    ids = np.arange(n_images, dtype=np.int64) + 100_000  # COCO-like image ids, not row numbers
    save_targets(run_dir, targets, None, ids)
    difficulty = np.random.default_rng([seed, 1]).standard_normal(targets.shape)
    for i, t in enumerate(trials):
        if t["status"] == "FINISHED":
            save_predictions(run_dir, str(t["trial_id"]),
                             demo_scores(float(t[REPORTED_METRIC]), targets, difficulty, seed * 1000 + i), ids)


def _distribution(spec: Mapping[str, Any]):  # -> optuna BaseDistribution
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = spec["type"]
    if kind == "choice":
        return CategoricalDistribution(list(spec["values"]))
    if kind == "int":
        return IntDistribution(int(spec["low"]), int(spec["high"]))
    return FloatDistribution(float(spec["low"]), float(spec["high"]), log=kind == "loguniform")


def write_optuna_journal(run_dir: Path, study_name: str, trials: Sequence[Mapping[str, Any]],
                         space: Mapping[str, Mapping[str, Any]], objective: str) -> Path:
    """The Optuna journal a joint search leaves (study <study>/<run>): FINISHED trials complete with their
    `objective`, STOPPED ones pruned. Optuna is imported here only: the dashboard's modules never load it."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = run_dir / OPTUNA_JOURNAL
    path.unlink(missing_ok=True)
    study = optuna.create_study(study_name=study_name, direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(path))))
    dists = {k: _distribution(v) for k, v in space.items()}
    for t in trials:
        done = t["status"] == "FINISHED"
        study.add_trial(create_trial(
            params={k: t[k] for k in dists}, distributions=dists, value=float(t[objective]) if done else None,
            state=TrialState.COMPLETE if done else TrialState.PRUNED,
            intermediate_values={int(t["epochs_done"]): float(t[objective])}))
    return path


def write_analysis_files(run_dir: Path) -> dict[str, Any]:
    """analysis.json and comparisons.csv, by the function a finished study calls."""
    analysis = analyze_run(run_dir)
    write_analysis(run_dir, analysis)
    return analysis
