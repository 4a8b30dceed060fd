"""The streamed secure-aggregation pipeline gives the bits of the dense one, noise and rounding included."""

import numpy as np
import pytest
import torch

from client.pipeline import process_chunk, quantised_sum
from client.secagg import quantization_config
from configs.store import compose_config
from recommender.local_training import CohortDelta
from recommender.ncf import NeuMFShape
from secure_agg import quantize_rows


def _delta(users: int, shape: NeuMFShape, seed: int) -> CohortDelta:
    rng = np.random.default_rng(seed)
    rows = [np.sort(rng.choice(shape.n_items, rng.integers(1, 20), replace=False)) for _ in range(users)]
    row_user = np.concatenate([np.full(len(r), u) for u, r in enumerate(rows)])
    order = rng.permutation(len(row_user))  # the trainer's ragged table is not sorted by user
    mlp = shape.shared_dim - 3 * shape.factors * shape.n_items
    return CohortDelta(torch.from_numpy(np.concatenate(rows)[order]), torch.from_numpy(row_user[order]),
                       torch.randn(len(order), 3 * shape.factors, generator=torch.Generator().manual_seed(seed)),
                       torch.randn(users, mlp, generator=torch.Generator().manual_seed(seed + 1)))  # fmt: skip


@pytest.mark.parametrize("privacy", ["privacy=distributed", "privacy=off"])
@pytest.mark.parametrize("users", [1, 16, 37])
def test_quantised_sum_is_dense_rows_quantised_in_blocks_and_summed(privacy, users):
    cfg = compose_config(["data=synthetic", "data.users=200", "secure_agg=on", privacy])
    shape = NeuMFShape(60, 4)
    delta = _delta(users, shape, users)
    w = np.random.default_rng(1).uniform(0, 1, users)
    q = quantization_config(cfg)
    rows = process_chunk(delta, w, cfg, shape, torch.Generator().manual_seed(5), individual=True).weighted.numpy()
    want, clipped, rng = np.zeros(shape.shared_dim + 1, np.uint32), 0, np.random.default_rng(6)
    for a in range(0, users, 16):
        qv, n = quantize_rows(rows[a : a + 16], w[a : a + 16], q, rng)
        want += qv.sum(0, dtype=np.uint32)
        clipped += n
    got = np.zeros_like(want)
    n = quantised_sum(delta, w, cfg, shape, torch.Generator().manual_seed(5), q, np.random.default_rng(6), got)
    np.testing.assert_array_equal(got, want)
    assert n == clipped
    if privacy == "privacy=off":
        assert n > 0  # unclipped N(0, 1) deltas beyond r are clipped by the quantiser and counted


@pytest.mark.parametrize("users", [1, 40])
def test_summed_chunk_carries_the_noise_of_every_user(users):
    """Without individual rows the chunk's sum gets one draw with the std of U users' noise summed."""
    from client.pipeline import _factors_and_std

    cfg = compose_config(["data=synthetic", "data.users=200", "privacy=distributed"])
    shape = NeuMFShape(400, 8)
    delta = _delta(users, shape, 3)
    w = np.random.default_rng(2).uniform(0, 1, users)
    factor, std = _factors_and_std(delta, w, cfg)
    exact = torch.zeros(shape.shared_dim, dtype=torch.float64)
    delta.sum_into(exact, shape, factor)
    got = process_chunk(delta, w, cfg, shape, torch.Generator().manual_seed(9)).weighted
    noise = (got - exact).numpy()
    assert std > 0 and shape.shared_dim > 10_000
    # d >= 10,000 coordinates: the sample sd is within 3% of the truth with overwhelming probability
    assert np.std(noise) == pytest.approx(std * np.sqrt(users), rel=0.03)
    assert abs(np.mean(noise)) < 5 * std * np.sqrt(users / shape.shared_dim)
    # and the individual rows' noise sums to the same distribution
    rows = process_chunk(delta, w, cfg, shape, torch.Generator().manual_seed(9), individual=True).weighted
    assert np.std(rows.sum(0, dtype=torch.float64).numpy() - exact.numpy()) == pytest.approx(
        std * np.sqrt(users), rel=0.03)
