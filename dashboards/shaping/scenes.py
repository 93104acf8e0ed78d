"""Shaping a trial's scene statistics for the scenes view: typical labels per scene, and the learned-vs-true
scene NMI beside what random assignment and the oracle score on the same images. Plain numpy (no streamlit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dashboards.data.files import SceneData

# Shuffles behind the random-assignment NMI: the mean over 200 has a standard error under 5 % of itself.
RANDOM_PERMUTATIONS = 200
_EPS = np.finfo(np.float64).eps


def typical_labels(scene: SceneData, top: int = 5) -> pd.DataFrame:
    """Per scene, the labels most typical of it.

    count = the label's diagonal entry of the scene's co-occurrence counts (soft, hence fractional);
    share = the fraction of a label's (EMA-)counted images that went to this scene; lift = share divided
    by the scene's fraction of all label occurrences (1 = no preference). Ranked by lift, then count.
    """
    diag = np.clip(scene.diag, 0, None)
    per_label = diag.sum(0)
    total = diag.sum()
    rows = []
    for k in range(scene.num_scenes):
        frac_k = diag[k].sum() / total if total > 0 else 0.0
        share = np.divide(diag[k], per_label, out=np.zeros_like(diag[k]), where=per_label > 0)
        lift = share / frac_k if frac_k > 0 else np.zeros_like(share)
        order = sorted((i for i in range(diag.shape[1]) if diag[k, i] > 0), key=lambda i: (-lift[i], -diag[k, i]))
        for r, i in enumerate(order[:top], 1):
            rows.append({"scene": k, "rank": r, "label": scene.class_names[i], "count": float(diag[k, i]),
                         "share": float(share[i]), "lift": float(lift[i])})
    return pd.DataFrame(rows, columns=["scene", "rank", "label", "count", "share", "lift"])


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def contingency_nmi(table: np.ndarray) -> float:
    """NMI of the two labelings a contingency table counts: MI / mean(H(rows), H(columns)).

    The same definition and edge cases as salgl_core.metrics.nmi (sklearn's 'arithmetic' NMI), which
    wrote true_scene_nmi: two single-group labelings match perfectly (1), one alone carries no MI (0).
    Empty rows or columns (a scene no image went to) change nothing."""
    joint = np.asarray(table, dtype=np.float64)
    row, col = joint.sum(1), joint.sum(0)
    used_rows, used_cols = int((row > 0).sum()), int((col > 0).sum())
    if used_rows <= 1 and used_cols <= 1:
        return 1.0
    if used_rows <= 1 or used_cols <= 1:
        return 0.0
    n = joint.sum()
    nz = joint > 0
    pij = joint[nz] / n
    terms = pij * np.log(pij / ((row[:, None] * col[None, :])[nz] / (n * n)))
    mi = float(np.clip(np.where(np.abs(terms) < _EPS, 0.0, terms).sum(), 0.0, None))
    return 0.0 if mi == 0.0 else mi / max(0.5 * (_entropy(row) + _entropy(col)), _EPS)


def random_assignment_nmis(table: np.ndarray, n: int = RANDOM_PERMUTATIONS, seed: int = 0) -> np.ndarray:
    """The NMI of `n` random assignments of the same images: each shuffles which learned scene goes with
    which true scene, keeping how many images every learned and every true scene holds (both marginals).

    Finite samples make even a random assignment score a little above 0; this is that floor for these
    images. Seeded, so the same table always gives the same numbers."""
    cont = np.rint(np.asarray(table, dtype=np.float64)).astype(np.int64)
    k, kt = cont.shape
    learned = np.repeat(np.arange(k), cont.sum(1))
    true = np.repeat(np.tile(np.arange(kt), k), cont.ravel())
    rng = np.random.default_rng(seed)
    out = np.empty(n)
    for i in range(n):
        out[i] = contingency_nmi(np.bincount(learned * kt + rng.permutation(true), minlength=k * kt).reshape(k, kt))
    return out


@dataclass(frozen=True)
class NmiContext:
    """The learned scenes' NMI with the true ones, beside the two ends of its scale on the same images."""

    learned: float | None
    random_mean: float | None  # mean NMI of random assignments (near 0)
    random_high: float | None  # their 95th percentile: a learned NMI below it is indistinguishable from chance
    oracle: float              # learned scenes = true scenes
    learned_scenes: int        # learned scenes that hold at least one image
    true_scenes: int

    @property
    def capped(self) -> bool:
        """Fewer learned scenes in use than true scenes: even the best grouping scores below the oracle's 1."""
        return self.learned_scenes < self.true_scenes


def nmi_context(scene: SceneData, random_nmis: np.ndarray | None = None) -> NmiContext:
    """The file's NMI (recomputed from the contingency table when the file has none) and its baselines.
    `random_nmis` are random_assignment_nmis(scene.contingency), passed in when the caller caches them."""
    cont = scene.contingency
    if cont is None:
        return NmiContext(scene.nmi, None, None, 1.0, 0, 0)
    rnd = random_assignment_nmis(cont) if random_nmis is None else np.asarray(random_nmis)
    learned = scene.nmi if scene.nmi is not None else contingency_nmi(cont)
    return NmiContext(learned, float(rnd.mean()), float(np.quantile(rnd, 0.95)), 1.0,
                      int((cont.sum(1) > 0).sum()), int((cont.sum(0) > 0).sum()))
