"""The analysis (studies/analysis/analyze.py, stats.py, bootstrap.py): its mAP equals salgl_core.metrics', its tests
and intervals equal scipy's and hand-worked values, its intervals cover the truth in simulated studies, and
run folders with missing, failed, unpaired or constant trials give clear answers."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import gaussian_study
from scipy import integrate
from scipy import stats as st

from studies.analysis import analyze, critical, stats, summary
from studies.analysis.bootstrap import (
    bootstrap_maps,
    mean_average_precision,
    rank_trial,
    resample_weights,
    weighted_map,
)
from studies.exports import predictions, schema

REPO = Path(__file__).resolve().parents[1]


# --- mAP and its bootstrap ---------------------------------------------------------------------------------

def _problem(rng: np.random.Generator, n: int, c: int, ties: bool, ignore: bool):
    scores = rng.integers(0, 5, (n, c)) / 4.0 if ties else rng.random((n, c))
    targets = (rng.random((n, c)) < 0.3).astype(np.int64)
    mask = rng.random((n, c)) < 0.2 if ignore else None
    return scores, targets, mask


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("ignore", [False, True])
def test_map_equals_salgl_core_metrics(ties, ignore):
    metrics = pytest.importorskip("salgl_core.metrics")  # torch-based; the analysis must not import it
    rng = np.random.default_rng(ties * 2 + ignore)
    for _ in range(40):
        n, c = int(rng.integers(1, 60)), int(rng.integers(1, 7))
        scores, targets, mask = _problem(rng, n, c, ties, ignore)
        targets[:, 0] = 0  # a class without positives counts 0
        ours = mean_average_precision(scores, targets, mask)
        assert ours == pytest.approx(metrics.evaluate(scores, targets, mask)["mAP"], abs=1e-10)
    # float16 scores (what predictions/ stores) and -1 targets rank the same way in both.
    scores, targets, _ = _problem(rng, 500, 20, False, False)
    s16 = scores.astype(np.float16)
    assert mean_average_precision(s16, targets * 2 - 1) == pytest.approx(metrics.evaluate(s16, targets)["mAP"],
                                                                        abs=1e-10)


def test_weighted_map_is_map_of_the_resampled_rows():
    """A replicate's weights (image counts) give exactly metrics' mAP of the resampled images."""
    metrics = pytest.importorskip("salgl_core.metrics")
    rng = np.random.default_rng(1)
    for k in range(60):
        n, c = int(rng.integers(1, 50)), int(rng.integers(1, 6))
        scores, targets, mask = _problem(rng, n, c, ties=k % 2 == 0, ignore=k % 3 == 0)
        idx = np.sort(rng.integers(0, n, n))  # metrics' tie order on the sorted resample = reverse index order
        w = np.bincount(idx, minlength=n)[None].astype(float)
        expected = metrics.evaluate(scores[idx], targets[idx], None if mask is None else mask[idx])["mAP"]
        assert weighted_map(rank_trial(scores, targets, mask), w)[0] == pytest.approx(expected, abs=1e-10)


def test_bootstrap_replicates_are_shared_and_reproducible():
    rng = np.random.default_rng(2)
    targets = rng.random((300, 5)) < 0.3
    trials = [rng.random((300, 5)) for _ in range(3)]
    w = resample_weights(300, 120, seed=4)
    assert w.shape == (120, 300) and (w.sum(axis=1) == 300).all()
    np.testing.assert_array_equal(resample_weights(300, 60, seed=4), w[:60])  # replicate b never depends on B
    maps, reps = bootstrap_maps(trials, targets, None, 120, seed=4)
    assert reps.shape == (120, 3)
    np.testing.assert_allclose(maps, [mean_average_precision(s, targets) for s in trials], atol=1e-12)
    # The same resamples for every trial, whichever trials are analysed together.
    _, alone = bootstrap_maps(trials[1:2], targets, None, 120, seed=4)
    np.testing.assert_array_equal(alone[:, 0], reps[:, 1])
    np.testing.assert_allclose(reps[:, 2], weighted_map(rank_trial(trials[2], targets), w), atol=1e-12)


# --- seed-level statistics against scipy and by hand --------------------------------------------------------

def test_mean_ci_is_students_t_interval():
    x = [71.2, 72.0, 70.5, 71.8]
    out = stats.mean_ci(x)
    lo, hi = st.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=st.sem(x))
    assert (out["n"], out["ci_low"], out["ci_high"]) == (4, pytest.approx(lo), pytest.approx(hi))
    assert out["sd"] == pytest.approx(np.std(x, ddof=1))
    assert stats.mean_ci([70.0]) == {"n": 1, "mean": 70.0, "sd": None, "ci_low": None, "ci_high": None}
    assert stats.mean_ci([])["mean"] is None


def test_holm_hand_worked():
    # Sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, 1 x 0.04, made monotone: 0.03, 0.06, 0.06.
    assert stats.holm([0.04, 0.01, None, 0.03]) == [pytest.approx(0.06), pytest.approx(0.03), None,
                                                    pytest.approx(0.06)]
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]
    assert stats.holm([]) == []


def test_prob_improvement_is_mann_whitney():
    arm, ref = [1.0, 2.0, 3.0], [2.0, 2.0]
    assert stats.prob_improvement(arm, ref) == pytest.approx(0.5)  # (0 + 0 + .5 + .5 + 1 + 1) / 6
    rng = np.random.default_rng(0)
    a, r = rng.normal(size=5), rng.normal(size=4)
    u = st.mannwhitneyu(a, r).statistic
    assert stats.prob_improvement(a, r) == pytest.approx(u / 20)
    assert stats.prob_improvement([], r) is None


def test_sign_flip_p_is_scipys_exact_permutation_test():
    a, r = np.array([71.0, 72.5, 70.1, 73.0, 71.9]), np.array([70.2, 72.0, 70.3, 71.5, 71.0])
    ref = st.permutation_test((a, r), lambda x, y: np.mean(x - y), permutation_type="samples",
                              n_resamples=np.inf).pvalue
    assert stats.sign_flip_p(a - r) == pytest.approx(ref)
    assert stats.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)  # the floor 2 / 2^n at 3 seeds


@pytest.mark.parametrize("a, b, df", [(1.0, 1.0, 2), (0.2, 1.0, 3), (1.0, 0.2, 1), (0.5, 2.0, 30)])
def test_convolution_cdf_and_quantile(a, b, df):
    for x in (-2.0, 0.3, 1.5, 6.0):
        exact = integrate.quad(lambda z, x=x: st.norm.pdf(z) * st.t.cdf((x - a * z) / b, df), -np.inf, np.inf)[0]
        assert critical.convolution_cdf(x, a, b, df) == pytest.approx(exact, abs=1e-6)
    q = critical.convolution_quantile(0.975, a, b, df)
    assert critical.convolution_cdf(q, a, b, df) == pytest.approx(0.975, abs=1e-7)
    # Without one part, the other's distribution exactly.
    assert critical.convolution_quantile(0.975, 0.0, b, df) == pytest.approx(b * st.t.ppf(0.975, df))
    assert critical.convolution_quantile(0.975, a, 0.0, df) == pytest.approx(a * st.norm.ppf(0.975))


@pytest.mark.parametrize("df, tolerance", [(2, {0.05: 0.04, 0.05 / 3: 0.2}), (4, {0.05: 0.04, 0.05 / 3: 0.06})])
def test_calibrated_critical_values_have_their_size(df, tolerance):
    """Whatever the true seed share of Var(D), |t| > h rejects a true null at rate alpha (at 3 seeds the
    calibration is looser at Holm's smaller alphas, as studies/analysis/critical.py says)."""
    rng = np.random.default_rng(df)
    draws = 100_000
    for share in (0.1, 0.4, 0.7, 0.95):  # true share of the seed part in Var(D) = 1
        d = rng.normal(0, 1, draws)
        v_seed = share * rng.chisquare(df, draws) / df  # its estimate, df degrees of freedom
        se = np.sqrt(v_seed + 1 - share)
        for alpha, rel in tolerance.items():
            h = critical.critical(alpha, v_seed / se**2, df)
            assert np.mean(np.abs(d) / se > h) == pytest.approx(alpha, rel=rel), (share, alpha)
    # p-values invert the critical values (inside and past the alpha grid); the ends are t and normal.
    for share in (0.2, 0.6):
        for alpha in (0.05, 0.02, 0.003):
            assert critical.p_value(critical.critical(alpha, share, df), share, df) == pytest.approx(alpha)
    assert critical.critical(0.05, 1.0, df) == pytest.approx(st.t.ppf(0.975, df))
    assert critical.p_value(2.5, 0.0, df) == pytest.approx(2 * st.norm.sf(2.5))


def test_compare_without_images_is_the_paired_t_test():
    ref = {0: 71.0, 1: 72.2, 2: 70.4, 3: 71.6}
    arm = {0: 71.9, 1: 72.5, 2: 71.8, 3: 72.0}
    c = stats.compare(arm, ref)
    t = st.ttest_rel(list(arm.values()), list(ref.values()))
    ci = t.confidence_interval(0.95)
    assert c["paired"] and c["interval"] == "seeds"
    assert (c["p"], c["ci_low"], c["ci_high"]) == (pytest.approx(t.pvalue), pytest.approx(ci.low),
                                                   pytest.approx(ci.high))
    assert c["diff"] == pytest.approx(np.mean(list(arm.values())) - np.mean(list(ref.values())))


def test_compare_unequal_seeds_falls_back_to_welch_and_student():
    ref = {0: 71.0, 1: 72.2, 2: 70.4}
    arm = {0: 71.9, 5: 73.5, 7: 72.8, 8: 72.0}
    c = stats.compare(arm, ref)
    t = st.ttest_ind(list(arm.values()), list(ref.values()), equal_var=False)
    assert not c["paired"] and "unpaired" in c["notes"][0]
    assert c["p"] == pytest.approx(t.pvalue)
    assert (c["ci_low"], c["ci_high"]) == tuple(pytest.approx(v) for v in t.confidence_interval(0.95))
    one = stats.compare({9: 73.0}, ref)  # a single seed has no spread of its own: Student's pooled test
    assert one["p"] == pytest.approx(st.ttest_ind([73.0], list(ref.values())).pvalue)


def test_image_variance_hand_worked():
    rng = np.random.default_rng(0)
    common, e1, e2 = rng.normal(0, 2.0, (3, 20000))
    ref = [np.zeros(20000), np.zeros(20000)]
    # Two seeds whose differences share `common` (variance 4): that shared part is what the seeds miss.
    v = stats.image_variance([common + e1, common + e2], ref, paired=True)
    assert v == pytest.approx(np.cov(common + e1, common + e2)[0, 1])
    assert v == pytest.approx(4.0, rel=0.05)
    # One seed: all of its image variance (nothing else can hold it).
    assert stats.image_variance([common + e1], ref[:1], paired=True) == pytest.approx(np.var(common + e1, ddof=1))
    # Unpaired, one trial per arm: Var(X_a - X_r) from the bootstrap covariance matrix.
    x, y = common + e1, 0.5 * common + e2
    assert stats.image_variance([x], [y], paired=False) == pytest.approx(np.var(x - y, ddof=1))


def test_detectable_difference_has_the_stated_power():
    """Without an image part the figure is exact: the paired t-test has 80% power at it (noncentral t)."""
    for n, sd in ((3, 0.4), (5, 1.0), (10, 0.2)):
        se, df, alpha = sd / math.sqrt(n), n - 1, 0.05 / 3
        mde = stats.detectable(0.0, se, df, alpha)
        crit = st.t.ppf(1 - alpha / 2, df)
        power = st.nct.sf(crit, df, mde / se) + st.nct.cdf(-crit, df, mde / se)
        assert power == pytest.approx(0.8, abs=1e-4), (n, power)
        k = stats.seeds_needed(sd, 0.0, True, alpha)
        assert stats.detectable(0.0, sd / math.sqrt(k), k - 1, alpha) <= stats.TARGET
        assert k == 2 or stats.detectable(0.0, sd / math.sqrt(k - 1), k - 2, alpha) > stats.TARGET
    # The validation set's noise does not shrink with seeds: past a point no seed count suffices.
    assert stats.seeds_needed(0.3, 0.25, True, 0.05) is None


def test_verdicts():
    base = {"n": 3, "n_reference": 3, "interval": "seeds", "se_seeds": 0.1, "se_images": None, "sd_seed": 0.2,
            "mean": 72.0, "mde": 0.9, "seeds_for_target": 12, "p": 0.001}
    better = stats.verdict({**base, "diff": 1.234, "ci_low": 0.5, "ci_high": 2.0}, 0.003)
    assert better == "better by 1.23 [0.50, 2.00] mAP (Holm p = 0.003)"
    worse = stats.verdict({**base, "diff": -1.2, "ci_low": -2.0, "ci_high": -0.4}, 0.01)
    assert worse.startswith("worse by 1.20 [0.40, 2.00] mAP")
    none = stats.verdict({**base, "diff": 0.3, "ci_low": -0.5, "ci_high": 1.1, "p": 0.02}, 0.06)
    assert none == ("no detectable difference (+0.30 [-0.50, 1.10] mAP); with these seeds the smallest detectable "
                    "difference at 80% power is 0.90 mAP, about 12 seeds per arm would detect a difference of 0.5 mAP")
    assert "no usable finished trials" in stats.verdict({**base, "n": 0}, None)


# --- simulation: coverage and false positives ---------------------------------------------------------------

@pytest.mark.parametrize("n_seeds, common, studies, band", [
    (3, 0.3, 1500, (0.93, 0.97)),
    (3, 0.8, 1500, (0.93, 0.97)),
    (5, 0.5, 1500, (0.93, 0.97)),
    (2, 0.5, 500, (0.94, 0.995)),  # the conservative stand-in
])
def test_gaussian_simulation_coverage(n_seeds, common, studies, band):
    """The procedure itself: 95% intervals cover the true difference (0 or 1 mAP) in 93-97% of the studies
    (2 seeds: the conservative fiducial stand-in, 95-99%)."""
    rng = np.random.default_rng(n_seeds * 10 + int(common * 10))
    hits = 0
    for k in range(studies):
        effect = 0.0 if k % 2 else 1.0
        (ref, rr), (arm, ar) = gaussian_study(rng, n_seeds, [0.0, effect], common)
        c = stats.compare(arm, ref, ar, rr)
        hits += c["ci_low"] <= effect <= c["ci_high"]
    assert band[0] <= hits / studies <= band[1], hits / studies


def _at_most(rate: float, bound: float, n: int) -> bool:
    """`rate` over n simulated studies is consistent with a true rate <= bound (one-sided, 95%)."""
    return rate <= bound + 1.645 * math.sqrt(bound * (1 - bound) / n)


@pytest.mark.slow
def test_gaussian_simulation_false_positives_after_holm():
    """Three arms no different from the reference, 3 seeds: some arm is called different in at most 5% of
    studies (up to simulation error: a near-exact test with Holm sits just under 5%)."""
    rng = np.random.default_rng(5)
    hits, total = 0, 2500
    for _ in range(total):
        (ref, rr), *arms = gaussian_study(rng, 3, [0.0] * 4, common=0.5)
        ps = [stats.compare(a, ref, ar, rr)["p"] for a, ar in arms]
        hits += any(p < 0.05 for p in stats.holm(ps))
    assert _at_most(hits / total, 0.05, total), hits / total


N_IMG, N_CLS = 150, 6
PREVALENCE = np.linspace(0.15, 0.4, N_CLS)
# Logit scale. Seeds: a seed's effect shared by the arms (matched seeds) plus each arm's own; images: a
# difficulty common to all trials, each arm's own image-by-image strengths (the same for all its seeds:
# the part seeds cannot average away) and each trial's own noise. At 3-5 seeds this puts 70-80% of Var(D)
# in the seed part, roughly what COCO ablations show.
NOISE = {"seed": 0.1, "arm_seed": 0.1, "image": 1.0, "arm_image": 0.3, "trial": 0.5}


def _scores(rng, y, u, v, quality):
    logit = quality * y + u + v + rng.normal(0, NOISE["trial"], y.shape) - 1.0
    return (1 / (1 + np.exp(-logit))).astype(np.float16)


def _study(rng, n_seeds: int, effects: list[float], resamples: int = 100):
    """A study on a fresh validation set: per arm ({seed: mAP}, {seed: bootstrap replicates})."""
    y = rng.random((N_IMG, N_CLS)) < PREVALENCE
    u = rng.normal(0, NOISE["image"], y.shape)
    h = rng.normal(0, NOISE["seed"], n_seeds)
    trials = []
    for d in effects:
        v = rng.normal(0, NOISE["arm_image"], y.shape)
        g = rng.normal(0, NOISE["arm_seed"], n_seeds)
        trials += [_scores(rng, y, u, v, 1.5 + d + h[s] + g[s]) for s in range(n_seeds)]
    maps, reps = bootstrap_maps(trials, y, None, resamples, seed=int(rng.integers(1 << 31)))
    cols = [range(a * n_seeds, (a + 1) * n_seeds) for a in range(len(effects))]
    return [({s: maps[j] for s, j in enumerate(c)}, {s: reps[:, j] for s, j in enumerate(c)}) for c in cols]


def _true_difference(rng, effect: float, draws: int = 1500) -> float:
    """E[mAP(arm) - mAP(reference)] over seeds and validation sets. mAP is a mean of per-class APs, so
    `draws` independent studies side by side (draws x C columns) give the expectation in one AP each."""
    y = rng.random((N_IMG, draws * N_CLS)) < np.tile(PREVALENCE, draws)
    u = rng.normal(0, NOISE["image"], y.shape)
    h = np.repeat(rng.normal(0, NOISE["seed"], draws), N_CLS)
    maps = []
    for d in (effect, 0.0):
        q = 1.5 + d + h + np.repeat(rng.normal(0, NOISE["arm_seed"], draws), N_CLS)
        maps.append(mean_average_precision(_scores(rng, y, u, rng.normal(0, NOISE["arm_image"], y.shape), q), y))
    return maps[0] - maps[1]


@pytest.mark.slow
def test_simulated_intervals_cover_the_truth():
    """End to end on images (AP, the joint bootstrap): 95% intervals cover the true difference in 93-97% of
    800 simulated studies."""
    rng = np.random.default_rng(2024)
    covered, total = 0, 0
    for effect in (0.0, 0.3):
        truth = _true_difference(rng, effect) if effect else 0.0  # zero by symmetry
        for n_seeds in (3, 5):
            for _ in range(200):
                (ref, ref_reps), (arm, arm_reps) = _study(rng, n_seeds, [0.0, effect])
                c = stats.compare(arm, ref, arm_reps, ref_reps)
                covered += c["ci_low"] <= truth <= c["ci_high"]
                total += 1
    assert 0.93 <= covered / total <= 0.97, covered / total


@pytest.mark.slow
def test_simulated_false_positive_rate_after_holm():
    """End to end on images: three arms no different from the reference, some arm called better or worse in
    at most 5% of 600 studies (up to simulation error)."""
    rng = np.random.default_rng(7)
    hits, total = 0, 600
    for _ in range(total):
        arms = _study(rng, 3, [0.0, 0.0, 0.0, 0.0])
        cs = [stats.compare(a, arms[0][0], ar, arms[0][1]) for a, ar in arms[1:]]
        hits += any(p is not None and p < 0.05 for p in stats.holm([c["p"] for c in cs]))
    assert _at_most(hits / total, 0.05, total), hits / total


# --- files and whole runs -----------------------------------------------------------------------------------

def _run(tmp_path: Path, rows: list[tuple], axis: str = "num_scenes", values=(1, 4, 8), paper: int = 4) -> Path:
    """A minimal export: study.json and trials.csv with (trial_id, status, seed, value, best_mAP_ema) rows."""
    run = tmp_path / "scene_count" / "r"
    run.mkdir(parents=True)
    (run / schema.STUDY_JSON).write_text(json.dumps({
        "schema_version": 1, "study": "scene_count", "run": "r", "axis": axis, "axis_values": list(values),
        "paper_config": {axis: paper}, "status": "FINISHED"}))
    with open(run / schema.TRIALS_CSV, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "status", "seed", "is_paper_config", axis, schema.REPORTED_METRIC, "error"])
        for tid, status, seed, value, metric in rows:
            w.writerow([tid, status, seed, value == paper, value, "" if metric is None else metric, ""])
    return run


def test_predictions_files_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    scores, targets = rng.random((40, 3)), (rng.random((40, 3)) < 0.3).astype(int)
    ignore = rng.random((40, 3)) < 0.1
    ids = [f"2007_{i:06d}" for i in range(40)]  # VOC ids are text
    p = predictions.save_predictions(tmp_path, "abc_1", scores, ids)
    t = predictions.save_targets(tmp_path, targets, ignore, ids)
    assert p == tmp_path / schema.PREDICTIONS_DIR / "abc_1.npz" and t.name == schema.TARGETS_FILE
    with np.load(p, allow_pickle=False) as z:
        assert z["scores"].dtype == np.float16 and z["image_ids"].tolist() == ids
        np.testing.assert_allclose(z["scores"], scores, atol=1e-3)
    with np.load(t, allow_pickle=False) as z:
        assert z["targets"].dtype == np.int8 and z["ignore"].dtype == np.bool_
        np.testing.assert_array_equal(z["targets"], targets)
    assert not list((tmp_path / schema.PREDICTIONS_DIR).glob(".*"))  # no temporary files left
    with pytest.raises(ValueError, match="cannot name a file"):
        predictions.save_predictions(tmp_path, "../x", scores, ids)
    with pytest.raises(ValueError, match="NaN"):
        predictions.save_predictions(tmp_path, "t", np.full((2, 2), np.nan), [1, 2])
    with pytest.raises(ValueError, match="one per score row"):
        predictions.save_predictions(tmp_path, "t", scores, ids[:-1])


def test_predictions_size_for_coco_val2014_as_documented(tmp_path):
    """results/README.md states the per-trial size for COCO val2014: 40,504 images x 80 classes."""
    scores = np.random.default_rng(0).random((40504, 80))
    size = predictions.save_predictions(tmp_path, "t", scores, np.arange(40504)).stat().st_size
    assert size == pytest.approx(40504 * 80 * 2 + 40504 * 8, rel=0.01)  # float16 scores + int64 ids
    assert f"{size / 1e6:.1f} MB" in (REPO / "results" / "README.md").read_text()


def _ablation_with_predictions(tmp_path: Path, rows: list[tuple], shuffle: str | None = None) -> Path:
    """A run whose trials (trial_id, status, seed, value) saved predictions; arm 8 is truly better."""
    rng = np.random.default_rng(3)
    y = rng.random((120, 4)) < 0.3
    ids = np.arange(120) + 1000
    u = rng.normal(0, 0.8, y.shape)  # image difficulty, common to all trials
    scores = {r[0]: (y * (1.0 + 1.0 * (r[3] == 8)) + u + rng.normal(0, 0.2, y.shape)).astype(np.float16)
              for r in rows}
    run = _run(tmp_path, [(*r, mean_average_precision(scores[r[0]], y)) for r in rows])
    predictions.save_targets(run, y, None, ids)
    for tid, s in scores.items():
        order = rng.permutation(120) if tid == shuffle else np.arange(120)  # ids in another order: realigned
        predictions.save_predictions(run, tid, s[order], ids[order])
    return run


def test_analyze_run_with_predictions(tmp_path):
    rows = [(f"t{v}{s}", "FINISHED", s, v) for v in (1, 4, 8) for s in range(3)]
    run = _ablation_with_predictions(tmp_path, rows, shuffle="t80")
    a = analyze.analyze_run(run, resamples=200, seed=1)
    assert a["kind"] == "ablation" and a["reference"] == 4 and not a["notes"], a["notes"]
    assert [x["value"] for x in a["arms"]] == [1, 4, 8] and a["arms"][1]["is_reference"]
    trial = next(t for t in a["trials"] if t["trial_id"] == "t80")
    assert trial["mAP_predictions"] == pytest.approx(trial["mAP"], abs=1e-9)  # realigned by image id
    assert trial["ci_low"] < trial["mAP"] < trial["ci_high"]
    c8 = next(c for c in a["comparisons"] if c["value"] == 8)
    assert c8["interval"] == "seeds+images" and c8["paired"] and c8["se_images"] > 0
    assert c8["diff"] > 0 and c8["verdict"].startswith("better by"), c8["verdict"]
    assert a["bootstrap"]["trials_with_predictions"] == 9 and a["bootstrap"]["images"] == 120
    analyze.write_analysis(run, a)
    back = json.loads((run / schema.ANALYSIS_JSON).read_text())
    assert set(back) == set(schema.ANALYSIS_KEYS)
    with open(run / schema.COMPARISONS_CSV, newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == schema.COMPARISON_COLUMNS and [r["value"] for r in table] == ["1", "8"]
    assert float(table[1]["diff"]) == pytest.approx(c8["diff"])


def test_analyze_run_edge_cases(tmp_path):
    rows = [("r0", "FINISHED", 0, 4, 71.0), ("r1", "FINISHED", 1, 4, 72.0), ("r2", "FINISHED", 2, 4, 71.4),
            # an arm whose trials all failed
            ("f0", "ERROR", 0, 1, None), ("f1", "DIVERGED", 1, 1, None), ("f2", "ERROR", 2, 1, None),
            # unequal seeds: 0, 5, 6 against the reference's 0, 1, 2
            ("u0", "FINISHED", 0, 8, 72.5), ("u5", "FINISHED", 5, 8, 73.1), ("u6", "FINISHED", 6, 8, 72.2),
            ("u7", "RUNNING", 7, 8, None)]
    a = analyze.analyze_run(_run(tmp_path, rows))
    by = {c["value"]: c for c in a["comparisons"]}
    assert by[1]["n"] == 0 and by[1]["p"] is None
    assert by[1]["verdict"].startswith("no comparison: this arm has no usable finished trials")
    assert "ERROR 2" in by[1]["verdict"] and "DIVERGED 1" in by[1]["verdict"]
    assert not by[8]["paired"] and by[8]["n"] == 3 and "unpaired" in by[8]["notes"][0]
    assert by[8]["p"] == pytest.approx(st.ttest_ind([72.5, 73.1, 72.2], [71.0, 72.0, 71.4], equal_var=False).pvalue)
    assert by[8]["interval"] == "seeds" and by[1]["p_holm"] is None
    assert any("no predictions" in n for n in a["notes"])
    assert a["arms"][0]["statuses"] == {"ERROR": 2, "DIVERGED": 1}
    table = summary.format_table(a)
    assert "reference num_scenes = 4" in table and "8: " in table


def test_one_seed_gives_the_image_level_interval_only(tmp_path):
    rows = [("a", "FINISHED", 0, 4), ("b", "FINISHED", 0, 8), ("c", "FINISHED", 0, 1)]
    a = analyze.analyze_run(_ablation_with_predictions(tmp_path, rows), resamples=200)
    c = next(c for c in a["comparisons"] if c["value"] == 8)
    assert c["p"] is None and c["p_holm"] is None and c["interval"] == "images"
    assert c["ci_low"] < c["diff"] < c["ci_high"]
    assert c["verdict"].startswith("no seed-level test (one seed per arm)") and "image-level 95% interval" in \
        c["verdict"]


def test_constant_metric(tmp_path):
    rows = [(f"t{v}{s}", "FINISHED", s, v, 50.0) for v in (1, 4) for s in range(3)]
    a = analyze.analyze_run(_run(tmp_path, rows, values=(1, 4)))
    c = a["comparisons"][0]
    # Exactly 0 on every seed is no evidence of a difference: p = 1, and the arm stays in Holm's family.
    assert (c["diff"], c["ci_low"], c["ci_high"], c["p"], c["p_holm"]) == (0.0, 0.0, 0.0, 1.0, 1.0)
    assert c["verdict"].startswith("no difference: each seed's difference to the reference is exactly 0 (both arms "
                                   "average 50.00 mAP); seeds only: this export has no predictions/")
    assert c["holm"] == "in the family of 1" and c["mde"] is None
    analyze.write_analysis(a_dir := tmp_path / "out", a)
    assert json.loads((a_dir / schema.ANALYSIS_JSON).read_text())["comparisons"][0]["p"] == 1.0


def test_the_same_nonzero_difference_on_every_seed_leaves_holm_with_its_reason(tmp_path):
    rows = [(f"t{v}{s}", "FINISHED", s, v, 50.0 + s + (v == 1)) for v in (1, 4, 8) for s in range(3)]
    a = analyze.analyze_run(_run(tmp_path, rows))
    c1, c8 = a["comparisons"]
    assert c1["p"] is None and c1["p_holm"] is None and c1["diff"] == pytest.approx(1.0)
    assert c1["holm"] == ("in the family of 2 as p = 1, untested: the same difference on every seed and no spread "
                          "at all: no test is possible")
    assert c1["verdict"].startswith("the same difference on every seed and no spread at all: no test is possible; the "
                                    "difference over seeds is +1.00 mAP")
    assert c8["holm"] == "in the family of 2"
    assert "1: Holm: in the family of 2 as p = 1, untested: the same difference" in summary.format_table(a)


def test_committed_export_and_cli(tmp_path, capsys):
    """The real graph_depth export without its predictions/: as an export from before study.json said it saved
    them, seed-level comparisons, written and printed; as it is, no comparison tested (a missing folder)."""
    src = REPO / "results" / "graph_depth" / "default"
    if not (src / schema.STUDY_JSON).is_file():
        pytest.skip("results/graph_depth/default is not in this checkout")
    run = tmp_path / "gd"
    run.mkdir()
    (run / schema.TRIALS_CSV).write_bytes((src / schema.TRIALS_CSV).read_bytes())
    meta = json.loads((src / schema.STUDY_JSON).read_text())
    assert meta.pop("predictions") == schema.PREDICTIONS_DIR
    (run / schema.STUDY_JSON).write_text(json.dumps(meta))
    assert analyze.main([str(run), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "reference gnn_steps = 3" in out and (run / schema.COMPARISONS_CSV).is_file()
    a = json.loads((run / schema.ANALYSIS_JSON).read_text())
    assert len(a["comparisons"]) == 3 and all(c["interval"] == "seeds" for c in a["comparisons"])
    assert all(c["fallback"].startswith("seeds only: this export has no predictions/") for c in a["comparisons"])
    (run / schema.STUDY_JSON).write_bytes((src / schema.STUDY_JSON).read_bytes())
    a = analyze.analyze_run(run, 50)
    assert all(c["p"] is None and c["fallback"].startswith("no test: predictions/targets.npz is missing though "
                                                           "study.json says") for c in a["comparisons"])
    assert analyze.main([str(tmp_path / "nothing")]) == 2
    assert "study.json" in capsys.readouterr().err


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_look_at_an_export_never_rewrites_it(tmp_path, capsys):
    """`python -m studies.analyze RUN` on an unchanged committed export writes nothing (its analysis differs only in
    the bootstrap's clock); once trials.csv loses a row, it rewrites both files, and a second run is up to date."""
    src = REPO / "results" / "scene_count" / "default"
    if not (src / schema.ANALYSIS_JSON).is_file():
        pytest.skip("results/scene_count/default is not in this checkout")
    run = tmp_path / "sc"
    shutil.copytree(src, run)
    before = _files(run)
    assert analyze.main([str(run)]) == 0
    assert "are up to date (nothing written)" in capsys.readouterr().out
    assert _files(run) == before  # bytes and mtimes
    rows = (run / schema.TRIALS_CSV).read_text().splitlines(keepends=True)
    (run / schema.TRIALS_CSV).write_text("".join(rows[:-1]))
    assert analyze.main([str(run)]) == 0
    assert f"wrote {run / schema.ANALYSIS_JSON}" in capsys.readouterr().out
    a = json.loads((run / schema.ANALYSIS_JSON).read_text())
    assert len(a["trials"]) == len(rows) - 2 and (run / schema.ANALYSIS_JSON).read_bytes() != before[
        schema.ANALYSIS_JSON][0]
    after = _files(run)
    assert analyze.main([str(run)]) == 0
    assert "up to date" in capsys.readouterr().out and _files(run) == after
    # A damaged comparisons.csv is not up to date, whatever analysis.json holds.
    (run / schema.COMPARISONS_CSV).write_text("axis\n")
    assert not analyze.up_to_date(run, analyze.analyze_run(run))


def test_joint_search_importances(tmp_path):
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("sklearn")  # fANOVA's random forest
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    run = tmp_path / "tune" / "r"
    run.mkdir(parents=True)
    (run / schema.STUDY_JSON).write_text(json.dumps({
        "schema_version": 1, "study": "tune", "run": "r", "axis": None, "status": "FINISHED",
        "optuna_storage": schema.OPTUNA_JOURNAL, "search_space": {"lr": {}, "gnn_steps": {}}}))
    storage = JournalStorage(JournalFileBackend(str(run / schema.OPTUNA_JOURNAL)))
    study = optuna.create_study(study_name="tune/r", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 10 * t.suggest_float("lr", 0, 1) + 0.1 * t.suggest_int("gnn_steps", 0, 4), n_trials=40)
    with open(run / schema.TRIALS_CSV, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "status", "seed", "is_paper_config", "lr", "gnn_steps", schema.REPORTED_METRIC])
        for t in study.trials:
            w.writerow([f"t{t.number}", "FINISHED", 0, t.number == 0, t.params["lr"], t.params["gnn_steps"], t.value])
    a = analyze.analyze_run(run)
    assert a["kind"] == "search" and a["comparisons"] == []
    for key in ("fanova", "ped_anova"):
        imp = a["search"]["importances"][key]
        assert set(imp) == {"lr", "gnn_steps"} and max(imp, key=imp.get) == "lr"
    assert a["search"]["best"]["trial_id"] == f"t{study.best_trial.number}"
    assert a["search"]["best"]["config"]["lr"] == str(study.best_trial.params["lr"])
    assert "fanova" in summary.format_table(a)
    # A damaged journal costs the importances, named, not the analysis.
    (run / schema.OPTUNA_JOURNAL).write_bytes(b"\xff\xfe" * 64)
    a = analyze.analyze_run(run)
    assert a["search"]["importances"] == {} and a["search"]["best"]["trial_id"] == f"t{study.best_trial.number}"
    assert any(n.startswith(schema.OPTUNA_JOURNAL) and "no parameter importances" in n for n in a["notes"]), a["notes"]


def test_study_json_that_cannot_say_what_the_arms_are_is_refused_by_name(tmp_path):
    run = _run(tmp_path, [("a", "FINISHED", 0, 4, 70.0)])
    good = json.loads((run / schema.STUDY_JSON).read_text())
    for key, bad, said in (("axis_values", 5, "its axis_values 5 is not a list"),
                           ("axis_values", "148", "its axis_values '148' is not a list"),
                           ("paper_config", "4", "its paper_config '4' is not a mapping"),
                           ("axis", ["num_scenes"], "its axis ['num_scenes'] is not a config field's name"),
                           ("seeds", [0, "1"], "its seeds [0, '1'] is not a list of integer seeds")):
        (run / schema.STUDY_JSON).write_text(json.dumps({**good, key: bad}))
        with pytest.raises(ValueError, match="study.json: " + re.escape(said)):
            analyze.analyze_run(run)


@pytest.mark.parametrize("paper, reference, note", [("4", 4, False), (4.0, 4, False), (True, None, True)])
def test_the_reference_arm_is_one_of_the_study_values_of_its_own_type(tmp_path, paper, reference, note):
    """paper_config "4" or 4.0 names the arm 4; True is not the arm 1 (True == 1 in Python): it is named as none
    of the study's values, and nothing is compared with a reference that is not there."""
    rows = [(f"t{v}{s}", "FINISHED", s, v, 70.0 + v + s) for v in (1, 4, 8) for s in range(3)]
    run = _run(tmp_path, rows)
    meta = json.loads((run / schema.STUDY_JSON).read_text())
    (run / schema.STUDY_JSON).write_text(json.dumps({**meta, "paper_config": {"num_scenes": paper}}))
    a = analyze.analyze_run(run)
    assert a["reference"] == reference and type(a["reference"]) is type(reference)
    assert any("paper_config num_scenes = True is none of" in n for n in a["notes"]) == note
    if note:
        assert a["comparisons"] == [] and not any(arm["is_reference"] for arm in a["arms"])


def test_readme_documents_the_analysis_files():
    text = (REPO / "results" / "README.md").read_text()
    section = text[text.index("### analysis.json"):]
    for key in schema.ANALYSIS_KEYS:
        assert f"`{key}`" in section, key
    assert ", ".join(schema.COMPARISON_COLUMNS) in " ".join(section.split())
    predictions = text[text.index(f"### {schema.PREDICTIONS_DIR}/"):]
    assert f"`{schema.PREDICTIONS_DIR}/{schema.TARGETS_FILE}`" in predictions
    for name in (*schema.PREDICTION_ARRAYS, *schema.TARGET_ARRAYS):
        assert f"`{name}`" in predictions, name


@pytest.mark.slow
def test_analysis_imports_no_torch_ray_optuna_or_streamlit():
    code = ("import sys, studies.analysis.analyze; heavy = [m for m in ('torch', 'ray', 'optuna', 'streamlit') "
            "if m in sys.modules]; assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_a_reported_mAP_the_predictions_cannot_give_is_noted_but_float16_ties_are_not(tmp_path):
    rng = np.random.default_rng(5)
    y = rng.random((60, 3)) < 0.4
    y[0] = True  # every class has a positive
    fine = (y + rng.normal(0, 0.5, y.shape)).astype(np.float16)
    tied = np.round(fine.astype(float), 1).astype(np.float16)  # coarse scores: many ties within a class
    run = _run(tmp_path, [("ok", "FINISHED", 0, 4, mean_average_precision(fine, y)),
                          ("wrong", "FINISHED", 0, 1, mean_average_precision(fine, y) - 5),
                          ("ties", "FINISHED", 0, 8, mean_average_precision(tied, y) + 1)])
    predictions.save_targets(run, y, None, np.arange(60))
    for tid, s in (("ok", fine), ("wrong", fine), ("ties", tied)):
        predictions.save_predictions(run, tid, s, np.arange(60))
    notes = analyze.analyze_run(run, resamples=50)["notes"]
    assert not any("(trial ok" in n for n in notes)
    assert any("predictions/wrong.npz (trial wrong, seed 0)" in n and "trials.csv reports" in n and "left out" in n
               for n in notes), notes
    assert not any("(trial ties" in n for n in notes), notes  # within what its float16 ties allow


def _curve_run(tmp_path: Path, curves: dict[str, list[float]]) -> Path:
    run = _run(tmp_path, [(tid, "FINISHED", i, 4, max(c)) for i, (tid, c) in enumerate(curves.items())])
    with open(run / schema.EPOCHS_CSV, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "epoch", "mAP_ema"])
        for tid, c in curves.items():
            w.writerows([tid, e + 1, x] for e, x in enumerate(c))
    return run


def test_the_budget_check_reads_the_reference_arms_learning_curves(tmp_path):
    # Running best EMA mAP: a dip does not count as a fall; the rise over the last 3 of 6 epochs is averaged.
    run = _curve_run(tmp_path / "a", {"r0": [50, 60, 70, 69, 70.2, 70.3], "r1": [50, 60, 71, 71.1, 70, 71.3]})
    b = analyze.analyze_run(run, resamples=10)["budget"]
    assert b["epochs"] == 6 and b["trials"] == 2 and b["flat"] is True
    assert b["gains"] == pytest.approx([0.3, 0.3]) and b["gain"] == pytest.approx(0.3)
    assert "budget: flat" in summary.format_table(analyze.analyze_run(run, resamples=10))
    climbing = analyze.analyze_run(_curve_run(tmp_path / "b", {"r0": [50, 55, 60, 65, 70]}), resamples=10)["budget"]
    assert climbing["flat"] is False and climbing["gain"] == pytest.approx(15)
    assert "still climbing" in climbing["verdict"]
    # A trial stopped early (early_stop_patience) is judged at its own last epoch, a too-short one left out.
    curves = {"r0": [50, 60, 61, 61, 61, 61, 61], "r1": [50, 60, 70, 71, 71], "r2": [40, 50]}
    mixed = analyze.analyze_run(_curve_run(tmp_path / "e", curves), resamples=10)["budget"]
    assert mixed["epochs"] == 7 and mixed["trials"] == 2 and mixed["gains"] == pytest.approx([0.0, 11.0])
    short = analyze.analyze_run(_curve_run(tmp_path / "c", {"r0": [50, 55, 60]}), resamples=10)["budget"]
    assert short["flat"] is None and "cannot tell" in short["verdict"]
    assert analyze.analyze_run(_run(tmp_path / "d", [("r0", "FINISHED", 0, 4, 70.0)]))["budget"]["flat"] is None


def test_a_run_stopped_before_any_trial_finished_is_not_called_damaged(tmp_path):
    """Ctrl-C before the first trial ends: no predictions yet is what such a run is, not a missing file to restore."""
    run = tmp_path / "scene_count" / "early"
    shutil.copytree(REPO / "results/scene_count/default", run)
    shutil.rmtree(run / schema.PREDICTIONS_DIR)
    with open(run / schema.TRIALS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["status"] = "RUNNING"
    with open(run / schema.TRIALS_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    result = analyze.analyze_run(run)
    assert "no trial has finished yet: no interval and no comparison" in result["notes"]
    assert not [n for n in result["notes"] if "missing" in n or "restore" in n], result["notes"]
    assert result["bootstrap"]["trials_with_predictions"] == 0
