"""RRF, MMR and item trust on hand-computed cases."""

import numpy as np
import pytest

from recommender.fusion import learn_weights, ranks_from_scores, rrf_fuse
from recommender.mmr import intra_list_diversity, jaccard_matrix, mmr
from recommender.trust_items import TrustConfig, apply_trust, item_trust


def test_rrf_hand_computed():
    ranks = {"a": np.array([1, 2, 0]), "b": np.array([0, 1, 3])}
    out = rrf_fuse(ranks, {"a": 0.5, "b": 0.25}, k=60)
    expected = np.array([0.5 / 61, 0.5 / 62 + 0.25 / 61, 0.25 / 63])
    np.testing.assert_allclose(out, expected)
    # a strategy without weight contributes nothing
    np.testing.assert_allclose(rrf_fuse(ranks, {"a": 0.5}, k=60), [0.5 / 61, 0.5 / 62, 0.0])


def test_ranks_from_scores_depth_and_exclude():
    s = np.array([[0.1, 0.9, 0.5, 0.7, -np.inf]])
    ex = np.array([[False, True, False, False, False]])
    r = ranks_from_scores(s, depth=2, exclude=ex)
    np.testing.assert_array_equal(r, [[0, 0, 2, 1, 0]])


def test_learn_weights_finds_the_informative_strategy():
    # strategy "good" ranks the target (item 0) first, "bad" ranks it last
    good = np.array([[1, 2, 3, 4]] * 5)
    bad = np.array([[4, 1, 2, 3]] * 5)

    def obj(f):
        return float((f.argmax(1) == 0).mean())

    w, val = learn_weights({"good": good, "bad": bad}, obj, {"good": 0.1, "bad": 0.9})
    assert val == 1.0 and w["good"] > w["bad"]


def test_jaccard_and_mmr_hand_computed():
    g = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], bool)
    sim = jaccard_matrix(g)
    np.testing.assert_allclose(sim, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    rel = np.array([1.0, 0.9, 0.0])
    # lam=0.85: pick 0; then item1: 0.85*0.9 - 0.15*1 = 0.615, item2: 0.85*0 - 0 = 0 -> item 1
    np.testing.assert_array_equal(mmr(rel, sim, 3, 0.85), [0, 1, 2])
    # lam=0.5: item1: 0.45 - 0.5 = -0.05 < item2: 0 -> item 2 before the near-duplicate
    np.testing.assert_array_equal(mmr(rel, sim, 3, 0.5), [0, 2, 1])
    # lam=1 is the relevance order
    np.testing.assert_array_equal(mmr(np.array([0.2, 0.3, 0.1]), sim, 2, 1.0), [1, 0])


def test_intra_list_diversity():
    g = np.array([[1, 0], [0, 1], [1, 0]], bool)
    assert intra_list_diversity(np.array([[0, 1]]), g) == 1.0
    assert intra_list_diversity(np.array([[0, 2]]), g) == 0.0


def test_trust_thresholds_drop_and_boost():
    cfg = TrustConfig(min_trust=0.6, boost_above=0.8, boost=0.1)
    trust = np.array([0.59, 0.6, 0.79, 0.8, 1.0])
    rel = np.ones(5)
    out = apply_trust(rel, trust, cfg)
    assert out[0] == -np.inf
    np.testing.assert_allclose(out[1:], [1.0, 1.0, 1.1, 1.1])
    off = apply_trust(rel, trust, TrustConfig(enabled=False))
    np.testing.assert_allclose(off, rel)


def test_item_trust_signals():
    cfg = TrustConfig()
    n = np.array([0.0, 20.0, 200.0])
    mean = np.array([0.0, 4.0, 4.5])
    t = item_trust(n, mean, np.array([False, True, True]), np.array([False, True, True]),
                   np.array([False, True, True]), cfg)
    assert t[0] < cfg.min_trust <= t[1] <= t[2] <= 1.0
    assert t[2] >= cfg.boost_above
    # no knowledge graph: the KG third counts as present for everyone
    t2 = item_trust(n, mean, np.ones(3, bool), np.ones(3, bool), None, cfg)
    prior = (4.0 * 20 + 4.5 * 200) / 220
    assert t2[0] == pytest.approx((0.3 * (prior - 1) / 4 + 0.3 * 1.0) / 1.0)
