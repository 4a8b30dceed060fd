"""Trust scorers on constructed updates: outliers get low trust, honest updates ~1, weights in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.reputation import ReputationTrust, ema_update
from strategies.trust import SCORERS, ConstantTrust, create_scorer
from strategies.update_trust import (
    UpdateTrust,
    cosine_to_reference,
    norm_score,
    relative_cosine_score,
    update_trust_scores,
)


def honest_updates(n: int = 40, d: int = 200, seed: int = 0) -> np.ndarray:
    """Updates sharing a common direction, with heterogeneous norms and per-user noise."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=d)
    scale = np.exp(rng.normal(0, 0.4, size=n))[:, None]
    return (scale * (common + 0.8 * rng.normal(size=(n, d)))).astype(np.float32)


def test_registry_has_every_scorer():
    assert isinstance(create_scorer("update"), UpdateTrust)
    assert {"constant", "update", "reputation"} <= set(SCORERS)
    with pytest.raises(ValueError, match="unknown trust scorer"):
        create_scorer("nope")


def test_honest_updates_get_trust_about_one():
    t = update_trust_scores(honest_updates())
    assert t.min() >= 0.6  # nobody honest is excluded
    assert t.mean() > 0.95 and np.median(t) == 1.0


@pytest.mark.parametrize("attack", ["boost", "flip", "noise"])
def test_outliers_get_low_trust(attack):
    d = honest_updates()
    bad = np.arange(8)  # 20% malicious
    rng = np.random.default_rng(1)
    if attack == "boost":
        d[bad] *= 20.0
    elif attack == "flip":
        d[bad] *= -1.0
    else:
        d[bad] = rng.normal(0, 20.0, size=d[bad].shape)  # random direction, large norm
    t = update_trust_scores(d)
    assert t[bad].max() < 0.6, t[bad]
    assert np.median(t[8:]) == 1.0 and (t[8:] >= 0.6).mean() >= 0.95


def test_weights_stay_in_unit_interval():
    rng = np.random.default_rng(2)
    for _ in range(20):
        d = (rng.normal(size=(30, 50)) * rng.exponential(size=(30, 1)) * 10 ** rng.uniform(-3, 3)).astype(np.float32)
        d[rng.integers(30)] = 0.0  # a zero update has no direction
        t = update_trust_scores(d)
        assert np.all((t >= 0) & (t <= 1)) and np.all(np.isfinite(t))
    assert np.all((norm_score(np.array([0.0, 1.0, 1e9]), 3.0) <= 1) & (norm_score(np.array([0.0, 1.0, 1e9]), 3.0) >= 0))


def test_root_reference_is_used():
    d = honest_updates()
    flipped_reference = -np.median(d, axis=0)  # a root reference pointing the other way flips the verdict
    scorer = UpdateTrust(reference="root", reference_fn=lambda theta: flipped_reference)
    scorer.theta = np.zeros(d.shape[1], np.float32)
    assert scorer.score_updates(np.arange(len(d)), d).max() < 0.6
    with pytest.raises(ValueError, match="root"):
        UpdateTrust(reference="root")


def test_cosine_edge_cases():
    d = np.array([[1.0, 0.0], [0.0, 0.0], [-2.0, 0.0]], np.float32)
    np.testing.assert_allclose(cosine_to_reference(d, np.array([3.0, 0.0])), [1.0, 0.0, -1.0])


def test_reputation_drops_for_outliers_and_is_next_rounds_weight():
    rep = ReputationTrust(decay=0.5)
    users = np.arange(40)
    assert np.all(rep.weights_for_round(users) == 1.0)  # prior before any evidence
    for _ in range(3):
        d = honest_updates(seed=_)
        d[:8] *= -1.0
        rep.observe(users, d)
    w = rep.weights_for_round(users)
    assert w[:8].max() < 0.6 and np.median(w[8:]) == 1.0
    assert np.all((w >= 0) & (w <= 1))
    np.testing.assert_allclose(ema_update(np.array([1.0]), np.array([0.0]), 0.5), [0.5])


def test_reputation_state_round_trip_and_norm_evidence():
    rep = ReputationTrust()
    rep.observe_norms(np.array([3, 5, 7, 9]), np.array([1.0, 1.0, 1.0, 100.0]))
    restored = ReputationTrust()
    restored.load_state_dict(rep.state_dict())
    np.testing.assert_allclose(restored.weights_for_round(np.array([3, 9, 11])), rep.weights_for_round(np.array([3, 9, 11])))
    assert restored.weights_for_round(np.array([9]))[0] < 0.6


def test_constant_trust_has_no_update_scoring():
    c = ConstantTrust()
    assert not c.needs_updates
    with pytest.raises(NotImplementedError):
        c.score_updates(np.arange(2), np.zeros((2, 3)))


def spread_updates(n: int = 400, d: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Honest updates whose cosine to ``ref`` is spread like late-training ML-100K (median ~0.46,
    ~13% below -0.1): unit vectors with cosine ~ N(0.46, 0.5) to ``ref``."""
    rng = np.random.default_rng(seed)
    ref = np.zeros(d)
    ref[0] = 1.0
    c = np.clip(rng.normal(0.46, 0.5, n), -0.95, 0.95)
    noise = rng.normal(size=(n, d))
    noise[:, 0] = 0.0
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (c[:, None] * ref + np.sqrt(1 - c**2)[:, None] * noise).astype(np.float32), ref


def test_relative_cosine_ramp_keeps_spread_honest_updates():
    x, ref = spread_updates()
    fixed = update_trust_scores(x, ref, cos_z_low=0.0)
    relative = update_trust_scores(x, ref, cos_z_low=3.0, cos_z_high=1.5)
    assert (fixed < 0.6).mean() > 0.10  # the fixed ramp drops every honest update under cosine -0.1
    assert (relative < 0.6).mean() < 0.03
    assert np.all(relative >= fixed)  # the relative ramp only ever forgives


def test_relative_cosine_ramp_still_drops_flips_when_honest_users_agree():
    d = honest_updates()
    d[:8] *= -1.0
    t = UpdateTrust().score_updates(np.arange(len(d)), d)  # relative ramp on by default
    assert t[:8].max() < 0.6 and (t[8:] >= 0.6).mean() >= 0.95


def test_relative_cosine_score_edge_cases():
    cos = np.array([0.5, 0.5, 0.5, -0.9])
    np.testing.assert_array_equal(relative_cosine_score(cos, 0.0, 1.5), np.zeros(4))  # off
    np.testing.assert_array_equal(relative_cosine_score(cos, 3.0, 1.5), [1.0, 1.0, 1.0, 0.0])  # MAD 0
    s = relative_cosine_score(np.linspace(-1, 1, 101), 3.0, 1.5)
    assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s) >= 0)
    with pytest.raises(ValueError, match="cos_z_low"):
        UpdateTrust(cos_z_low=1.0, cos_z_high=1.5)
