"""mAP in numpy and its bootstrap over validation images, shared by every trial of a study (torch-free).

`mean_average_precision` is the official protocol of `salgl_core.metrics` (VOC2012 envelope AP, ties
ranked in reverse index order, the VOC ignore mask, classes without positives count 0, mean over all
classes), rewritten here because that module imports torch and the analysis must not;
tests/test_analyze.py checks the two agree.

The bootstrap resamples validation images: replicate b weighs image i by how often it was drawn
(multinomial counts w_bi, sum N). One set of weights is used for every trial of a study, because all
trials are scored on the same images: that is what makes differences between trials paired at the
image level. The weights come in fixed blocks of replicates from `np.random.default_rng([seed, block])`,
so a trial's replicates do not depend on which other trials are analysed or on memory chunking.

Cost. Each class is ranked once per trial (the full-data sort). With weights, the precision at a positive
is TP_w / (TP_w + FP_w), where FP_w sums the weights of the negatives ranked above it. Those sums are
one sparse product: a (positives x images) 0/1 matrix selecting, for each positive, the negatives
between it and the class's previous positive, times the (images x replicates) weights. So a replicate
costs O(N C) multiply-adds in compiled code plus O(positives) numpy work, and no per-replicate sort.
On COCO val2014 (40,504 images x 80 classes, ~120k positives) that is ~12 ms per replicate on a free
CPU core, so 10-20 s per trial for 1000 replicates; memory stays under ~0.5 GB (one trial ranked at a
time, replicates in chunks). `python -m studies.analysis.bootstrap` prints the figures on this machine.

Equivalence: weighted AP equals metrics' AP on the resampled rows `scores[np.sort(idx)]`: copies of an
image are tied with identical labels, so their order is immaterial, and other ties keep the reverse index
order. Copies of a positive share its envelope precision (precision rises along a run of positives),
and a positive drawn zero times has a precision no higher than an earlier positive's, so it never
lifts the envelope and adds nothing to the sum.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

BLOCK = 50  # replicates per weight block (the unit of reproducibility)
_CHUNK_ELEMENTS = 4_000_000  # positives x replicates per numpy step: ~32 MB float64 temporaries


@dataclass(frozen=True)
class RankedTrial:
    """One trial's scores ranked once per class: what the weighted AP of any resample needs."""

    n_images: int
    n_classes: int
    pos_image: np.ndarray  # [P] image index of each positive, by class then rank
    between: sp.csr_matrix  # [P, N] 1 where a negative ranks between the class's previous positive and this one
    starts: np.ndarray  # [K] first row of each class that has positives
    counts: np.ndarray  # [K] positives of those classes


def _validated(scores: np.ndarray, targets: np.ndarray, ignore: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
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
    ign = np.zeros(s.shape, dtype=bool) if ignore is None else np.asarray(ignore, dtype=bool)
    if ign.shape != s.shape:
        raise ValueError(f"ignore shape {ign.shape} does not match scores shape {s.shape}")
    return s, t, ign


def rank_trial(scores: np.ndarray, targets: np.ndarray, ignore: np.ndarray | None = None) -> RankedTrial:
    """Rank each class once (scores [N, C], targets 0/1 or bool, ignore: bool pairs left out of AP)."""
    s, t, ign = _validated(scores, targets, ignore)
    n, c = s.shape
    # metrics.py's order: a stable ascending sort reversed, i.e. ties in reverse index order.
    order = np.argsort(s, axis=0, kind="stable")[::-1].T  # [C, N], class-major
    kept = ~np.take_along_axis(ign.T, order, axis=1)
    pos = np.take_along_axis(t.T, order, axis=1) & kept
    neg = kept & ~pos
    counts_all = pos.sum(axis=1)
    offsets = np.cumsum(counts_all) - counts_all
    above = np.cumsum(pos, axis=1) - pos  # positives ranked above each row of its class
    rows = offsets[:, None] + above
    # A negative below the class's last positive cannot change its AP: it is dropped.
    use = neg & (above < counts_all[:, None])
    n_pos = int(counts_all.sum())
    between = sp.csr_matrix((np.ones(int(use.sum())), (rows[use], order[use])),
                            shape=(n_pos, n))
    present = counts_all > 0
    return RankedTrial(n, c, order[pos], between, offsets[present], counts_all[present])


def weighted_map(ranked: RankedTrial, weights: np.ndarray) -> np.ndarray:
    """mAP in percent of each replicate: weights [B, N] (image counts) -> [B]."""
    w = np.ascontiguousarray(np.asarray(weights, dtype=np.float64).T)  # [N, B]
    n_pos = ranked.pos_image.size
    if n_pos == 0:
        return np.zeros(w.shape[1])
    out = np.empty(w.shape[1])
    step = max(1, _CHUNK_ELEMENTS // n_pos)
    for lo in range(0, w.shape[1], step):
        out[lo:lo + step] = _weighted_map_chunk(ranked, w[:, lo:lo + step])
    return out


def _segment_cumsum(x: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    # Integer-valued float64 sums are exact, so a global cumsum minus each class's offset is exact too.
    csum = np.cumsum(x, axis=0)
    before = np.where((starts > 0)[:, None], csum[starts - 1], 0.0)
    return csum - np.repeat(before, counts, axis=0)


def _weighted_map_chunk(r: RankedTrial, w: np.ndarray) -> np.ndarray:
    tp_inc = w[r.pos_image]  # [P, B] each positive's weight
    tp = _segment_cumsum(tp_inc, r.starts, r.counts)
    fp = _segment_cumsum(r.between @ w, r.starts, r.counts)
    ranks = tp + fp
    precision = np.divide(tp, ranks, out=np.zeros_like(tp), where=ranks > 0)
    for a, k in zip(r.starts, r.counts, strict=True):  # the VOC2012 envelope, class by class
        seg = precision[a:a + k][::-1]
        np.maximum.accumulate(seg, axis=0, out=seg)
    hits = np.add.reduceat(tp_inc, r.starts, axis=0)
    area = np.add.reduceat(precision * tp_inc, r.starts, axis=0)
    ap = area / np.maximum(hits, 1.0)  # a class whose positives were all left out of a resample: 0
    return 100.0 * ap.sum(axis=0) / r.n_classes


def mean_average_precision(scores: np.ndarray, targets: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """The official mAP in percent (equals `salgl_core.metrics.evaluate(...)["mAP"]`)."""
    ranked = rank_trial(scores, targets, ignore)
    return float(weighted_map(ranked, np.ones((1, ranked.n_images)))[0])


def resample_weights(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, N] multinomial counts (float64); replicate b is the same for any `resamples` > b."""
    blocks = [_block(n_images, b, seed) for b in range(-(-resamples // BLOCK))]
    return np.concatenate(blocks)[:resamples]


def bootstrap_maps(trials: Iterable[np.ndarray], targets: np.ndarray, ignore: np.ndarray | None,
                   resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each trial's mAP (percent) [J] and its mAP on the same image resamples [resamples, J].

    `trials` yields scores [N, C] (a generator keeps one in memory at a time); trials are ranked one at
    a time (a COCO trial's ranking holds ~50 MB). Small weight matrices are drawn once and shared; large
    ones are redrawn block by block for each trial, which costs far less than the AP itself."""
    n = targets.shape[0]
    # Row 0 (all ones) is the full validation set.
    shared = np.vstack([np.ones((1, n)), resample_weights(n, resamples, seed)]) if resamples * n <= 4e6 else None
    out = []
    for scores in trials:
        ranked = rank_trial(scores, targets, ignore)
        if shared is not None:
            out.append(weighted_map(ranked, shared))
            continue
        col = [weighted_map(ranked, np.ones((1, n)))]
        for b in range(0, resamples, BLOCK):
            col.append(weighted_map(ranked, _block(n, b // BLOCK, seed)[: resamples - b]))
        out.append(np.concatenate(col))
    table = np.stack(out, axis=1) if out else np.empty((resamples + 1, 0))
    return table[0], table[1:]


def _block(n_images: int, block: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, block])
    idx = rng.integers(0, n_images, size=(BLOCK, n_images)) + np.arange(BLOCK)[:, None] * n_images
    return np.bincount(idx.ravel(), minlength=BLOCK * n_images).reshape(BLOCK, n_images).astype(np.float64)


def _benchmark(n: int = 40_504, c: int = 80, resamples: int = 200) -> None:
    """Prints the cost of the bootstrap at COCO val2014 size (synthetic scores, ~2.9 labels per image)."""
    rng = np.random.default_rng(0)
    targets = rng.random((n, c)) < 2.9 / c
    scores = (1 / (1 + np.exp(-(rng.normal(size=(n, c)) + 2.5 * targets - 1)))).astype(np.float16)
    t0 = time.perf_counter()
    ranked = rank_trial(scores, targets)
    t1 = time.perf_counter()
    w = resample_weights(n, resamples, seed=0)
    t2 = time.perf_counter()
    weighted_map(ranked, w)
    t3 = time.perf_counter()
    per = (t3 - t1) / resamples
    print(f"{n} images x {c} classes, {ranked.pos_image.size} positives: ranking {t1 - t0:.2f} s, weights "
          f"{1000 * (t2 - t1) / resamples:.1f} ms and AP {1000 * (t3 - t2) / resamples:.1f} ms per replicate: "
          f"{t1 - t0 + 1000 * per:.0f} s per trial for 1000 replicates")


if __name__ == "__main__":
    _benchmark()
