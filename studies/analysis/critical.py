"""The null distribution of the seed+image t statistic: critical values and p-values (numpy/scipy only).

t = D / se with se^2 = se_seeds^2 + se_images^2, where se_seeds^2 is estimated from the seeds with f
degrees of freedom and se_images^2 comes from the image bootstrap (thousands of images: effectively
known). Under "no difference" t is not Student's t: its spread depends on the unknown share of the
seed part. With c = se_seeds^2 / se^2, the estimated share:

- c = 1 (no image part): Student's t with f df, the paired t-test; c = 0: the normal.
- f >= 2: critical values h_alpha(c) solved numerically so that the test |t| > h_alpha(c) has size alpha
  whatever the true share: the similarity condition that Welch (1947) and Aspin (1948) solved by series
  for this Behrens-Fisher problem, here solved on a grid of c. At alpha = 0.05 the size stays within 1%
  of alpha (relative) for every share; at Holm's steps for up to three arms (down to 0.0167) within 7% at
  3 seeds and 1% from 4 seeds; at 0.01 within 20% and 2%. Welch-Satterthwaite degrees of freedom are the
  first-order answer to the same question and reject up to 7.5% at 3 seeds: a small seed variance by
  chance also inflates the df.
- f < 2 (two seeds per arm): the similarity condition has no stable solution, so the Behrens-Fisher
  fiducial distribution stands in, se_images Z + se_seeds T_f: exact at both ends, conservative in between
  (the 95% interval covers 95-99%).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize, special
from scipy import stats as st

# The alpha grid holds 0.05 and its Holm fractions for up to 10 arms exactly, so verdicts never depend on
# interpolation. Below 0.005 the calibration is unstable at 3 seeds; past the grid, p-values follow a power
# law (the shape of a t tail; they only need to be small).
ALPHAS = np.array(sorted({*np.round(np.geomspace(0.005, 0.5, 8), 6), *(0.05 / k for k in range(1, 11)), 0.1}))
_KNOTS = np.linspace(0.0, 1.0, 13)  # grid of the estimated seed share c
_SHARES = np.linspace(0.0, 1.0, 32)[1:-1]  # true seed shares the size is held at alpha for
_W = (np.arange(256) + 0.5) / 256  # quantile midpoints of the seed variance's chi^2_f / f

# The fiducial convolution, by quadrature: over T, midpoints in theta with T = tan(theta) (T's heavy tails
# on a bounded interval); over Z, Gauss-Hermite (exact for smooth integrands against the normal).
_T = np.tan(((np.arange(4000) + 0.5) / 4000 - 0.5) * math.pi)
_Z, _ZW = np.polynomial.hermite_e.hermegauss(64)
_ZW = _ZW / _ZW.sum()


@functools.lru_cache(maxsize=64)
def _t_weights(df: float) -> np.ndarray:
    """Quadrature weights of Student's t density at the nodes _T (the Jacobian is 1 + T^2)."""
    log_pdf = (special.gammaln((df + 1) / 2) - special.gammaln(df / 2) - 0.5 * math.log(df * math.pi)
               - (df + 1) / 2 * np.log1p(_T * _T / df))
    w = np.exp(log_pdf) * (1 + _T * _T)
    return w / w.sum()


def convolution_cdf(x: float, a: float, b: float, df: float) -> float:
    """P(a Z + b T_df <= x), Z standard normal and T Student's t independent (a, b >= 0)."""
    if b == 0:
        return float(special.ndtr(x / a)) if a > 0 else float(x >= 0)
    if a == 0:
        return float(special.stdtr(df, x / b))
    # Integrate over the variable with the larger scale, so the integrand stays smooth.
    if a >= b:
        return float(special.ndtr((x - b * _T) / a) @ _t_weights(float(df)))
    return float(special.stdtr(df, (x - a * _Z) / b) @ _ZW)


def convolution_quantile(prob: float, a: float, b: float, df: float) -> float:
    """The prob-quantile of a Z + b T_df."""
    z, t = float(special.ndtri(prob)), float(special.stdtrit(df, prob))
    if a == 0 or b == 0:
        return z * a + t * b
    hi = abs(z) * a + abs(t) * b  # |quantile| <= the sum of the parts' |quantiles|
    return float(optimize.brentq(lambda x: convolution_cdf(x, a, b, df) - prob, -hi, hi, xtol=1e-7 * hi))


@functools.lru_cache(maxsize=64)
def _table(df: float) -> np.ndarray:
    """h_alpha at the knots, [alpha, knot]: the size held at alpha over true seed shares (module doc).

    In units of the true Var(D), a true share s gives an estimated variance V = s W + 1 - s (W ~ chi^2_f /
    f) and share c = s W / V, and the test rejects with probability E_W[2 Phi(-h(c) sqrt(V))]."""
    w = st.chi2.ppf(_W, df) / df
    v = _SHARES[:, None] * w + 1 - _SHARES[:, None]
    share, root = _SHARES[:, None] * w / v, np.sqrt(v)
    out = np.empty((ALPHAS.size, _KNOTS.size))
    shape = _KNOTS[1:-1] ** 2  # the first-order (Welch) shape, the starting point
    for i, alpha in enumerate(ALPHAS):
        z, t = special.ndtri(1 - alpha / 2), special.stdtrit(df, 1 - alpha / 2)

        def residuals(inner: np.ndarray, z: float = z, t: float = t, alpha: float = alpha) -> np.ndarray:
            h = np.concatenate([[z], z + (t - z) * inner, [t]])
            size = 2 * special.ndtr(-np.interp(share, _KNOTS, h) * root).mean(axis=1)
            # A light curvature penalty picks the smooth one among near-equal solutions.
            return np.concatenate([(size - alpha) / alpha, 0.05 * np.diff(h, 2)])

        shape = optimize.least_squares(residuals, shape).x  # warm start: the shape changes slowly with alpha
        # At most Student's t: a known variance part never makes the tails heavier than
        # the seed part's own (the solution is unstable at 3 seeds and alpha <= 0.005 without this).
        out[i] = np.concatenate([[z], z + (t - z) * np.minimum(shape, 1.0), [t]])
    # Critical values fall as alpha grows; keep them so despite solver noise.
    return np.minimum.accumulate(out, axis=0)


def _df_key(df: float) -> float:
    return round(df * 4) / 4  # Welch's fractional df, to a quarter: a few tables serve every analysis


def _column(share: np.ndarray, df: float) -> np.ndarray:
    """h at every grid alpha for each share: [alpha, ...share's shape]."""
    return np.stack([np.interp(share, _KNOTS, row) for row in _table(_df_key(df))])


_TAIL = int(np.searchsorted(ALPHAS, 0.01))  # the grid point the tail's slope is taken from


def _power_law(hs: np.ndarray) -> np.ndarray:
    """The exponent k of p ~ h^-k through alpha = 0.005 and 0.01: the tail past the grid."""
    return math.log(ALPHAS[_TAIL] / ALPHAS[0]) / np.log(hs[0] / hs[_TAIL])


def critical(alpha: float, share: float | np.ndarray, df: float) -> float | np.ndarray:
    """h with P(|t| > h) = alpha, in units of se, for share = se_seeds^2 / se^2 (a number or an array)."""
    c = np.clip(np.asarray(share, dtype=np.float64), 0.0, 1.0)
    if df < 2:
        out = np.vectorize(lambda x: convolution_quantile(1 - alpha / 2, math.sqrt(1 - x), math.sqrt(x), df))(c)
        return float(out) if out.ndim == 0 else out
    if alpha > ALPHAS[-1]:
        raise ValueError(f"alpha {alpha} is above {ALPHAS[-1]}: a two-sided test at that level makes no sense")
    # The ends exactly: Student's t (no image part) and the normal (no seed part).
    ends = np.where(c >= 1, special.stdtrit(df, 1 - alpha / 2), np.where(c <= 0, special.ndtri(1 - alpha / 2), np.nan))
    if not np.isnan(ends).any():
        return float(ends) if ends.ndim == 0 else ends
    hs = _column(c, df)
    if alpha < ALPHAS[0]:  # past the grid: the power-law tail (see p_value)
        out = hs[0] * (ALPHAS[0] / alpha) ** (1 / _power_law(hs))
    else:  # linear in log alpha between grid points
        i = min(int(np.searchsorted(ALPHAS, alpha, side="right")) - 1, ALPHAS.size - 2)
        w = math.log(alpha / ALPHAS[i]) / math.log(ALPHAS[i + 1] / ALPHAS[i])
        out = (1 - w) * hs[i] + w * hs[i + 1]
    out = np.where(np.isnan(ends), out, ends)
    return float(out) if out.ndim == 0 else out


def p_value(t: float, share: float, df: float) -> float:
    """Two-sided p of the statistic t (share = se_seeds^2 / se^2): the alpha whose critical value is |t|."""
    t = abs(t)
    if share >= 1:
        return float(2 * special.stdtr(df, -t))
    if share <= 0:
        return float(2 * special.ndtr(-t))
    if df < 2:
        return min(1.0, 2 * (1 - convolution_cdf(t, math.sqrt(1 - share), math.sqrt(share), df)))
    hs = _column(np.asarray(share), df)  # falling with alpha
    if t >= hs[0]:
        # Past the grid's smallest alpha, its last step continues as a power law, p ~ t^-k: the shape of a t
        # tail (log p is linear in log t there). Only "very small" matters out there.
        return float(ALPHAS[0] * (t / hs[0]) ** -_power_law(hs))
    if t <= hs[-1]:  # p > 0.5: linear to p = 1 at t = 0 (only "large" matters here)
        return float(1 - (1 - ALPHAS[-1]) * t / hs[-1])
    return float(np.exp(np.interp(t, hs[::-1], np.log(ALPHAS[::-1]))))
