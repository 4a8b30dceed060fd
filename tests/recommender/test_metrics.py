import numpy as np

from recommender.metrics import full_ranking_report, full_ranks, rank_metrics, sampled_ranks, top_k


def test_hand_computed_ranks():
    pos = np.array([0.9, 0.5, 0.1])
    neg = np.array([[0.1, 0.2, 0.3], [0.6, 0.4, 0.7], [0.2, 0.3, 0.4]])
    assert sampled_ranks(pos, neg).tolist() == [0, 2, 3]
    m = rank_metrics(np.array([0, 2, 3]), k=3)
    assert np.isclose(m["hr@3"], 2 / 3)
    assert np.isclose(m["ndcg@3"], (1.0 + 1 / np.log2(4)) / 3)


def test_constant_scorer_is_random_level():
    ranks = sampled_ranks(np.zeros(30000), np.zeros((30000, 99)), seed=1)
    assert abs(rank_metrics(ranks, 10)["hr@10"] - 0.10) < 0.01


def test_full_ranking_excludes_history_but_keeps_target():
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    exclude = np.array([[True, True, False, False, False]])
    assert full_ranks(scores, np.array([2]), exclude).tolist() == [0]
    exclude_target = np.array([[True, True, True, False, False]])
    assert full_ranks(scores, np.array([2]), exclude_target).tolist() == [0]  # target is never excluded
    rep = full_ranking_report(scores, np.array([3]), exclude, k=1)
    assert rep["hr@1"] == 0.0 and rep["precision@1"] == 0.0
    assert rep["coverage@1"] == 1 / 5


def test_top_k_respects_exclusion_and_ties():
    s = np.ones((2, 6))
    ex = np.zeros((2, 6), bool)
    ex[:, :3] = True
    t = top_k(s, 3, ex, seed=0)
    assert set(t[0].tolist()) == {3, 4, 5}


def test_nan_scores_are_misses():
    pos = np.array([np.nan, np.nan])
    neg = np.full((2, 99), np.nan)
    neg[1, 0] = 0.0
    ranks = sampled_ranks(pos, neg)
    assert rank_metrics(ranks, 10)["hr@10"] <= 0.5
    assert ranks[1] >= 1  # the finite negative beats the NaN target
