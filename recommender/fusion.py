"""Fusion of strategy scores (weighted RRF or weighted CombSUM of z-scores) and learning it on validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

RRF_K = 60
FUSION_METHODS = ("rrf", "combsum")
START_POINTS = ("default", "equal", "best")
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


def standardize(scores: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Per-request z-scores of one strategy: ``(s - mean) / sd`` over the items that can be ranked.

    Strategies score on unrelated scales (ALS dot products, NeuMF logits, cosines, trending
    counts); standardising each request's scores puts them on one scale for :func:`combsum_fuse`.

    Parameters
    ----------
    scores : np.ndarray[float], shape (U, I) or (I,)
    exclude : np.ndarray[bool], same shape, optional
        Items that cannot be recommended (the history); they do not enter the mean and sd.

    Returns
    -------
    np.ndarray[float64], same shape
        z-scores; excluded and non-finite entries are 0 (the mean), so they add nothing to a sum.
        A row with no spread is all 0.

    Examples
    --------
    >>> standardize(np.array([1.0, 2.0, 3.0]))
    array([-1.22474487,  0.        ,  1.22474487])
    """
    s = np.atleast_2d(np.asarray(scores, np.float64)).copy()
    bad = ~np.isfinite(s)
    if exclude is not None:
        bad |= np.atleast_2d(exclude)
    s[bad] = np.nan
    n = (~bad).sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(s, 1, keepdims=True) / np.maximum(n, 1)
        sd = np.sqrt(np.nansum((s - mean) ** 2, 1, keepdims=True) / np.maximum(n, 1))
        z = (s - mean) / np.where(sd > 0, sd, np.inf)
    z[bad] = 0.0
    return z.reshape(np.shape(scores))


def combsum_fuse(zscores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted CombSUM of standardised scores: ``sum_s w_s z_s(i)`` (Fox & Shaw 1994).

    Unlike RRF it keeps how far ahead a strategy puts an item, not only its rank, so a confident
    strong strategy is not flattened into a rank list.

    Parameters
    ----------
    zscores : mapping name -> np.ndarray[float], each shape (..., I)
        Per-request standardised scores (:func:`standardize`).
    weights : mapping name -> float
        A strategy missing here has weight 0.

    Returns
    -------
    np.ndarray[float64], shape (..., I)
        Fused score, any sign (compare within a request only).

    Examples
    --------
    >>> combsum_fuse({"a": np.array([1.0, -1.0]), "b": np.array([-1.0, 2.0])}, {"a": 2.0, "b": 0.5})
    array([ 1.5, -1. ])
    """
    out = None
    for name, z in zscores.items():
        term = float(weights.get(name, 0.0)) * np.asarray(z, np.float64)
        out = term if out is None else out + term
    if out is None:
        raise ValueError("combsum_fuse needs at least one strategy's scores")
    return out


def learn_weights(
    inputs: Mapping[str, np.ndarray],
    objective: Callable[[np.ndarray], float],
    init: Mapping[str, float],
    k: int = RRF_K,
    grid: tuple[float, ...] = (0.0, 0.5, 0.75, 1.5, 2.0, 3.0),
    sweeps: int = 3,
    fuse: Callable[[Mapping[str, np.ndarray], Mapping[str, float]], np.ndarray] | None = None,
    min_gain: float = 0.0,
) -> tuple[dict[str, float], float]:
    """Coordinate ascent on the fusion weights against a validation objective.

    Each sweep tries, for every strategy in turn, its current weight times each factor of ``grid``
    and keeps the best; the weights are renormalised to sum to 1 at the end (RRF and CombSUM are
    invariant to a common scale).

    Parameters
    ----------
    inputs : mapping name -> np.ndarray, shape (U, I)
        Validation-request inputs per strategy: ranks for RRF, z-scores for CombSUM.
    objective : callable (fused scores (U, I)) -> float
        Higher is better, e.g. NDCG@10 of the validation item.
    init : mapping name -> float
        Starting weights (the defaults); a zero start weight is seeded at 0.05.
    k : int
        RRF constant, used when ``fuse`` is None.
    fuse : callable (inputs, weights) -> fused (U, I), optional
        The fusion (default: :func:`rrf_fuse` with ``k``).
    min_gain : float
        A move is kept only if it raises the objective by more than this (absolute). With one
        validation item per user, tiny gains are mostly noise; a margin keeps the weights nearer
        the start unless the data clearly say otherwise.

    Returns
    -------
    (weights, objective value)
    """
    if fuse is None:
        def fuse(x, w):  # noqa: E306
            return rrf_fuse(x, w, k)
    w = {n: float(init.get(n, 0.0)) or 0.05 for n in inputs}
    best = objective(fuse(inputs, w))
    for _ in range(sweeps):
        improved = False
        for name in inputs:
            for f in grid:
                trial = dict(w)
                trial[name] = w[name] * f if w[name] > 0 else 0.05 * f
                val = objective(fuse(inputs, trial))
                if val > best + max(min_gain, 1e-9):
                    best, w, improved = val, trial, True
        if not improved:
            break
    total = sum(w.values()) or 1.0
    return {n: v / total for n, v in w.items()}, best


def start_weights(kind: str, names: list[str], default: Mapping[str, float],
                  single: Mapping[str, float]) -> dict[str, float]:  # fmt: skip
    """A starting point of the weight search.

    Parameters
    ----------
    kind : {"default", "equal", "best"}
        ``default``: the configured weights; ``equal``: 1 each; ``best``: 1 for the strategy with
        the best validation score alone and 0.2 for every other one.
    names : list[str]
        The fused strategies.
    default : mapping name -> float
    single : mapping name -> float
        Each strategy's own validation score (used by ``best``).

    Returns
    -------
    dict name -> float

    Examples
    --------
    >>> start_weights("best", ["a", "b"], {}, {"a": 0.05, "b": 0.08})
    {'a': 0.2, 'b': 1.0}
    """
    if kind == "default":
        return {n: float(default.get(n, 0.0)) for n in names}
    if kind == "equal":
        return {n: 1.0 for n in names}
    if kind == "best":
        top = max(names, key=lambda n: single[n])
        return {n: 1.0 if n == top else 0.2 for n in names}
    raise ValueError(f"weight-search start {kind!r} is not one of {START_POINTS}")


def fuse_scores(scores: Mapping[str, np.ndarray], weights: Mapping[str, float], method: str = "rrf",
                exclude: np.ndarray | None = None, depth: int = 100, k: int = RRF_K) -> np.ndarray:  # fmt: skip
    """Fused, non-negative relevance of the strategies' scores; 0 marks an item that is no candidate.

    Parameters
    ----------
    scores : mapping name -> np.ndarray[float], each shape (U, I) or (I,)
    weights : mapping name -> float
    method : {"rrf", "combsum"}
        ``rrf``: :func:`rrf_fuse` of each strategy's top-``depth`` ranks (candidates are their union).
        ``combsum``: :func:`combsum_fuse` of :func:`standardize`-d scores, turned into a relevance
        by a per-request softmax (monotone, so the order is the CombSUM order; every rankable item
        is a candidate) so that trust boosts and MMR see a positive relevance as with RRF.
    exclude : np.ndarray[bool], same shape as each score array, optional
        The history; excluded items get relevance 0.
    depth, k : int
        RRF candidates per strategy and constant.

    Returns
    -------
    np.ndarray[float64], same shape as each score array
    """
    if method == "rrf":
        return rrf_fuse({n: ranks_from_scores(s, depth, exclude) for n, s in scores.items()}, weights, k)
    if method != "combsum":
        raise ValueError(f"fusion method {method!r} is not one of {FUSION_METHODS}")
    fused = combsum_fuse({n: standardize(s, exclude) for n, s in scores.items()}, weights)
    return combsum_relevance(fused, exclude)


def combsum_relevance(fused: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Softmax of CombSUM scores over each request's rankable items, shape of ``fused``; 0 if excluded."""
    f = np.atleast_2d(np.asarray(fused, np.float64)).copy()
    ex = np.zeros(f.shape, bool) if exclude is None else np.atleast_2d(exclude)
    f[ex] = -np.inf
    top = np.max(f, axis=1, keepdims=True)
    e = np.exp(f - np.where(np.isfinite(top), top, 0.0))
    e /= np.maximum(e.sum(1, keepdims=True), np.finfo(np.float64).tiny)
    return e.reshape(np.shape(fused))


@dataclass
class FusionLearnConfig:
    """What ``evaluate-recommender`` searches on the validation item (config ``recommender.learn``).

    Parameters
    ----------
    methods : list[str]
        Fusion methods tried (``rrf``, ``combsum``); for each, the weights are learned by coordinate
        ascent (from each of ``starts``), and the (method, k, weights) with the best validation
        objective (NDCG@``metric_k``) is kept and served.
    rrf_k : list[int]
        RRF constants tried with ``rrf`` (a smaller k is more top-heavy); empty = only ``rrf_k``.
    grid : list[float]
        Multiplicative steps of the coordinate ascent.
    starts : list[str]
        Starting points of the coordinate ascent (:func:`start_weights`); it is run from each and
        the weights with the best validation objective are kept (the first of equals). Coordinate
        ascent from one start stops in a local optimum that depends on the start.
    sweeps : int
    min_gain : float
        Smallest validation-objective gain (absolute) for a weight move to be kept.
    metric_k : int
        The search maximises validation NDCG@``metric_k`` (weights and the choice of candidate);
        the evaluation still reports NDCG@10. A deeper cut-off gives credit to every validation
        item ranked in the top ``metric_k``, not only the ~8% ranked in the top 10, so the weights
        rest on more users and carry over better to users they were not fitted on (README).
    """

    methods: list[str] = field(default_factory=lambda: ["rrf", "combsum"])
    rrf_k: list[int] = field(default_factory=lambda: [5, 20, 60])
    grid: list[float] = field(default_factory=lambda: [0.0, 0.5, 0.75, 1.5, 2.0, 3.0])
    starts: list[str] = field(default_factory=lambda: list(START_POINTS))
    sweeps: int = 3
    min_gain: float = 0.0
    metric_k: int = 50

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in FUSION_METHODS]
        if bad or not self.methods:
            raise ValueError(f"recommender.learn.methods={self.methods}: choose from {list(FUSION_METHODS)}")
        bad = [s for s in self.starts if s not in START_POINTS]
        if bad or not self.starts:
            raise ValueError(f"recommender.learn.starts={self.starts}: choose from {list(START_POINTS)}")
        if self.metric_k < 1:
            raise ValueError(f"recommender.learn.metric_k={self.metric_k} must be >= 1")
        if any(k < 1 for k in self.rrf_k):
            raise ValueError(f"recommender.learn.rrf_k={self.rrf_k}: every k must be >= 1")
