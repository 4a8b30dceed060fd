"""Federated NeuMF strategy: the registry's global model, the user vector folded in on request.

The request's user embedding is trained from its watch history with the client's own local-training
code (:func:`recommender.local_training.train_cohort` with the shared parameters frozen), so the
central recommender never needs a user embedding from a device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from recommender.data import Split
from recommender.local_training import LocalTrainConfig, build_schedule, train_cohort, user_rng
from recommender.ncf import (
    NeuMF,
    NeuMFShape,
    init_private,
    score_all_items,
    unflatten_shared,
)

log = logging.getLogger(__name__)
FOLD_IN_ROUND = 1_000_000  # a round index no federated run reaches: fold-in RNG streams stay apart


@dataclass
class FoldInConfig:
    """Fold-in of a request's user vector (config group ``recommender.neumf``).

    Parameters
    ----------
    epochs, batch_size, negatives, lr, optimizer :
        As in :class:`recommender.local_training.LocalTrainConfig`; only the private embedding
        trains. Defaults: 30 epochs, batch 64, 4 negatives, plain SGD (the client's optimizer).
    private_lr : float
        Step size of the private user embedding, the only parameter that trains here (``lr``
        would be that of the frozen shared parameters). Default 4.0, chosen on the validation
        item of the three federated ML-100K runs (README); the earlier fold-in (Adam, 5 epochs)
        silently inherited the client's SGD step of 2.0 for Adam.
    max_history : int
        Most recent history items used (bounds request latency).
    chunk_users : int
        Users folded in together when precomputing known users.
    """

    epochs: int = 30
    batch_size: int = 64
    negatives: int = 4
    lr: float = 0.01
    optimizer: str = "sgd"
    private_lr: float = 4.0
    max_history: int = 200
    chunk_users: int = 256

    def local(self) -> LocalTrainConfig:
        return LocalTrainConfig(epochs=self.epochs, batch_size=self.batch_size, negatives=self.negatives,
                                lr=self.lr, optimizer=self.optimizer, chunk_users=self.chunk_users,
                                private_lr=self.private_lr)  # fmt: skip


def fold_in(shared_vec: torch.Tensor, shape: NeuMFShape, histories: list[np.ndarray],
            cfg: FoldInConfig, seed: int = 0, ids: list[int] | None = None) -> torch.Tensor:  # fmt: skip
    """Private embeddings for watch histories, shape (U, 3f), with the shared model frozen.

    Parameters
    ----------
    shared_vec : torch.Tensor, shape (d,)
    histories : list of np.ndarray[int], length U
        Watched items per user (non-empty).
    ids : list of int, optional
        Stable per-user ids for the seeded schedules (default 0..U-1).
    """
    lcfg = cfg.local()
    lcfg.validate()
    ids = list(range(len(histories))) if ids is None else ids
    out = torch.empty(len(histories), shape.private_dim)
    for lo in range(0, len(histories), cfg.chunk_users):
        chunk = range(lo, min(lo + cfg.chunk_users, len(histories)))
        scheds = []
        for j in chunk:
            h = np.asarray(histories[j], np.int64)[-cfg.max_history :]
            scheds.append(build_schedule(h, np.unique(h), shape.n_items, lcfg, user_rng(seed, FOLD_IN_ROUND, ids[j])))
        g = torch.Generator().manual_seed(seed * 1_000_003 + lo)
        private = init_private(len(scheds), shape, g)
        _, new_private, _ = train_cohort(shared_vec, private, scheds, shape, lcfg, freeze_shared=True)
        out[lo : lo + len(scheds)] = new_private
    return out


class NeuMFStrategy:
    """Scores with the global NeuMF and a folded-in user vector.

    Parameters
    ----------
    shared_vec : torch.Tensor, shape (d,)
    shape : NeuMFShape
    cfg : FoldInConfig
    user_vectors : torch.Tensor, shape (U, 3f), optional
        Precomputed fold-ins of the platform's known users (cached per model version).
    """

    name = "neumf"

    def __init__(self, shared_vec: torch.Tensor, shape: NeuMFShape, cfg: FoldInConfig | None = None,
                 user_vectors: torch.Tensor | None = None, seed: int = 0) -> None:  # fmt: skip
        self.shared_vec, self.shape = shared_vec, shape
        self.shared = unflatten_shared(shared_vec, shape)
        self.cfg = cfg or FoldInConfig()
        self.user_vectors = user_vectors
        self.seed = seed
        self._items = torch.arange(shape.n_items)

    def item_embeddings(self) -> np.ndarray:
        """Federated item embeddings [GMF | MLP], shape (I, 3f)."""
        return torch.cat([self.shared["gmf_item"], self.shared["mlp_item"]], 1).numpy().copy()

    def precompute_users(self, split: Split) -> torch.Tensor:
        """Fold in every known user from the train split, shape (U, 3f)."""
        hist = [split.train_of(u) for u in range(split.n_users)]
        self.user_vectors = fold_in(self.shared_vec, self.shape, hist, self.cfg, self.seed)
        return self.user_vectors

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Logits of known users, shape (U, I)."""
        return score_all_items(self.shared, self.user_vectors[torch.as_tensor(users)]).numpy()

    def score_history(self, items: np.ndarray, user: int | None = None) -> np.ndarray:
        """Logits for one request, shape (I,); NaN for an empty history."""
        if user is not None and self.user_vectors is not None:
            vec = self.user_vectors[user]
        elif len(items) == 0:
            return np.full(self.shape.n_items, np.nan, np.float32)
        else:
            vec = fold_in(self.shared_vec, self.shape, [np.asarray(items)], self.cfg, self.seed)[0]
        return self._score_vec(vec)

    def _score_vec(self, vec: torch.Tensor) -> np.ndarray:
        """All-item logits of one user vector, shape (I,): :func:`neumf_logits` with the item half
        of the first MLP layer precomputed once (the request then costs O(I * f), not O(I * f^2))."""
        f = self.shape.factors
        sh = self.shared
        with torch.no_grad():
            if getattr(self, "_item_pre", None) is None or self._item_pre.shape[0] != self.shape.n_items:
                self._item_pre = sh["mlp_item"] @ sh["w1"][:, 2 * f :].T + sh["b1"]
            h = torch.relu(self._item_pre + vec[f:] @ sh["w1"][:, : 2 * f].T)
            h = torch.relu(h @ sh["w2"].T + sh["b2"])
            wo = sh["wo"][0]
            out = sh["gmf_item"] @ (vec[:f] * wo[:f]) + h @ wo[f:] + sh["bo"]
            return out.numpy()


def train_reference_model(split: Split, factors: int = 32, epochs: int = 10, lr: float = 0.002,
                          batch_size: int = 1024, negatives: int = 4, seed: int = 0) -> torch.Tensor:  # fmt: skip
    """Train NeuMF centrally on the train split and return its flat shared vector, shape (d,).

    A stand-in for the federated global model while no ``fedrec simulate`` run exists (tests,
    development, benchmarks); the user rows it learns are thrown away, as the server never has them.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    shape = NeuMFShape(split.n_items, factors)
    model = NeuMF(shape, n_users=split.n_users)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    users = np.repeat(np.arange(split.n_users), np.diff(split.train_indptr))
    pos = split.train_items.astype(np.int64)
    for ep in range(epochs):
        neg = rng.integers(0, split.n_items, len(pos) * negatives)
        u = np.concatenate([users, np.repeat(users, negatives)])
        i = np.concatenate([pos, neg])
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.float32)
        perm = rng.permutation(len(u))
        losses = []
        for lo in range(0, len(perm), batch_size):
            b = perm[lo : lo + batch_size]
            logits = model(torch.as_tensor(u[b]), torch.as_tensor(i[b]))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.as_tensor(y[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        log.info("reference NeuMF epoch %d: loss %.4f", ep + 1, float(np.mean(losses)))
    return model.shared_vector()


def make_reference_run(run_dir, split: Split, data_name: str, factors: int = 32, epochs: int = 10,
                       seed: int = 0, **train_kwargs) -> None:  # fmt: skip
    """Write a run directory whose ``models/LATEST`` is a centrally trained NeuMF (development only)."""
    from recommender.model_store import save_version

    shared = train_reference_model(split, factors=factors, epochs=epochs, seed=seed, **train_kwargs)
    save_version(run_dir, 1, shared, NeuMFShape(split.n_items, factors),
                 {"data": {"name": data_name}, "round": 0, "source": "central reference (not federated)"})
