"""A node's private state: its users' embeddings, kept in Context.state and optionally on disk.

Flower's ``Context.state`` lives as long as the SuperNode process; a device also persists the
embeddings to its own disk (``FEDREC_NODE_STATE`` dir), keyed by user, so a restarted SuperNode
(which comes back with empty state) reloads them. In simulation the server names a directory under
the run (``node-state-dir``) so that a resumed simulation finds its nodes' state again.

The state is versioned by round so that it stays consistent with the server's checkpoint: after
training round r a node writes ``private.rNNNNNN.npz`` and keeps the newest older version too. A
message of round r implies the server has durably checkpointed round r-1, so a node never needs
anything older; a server killed during round r and resumed from its round r-1 checkpoint re-runs
round r from the node's round r-1 version, exactly as the uninterrupted run did.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context

from recommender.model_store import atomic_write_bytes
from recommender.ncf import NeuMFShape

log = logging.getLogger(__name__)
STATE_KEY = "fedrec-private"


def initial_private(users: np.ndarray, shape: NeuMFShape, seed: int) -> np.ndarray:
    """Initial embeddings N(0, 0.01^2), each drawn from the user's own seed so that a user's start
    does not depend on which node hosts it. Shape (U, 3f), float32."""
    out = np.empty((len(users), shape.private_dim), np.float32)
    for j, u in enumerate(users):
        out[j] = np.random.default_rng([seed, 7919, int(u)]).normal(0, 0.01, shape.private_dim)
    return out


ROUND_KEY = "fedrec-private-round"
_FILE = re.compile(r"^private\.r(\d{6})\.npz$")


def state_versions(disk: Path) -> dict[int, Path]:
    """The saved versions in a node's state dir: {round: path}."""
    if not disk.is_dir():
        return {}
    out = {}
    for f in disk.iterdir():
        if m := _FILE.match(f.name):
            out[int(m.group(1))] = f
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
    as_of : int, optional
        Load the state as it was after round ``as_of`` (the newest version <= as_of); default
        the newest. Training round r asks for r-1, evaluation after round r for r.
    disk : Path, optional
        Directory for the on-disk versions; default ``$FEDREC_NODE_STATE`` (a device), else none.
    """

    def __init__(self, context: Context, users: np.ndarray, shape: NeuMFShape, seed: int,
                 as_of: int | None = None, disk: str | os.PathLike | None = None) -> None:  # fmt: skip
        self.context, self.users, self.shape = context, users, shape
        if disk is None and os.environ.get("FEDREC_NODE_STATE"):
            disk = os.environ["FEDREC_NODE_STATE"]
        self.disk = Path(disk) if disk is not None else None
        self.loaded_round = 0
        limit = math.inf if as_of is None else as_of
        rec = context.state.array_records.get(STATE_KEY)
        rec_round = int(context.state.config_records[ROUND_KEY]["round"]) \
            if ROUND_KEY in context.state.config_records else 0  # fmt: skip
        same_users = rec is not None and rec["users"].numpy().shape == users.shape \
            and bool((rec["users"].numpy() == users).all())  # fmt: skip
        versions = {r: f for r, f in state_versions(self.disk).items() if r <= limit} if self.disk else {}
        if same_users and rec_round <= limit and rec_round >= max(versions, default=0):
            # the common case: the state this process wrote last round (no fresh start drawn)
            self.matrix, self.loaded_round = rec["emb"].numpy().copy(), rec_round
            return
        self.matrix = initial_private(users, shape, seed)
        if versions:
            # Context.state is ahead of the wanted round (a resumed server) or gone (a restarted node).
            self.loaded_round = max(versions)
            saved = np.load(versions[self.loaded_round])
            pos = np.searchsorted(users, saved["users"])
            ok = (pos < len(users)) & (users[np.minimum(pos, len(users) - 1)] == saved["users"])
            self.matrix[pos[ok]] = saved["emb"][ok]
        elif rec is not None and rec_round > limit:
            log.warning("private state is at round %d but round %d was asked for and no older version is on "
                        "disk; starting those users afresh", rec_round, as_of)  # fmt: skip

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

    def save(self, server_round: int | None = None) -> None:
        """Write back into Context.state and, with a disk dir, as version ``server_round`` (atomic).

        Versions older than the newest one before ``server_round`` are deleted: the server has
        checkpointed round ``server_round - 1`` before sending this round, so no rewind goes further.
        """
        rnd = self.loaded_round + 1 if server_round is None else int(server_round)
        self.context.state.array_records[STATE_KEY] = ArrayRecord(
            {"users": Array(self.users), "emb": Array(self.matrix)}
        )
        self.context.state.config_records[ROUND_KEY] = ConfigRecord({"round": rnd})
        if self.disk is None:
            return
        import io

        self.disk.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, users=self.users, emb=self.matrix, round=np.int64(rnd))
        atomic_write_bytes(self.disk / f"private.r{rnd:06d}.npz", buf.getvalue())
        older = sorted(r for r in state_versions(self.disk) if r < rnd)
        for r in older[:-1]:
            (self.disk / f"private.r{r:06d}.npz").unlink(missing_ok=True)


def node_state_dir(config: dict, node_config: dict) -> Path | None:
    """Where this node keeps its private-state versions.

    A device (``FEDREC_DEVICE`` set) uses only its own ``$FEDREC_NODE_STATE``: the server never
    chooses a path on a device. A simulated node uses ``<node-state-dir>/<partition-id>`` when the
    server sends ``node-state-dir`` (the run directory's ``node_state/``), so a resumed simulation
    finds it; otherwise ``$FEDREC_NODE_STATE`` or nothing.
    """
    if os.environ.get("FEDREC_DEVICE") or not config.get("node-state-dir"):
        return Path(os.environ["FEDREC_NODE_STATE"]) if os.environ.get("FEDREC_NODE_STATE") else None
    key = node_config.get("partition-id", str(node_config.get("users", "node")).replace("-", "_"))
    return Path(str(config["node-state-dir"])) / str(key)
