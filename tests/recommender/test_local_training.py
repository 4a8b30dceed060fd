"""The cohort trainer must equal the one-user-at-a-time loop (same seeds)."""

import numpy as np
import pytest
import torch

from recommender.local_training import (
    LocalTrainConfig,
    build_schedule,
    train_cohort,
    train_user_sequential,
    user_rng,
)
from recommender.ncf import NeuMFShape, flatten_shared, init_private, init_shared


def _parity(split, optimizer, dtype, lr, freeze_shared=False):
    n = 20
    shape = NeuMFShape(split.n_items, 8)
    shared = flatten_shared(init_shared(shape, 1)).to(dtype)
    priv = init_private(n, shape, 2).to(dtype)
    cfg = LocalTrainConfig(epochs=2, batch_size=16, negatives=4, lr=lr, optimizer=optimizer, private_lr=lr * 4)
    sched = [build_schedule(split.train_of(u), split.seen_of(u), split.n_items, cfg, user_rng(0, 1, u)) for u in range(n)]
    delta, new_priv, losses = train_cohort(shared, priv, sched, shape, cfg, freeze_shared=freeze_shared)
    dense = delta.dense(shape)
    err = 0.0
    for u in range(n):
        new_shared, p_u, loss_u = train_user_sequential(shared, priv[u], sched[u], shape, cfg, freeze_shared)
        err = max(err, (new_shared - shared - dense[u]).abs().max().item(), (p_u - new_priv[u]).abs().max().item())
        assert abs(loss_u - losses[u].item()) < 1e-5
    return err, dense, delta


def test_cohort_equals_sequential_sgd(small_split):
    err, dense, delta = _parity(small_split, "sgd", torch.float32, 0.05)
    assert err < 1e-5
    assert torch.allclose(delta.norms(), dense.norm(dim=1), rtol=1e-5)


def test_cohort_equals_sequential_adam_float64(small_split):
    # Adam divides by sqrt(v): in float32 that amplifies summation-order rounding to ~1e-4, so the
    # exactness of the batched Adam is checked in float64.
    torch.set_default_dtype(torch.float64)
    try:
        err, _, _ = _parity(small_split, "adam", torch.float64, 0.01)
    finally:
        torch.set_default_dtype(torch.float32)
    assert err < 1e-5


@pytest.mark.parametrize("optimizer,dtype,lr", [("sgd", torch.float32, 0.05), ("adam", torch.float64, 0.01)])
def test_frozen_cohort_equals_sequential(small_split, optimizer, dtype, lr):
    # The fold-in path (shared frozen) computes the user-embedding gradients by hand, without
    # autograd; the sequential nn.Module path is the reference.
    torch.set_default_dtype(dtype)
    try:
        err, dense, _ = _parity(small_split, optimizer, dtype, lr, freeze_shared=True)
    finally:
        torch.set_default_dtype(torch.float32)
    assert err < 1e-5
    assert dense.abs().max() == 0


def test_sparse_sum_matches_dense(small_split):
    _, dense, delta = _parity(small_split, "sgd", torch.float32, 0.05)
    shape = NeuMFShape(small_split.n_items, 8)
    acc = torch.zeros(shape.shared_dim, dtype=torch.float64)
    delta.sum_into(acc, shape)
    assert torch.allclose(acc.float(), dense.sum(0), atol=1e-6)


def test_fold_in_freezes_shared(small_split):
    shape = NeuMFShape(small_split.n_items, 8)
    shared = flatten_shared(init_shared(shape, 1))
    cfg = LocalTrainConfig(epochs=1, batch_size=16)
    sched = [build_schedule(small_split.train_of(0), small_split.seen_of(0), small_split.n_items, cfg, user_rng(0, 1, 0))]
    delta, new_priv, _ = train_cohort(shared, init_private(1, shape, 0), sched, shape, cfg, freeze_shared=True)
    assert delta.item_delta.abs().max() == 0 and delta.mlp_delta.abs().max() == 0
    assert not torch.equal(new_priv, init_private(1, shape, 0))


def test_bad_config_names_the_key():
    with pytest.raises(ValueError, match="client.optimizer"):
        LocalTrainConfig(optimizer="rmsprop").validate()
    assert np.isfinite(LocalTrainConfig().user_lr)


def test_sequential_path_has_the_cohort_contract(small_split):
    from recommender.local_training import train_sequentially

    shape = NeuMFShape(small_split.n_items, 8)
    shared = flatten_shared(init_shared(shape, 1))
    priv = init_private(6, shape, 2)
    cfg = LocalTrainConfig(epochs=1, batch_size=16)
    sched = [build_schedule(small_split.train_of(u), small_split.seen_of(u), small_split.n_items, cfg,
                            user_rng(0, 1, u)) for u in range(6)]
    a, pa, la = train_cohort(shared, priv, sched, shape, cfg)
    b, pb, lb = train_sequentially(shared, priv, sched, shape, cfg)
    assert torch.allclose(a.dense(shape), b.dense(shape), atol=1e-5)
    assert torch.allclose(pa, pb, atol=1e-5) and torch.allclose(la, lb, atol=1e-5)
