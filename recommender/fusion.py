"""Weighted reciprocal rank fusion of strategy rankings, and learning its weights on validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

RRF_K = 60
DEFAULT_WEIGHTS: dict[str, float] = {
    "collaborative": 0.35, "content": 0.25, "gnn": 0.30, "context": 0.10, "neumf": 0.30,
}  # fmt: skip


def ranks_from_scores(scores: np.ndarray, depth: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of every item within each row's top-``depth`` (0 = not in the top-depth).

    Parameters
    ----------
    scores : np.ndarray[float], shape (U, I) or (I,)
        Higher is better; ``-inf`` / NaN never ranks.
    depth : int
        Candidates kept per strategy (the serving cut-off).
    exclude : np.ndarray[bool], same shape as ``scores``, optional
        Items that must not be ranked (the user's history).

    Returns
    -------
    np.ndarray[int32], same shape as ``scores``
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64)).copy()
    s[~np.isfinite(s)] = -np.inf
    if exclude is not None:
        s[np.atleast_2d(exclude)] = -np.inf
    depth = min(depth, s.shape[1])
    top = np.argpartition(-s, depth - 1, axis=1)[:, :depth]
    top_s = np.take_along_axis(s, top, 1)
    order = np.argsort(-top_s, axis=1, kind="stable")
    top = np.take_along_axis(top, order, 1)
    valid = np.isfinite(np.take_along_axis(top_s, order, 1))
    out = np.zeros(s.shape, np.int32)
    r = np.broadcast_to(np.arange(1, depth + 1, dtype=np.int32), top.shape)
    np.put_along_axis(out, top, np.where(valid, r, 0), 1)
    return out.reshape(np.shape(scores))


def rrf_fuse(ranks: Mapping[str, np.ndarray], weights: Mapping[str, float], k: int = RRF_K) -> np.ndarray:
    """Weighted reciprocal rank fusion: ``sum_s w_s / (k + rank_s(i))`` over strategies ranking i.

    Parameters
    ----------
    ranks : mapping name -> np.ndarray[int], each shape (..., I)
        1-based ranks, 0 where the strategy did not return the item.
    weights : mapping name -> float
        Strategy weights; a strategy missing here has weight 0.
    k : int
        The RRF constant (60 in Cormack et al. 2009).

    Returns
    -------
    np.ndarray[float64], shape (..., I)
        Fused relevance; 0 for items no strategy returned.

    Examples
    --------
    >>> rrf_fuse({"a": np.array([1, 2, 0])}, {"a": 1.0}, k=60)
    array([0.01639344, 0.01612903, 0.        ])
    """
    out = None
    for name, r in ranks.items():
        w = float(weights.get(name, 0.0))
        r = np.asarray(r)
        term = np.where(r > 0, w / (k + np.maximum(r, 1)), 0.0)
        out = term if out is None else out + term
    if out is None:
        raise ValueError("rrf_fuse needs at least one strategy's ranks")
    return out


def learn_weights(
    ranks: Mapping[str, np.ndarray],
    objective: Callable[[np.ndarray], float],
    init: Mapping[str, float],
    k: int = RRF_K,
    grid: tuple[float, ...] = (0.0, 0.5, 0.75, 1.5, 2.0, 3.0),
    sweeps: int = 3,
) -> tuple[dict[str, float], float]:
    """Coordinate ascent on the fusion weights against a validation objective.

    Each sweep tries, for every strategy in turn, its current weight times each factor of ``grid``
    and keeps the best; the weights are renormalised to sum to 1 at the end (RRF is invariant to a
    common scale).

    Parameters
    ----------
    ranks : mapping name -> np.ndarray[int], shape (U, I)
        Validation-request ranks per strategy.
    objective : callable (fused scores (U, I)) -> float
        Higher is better, e.g. NDCG@10 of the validation item.
    init : mapping name -> float
        Starting weights (the defaults); a zero start weight is seeded at 0.05.

    Returns
    -------
    (weights, objective value)
    """
    w = {n: float(init.get(n, 0.0)) or 0.05 for n in ranks}
    best = objective(rrf_fuse(ranks, w, k))
    for _ in range(sweeps):
        improved = False
        for name in ranks:
            for f in grid:
                trial = dict(w)
                trial[name] = w[name] * f if w[name] > 0 else 0.05 * f
                val = objective(rrf_fuse(ranks, trial, k))
                if val > best + 1e-9:
                    best, w, improved = val, trial, True
        if not improved:
            break
    total = sum(w.values()) or 1.0
    return {n: v / total for n, v in w.items()}, best
