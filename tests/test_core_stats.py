"""Statistics used by the comparison table, checked against scipy (a test-only dependency via sklearn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ftmed_core.stats import summarize, t_cdf, t_ppf, tost, welch


@pytest.mark.parametrize("df", [1, 2, 3.7, 10, 100])
def test_t_distribution_matches_scipy(df):
    for t in (-5.0, -1.3, 0.0, 0.4, 2.2, 9.0):
        assert t_cdf(t, df) == pytest.approx(sps.t.cdf(t, df), abs=1e-10)
    for q in (0.025, 0.05, 0.5, 0.95, 0.975):
        assert t_ppf(q, df) == pytest.approx(sps.t.ppf(q, df), abs=1e-8)


def test_welch_matches_scipy():
    a, b = [60.1, 61.3, 59.8], [58.2, 59.9, 58.7, 59.1]
    d = welch(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert d.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    ci = ref.confidence_interval(0.95)
    assert (d.low, d.high) == (pytest.approx(ci.low, rel=1e-8), pytest.approx(ci.high, rel=1e-8))
    assert summarize(a).std == pytest.approx(np.std(a, ddof=1))


def test_tost_verdicts():
    rng = np.random.default_rng(0)
    same = rng.normal(60, 0.2, 10), rng.normal(60.05, 0.2, 10)
    assert tost(*same, margin=1.0).equivalent
    far = rng.normal(60, 0.2, 10), rng.normal(63, 0.2, 10)
    result = tost(*far, margin=1.0)
    assert not result.equivalent and result.verdict.startswith("different")
    noisy = [55.0, 65.0], [60.0, 58.0]
    assert tost(*noisy, margin=1.0).verdict.startswith("not shown equivalent")
    assert tost([60.0], [60.0], margin=1.0).verdict.startswith("n/a")


def test_paired_difference_matches_scipy_and_beats_welch_on_paired_data():
    from ftmed_core.stats import paired_difference

    a = [63.12, 62.70, 63.55, 61.90]
    b = [63.20, 62.65, 63.60, 62.00]
    d = paired_difference(a, b)
    ref = sps.ttest_rel(a, b)
    assert d.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    ci = ref.confidence_interval(0.95)
    assert (d.low, d.high) == (pytest.approx(ci.low, rel=1e-8), pytest.approx(ci.high, rel=1e-8))
    # The seed-to-seed spread (~0.7) cancels in the pairs: equivalence within 1 pp shows paired, not unpaired.
    assert tost(a, b, 1.0, paired=True).equivalent
    assert not tost(a, b, 1.0).equivalent


def test_zero_spread_gives_no_p_value_no_interval_and_no_verdict():
    """Every pair differing by the same amount leaves nothing to test against: no p = 0, no zero-width CI."""
    from ftmed_core.stats import constant_text, paired_difference

    base = [80.0, 82.0, 81.0]
    shifted = [x + 0.5 for x in base]
    d = paired_difference(shifted, base)
    assert d.constant and d.diff == pytest.approx(0.5)
    assert math.isnan(d.p_value) and math.isnan(d.low) and math.isnan(d.high) and math.isnan(d.effect_size)
    same = paired_difference(base, list(base))
    assert same.constant and same.diff == 0.0 and math.isnan(same.p_value)
    # Unpaired: both sides constant.
    w = welch([81.0, 81.0], [80.0, 80.0])
    assert w.constant and w.diff == 1.0 and math.isnan(w.p_value) and math.isnan(w.low)
    # One side with spread is a real test.
    assert not welch([81.0, 82.0], [80.0, 80.0]).constant
    assert not paired_difference([81.0, 82.5], [80.0, 81.0]).constant
    assert constant_text(0.0, 3) == "identical in all 3 seeds"
    assert constant_text(0.5, 3) == "the same shift (+0.50 pp) in all 3 seeds"


@pytest.mark.parametrize("paired", [True, False])
def test_tost_with_zero_spread_is_not_equivalent_and_says_why(paired):
    """Two seeds one test image apart in each: 'equivalent' would be certainty from nothing."""
    a, b = [80.0, 80.5], [80.0 - 0.01, 80.5 - 0.01]
    result = tost(a, b, margin=1.0, paired=True)
    assert not result.equivalent and math.isnan(result.p_value)
    assert result.verdict == "the same shift (+0.01 pp) in all 2 seeds"
    identical = tost(a, list(a), margin=1.0, paired=True)
    assert identical.verdict == "identical in all 2 seeds" and not identical.equivalent
    if not paired:
        flat = tost([80.0, 80.0], [79.0, 79.0], margin=1.0)
        assert not flat.equivalent and math.isnan(flat.p_value) and flat.verdict.startswith("no spread on either side")
    far = tost([x + 5 for x in a], b, margin=1.0, paired=True)  # constant and far: still no "different"
    assert not far.verdict.startswith("different") and "same shift (+5.01 pp)" in far.verdict
