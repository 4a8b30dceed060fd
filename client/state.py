"""A node's private state: its users' embeddings, kept in Context.state and optionally on disk.

Flower's ``Context.state`` lives as long as the SuperNode process; a device also persists the
embeddings to its own disk (``FEDREC_NODE_STATE`` dir), keyed by user, so a restarted SuperNode
(which comes back with a new node id and empty state) reloads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context

from recommender.model_store import atomic_write_bytes
from recommender.ncf import NeuMFShape

STATE_KEY = "fedrec-private"


def initial_private(users: np.ndarray, shape: NeuMFShape, seed: int) -> np.ndarray:
    """Initial embeddings N(0, 0.01^2), each drawn from the user's own seed so that a user's start
    does not depend on which node hosts it. Shape (U, 3f), float32."""
    out = np.empty((len(users), shape.private_dim), np.float32)
    for j, u in enumerate(users):
        out[j] = np.random.default_rng([seed, 7919, int(u)]).normal(0, 0.01, shape.private_dim)
    return out


class PrivateStore:
    """Private embeddings of a node's users, as one compact float32 matrix (U_node, 3f).

    Parameters
    ----------
    context : Context
        The node's Flower context (state survives across rounds in the SuperNode process).
    users : np.ndarray[int64]
        The node's users (sorted); row j holds user ``users[j]``.
    shape : NeuMFShape
    seed : int
    """

    def __init__(self, context: Context, users: np.ndarray, shape: NeuMFShape, seed: int) -> None:
        self.context, self.users, self.shape = context, users, shape
        self.disk = Path(os.environ["FEDREC_NODE_STATE"]) if os.environ.get("FEDREC_NODE_STATE") else None
        rec = context.state.array_records.get(STATE_KEY)
        if rec is not None and rec["users"].numpy().shape == users.shape and (rec["users"].numpy() == users).all():
            self.matrix = rec["emb"].numpy().copy()
        elif self.disk is not None and (self.disk / "private.npz").is_file():
            saved = np.load(self.disk / "private.npz")
            self.matrix = initial_private(users, shape, seed)
            pos = np.searchsorted(users, saved["users"])
            ok = (pos < len(users)) & (users[np.minimum(pos, len(users) - 1)] == saved["users"])
            self.matrix[pos[ok]] = saved["emb"][ok]
        else:
            self.matrix = initial_private(users, shape, seed)

    def rows(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each user id in the matrix; raises naming ids this node does not host."""
        pos = np.searchsorted(self.users, user_ids)
        pos = np.minimum(pos, len(self.users) - 1)
        if not (self.users[pos] == user_ids).all():
            bad = user_ids[self.users[pos] != user_ids][:5].tolist()
            raise ValueError(f"users {bad} are not hosted by this node")
        return pos

    def get(self, user_ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.matrix[self.rows(user_ids)].copy())

    def put(self, user_ids: np.ndarray, values: torch.Tensor) -> None:
        self.matrix[self.rows(user_ids)] = values.detach().float().numpy()

    def save(self) -> None:
        """Write back into Context.state (and to the device's disk when configured)."""
        self.context.state.array_records[STATE_KEY] = ArrayRecord(
            {"users": Array(self.users), "emb": Array(self.matrix)}
        )
        if self.disk is not None:
            import io

            self.disk.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.savez(buf, users=self.users, emb=self.matrix)
            atomic_write_bytes(self.disk / "private.npz", buf.getvalue())
