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


def test_threshold_metrics_hand_worked():
    # Predictions (>= 0.5): image 0 -> c0 c1 c2 c3, image 1 -> c0 c2 c4.
    # per class (TP, Pred, GT): c0 (2,2,2) c1 (0,1,0) c2 (1,2,1) c3 (1,1,1) c4 (0,1,0)
    # OP = 4/7, OR = 4/4, OF1 = 2 (4/7) / (11/7) = 8/11
    # CP = (1 + 0 + 1/2 + 1 + 0) / 5 = 0.5, CR = (1 + 0 + 1 + 1 + 0) / 5 = 0.6, CF1 = 0.6 / 1.1 = 6/11
    m = threshold_metrics(_SCORES, _TARGETS)
    expected = {"OP": 4 / 7, "OR": 1.0, "OF1": 8 / 11, "CP": 0.5, "CR": 0.6, "CF1": 6 / 11}
    assert m == pytest.approx(expected, abs=1e-15)
    # CF1 is the harmonic mean of CP and CR; the mean of per-class F1s (1, 0, 2/3, 1, 0) is 8/15.
    assert m["CF1"] != pytest.approx(8 / 15, abs=1e-3)


def test_threshold_is_inclusive():
    scores = np.array([[0.5, 0.4999]])
    targets = np.array([[1, 1]])
    m = threshold_metrics(scores, targets)
    assert m["OP"] == 1.0 and m["OR"] == 0.5 and m["CR"] == 0.5


def test_no_prediction_guards_zero():
    # Official OP = 0/0 = nan; here 0. A class without predictions contributes CP_c = 0 (official: 1).
    m = threshold_metrics(np.full((3, 2), 0.1), np.array([[1, 0], [0, 1], [1, 1]]))
    assert m == {"CP": 0.0, "CR": 0.0, "CF1": 0.0, "OP": 0.0, "OR": 0.0, "OF1": 0.0}


def test_top3_hand_worked_and_input_untouched():
    # Top-3 per image: image 0 keeps c0 c1 c2 (0.6 of c3 is zeroed), image 1 keeps c2 c4 c0.
    # per class (TP, Pred, GT): c0 (2,2,2) c1 (0,1,0) c2 (1,2,1) c3 (0,0,1) c4 (0,1,0)
    # OP = 3/6, OR = 3/4, OF1 = 2 * 0.375 / 1.25 = 0.6
    # CP = (1 + 0 + 1/2 + 0 + 0) / 5 = 0.3, CR = (1 + 0 + 1 + 0 + 0) / 5 = 0.4, CF1 = 0.24 / 0.7 = 12/35
    expected = {"OP": 0.5, "OR": 0.75, "OF1": 0.6, "CP": 0.3, "CR": 0.4, "CF1": 12 / 35}
    scores = _SCORES.copy()
    assert threshold_metrics(scores, _TARGETS, top_k=3) == pytest.approx(expected, abs=1e-15)
    np.testing.assert_array_equal(scores, _SCORES)

    t_scores = torch.tensor(_SCORES, dtype=torch.float32)
    before = t_scores.clone()
    m = threshold_metrics(t_scores, torch.tensor(_TARGETS), top_k=3)
    assert m == pytest.approx(expected, abs=1e-7)
    assert torch.equal(t_scores, before)

    out = evaluate(scores, _TARGETS)
    assert out["OP_top3"] == pytest.approx(50.0) and out["OP"] == pytest.approx(400 / 7)
    np.testing.assert_array_equal(scores, _SCORES)


def test_threshold_ignore_drops_pairs():
    ignore = np.zeros_like(_TARGETS, dtype=bool)
    ignore[0, 1] = True  # the lone false positive of class 1
    m = threshold_metrics(_SCORES, _TARGETS, ignore=ignore)
    assert m["OP"] == pytest.approx(4 / 6)
    assert m["CP"] == pytest.approx((1 + 0 + 0.5 + 1 + 0) / 5)  # c1 now has no predictions -> 0


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
