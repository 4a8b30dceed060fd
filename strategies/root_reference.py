"""FLTrust-style reference update: the server trains the global model on a small root dataset it holds."""

from __future__ import annotations

import numpy as np
import torch

from recommender.data import Split
from recommender.local_training import LocalTrainConfig, build_schedule, train_cohort, user_rng
from recommender.ncf import NeuMFShape, init_private


class RootReference:
    """``theta (d,) -> mean update of the root users (d,)``, called once per round by ``UpdateTrust``.

    The root dataset is the interactions of ``users`` (in simulation: a few users drawn with the
    run seed, standing in for data the operator collected itself, e.g. staff accounts). Their
    private embeddings live on the server and persist across rounds, like any user's on a node.

    Parameters
    ----------
    split : Split
        Population split (only the root users' training rows are read).
    users : np.ndarray[int64], shape (R,)
    shape : NeuMFShape
    client : LocalTrainConfig
        The same local training as the users'.
    seed : int
    """

    def __init__(self, split: Split, users: np.ndarray, shape: NeuMFShape, client: LocalTrainConfig,
                 seed: int) -> None:  # fmt: skip
        self.split, self.users, self.shape, self.client, self.seed = split, np.asarray(users), shape, client, seed
        self.private = init_private(len(self.users), shape, seed + 7)
        self.calls = 0

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        self.calls += 1
        schedules = [build_schedule(self.split.train_of(int(u)), self.split.seen_of(int(u)), self.split.n_items,
                                    self.client, user_rng(self.seed + 101, self.calls, int(u))) for u in self.users]  # fmt: skip
        delta, self.private, _ = train_cohort(torch.from_numpy(np.asarray(theta, np.float32).copy()), self.private,
                                              schedules, self.shape, self.client)  # fmt: skip
        out = torch.zeros(self.shape.shared_dim, dtype=torch.float64)
        delta.sum_into(out, self.shape)
        return (out / len(self.users)).float().numpy()
