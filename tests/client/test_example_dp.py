"""privacy.unit=example: DP-SGD inside local training (Opacus) and its per-user accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from client.example_dp import train_user_example_dp
from privacy.example import example_epsilons, example_sample_rate, example_steps_per_round
from recommender.local_training import LocalTrainConfig
from recommender.ncf import NeuMFShape, flatten_shared, init_private, init_shared


def _opacus(history, delta):
    acc = RDPAccountant()
    acc.history = list(history)
    return acc.get_epsilon(delta)


def test_steps_and_rates():
    assert example_sample_rate(100, 32) == 0.32 and example_sample_rate(10, 32) == 1.0
    assert example_steps_per_round(100, 32, 2) == 8 and example_steps_per_round(10, 32, 1) == 1


def test_example_epsilons_match_opacus():
    n = np.array([10, 100, 100, 400, 50])
    c = np.array([3, 2, 0, 5, 2])
    sigma, delta, bsz, epochs = 1.1, 1e-4, 32, 1
    eps = example_epsilons(n, c, sigma, delta, bsz, epochs)
    assert eps[2] == 0.0
    for i in (0, 1, 3, 4):
        ref = _opacus([(sigma, min(1.0, bsz / n[i]), c[i] * epochs * math.ceil(n[i] / bsz))], delta)
        # Integer RDP orders only: never below Opacus's default orders, and within 3% of them.
        assert ref <= eps[i] <= ref * 1.03, (i, ref, eps[i])


@pytest.fixture(scope="module")
def one_user():
    from recommender.data import generate_synthetic, leave_one_out

    sp = leave_one_out(generate_synthetic(n_users=30, n_items=200, mean_interactions=12, seed=2))
    u = int(np.argmin(np.diff(sp.train_indptr)))  # fewest records: n <= B, so q = 1 and one step
    shape = NeuMFShape(sp.n_items, 8)
    return sp, u, shape, flatten_shared(init_shared(shape)), init_private(1, shape)[0]


def _train(one_user, sigma, clip, **cfg):
    sp, u, shape, shared, private = one_user
    c = LocalTrainConfig(**cfg)
    new_shared, new_priv, _ = train_user_example_dp(shared, private, sp.train_of(u), sp.seen_of(u), shape, c,
                                                    sigma, clip, np.random.default_rng(0))  # fmt: skip
    return new_shared - shared, new_priv - private, len(sp.train_of(u))


def test_per_example_clipping_bounds_the_step(one_user):
    d_shared, d_priv, n = _train(one_user, 0.0, 1e-3, lr=0.5, private_lr=3.0)
    assert n <= 32
    # One step over all n records: the mean of n clipped gradients has norm <= C in every block.
    assert 0 < float(d_shared.norm()) <= 0.5 * 1e-3 * (1 + 1e-4)
    assert 0 < float(d_priv.norm()) <= 3.0 * 1e-3 * (1 + 1e-4)


def test_noise_std_is_sigma_c_over_batch(one_user):
    sigma, clip, lr = 2.0, 1e-6, 1.0
    d_shared, _, n = _train(one_user, sigma, clip, lr=lr)
    # Clipped gradients are negligible at C = 1e-6 next to the noise N(0, (sigma C)^2) / n.
    assert float(d_shared.std()) == pytest.approx(lr * sigma * clip / n, rel=0.05)
    assert torch.isfinite(d_shared).all()


@pytest.mark.integration
def test_example_level_run_reports_per_user_epsilon(tmp_path):
    from experiments.privacy_cli import report
    from tests.server.inprocess import run_inprocess

    overrides = ["data=synthetic", "data.users=30", "data.items=200", "data.mean_interactions=12",
                 "model.factors=8", "simulation.eval_every=1000", "simulation.users_per_round=6",
                 "simulation.rounds=2", "privacy.unit=example", "privacy.example_noise_multiplier=1.0",
                 f"runs_dir={tmp_path}", "name=ex"]  # fmt: skip
    summary, loop = run_inprocess(overrides)
    p = loop.cfg.privacy
    eps = example_epsilons(loop.train_counts, loop.ledger.counts, p.example_noise_multiplier,
                           p.resolved_delta(30), loop.cfg.client.batch_size, loop.cfg.client.epochs)  # fmt: skip
    assert summary["epsilon"] is None and summary["example_epsilon"] == pytest.approx(eps.max())
    assert math.isfinite(summary["example_epsilon"]) and summary["example_epsilon"] > 0
    rep = report(tmp_path / "ex")
    assert rep["example_level"]["epsilon_max"] == pytest.approx(eps.max())
    assert "with respect to any one of the user's ratings" in (tmp_path / "ex" / "privacy_report.md").read_text()
