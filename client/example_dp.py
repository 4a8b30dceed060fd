"""Example-level DP (``privacy.unit=example``): DP-SGD inside each user's local training, with Opacus.

The record is one of the user's ratings: its positive item together with the ``k`` negatives
drawn for it this epoch. Every local step Poisson-samples records with rate ``q_u = min(1, B/n_u)``
(``n_u`` records, batch size B), computes per-record gradients of *all* the user's parameters with
Opacus (``GradSampleModule``; the model is one leaf module, so Opacus uses its functorch path),
clips each to ``example_clip_norm`` and adds ``N(0, (sigma * C_ex)^2)`` with Opacus's
``DPOptimizer``. The private user embedding is trained by the same noisy steps: a non-private
update of it would carry the records into later rounds' gradients and void the analysis.

Accounting is per user and needs no state of its own (``privacy/example.py``): a user who took
part in ``c`` rounds ran ``c * E * ceil(n_u / B)`` such steps. The path is sequential per user (a
device runs one user) and used only when ``unit=example``; the default cohort trainer is untouched.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from privacy.example import example_sample_rate
from recommender.local_training import MLP_KEYS, CohortDelta, LocalTrainConfig, user_rng
from recommender.ncf import NeuMFShape, neumf_logits, unflatten_shared

__all__ = ["train_chunk_example_dp", "train_user_example_dp"]

log = logging.getLogger(__name__)

_SHARED_KEYS = ("gmf_item", "mlp_item", *MLP_KEYS)


# ------------------------------------------------------------------------------------ training
class _OneUserNeuMF(nn.Module):
    """NeuMF of one user as a single leaf module: the shared tensors and the private embedding as
    direct parameters, so Opacus's ``GradSampleModule`` computes per-record gradients of all of
    them with its functorch path (there are no Linear/Embedding submodules to hook)."""

    def __init__(self, shared: dict[str, torch.Tensor], private: torch.Tensor) -> None:
        super().__init__()
        for k in _SHARED_KEYS:
            self.register_parameter(k, nn.Parameter(shared[k].detach().clone()))
        self.user = nn.Parameter(private.detach().clone())

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Logits of the records' items, ``items`` [b, 1 + k] -> [b, 1 + k]."""
        b, width = items.shape
        shared = {k: getattr(self, k) for k in _SHARED_KEYS}
        return neumf_logits(shared, self.user, items.reshape(-1)).view(b, width)


def _negatives(positives: np.ndarray, seen: np.ndarray, n_items: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k negatives per positive from items outside ``seen`` (sorted), shape [n, k]."""
    need = len(positives) * k
    neg = np.empty(0, np.int64)
    while len(neg) < need:
        cand = rng.integers(0, n_items, need - len(neg) + 8)
        pos = np.minimum(np.searchsorted(seen, cand), len(seen) - 1)
        neg = np.concatenate([neg, cand[seen[pos] != cand]])
    return neg[:need].reshape(len(positives), k)


def train_user_example_dp(
    shared_vec: torch.Tensor,
    private_vec: torch.Tensor,
    positives: np.ndarray,
    seen: np.ndarray,
    shape: NeuMFShape,
    cfg: LocalTrainConfig,
    noise_multiplier: float,
    clip_norm: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One user's round of DP-SGD with Opacus.

    Parameters
    ----------
    shared_vec : torch.Tensor, shape (d,)
    private_vec : torch.Tensor, shape (3f,)
    positives, seen : np.ndarray[int64]
        The user's training items (the records) and every item the user interacted with (sorted).
    noise_multiplier, clip_norm : float
        sigma and the per-record clip C_ex.
    rng : numpy.random.Generator
        Negatives, batch sampling, and the seed of the noise. In simulation it is seeded per
        (seed, round, user) for reproducibility; on a real device seed it from OS entropy.

    Returns
    -------
    (new_shared_vec (d,), new_private_vec (3f,), mean_loss)
    """
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    n = len(positives)
    q = example_sample_rate(n, cfg.batch_size)
    steps = max(1, math.ceil(n / cfg.batch_size))
    model = _OneUserNeuMF(unflatten_shared(shared_vec.float(), shape), private_vec.float())
    gsm = GradSampleModule(model, loss_reduction="mean", force_functorch=True)
    groups = [{"params": [model.user], "lr": cfg.user_lr},
              {"params": [getattr(model, k) for k in _SHARED_KEYS], "lr": cfg.lr}]  # fmt: skip
    base = torch.optim.Adam(groups) if cfg.optimizer == "adam" else torch.optim.SGD(groups)
    noise_gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    opt = DPOptimizer(base, noise_multiplier=noise_multiplier, max_grad_norm=clip_norm,
                      expected_batch_size=max(1, round(q * n)), loss_reduction="mean", generator=noise_gen)  # fmt: skip
    pos = torch.as_tensor(positives, dtype=torch.long)
    labels_row = torch.zeros(1 + cfg.negatives)
    labels_row[0] = 1.0
    losses = []
    for _ in range(cfg.epochs):
        neg = torch.as_tensor(_negatives(positives, seen, shape.n_items, cfg.negatives, rng))
        records = torch.cat([pos[:, None], neg], 1)  # [n, 1 + k]
        for _ in range(steps):
            take = torch.as_tensor(rng.random(n) < q)
            opt.zero_grad(set_to_none=True)
            if bool(take.any()):
                batch = records[take]
                logits = gsm(batch)
                loss = F.binary_cross_entropy_with_logits(logits, labels_row.expand_as(logits), reduction="none")
                loss.mean(1).mean().backward()
                losses.append(float(loss.detach().mean()))
            else:  # an empty Poisson batch still takes a noise-only step, as the analysis assumes
                for p in model.parameters():
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
            opt.step()
    gsm._close()
    new_shared = torch.cat([getattr(model, k).detach().reshape(-1) for k in _SHARED_KEYS])
    return new_shared, model.user.detach().clone(), float(np.mean(losses)) if losses else 0.0


def train_chunk_example_dp(
    shared_vec: torch.Tensor,
    private: torch.Tensor,
    users: np.ndarray,
    split: Any,
    shape: NeuMFShape,
    cfg: Any,
    rnd: int,
) -> tuple[CohortDelta, torch.Tensor, torch.Tensor]:
    """DP-SGD for a chunk of users, one after the other, in the cohort trainer's output format.

    Every user's delta is dense (noise touches every item row), so the CohortDelta lists all
    ``n_items`` rows per user.

    Parameters
    ----------
    shared_vec : torch.Tensor, shape (d,)
    private : torch.Tensor, shape (U, 3f)
    users : np.ndarray[int64], shape (U,)
    split : recommender.data.Split
    cfg : FedrecConfig
    rnd : int
        Server round (seeds each user's rng with ``user_rng``).

    Returns
    -------
    (CohortDelta, new_private (U, 3f), losses (U,))
    """
    p, f, n_items = cfg.privacy, shape.factors, shape.n_items
    base = shared_vec.float()
    deltas, privs, losses = [], [], []
    for j, u in enumerate(users):
        rng = user_rng(cfg.seed, rnd, int(u))
        new_shared, new_priv, loss = train_user_example_dp(
            base, private[j], split.train_of(int(u)), split.seen_of(int(u)), shape, cfg.client,
            p.example_noise_multiplier, p.example_clip_norm, rng)  # fmt: skip
        deltas.append(new_shared - base)
        privs.append(new_priv)
        losses.append(loss)
    dense = torch.stack(deltas) if deltas else torch.zeros(0, shape.shared_dim)
    n_users = dense.shape[0]
    gmf = dense[:, : n_items * f].reshape(n_users, n_items, f)
    mlp_items = dense[:, n_items * f : n_items * 3 * f].reshape(n_users, n_items, 2 * f)
    item_delta = torch.cat([gmf, mlp_items], 2).reshape(n_users * n_items, 3 * f)
    rows = torch.arange(n_items).repeat(n_users)
    row_user = torch.repeat_interleave(torch.arange(n_users), n_items)
    delta = CohortDelta(rows, row_user, item_delta, dense[:, n_items * 3 * f :].clone())
    new_private = torch.stack(privs) if privs else private.clone()
    return delta, new_private.to(private.dtype), torch.tensor(losses, dtype=private.dtype)
