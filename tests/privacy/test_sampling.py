"""Poisson and fixed-size user sampling."""

import numpy as np
import pytest
from scipy import stats

from privacy import PrivacyError, fixed_size_sample, poisson_sample, sample_users


def test_poisson_sample_has_the_right_rate():
    rng = np.random.default_rng(0)
    population, rate, rounds = 5000, 0.03, 200
    picks = [poisson_sample(population, rate, rng) for _ in range(rounds)]
    total = sum(p.size for p in picks)
    # Two-sided exact binomial test on all inclusion decisions.
    assert stats.binomtest(total, population * rounds, rate).pvalue > 1e-3
    # Each user independently: per-user counts are Binomial(rounds, rate).
    counts = np.bincount(np.concatenate(picks), minlength=population)
    assert counts.mean() == pytest.approx(rounds * rate, rel=0.02)
    assert counts.var() == pytest.approx(rounds * rate * (1 - rate), rel=0.1)
    for p in picks[:5]:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)


def test_poisson_edges():
    rng = np.random.default_rng(1)
    assert poisson_sample(10, 0.0, rng).size == 0
    assert np.array_equal(poisson_sample(10, 1.0, rng), np.arange(10))
    with pytest.raises(PrivacyError, match="sample_rate"):
        poisson_sample(10, 1.5, rng)


def test_fixed_size_sample_distinct_and_sized():
    rng = np.random.default_rng(2)
    s = fixed_size_sample(100, 17, rng)
    assert s.dtype == np.int64 and s.size == 17 and np.unique(s).size == 17
    with pytest.raises(PrivacyError):
        fixed_size_sample(10, 11, rng)


def test_sample_users_dispatch():
    sizes = {sample_users(False, 1000, np.random.default_rng(s), 0.05).size for s in range(5)}
    assert sizes == {50}
    sizes_dp = {sample_users(True, 1000, np.random.default_rng(s), 0.05).size for s in range(20)}
    assert len(sizes_dp) > 1  # Poisson: the round size varies
    assert sample_users(False, 1000, np.random.default_rng(0), 0.05, size=7).size == 7
