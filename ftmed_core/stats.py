"""Small-sample statistics for comparing runs across seeds, on scipy.stats (no torch, no TensorFlow).

- `paired_difference`: mean(a_i - b_i) with a t confidence interval and two-sided p-value
  (`scipy.stats.ttest_rel`), for runs that pair by seed: a seed gives both runs the same initial weights
  and batch order, so most of the seed-to-seed spread cancels in the difference.
- `welch`: mean(a) - mean(b) with Welch's t interval and p-value (`scipy.stats.ttest_ind(equal_var=False)`),
  for unpaired runs.
- `tost`: two one-sided tests for equivalence within +-margin (equivalent when both one-sided p < alpha,
  i.e. the (1 - 2 alpha) CI lies inside the margin), paired or Welch.
- `holm`: Holm's step-down adjustment of a family of p-values.
- Power: `paired_power`, `welch_power` (two-sided t tests against a true difference), `tost_power`
  (paired TOST when the true difference is `true_diff`), and `seeds_needed` (the smallest number of seeds
  reaching a target power).

A difference with zero spread (the same in every seed, common with accuracy, a count over a fixed test
set) gets no p-value, interval or verdict: `Difference.constant` / `constant_text` say what it is.

Every difference carries an effect size: Cohen's d_z (mean difference / sd of the differences) when
paired, Cohen's d with the average of the two variances when unpaired. Inputs are plain sequences of
floats; NaN/None are dropped by `summarize` but the tests expect clean lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate
from scipy import stats as sps

NAN = float("nan")
# Spreads and differences below TIE count as zero. Accuracies are counts over a fixed test set scaled to
# percent, so the same count difference in two seeds comes out of float arithmetic ~1e-14 apart; one test
# image is 100 / n_test pp (0.014 pp at 7,180 images), far above TIE.
TIE = 1e-9


def t_cdf(t: float, df: float) -> float:
    """Student's t CDF (scipy.stats.t)."""
    return float(sps.t.cdf(t, df))


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (scipy.stats.t)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    return float(sps.t.ppf(q, df))


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
        return Summary(0, NAN, NAN)
    return Summary(len(v), float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with a confidence interval; NaN fields when either side has fewer than 2 values.

    `method` is "paired" (n = pairs, df = n - 1) or "welch" (n_a, n_b runs; Welch-Satterthwaite df);
    `effect_size` is Cohen's d_z (paired) or d (Welch), NaN where a spread is zero or undefined.
    `constant` marks a difference with no spread to test against (paired: every pair differs by the same
    amount; Welch: every run on each side has the same value): then `diff` is that shift and p, the interval
    and the effect size are NaN, because a zero spread supports no probability statement at all.
    """

    diff: float
    low: float
    high: float
    p_value: float
    df: float
    confidence: float
    method: str = ""
    n_a: int = 0
    n_b: int = 0
    effect_size: float = NAN
    constant: bool = False


def _ci(result, confidence: float) -> tuple[float, float]:
    ci = result.confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def paired_difference(a, b, confidence: float = 0.95) -> Difference:
    """mean(a_i - b_i) with a t confidence interval (n - 1 degrees of freedom); a and b align by position."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    n = len(a)
    if n < 2:
        d = float(np.mean(np.subtract(a, b))) if n else NAN
        return Difference(d, NAN, NAN, NAN, NAN, confidence, "paired", n, n)
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    diff, sd = float(d.mean()), float(d.std(ddof=1))
    if sd <= TIE:  # every pair differs by the same amount: no spread to test against
        return Difference(diff, NAN, NAN, NAN, n - 1.0, confidence, "paired", n, n, NAN, constant=True)
    result = sps.ttest_rel(a, b)
    low, high = _ci(result, confidence)
    return Difference(diff, low, high, float(result.pvalue), float(result.df), confidence, "paired", n, n,
                      diff / sd)


def welch(a, b, confidence: float = 0.95) -> Difference:
    """mean(a) - mean(b), Welch's unequal-variance t test and interval."""
    sa, sb = summarize(a), summarize(b)
    if sa.n < 2 or sb.n < 2:
        d = sa.mean - sb.mean if sa.n and sb.n else NAN
        return Difference(d, NAN, NAN, NAN, NAN, confidence, "welch", sa.n, sb.n)
    diff = sa.mean - sb.mean
    spread = math.sqrt((sa.std**2 + sb.std**2) / 2.0)
    if spread <= TIE:  # both sides constant: no spread to test against
        return Difference(diff, NAN, NAN, NAN, NAN, confidence, "welch", sa.n, sb.n, NAN, constant=True)
    result = sps.ttest_ind(a, b, equal_var=False)
    low, high = _ci(result, confidence)
    return Difference(diff, low, high, float(result.pvalue), float(result.df), confidence, "welch", sa.n, sb.n,
                      diff / spread)


@dataclass(frozen=True)
class Equivalence:
    margin: float
    p_value: float  # max of the two one-sided p-values; NaN when untestable (n < 2, or zero spread)
    equivalent: bool
    verdict: str


def constant_text(diff: float, n: int, paired: bool = True) -> str:
    """The words for a difference with zero spread over n seeds: what the data show and nothing more."""
    if paired:
        if abs(diff) <= TIE:
            return f"identical in all {n} seeds"
        return f"the same shift ({diff:+.2f} pp) in all {n} seeds"
    return f"no spread on either side ({n} seeds each): {diff:+.2f} pp"


def tost(a, b, margin: float, alpha: float = 0.05, paired: bool = False) -> Equivalence:
    """Is |mean(a) - mean(b)| < margin? Two one-sided t tests at level alpha (Welch, or on pairs).

    With zero spread (every pair differs by the same amount; unpaired: every run on each side equal) there
    is nothing to test against: p is NaN, `equivalent` is False and the verdict states the constant
    difference (`constant_text`), never "equivalent" or "different".
    """
    sa, sb = summarize(a), summarize(b)
    if sa.n < 2 or sb.n < 2:
        return Equivalence(margin, NAN, False, "n/a (need >= 2 seeds per side)")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if paired:
        d = a - b
        diff, spread = float(d.mean()), float(d.std(ddof=1))
    else:
        diff, spread = sa.mean - sb.mean, sa.std + sb.std
    if spread <= TIE:
        return Equivalence(margin, NAN, False, constant_text(diff, min(sa.n, sb.n), paired))
    if paired:
        p_lower = sps.ttest_1samp(d, -margin, alternative="greater").pvalue  # H0: diff <= -margin
        p_upper = sps.ttest_1samp(d, margin, alternative="less").pvalue  # H0: diff >= +margin
        p = float(max(p_lower, p_upper))
    else:
        p_lower = sps.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue
        p_upper = sps.ttest_ind(a - margin, b, equal_var=False, alternative="less").pvalue
        p = float(max(p_lower, p_upper))
    equivalent = p < alpha
    if equivalent:
        verdict = f"equivalent (±{margin:g})"
    else:
        ci = (paired_difference if paired else welch)(a, b, 1.0 - 2.0 * alpha)
        outside = ci.low >= margin or ci.high <= -margin
        verdict = f"different (beyond ±{margin:g})" if outside else f"not shown equivalent (±{margin:g})"
    return Equivalence(margin, p, equivalent, verdict)


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order; NaN entries stay NaN and do not count.

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    Rejecting where the adjusted p < alpha controls the family-wise error rate at alpha.
    """
    values = [float(p) for p in p_values]
    finite = sorted((p, i) for i, p in enumerate(values) if not math.isnan(p))
    m = len(finite)
    adjusted = [NAN] * len(values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


# ------------------------------------------------------------------------------------------------ power


def _two_sided_nct(crit: float, df: float, ncp: float) -> float:
    """P(|T| > crit) for T ~ noncentral t(df, ncp); a tail scipy cannot resolve (NaN, far out) counts as 0."""
    tails = (sps.nct.sf(crit, df, ncp), sps.nct.cdf(-crit, df, ncp))
    return float(min(1.0, sum(t for t in tails if math.isfinite(t))))


def paired_power(n: int, effect: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test (n pairs) when the true mean difference is `effect` and the
    differences' standard deviation is `sd` (exact: noncentral t)."""
    if n < 2:
        return 0.0
    if sd == 0.0:
        return 1.0 if effect != 0 else alpha
    df = n - 1
    return _two_sided_nct(sps.t.ppf(1.0 - alpha / 2.0, df), df, effect * math.sqrt(n) / sd)


def welch_power(n: int, effect: float, sd_a: float, sd_b: float, alpha: float = 0.05, draws: int = 20000) -> float:
    """Power of the two-sided Welch test with n runs per side, normal data with true spreads sd_a, sd_b.

    Welch's statistic has no closed-form distribution, so this integrates by Monte Carlo over the two
    sample variances (`draws` chi-square pairs from a fixed seed: deterministic, about +-0.004), taking for
    each pair the exact normal probability that the mean difference clears that pair's critical value.
    """
    if n < 2:
        return 0.0
    if sd_a == 0.0 and sd_b == 0.0:
        return 1.0 if effect != 0 else alpha
    rng = np.random.default_rng(0x9E3779B9)
    df1 = n - 1
    va = sd_a**2 * rng.chisquare(df1, draws) / df1 / n
    vb = sd_b**2 * rng.chisquare(df1, draws) / df1 / n
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va**2 + vb**2) / df1)
    threshold = sps.t.ppf(1.0 - alpha / 2.0, df) * se
    sigma = math.sqrt((sd_a**2 + sd_b**2) / n)  # the true sd of the mean difference
    p = sps.norm.sf((threshold - effect) / sigma) + sps.norm.cdf((-threshold - effect) / sigma)
    return float(np.mean(p))


def tost_power(n: int, sd: float, margin: float, alpha: float = 0.05, true_diff: float = 0.0) -> float:
    """Power of the paired TOST (n pairs, differences ~ Normal(true_diff, sd)) to show equivalence within
    +-margin: exact, by integrating over the sample sd (chi distribution) the normal probability that the
    mean difference lands inside +-(margin - t_crit * s / sqrt(n))."""
    if n < 2:
        return 0.0
    if sd == 0.0:
        return 1.0 if abs(true_diff) < margin else 0.0
    df = n - 1
    crit = sps.t.ppf(1.0 - alpha, df)
    se_true = sd / math.sqrt(n)

    # Scalar math instead of scipy's vectorised pdf/cdf: quad calls this hundreds of times.
    log_norm = -0.5 * df * math.log(2.0) - math.lgamma(0.5 * df)

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))

    def inside(q: float) -> float:  # q ~ chi2(df): s = sd * sqrt(q / df)
        half = margin - crit * sd * math.sqrt(q / df) / math.sqrt(n)
        if half <= 0.0 or q <= 0.0:
            return 0.0
        p = phi((half - true_diff) / se_true) - phi((-half - true_diff) / se_true)
        return p * math.exp(log_norm + (0.5 * df - 1.0) * math.log(q) - 0.5 * q)

    q_max = df * (margin * math.sqrt(n) / (crit * sd)) ** 2  # beyond it the interval is empty
    lower, upper = sps.chi2.ppf(1e-12, df), min(q_max, sps.chi2.ppf(1.0 - 1e-12, df))
    if upper <= lower:
        return 0.0
    # The chi-square mass sits near q = df: point quad at it so that a wide range cannot hide it.
    points = [df] if lower < df < upper else None
    value, _ = integrate.quad(inside, lower, upper, limit=200, points=points)
    return float(min(1.0, max(0.0, value)))


def seeds_needed(power_at, target: float = 0.8, n_max: int = 1000) -> int | None:
    """The smallest n >= 2 with power_at(n) >= target (power grows with n), or None beyond n_max."""
    if power_at(n_max) < target:
        return None
    lo, hi = 2, n_max
    if power_at(lo) >= target:
        return lo
    while hi - lo > 1:  # invariant: power_at(lo) < target <= power_at(hi)
        mid = (lo + hi) // 2
        if power_at(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi
