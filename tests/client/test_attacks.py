"""Model-poisoning transforms and the node's attack hook on a tiny population."""

from __future__ import annotations

import numpy as np
import torch

from client.attacks import AttackHook, boost, boost_item_rows, gaussian_noise, sign_flip
from configs.store import compose_config
from recommender.local_training import CohortDelta, build_schedule, train_cohort, user_rng
from recommender.ncf import NeuMFShape, flatten_shared, init_private, init_shared


def tiny_delta() -> CohortDelta:
    rows = torch.tensor([0, 3, 1, 3, 2])
    row_user = torch.tensor([0, 0, 1, 1, 2])
    return CohortDelta(rows, row_user, torch.arange(30, dtype=torch.float32).view(5, 6) + 1,
                       torch.ones(3, 4))  # fmt: skip


MASK = torch.tensor([False, True, False])


def test_boost_and_sign_flip_touch_only_malicious_users():
    d = tiny_delta()
    b, f = boost(d, MASK, 10.0), sign_flip(d, MASK)
    np.testing.assert_allclose(b.norms()[1], 10 * d.norms()[1], rtol=1e-5)
    np.testing.assert_allclose(b.norms()[[0, 2]], d.norms()[[0, 2]])
    assert torch.equal(f.item_delta[2:4], -d.item_delta[2:4]) and torch.equal(f.item_delta[:2], d.item_delta[:2])
    assert torch.equal(f.mlp_delta[1], -d.mlp_delta[1])


def test_gaussian_replaces_malicious_update_with_noise():
    d = tiny_delta()
    g = gaussian_noise(d, MASK, 0.01, torch.Generator().manual_seed(0))
    assert g.item_delta[2:4].abs().max() < 0.1 and g.mlp_delta[1].abs().max() < 0.1
    assert torch.equal(g.item_delta[:2], d.item_delta[:2]) and torch.equal(g.mlp_delta[0], d.mlp_delta[0])


def test_targeted_promotion_boosts_only_target_rows():
    d = tiny_delta()
    t = boost_item_rows(d, MASK, np.array([3]), 10.0)
    assert torch.equal(t.item_delta[3], 10 * d.item_delta[3])  # user 1's row of item 3
    assert torch.equal(t.item_delta[1], d.item_delta[1])  # user 0 (honest) row of item 3
    assert torch.equal(t.item_delta[2], d.item_delta[2]) and torch.equal(t.mlp_delta, d.mlp_delta)


def _hook(small_split, attack: str, fraction: float = 0.2, start: int = 1) -> AttackHook:
    cfg = compose_config(["data=synthetic", "data.users=60", "data.items=300", f"attack={attack}",
                          f"attack.fraction={fraction}", f"attack.start_round={start}"])  # fmt: skip
    return AttackHook(cfg, small_split)


def test_hook_on_a_tiny_population(small_split):
    hook = _hook(small_split, "boosted", 0.2, start=3)
    users = np.arange(60)
    assert hook.malicious.sum() == 12 and len(hook.honest(users)) == 48
    d = tiny_delta()
    mal = np.flatnonzero(hook.malicious)[:1]
    chunk = np.array([hook.honest(users)[0], mal[0], hook.honest(users)[1]])
    assert hook.poison(d, chunk, rnd=2) is d  # not yet started
    np.testing.assert_allclose(hook.poison(d, chunk, rnd=3).norms()[1], 10 * d.norms()[1], rtol=1e-5)


def test_item_promotion_raises_target_scores_on_tiny_population(small_split):
    """Data poisoning does what it says: after training on the fake interactions, the malicious
    users' deltas move the target items' rows more than honest users' deltas do."""
    hook = _hook(small_split, "item_promotion", 0.2)
    assert hook.targets is not None and len(hook.targets) == 5
    cfg = compose_config(["data=synthetic", "data.users=60", "data.items=300"])
    shape = NeuMFShape(small_split.n_items, 8)
    theta = flatten_shared(init_shared(shape, 0))
    users = np.arange(60)
    sched = [build_schedule(hook.positives(int(u), small_split.train_of(int(u)), 1), small_split.seen_of(int(u)),
                            small_split.n_items, cfg.client, user_rng(0, 1, int(u))) for u in users]  # fmt: skip
    delta, _, _ = train_cohort(theta, init_private(60, shape, 0), sched, shape, cfg.client)
    on_target = torch.from_numpy(np.isin(delta.rows.numpy(), hook.targets))
    mal_rows = torch.from_numpy(hook.malicious)[delta.row_user]
    # GMF item-row deltas of positives push along the user's embedding; count rows touched instead
    assert int((on_target & mal_rows).sum()) >= 5 * hook.malicious.sum()
    mag_mal = delta.item_delta[on_target & mal_rows].norm(dim=1).mean()
    mag_hon = delta.item_delta[on_target & ~mal_rows].norm(dim=1).mean() if bool((on_target & ~mal_rows).any()) else 0.0
    assert mag_mal > mag_hon
