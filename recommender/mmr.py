"""Maximal marginal relevance re-ranking with genre Jaccard similarity."""

from __future__ import annotations

import numpy as np


def jaccard_matrix(sets: np.ndarray) -> np.ndarray:
    """Pairwise Jaccard similarity of multi-hot rows.

    Parameters
    ----------
    sets : np.ndarray[bool], shape (N, G)

    Returns
    -------
    np.ndarray[float64], shape (N, N)
        ``|a & b| / |a | b|``; two empty sets have similarity 0.
    """
    a = np.asarray(sets, dtype=np.float64)
    inter = a @ a.T
    size = a.sum(1)
    union = size[:, None] + size[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def mmr(relevance: np.ndarray, similarity: np.ndarray, k: int, lam: float = 0.85) -> np.ndarray:
    """Greedy MMR (Carbonell & Goldstein 1998).

    Picks ``argmax_i lam * rel_i - (1 - lam) * max_{j in S} sim_ij`` k times. Relevance is min-max
    scaled to [0, 1] first so that ``lam`` trades like for like with a similarity in [0, 1].

    Parameters
    ----------
    relevance : np.ndarray[float], shape (N,)
        Candidate relevance (e.g. fused RRF score), any scale.
    similarity : np.ndarray[float], shape (N, N)
        Pairwise similarity in [0, 1].
    k : int
        Items to select (capped at N).
    lam : float
        Relevance weight in [0, 1]; 1 returns the relevance order.

    Returns
    -------
    np.ndarray[int64], shape (min(k, N),)
        Selected candidate positions, in selection order. Ties go to the lower position.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    n = len(rel)
    k = min(k, n)
    if n == 0:
        return np.zeros(0, np.int64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones(n)
    chosen: list[int] = []
    max_sim = np.zeros(n)
    free = np.ones(n, bool)
    for _ in range(k):
        score = lam * rel - (1 - lam) * max_sim
        score[~free] = -np.inf
        i = int(np.argmax(score))
        chosen.append(i)
        free[i] = False
        max_sim = np.maximum(max_sim, similarity[i])
    return np.array(chosen, np.int64)


def intra_list_diversity(lists: np.ndarray, genres: np.ndarray) -> float:
    """Mean pairwise genre-Jaccard distance ``1 - J`` within each list, averaged over lists.

    Parameters
    ----------
    lists : np.ndarray[int], shape (U, K)
    genres : np.ndarray[bool], shape (I, G)
    """
    vals = []
    for row in np.atleast_2d(lists):
        if len(row) < 2:
            continue
        sim = jaccard_matrix(genres[row])
        iu = np.triu_indices(len(row), 1)
        vals.append(float(np.mean(1.0 - sim[iu])))
    return float(np.mean(vals)) if vals else 0.0
