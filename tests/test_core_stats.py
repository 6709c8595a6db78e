"""Statistics used by the comparison table, checked against scipy (a test-only dependency via sklearn)."""

from __future__ import annotations

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
