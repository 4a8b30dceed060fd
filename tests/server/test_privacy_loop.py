"""The DP path of the round loop: Poisson sampling, the budget stop, received-noise accounting,
central noise on the sum, and epsilon continuity across a resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from privacy.config import default_delta
from strategies.aggregation import StreamingWeightedSum
from strategies.trust import ConstantTrust
from strategies.trust_fedavg import TrustWeightedFedAvg
from tests.server.inprocess import run_inprocess

N = 60
TINY = ["data=synthetic", f"data.users={N}", "data.items=200", "data.mean_interactions=15",
        "client.chunk_users=64", "simulation.eval_every=1000",
        "strategy.item_aggregation=mean"]  # fmt: skip  (sum x item_lr=100 x DP noise diverges, see below)


def opacus_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon straight from Opacus, independent of privacy.accountant."""
    acc = RDPAccountant()
    acc.history = list(history)
    return float(acc.get_epsilon(delta))


# ------------------------------------------------------------------------------- sampling (fast)
def _loop(tmp_path, extra: list[str]):
    from configs.store import compose_config
    from server.app import build_loop

    loop = build_loop(compose_config([*TINY, f"runs_dir={tmp_path}", "name=s", *extra]))
    loop.user_node = np.zeros(N, np.int32)  # every user hosted (what discover() fills in)
    return loop


def test_poisson_sampling_rate_in_the_loop(tmp_path):
    q, rounds = 0.2, 400
    loop = _loop(tmp_path, ["privacy=distributed", f"privacy.sample_rate={q}"])
    sizes, hits = [], np.zeros(N)
    for _ in range(rounds):
        users = loop._sample()
        assert np.unique(users).size == users.size
        sizes.append(users.size)
        hits[users] += 1
    sizes = np.asarray(sizes, float)
    # Each user independently with probability q: the round size is Binomial(N, q), not fixed.
    assert abs(sizes.mean() - q * N) < 4 * math.sqrt(q * (1 - q) * N / rounds)
    assert 0.7 < sizes.var() / (N * q * (1 - q)) < 1.3
    assert abs(hits.sum() / (rounds * N) - q) < 4 * math.sqrt(q * (1 - q) / (rounds * N))
    # Without DP: fixed-size sampling.
    off = _loop(tmp_path / "off", ["simulation.users_per_round=12"])
    assert {off._sample().size for _ in range(20)} == {12}


def test_participation_cap_filters_users(tmp_path):
    loop = _loop(tmp_path, ["privacy=distributed", "privacy.sample_rate=0.5", "privacy.max_participations=1"])
    first = loop._sample()
    loop.ledger.record(first)
    for _ in range(10):
        assert not np.isin(loop._sample(), first).any()


# ------------------------------------------------------------------------------- central noise (fast)
@pytest.mark.parametrize("item_aggregation", ["mean", "sum"])
def test_central_noise_is_added_to_the_sum(item_aggregation):
    """N(0, (zC)^2) lands on the weighted sum, so every later scaling applies to it (5% std)."""
    zc, denom, block, item_lr, dim = 1.5, 12.0, 30_000, 7.0, 60_000
    strat = TrustWeightedFedAvg(ConstantTrust(), threshold=0.0, fixed_denominator=denom, item_block=block,
                                item_aggregation=item_aggregation, item_lr=item_lr)  # fmt: skip
    rng = np.random.default_rng(0)
    strat.sum_noise = lambda d: rng.normal(0.0, zc, d)
    agg = StreamingWeightedSum(dim)
    agg.add(np.zeros(dim), 1.0, 1)  # one user with a zero update: the output is pure noise
    arrays, _ = strat.aggregate_sum(1, np.zeros(dim, np.float32), agg, 0.0, 0)
    new = arrays["shared"].numpy()
    item_std = item_lr * zc if item_aggregation == "sum" else zc / denom
    assert new[:block].std() == pytest.approx(item_std, rel=0.05)
    assert new[block:].std() == pytest.approx(zc / denom, rel=0.05)


# ------------------------------------------------------------------------------- integration (tiny)
@pytest.mark.integration
def test_budget_stop_fires_in_exactly_the_right_round(tmp_path):
    z, q, delta = 1.0, 0.2, default_delta(N)
    eps = [opacus_epsilon([(z, q, t)], delta) for t in range(1, 7)]
    expected = 3  # target between the epsilons after rounds 3 and 4: the stop must come before round 4
    target = (eps[expected - 1] + eps[expected]) / 2
    summary, loop = run_inprocess([*TINY, f"runs_dir={tmp_path}", "name=b", "privacy=central",
                                   f"privacy.sample_rate={q}", f"privacy.noise_multiplier={z}",
                                   f"privacy.target_epsilon={target}", "simulation.rounds=6"])  # fmt: skip
    assert summary["rounds"] == expected and summary["finished"]
    assert summary["epsilon"] == pytest.approx(eps[expected - 1], rel=1e-9)
    assert [h["epsilon"] for h in summary["per_round"]] == pytest.approx(eps[:expected], rel=1e-9)
    line = summary["stop_reason"]
    assert "\n" not in line
    assert f"round {expected + 1} would reach epsilon {eps[expected]:.3f}" in line
    assert f"stopped after round {expected} at epsilon {eps[expected - 1]:.3f}" in line
    assert "privacy.target_epsilon" in line
    run = tmp_path / "b"
    assert (run / "models" / "LATEST").read_text().strip() == f"v{expected:04d}"
    assert loop.run_dir.load_checkpoint()["round"] == expected
    assert json.loads((run / "summary.json").read_text())["stop_reason"] == line


@pytest.mark.integration
def test_zero_noise_is_infinite_epsilon_and_a_budget_stops_round_one(tmp_path):
    summary, _ = run_inprocess([*TINY, f"runs_dir={tmp_path}", "name=z", "privacy=distributed",
                                "privacy.noise_multiplier=0", "simulation.rounds=2"])  # fmt: skip
    assert math.isinf(summary["epsilon"]) and summary["rounds"] == 2
    summary, _ = run_inprocess([*TINY, f"runs_dir={tmp_path}", "name=zt", "privacy=distributed",
                                "privacy.noise_multiplier=0", "privacy.target_epsilon=10", "simulation.rounds=2"])  # fmt: skip
    assert summary["rounds"] == 0 and "round 1 would reach epsilon inf" in summary["stop_reason"]
    assert (tmp_path / "zt" / "checkpoints" / "last.pt").is_file()


@pytest.mark.integration
def test_resumed_run_ends_with_the_same_epsilon_and_ledger(tmp_path):
    # min_survivors = N: every round has fewer survivors than m_min, so each round is charged its own
    # received z * sqrt(s / m_min) and the history is not a single (z, q) run.
    z, q = 1.2, 0.25
    common = [*TINY, f"runs_dir={tmp_path}", "privacy=distributed", f"privacy.sample_rate={q}",
              f"privacy.noise_multiplier={z}", f"privacy.min_survivors={N}"]  # fmt: skip
    full, loop_full = run_inprocess([*common, "name=full", "simulation.rounds=4"])
    part, _ = run_inprocess([*common, "name=cut", "simulation.rounds=2"])
    assert part["rounds"] == 2
    resumed, loop_res = run_inprocess([*common, "name=cut", f"resume={tmp_path / 'cut'}", "simulation.rounds=4"])
    assert resumed["rounds"] == 4
    assert resumed["epsilon"] == full["epsilon"]
    assert loop_res.accountant.history == loop_full.accountant.history
    np.testing.assert_array_equal(loop_res.ledger.counts, loop_full.ledger.counts)
    # The charged noise is what the survivors actually added, and the epsilon is Opacus's for it.
    received = [(h["noise_multiplier_received"], q, 1) for h in full["per_round"]]
    for h in full["per_round"]:
        assert h["noise_multiplier_received"] == pytest.approx(z * math.sqrt(h["users"] / N))
    assert full["epsilon"] == pytest.approx(opacus_epsilon(received, default_delta(N)), rel=1e-9)


@pytest.mark.integration
def test_a_diverging_model_is_not_adopted_and_stops_the_run(tmp_path):
    # item_aggregation=sum moves item rows by item_lr (100) times the noised sum: noise std 100 per coordinate.
    overrides = [*TINY, "strategy.item_aggregation=sum", f"runs_dir={tmp_path}", "name=d", "privacy=central",
                 "privacy.sample_rate=0.3", "simulation.rounds=8"]  # fmt: skip
    summary, loop = run_inprocess(overrides)
    assert "not finite" in summary["stop_reason"] and "strategy.item_lr" in summary["stop_reason"]
    assert summary["rounds"] < 8 and np.isfinite(loop.theta).all()
    # The round whose noised sum the server saw is still charged.
    assert loop.accountant.num_steps == summary["rounds"] + 1
