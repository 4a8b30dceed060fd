"""Ranking metrics: HR/NDCG/Precision/Recall/coverage@K, sampled-99 and full-ranking, vectorised.

Ties are broken by a seeded random permutation of the candidates, so a constant scorer ranks the
held-out item uniformly at random (HR@10 = 0.1 on the sampled protocol), never first or last.
"""

from __future__ import annotations

import numpy as np


def _tiebreak_rank(scores: np.ndarray, target_col: np.ndarray, rng: np.random.Generator,
                   valid: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """0-based rank of ``scores[u, target_col[u]]`` in row u, ties broken by a random key."""
    u = np.arange(scores.shape[0])
    # A NaN score (a diverged model) must rank last, never count as a hit: NaN comparisons are False.
    scores = np.where(np.isnan(scores), -np.inf, scores)
    key = rng.random(scores.shape)
    s_t = scores[u, target_col][:, None]
    k_t = key[u, target_col][:, None]
    better = (scores > s_t) | ((scores == s_t) & (key < k_t))
    if valid is not None:
        better &= valid
    better[u, target_col] = False
    return better.sum(1)


def rank_metrics(ranks: np.ndarray, k: int) -> dict[str, float]:
    """HR@K and NDCG@K (one relevant item per user) from 0-based ranks, shape (U,)."""
    return {f"hr@{k}": float((ranks < k).mean()), f"ndcg@{k}": float(ndcg_per_user(ranks, k).mean())}


def sampled_ranks(pos_scores: np.ndarray, neg_scores: np.ndarray, seed: int = 0) -> np.ndarray:
    """Ranks of the held-out item among its sampled negatives.

    Parameters
    ----------
    pos_scores : np.ndarray, shape (U,)
    neg_scores : np.ndarray, shape (U, N)   (N = 99 in the standard protocol)

    Returns
    -------
    np.ndarray[int64], shape (U,)
    """
    scores = np.concatenate([pos_scores[:, None], neg_scores], axis=1)
    return _tiebreak_rank(scores, np.zeros(len(scores), np.int64), np.random.default_rng(seed))


def full_ranks(scores: np.ndarray, target: np.ndarray, exclude: np.ndarray, seed: int = 0) -> np.ndarray:
    """Ranks of ``target[u]`` among all items not in the user's known history.

    Parameters
    ----------
    scores : np.ndarray, shape (U, I)
    target : np.ndarray[int], shape (U,)
    exclude : np.ndarray[bool], shape (U, I)
        Known history to leave out (train and validation items; the target itself is kept).
    """
    valid = ~exclude
    valid[np.arange(len(target)), target] = True
    return _tiebreak_rank(scores, target, np.random.default_rng(seed), valid)


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Indices of each row's top-k items, ties broken by a seeded random key, shape (U, k)."""
    s = scores.astype(np.float64, copy=True)
    if exclude is not None:
        s[exclude] = -np.inf
    key = np.random.default_rng(seed).random(s.shape)
    return np.lexsort((key, -s), axis=1)[:, :k]


def full_ndcg(scores: np.ndarray, target: np.ndarray, exclude: np.ndarray, k: int = 10, seed: int = 0) -> float:
    """Mean NDCG@K of ``target`` under full ranking (every item not in ``exclude``), ties seeded."""
    return float(ndcg_per_user(full_ranks(scores, target, exclude, seed), k).mean())


def full_ranking_report(scores: np.ndarray, target: np.ndarray, exclude: np.ndarray, k: int = 10,
                        seed: int = 0) -> dict[str, float]:  # fmt: skip
    """HR/NDCG/Precision/Recall/coverage@K on full ranking (one held-out item per user)."""
    return full_ranking_metrics(full_ranks(scores, target, exclude, seed), top_k(scores, k, exclude, seed),
                                scores.shape[1], k)  # fmt: skip


def full_ranking_metrics(ranks: np.ndarray, tops: np.ndarray, n_items: int, k: int = 10) -> dict[str, float]:
    """:func:`full_ranking_report` from already computed :func:`full_ranks` and :func:`top_k` lists."""
    out = rank_metrics(ranks, k)
    hit = ranks < k
    out[f"precision@{k}"] = float(hit.mean() / k)
    out[f"recall@{k}"] = float(hit.mean())
    out[f"coverage@{k}"] = float(len(np.unique(tops)) / n_items)
    return out


def sampled_report(pos_scores: np.ndarray, neg_scores: np.ndarray, k: int = 10, seed: int = 0) -> dict[str, float]:
    """HR/NDCG@K on the sampled protocol."""
    return rank_metrics(sampled_ranks(pos_scores, neg_scores, seed), k)


def ndcg_per_user(ranks: np.ndarray, k: int) -> np.ndarray:
    """NDCG@K of each user (one relevant item) from 0-based ranks, shape (U,) -> (U,)."""
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def paired_bootstrap_gain(system: np.ndarray, baseline: np.ndarray, n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95) -> dict[str, float]:  # fmt: skip
    """Relative gain of a system over a baseline in a per-user metric, with a paired bootstrap interval.

    Users are resampled with replacement, the same users for both lists and, when several runs
    (seeds) are given, for every run at once: the runs share their test users, so their test
    noise is shared too and only resampling the users shows it.

    Parameters
    ----------
    system, baseline : np.ndarray[float], shape (U,) or (R, U)
        Per-user metric (e.g. :func:`ndcg_per_user`) of each run's lists, users aligned.
    n_boot : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling.
    level : float
        Two-sided coverage of the percentile interval.

    Returns
    -------
    dict
        ``gain_pct`` = 100 (mean(system) / mean(baseline) - 1), its percentile interval
        ``low_pct`` / ``high_pct`` at ``level``, and ``boot_pct`` (np.ndarray, every resample's
        gain, e.g. to ask how often it reaches a target).

    Examples
    --------
    >>> g = paired_bootstrap_gain(np.array([1.0, 1.0, 0.0, 0.5]), np.array([0.5, 1.0, 0.0, 0.5]), 200)
    >>> round(g["gain_pct"], 1)
    25.0
    """
    s = np.atleast_2d(np.asarray(system, np.float64))
    b = np.atleast_2d(np.asarray(baseline, np.float64))
    if s.shape != b.shape:
        raise ValueError(f"paired_bootstrap_gain: system {s.shape} and baseline {b.shape} must align")
    n_users = s.shape[1]
    idx = np.random.default_rng(seed).integers(0, n_users, (n_boot, n_users))
    # sums over the resampled users, per resample: (n_boot,) via per-user totals over the runs
    s_u, b_u = s.sum(0), b.sum(0)
    num, den = s_u[idx].sum(1), b_u[idx].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = 100.0 * (num / den - 1.0)
    boot = boot[np.isfinite(boot)]
    alpha = (1.0 - level) / 2.0
    gain = 100.0 * (s_u.sum() / b_u.sum() - 1.0) if b_u.sum() > 0 else float("nan")
    return {"gain_pct": float(gain), "low_pct": float(np.quantile(boot, alpha)),
            "high_pct": float(np.quantile(boot, 1.0 - alpha)), "level": level, "n_boot": int(n_boot),
            "boot_pct": boot}  # fmt: skip
