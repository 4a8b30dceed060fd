import numpy as np
import pytest

from recommender.metrics import (
    full_ranking_report,
    full_ranks,
    paired_bootstrap_gain,
    rank_metrics,
    sampled_ranks,
    top_k,
)


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


def test_paired_bootstrap_gain_hand_case_and_interval():
    base = np.array([0.5, 1.0, 0.0, 0.5])
    g = paired_bootstrap_gain(np.array([1.0, 1.0, 0.0, 0.5]), base, n_boot=500)
    assert g["gain_pct"] == pytest.approx(25.0)  # 2.5 / 2.0 - 1
    assert g["low_pct"] <= g["gain_pct"] <= g["high_pct"]
    assert g["low_pct"] >= 0.0  # the system is never worse for any user
    same = paired_bootstrap_gain(base, base, n_boot=100)
    assert same["gain_pct"] == same["low_pct"] == same["high_pct"] == 0.0


def test_paired_bootstrap_gain_resamples_shared_users_jointly():
    """Identical runs add no information: the interval over 2 copies equals the single-run one."""
    rng = np.random.default_rng(0)
    b = rng.random(200)
    s = b + rng.normal(0, 0.1, 200)
    one = paired_bootstrap_gain(s, b, n_boot=300, seed=3)
    two = paired_bootstrap_gain(np.stack([s, s]), np.stack([b, b]), n_boot=300, seed=3)
    assert two["low_pct"] == pytest.approx(one["low_pct"])
    assert two["high_pct"] == pytest.approx(one["high_pct"])


def test_paired_bootstrap_gain_rejects_misaligned_users():
    with pytest.raises(ValueError, match="must align"):
        paired_bootstrap_gain(np.ones(5), np.ones(4))
