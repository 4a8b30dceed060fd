"""Collaborative strategy: implicit-feedback ALS (``implicit``) tuned on the validation item."""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recommender.data import Split
from recommender.metrics import full_ranks, rank_metrics

log = logging.getLogger(__name__)


@dataclass
class ALSConfig:
    """ALS hyper-parameters and their validation grid (config group ``recommender.als``).

    Parameters
    ----------
    factors, regularization, alpha, iterations : defaults used when ``tune`` is off.
    tune : bool
        Grid-search ``grid_*`` on validation NDCG@10 (full ranking) and keep the best.
    grid_factors, grid_regularization, grid_alpha : lists
    threads : int
        BLAS/implicit threads (0 = all cores).
    """

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 15
    tune: bool = True
    grid_factors: list[int] = field(default_factory=lambda: [64, 128])
    grid_regularization: list[float] = field(default_factory=lambda: [0.01, 0.1])
    grid_alpha: list[float] = field(default_factory=lambda: [1.0, 2.0, 5.0])
    threads: int = 0


def train_matrix(split: Split) -> sp.csr_matrix:
    """Binary user x item CSR of the train split, shape (U, I), float32."""
    data = np.ones(len(split.train_items), np.float32)
    m = sp.csr_matrix((data, split.train_items, split.train_indptr), shape=(split.n_users, split.n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def history_mask(split: Split, users: np.ndarray, with_val: bool) -> np.ndarray:
    """Boolean (U, I) mask of each user's train items (plus the validation item)."""
    mask = np.zeros((len(users), split.n_items), bool)
    for j, u in enumerate(users):
        mask[j, split.train_of(int(u))] = True
        if with_val:
            mask[j, split.val_item[u]] = True
    return mask


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
        self.seed = seed
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.params: dict = {}
        self.tuning: list[dict] = []
        self._model = None

    def _fit_one(self, x: sp.csr_matrix, factors: int, reg: float, alpha: float):
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        from implicit.cpu.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(factors=factors, regularization=reg, alpha=alpha,
                                        iterations=self.cfg.iterations, random_state=self.seed,
                                        num_threads=self.cfg.threads)  # fmt: skip
        model.fit(x, show_progress=False)
        return model

    def fit(self, split: Split) -> CollaborativeALS:
        """Fit on the train split; with ``tune`` pick the grid point with the best validation NDCG@10."""
        x = train_matrix(split)
        c = self.cfg
        grid = (list(itertools.product(c.grid_factors, c.grid_regularization, c.grid_alpha)) if c.tune
                else [(c.factors, c.regularization, c.alpha)])  # fmt: skip
        users = np.arange(split.n_users)
        exclude = history_mask(split, users, with_val=False)
        best = (-1.0, None, None)
        for f, reg, a in grid:
            model = self._fit_one(x, f, reg, a)
            if not c.tune:  # fixed parameters (e.g. refit on train + validation): nothing to score
                best = (float("nan"), (f, reg, a), model)
                break
            scores = np.asarray(model.user_factors) @ np.asarray(model.item_factors).T
            ndcg = rank_metrics(full_ranks(scores, split.val_item, exclude), 10)["ndcg@10"]
            self.tuning.append({"factors": f, "regularization": reg, "alpha": a, "val_ndcg@10": ndcg})
            log.info("ALS f=%d reg=%g alpha=%g: val NDCG@10 %.4f", f, reg, a, ndcg)
            if ndcg > best[0]:
                best = (ndcg, (f, reg, a), model)
        self._model = best[2]
        self.params = dict(zip(("factors", "regularization", "alpha"), best[1], strict=True))
        self.params["val_ndcg@10"] = best[0]
        self.user_factors = np.asarray(self._model.user_factors, np.float32)
        self.item_factors = np.asarray(self._model.item_factors, np.float32)
        return self

    def state(self) -> dict:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors,
                "params": self.params, "tuning": self.tuning}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict, cfg: ALSConfig | None = None) -> CollaborativeALS:
        obj = cls(cfg)
        obj.user_factors, obj.item_factors = state["user_factors"], state["item_factors"]
        obj.params, obj.tuning = state["params"], state["tuning"]
        return obj

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Scores of known users, shape (U, I)."""
        return self.user_factors[users] @ self.item_factors.T

    def fold_in(self, items: np.ndarray) -> np.ndarray:
        """User factor of a history, by the ALS normal equations with item factors fixed.

        ``x = (Y^T Y + alpha Y_h^T Y_h + reg I)^-1 (1 + alpha) Y_h^T 1`` (confidence 1 + alpha on
        the watched items, preference 1), the same solve ALS does for a user row. Shape (f,).
        """
        y = self.item_factors
        f = y.shape[1]
        a, reg = float(self.params["alpha"]), float(self.params["regularization"])
        if not hasattr(self, "_yty"):
            self._yty = y.T @ y
        yh = y[np.unique(items)]
        lhs = self._yty + a * yh.T @ yh + reg * np.eye(f, dtype=y.dtype)
        rhs = (1.0 + a) * yh.sum(0)
        return np.linalg.solve(lhs, rhs).astype(np.float32)

    def score_history(self, items: np.ndarray, user: int | None = None) -> np.ndarray:
        """Scores for a request, shape (I,): the known user's factor, else a fold-in."""
        if user is not None:
            return self.user_factors[user] @ self.item_factors.T
        if len(items) == 0:
            return np.full(self.item_factors.shape[0], np.nan, np.float32)
        return self.fold_in(items) @ self.item_factors.T
