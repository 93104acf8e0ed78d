"""dashboards/shaping/texts.py: how the views name metrics and explain what they show."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboards import demo
from dashboards.data.paths import display_path
from dashboards.data.runs import Listing, list_runs
from dashboards.shaping import texts as T
from dashboards.shaping.scenes import NmiContext
from dashboards.shaping.trials import METRICS
from studies.exports.schema import REPORTED_METRIC


def test_every_offered_metric_is_named_with_its_unit():
    assert T.metric_label(REPORTED_METRIC) == T.REPORTED_LABEL == "best EMA mAP (%), the paper's reported number"
    for m in METRICS:
        label = T.metric_label(m)
        assert label != m and ("(%)" in label or m == "scene_nmi")
    # Only the reported metric claims to be the paper's number.
    assert [m for m in METRICS if "paper" in T.metric_label(m)] == [REPORTED_METRIC]
    assert T.metric_label("something_new") == "something_new"
    assert REPORTED_METRIC in T.METRIC_HELP and "end summary" in T.METRIC_HELP


@pytest.mark.slow
def test_folders_caption_names_each_folder(tmp_path: Path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    demo.write_good(results)
    single = list_runs(results)
    assert T.folders_caption(single) == f"3 run(s) in {display_path(results)}"
    both = list_runs([results, runs], may_be_absent=[runs])
    assert T.folders_caption(both) == (f"3 run(s): 3 in {display_path(results)}, 0 in {display_path(runs)} "
                                       f"(folder not created yet)")
    demo.write_tune(runs)
    assert T.folders_caption(list_runs([results, runs])).startswith("4 run(s): 3 in ")
    assert T.folders_caption(Listing([], [], [results, runs], [])).endswith(f"0 in {display_path(runs)}")


def test_nmi_caption_gives_the_scale():
    text = T.nmi_caption(NmiContext(0.107, 0.004, 0.0071, 1.0, 4, 4))
    assert "1 when the learned scenes are the true ones" in text and "near 0" in text
    assert "200 seeded shuffles" in text and "below 0.007" in text and "below 1" not in text
    capped = T.nmi_caption(NmiContext(0.4, 0.01, 0.02, 1.0, 2, 4))
    assert "With 2 learned scene(s) in use for 4 true ones, even a perfect grouping scores below 1." in capped
    assert "shuffles" not in T.nmi_caption(NmiContext(0.3, None, None, 1.0, 0, 0))



def test_captions_name_the_plotted_metric():
    caption = T.ablation_caption(REPORTED_METRIC, "num_scenes", "4", None)
    assert caption.startswith(f"Plotted: {T.REPORTED_LABEL} (trials.csv column best_mAP_ema).")
    assert "(num_scenes = 4)" in caption and "Dashed" not in caption
    assert T.ablation_caption("CF1", "num_scenes", None, None).startswith("Plotted: last-epoch CF1 (%)")
    assert T.REPORTED_LABEL in T.COMPARISON_NOTE and "node IP" in T.trials_caption(True)
    assert "node IP" not in T.trials_caption(False)
    assert "The paper reports no mAP for synthetic with small_cnn at 64 px" in T.no_reference_text(
        "synthetic", "small_cnn", 64, "best_mAP_ema")
    assert "No paper number for voc2007" in T.no_reference_text("voc2007", "resnet101", 448, "mAP")


def test_counts_note_says_why_counts_are_fractional():
    """Counts are fractional through the EMA of the counts (default) and, with soft assignment, the weights."""
    default = T.counts_note(False, True)
    assert "soft counts, fractional because the EMA model keeps a moving average of the training counts" in default
    assert "soft_assignment" not in default and T.counts_note(None, None) == default
    both = T.counts_note(True, True)
    assert "(comat_ema) and each image adds its scene probability instead of 1 (soft_assignment)" in both
    assert "fractional" not in T.counts_note(False, False) and "lift" in T.counts_note(False, False)


def test_statistics_wording_names_the_reference_as_study_json_does():
    """On synthetic data the reference arm is the synthetic preset's value, as the ablation caption says."""
    assert T.reference_name(False) == "paper's configuration" and T.reference_name(True) == "synthetic preset's value"
    assert "the synthetic preset's value (not the paper's configuration)" in T.ablation_caption(
        REPORTED_METRIC, "num_scenes", "4", None, synthetic=True)
    assert T.verdict_heading("num_scenes", "4", True, REPORTED_METRIC) == (
        "Verdicts on best EMA mAP (%): each arm against ★ num_scenes = 4, the synthetic preset's value (not the "
        "paper's configuration)")
    assert T.verdict_heading("num_scenes", "6", False, REPORTED_METRIC).endswith("num_scenes = 6, the paper's "
                                                                                   "configuration")
    assert "hold the seed spread and the validation set's noise; the validation set's noise only" in \
        T.forest_caption("K = 4", ["seeds+images", "images"])
    assert "No interval: one seed per arm and no predictions" in T.forest_caption("K = 4", ["–"])
    assert T.analysis_source("file", False, "1000 resamples", "cmd") == (
        "From analysis.json (studies.analysis.analyze; 1000 resamples).")
    assert "(see the warning above; " in T.analysis_source("computed", False, "x", "cmd")
    assert "from trials.csv (this export has no analysis.json; x). `cmd` writes" in T.analysis_source(
        "computed", True, "x", "cmd", predictions=False)
    assert "CF1" in T.metric_note("CF1", REPORTED_METRIC) and T.REPORTED_LABEL in T.metric_note("CF1", REPORTED_METRIC)


def test_the_run_line_says_when_the_backbone_was_frozen():
    from dashboards.shaping.texts import backbone_regime

    assert backbone_regime({}, "small_cnn") == "small_cnn"
    assert backbone_regime({"freeze_backbone": False, "feature_cache": True}, "resnet101") == "resnet101"
    frozen = {"freeze_backbone": True, "backbone_weights": "synthetic-pretrained", "feature_cache": True}
    assert backbone_regime(frozen, "small_cnn") == "small_cnn frozen (synthetic-pretrained), cached tokens"
    assert backbone_regime({"freeze_backbone": True}, "small_cnn") == "small_cnn frozen (random init)"


def test_the_header_card_and_the_paper_comparison_say_what_they_show():
    """The card is one trial's number, not a mean; the comparison says why synthetic runs are not in it."""
    assert T.REPORTED_CARD == "best single trial (EMA mAP)" and "not an arm's mean" in T.REPORTED_CARD_NOTE
    assert "one seed of one setting" in T.REPORTED_HELP and "verdict table" in T.REPORTED_HELP
    assert T.comparison_left_out(0) == ""
    assert T.comparison_left_out(3).startswith("Left out: 3 run(s) on the embedded synthetic data or of named arms")
