"""Seed-level statistics of an ablation: intervals, the arm-vs-reference test, Holm, P(improvement), power.

Numbers are mAP in percent. Choices (the tests in tests/test_analyze.py check each against scipy,
hand-worked cases and simulated studies):

- Arm mean: Student t interval over the arm's finished seeds (mAP on a fixed validation set is an average
  over thousands of image-class terms, so its seed-to-seed spread is close to normal). It is conditional
  on the validation set, like the paper's number it is compared with.
- Difference to the reference: D = mean(arm) - mean(reference), with two sources of noise: training
  seeds, and the finite validation set. With seeds matched (the same seed set in both arms) the seed
  part is the paired variance s_d^2 / n of the per-seed differences (n - 1 degrees of freedom); with
  unequal seed sets it is Welch's s_a^2/n_a + s_r^2/n_r (Student's pooled variance when one arm has a
  single seed). The image part comes from the joint bootstrap over validation images (studies.analysis.bootstrap:
  the same image resamples for every trial, so arm and reference stay paired image by image). s_d^2,
  measured on one validation set, already holds each trial's own image noise but not the part common to
  all seeds (an arm better on some images than others), so the image part added is that common part:
  the mean bootstrap covariance between different seeds' differences. The sum is unbiased for Var(D)
  over both seeds and validation sets (derivation in `image_variance`).
- Interval and test: t = D / se, se^2 = se_seeds^2 + se_images^2. Its null distribution depends on the
  unknown share of the seed part (a Behrens-Fisher problem); studies.analysis.critical gives critical values
  calibrated so the test has size alpha whatever that share (from 3 seeds; with 2, a conservative
  fiducial stand-in). The interval is D +- h_0.05 * se and p the alpha at which |t| is critical, so
  p < 0.05 exactly when the interval excludes 0; with no image part it is exactly the paired t-test
  (Welch's with unequal seeds). Not chosen: Welch-Satterthwaite degrees of freedom (rejects up to 7.5%
  at 3 seeds); the Behrens-Fisher fiducial interval everywhere (covers up to 98% at 3 seeds);
  percentiles of a bootstrap that also resamples seeds (75% coverage at 3 seeds, 83% at 5: resampling n
  seeds shrinks their variance by (n - 1)/n and ignores the t quantile); a sign-flip permutation test
  over seeds (exact and assumption-free, but its smallest two-sided p is 2 / 2^n: 0.25 at 3 seeds,
  0.0625 at 5, so it cannot reach 0.05 with the seed counts ablations use; its p is still reported,
  `p_sign_flip`, as a check on normality).
- Holm's step-down adjustment over the arms compared with the reference (family-wise error <= alpha).
- P(improvement): P(arm run > reference run) over all pairs of seeds (the Mann-Whitney statistic / (n_a
  n_r), ties 1/2), as in Agarwal et al., NeurIPS 2021; it needs no pairing.
- Power: the detectable difference is the true difference the test finds with 80% power at level
  a = alpha / (number of arms), the first Holm step a lone effect must pass, planning as if the
  estimated spreads were exact: the noncentral t with Satterthwaite's degrees of freedom (exact for the
  paired t-test when there is no image part). More seeds shrink the seed part only: every trial sees
  the same validation images. The seed spread is the observed SD of the per-seed differences; with one
  seed it is unknown and the study's pooled within-arm SD (times sqrt 2, for a difference) stands in,
  when any arm has two seeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import optimize, special
from scipy import stats as st

from studies.analysis import critical as crit

ALPHA = 0.05
POWER = 0.8
LEVEL = 0.95
TARGET = 0.5  # mAP: the difference the "seeds needed" sentence is about
MAX_SEEDS = 10_000
METHODS = {
    "arm_ci": "Student t interval of the mean over the arm's finished seeds (validation set fixed)",
    "trial_ci": "percentile interval of the trial's mAP over bootstrap resamples of the validation images",
    "difference": "mean(arm) - mean(reference); paired by seed when both arms finished the same seeds, else "
                  "unpaired (Welch)",
    "difference_ci": "D +- h * se, se^2 = se_seeds^2 (seed-to-seed spread) + se_images^2 (what the joint "
                     "image bootstrap adds: the validation-set noise seeds cannot average away); h calibrated "
                     "for size 0.05 whatever the seed share (studies.analysis.critical)",
    "p": "two-sided p of t = D / se against the same calibrated null: with no image part, the paired t-test "
         "(Welch's with unequal seeds)",
    "p_holm": "Holm's step-down adjustment over the arms compared with the reference; an arm without a test "
              "leaves the family, and `holm` says why",
    "fallback": "a trial that cannot be used (unreadable or missing predictions, NaN or infinite scores, wrong "
                "images, a reported mAP its predictions cannot give, a damaged trials.csv row) takes its seed out "
                "of both arms of a paired comparison; without a usable targets.npz no comparison is tested (a "
                "seeds-only test would ignore the validation set's noise)",
    "p_improve": "P(arm run > reference run) over all seed pairs, ties 1/2",
    "power": "mde: the true difference detected with 80% power at alpha / m (m = arms compared), noncentral t "
             "with Satterthwaite's df; mde_floor: the same with unlimited seeds (the validation set's image noise "
             "alone); seeds_for_target: seeds per arm for an mde of target_difference",
}


def _f(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def mean_ci(values: Sequence[float], level: float = LEVEL) -> dict[str, float | int | None]:
    """n, mean, SD (ddof 1) and the Student t interval of the mean; SD and interval need n >= 2."""
    v = np.asarray(values, dtype=np.float64)
    out: dict[str, float | int | None] = {"n": int(v.size), "mean": None, "sd": None, "ci_low": None, "ci_high": None}
    if v.size:
        out["mean"] = float(v.mean())
    if v.size >= 2:
        sd = float(v.std(ddof=1))
        half = float(st.t.ppf(0.5 + level / 2, v.size - 1)) * sd / math.sqrt(v.size)
        out.update(sd=sd, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, monotone and capped at 1; None (no test) stays None, out of the family."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (len(idx) - rank) * pvalues[i]))
        out[i] = running
    return out


def prob_improvement(arm: Sequence[float], reference: Sequence[float]) -> float | None:
    """P(arm > reference) over all pairs of seeds, ties counting 1/2."""
    a, r = np.asarray(arm, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if not a.size or not r.size:
        return None
    diff = a[:, None] - r[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def sign_flip_p(diffs: Sequence[float]) -> float | None:
    """Exact two-sided sign-flip permutation p of mean(diffs) = 0 (all 2^n sign patterns, n <= 16)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 1 or d.size > 16:
        return None
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
    return float((np.abs(signs @ d) >= abs(d.sum()) * (1 - 1e-12)).mean())


def image_variance(arm: Sequence[np.ndarray], reference: Sequence[np.ndarray], paired: bool) -> float:
    """The part of Var(D) from the validation set that the seed part does not already hold.

    Inputs: each trial's bootstrap mAP replicates [B], all on the same image resamples. Write
    D = sum_j c_j X_j over trials (c = 1/n_a in the arm, -1/n_r in the reference; paired: X_j are the
    per-seed differences, c = 1/n). Over seeds and validation sets, Var(D) = sum_g tau_g^2 / n_g +
    sum_jk c_j c_k C_jk, with tau_g^2 the seed variance of group g's models and C_jk the image covariance
    of trials j, k. A group's sample variance on one validation set estimates tau_g^2 + C_jj - C_jk (own
    image variance minus the covariance shared within the group), so adding sum_{j != k} c_j c_k C_jk plus,
    on the diagonal, each group's shared covariance (mean off-diagonal C_jk within it) makes the total
    unbiased. A group of one trial keeps its whole C_jj (it has no sample variance to hold the rest): one
    seed gets the plain image-bootstrap variance.
    """
    if paired:
        groups = [np.stack([a - r for a, r in zip(arm, reference, strict=True)], axis=1)]
        coef = [np.full(len(arm), 1.0 / len(arm))]
    else:
        groups = [np.stack(arm, axis=1), np.stack(reference, axis=1)]
        coef = [np.full(len(arm), 1.0 / len(arm)), np.full(len(reference), -1.0 / len(reference))]
    c = np.concatenate(coef)
    cov = np.atleast_2d(np.cov(np.concatenate(groups, axis=1), rowvar=False))
    diag = np.diag(cov).copy()
    start = 0
    for g in groups:
        k = g.shape[1]
        if k >= 2:
            block = cov[start:start + k, start:start + k]
            diag[start:start + k] = (block.sum() - np.trace(block)) / (k * (k - 1))
        start += k
    off = cov - np.diag(np.diag(cov))
    return max(0.0, float(c @ off @ c + (c * c) @ diag))


def seed_variance(arm: Sequence[float], reference: Sequence[float], paired: bool
                  ) -> tuple[float | None, float | None, float | None]:
    """(variance of D over seeds, its degrees of freedom, SD of one seed's difference), or Nones."""
    a, r = np.asarray(arm, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if paired:
        if a.size < 2:
            return None, None, None
        sd = float((a - r).std(ddof=1))
        return sd * sd / a.size, a.size - 1.0, sd
    na, nr = a.size, r.size
    if na >= 2 and nr >= 2:  # Welch
        va, vr = a.var(ddof=1) / na, r.var(ddof=1) / nr
        df = (va + vr) ** 2 / (va * va / (na - 1) + vr * vr / (nr - 1)) if va + vr > 0 else float(na + nr - 2)
        return float(va + vr), float(df), math.sqrt(a.var(ddof=1) + r.var(ddof=1))
    if na >= 1 and nr >= 1 and na + nr >= 3:  # Student, pooled: a single seed has no spread of its own
        pooled = (((a - a.mean()) ** 2).sum() + ((r - r.mean()) ** 2).sum()) / (na + nr - 2)
        return float(pooled * (1 / na + 1 / nr)), float(na + nr - 2), math.sqrt(2 * pooled)
    return None, None, None


def detectable(se_images: float, se_seeds: float, df: float, alpha: float, power: float = POWER) -> float:
    """Smallest true difference the level-alpha test detects with `power`, planning as if the estimates were
    exact: D / se is then about (noncentral) t with Satterthwaite's nu = df (se / se_seeds)^4 degrees of
    freedom, exact when either part is 0 (the paired t-test's power; the normal). Planning skips the
    calibrated critical values (studies.analysis.critical), which are a little stricter at few seeds."""
    se = math.hypot(se_images, se_seeds)
    if se == 0:
        return 0.0
    nu = df * (se / se_seeds) ** 4 if se_seeds > 0 else math.inf
    if nu > 1e6:
        h = float(special.ndtri(1 - alpha / 2))

        def rejects(m: float) -> float:
            return float(special.ndtr(m - h) + special.ndtr(-h - m))
    else:
        h = float(special.stdtrit(nu, 1 - alpha / 2))

        def rejects(m: float) -> float:
            # scipy's noncentral t gives nan far out in the wrong tail, where the probability is ~0.
            return float(np.nan_to_num(st.nct.sf(h, nu, m)) + np.nan_to_num(st.nct.cdf(-h, nu, m)))
    hi = 2 * h + 4
    while rejects(hi) < power:
        hi *= 2
    return se * float(optimize.brentq(lambda m: rejects(m) - power, 0.0, hi, xtol=1e-6))


def seeds_needed(sd_seed: float, se_images: float, paired: bool, alpha: float, target: float = TARGET,
                 power: float = POWER) -> int | None:
    """Fewest seeds per arm (>= 2) whose detectable difference is <= target; None past MAX_SEEDS.

    The image part does not shrink with more seeds, so a large one puts a target out of reach."""
    def ok(n: int) -> bool:
        return detectable(se_images, sd_seed / math.sqrt(n), n - 1 if paired else 2 * n - 2, alpha, power) <= target

    # Bisect between the normal approximation (a lower bound: t quantiles exceed normal ones) and a
    # galloping upper bound: a handful of exact evaluations instead of a scan.
    z = st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power)
    room = (target / z) ** 2 - se_images**2
    if room <= 0 or not ok(MAX_SEEDS):
        return None
    lo = max(1, min(MAX_SEEDS - 1, math.ceil(sd_seed**2 / room)) - 1)  # ok(lo) is false or lo == 1
    if lo > 1 and ok(lo):
        lo = 1
    hi = lo + 1
    while not ok(hi):
        lo, hi = hi, min(MAX_SEEDS, 2 * hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return max(hi, 2)


def compare(arm: Mapping[int, float], reference: Mapping[int, float],
            arm_reps: Mapping[int, np.ndarray] | None = None, reference_reps: Mapping[int, np.ndarray] | None = None,
            level: float = LEVEL) -> dict:
    """One arm vs the reference: {seed: mAP} each, optionally {seed: bootstrap replicates}; module doc.

    The power figures (`mde`, `mde_floor`, `seeds_for_target`) stay None until `add_power` fills them."""
    seeds_a, seeds_r = sorted(arm), sorted(reference)
    paired = seeds_a == seeds_r
    a, r = [arm[s] for s in seeds_a], [reference[s] for s in seeds_r]
    out: dict = {"n": len(a), "n_reference": len(r), "paired": paired, "mean": _f(np.mean(a)) if a else None,
                 "mean_reference": _f(np.mean(r)) if r else None, "diff": None, "ci_low": None, "ci_high": None,
                 "interval": None, "se_seeds": None, "se_images": None, "df_seeds": None, "p": None,
                 "p_sign_flip": None, "p_improve": prob_improvement(a, r), "sd_seed": None, "mde": None,
                 "mde_floor": None, "seeds_for_target": None, "no_test": None, "notes": []}
    if not a or not r:
        return out
    diff = out["diff"] = float(np.mean(a) - np.mean(r))
    if not paired:
        out["notes"].append(f"unequal seed sets (arm {seeds_a}, reference {seeds_r}): unpaired comparison")
    else:
        out["p_sign_flip"] = sign_flip_p([x - y for x, y in zip(a, r, strict=True)])
    v_seed, df, sd_seed = seed_variance(a, r, paired)
    have_images = arm_reps is not None and reference_reps is not None
    se_img = math.sqrt(image_variance([arm_reps[s] for s in seeds_a], [reference_reps[s] for s in seeds_r],
                                      paired)) if have_images else 0.0
    out.update(sd_seed=sd_seed, se_images=se_img if have_images else None, df_seeds=df,
               se_seeds=None if v_seed is None else math.sqrt(v_seed))
    if v_seed is None:  # no seed-level test: the image-level interval (test-set noise only) is all there is
        if have_images:
            half = float(st.norm.ppf(0.5 + level / 2)) * se_img
            out.update(ci_low=diff - half, ci_high=diff + half, interval="images")
        return out
    se_seed = math.sqrt(v_seed)
    out["interval"] = "seeds+images" if have_images else "seeds"
    if se_seed == 0 and se_img == 0:
        # No spread anywhere. Every seed's difference exactly 0 (identical predictions, say) is no evidence of a
        # difference: p = 1 keeps the arm in the Holm family. The same nonzero difference on every seed cannot
        # be tested, and untested() says so.
        out.update(ci_low=diff, ci_high=diff)
        if diff == 0:
            out["p"] = 1.0
        else:
            untested(out, "the same difference on every seed and no spread at all: no test is possible")
            out.update(ci_low=diff, ci_high=diff)
        return out
    se = math.hypot(se_img, se_seed)
    half = crit.critical(1 - level, se_seed**2 / se**2, df) * se
    out.update(ci_low=diff - half, ci_high=diff + half, p=crit.p_value(diff / se, se_seed**2 / se**2, df))
    return out


def untested(c: dict, reason: str) -> None:
    """Makes a comparison one without a test (no interval, no p, out of the Holm family) for `reason`."""
    c.update(ci_low=None, ci_high=None, interval=None, p=None, p_sign_flip=None, no_test=reason)


def holm_membership(c: dict, family: int) -> str:
    """How the comparison enters Holm's family of every planned comparison: with its p, or, without a test, as
    p = 1 (it can then make no other arm easier to call), and why it has none."""
    if c["p"] is not None:
        return f"in the family of {family}"
    if c.get("no_test"):
        why = c["no_test"]
    elif c["se_seeds"] is None:
        why = "one usable seed per arm: no seed-level test"
    else:
        why = "no test"
    return f"in the family of {family} as p = 1, untested: {why}"


def add_power(c: dict, n_arms: int, typical_sd: float | None = None) -> None:
    """Fills a comparison's `mde` (at its seeds), `mde_floor` (with unlimited seeds: the validation set's image
    noise alone, which no number of seeds lowers) and `seeds_for_target`; module doc, "Power"."""
    if c.get("no_test") or (c["se_seeds"] == 0 and not c["se_images"]):
        return  # nothing to plan from: no test, or no spread at all
    alpha = ALPHA / max(n_arms, 1)
    se_img = c["se_images"] or 0.0
    if c["se_images"] is not None:
        c["mde_floor"] = detectable(se_img, 0.0, math.inf, alpha)
    if c["se_seeds"] is not None and c["p"] is not None:
        c["mde"] = detectable(se_img, c["se_seeds"], c["df_seeds"], alpha)
    sd = c["sd_seed"]
    if sd is None and typical_sd is not None and c["n"] and c["n_reference"]:
        sd = typical_sd
        c["notes"].append(f"seed spread unknown with one seed: the study's typical SD of a seed difference "
                          f"({typical_sd:.2f}) stands in for the power figures")
    if sd is not None:
        c["seeds_for_target"] = seeds_needed(sd, se_img, c["paired"], alpha)


def verdict_kind(n: int | None, n_reference: int | None, diff: float | None, p_holm: float | None,
                 alpha: float = ALPHA) -> str:
    """Which way `verdict` decides a comparison, in one word: better / worse (Holm p below alpha, by the sign of
    diff), no detectable difference (tested, not significant), no test (no Holm p: no seed-level test), or no
    comparison (an arm without usable finished trials)."""
    if not n or not n_reference:
        return "no comparison"
    if p_holm is None or not math.isfinite(p_holm):
        return "no test"
    if p_holm < alpha:
        return "better" if diff is not None and diff > 0 else "worse"
    return "no detectable difference"


def verdict(c: dict, p_holm: float | None, alpha: float = ALPHA) -> str:
    """The comparison in words: better / worse by X [lo, hi], or why no difference shows."""
    if not c["n"] or not c["n_reference"]:
        return "no comparison: " + (c.get("no_test") or ("this arm" if not c["n"] else "the reference arm") +
                                    " has no usable finished trials")
    d, lo, hi = c["diff"], c["ci_low"], c["ci_high"]
    if p_holm is not None and p_holm < alpha:
        word, x, a, b = ("better", d, lo, hi) if d > 0 else ("worse", -d, -hi, -lo)
        return f"{word} by {x:.2f} [{a:.2f}, {b:.2f}] mAP (Holm p = {p_holm:.3g})"
    if c.get("no_test"):
        return f"{c['no_test']}; the difference over seeds is {d:+.2f} mAP"
    k, floor = c["seeds_for_target"], c.get("mde_floor")
    # The image noise is shared by every seed: past a few seeds it, not the seeds, sets the detectable difference,
    # which then falls much more slowly than 1/sqrt(seeds) (a newcomer reads "53 seeds" beside "0.71 at 5" as a
    # contradiction without this).
    slow = (f" (the validation set's image noise puts a floor of {floor:.2f} mAP under the detectable difference "
            "that no number of seeds lowers, so more seeds shrink it slowly)"
            if k is not None and floor is not None and floor >= TARGET / 2 else "")
    more = (f"about {k} seeds per arm would detect a difference of {TARGET} mAP{slow}" if k is not None else
            f"no number of seeds would detect {TARGET} mAP: the validation set's own noise "
            f"(se {c['se_images']:.2f}) is too large" if c["se_images"] else
            f"more than {MAX_SEEDS} seeds per arm would be needed to detect {TARGET} mAP")
    if c["se_seeds"] == 0 and not c["se_images"] and c["interval"] != "images":
        if d == 0:
            return (f"no difference: each seed's difference to the reference is exactly 0 (both arms average "
                    f"{c['mean']:.2f} mAP)")
        return f"{d:+.2f} mAP on every seed with no spread at all: no test is possible"
    if c["se_seeds"] is None:
        head = f"no seed-level test (one seed per arm): {d:+.2f} mAP"
        head += (f", image-level 95% interval [{lo:.2f}, {hi:.2f}] (test-set noise only)" if lo is not None
                 else "; no predictions for an image-level interval")
        return head + ("; " + more + " (assuming the study's typical seed spread)" if c["sd_seed"] is None and
                       k is not None else "")
    if p_holm is not None and (lo > 0 or hi < 0):  # significant alone, not in the family of comparisons
        head = (f"not detectable after Holm's correction (Holm p = {p_holm:.2g}); the unadjusted 95% interval "
                f"{lo:.2f} to {hi:.2f} excludes 0 (difference {d:+.2f} mAP)")
    else:
        head = f"no detectable difference ({d:+.2f} [{lo:.2f}, {hi:.2f}] mAP)"
    if c["mde"] is None:  # add_power not run
        return head
    return (f"{head}; with these seeds the smallest detectable difference at {POWER:.0%} power is "
            f"{c['mde']:.2f} mAP, {more}")
