"""The accountant agrees with Opacus exactly and with Google dp_accounting within 1%."""

import json
import math
import pickle

import dp_accounting
import numpy as np
import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from privacy import (
    PrivacyAccountant,
    PrivacyError,
    available_accountants,
    compact_history,
    create_accountant,
    noise_for_target_epsilon,
    pld_epsilon,
    recompute_epsilons,
    register_accountant,
)

DELTA = 1e-5


def _opacus(cls, history):
    acc = cls()
    acc.history = list(history)
    return acc.get_epsilon(DELTA)


def _google_rdp(history):
    acc = dp_accounting.rdp.RdpAccountant()
    for z, q, n in history:
        acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), n)
    return acc.get_epsilon(DELTA)


MIXED = [(1.0, 0.1, 7), (0.8, 0.05, 3), (1.0, 0.1, 12)]


def test_rdp_equals_opacus_exactly_stepwise():
    ours = PrivacyAccountant("rdp")
    for z, q, n in MIXED:
        for _ in range(n):
            ours.step(z, q)
    assert ours.history == MIXED
    assert ours.get_epsilon(DELTA) == _opacus(RDPAccountant, MIXED)


def test_prv_equals_opacus():
    ours = PrivacyAccountant("prv")
    ours.step(1.0, 0.1, steps=40)
    assert ours.get_epsilon(DELTA) == pytest.approx(_opacus(PRVAccountant, [(1.0, 0.1, 40)]))


@pytest.mark.parametrize("q", [0.01, 0.1])
@pytest.mark.parametrize("z", [0.8, 2.0])
@pytest.mark.parametrize("steps", [10, 100])
def test_rdp_matches_google_rdp_within_1pct(q, z, steps):
    # Grid where the optimal RDP order is inside both libraries' order sets;
    # for eps >~ 15 Opacus uses fractional orders near 1 that dp_accounting drops.
    ours = PrivacyAccountant("rdp")
    ours.step(z, q, steps)
    assert ours.get_epsilon(DELTA) == pytest.approx(_google_rdp(ours.history), rel=0.01)


@pytest.mark.parametrize(
    "history",
    [
        [(0.8, 0.1, 10)],
        [(1.0, 0.1, 100)],
        [(2.0, 0.1, 100)],
        [(0.8, 0.01, 100)],
        [(1.0, 0.5, 10)],
        [(1.0, 0.1, 20), (0.7, 0.1, 5)],
    ],
)
def test_prv_matches_google_pld_within_1pct(history):
    # PRV returns eps_upper = estimate + 0.01, so the grid keeps eps >~ 1.5.
    ours = PrivacyAccountant("prv")
    for z, q, n in history:
        ours.step(z, q, n)
    assert ours.get_epsilon(DELTA) == pytest.approx(pld_epsilon(history, DELTA), rel=0.01)


def test_history_compaction():
    acc = PrivacyAccountant()
    for z in [1.0, 1.0, 0.5, 0.5, 0.5, 1.0]:
        acc.step(z, 0.1)
    acc.step(1.0, 0.1, steps=3)
    acc.step(1.0, 0.2, steps=0)
    assert acc.history == [(1.0, 0.1, 2), (0.5, 0.1, 3), (1.0, 0.1, 4)]
    assert acc.num_steps == len(acc) == 9
    assert compact_history([[1, 0.1, 2], [1.0, 0.1, 1]]) == [(1.0, 0.1, 3)]
    with pytest.raises(PrivacyError, match="sample_rate"):
        acc.step(1.0, 1.5)


@pytest.mark.parametrize("mechanism", ["rdp", "prv"])
def test_state_dict_round_trip_through_json(mechanism):
    acc = create_accountant(mechanism)
    for z, q, n in MIXED:
        acc.step(z, q, n)
    state = json.loads(json.dumps(acc.state_dict()))
    restored = PrivacyAccountant(mechanism)
    restored.load_state_dict(state)
    assert restored.history == acc.history
    assert restored.get_epsilon(DELTA) == acc.get_epsilon(DELTA)
    assert PrivacyAccountant.from_state_dict(state).mechanism == mechanism
    with pytest.raises(PrivacyError):
        restored.load_state_dict({"mechanism": "rdp"})


def test_epsilon_if_step_does_not_mutate():
    acc = PrivacyAccountant()
    acc.step(1.0, 0.1, 5)
    before = acc.history
    peek = acc.epsilon_if_step(1.0, 0.1, DELTA)
    assert acc.history == before
    acc.step(1.0, 0.1)
    assert acc.get_epsilon(DELTA) == peek


def test_degenerate_cases_do_not_crash():
    for mechanism in ("rdp", "prv"):
        acc = PrivacyAccountant(mechanism)
        assert acc.get_epsilon(DELTA) == 0.0
        acc.step(1.0, 0.0, 3)  # nobody sampled: nothing released
        assert acc.get_epsilon(DELTA) == 0.0
        assert math.isinf(acc.epsilon_if_step(0.0, 0.1, DELTA))
        acc.step(0.0, 0.1)
        assert math.isinf(acc.get_epsilon(DELTA))
    assert math.isinf(pld_epsilon([(0.0, 0.1, 1)], DELTA))
    with pytest.raises(PrivacyError, match="delta"):
        PrivacyAccountant().get_epsilon(0.0)


def test_registry():
    assert set(available_accountants()) >= {"rdp", "prv"}
    with pytest.raises(PrivacyError, match="privacy.accountant"):
        PrivacyAccountant("gdp-typo")
    with pytest.raises(PrivacyError, match="already registered"):
        register_accountant("rdp", lambda h, d: 0.0)


def test_recompute_epsilons_matches_stepping():
    acc = PrivacyAccountant()
    stepwise = []
    for z, q, n in MIXED:
        for _ in range(n):
            acc.step(z, q)
            stepwise.append(acc.get_epsilon(DELTA))
    curve = recompute_epsilons(acc.history, DELTA, "rdp")
    assert curve.shape == (22,) and curve.dtype == np.float64
    np.testing.assert_array_equal(curve, stepwise)
    assert np.all(np.diff(curve) > 0)
    prv = recompute_epsilons(acc.history, DELTA, "prv", rounds=[5, 22])
    assert prv.shape == (2,) and np.all(prv < curve[[4, 21]])  # PRV is tighter
    with pytest.raises(PrivacyError, match="outside"):
        recompute_epsilons(acc.history, DELTA, rounds=[23])


def test_noise_for_target_epsilon_reaches_target():
    target, q, rounds = 4.0, 0.1, 50
    z = noise_for_target_epsilon(target, q, rounds, DELTA, "rdp")
    eps = _opacus(RDPAccountant, [(z, q, rounds)])
    assert target - 0.01 <= eps <= target
    with pytest.raises(PrivacyError, match="target_epsilon"):
        noise_for_target_epsilon(0.0, q, rounds, DELTA)


def test_budget_exception_pickles():
    from privacy import PrivacyBudgetExceeded

    err = PrivacyBudgetExceeded(8.312, 8.0, 41)
    assert str(err).startswith(
        "epsilon 8.31 > target 8 after round 41; raise privacy.target_epsilon"
    )
    again = pickle.loads(pickle.dumps(err))
    assert (again.epsilon, again.target_epsilon, again.round_num) == (8.312, 8.0, 41)
    assert str(again) == str(err)


def test_prv_failure_falls_back_to_rdp(monkeypatch, caplog):
    def broken(self, delta, **kwargs):
        raise RuntimeError("Discrete mean differs significantly from continuous mean.")

    monkeypatch.setattr(PRVAccountant, "get_epsilon", broken)
    prv, rdp = PrivacyAccountant("prv"), PrivacyAccountant("rdp")
    for acc in (prv, rdp):
        acc.step(1.0, 0.1, 10)
    with caplog.at_level("WARNING", logger="privacy.accountant"):
        assert prv.get_epsilon(DELTA) == rdp.get_epsilon(DELTA)
    assert "using the RDP bound" in caplog.text
