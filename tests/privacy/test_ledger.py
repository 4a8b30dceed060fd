"""Participation ledger: counts, cap K, histogram, state, worst-case epsilon."""

import json

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from privacy import ParticipationLedger, PrivacyError


def test_record_counts_and_histogram():
    ledger = ParticipationLedger(6)
    ledger.record([0, 2, 5])
    ledger.record(np.array([2, 5], dtype=np.int64))
    ledger.record([])
    assert ledger.counts.dtype == np.int32
    assert ledger.counts.tolist() == [1, 0, 2, 0, 0, 2]
    assert ledger.histogram().tolist() == [3, 1, 2]
    assert ledger.rounds == 3
    with pytest.raises(ValueError):
        ledger.counts[0] = 9  # read-only view
    with pytest.raises(PrivacyError, match="0..5"):
        ledger.record([6])
    with pytest.raises(PrivacyError, match="distinct"):
        ledger.record([1, 1])


def test_cap_makes_users_ineligible():
    ledger = ParticipationLedger(5, max_participations=2)
    everyone = np.arange(5)
    for _ in range(2):
        ledger.record(ledger.eligible([0, 1, 3]))
    assert ledger.eligible(everyone).tolist() == [2, 4]
    ledger.record(ledger.eligible(everyone))
    assert ledger.counts.max() == 2
    with pytest.raises(PrivacyError, match="max_participations"):
        ledger.record([0])


def test_cap_under_poisson_sampling():
    rng = np.random.default_rng(0)
    ledger = ParticipationLedger(200, max_participations=3)
    for _ in range(60):
        ledger.record(ledger.eligible(np.flatnonzero(rng.random(200) < 0.2)))
    assert ledger.counts.max() == 3
    assert ledger.histogram()[3] > 150


def test_state_round_trip_is_compact_json():
    ledger = ParticipationLedger(1000, max_participations=4)
    ledger.record(np.arange(0, 1000, 3))
    ledger.record(np.arange(0, 1000, 7))
    state = json.loads(json.dumps(ledger.state_dict()))
    assert len(json.dumps(state)) < 6000
    other = ParticipationLedger(1000, max_participations=4)
    other.load_state_dict(state)
    assert np.array_equal(other.counts, ledger.counts) and other.rounds == 2
    assert np.array_equal(ParticipationLedger.from_state_dict(state).counts, ledger.counts)
    with pytest.raises(PrivacyError, match="population"):
        ParticipationLedger(999).load_state_dict(state)


def test_worst_case_epsilon_is_unamplified_k_steps():
    ledger = ParticipationLedger(10, max_participations=5)
    opacus = RDPAccountant()
    opacus.history = [(1.2, 1.0, 5)]
    assert ledger.worst_case_epsilon(1.2, 1e-5) == opacus.get_epsilon(1e-5)
    free = ParticipationLedger(10)
    free.record([1, 2])
    free.record([2])
    assert free.worst_case_epsilon(1.2, 1e-5) == ledger.worst_case_epsilon(1.2, 1e-5, 2)
    assert free.worst_case_epsilon(1.2, 1e-5, accountant="prv") < free.worst_case_epsilon(1.2, 1e-5)
