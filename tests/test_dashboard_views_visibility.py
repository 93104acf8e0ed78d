"""dashboards/shaping/visibility.py and dashboards/charts/visibility.py: the visibility study's summary and figure."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dashboards.charts.visibility import visibility_figure
from dashboards.shaping.visibility import visibility_summary
from studies.analysis.stats import mean_ci


def _trials() -> pd.DataFrame:
    rows = []
    arms = {"global@0.6": (1, "learned", 0.6), "learned@0": (4, "learned", 0.0), "learned@1": (4, "learned", 1.0),
            "oracle@0.6": (4, "oracle", 0.6), "random@0.6": (4, "random", 0.6)}
    for i, (arm, (k, source, v)) in enumerate(arms.items()):
        for seed in range(3):
            rows.append({"trial_id": f"{arm}-{seed}", "arm": arm, "status": "FINISHED", "num_scenes": k,
                         "scene_source": source, "synthetic_scene_visibility": v, "seed": seed,
                         "best_mAP_ema": 70 + 3 * i + seed, "scene_nmi": 0.1 * (i + 1) + 0.01 * seed})
    rows.append({**rows[3], "trial_id": "failed", "status": "ERROR", "best_mAP_ema": None})
    return pd.DataFrame(rows)


def test_the_summary_has_one_row_per_arm_in_role_order_with_the_analysis_intervals():
    s = visibility_summary(_trials(), "best_mAP_ema")
    assert s["arm"].tolist() == ["learned@0", "learned@1", "oracle@0.6", "global@0.6"]  # random is not shown
    assert s["role"].tolist() == ["learned", "learned", "oracle", "global"]
    row = s.iloc[0]
    scores = [73.0, 74.0, 75.0]  # learned@0: i = 1, the ERROR trial left out
    assert row["n"] == 3 and row["mean"] == pytest.approx(74.0) and row["visibility"] == 0.0
    ci = mean_ci(scores)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci["ci_low"], ci["ci_high"]))
    assert row["nmi"] == pytest.approx(0.21)


def test_no_sweep_no_view():
    t = _trials()
    assert visibility_summary(t[t["arm"] != "learned@1"], "best_mAP_ema").empty  # one learned visibility
    assert visibility_summary(t.drop(columns="synthetic_scene_visibility"), "best_mAP_ema").empty  # older export


def test_the_figure_draws_the_learned_points_and_both_bands():
    s = visibility_summary(_trials(), "best_mAP_ema")
    fig = visibility_figure(s, "best EMA mAP")
    learned = next(t for t in fig.data if t.name == "learned scenes")
    assert list(learned.x) == [0.0, 1.0] and list(learned.y) == pytest.approx(s["mean"][:2].tolist())
    bands = {t.name: t for t in fig.data if t.name and "ceiling" in t.name or t.name and "floor" in t.name}
    assert set(bands) == {"oracle@0.6 (ceiling)", "global@0.6 (floor)"}
    assert bands["oracle@0.6 (ceiling)"].y[0] == pytest.approx(s.loc[s["role"] == "oracle", "mean"].item())
    nmi = next(t for t in fig.data if t.name == "learned NMI")
    assert not any(math.isnan(v) for v in nmi.y)
