"""Small-sample statistics for comparing runs across seeds, with numpy and the standard library only.

- `welch`: difference of two means with Welch's t confidence interval and two-sided p-value.
- `tost`: two one-sided tests for equivalence within +-margin (equivalent when both one-sided p < alpha,
  i.e. the (1 - 2 alpha) CI lies inside the margin).
- `paired_difference` / `tost(..., paired=True)`: the same on per-pair differences (a one-sample t on a_i - b_i). ftmed
  gives both frameworks the same initial weights and batch order for a seed, so runs pair by seed and
  most of the seed-to-seed spread cancels in the difference.
Student's t distribution comes from the regularized incomplete beta function (Lentz continued fraction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _betacf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    t2 = t * t
    if t2 < df:
        # Near the centre use I_{t^2/(df+t^2)}(1/2, df/2): 1 - df/(df+t^2) would round away small t.
        half = 0.5 * betainc(0.5, df / 2.0, t2 / (df + t2))
        return 0.5 + half if t > 0 else 0.5 - half
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t2))
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (bisection on the CDF; exact to ~1e-12)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for n == 1

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}"


def summarize(values) -> Summary:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return Summary(0, float("nan"), float("nan"))
    return Summary(len(v), float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with a confidence interval; NaN fields when either side has fewer than 2 values."""

    diff: float
    low: float
    high: float
    p_value: float
    df: float
    confidence: float


def _welch_parts(a: Summary, b: Summary) -> tuple[float, float]:
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return 0.0, float("inf")
    df = (va + vb) ** 2 / ((va**2 / (a.n - 1) if a.n > 1 else 0.0) + (vb**2 / (b.n - 1) if b.n > 1 else 0.0))
    return se, df


def _paired_parts(a, b) -> tuple[float, float, float]:
    """Mean, standard error and degrees of freedom of the pairwise differences a_i - b_i."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1.0


def paired_difference(a, b, confidence: float = 0.95) -> Difference:
    """mean(a_i - b_i) with a t confidence interval (n - 1 degrees of freedom)."""
    nan = float("nan")
    if min(len(a), len(b)) < 2:
        return Difference(nan, nan, nan, nan, nan, confidence)
    diff, se, df = _paired_parts(a, b)
    if se == 0.0:
        return Difference(diff, diff, diff, 1.0 if diff == 0 else 0.0, df, confidence)
    half = t_ppf(0.5 + confidence / 2.0, df) * se
    return Difference(diff, diff - half, diff + half, 2.0 * (1.0 - t_cdf(abs(diff) / se, df)), df, confidence)


def welch(a, b, confidence: float = 0.95) -> Difference:
    sa, sb = summarize(a), summarize(b)
    nan = float("nan")
    if sa.n < 2 or sb.n < 2:
        d = sa.mean - sb.mean if sa.n and sb.n else nan
        return Difference(d, nan, nan, nan, nan, confidence)
    diff = sa.mean - sb.mean
    se, df = _welch_parts(sa, sb)
    if se == 0.0:
        p = 1.0 if diff == 0 else 0.0
        return Difference(diff, diff, diff, p, df, confidence)
    half = t_ppf(0.5 + confidence / 2.0, df) * se
    p = 2.0 * (1.0 - t_cdf(abs(diff) / se, df))
    return Difference(diff, diff - half, diff + half, p, df, confidence)


@dataclass(frozen=True)
class Equivalence:
    margin: float
    p_value: float  # max of the two one-sided p-values
    equivalent: bool
    verdict: str


def tost(a, b, margin: float, alpha: float = 0.05, paired: bool = False) -> Equivalence:
    """Is |mean(a) - mean(b)| < margin? Two one-sided t tests at level alpha (Welch, or on pairs)."""
    sa, sb = summarize(a), summarize(b)
    if sa.n < 2 or sb.n < 2:
        return Equivalence(margin, float("nan"), False, "n/a (need >= 2 seeds per side)")
    if paired:
        diff, se, df = _paired_parts(a, b)
    else:
        diff = sa.mean - sb.mean
        se, df = _welch_parts(sa, sb)
    if se == 0.0:
        p = 0.0 if abs(diff) < margin else 1.0
    else:
        p_lower = 1.0 - t_cdf((diff + margin) / se, df)  # H0: diff <= -margin
        p_upper = t_cdf((diff - margin) / se, df)  # H0: diff >= +margin
        p = max(p_lower, p_upper)
    equivalent = p < alpha
    if equivalent:
        verdict = f"equivalent (±{margin:g})"
    else:
        ci = (paired_difference if paired else welch)(a, b, 1.0 - 2.0 * alpha)
        outside = ci.low >= margin or ci.high <= -margin
        verdict = f"different (beyond ±{margin:g})" if outside else f"not shown equivalent (±{margin:g})"
    return Equivalence(margin, p, equivalent, verdict)
