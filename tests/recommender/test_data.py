import numpy as np
import pytest

from recommender.data import (
    DataError,
    fetch_movielens,
    generate_synthetic,
    leave_one_out,
    parse_movielens,
    partition_users,
    sample_negatives,
)


def test_split_has_no_leakage(small_population, small_split):
    sp = small_split
    for u in range(sp.n_users):
        train = set(sp.train_of(u).tolist())
        assert sp.test_item[u] not in train
        assert sp.val_item[u] not in train
        assert sp.test_item[u] != sp.val_item[u]
        seen = set(sp.seen_of(u).tolist())
        assert not seen & set(sp.eval_negatives[u].tolist())
        assert len(set(sp.eval_negatives[u].tolist())) == 99
    assert sp.train_counts().sum() + 2 * sp.n_users == small_population.n_interactions


def test_split_is_chronological_and_stable():
    ds = generate_synthetic(5, 200, mean_interactions=20, seed=1)
    ds.timestamps[:] = 7  # every tie: file order decides
    sp = leave_one_out(ds)
    for u in range(ds.n_users):
        rows = np.flatnonzero(ds.users == u)
        assert sp.test_item[u] == ds.items[rows[-1]]
        assert sp.val_item[u] == ds.items[rows[-2]]
        assert (sp.train_of(u) == ds.items[rows[:-2]]).all()


def test_training_negatives_avoid_history(small_split):
    rng = np.random.default_rng(0)
    neg = sample_negatives(small_split, np.arange(10), 50, rng, unique=False)
    for u in range(10):
        assert not set(neg[u].tolist()) & set(small_split.seen_of(u).tolist())


def test_synthetic_statistics():
    ds = generate_synthetic(2000, 1682, seed=0)
    counts = np.bincount(ds.users)
    assert counts.min() >= 20
    assert 80 < counts.mean() < 130
    pop = np.sort(np.bincount(ds.items, minlength=1682))[::-1]
    assert pop[:100].sum() > 2.5 * pop[-800:].sum()  # long tail (ML-100K: 0.30 vs 0.06 of ratings)
    assert ds.genres.any(1).all()


def test_partition_is_stable_and_complete():
    parts = partition_users(103, 4)
    assert np.concatenate(parts).tolist() == list(range(103))
    assert [len(p) for p in parts] == [len(p) for p in partition_users(103, 4)]
    with pytest.raises(DataError, match="nodes"):
        partition_users(3, 5)


def test_ml100k_parses(ml100k_dir):
    ds = parse_movielens(ml100k_dir)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100_000)
    assert ds.titles[0] == "Toy Story" and ds.years[0] == 1995


def test_corrupt_cache_is_refetched(ml100k_dir, tmp_path):
    from tests.conftest import SHARED_ML100K

    cache = tmp_path / "c"
    path = fetch_movielens(cache, local_copy=SHARED_ML100K)
    (path / "ml-100k.inter").write_bytes(b"garbage")
    with pytest.raises(DataError, match="checksum"):
        parse_movielens(path)
    again = fetch_movielens(cache, local_copy=SHARED_ML100K)
    assert parse_movielens(again).n_interactions == 100_000


def test_unknown_ids_are_named(small_population):
    with pytest.raises(DataError, match="99999"):
        small_population.user_index([1, 99999])


def test_synthetic_blocks_do_not_change_the_population():
    """The generator's row blocks only bound memory: the population equals a one-block draw."""
    from recommender.data import generate_synthetic

    a = generate_synthetic(n_users=700, n_items=300, mean_interactions=20, seed=4, chunk=512, block=64)
    b = generate_synthetic(n_users=700, n_items=300, mean_interactions=20, seed=4, chunk=512, block=512)
    for k in ("users", "items", "ratings", "timestamps", "genres", "years"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
