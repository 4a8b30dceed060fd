"""Trust-weighted and Flower-robust aggregation of per-user rows; reputation through a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from configs.store import compose_config
from server.loop import RoundLoop
from server.rundir import RunDir
from strategies.robust import RULES, RobustAggregation, robust_aggregate
from strategies.trust import ConstantTrust
from strategies.trust_fedavg import TrustWeightedFedAvg, unweight_rows
from strategies.update_trust import UpdateTrust
from tests.strategies.test_trust_scorers import honest_updates


def attacked(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    d = honest_updates(n=40, d=60, seed=seed)
    d[:8] = -10.0 * d[:8]  # 20% boosted sign flips
    return d, np.arange(8)


def test_unweight_rows_recovers_deltas_and_zeroes_excluded():
    d = honest_updates(n=6, d=5)
    w = np.array([1.0, 0.5, 0.25, 1e-6, 0.0, 1.0])
    users, deltas, weights = unweight_rows([(np.arange(3), w[:3, None] * d[:3], w[:3]),
                                            (np.arange(3, 6), w[3:, None] * d[3:], w[3:])], excluded={3})  # fmt: skip
    np.testing.assert_allclose(deltas[[0, 1, 2, 3, 5]], d[[0, 1, 2, 3, 5]], rtol=1e-4)
    assert weights[3] == 0.0 and weights[4] == 0.0 and weights[5] == 1.0


def test_update_trust_reweights_the_round_before_summing():
    d, bad = attacked()
    w = np.full(len(d), 0.5)
    s = TrustWeightedFedAvg(UpdateTrust(), threshold=0.6)
    s._theta = np.zeros(d.shape[1], np.float32)
    total, weight = s.combine_rows(1, np.arange(len(d)), d, w)
    assert s.last_excluded_updates >= len(bad)
    honest_mean = d[8:].mean(0)
    cos = total @ honest_mean / (np.linalg.norm(total) * np.linalg.norm(honest_mean))
    assert cos > 0.95 and weight <= w.sum()
    diag = s.last_diagnostics  # the 8 flips are out for their direction, most also for their norm (x10)
    assert diag["trust-excluded-cos"] >= len(bad) and diag["trust-excluded-norm"] >= len(bad) - 2
    assert diag["trust-weight-kept"] == pytest.approx(weight / w.sum())
    plain = TrustWeightedFedAvg(ConstantTrust(), threshold=0.0)
    t2, w2 = plain.combine_rows(1, np.arange(len(d)), d, w)
    assert t2 @ honest_mean < 0  # plain FedAvg is dragged the wrong way
    np.testing.assert_allclose(t2 / w2, (w[:, None] * d).sum(0) / w.sum(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rule", RULES)
def test_flower_rules_resist_the_attack(rule):
    d, _ = attacked()
    agg = robust_aggregate(rule, d, np.ones(len(d)), num_malicious=8)
    honest_mean = d[8:].mean(0)
    assert agg.shape == (d.shape[1],)
    # Krum returns one (honest) user's update: noisier than an average, but on the honest side
    assert agg @ honest_mean / (np.linalg.norm(agg) * np.linalg.norm(honest_mean)) > (0.4 if rule == "krum" else 0.8)


def test_bulyan_skips_when_too_few_updates():
    d, _ = attacked()
    assert robust_aggregate("bulyan", d[:20], np.ones(20), num_malicious=5) is None
    s = RobustAggregation("bulyan", assumed_fraction=0.3)
    total, weight = s.combine_rows(1, np.arange(20), d[:20], np.ones(20))
    assert weight == 0.0 and not total.any()


def test_median_matches_numpy_and_scales_by_weight_sum():
    d = honest_updates(n=9, d=7)
    s = RobustAggregation("median")
    total, weight = s.combine_rows(1, np.arange(9), d, np.full(9, 0.5))
    np.testing.assert_allclose(total / weight, np.median(d, axis=0), rtol=1e-6)


def _loop(tmp_path, name: str) -> RoundLoop:
    cfg = compose_config(["data=synthetic", "data.users=50", "data.items=200", "strategy=trust_reputation",
                          f"runs_dir={tmp_path}", f"name={name}"])  # fmt: skip
    return RoundLoop(cfg, RunDir(tmp_path / name), n_items=200)


def test_reputation_survives_checkpoint_and_resume(tmp_path):
    loop = _loop(tmp_path, "a")
    assert loop.strategy.needs_individual_updates
    d, bad = attacked()
    users = np.arange(10, 50)
    loop.strategy.scorer.observe(users, d)
    before = loop.strategy.scorer.weights_for_round(users)
    assert before[bad].max() < 0.6
    loop.run_dir.save_checkpoint(loop.state_dict())
    resumed = _loop(tmp_path, "b")
    resumed.load_state_dict(RunDir(tmp_path / "a").load_checkpoint())
    np.testing.assert_allclose(resumed.strategy.scorer.weights_for_round(users), before)
    plan = resumed.strategy.plan_round({7: users})
    assert resumed.strategy.last_excluded == len(bad)
    assert np.all(plan[7][1][bad] < 1e-5)  # probe weight only: the sum gives them 0


def test_secure_aggregation_refuses_update_scoring():
    from strategies.factory import create_strategy

    cfg = compose_config(["data=synthetic", "data.users=50", "data.items=200", "strategy=trust_update",
                          "secure_agg=on"])  # fmt: skip
    with pytest.raises(ValueError, match="reputation"):
        create_strategy(cfg, RoundLoop(compose_config(["data=synthetic", "data.users=50", "data.items=200"]),
                                       RunDir("/tmp/unused-fedrec"), 200).shape)  # fmt: skip
