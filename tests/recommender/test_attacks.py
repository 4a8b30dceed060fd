"""Attack building blocks: who is malicious, which items are pushed, what the fake data looks like."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.attacks import (
    AttackConfigError,
    choose_targets,
    exposure_hits,
    malicious_users,
    promote_items,
)


def test_malicious_users_fraction_seeded_and_nested():
    a = malicious_users(100, 0.2, seed=0)
    assert len(a) == 20 and len(np.unique(a)) == 20
    np.testing.assert_array_equal(a, malicious_users(100, 0.2, seed=0))
    assert set(malicious_users(100, 0.1, seed=0)) <= set(a)  # nested fractions
    assert len(malicious_users(100, 0.0, seed=0)) == 0
    with pytest.raises(AttackConfigError, match="attack.fraction"):
        malicious_users(100, 1.0, seed=0)


def test_targets_are_unpopular_items():
    pop = np.arange(100)  # item i has i interactions
    t = choose_targets(pop, 5, seed=1)
    assert len(t) == 5 and t.max() < 50 and t.min() > 0


def test_item_promotion_adds_fake_interactions():
    pos = np.array([1, 2, 3, 9])
    out = promote_items(pos, np.array([9, 20]), repeat=2)
    assert np.count_nonzero(out == 20) == 2 and np.count_nonzero(out == 9) == 2
    assert set(out) == {1, 2, 3, 9, 20}


def test_exposure_hits():
    top = np.array([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(exposure_hits(top, np.array([5])), [False, True])
