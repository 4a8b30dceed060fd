"""ALS strategy: confidence weighting, validation-only grid selection, fold-in."""

import dataclasses

import numpy as np
import pytest
from implicit.nearest_neighbours import bm25_weight

from recommender.als import (
    ALSConfig,
    ALSConfigError,
    CollaborativeALS,
    _als,
    bm25_row,
    bm25_stats,
    history_mask,
    train_matrix,
    weigh,
)
from recommender.data import generate_synthetic, leave_one_out
from recommender.hybrid import HybridRecommender, load_config
from recommender.metrics import full_ranks, rank_metrics
from recommender.neumf_strategy import make_reference_run

BM25 = "bm25(100,0.8)"


@pytest.fixture(scope="module")
def data():
    ds = generate_synthetic(n_users=60, n_items=200, mean_interactions=25, min_interactions=10, seed=3,
                            preference_strength=4.0)
    return ds, leave_one_out(ds, n_negatives=20)


def _fixed(weighting: str, **kw) -> ALSConfig:
    return ALSConfig(tune=False, factors=8, iterations=5, alpha=2.0, weighting=weighting, threads=1, **kw)


def test_bm25_row_matches_implicit_bm25_weight(data):
    _, split = data
    x = train_matrix(split)
    idf, mean_len = bm25_stats(x)
    for k1, b in [(100.0, 0.8), (1.2, 0.75)]:
        ref = bm25_weight(x, K1=k1, B=b).tocsr()
        for u in (0, 7, 31):
            items = ref[u].indices
            np.testing.assert_allclose(bm25_row(len(items), idf, mean_len, k1, b)[items], ref[u].data, rtol=1e-5)


def test_bm25_weighting_is_applied_in_training(data):
    _, split = data
    als = CollaborativeALS(_fixed(BM25), seed=0).fit(split)
    ref = _als(8, als.params["regularization"], 2.0, 5, 0, 1)
    ref.fit(bm25_weight(train_matrix(split), K1=100, B=0.8).tocsr().astype(np.float32), show_progress=False)
    np.testing.assert_allclose(als.item_factors, ref.item_factors, atol=1e-5)
    binary = CollaborativeALS(_fixed("none"), seed=0).fit(split)
    assert np.abs(binary.item_factors - als.item_factors).max() > 1e-2
    assert als.params["weighting"] == BM25


@pytest.mark.parametrize("weighting", ["none", BM25])
def test_fold_in_is_implicits_user_solve_on_the_weighted_row(data, weighting):
    _, split = data
    als = CollaborativeALS(_fixed(weighting), seed=0).fit(split)
    x = weigh(train_matrix(split), weighting)
    ref = _als(8, als.params["regularization"], 2.0, 1, 0, 1)
    ref.item_factors = als.item_factors
    for u in (2, 40):
        folded = als.fold_in(split.train_of(u))
        np.testing.assert_allclose(folded, ref.recalculate_user(0, x[u]), atol=1e-5)
        # the fold-in of a training user's own history lands next to the factor ALS learned for them
        cos = folded @ als.user_factors[u] / np.linalg.norm(folded) / np.linalg.norm(als.user_factors[u])
        assert cos > 0.95


def test_grid_selects_on_validation_only(data):
    _, split = data
    cfg = ALSConfig(grid_factors=[4, 8], grid_regularization=[0.1], grid_alpha=[1.0, 5.0],
                    grid_weighting=["none", BM25], repeats=2, iterations=5, threads=1)  # fmt: skip
    als = CollaborativeALS(cfg, seed=0).fit(split)
    assert len(als.tuning) == 8
    best = max(als.tuning, key=lambda t: t["val_ndcg@10"])
    assert {k: als.params[k] for k in ("weighting", "factors", "regularization", "alpha")} == \
        {k: best[k] for k in ("weighting", "factors", "regularization", "alpha")}
    for t in als.tuning:
        assert t["val_ndcg@10"] == pytest.approx(np.mean(t["val_ndcg@10_per_init"]))
    # the kept model is the seed-0 initialisation, scored on the validation item
    ex = history_mask(split, np.arange(split.n_users), with_val=False)
    kept = rank_metrics(full_ranks(als.score_users(np.arange(split.n_users)), split.val_item, ex), 10)["ndcg@10"]
    assert kept == pytest.approx(best["val_ndcg@10_per_init"][0], abs=1e-6)
    # the test item plays no part: scrambling it changes nothing
    rng = np.random.default_rng(0)
    scrambled = dataclasses.replace(split, test_item=rng.permutation(split.test_item))
    again = CollaborativeALS(cfg, seed=0).fit(scrambled)
    assert again.params == als.params and again.tuning == als.tuning


def test_bad_weighting_spec_fails_with_its_value():
    with pytest.raises(ALSConfigError, match=r"bm25\(1\)"):
        load_config(None, ["als.weighting=bm25(1)"])
    with pytest.raises(ALSConfigError, match="tfidf"):
        load_config(None, ["als.grid_weighting=[none,tfidf]"])


def test_refit_keeps_the_tuned_weighting(data, tmp_path):
    ds, split = data
    make_reference_run(tmp_path, split, "synthetic", factors=8, epochs=2, seed=0, batch_size=64, lr=0.01)
    cfg = load_config("fast", ["strategies=[collaborative,content,context]"])
    tuned = {"weighting": BM25, "factors": 8, "regularization": 0.1, "alpha": 1.0}
    rec = HybridRecommender.build(tmp_path, ds, split, cfg, tag="trainval", als_params=tuned)
    als = rec.strategies["collaborative"]
    assert {k: als.params[k] for k in tuned} == tuned
    direct = CollaborativeALS(dataclasses.replace(cfg.als, tune=False, **tuned), seed=cfg.seed).fit(split)
    np.testing.assert_allclose(als.item_factors, direct.item_factors, atol=1e-5)


def test_train_matrix_leaves_the_split_untouched():
    from recommender.als import train_matrix
    from recommender.data import generate_synthetic, leave_one_out

    split = leave_one_out(generate_synthetic(n_users=20, n_items=200, mean_interactions=15, min_interactions=6,
                                             seed=2), n_negatives=5)  # fmt: skip
    # chronological order within a user is not item order, so an in-place sort would show
    assert any((np.diff(split.train_of(u)) < 0).any() for u in range(split.n_users))
    items, indptr = split.train_items.copy(), split.train_indptr.copy()
    m = train_matrix(split)
    np.testing.assert_array_equal(split.train_items, items)
    np.testing.assert_array_equal(split.train_indptr, indptr)
    assert m.nnz == len(np.unique(np.stack([np.repeat(np.arange(20), np.diff(indptr)), items]), axis=1)[0])
