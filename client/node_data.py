"""What a node knows: the run config it was sent, its users, and their local data (cached)."""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from configs.schema import FedrecConfig, from_yaml
from recommender.config import DataConfig
from recommender.data import Split, leave_one_out, load_dataset, partition_users, split_for_fitting


@functools.lru_cache(maxsize=4)
def _config_from_yaml(digest: str, text: str) -> FedrecConfig:
    return from_yaml(text)


def run_config(text: str) -> FedrecConfig:
    """Parse (once per process) the resolved run config sent with every message."""
    return _config_from_yaml(hashlib.sha256(text.encode()).hexdigest(), text)


@functools.lru_cache(maxsize=2)
def _split(name: str, cache: str | None, users: int, items: int, mean: float, exact: int, seed: int,
           fit_on: str) -> Split:  # fmt: skip
    ds = load_dataset(name, cache=cache, seed=seed, n_users=users, n_items=items, mean_interactions=mean,
                      exact_interactions=exact) if name == "synthetic" else load_dataset(name, cache=cache)  # fmt: skip
    return split_for_fitting(leave_one_out(ds, seed=seed), fit_on)


def local_split(data: DataConfig) -> Split:
    """The leave-one-out split of the configured population (loaded once per process).

    With ``data.fit_on=trainval`` each user's validation interaction is part of the train rows.

    In simulation every node process loads the population and then touches only its own users'
    rows; on a device the same call loads the device's own user(s).
    """
    return _split(data.name, data.cache, data.users, data.items, data.mean_interactions,
                  data.exact_interactions, data.seed, data.fit_on)  # fmt: skip


def node_users(node_config: dict, population: int) -> np.ndarray:
    """The users this node hosts, from its node config.

    ``partition-id`` / ``num-partitions`` (set by the simulation engine, or by
    ``flower-supernode --node-config``) select a stable contiguous block; ``users="a-b"`` gives an
    explicit inclusive range of dense user indices.
    """
    if "users" in node_config:
        lo, _, hi = str(node_config["users"]).partition("-")
        return np.arange(int(lo), int(hi or lo) + 1, dtype=np.int64)
    if "partition-id" not in node_config or "num-partitions" not in node_config:
        raise ValueError("node config needs partition-id and num-partitions (or users=a-b); "
                         "start the SuperNode with --node-config 'partition-id=0 num-partitions=N'")  # fmt: skip
    pid, n = int(node_config["partition-id"]), int(node_config["num-partitions"])
    return partition_users(population, n)[pid]
