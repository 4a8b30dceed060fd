"""Per-item-row clipping on constructed updates: boosted rows are clipped, honest rows untouched."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.row_clip import (
    ItemRowClip,
    clip_item_rows,
    item_row_norms,
    row_bounds,
    row_clip_factors,
    user_row_quantile,
)
from strategies.trust import create_scorer
from strategies.trust_fedavg import TrustWeightedFedAvg

N_ITEMS, F, MLP = 30, 4, 50


def sparse_updates(n_users: int = 60, seed: int = 0, p_touch: float = 0.4, n_items: int = N_ITEMS) -> np.ndarray:
    """(U, 3*I*F + MLP) updates: each user touches a random ~40% of item rows with similar norms."""
    rng = np.random.default_rng(seed)
    d = np.zeros((n_users, 3 * n_items * F + MLP), np.float32)
    gmf = d[:, : n_items * F].reshape(n_users, n_items, F)
    mlp = d[:, n_items * F : 3 * n_items * F].reshape(n_users, n_items, 2 * F)
    touch = rng.random((n_users, n_items)) < p_touch
    gmf[touch] = rng.normal(0, 0.1, (touch.sum(), F))
    mlp[touch] = rng.normal(0, 0.1, (touch.sum(), 2 * F))
    d[:, 3 * n_items * F :] = rng.normal(0, 0.1, (n_users, MLP))
    return d


def test_row_norms_combine_both_item_blocks():
    d = np.zeros((2, 3 * N_ITEMS * F + MLP), np.float32)
    d[0, 3 * F] = 3.0  # item 3, GMF block
    d[0, N_ITEMS * F + 3 * 2 * F + 1] = 4.0  # item 3, MLP block
    d[1, 3 * N_ITEMS * F :] = 100.0  # the MLP tower is not an item row
    n = item_row_norms(d, N_ITEMS, F)
    assert n.shape == (2, N_ITEMS)
    assert n[0, 3] == pytest.approx(5.0) and n[0].sum() == pytest.approx(5.0) and n[1].sum() == 0.0


@pytest.mark.parametrize("lam", [10.0, 6.0])
def test_boosted_target_rows_are_clipped_and_honest_rows_kept(lam):
    d = sparse_updates()
    bad, targets = np.arange(6), np.array([2, 7])  # 10% attackers, each touching the targets, boosted
    gmf = d[:, : N_ITEMS * F].reshape(len(d), N_ITEMS, F)
    mlp = d[:, N_ITEMS * F : 3 * N_ITEMS * F].reshape(len(d), N_ITEMS, 2 * F)
    rng = np.random.default_rng(5)
    for t in targets:
        gmf[bad, t] = lam * rng.normal(0, 0.1, (len(bad), F))
        mlp[bad, t] = lam * rng.normal(0, 0.1, (len(bad), 2 * F))
    before = d.copy()
    honest_norms = item_row_norms(before[6:], N_ITEMS, F)
    stats = ItemRowClip(N_ITEMS, F, factor=4.0, reference="row")(d)
    after = item_row_norms(d, N_ITEMS, F)
    bound = row_bounds(item_row_norms(before, N_ITEMS, F), 4.0)
    # every boosted row now sits at its row's bound, at most ~an honest tail norm
    assert np.all(after[np.ix_(bad, targets)] <= bound[targets] + 1e-6)
    honest_median = np.median(honest_norms[:, targets][honest_norms[:, targets] > 0])
    assert after[np.ix_(bad, targets)].max() < 4.5 * honest_median < before_norms(before, bad, targets).max()
    # the attackers' other rows and the MLP tower are untouched
    other = np.setdiff1d(np.arange(N_ITEMS), targets)
    np.testing.assert_array_equal(d[np.ix_(bad, np.arange(3 * N_ITEMS * F, d.shape[1]))],
                                  before[np.ix_(bad, np.arange(3 * N_ITEMS * F, d.shape[1]))])  # fmt: skip
    np.testing.assert_allclose(after[np.ix_(bad, other)], item_row_norms(before, N_ITEMS, F)[np.ix_(bad, other)])
    # no honest row is touched (a 12-float Gaussian row is never 4x its row's median)
    np.testing.assert_array_equal(d[6:], before[6:])
    over = before_norms(before, bad, targets) > bound[targets]
    assert stats.rows == over.sum() and (lam < 10 or over.all())


def before_norms(before: np.ndarray, bad: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return item_row_norms(before, N_ITEMS, F)[np.ix_(bad, targets)]


def test_an_attacker_under_the_bound_is_not_clipped():
    """The limit, stated: a row boosted less than ``factor`` x the median passes unchanged."""
    d = sparse_updates()
    gmf = d[:, : N_ITEMS * F].reshape(len(d), N_ITEMS, F)
    mlp = d[:, N_ITEMS * F : 3 * N_ITEMS * F].reshape(len(d), N_ITEMS, 2 * F)
    med = np.median(item_row_norms(d, N_ITEMS, F)[:, 2][item_row_norms(d, N_ITEMS, F)[:, 2] > 0])
    gmf[:6, 2], mlp[:6, 2] = 0.0, 0.0
    gmf[:6, 2, 0] = 3.0 * med  # every attacker at 3x the row's median: inside the 4x bound
    before = d.copy()
    ItemRowClip(N_ITEMS, F, factor=4.0, reference="row")(d)
    np.testing.assert_array_equal(d, before)


def test_factors_and_edge_cases():
    norms = np.array([[1.0, 0.0], [1.0, 0.0], [1.2, 0.0], [0.8, 5.0], [10.0, 0.0]])
    s = row_clip_factors(norms, factor=4.0, min_users=3, reference="row")
    assert np.all((s > 0) & (s <= 1))
    assert s[4, 0] == pytest.approx(0.4) and np.all(s[:4, 0] == 1.0)  # the x10 row is scaled down to the bound
    assert s[3, 1] == 1.0  # a row touched by one user: too little evidence, left alone
    assert np.isinf(row_bounds(norms, 4.0, min_users=3)[1])
    assert row_bounds(norms, 4.0, min_users=3)[0] == pytest.approx(4.0)  # 4 x the median 1.0
    d = np.ones((1, 3 * 2 * 1 + 1), np.float32)
    assert clip_item_rows(d, np.array([[0.5, 1.0]]), 2, 1) == 1
    np.testing.assert_array_equal(d[0], [0.5, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="row_clip_factor"):
        ItemRowClip(N_ITEMS, F, factor=0.0)
    with pytest.raises(ValueError, match="row_clip_reference"):
        ItemRowClip(N_ITEMS, F, reference="item")


def test_strategy_clips_rows_before_summing():
    d = sparse_updates()
    t = 4
    gmf = d[:, : N_ITEMS * F].reshape(len(d), N_ITEMS, F)
    gmf[:6, t] = 2.0  # six attackers push item 4 in one direction, ~11x an honest row's norm
    s = TrustWeightedFedAvg(create_scorer("update"), threshold=0.6)
    s.row_clip = ItemRowClip(N_ITEMS, F, factor=4.0, reference="row")
    s._theta = np.zeros(d.shape[1], np.float32)
    total, _ = s.combine_rows(1, np.arange(len(d)), d.copy(), np.ones(len(d)))
    plain = TrustWeightedFedAvg(create_scorer("update"), threshold=0.6)
    plain._theta = s._theta
    total_plain, _ = plain.combine_rows(1, np.arange(len(d)), d.copy(), np.ones(len(d)))
    row = slice(t * F, (t + 1) * F)
    assert total_plain[row].min() > 5.0  # without row clipping the attack dominates the row
    # clipped to the row's bound: the push is bounded by an honest-sized row per attacker, not removed
    assert total[row].max() < 0.5 * total_plain[row].min() and s.last_rows_clipped >= 6
    # user-level scoring alone does not exclude them: the boosted rows are a small part of the update
    assert plain.last_excluded_updates == 0


def test_rows_far_out_are_zeroed_not_clipped():
    d = sparse_updates()
    gmf = d[:, : N_ITEMS * F].reshape(len(d), N_ITEMS, F)
    mlp = d[:, N_ITEMS * F : 3 * N_ITEMS * F].reshape(len(d), N_ITEMS, 2 * F)
    med = np.median(item_row_norms(d, N_ITEMS, F)[:, 9][item_row_norms(d, N_ITEMS, F)[:, 9] > 0])
    gmf[:3, 9], mlp[:3, 9] = 0.0, 0.0
    gmf[:3, 9, 0] = 20.0 * med  # far out: dropped
    gmf[3, 9], mlp[3, 9] = 0.0, 0.0
    gmf[3, 9, 0] = 6.0 * med  # between the bounds: clipped to 4x
    col = item_row_norms(d, N_ITEMS, F)[:, 9]
    bound = 4.0 * np.median(col[col > 0])  # the median of the round, attackers included
    before = item_row_norms(d, N_ITEMS, F)
    stats = ItemRowClip(N_ITEMS, F, factor=4.0, zero_factor=10.0, reference="row")(d)
    after = item_row_norms(d, N_ITEMS, F)[:, 9]
    np.testing.assert_array_equal(after[:3], 0.0)
    assert after[3] == pytest.approx(bound, rel=1e-5)
    assert stats.zeroed == 3 and stats.rows == 4
    removed = 1.0 - (item_row_norms(d, N_ITEMS, F) ** 2).sum() / (before**2).sum()
    assert stats.energy_removed == pytest.approx(removed, rel=1e-4) and removed > 0.5  # the far-out rows dominate
    only_zero = row_clip_factors(np.array([[1.0], [1.0], [1.0], [6.0], [20.0]]), np.inf, 3, 10.0, "row")
    np.testing.assert_array_equal(only_zero[:, 0], [1, 1, 1, 1, 0])  # factor inf: zeroing only


def test_user_reference_clips_rows_far_above_the_users_own_rows():
    """Default reference: a row is judged against the same user's 90th-percentile row norm."""
    n = 200  # ~80 rows per user: 2 boosted targets sit above the user's own 90th percentile
    d = sparse_updates(n_items=n)
    gmf = d[:, : n * F].reshape(len(d), n, F)
    mlp = d[:, n * F : 3 * n * F].reshape(len(d), n, 2 * F)
    gmf[:, 0] *= 2.5  # every user's row 0 is large (a popular positive): no user stands out on it
    mlp[:, 0] *= 2.5
    bad, targets = np.arange(6), np.array([2, 7])
    rng = np.random.default_rng(3)
    for t in targets:
        gmf[bad, t] = 10.0 * rng.normal(0, 0.1, (len(bad), F))
        mlp[bad, t] = 10.0 * rng.normal(0, 0.1, (len(bad), 2 * F))
    before = d.copy()
    own = user_row_quantile(item_row_norms(before, n, F), 90.0)
    stats = ItemRowClip(n, F)(d)  # user reference, factor 3
    after = item_row_norms(d, n, F)
    assert np.all(after[np.ix_(bad, targets)] <= 3.0 * own[bad, None] + 1e-6)
    assert np.all(after[np.ix_(bad, targets)] < 0.6 * item_row_norms(before, n, F)[np.ix_(bad, targets)])
    np.testing.assert_array_equal(d[6:], before[6:])  # honest users, including their large row 0
    assert stats.users == len(bad) and stats.zeroed == 0


def test_user_row_quantile_ignores_untouched_rows():
    norms = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(user_row_quantile(norms, 50.0), [2.0, 0.0])
    np.testing.assert_array_equal(row_clip_factors(norms, 3.0, reference="user")[1], 1.0)  # nothing touched


def test_factory_wires_row_clipping_for_update_scoring_only():
    from configs.store import compose_config
    from recommender.ncf import NeuMFShape
    from strategies.factory import create_strategy

    shape = NeuMFShape(n_items=200, factors=8)
    base = ["data=synthetic", "data.users=50", "data.items=200"]
    s = create_strategy(compose_config([*base, "strategy=trust_update"]), shape)
    rc = s.row_clip
    assert isinstance(rc, ItemRowClip) and (rc.factor, rc.zero_factor, rc.reference) == (3.0, 6.0, "user")
    assert (rc.n_items, rc.factors) == (200, 8)
    off = create_strategy(compose_config([*base, "strategy=trust_update", "strategy.trust.row_clip_factor=0",
                                          "strategy.trust.row_zero_factor=0"]), shape)  # fmt: skip
    assert off.row_clip is None
    assert create_strategy(compose_config([*base, "strategy=fedavg"]), shape).row_clip is None
    assert create_strategy(compose_config([*base, "strategy=trust_reputation"]), shape).row_clip is None
