import math
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, normalized_mutual_info_score

from salgl_core.metrics import (
    METRIC_PROTOCOL,
    average_precision,
    contingency,
    evaluate,
    mean_average_precision,
    mean_average_precision_present,
    metric_protocol,
    nmi,
    threshold_metrics,
)


def _random_problem(rng, n, c):
    scores = rng.random((n, c))
    targets = (rng.random((n, c)) < 0.3).astype(np.int64)
    targets[0] = 1  # every class has a positive and a negative
    targets[1] = 0
    return scores, targets


def _voc12_ap_loop(scores, targets):
    """Independent per-class oracle: the VOC2012 envelope with explicit recall/precision curves."""
    order = np.argsort(scores, kind="stable")[::-1]  # official argsort(...)[::-1] tie order
    hits = targets[order] == 1
    npos = hits.sum()
    if npos == 0:
        return 0.0
    tp = np.cumsum(hits)
    recall = np.concatenate(([0.0], tp / npos, [1.0]))
    precision = np.concatenate(([0.0], tp / np.arange(1, len(hits) + 1), [0.0]))
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return float(sum((recall[i + 1] - recall[i]) * precision[i + 1] for i in range(len(recall) - 1)))


@pytest.mark.parametrize("shape", [(7, 1), (50, 3), (300, 20), (2000, 80)])
def test_stepwise_ap_matches_sklearn(shape):
    rng = np.random.default_rng(shape[0])
    scores, targets = _random_problem(rng, *shape)
    ours = average_precision(scores, targets, interpolated=False)
    ref = [average_precision_score(targets[:, c], scores[:, c]) for c in range(shape[1])]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_stepwise_ap_matches_sklearn_on_torch_input():
    g = torch.Generator().manual_seed(0)
    n, c = 400, 12
    # Distinct float32 scores: a random permutation of a grid, so no ties.
    scores = (torch.randperm(n * c, generator=g).float() / (n * c)).reshape(n, c).requires_grad_()
    targets = (torch.rand(n, c, generator=g) < 0.25).float()
    targets[0] = 1
    ours = average_precision(scores, targets, interpolated=False)
    s, t = scores.detach().numpy().astype(np.float64), targets.numpy()
    ref = [average_precision_score(t[:, k], s[:, k]) for k in range(c)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    # bool and -1/1 targets mean the same thing.
    for alt in (targets.bool(), targets * 2 - 1):
        np.testing.assert_allclose(average_precision(scores, alt, interpolated=False), ref, atol=1e-12)


def test_interpolated_ap_matches_loop_oracle_with_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=(120, 9)) / 5.0  # heavy ties: the tie order matters
    targets = (rng.random((120, 9)) < 0.4).astype(np.int64)
    targets[:, 4] = 0
    ref = [_voc12_ap_loop(scores[:, c], targets[:, c]) for c in range(9)]
    np.testing.assert_allclose(average_precision(scores, targets), ref, rtol=0, atol=1e-12)


def test_interpolated_ap_hand_worked_envelope():
    # Ranked by score (0.9 .. 0.4) the labels are P N N P P N; rows are shuffled to exercise the sort.
    # precision at ranks 1..6: 1/1, 1/2, 1/3, 2/4, 3/5, 3/6
    # step-wise AP = (1 + 2/4 + 3/5) / 3 = 2.1 / 3 = 0.7
    # envelope (max over deeper ranks): 1, 3/5, 3/5, 3/5, 3/5, 1/2
    # interpolated AP = (1 + 3/5 + 3/5) / 3 = 2.2 / 3 = 11/15
    scores = np.array([0.6, 0.9, 0.4, 0.7, 0.5, 0.8])[:, None]
    targets = np.array([1, 1, 0, 0, 1, 0])[:, None]  # 0.9 P, 0.8 N, 0.7 N, 0.6 P, 0.5 P, 0.4 N
    ap = average_precision(scores, targets)
    step = average_precision(scores, targets, interpolated=False)
    assert ap[0] == pytest.approx(11 / 15, abs=1e-15)
    assert step[0] == pytest.approx(0.7, abs=1e-15)
    assert ap[0] != pytest.approx(step[0])


def test_official_tie_order_hand_worked():
    # Rows 1 (positive) and 2 (negative) tie at 0.5. argsort(...)[::-1] ranks the tie in reverse index
    # order: row 0 (P, 0.9), row 2 (N), row 1 (P), row 3 (N).
    # precision at positives: 1/1, 2/3 -> step AP = (1 + 2/3) / 2 = 5/6
    # envelope at the positives: 1, 2/3 -> interpolated AP = 5/6 as well.
    # Forward (index) order would give P P N N and AP = 1.
    scores = np.array([[0.9], [0.5], [0.5], [0.1]])
    targets = np.array([[1], [1], [0], [0]])
    assert average_precision(scores, targets)[0] == pytest.approx(5 / 6, abs=1e-15)
    assert average_precision(scores, targets, interpolated=False)[0] == pytest.approx(5 / 6, abs=1e-15)
    # Swapping the tied rows puts the positive later in index order, hence first: AP = 1.
    assert average_precision(scores, targets[[0, 2, 1, 3]])[0] == pytest.approx(1.0, abs=1e-15)


def test_zero_positive_class_counts_in_map_not_in_present():
    scores = np.array([[0.9, 0.2, 0.3], [0.1, 0.8, 0.7], [0.4, 0.6, 0.2]])
    targets = np.array([[1, 0, -1], [0, 1, 0], [0, 0, -1]])  # class 2 has no positive
    ap = average_precision(scores, targets)
    np.testing.assert_allclose(ap, [1.0, 1.0, 0.0])
    assert mean_average_precision(scores, targets) == pytest.approx(2 / 3)
    assert mean_average_precision_present(scores, targets) == pytest.approx(1.0)
    assert math.isnan(mean_average_precision_present(scores, np.zeros_like(targets)))
    out = evaluate(scores, targets)
    assert out["mAP"] == pytest.approx(200 / 3)
    assert out["mAP_present"] == pytest.approx(100.0)


@pytest.mark.parametrize("interpolated", [True, False])
def test_ignore_equals_ap_on_subset(interpolated):
    rng = np.random.default_rng(7)
    n, c = 200, 6
    scores = rng.integers(0, 20, size=(n, c)) / 19.0  # ties, so the kept rows' order matters too
    targets = (rng.random((n, c)) < 0.3).astype(np.int64)
    ignore = rng.random((n, c)) < 0.2
    ignore[: n // 2, 5] = True
    ap = average_precision(scores, targets, ignore=ignore, interpolated=interpolated)
    for k in range(c):
        keep = ~ignore[:, k]
        sub = average_precision(scores[keep, k : k + 1], targets[keep, k : k + 1], interpolated=interpolated)
        assert ap[k] == pytest.approx(sub[0], abs=1e-12)
    # The mask changes the answer here, so the test could catch a mask that is silently dropped.
    assert not np.allclose(ap, average_precision(scores, targets, interpolated=interpolated))


def test_ignore_removes_only_positive_makes_class_absent():
    scores = np.array([[0.9, 0.9], [0.2, 0.1], [0.5, 0.4]])
    targets = np.array([[1, 1], [0, 1], [0, 0]])
    ignore = np.array([[True, False], [False, False], [False, False]])
    np.testing.assert_allclose(average_precision(scores, targets, ignore=ignore), [0.0, (1 + 2 / 3) / 2])
    assert mean_average_precision_present(scores, targets, ignore=ignore) == pytest.approx(5 / 6)


# Two images x five classes, used by the threshold tests.
_SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.1], [0.55, 0.2, 0.95, 0.3, 0.6]])
_TARGETS = np.array([[1, 0, 0, 1, 0], [1, 0, 1, 0, -1]])
EPS = np.finfo(np.float64).eps


def _official_meter(scores, targets, threshold=0.5, top_k=None):
    """Independent oracle: the official Meter.compute (lib/metrics.py) written as its per-class loop."""
    scores = np.array(scores, dtype=np.float64)
    targets = np.array(targets, dtype=np.float64)
    targets[targets == -1] = 0
    if top_k is not None:
        for i in range(scores.shape[0]):
            scores[i, np.argsort(-scores[i])[top_k:]] = 0.0
    c = scores.shape[1]
    tp, pd, gt = np.zeros(c), np.zeros(c), np.zeros(c)
    for k in range(c):
        tp[k] = np.sum(targets[:, k] * (scores[:, k] >= threshold))
        pd[k] = np.sum(scores[:, k] >= threshold)
        gt[k] = np.sum(targets[:, k])
    with np.errstate(divide="ignore", invalid="ignore"):
        op = tp.sum() / pd.sum()
        or_ = tp.sum() / gt.sum()
        of1 = 2 * op * or_ / (op + or_)
    tp, pd, gt = np.maximum(tp, EPS), np.maximum(pd, EPS), np.maximum(gt, EPS)
    cp, cr = np.mean(tp / pd), np.mean(tp / gt)
    return {"CP": cp, "CR": cr, "CF1": 2 * cp * cr / (cp + cr), "OP": op, "OR": or_, "OF1": of1}


def _same(a: dict, b: dict) -> bool:
    """Equal dicts of floats, NaN equal to NaN."""
    return a.keys() == b.keys() and all(np.isclose(a[k], b[k], rtol=1e-13, atol=0, equal_nan=True) for k in a)


def test_threshold_metrics_hand_worked():
    # Predictions (>= 0.5): image 0 -> c0 c1 c2 c3, image 1 -> c0 c2 c4.
    # per class (TP, Pred, GT): c0 (2,2,2) c1 (0,1,0) c2 (1,2,1) c3 (1,1,1) c4 (0,1,0)
    # OP = 4/7, OR = 4/4, OF1 = 2 (4/7) / (11/7) = 8/11
    # zero_if_undefined: CP = (1 + 0 + 1/2 + 1 + 0) / 5 = 0.5, CR = (1 + 0 + 1 + 1 + 0) / 5 = 0.6, CF1 = 6/11
    m = threshold_metrics(_SCORES, _TARGETS, cp_cr_rule="zero_if_undefined")
    expected = {"OP": 4 / 7, "OR": 1.0, "OF1": 8 / 11, "CP": 0.5, "CR": 0.6, "CF1": 6 / 11}
    assert m == pytest.approx(expected, abs=1e-15)
    # CF1 is the harmonic mean of CP and CR; the mean of per-class F1s (1, 0, 2/3, 1, 0) is 8/15.
    assert m["CF1"] != pytest.approx(8 / 15, abs=1e-3)
    # official_clamp (default): c1 and c4 have no positives, so their recall is eps/eps = 1 and their
    # precision eps/1: CP = (2.5 + 2 eps) / 5, CR = 5/5 = 1, CF1 = 2 CP / (CP + 1) = 5/7 (up to eps).
    m = threshold_metrics(_SCORES, _TARGETS)
    cp = (2.5 + 2 * EPS) / 5
    expected = {"OP": 4 / 7, "OR": 1.0, "OF1": 8 / 11, "CP": cp, "CR": 1.0, "CF1": 2 * cp / (cp + 1)}
    assert m == pytest.approx(expected, abs=1e-15)
    assert _same(m, _official_meter(_SCORES, _TARGETS))


def test_threshold_is_inclusive():
    scores = np.array([[0.5, 0.4999]])
    targets = np.array([[1, 1]])
    m = threshold_metrics(scores, targets)
    assert m["OP"] == 1.0 and m["OR"] == 0.5 and m["CR"] == pytest.approx(0.5)


def test_never_predicted_class_has_precision_one_officially():
    # c0: predicted twice, one hit; c1: a positive, never predicted.
    scores = np.array([[0.9, 0.1], [0.8, 0.2]])
    targets = np.array([[1, 1], [0, 0]])
    m = threshold_metrics(scores, targets)
    # official: CP = (1/2 + eps/eps) / 2 = 3/4; CR = (1 + eps/1) / 2 = 1/2 (+ eps/2)
    assert m["CP"] == pytest.approx(0.75, abs=1e-15) and m["CR"] == pytest.approx(0.5, abs=1e-15)
    assert m["OP"] == 0.5 and m["OR"] == 0.5
    z = threshold_metrics(scores, targets, cp_cr_rule="zero_if_undefined")
    assert z["CP"] == 0.25 and z["CR"] == 0.5  # the unpredicted class counts precision 0
    assert _same(m, _official_meter(scores, targets))


def test_class_without_positives_has_recall_one_officially():
    # c0: one positive, found; c1: no positive, predicted once (a false positive); c2: neither.
    scores = np.array([[0.9, 0.7, 0.1], [0.2, 0.3, 0.2]])
    targets = np.array([[1, 0, 0], [0, 0, 0]])
    m = threshold_metrics(scores, targets)
    # official: CR = (1 + eps/eps + eps/eps) / 3 = 1; CP = (1 + eps/1 + eps/eps) / 3 = 2/3
    assert m["CR"] == 1.0 and m["CP"] == pytest.approx(2 / 3, abs=1e-15)
    z = threshold_metrics(scores, targets, cp_cr_rule="zero_if_undefined")
    assert z["CR"] == pytest.approx(1 / 3) and z["CP"] == pytest.approx(1 / 3)
    assert _same(m, _official_meter(scores, targets))


def test_nothing_predicted_gives_nan_overall_officially():
    scores = np.full((3, 2), 0.1)
    targets = np.array([[1, 0], [0, 1], [1, 1]])
    m = threshold_metrics(scores, targets)
    # official: OP = 0/0 and OF1 = 0/0 are NaN; OR = 0/4; every class is unpredicted -> CP = 1, CR = eps/GT
    assert math.isnan(m["OP"]) and math.isnan(m["OF1"]) and m["OR"] == 0.0
    assert m["CP"] == 1.0 and 0.0 < m["CR"] < 1e-15 and 0.0 < m["CF1"] < 1e-15
    assert _same(m, _official_meter(scores, targets))
    z = threshold_metrics(scores, targets, cp_cr_rule="zero_if_undefined")
    assert z == {"CP": 0.0, "CR": 0.0, "CF1": 0.0, "OP": 0.0, "OR": 0.0, "OF1": 0.0}
    out = evaluate(scores, targets)  # percent: NaN stays NaN
    assert math.isnan(out["OP"]) and math.isnan(out["OF1_top3"]) and out["CP"] == 100.0
    # Predictions without a single hit: OP = OR = 0, so OF1 = 0/0 is NaN officially as well.
    m = threshold_metrics(np.array([[0.9, 0.1]]), np.array([[0, 1]]))
    assert m["OP"] == 0.0 and m["OR"] == 0.0 and math.isnan(m["OF1"])


@pytest.mark.parametrize("top_k", [None, 1, 3])
def test_random_problems_match_official_meter(top_k):
    rng = np.random.default_rng(top_k or 0)
    scores = rng.random((60, 12)) ** 3
    scores[:, 9] *= 0.4  # a class never predicted
    targets = (rng.random((60, 12)) < 0.15).astype(np.int64)
    targets[:, 5] = 0  # a class without positives
    targets[3, 7] = -1
    m = threshold_metrics(scores, targets, top_k=top_k)
    assert _same(m, _official_meter(scores, targets, top_k=top_k))
    # The two rules differ by 1/C for each class never predicted (CP) and each class without positives (CR).
    z = threshold_metrics(scores, targets, top_k=top_k, cp_cr_rule="zero_if_undefined")
    s = scores if top_k is None else np.where(scores >= np.sort(scores, axis=1)[:, [-top_k]], scores, 0)
    unpredicted = (s >= 0.5).sum(axis=0) == 0
    assert unpredicted[9] and unpredicted.sum() < 12
    assert m["CP"] - z["CP"] == pytest.approx(unpredicted.sum() / 12, abs=1e-12)
    assert m["CR"] - z["CR"] == pytest.approx(1 / 12, abs=1e-12)


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="cp_cr_rule"):
        threshold_metrics(_SCORES, _TARGETS, cp_cr_rule="clamp")
    with pytest.raises(ValueError, match="official_clamp, zero_if_undefined"):
        metric_protocol("x")
    assert "deviation" in metric_protocol("zero_if_undefined") and metric_protocol() == METRIC_PROTOCOL


def test_top3_hand_worked_and_input_untouched():
    # Top-3 per image: image 0 keeps c0 c1 c2 (0.6 of c3 is zeroed), image 1 keeps c2 c4 c0.
    # per class (TP, Pred, GT): c0 (2,2,2) c1 (0,1,0) c2 (1,2,1) c3 (0,0,1) c4 (0,1,0)
    # OP = 3/6, OR = 3/4, OF1 = 2 * 0.375 / 1.25 = 0.6
    # zero_if_undefined: CP = (1 + 0 + 1/2 + 0 + 0) / 5 = 0.3, CR = (1 + 0 + 1 + 0 + 0) / 5 = 0.4, CF1 = 12/35
    # official: c3 is never predicted -> precision 1; c1 and c4 have no positives -> recall 1:
    #   CP = (1 + eps + 1/2 + 1 + eps) / 5 = 0.5, CR = (1 + 1 + 1 + eps + 1) / 5 = 0.8, CF1 = 0.8 / 1.3 = 8/13
    zero = {"OP": 0.5, "OR": 0.75, "OF1": 0.6, "CP": 0.3, "CR": 0.4, "CF1": 12 / 35}
    official = {"OP": 0.5, "OR": 0.75, "OF1": 0.6, "CP": 0.5, "CR": 0.8, "CF1": 8 / 13}
    scores = _SCORES.copy()
    assert threshold_metrics(scores, _TARGETS, top_k=3, cp_cr_rule="zero_if_undefined") == pytest.approx(zero)
    assert threshold_metrics(scores, _TARGETS, top_k=3) == pytest.approx(official, abs=1e-15)
    np.testing.assert_array_equal(scores, _SCORES)

    t_scores = torch.tensor(_SCORES, dtype=torch.float32)
    before = t_scores.clone()
    m = threshold_metrics(t_scores, torch.tensor(_TARGETS), top_k=3)
    assert m == pytest.approx(official, abs=1e-7)
    assert torch.equal(t_scores, before)

    out = evaluate(scores, _TARGETS)
    assert out["OP_top3"] == pytest.approx(50.0) and out["OP"] == pytest.approx(400 / 7)
    assert out["CP_top3"] == pytest.approx(50.0)
    assert evaluate(scores, _TARGETS, cp_cr_rule="zero_if_undefined")["CP_top3"] == pytest.approx(30.0)
    np.testing.assert_array_equal(scores, _SCORES)


def test_threshold_ignore_drops_pairs():
    ignore = np.zeros_like(_TARGETS, dtype=bool)
    ignore[0, 1] = True  # the lone false positive of class 1
    m = threshold_metrics(_SCORES, _TARGETS, ignore=ignore, cp_cr_rule="zero_if_undefined")
    assert m["OP"] == pytest.approx(4 / 6)
    assert m["CP"] == pytest.approx((1 + 0 + 0.5 + 1 + 0) / 5)  # c1 now has no predictions -> 0
    m = threshold_metrics(_SCORES, _TARGETS, ignore=ignore)
    assert m["CP"] == pytest.approx((1 + 1 + 0.5 + 1 + 0) / 5)  # officially: eps/eps = 1


def test_evaluate_keys_units_and_protocol():
    rng = np.random.default_rng(1)
    scores, targets = _random_problem(rng, 100, 10)
    out = evaluate(scores, targets, top_k=2)
    base = ["CP", "CR", "CF1", "OP", "OR", "OF1"]
    assert list(out) == ["mAP", "mAP_present", *base, *[f"{k}_top2" for k in base]]
    assert out["mAP"] == pytest.approx(100 * mean_average_precision(scores, targets))
    assert out["CF1_top2"] == pytest.approx(100 * threshold_metrics(scores, targets, top_k=2)["CF1"])
    assert all(0.0 <= v <= 100.0 for v in out.values())
    assert "VOC2012" in METRIC_PROTOCOL and "0.5" in METRIC_PROTOCOL and "top-3" in METRIC_PROTOCOL
    assert "eps" in METRIC_PROTOCOL and "NaN" in METRIC_PROTOCOL


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="targets shape"):
        average_precision(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="only 0/1"):
        average_precision(np.zeros((3, 2)), np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.full((3, 2), np.nan), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="labels_a"):
        contingency(np.array([0, 3]), np.array([0, 1]), 3, 2)


def test_contingency_counts():
    a = np.array([0, 0, 1, 2, 2, 2])
    b = torch.tensor([1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(contingency(a, b, 4, 2), [[0, 2], [1, 0], [1, 2], [0, 0]])


@pytest.mark.parametrize(
    "a,b",
    [
        ([0, 0, 1, 1], [1, 1, 0, 0]),
        ([0, 0, 0, 0], [0, 1, 2, 3]),
        ([5, 5, 5], [2, 2, 2]),
        ([0, 1, 0, 1], [0, 0, 1, 1]),
        ([3, -1, 3, 7, 7, -1], [0, 0, 1, 1, 2, 2]),
    ],
)
def test_nmi_small_cases_match_sklearn(a, b):
    assert nmi(np.array(a), np.array(b)) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)


def test_nmi_random_matches_sklearn():
    rng = np.random.default_rng(0)
    for ka, kb, n in [(2, 2, 30), (6, 4, 500), (10, 10, 5000)]:
        a = rng.integers(0, ka, n)
        b = np.where(rng.random(n) < 0.6, a % kb, rng.integers(0, kb, n))
        assert nmi(a, torch.from_numpy(b)) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)


def test_vectorised_speed_smoke():
    rng = np.random.default_rng(0)
    scores, targets = _random_problem(rng, 10_000, 80)
    t0 = time.perf_counter()
    out = evaluate(scores, targets)
    print(f"evaluate on 10k x 80: {time.perf_counter() - t0:.3f} s")
    # Random scores: AP is close to the positive rate (~0.3).
    assert 25.0 < out["mAP"] < 35.0
