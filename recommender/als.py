"""Collaborative strategy: implicit-feedback ALS (``implicit``) tuned on the validation item."""

from __future__ import annotations

import itertools
import logging
import os
import re
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recommender.data import Split
from recommender.metrics import full_ndcg

log = logging.getLogger(__name__)
_BM25 = re.compile(r"^bm25\(\s*([0-9.eE+-]+)\s*,\s*([0-9.eE+-]+)\s*\)$")


class ALSConfigError(ValueError):
    """An ALS setting (e.g. a confidence weighting spec) cannot be used."""


@dataclass
class ALSConfig:
    """ALS hyper-parameters and their validation grid (config group ``recommender.als``).

    Parameters
    ----------
    factors, regularization, alpha, iterations : defaults used when ``tune`` is off.
    weighting : str
        Confidence weighting of the interaction matrix before ALS: ``"none"`` (binary, confidence
        ``alpha`` on every watched item) or ``"bm25(K1,B)"`` (``implicit.nearest_neighbours.bm25_weight``,
        confidence ``alpha * bm25`` so rarely watched items and short histories weigh more).
    tune : bool
        Grid-search ``grid_*`` on validation NDCG@10 (full ranking) and keep the best.
    grid_factors, grid_regularization, grid_alpha, grid_weighting : lists
        The grid is their product. Selection looks only at the validation item.
    repeats : int
        ALS random initialisations (seeds ``seed .. seed + repeats - 1``) averaged per grid point;
        one validation item per user is noisy and so is ALS's initialisation, so a single fit
        would often pick a lucky seed rather than good hyper-parameters. The kept model is the
        one fitted with ``seed``.
    threads : int
        BLAS/implicit threads (0 = all cores).
    """

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 2.0
    weighting: str = "none"
    iterations: int = 15
    tune: bool = True
    grid_factors: list[int] = field(default_factory=lambda: [32, 64])
    grid_regularization: list[float] = field(default_factory=lambda: [0.1])
    grid_alpha: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    grid_weighting: list[str] = field(default_factory=lambda: ["none", "bm25(100,0.8)"])
    repeats: int = 2
    threads: int = 0

    def validate(self) -> None:
        for w in [self.weighting, *(self.grid_weighting if self.tune else [])]:
            parse_weighting(w)
        if self.repeats < 1:
            raise ALSConfigError(f"recommender.als.repeats={self.repeats} must be >= 1")


def parse_weighting(spec: str) -> tuple[float, float] | None:
    """``"none"`` -> None; ``"bm25(K1,B)"`` -> (K1, B)."""
    if spec == "none":
        return None
    m = _BM25.match(spec.replace(" ", ""))
    if not m:
        raise ALSConfigError(f"ALS weighting {spec!r} is not understood: use 'none' or 'bm25(K1,B)', "
                             "e.g. 'bm25(100,0.8)'")  # fmt: skip
    return float(m.group(1)), float(m.group(2))


def train_matrix(split: Split) -> sp.csr_matrix:
    """Binary user x item CSR of the train split, shape (U, I), float32."""
    data = np.ones(len(split.train_items), np.float32)
    # copies: scipy would otherwise share the split's arrays as the CSR's indices, and sum_duplicates
    # sorts them in place, which reorders split.train_items within each user away from its ratings and
    # timestamps (every later reader of the split, e.g. recency weights and trending, then sees them
    # misaligned)
    m = sp.csr_matrix((data, split.train_items.copy(), split.train_indptr.copy()),
                      shape=(split.n_users, split.n_items))  # fmt: skip
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def weigh(x: sp.csr_matrix, spec: str) -> sp.csr_matrix:
    """The interaction matrix (U, I) under confidence weighting ``spec``, float32 CSR."""
    kb = parse_weighting(spec)
    if kb is None:
        return x
    from implicit.nearest_neighbours import bm25_weight

    return bm25_weight(x, K1=kb[0], B=kb[1]).tocsr().astype(np.float32)


def bm25_stats(x: sp.csr_matrix) -> tuple[np.ndarray, float]:
    """What BM25 weighting needs of the training matrix: item idf (I,) and the mean history length.

    ``idf = log(U) - log1p(users per item)``, as in ``implicit.nearest_neighbours.bm25_weight``.
    """
    idf = np.log(float(x.shape[0])) - np.log1p(np.bincount(x.indices, minlength=x.shape[1]))
    return idf.astype(np.float32), float(np.asarray(x.sum(1)).mean())


def bm25_row(n_items: int, idf: np.ndarray, mean_len: float, k1: float, b: float) -> np.ndarray:
    """BM25 weights of a new binary history of ``n_items`` watched items, shape (len(idf),).

    The weight ``bm25_weight`` would give this row had it been in the training matrix (with that
    matrix's idf and mean length): ``(K1 + 1) / (K1 * norm + 1) * idf``, ``norm = 1 - B + B n / mean``.
    """
    norm = (1.0 - b) + b * n_items / mean_len
    return ((k1 + 1.0) / (k1 * norm + 1.0) * idf).astype(np.float32)


def history_mask(split: Split, users: np.ndarray, with_val: bool) -> np.ndarray:
    """Boolean (U, I) mask of each user's train items (plus the validation item)."""
    mask = np.zeros((len(users), split.n_items), bool)
    for j, u in enumerate(users):
        mask[j, split.train_of(int(u))] = True
        if with_val:
            mask[j, split.val_item[u]] = True
    return mask


def _als(factors: int, reg: float, alpha: float, iterations: int, seed: int, threads: int):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from implicit.cpu.als import AlternatingLeastSquares

    return AlternatingLeastSquares(factors=factors, regularization=reg, alpha=alpha, iterations=iterations,
                                   random_state=seed, num_threads=threads)  # fmt: skip


class CollaborativeALS:
    """ALS over the platform's interactions.

    Parameters
    ----------
    cfg : ALSConfig
    seed : int
    """

    name = "collaborative"

    def __init__(self, cfg: ALSConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or ALSConfig()
        self.cfg.validate()
        self.seed = seed
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.params: dict = {}
        self.tuning: list[dict] = []
        self.bm25_idf: np.ndarray | None = None
        self.mean_len: float = 0.0
        self._solver = None

    def _fit_one(self, x: sp.csr_matrix, factors: int, reg: float, alpha: float, seed: int):
        model = _als(factors, reg, alpha, self.cfg.iterations, seed, self.cfg.threads)
        model.fit(x, show_progress=False)
        return model

    def fit(self, split: Split) -> CollaborativeALS:
        """Fit on the train split; with ``tune`` pick the grid point with the best validation NDCG@10.

        Each grid point's score is the mean validation NDCG@10 (full ranking, train items excluded)
        over ``repeats`` initialisations; the test item is never looked at.
        """
        x = train_matrix(split)
        c = self.cfg
        grid = (list(itertools.product(c.grid_weighting, c.grid_factors, c.grid_regularization, c.grid_alpha))
                if c.tune else [(c.weighting, c.factors, c.regularization, c.alpha)])  # fmt: skip
        exclude = history_mask(split, np.arange(split.n_users), with_val=False) if c.tune else None
        weighted = {w: weigh(x, w) for w in dict.fromkeys(g[0] for g in grid)}
        best = (-np.inf, None, None)
        for w, f, reg, a in grid:
            model = self._fit_one(weighted[w], f, reg, a, self.seed)
            if not c.tune:  # fixed parameters (e.g. refit on train + validation): nothing to score
                best = (float("nan"), (w, f, reg, a), model)
                break
            vals = []
            for r in range(c.repeats):
                m = model if r == 0 else self._fit_one(weighted[w], f, reg, a, self.seed + r)
                scores = np.asarray(m.user_factors) @ np.asarray(m.item_factors).T
                vals.append(full_ndcg(scores, split.val_item, exclude, 10))
            ndcg = float(np.mean(vals))
            self.tuning.append({"weighting": w, "factors": f, "regularization": reg, "alpha": a,
                                "val_ndcg@10": ndcg, "val_ndcg@10_per_init": vals})  # fmt: skip
            log.info("ALS %s f=%d reg=%g alpha=%g: val NDCG@10 %.4f", w, f, reg, a, ndcg)
            if ndcg > best[0]:
                best = (ndcg, (w, f, reg, a), model)
        model = best[2]
        self.params = dict(zip(("weighting", "factors", "regularization", "alpha"), best[1], strict=True))
        self.params["val_ndcg@10"] = best[0]
        self.user_factors = np.asarray(model.user_factors, np.float32)
        self.item_factors = np.asarray(model.item_factors, np.float32)
        self.bm25_idf, self.mean_len = bm25_stats(x)
        return self

    def state(self) -> dict:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors,
                "params": self.params, "tuning": self.tuning, "bm25_idf": self.bm25_idf,
                "mean_len": self.mean_len}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict, cfg: ALSConfig | None = None) -> CollaborativeALS:
        obj = cls(cfg)
        obj.user_factors, obj.item_factors = state["user_factors"], state["item_factors"]
        obj.params, obj.tuning = state["params"], state["tuning"]
        obj.bm25_idf, obj.mean_len = state["bm25_idf"], state["mean_len"]
        return obj

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Scores of known users, shape (U, I)."""
        return self.user_factors[users] @ self.item_factors.T

    def history_row(self, items: np.ndarray) -> sp.csr_matrix:
        """A history as the (1, I) weighted row ALS was trained on (binary, or its BM25 weights)."""
        items = np.unique(np.asarray(items, np.int64))
        n = self.item_factors.shape[0]
        kb = parse_weighting(self.params.get("weighting", "none"))
        data = np.ones(len(items), np.float32) if kb is None else bm25_row(len(items), self.bm25_idf,
                                                                         self.mean_len, *kb)[items]  # fmt: skip
        return sp.csr_matrix((data, items, [0, len(items)]), shape=(1, n))

    def fold_in(self, items: np.ndarray) -> np.ndarray:
        """User factor of a history: ``implicit``'s exact least-squares user solve, item factors fixed.

        This is the step ALS takes for a user row (``recalculate_user``), on the history weighted as
        in training; its ``Y^T Y`` is computed once and cached. Shape (f,).
        """
        if self._solver is None:
            p = self.params
            self._solver = _als(self.item_factors.shape[1], float(p["regularization"]), float(p["alpha"]),
                                1, self.seed, 1)  # fmt: skip
            self._solver.item_factors = self.item_factors
        return np.asarray(self._solver.recalculate_user(0, self.history_row(items)), np.float32)

    def score_history(self, items: np.ndarray, user: int | None = None) -> np.ndarray:
        """Scores for a request, shape (I,): the known user's factor, else a fold-in."""
        if user is not None:
            return self.user_factors[user] @ self.item_factors.T
        if len(items) == 0:
            return np.full(self.item_factors.shape[0], np.nan, np.float32)
        return self.fold_in(items) @ self.item_factors.T
