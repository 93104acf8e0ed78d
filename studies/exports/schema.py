"""The results schema (results/<study>/<run>/): file names, columns, JSON keys, units, schema_version.

The one owner of these names: the exporter (studies/exports/writer.py), the dashboard's reader
(dashboards/data/files.py) and the test fixtures import them, and tests/test_schema.py checks
results/README.md against them. Imports neither torch, ray nor streamlit (the config module is plain
Python), so the dashboard stays light.
"""

from __future__ import annotations

import dataclasses

from salgl_core.config import ExperimentConfig
from studies.design.spec import ARM

SCHEMA_VERSION = 1

# Files and folders of one run.
STUDY_JSON = "study.json"
TRIALS_CSV = "trials.csv"
EPOCHS_CSV = "epochs.csv"
SCENES_DIR = "scenes"
OPTUNA_JOURNAL = "optuna_journal.log"
# The writer's own log of trial-row changes since trials.csv was last written (studies/exports/writer.py): only
# while a study runs, or after its driver was killed; read only by the writer, gone once the run ends.
TRIALS_JOURNAL = ".trials.journal"

# Every metric in the export is in percent (0-100), the paper's unit.
METRIC_UNIT = "percent"

TRIAL_STATUSES = ("RUNNING", "FINISHED", "STOPPED", "ERROR", "DIVERGED")
TERMINAL_TRIAL_STATUSES = frozenset(TRIAL_STATUSES[1:])
RUN_STATUSES = ("RUNNING", "FINISHED", "INTERRUPTED", "FAILED")

# The number the paper reports (the EMA model at its best epoch) and therefore the number every view
# shows first.
REPORTED_METRIC = "best_mAP_ema"

FINAL_METRICS = ("mAP", "mAP_ema", "mAP_present", "CP", "CR", "CF1", "OP", "OR", "OF1", "CF1_top3", "OF1_top3")
TRIAL_METRICS = ("best_mAP", "best_mAP_ema", *FINAL_METRICS, "scene_nmi")
# Where a trial ran: the node (id and IP) of its last epoch, and how often Ray restarted it (a lost node or
# worker). Exports written before these columns existed lack them, so readers do not require them.
TRIAL_PLACEMENT_COLUMNS = ("node_id", "node_ip", "retries")
TRIAL_RESULT_COLUMNS = ("epochs_done", "best_epoch", "best_mAP", "best_mAP_ema", *FINAL_METRICS, "scene_nmi",
                        "seconds", "device", "gpu_ids", *TRIAL_PLACEMENT_COLUMNS, "error")
# `seed` and `device` have columns of their own: the trial's seed and the device it actually ran on.
CONFIG_COLUMNS = tuple(k for k in ExperimentConfig().to_flat() if k not in ("seed", "device"))
# Config fields naming machine-local caches or temporary folders: never exported (empty in trials.csv,
# absent from study.json's base_config), so an export names no folder of the machine that wrote it.
MACHINE_LOCAL_FIELDS = ("cache_dir",)
TRIAL_KEY_COLUMNS = ("trial_id", "status", "seed", "is_paper_config")
# A study of named arms (studies/mechanism.py) records each trial's arm; empty in other studies, absent from
# exports written before it existed.
TRIAL_ARM_COLUMNS = (ARM,)
TRIAL_COLUMNS = (*TRIAL_KEY_COLUMNS, *TRIAL_ARM_COLUMNS, *CONFIG_COLUMNS, *TRIAL_RESULT_COLUMNS)
# The columns a reader needs; the config columns may differ between versions of the config.
TRIAL_REQUIRED = (*TRIAL_KEY_COLUMNS, *(c for c in TRIAL_RESULT_COLUMNS if c not in TRIAL_PLACEMENT_COLUMNS))
TRIAL_NUMERIC = ("seed", "epochs_done", "best_epoch", *TRIAL_METRICS, "seconds")
TRIAL_TEXT = ("trial_id", "status", ARM, "device", "gpu_ids", "error")

EPOCH_METRICS = ("mAP", "mAP_ema", "mAP_present", "CF1", "OF1", "CF1_top3", "OF1_top3")
EPOCH_COLUMNS = ("trial_id", "epoch", "lr", "loss_total", "loss_cls", "loss_sample_entropy", "loss_batch_entropy",
                 *EPOCH_METRICS, "seconds", "images_per_second")

# study.json: key -> meaning (results/README.md documents exactly these keys).
STUDY_KEYS: dict[str, str] = {
    "schema_version": "the schema version of this export",
    "study": "the study's name (scene_count, graph_depth, momentum, tune)",
    "run": "the run's name",
    "axis": "the swept config field (\"arm\" in a study of named arms); null for a joint search",
    "axis_values": "the grid (list); null for a joint search",
    "sampler": "the Optuna sampler, e.g. GridSampler or TPESampler",
    "scheduler": "FIFO or ASHA",
    "metric": "what the searcher optimises, e.g. mAP_ema",
    "mode": "max",
    "metric_protocol": "text naming the AP protocol and the CP/CR rule (the base config's cp_cr_rule)",
    "reported_metric": "the trials.csv column every view shows first (best_mAP_ema)",
    "recipe": "the named recipe the base config started from (salgl_core/presets.py), e.g. paper-coco-r101-448 "
              "or synthetic",
    "dataset": "copy of the base config's dataset",
    "backbone": "copy of the base config's backbone",
    "image_size": "copy of the base config's image size",
    "base_config": "the flat config every trial starts from (portable paths)",
    "paper_config": "the recipe's values of the swept fields (dict): the paper's configuration on a real dataset, "
                    "the synthetic preset's on synthetic data",
    "seeds": "list of ints",
    "class_names": "label names in label order",
    "status": "RUNNING, FINISHED, INTERRUPTED or FAILED",
    "started": "ISO 8601 UTC",
    "finished": "ISO 8601 UTC; null while running",
    "n_trials": "trials planned",
    "n_finished": "trials that ended",
    "trial_seconds_total": "summed trial time",
    "wall_seconds": "the study's wall time",
    "preparation": "the driver's one-off preparation before the first trial, summed over the run's sessions: "
                   "{step: seconds} for data, pretraining, model check, feature cache, Ray start, other "
                   "(studies/analysis/timing.py); {} until the run ends, absent in exports written before it existed",
    "max_concurrent": "trials allowed at once",
    "resources_per_trial": "{gpu, cpu} each trial asked for",
    "provenance": "{git_commit, git_dirty, python, packages, platform, cpu, cpu_count, gpus, ray_cluster}",
    "optuna_storage": "the Optuna journal, relative to the run folder",
    "predictions": "the trials' validation predictions folder (predictions), relative to the run folder: the "
                   "analysis treats a missing one as damage; absent in exports written before it existed",
    "device": "cpu or the GPU name the trials ran on",
    "note": "what the dashboard shows above the study's results (markdown, from its StudySpec; may be empty); "
            "absent in exports written before it existed",
}
# Keys only a joint search writes.
SEARCH_STUDY_KEYS: dict[str, str] = {
    "search_space": "the joint search space: {field: {type, values | low, high}}",
    "asha": "ASHA's settings, when ASHA stops trials early",
}
# Keys only a study of named arms writes.
ARM_STUDY_KEYS: dict[str, str] = {
    "arms": "the arms of a study of named arms: {arm: the config fields it sets}, in the order shown",
}
# The keys a reader cannot do without.
STUDY_REQUIRED = ("schema_version", "study", "run", "status")

SCENE_KEYS: dict[str, str] = {
    "trial_id": "the trial",
    "num_scenes": "K",
    "class_names": "label names in label order",
    "cooccurrence_prob": "K x C x C: P(j | i, scene k) of the EMA model's counts",
    "cooccurrence_counts_diag": "K x C: the counts' diagonal (soft counts are fractional)",
    "scene_usage": "K fractions of validation images whose argmax scene is k",
    "true_scene_nmi": "NMI between learned and true scenes (synthetic data), or null",
    "contingency": "K x K_true counts (synthetic data), or null",
}

# results/paper/: the paper's tables.
PAPER_DIR = "paper"
PAPER_COCO_CSV = "coco_comparison.csv"
PAPER_REPRO_CSV = "reproductions.csv"
PAPER_CURVE_CSV = "coco_reproduction_curve.csv"
PAPER_COCO_COLUMNS = ("dataset", "backbone", "resolution", "pretrain", "method", "mAP", "CP", "CR", "CF1", "OP",
                      "OR", "OF1", "CP_top3", "CR_top3", "CF1_top3", "OP_top3", "OR_top3", "OF1_top3", "is_salgl",
                      "source")
PAPER_REPRO_COLUMNS = ("dataset", "backbone", "resolution", "who", "mAP", "source")
PAPER_CURVE_COLUMNS = ("epoch", "best_ema_mAP", "best_regular_mAP", "loss_cls", "loss_sample_entropy",
                       "loss_batch_entropy", "epoch_seconds", "lr", "source")

# --- Predictions and analysis (written by studies/analysis/analyze.py; documented at the end of results/README.md) ---
# predictions/<trial_id>.npz: the reported model's validation scores; predictions/targets.npz once per run.
PREDICTIONS_DIR = "predictions"
TARGETS_FILE = "targets.npz"
PREDICTION_ARRAYS = ("scores", "image_ids")  # float16 [N, C]; int64 or text [N]
TARGET_ARRAYS = ("targets", "ignore", "image_ids")  # int8 [N, C] 1/0; bool [N, C] (VOC difficult); [N]
ANALYSIS_JSON = "analysis.json"
COMPARISONS_CSV = "comparisons.csv"
# analysis.json: key -> meaning.
ANALYSIS_KEYS: dict[str, str] = {
    "schema_version": "the schema version",
    "kind": "ablation (one axis) or search (joint search)",
    "study": "the study's name",
    "run": "the run's name",
    "axis": "the swept config field (\"arm\" in a study of named arms); null for a joint search",
    "metric": "the trials.csv column analysed (REPORTED_METRIC)",
    "unit": "percent",
    "level": "confidence level of every interval (0.95)",
    "alpha": "significance level of the verdicts, after Holm",
    "power": "power of the detectable-difference figures",
    "target_difference": "the difference (mAP) the seeds-needed figure is for",
    "bootstrap": "{resamples, seed, images, classes, trials_with_predictions, seconds}",
    "methods": "{quantity: how it is computed}",
    "reference": "the reference arm's axis value (the paper's configuration); null for a joint search",
    "trials": "per trial: trial_id, status, seed, is_paper_config, value, mAP, mAP_predictions, ci_low, ci_high, se, "
              "excluded (null, or why the trial cannot be used)",
    "arms": "per axis value: value, is_reference, seeds, statuses, excluded, n, mean, sd, ci_low, ci_high",
    "comparisons": "per arm vs the reference: the comparisons.csv columns plus se_seeds, se_images, df_seeds, "
                   "p_sign_flip, sd_seed, mde_floor, no_test, notes",
    "search": "joint search only: {best, paper, importances: {fanova, ped_anova}}",
    "budget": "ablation only: is the budget on the flat part of the learning curve? {epochs, window, threshold, "
              "trials, gains, gain, flat, verdict} for the reference arm (studies/analysis/budget.py); null for a "
              "joint search",
    "notes": "what could not be computed and why; every file or row that could not be used, with the next step",
}


@dataclasses.dataclass(frozen=True)
class VerdictColumn:
    """One column of the verdict table, which the terminal's summary (studies/analysis/summary.py) and the
    dashboard (dashboards/shaping/stats.py) both build from VERDICT_COLUMNS: a new column is one line here, its
    statistic in studies/analysis/analyze.py and its line in results/README.md."""

    label: str
    key: str  # the field of an arm in analysis.json `arms` (of="arm") or of its entry in `comparisons`
    of: str = "comparison"
    # A format spec of a number (".2f", "+.2f", ".3g", "d"); "interval" / "+interval" is [key_low, key_high]
    # (the comparison's ci_low/ci_high for key "ci"); "text" a string.
    fmt: str = ".2f"
    terminal: bool = True  # the terminal's table shows it (its long texts get lines of their own there)
    reference: str = ""  # what the reference arm's row shows in a comparison column


VERDICT_COLUMNS = (
    VerdictColumn("seeds", "n", of="arm", fmt="d"),
    VerdictColumn("mean", "mean", of="arm"),
    VerdictColumn("mean 95% CI", "ci", of="arm", fmt="interval"),
    VerdictColumn("difference", "diff", fmt="+.2f"),
    VerdictColumn("difference 95% CI", "ci", fmt="+interval", reference="reference"),
    VerdictColumn("interval holds", "interval", fmt="text", terminal=False),
    VerdictColumn("p (Holm)", "p_holm", fmt=".3g"),
    VerdictColumn("P(better)", "p_improve"),
    VerdictColumn("verdict", "verdict", fmt="text", terminal=False, reference="the reference arm"),
)

COMPARISON_COLUMNS = ("axis", "value", "n", "n_reference", "paired", "mean", "mean_reference", "diff", "ci_low",
                      "ci_high", "interval", "p", "p_holm", "holm", "p_improve", "mde", "seeds_for_target",
                      "fallback", "verdict")
# --- end of the predictions and analysis block ---
