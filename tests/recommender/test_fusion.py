"""RRF, MMR and item trust on hand-computed cases."""

import numpy as np
import pytest

from recommender.fusion import (
    FusionLearnConfig,
    combsum_fuse,
    fuse_scores,
    learn_weights,
    ranks_from_scores,
    rrf_fuse,
    standardize,
    start_weights,
)
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


def test_standardize_hand_computed():
    # [3, 1, 0, 0]: mean 1, population sd sqrt((4 + 0 + 1 + 1) / 4) = sqrt(1.5)
    np.testing.assert_allclose(standardize(np.array([3.0, 1.0, 0.0, 0.0])),
                               np.array([2.0, 0.0, -1.0, -1.0]) / np.sqrt(1.5))  # fmt: skip
    # excluded and non-finite entries neither enter the mean/sd nor contribute (0)
    s = np.array([[3.0, 1.0, 0.0, 0.0, 50.0, np.nan]])
    ex = np.array([[False, False, False, False, True, False]])
    np.testing.assert_allclose(standardize(s, ex), [[*(np.array([2.0, 0.0, -1.0, -1.0]) / np.sqrt(1.5)), 0, 0]])
    # a row without spread carries no information: all 0, not NaN
    np.testing.assert_array_equal(standardize(np.array([[2.0, 2.0, 2.0]])), [[0.0, 0.0, 0.0]])


def test_combsum_hand_computed_and_relevance():
    za = standardize(np.array([3.0, 1.0, 0.0, 0.0]))  # [1.633, 0, -0.816, -0.816]
    zb = standardize(np.array([0.0, 1.0, 0.0, 0.0]))  # [-0.577, 1.732, -0.577, -0.577]
    out = combsum_fuse({"a": za, "b": zb}, {"a": 1.0, "b": 0.5})
    np.testing.assert_allclose(out, [2 / np.sqrt(1.5) - 0.5 / np.sqrt(3), 0.5 * np.sqrt(3),
                                     -1 / np.sqrt(1.5) - 0.5 / np.sqrt(3), -1 / np.sqrt(1.5) - 0.5 / np.sqrt(3)])  # fmt: skip
    # weight on b alone flips the order of the first two items
    assert np.argmax(combsum_fuse({"a": za, "b": zb}, {"a": 0.2, "b": 1.0})) == 1
    # fuse_scores: the same order as a positive relevance; excluded items get 0; a request sums to 1
    ex = np.array([False, False, False, True])
    rel = fuse_scores({"a": np.array([3.0, 1.0, 0.0, 0.0]), "b": np.array([0.0, 1.0, 0.0, 0.0])},
                      {"a": 1.0, "b": 0.5}, "combsum", ex)  # fmt: skip
    z = combsum_fuse({"a": standardize(np.array([3.0, 1.0, 0.0, 0.0]), ex),
                      "b": standardize(np.array([0.0, 1.0, 0.0, 0.0]), ex)}, {"a": 1.0, "b": 0.5})  # fmt: skip
    np.testing.assert_allclose(rel[:3], np.exp(z[:3]) / np.exp(z[:3]).sum())
    assert rel[3] == 0.0 and rel.sum() == pytest.approx(1.0)
    # fuse_scores("rrf") is rrf_fuse of the top-depth ranks
    s = {"a": np.array([0.9, 0.1, 0.5]), "b": np.array([0.0, 0.3, 0.2])}
    np.testing.assert_allclose(fuse_scores(s, {"a": 1.0, "b": 1.0}, "rrf", depth=2, k=5),
                               [1 / 6, 1 / 6, 1 / 7 + 1 / 7])  # fmt: skip
    with pytest.raises(ValueError, match="borda"):
        fuse_scores(s, {"a": 1.0}, "borda")


def test_learn_weights_with_combsum_and_min_gain():
    # target item 0: "good" puts it far ahead, "bad" puts it last
    good = standardize(np.array([[5.0, 1.0, 0.0, 0.0]] * 6))
    bad = standardize(np.array([[0.0, 1.0, 2.0, 3.0]] * 6))

    def obj(f):
        return float((f.argmax(1) == 0).mean())

    w, val = learn_weights({"good": good, "bad": bad}, obj, {"good": 0.1, "bad": 0.9}, fuse=combsum_fuse)
    assert val == 1.0 and w["good"] > w["bad"] and sum(w.values()) == pytest.approx(1.0)
    # a required gain larger than any possible one keeps the (normalised) start
    w0, val0 = learn_weights({"good": good, "bad": bad}, obj, {"good": 0.1, "bad": 0.9}, fuse=combsum_fuse,
                             min_gain=2.0)  # fmt: skip
    assert val0 == 0.0 and w0 == pytest.approx({"good": 0.1, "bad": 0.9})


def test_fusion_learn_config_rejects_unknown_method():
    with pytest.raises(ValueError, match="borda"):
        FusionLearnConfig(methods=["rrf", "borda"]).validate()
    with pytest.raises(ValueError, match="rrf_k"):
        FusionLearnConfig(rrf_k=[0]).validate()


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


def test_start_weights_hand_computed():
    names = ["a", "b", "c"]
    assert start_weights("default", names, {"a": 0.3}, {}) == {"a": 0.3, "b": 0.0, "c": 0.0}
    assert start_weights("equal", names, {}, {}) == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert start_weights("best", names, {}, {"a": 0.01, "b": 0.09, "c": 0.05}) == {"a": 0.2, "b": 1.0, "c": 0.2}
    with pytest.raises(ValueError, match="median"):
        start_weights("median", names, {}, {})
    with pytest.raises(ValueError, match="starts"):
        FusionLearnConfig(starts=["median"]).validate()
    with pytest.raises(ValueError, match="metric_k"):
        FusionLearnConfig(metric_k=0).validate()


def test_search_fusion_escapes_the_local_optimum_of_the_default_start():
    from recommender.evaluate_hybrid import search_fusion
    from recommender.hybrid import HybridConfig

    # target item 0: "a" alone ranks it first; "b" and "c" both push item 1. Dropping b or c alone
    # leaves item 1 on top, so coordinate ascent from the default weights is stuck at 0.
    rows = 4
    scores = {"a": np.tile([1.0, 0, 0, 0], (rows, 1)), "b": np.tile([0, 1.0, 0, 0], (rows, 1)),
              "c": np.tile([0, 1.0, 0, 0], (rows, 1))}  # fmt: skip
    exclude = np.zeros((rows, 4), bool)

    def objective(fused):
        return float((fused.argmax(1) == 0).mean())

    default = {"a": 0.1, "b": 0.45, "c": 0.45}
    cfg = HybridConfig(learn=FusionLearnConfig(methods=["combsum"], starts=["default"]))
    (only_default,) = search_fusion(scores, {}, exclude, objective, default, cfg)
    assert only_default["val_objective"] == 0.0 and only_default["start"] == "default"
    cfg = HybridConfig(learn=FusionLearnConfig(methods=["combsum"]))
    (multi,) = search_fusion(scores, {}, exclude, objective, default, cfg)
    assert multi["val_objective"] == 1.0 and multi["start"] in ("equal", "best")
    assert multi["weights"]["a"] > max(multi["weights"]["b"], multi["weights"]["c"])


def test_metric_k_rewards_the_deeper_ranking():
    from recommender.evaluate_hybrid import search_fusion
    from recommender.hybrid import HybridConfig
    from recommender.metrics import full_ranks, rank_metrics

    # 200 items, target 0. "near" puts the target 12th (outside the top 10) on every row, "far" 61st;
    # NDCG@10 cannot tell them apart (both 0), NDCG@50 prefers "near".
    rows, items = 20, 200
    near = np.tile(np.arange(items, 0, -1.0), (rows, 1))
    near[:, 0] = near[0, 11] + 0.5
    far = np.tile(np.arange(items, 0, -1.0), (rows, 1))
    far[:, 0] = far[0, 60] + 0.5
    scores, exclude, target = {"near": near, "far": far}, np.zeros((rows, items), bool), np.zeros(rows, int)

    def objective(k):
        return lambda f: rank_metrics(full_ranks(f, target, exclude), k)[f"ndcg@{k}"]

    cfg = HybridConfig(learn=FusionLearnConfig(methods=["combsum"], starts=["equal"]))
    (at10,) = search_fusion(scores, {}, exclude, objective(10), {}, cfg)
    (at50,) = search_fusion(scores, {}, exclude, objective(50), {}, cfg)
    assert at10["val_objective"] == 0.0 and at10["weights"] == {"near": 0.5, "far": 0.5}
    assert at50["val_objective"] > 0.0 and at50["weights"]["near"] > at50["weights"]["far"]
