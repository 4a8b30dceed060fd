"""Score a finished simulation run from outside: ``experiments.load_run(run_dir).score(users, items)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recommender.data import Dataset, load_dataset
from recommender.model_store import load_version
from recommender.ncf import NeuMFShape, neumf_logits, unflatten_shared


@dataclass
class RunScorer:
    """The registry's LATEST global model plus the run's (simulation-only) private embeddings."""

    shared: dict[str, torch.Tensor]
    shape: NeuMFShape
    private: np.ndarray
    dataset: Dataset
    version: int

    def score(self, user_ids, item_ids) -> np.ndarray:
        """NeuMF logits for pairs of raw MovieLens ids (``user_ids[k]``, ``item_ids[k]``).

        Parameters
        ----------
        user_ids, item_ids : array-like of int, shape (n,)
            Raw ids as in the data files (``u.data`` / ``ml-100k.inter``).

        Returns
        -------
        np.ndarray[float32], shape (n,)
        """
        u = self.dataset.user_index(user_ids)
        i = self.dataset.item_index(item_ids)
        if len(u) != len(i):
            raise ValueError(f"user_ids ({len(u)}) and item_ids ({len(i)}) must have the same length")
        with torch.no_grad():
            out = neumf_logits(self.shared, torch.from_numpy(self.private[u]), torch.from_numpy(i))
        return out.numpy()


def load_run(run_dir: str | Path) -> RunScorer:
    """Load a finished simulation run for offline scoring.

    The private embeddings come from ``simulation_artifacts/private_embeddings.npz``, which only
    ``fedrec simulate`` writes: in deployment they never leave the devices.
    """
    run_dir = Path(run_dir)
    mv = load_version(run_dir)
    art = run_dir / "simulation_artifacts" / "private_embeddings.npz"
    if not art.is_file():
        raise FileNotFoundError(f"{art} is missing: only finished `fedrec simulate` runs save private "
                                "embeddings (deployed runs keep them on the devices)")  # fmt: skip
    saved = np.load(art)
    data = mv.meta["data"]
    ds = load_dataset(data["name"], cache=data.get("cache"), seed=data.get("seed", 0), n_users=data.get("users"),
                      n_items=data.get("items"), mean_interactions=data.get("mean_interactions"),
                      exact_interactions=data.get("exact_interactions", 0)) \
        if data["name"] == "synthetic" else load_dataset(data["name"], cache=data.get("cache"))  # fmt: skip
    private = np.zeros((ds.n_users, mv.shape.private_dim), np.float32)
    private[saved["users"]] = saved["emb"]
    return RunScorer(unflatten_shared(mv.shared, mv.shape), mv.shape, private, ds, mv.version)
