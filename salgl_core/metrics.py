"""Multi-label metrics following the official SALGL evaluation (reference/SALGL.md section 4).

All functions take [N, C] numpy arrays or torch tensors (N images, C classes) and are vectorised:
no Python loop over images or classes.
"""

from __future__ import annotations

import numpy as np
import torch

_PROTOCOL_AP = (
    "SALGL official protocol: per-class VOC2012 interpolated AP (area under the monotone precision "
    "envelope, ties ranked in reverse index order), classes without positives count as 0 and mAP is the "
    "mean over all classes (mAP_present: over classes with positives); CP/CR/CF1/OP/OR/OF1 predict "
    "score >= 0.5 (inclusive), top-3 keeps the 3 highest scores per image; "
)
_PROTOCOL_RULE = {
    "official_clamp": "CP/CR clamp per-class counts to eps as the official meters (a never-predicted class has "
                      "precision 1, a class without positives recall 1) and OP/OR/OF1 are NaN on 0/0; ",
    "zero_if_undefined": "deviation from the official meters: every 0/0 in CP/CR/OP/OR/OF1 counts 0 (a "
                         "never-predicted class has precision 0, a class without positives recall 0); ",
}
CP_CR_RULES = tuple(_PROTOCOL_RULE)


def metric_protocol(cp_cr_rule: str = "official_clamp") -> str:
    """The text that names the protocol of evaluate(..., cp_cr_rule=cp_cr_rule); export it with the numbers."""
    if cp_cr_rule not in _PROTOCOL_RULE:
        raise ValueError(f"cp_cr_rule = {cp_cr_rule!r} is unknown; use one of {', '.join(CP_CR_RULES)}")
    return _PROTOCOL_AP + _PROTOCOL_RULE[cp_cr_rule] + "all numbers in percent."


METRIC_PROTOCOL = metric_protocol()

_EPS = np.finfo(np.float64).eps


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        # numpy has no bfloat16; half is widened too so every score is compared in float64.
        if x.is_floating_point():
            x = x.to(torch.float64)
        return x.numpy()
    return np.asarray(x)


def _prepare(
    scores: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    ignore: np.ndarray | torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validated float64 scores, bool targets (-1 -> 0, as the official code) and bool ignore mask."""
    s = _to_numpy(scores).astype(np.float64)  # astype copies: callers' arrays are never touched
    t = _to_numpy(targets)
    if s.ndim != 2:
        raise ValueError(f"scores must be [N, C], got shape {s.shape}")
    if t.shape != s.shape:
        raise ValueError(f"targets shape {t.shape} does not match scores shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN: they cannot be ranked (did training diverge?)")
    if t.dtype != np.bool_:
        if not np.isin(t, (-1, 0, 1)).all():
            raise ValueError("targets must hold only 0/1 (or -1, treated as 0); got other values")
        t = t == 1
    ign = None
    if ignore is not None:
        ign = _to_numpy(ignore).astype(bool)
        if ign.shape != s.shape:
            raise ValueError(f"ignore shape {ign.shape} does not match scores shape {s.shape}")
    return s, t, ign


def _ap_and_npos(
    scores: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    ignore: np.ndarray | torch.Tensor | None,
    interpolated: bool,
) -> tuple[np.ndarray, np.ndarray]:
    s, t, ign = _prepare(scores, targets, ignore)
    n = s.shape[0]
    # Official ranking is argsort(col)[::-1]: reverse index order for tied scores if the sort is stable.
    # numpy's default sort is not (its SIMD argsort reorders ties, so official tie order varies by machine);
    # a stable ascending sort, reversed, fixes that order everywhere and survives dropping ignored rows.
    order = np.argsort(s, axis=0, kind="stable")[::-1]
    pos = np.take_along_axis(t, order, axis=0)
    if ign is None:
        rank = np.arange(1, n + 1, dtype=np.float64)[:, None]
    else:
        # Ignored pairs leave the class's ranking: no TP, no FP, no rank step.
        kept = ~np.take_along_axis(ign, order, axis=0)
        pos = pos & kept
        rank = np.maximum(np.cumsum(kept, axis=0, dtype=np.float64), 1.0)
    tp = np.cumsum(pos, axis=0, dtype=np.float64)
    precision = tp / rank
    if ign is not None:
        # An ignored row repeats the precision of the kept row before it; zero keeps it out of the envelope.
        precision = np.where(kept, precision, 0.0)
    if interpolated:
        # VOC2012: precision at each rank becomes the max precision at any deeper rank.
        precision = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
    npos = pos.sum(axis=0)
    # Recall steps by 1/npos at each positive, so the area is the sum of precision at positives / npos.
    ap = (precision * pos).sum(axis=0) / np.maximum(npos, 1)
    return ap, npos


def average_precision(
    scores: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    ignore: np.ndarray | torch.Tensor | None = None,
    interpolated: bool = True,
) -> np.ndarray:
    """Per-class AP, shape [C], fractions in [0, 1]; 0 for a class without positives.

    interpolated=True is the official VOC2012 envelope AP; False is the plain step-wise AP (mean precision
    at the positive ranks), equal to sklearn's average_precision_score on tie-free scores. `ignore` (bool
    [N, C]) drops those (image, class) pairs from that class's ranking (VOC difficult-only pairs).
    """
    return _ap_and_npos(scores, targets, ignore, interpolated)[0]


def mean_average_precision(
    scores: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    ignore: np.ndarray | torch.Tensor | None = None,
    interpolated: bool = True,
) -> float:
    """Mean AP over all classes, zeros of classes without positives included (the paper's number)."""
    return float(average_precision(scores, targets, ignore, interpolated).mean())


def mean_average_precision_present(
    scores: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    ignore: np.ndarray | torch.Tensor | None = None,
    interpolated: bool = True,
) -> float:
    """Mean AP over classes with at least one (non-ignored) positive; nan if there is none."""
    ap, npos = _ap_and_npos(scores, targets, ignore, interpolated)
    present = npos > 0
    return float(ap[present].mean()) if present.any() else float("nan")


def _ratio(a: np.ndarray | float, b: np.ndarray | float, rule: str) -> np.ndarray:
    """a / b elementwise; 0/0 is NaN under the official rule (plain numpy, as the official meters) and 0
    under zero_if_undefined."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if rule == "official_clamp":
        with np.errstate(divide="ignore", invalid="ignore"):
            return a / b
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def threshold_metrics(
    scores: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    threshold: float = 0.5,
    top_k: int | None = None,
    ignore: np.ndarray | torch.Tensor | None = None,
    cp_cr_rule: str = "official_clamp",
) -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 (fractions) for the rule score >= threshold.

    cp_cr_rule says what an undefined ratio (0/0) counts:
      "official_clamp" (default, the official `Meter.compute`): per-class TP, Pred and GT are clamped to
        eps before CP/CR, so a class never predicted has precision eps/eps = 1 and a class without
        positives recall 1 (a class with predictions but no hit gets eps/Pred, about 0); OP/OR/OF1 are
        unguarded, so nothing predicted at all (or no hit at all, for OF1) gives NaN.
      "zero_if_undefined" (ML-GCN style): every 0/0 counts 0, so predicting nothing earns no precision.
    top_k: scores outside each image's top k are set to 0 first (on a copy; the official TopkMeter
    overwrites its buffer in place). `ignore`, when given, drops those pairs from every count, as the
    official meters do when built with an ignore file; evaluate() does not pass it.
    """
    metric_protocol(cp_cr_rule)  # validates the rule name
    s, t, ign = _prepare(scores, targets, ignore)
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        # Same sort as the official argsort(-score) per image, so ties at the k-th place break alike.
        top = np.argsort(-s, axis=1)[:, :top_k]
        keep = np.zeros(s.shape, dtype=bool)
        np.put_along_axis(keep, top, True, axis=1)
        s = np.where(keep, s, 0.0)
    pred = s >= threshold
    if ign is not None:
        pred = pred & ~ign
        t = t & ~ign
    tp_c = (pred & t).sum(axis=0).astype(np.float64)
    pred_c = pred.sum(axis=0).astype(np.float64)
    gt_c = t.sum(axis=0).astype(np.float64)

    op = _ratio(tp_c.sum(), pred_c.sum(), cp_cr_rule)
    or_ = _ratio(tp_c.sum(), gt_c.sum(), cp_cr_rule)
    of1 = _ratio(2 * op * or_, op + or_, cp_cr_rule)
    if cp_cr_rule == "official_clamp":
        tp_c, pred_c, gt_c = (np.maximum(x, _EPS) for x in (tp_c, pred_c, gt_c))
    cp = _ratio(tp_c, pred_c, cp_cr_rule).mean()
    cr = _ratio(tp_c, gt_c, cp_cr_rule).mean()
    # CF1 is the harmonic mean of the class-averaged CP and CR, not the mean of per-class F1.
    cf1 = _ratio(2 * cp * cr, cp + cr, cp_cr_rule)
    return {k: float(v) for k, v in (("CP", cp), ("CR", cr), ("CF1", cf1), ("OP", op), ("OR", or_), ("OF1", of1))}


def evaluate(
    scores: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    ignore: np.ndarray | torch.Tensor | None = None,
    threshold: float = 0.5,
    top_k: int = 3,
    cp_cr_rule: str = "official_clamp",
) -> dict[str, float]:
    """All reported metrics in percent (0-100): mAP, mAP_present, CP..OF1 and their f"_top{top_k}" twins.

    OP/OR/OF1 (and their top-k twins) are NaN where the official meters divide 0 by 0 (see
    threshold_metrics); export metric_protocol(cp_cr_rule) with these numbers.
    """
    ap, npos = _ap_and_npos(scores, targets, ignore, interpolated=True)
    present = npos > 0
    out = {
        "mAP": 100.0 * float(ap.mean()),
        "mAP_present": 100.0 * float(ap[present].mean()) if present.any() else float("nan"),
    }
    # As the official meters: a VOC ignore mask drops those pairs from the threshold counts too.
    for k, v in threshold_metrics(scores, targets, threshold, ignore=ignore, cp_cr_rule=cp_cr_rule).items():
        out[k] = 100.0 * v
    for k, v in threshold_metrics(scores, targets, threshold, top_k, ignore, cp_cr_rule).items():
        out[f"{k}_top{top_k}"] = 100.0 * v
    return out


def contingency(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, ka: int, kb: int) -> np.ndarray:
    """[ka, kb] int64 counts: entry (i, j) is the number of samples with a == i and b == j."""
    a = _to_numpy(a).reshape(-1)
    b = _to_numpy(b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"labelings differ in length: {a.shape[0]} vs {b.shape[0]}")
    if a.size and (a.min() < 0 or a.max() >= ka):
        raise ValueError(f"labels_a must lie in [0, {ka}), got range [{a.min()}, {a.max()}]")
    if b.size and (b.min() < 0 or b.max() >= kb):
        raise ValueError(f"labels_b must lie in [0, {kb}), got range [{b.min()}, {b.max()}]")
    flat = a.astype(np.int64) * kb + b.astype(np.int64)
    return np.bincount(flat, minlength=ka * kb).reshape(ka, kb)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(labels_a: np.ndarray | torch.Tensor, labels_b: np.ndarray | torch.Tensor) -> float:
    """Normalized mutual information, MI / mean(H(a), H(b)) (sklearn's default 'arithmetic')."""
    a = _to_numpy(labels_a).reshape(-1)
    b = _to_numpy(labels_b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"labelings differ in length: {a.shape[0]} vs {b.shape[0]}")
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    # As sklearn: two single-cluster (or empty) labelings are a perfect match; one alone carries no MI.
    if len(ua) == len(ub) and len(ua) <= 1:
        return 1.0
    if len(ua) == 1 or len(ub) == 1:
        return 0.0
    joint = contingency(ia, ib, len(ua), len(ub)).astype(np.float64)
    n = joint.sum()
    row, col = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    pij = joint[nz] / n
    outer = (row[:, None] * col[None, :])[nz] / (n * n)
    terms = pij * np.log(pij / outer)
    # As sklearn: round-off terms below eps are zeroed and the sum clipped at 0, so independent
    # labelings give exactly 0.
    mi = float(np.clip(np.where(np.abs(terms) < _EPS, 0.0, terms).sum(), 0.0, None))
    if mi == 0.0:
        return 0.0
    return mi / max(0.5 * (_entropy(row) + _entropy(col)), _EPS)
