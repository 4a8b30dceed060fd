"""Naive and advanced composition formulas."""

import math

import pytest

from privacy import PrivacyError, advanced_composition, naive_composition


def test_naive():
    assert naive_composition(0.5, 10, 1e-6) == pytest.approx((5.0, 1e-5))


def test_advanced_drv_numbers():
    # sqrt(2 T ln(1/delta')) eps + T eps (e^eps - 1), T = 100, eps = 1:
    eps, delta = advanced_composition(1.0, 100, 1e-5)
    assert eps == pytest.approx(math.sqrt(200 * math.log(1e5)) + 100 * (math.e - 1))
    assert eps == pytest.approx(219.81, abs=0.01)  # delta' = 1e-5
    assert delta == pytest.approx(1e-5)
    # The often-quoted ~228.6 is the same formula at delta' = 1e-7.
    assert advanced_composition(1.0, 100, 1e-7)[0] == pytest.approx(228.6, abs=0.01)


def test_advanced_beats_naive_only_for_small_eps():
    assert advanced_composition(0.01, 1000, 1e-5)[0] < naive_composition(0.01, 1000)[0]
    assert advanced_composition(1.0, 100, 1e-5)[0] > naive_composition(1.0, 100)[0]
    assert advanced_composition(0.1, 0, 1e-5) == (0.0, 0.0)
    with pytest.raises(PrivacyError):
        advanced_composition(1.0, 10, 0.0)
