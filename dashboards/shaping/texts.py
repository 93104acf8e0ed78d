"""The words the pages show: metric names, axis names, notes and captions (no streamlit), so every view
names a number the same way and the app holds layout only.
"""

from __future__ import annotations

from typing import Any

from dashboards.data.paper import PAPER_METRIC, PaperRef
from dashboards.data.paths import display_path
from dashboards.data.runs import Listing, Run, RunSummary
from dashboards.shaping.fmt import fmt_num
from dashboards.shaping.scenes import RANDOM_PERMUTATIONS, NmiContext
from salgl_core.config import ConfigError, field_label, field_spec
from studies.exports.schema import REPORTED_METRIC

# trials.csv column -> how a view names it. Every metric is in percent except the NMI.
METRIC_LABELS = {
    "best_mAP_ema": "best EMA mAP (%), the paper's reported number",
    "best_mAP": "best mAP (%), plain model",
    "mAP_ema": "last-epoch EMA mAP (%)",
    "mAP": "last-epoch mAP (%), plain model",
    "mAP_present": "last-epoch mAP over present labels (%)",
    "CF1": "last-epoch CF1 (%)", "OF1": "last-epoch OF1 (%)",
    "CF1_top3": "last-epoch CF1 top-3 (%)", "OF1_top3": "last-epoch OF1 top-3 (%)",
    "scene_nmi": "scene NMI, learned vs true (0-1)",
}
REPORTED_LABEL = METRIC_LABELS[REPORTED_METRIC]
# The header card's label is short (a card is narrow); the line under it says what the number is. It is one
# trial's (one seed's), the highest of the run: not an arm's mean, which the verdict table gives.
REPORTED_CARD = "best single trial (EMA mAP)"
REPORTED_CARD_NOTE = f"one seed's {REPORTED_METRIC}, the paper's reported number; not an arm's mean"
METRIC_HELP = ("The default is the paper's reported number: the EMA model's mAP at its best epoch (best_mAP_ema; "
               "the paper picks that epoch on the test set), the number the study's end summary prints too. "
               "best mAP: the plain (non-EMA) model at its best epoch. last-epoch: the final epoch's. "
               "CF1 / OF1: per-class / overall F1 at score >= 0.5.")
ARMS_NOTE = ("**A study of named arms**: each arm is a set of config fields (study.json `arms`), compared with the "
             "reference arm.")


def axis_label(axis: str) -> str:
    """How a chart names a study's axis: the config field's label (salgl_core/config.py), else its name."""
    try:
        return field_label(axis)
    except ConfigError:  # the named arms' pseudo-axis, or a field this version does not know
        return axis


def study_note(meta: dict[str, Any], axis: str | None, arms: bool) -> str:
    """What is shown above a study's results: study.json's `note` (its spec's); for an export written before
    study.json had one, the swept field's note; a study of named arms without either gets ARMS_NOTE."""
    note = meta.get("note")
    if not isinstance(note, str) and axis:
        try:
            note = field_spec(axis).note
        except ConfigError:
            note = ""
    return note or (ARMS_NOTE if arms else "")


VISIBILITY_CAPTION = ("Learned scenes (blue, mean and 95% interval over seeds) against the data's scene visibility, "
                      "the probability that an image's background shows its true scene; dashed bands: the oracle "
                      "arm (true scenes: the ceiling) and the global graph (K = 1: the floor), mean and 95% "
                      "interval, measured at their own visibility and drawn across (their scene choice does not read "
                      "the image, though their backbone's features were learned on the backgrounds of their own "
                      "visibility). Right: the learned scenes' NMI against the true ones (random assignment scores "
                      "about 0, the true scenes 1). The learned-vs-true contingency table of each trial is on "
                      "the Scenes tab.")
REPRO_NOTE = "Dotted lines: published reproduction figures for this setting (results/paper/reproductions.csv)."
CURVE_REF_NOTE = ("Dashed: the published COCO reproduction (yu-gi-oh-leilei/SALGL, ResNet-101 448 px), its running "
                  "best EMA mAP per epoch (results/paper/coco_reproduction_curve.csv; its epoch 0 is drawn at 1).")
COMPARISON_NOTE = (f"mAP of our rows: {METRIC_LABELS[REPORTED_METRIC]} (trials.csv {REPORTED_METRIC}), of the trial "
                   f"with the highest one over every listed run of that dataset / backbone / resolution; its CF1 / "
                   f"OF1 are the last epoch's. Paper rows: results/paper/coco_comparison.csv (the paper's table has "
                   f"no VOC or NUS-WIDE numbers we could retrieve).")
NO_REAL_RUNS = ("No listed run on a real dataset (MS-COCO, VOC 2007, NUS-WIDE) yet: the paper's rows alone. A study "
                "run with --dataset coco (and the paper's recipe) appears here beside them.")


def comparison_left_out(n: int) -> str:
    """Why the comparison with the paper lists fewer runs than the sidebar (one caption line)."""
    return (f"Left out: {n} run(s) on the embedded synthetic data or of named arms (mechanism, visibility): their "
            f"numbers are no MS-COCO result (an oracle arm is given the true scenes) and cannot stand beside the "
            f"paper's." if n else "")
FOLDERS_HELP = ("Default: results (the committed example exports) and runs (your study runs, git-ignored), or "
                "$SALGL_RESULTS_DIR when set. Several folders: separate them with commas or ':'. A relative path "
                "starts at the repository root. The paper's tables always come from results/paper.")
REPORTED_HELP = (f"The highest {REPORTED_METRIC} of any single trial of this run: one seed of one setting, the EMA "
                 f"model at its best epoch (the number the paper reports). A single seed's best is luckier than its "
                 f"setting's mean: the arms' means over seeds, with their 95% intervals, are in the Ablation tab's "
                 f"verdict table and chart (a joint search: the Search tab's table of its best trials).")
TRIALS_ENDED_HELP = ("Rows of trials.csv as read that ended (FINISHED, STOPPED, ERROR or DIVERGED), out of the "
                     "trials study.json planned")
NO_RUNS = ("No study runs in {folders} yet. Run a study (e.g. `python studies/scene_count.py`); its export "
           "(<study>/<run>/study.json, trials.csv, ...) appears here.")


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def no_reference_text(dataset: str, backbone: str | None, image_size: int | None, metric: str) -> str:
    """Why the ablation chart has no paper line."""
    if dataset in ("voc2007", "nuswide"):
        return (f"No paper number for {dataset} is on file (results/paper holds the paper's MS-COCO table only; its "
                f"VOC / NUS-WIDE tables could not be retrieved), so there is no paper reference line. The paper's "
                f"MS-COCO table is below for context.")
    why = (" (its numbers are for MS-COCO, VOC 2007 and NUS-WIDE with ResNet-101 / ViT-L16; this run uses the "
           "embedded synthetic data)" if dataset == "synthetic" else "")
    return (f"The paper reports no {PAPER_METRIC.get(metric, metric)} for {dataset} with {backbone} at {image_size} "
            f"px, so there is no reference line{why}. The paper's MS-COCO table is below for context.")


def nmi_caption(ctx: NmiContext) -> str:
    """How to read the learned-vs-true NMI: its scale on these images, from random assignment to the oracle."""
    text = ("NMI (normalised mutual information) between each validation image's learned scene (argmax) and its "
            "true scene: 1 when the learned scenes are the true ones up to renaming, near 0 when they are "
            "unrelated.")
    if ctx.random_mean is not None:
        text += (f" Random assignment: the mean over {RANDOM_PERMUTATIONS} seeded shuffles of which learned scene "
                 f"goes with which true scene, keeping every scene's image count (the table's row and column "
                 f"sums); 95 % of the shuffles score below {fmt_num(ctx.random_high, 3)}, so a learned NMI below "
                 f"that is chance level.")
    if ctx.capped:
        text += (f" With {ctx.learned_scenes} learned scene(s) in use for {ctx.true_scenes} true ones, even a "
                 f"perfect grouping scores below 1.")
    return text


def backbone_regime(base: dict, backbone: str | None) -> str:
    """`small_cnn`, or `small_cnn frozen (synthetic-pretrained), cached tokens` for the synthetic studies'
    default regime: a frozen backbone's numbers are not comparable with end-to-end ones."""
    if not base.get("freeze_backbone"):
        return str(backbone)
    weights = base.get("backbone_weights")
    return (f"{backbone} frozen ({weights or 'random init'})"
            + (", cached tokens" if base.get("feature_cache") else ""))


def run_facts(run: Run, s: RunSummary) -> str:
    """The line under a run's title: where it came from and what it ran."""
    m = run.meta
    return (f"{s.where} · {run.dataset} · {backbone_regime(m.get('base_config') or {}, run.backbone)} · "
            f"{run.image_size} px · axis: {run.axis or 'joint search'} · "
            f"{m.get('sampler') or '?'} / {m.get('scheduler') or '?'} · device: {s.device or '?'} · "
            f"protocol: {m.get('metric_protocol') or 'not stated'}")


def folders_caption(listing: Listing) -> str:
    """How many runs each results folder gave."""
    if len(listing.roots) == 1:
        return f"{len(listing.runs)} run(s) in {display_path(listing.roots[0])}"
    return f"{len(listing.runs)} run(s): " + ", ".join(
        f"{listing.count(r)} in {display_path(r)}" + (" (folder not created yet)" if r in listing.absent else "")
        for r in listing.roots)


def reference_notes(axis: str, metric: str, paper_row: Any, best_row: Any, ref: PaperRef) -> str:
    """The paper's configuration and the best setting beside the paper's number."""
    notes = [f"{what} {axis} = {row['label']}: mean {metric} {row['mean']:.2f} (n = {row['n']})"
             for what, row in (("paper's config", paper_row), ("best setting", best_row)) if row is not None]
    return "; ".join([*notes, f"paper: {ref.describe()}."])


def ablation_caption(metric: str, axis: str, paper_value: str | None, ref: PaperRef | None,
                     synthetic: bool = False, trial_intervals: bool = False, arms: bool = False) -> str:
    # On synthetic data the starred value is the synthetic preset's (study.json paper_config), not the paper's.
    star = ("the reference arm" if arms else "the synthetic preset's value (not the paper's configuration)"
            if synthetic else "the paper's configuration")
    return (f"Plotted: {metric_label(metric)} (trials.csv column {metric}). Each point is one trial (colour = seed); "
            f"the red diamonds are the mean ± sample std over the FINISHED seeds, the thin dark whiskers the mean's "
            f"95% CI (Student t over the seeds: wide with few seeds). ★ = {star}"
            + (f" ({axis} = {paper_value})" if paper_value else "") + "."
            + (" Hover a trial for its image-bootstrap 95% interval." if trial_intervals else "")
            + (f" Dashed line: {ref.describe()}." if ref is not None else ""))


def trials_caption(placement: bool) -> str:
    return (f"best EMA mAP (paper's): trials.csv {REPORTED_METRIC}, the paper's reported number; the other metrics are "
            f"the last epoch's. Where each trial ran: device, GPU ids"
            + (", node IP and retries (how often Ray restarted the trial)" if placement else "") + ".")


def counts_note(soft: bool | None, comat_ema: bool | None) -> str:
    """Why the typical-labels table's counts are fractional (the trial's soft_assignment and comat_ema)."""
    why = []
    if comat_ema is None or comat_ema:
        why.append("the EMA model keeps a moving average of the training counts (comat_ema)")
    if soft:
        why.append("each image adds its scene probability instead of 1 (soft_assignment)")
    return ("count: images of the label counted in this scene's co-occurrence diagonal"
            + (f"; soft counts, fractional because {' and '.join(why)}" if why else "")
            + ". share: fraction of the label's counted images that went to this scene; lift: share ÷ the scene's "
              "fraction of all label occurrences (1 = no preference).")


# ---------------------------------------------------------------------------------------------
# Statistics (analysis.json)

VERDICT_CAPTION = ("mean 95% CI: Student t interval over the arm's finished seeds (the validation set held fixed, "
                   "like the paper's number). difference: mean(arm) − mean(★), paired by seed; its 95% interval "
                   "holds the seed-to-seed spread (seeds) and, where the trials saved predictions, the validation "
                   "set's own noise from the image bootstrap (images). p (Holm): adjusted over the arms compared; "
                   "P(better): the chance that a run of the arm beats a run of ★, over all seed pairs. Verdicts at "
                   "α = 0.05 after Holm.")
NO_PREDICTIONS = ("This export has no predictions/ (the trials saved no validation scores; older runs did not), so "
                  "there are no per-trial bootstrap intervals and the differences' intervals hold the seed-to-seed "
                  "spread only, not the validation set's own noise. The notes below say what else could not be "
                  "computed.")
IMPORTANCE_CAPTION = ("Optuna's importance of each searched parameter for the searcher's objective (analysis.json, "
                      "from the study's Optuna journal): fANOVA and PED-ANOVA, each share of the variance summing "
                      "to 1 over the parameters. With few trials they are rough.")
PARALLEL_CAPTION = ("One line per trial with a value, through its searched values to its result (the last axis, "
                    "also the colour). Drag along an axis to select a range. STOPPED trials ended early (ASHA): "
                    "their value is from fewer epochs.")


NO_FOREST = ("No arm has a difference to compare yet: the forest plot needs finished trials in the reference arm and "
             "in at least one other (see the verdict table).")


def short_metric_label(metric: str) -> str:
    """The metric's name and unit without the explanation, e.g. `best EMA mAP (%)` (headings, axes)."""
    return metric_label(metric).split(",")[0]


def no_importances(notes: list[str]) -> str:
    """Why a joint search shows no parameter importances: the analysis's notes about them."""
    why = [n for n in notes if "importance" in n or "Optuna" in n]
    return "No parameter importances: " + ("; ".join(why) or "the analysis has none for this run") + "."


def reference_name(synthetic: bool, arms: bool = False) -> str:
    """What the reference arm (study.json paper_config) is: on synthetic data the synthetic preset's value; in a
    study of named arms (mechanism) the arm it names."""
    if arms:
        return "reference arm"
    return "synthetic preset's value" if synthetic else "paper's configuration"


def verdict_heading(axis: str, value: str, synthetic: bool, metric: str, arms: bool = False) -> str:
    return (f"Verdicts on {short_metric_label(metric)}: each arm against ★ {axis} = {value}, the "
            f"{reference_name(synthetic, arms)}" + (" (not the paper's configuration)" if synthetic and not arms
                                                      else ""))


def analysis_source(source: str, absent: bool, bootstrap: str, command: str, predictions: bool = True) -> str:
    """Where the intervals come from: analysis.json, or computed here (and how to write the file)."""
    if source == "file":
        return f"From analysis.json (studies.analysis.analyze; {bootstrap})."
    why = "this export has no analysis.json" if absent else "see the warning above"
    inputs = "trials.csv and predictions/" if predictions else "trials.csv"
    return (f"Computed here by studies.analysis.analyze from {inputs} ({why}; {bootstrap}). `{command}` writes "
            f"analysis.json.")


def metric_note(metric: str, analysed: str) -> str:
    """Why the verdicts do not follow the metric picker."""
    return (f"The verdicts and the differences are for {metric_label(analysed)} (the analysed metric); the chart "
            f"shows {metric_label(metric)}, its 95% CIs computed here as t intervals over the seeds.")


def forest_caption(reference: str, interval_kinds: list[str]) -> str:
    """How to read the forest plot; `interval_kinds`: what its intervals hold (analysis.json `interval`)."""
    holds = {"seeds": "the seed spread only (no predictions)", "seeds+images": "the seed spread and the validation "
             "set's noise", "images": "the validation set's noise only (one seed per arm: no seed-level test)"}
    kinds = [holds.get(k, k) for k in interval_kinds if k in holds]
    return (f"Each arm minus ★ ({reference}), with its 95% interval; colour: the verdict. "
            + (f"The intervals hold {'; '.join(kinds)}. " if kinds else
               "No interval: one seed per arm and no predictions, so neither the seed spread nor the validation "
               "set's noise can be estimated. ")
            + "An interval clear of 0 with Holm p < 0.05 is a detected difference.")


# ---------------------------------------------------------------------------------------------
# Run against run (dashboards/shaping/compare.py)

COMPARE_HEADING = "Run against run: the same axis in two runs"
COMPARE_PICKER = "Compare with"
COMPARE_PICKER_HELP = ("The other listed runs that sweep this run's axis (for named arms: with the same reference "
                       "arm): a screening study against a full one, or the same ablation on another dataset or "
                       "recipe.")
COMPARE_NO_AXIS = ("Run against run sets two ablations of one axis side by side; a joint search has no axis to pair "
                   "on.")
COMPARE_CHART_CAPTION = ("Each run's mean per value over its finished seeds, the whiskers the mean's 95% interval "
                         "(Student t over its seeds; none under two seeds); ★: the run's own reference value. At "
                         "each value the two runs sit side by side; a value one run lacks has only the other's "
                         "point.")
COMPARE_TABLE_CAPTION = ("Δ to ★: each run's mean(value) − mean(its own reference ★), with the difference's 95% "
                         "interval, and the verdict's kind at α = 0.05 after Holm, from each run's analysis.json "
                         "(the Ablation tab gives the verdicts in full). agreement: agree = both runs detect a "
                         "difference in the same direction, or neither detects one; disagree = one detects a "
                         "difference and the other not, or they point opposite ways; cannot tell = a run has no "
                         "test there (one seed, no finished trials); different references = the two runs' ★ "
                         "differ, so their verdicts answer different questions and are not matched; – = the run "
                         "lacks the value. A run with fewer "
                         "seeds detects less: 'no detectable difference' is not 'no difference'.")


def no_other_run(axis: str, arms: bool) -> str:
    """Why the run-against-run tab has nothing to compare with."""
    what = "these named arms with the same reference arm" if arms else f"the axis {axis}"
    return (f"No other listed run sweeps {what}, so there is nothing to set beside this run. Run the study again "
            f"(on another dataset or recipe, or with more seeds), or add the results folder that holds such a run "
            f"in the sidebar.")


def compare_runs_caption(names: list[str], facts: list[str]) -> str:
    """Which run is A and which is B, with what each ran."""
    return " · ".join(f"**{n}** = {f}" for n, f in zip(names, facts, strict=True))


def compare_run_facts(run: Run) -> str:
    """A run's line in the comparison: where it is and what it ran."""
    seeds = run.meta.get("seeds")
    regime = backbone_regime(run.meta.get("base_config") or {}, run.backbone)
    return (f"{display_path(run.path)} ({run.dataset}, {regime}, {run.image_size} px"
            + (f", {len(seeds)} seed(s)" if isinstance(seeds, list) else "") + ")")


def compare_metric_note(metric: str, other: str) -> str:
    """The two runs analysed different metrics: their differences are not of the same number."""
    return (f"Run A's analysis is of {metric_label(metric)}, run B's of {metric_label(other)}: their differences "
            f"and verdicts are of different numbers.")


def agreement_line(counts: dict[str, int]) -> str:
    """How many values each agreement has, e.g. `2 agree · 1 disagree · 1 only in B`."""
    return " · ".join(f"{n} {what}" for what, n in counts.items())
