"""Local NeuMF training of one user (sequential) or of a cohort of users in one batched computation.

Both paths train each user independently on the user's own positives with negatives drawn from the
user's own non-interacted items, from the same per-user schedule, so they give the same result
(``tests/recommender/test_local_training.py`` checks it to 1e-5). The cohort path gives every user
its own copy of only the item rows it touches (gathered, trained, scattered back as a sparse delta)
and of the small MLP, stacked along a leading user axis, so memory grows with the rows users touch
and not with the catalogue. torch.optim cannot skip the step of a user whose schedule has already
ended (padding steps), so the batched SGD/Adam below are written by hand and mirror torch's formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from recommender.ncf import NeuMF, NeuMFShape, flatten_shared, unflatten_shared

MLP_KEYS = ("w1", "b1", "w2", "b2", "wo", "bo")


@dataclass
class LocalTrainConfig:
    """Local training hyper-parameters (config group ``client``).

    Parameters
    ----------
    epochs : int
        Local epochs E per round.
    batch_size : int
        Mini-batch size B (positives and negatives mixed, shuffled).
    negatives : int
        Training negatives per positive, resampled every epoch.
    lr : float
        Local learning rate of the shared parameters (item rows, MLP).
    private_lr : float or None
        Learning rate of the private user embedding (None: ``lr``). The user embedding is trained
        only on the node, from a tiny N(0, 0.01^2) start, so plain SGD needs a larger step for it.
    optimizer : {"sgd", "adam"}
        Local optimizer; its state is fresh every round.
    chunk_users : int
        Users trained together in one batched computation (bounds memory).
    path : {"cohort", "sequential"}
        ``cohort`` trains a chunk of users in one batched computation; ``sequential`` trains
        them one at a time with an ``nn.Module`` (the device path, and the baseline the cohort
        path is measured against).
    """

    epochs: int = 1
    batch_size: int = 32
    negatives: int = 4
    lr: float = 0.05
    optimizer: str = "sgd"
    chunk_users: int = 256
    private_lr: float | None = 2.0
    path: str = "cohort"

    @property
    def user_lr(self) -> float:
        return self.lr if self.private_lr is None else self.private_lr

    def validate(self) -> None:
        if self.path not in ("cohort", "sequential"):
            raise ValueError(f"client.path={self.path!r}: choose cohort or sequential")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"client.optimizer={self.optimizer!r}: choose sgd or adam")
        for name in ("epochs", "batch_size", "chunk_users"):
            if getattr(self, name) < 1:
                raise ValueError(f"client.{name}={getattr(self, name)} must be >= 1")
        if self.negatives < 0 or self.lr <= 0:
            raise ValueError(f"client.negatives={self.negatives} must be >= 0 and client.lr={self.lr} > 0")


@dataclass
class UserSchedule:
    """One user's training samples for one round, in the order they are used.

    Attributes
    ----------
    rows : np.ndarray[int64], shape (R,)
        Sorted catalogue items the user touches this round (positives and all negatives).
    steps : list[tuple[np.ndarray, np.ndarray]]
        Per optimizer step: local row indices (into ``rows``) and 0/1 labels of the mini-batch.
    """

    rows: np.ndarray
    steps: list[tuple[np.ndarray, np.ndarray]]


def user_rng(seed: int, round_idx: int, user: int) -> np.random.Generator:
    """The RNG of one user's round: the same wherever the user is placed (node, path, restart)."""
    return np.random.default_rng([seed, round_idx, user])


def build_schedule(
    positives: np.ndarray, seen: np.ndarray, n_items: int, cfg: LocalTrainConfig, rng: np.random.Generator
) -> UserSchedule:
    """Sample the user's round: per epoch k negatives per positive from items outside ``seen``
    (sorted array of every item the user interacted with), shuffle, cut into batches."""
    epochs_items, epochs_labels = [], []
    n_pos = len(positives)
    for _ in range(cfg.epochs):
        need = n_pos * cfg.negatives
        neg = np.empty(0, np.int64)
        while len(neg) < need:
            cand = rng.integers(0, n_items, need - len(neg) + 8)
            pos = np.minimum(np.searchsorted(seen, cand), len(seen) - 1)
            neg = np.concatenate([neg, cand[seen[pos] != cand]])
        items = np.concatenate([positives.astype(np.int64), neg[:need]])
        labels = np.concatenate([np.ones(n_pos, np.float32), np.zeros(need, np.float32)])
        perm = rng.permutation(len(items))
        epochs_items.append(items[perm])
        epochs_labels.append(labels[perm])
    rows = np.unique(np.concatenate(epochs_items))
    steps = []
    for items, labels in zip(epochs_items, epochs_labels, strict=True):
        local = np.searchsorted(rows, items)
        steps += [(local[i : i + cfg.batch_size], labels[i : i + cfg.batch_size])
                  for i in range(0, len(items), cfg.batch_size)]  # fmt: skip
    return UserSchedule(rows=rows, steps=steps)


# --------------------------------------------------------------------------------------------
# Sequential path (a device, or the reference for the cohort path)
# --------------------------------------------------------------------------------------------
def train_user_sequential(
    shared_vec: torch.Tensor,
    private_vec: torch.Tensor,
    schedule: UserSchedule,
    shape: NeuMFShape,
    cfg: LocalTrainConfig,
    freeze_shared: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Train one user with an ``nn.Module`` and torch.optim.

    Returns
    -------
    (new_shared_vec (d,), new_private_vec (3f,), mean_loss)
    """
    model = NeuMF(shape, n_users=1)
    model.load_shared(shared_vec)
    with torch.no_grad():
        model.private.copy_(private_vec.view(1, -1))
    groups = [{"params": [model.private], "lr": cfg.user_lr}]
    if freeze_shared:
        for p in model.shared.values():
            p.requires_grad_(False)
    else:
        groups.append({"params": list(model.shared.values()), "lr": cfg.lr})
    opt = torch.optim.Adam(groups) if cfg.optimizer == "adam" else torch.optim.SGD(groups)
    rows = torch.as_tensor(schedule.rows)
    losses = []
    for local, labels in schedule.steps:
        items = rows[torch.as_tensor(local)]
        logits = model(torch.zeros(len(items), dtype=torch.long), items)
        loss = F.binary_cross_entropy_with_logits(logits, torch.as_tensor(labels, dtype=logits.dtype))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.shared_vector(), model.private.detach()[0].clone(), float(np.mean(losses) if losses else 0.0)


# --------------------------------------------------------------------------------------------
# Cohort path
# --------------------------------------------------------------------------------------------
@dataclass
class CohortDelta:
    """Shared-parameter deltas of a chunk of U users in sparse (ragged) form.

    Attributes
    ----------
    rows : torch.Tensor[int64], shape (T,)
        Catalogue item of each touched row, all users' rows concatenated (T = sum of R_u).
    row_user : torch.Tensor[int64], shape (T,)
        Which user (0..U-1) each row belongs to.
    item_delta : torch.Tensor[float], shape (T, 3f)
        Delta of [gmf_item | mlp_item] for those rows.
    mlp_delta : torch.Tensor[float], shape (U, d_mlp)
        Delta of the flattened MLP tower and output layer (w1, b1, w2, b2, wo, bo).
    """

    rows: torch.Tensor
    row_user: torch.Tensor
    item_delta: torch.Tensor
    mlp_delta: torch.Tensor

    @property
    def n_users(self) -> int:
        return self.mlp_delta.shape[0]

    def norms(self) -> torch.Tensor:
        """L2 norm of each user's full flattened delta, shape (U,)."""
        sq = self.mlp_delta.pow(2).sum(1)
        sq = sq.index_add(0, self.row_user, self.item_delta.pow(2).sum(1))
        return sq.sqrt()

    def scale(self, factors: torch.Tensor) -> CohortDelta:
        """Multiply user u's delta by ``factors[u]``, shape (U,)."""
        factors = factors.to(self.mlp_delta.dtype)
        return CohortDelta(self.rows, self.row_user, self.item_delta * factors[self.row_user, None],
                           self.mlp_delta * factors[:, None])  # fmt: skip

    def dense(self, shape: NeuMFShape) -> torch.Tensor:
        """Densify to the canonical flat layout, shape (U, d)."""
        u, f, n = self.n_users, shape.factors, shape.n_items
        out = torch.zeros(u, shape.shared_dim, dtype=self.mlp_delta.dtype)
        gmf = out[:, : n * f].view(u, n, f)
        mlp = out[:, n * f : n * 3 * f].view(u, n, 2 * f)
        gmf.index_put_((self.row_user, self.rows), self.item_delta[:, :f], accumulate=True)
        mlp.index_put_((self.row_user, self.rows), self.item_delta[:, f:], accumulate=True)
        out[:, n * 3 * f :] = self.mlp_delta
        return out

    def sum_into(self, acc: torch.Tensor, shape: NeuMFShape) -> None:
        """Add the sum over users of the deltas into the flat accumulator ``acc`` (d,), sparsely."""
        f, n = shape.factors, shape.n_items
        acc[: n * f].view(n, f).index_add_(0, self.rows, self.item_delta[:, :f].to(acc.dtype))
        acc[n * f : n * 3 * f].view(n, 2 * f).index_add_(0, self.rows, self.item_delta[:, f:].to(acc.dtype))
        acc[n * 3 * f :] += self.mlp_delta.sum(0).to(acc.dtype)


class _BatchedAdam:
    """Adam over tensors whose leading axis is indexed by ``owner`` (a user), stepping only the
    rows of active users; mirrors torch.optim.Adam's formulas (defaults betas, eps)."""

    def __init__(self, params: list[torch.Tensor], owners: list[torch.Tensor], lrs: list[float],
                 n_users: int) -> None:  # fmt: skip
        self.params, self.owners, self.lrs = params, owners, lrs
        self.t = torch.zeros(n_users, dtype=params[0].dtype)
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, grads: list[torch.Tensor], active: torch.Tensor) -> None:
        b1, b2, eps = 0.9, 0.999, 1e-8
        self.t += active.to(self.t.dtype)
        t = self.t.clamp(min=1)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        for p, g, m, v, owner, lr in zip(self.params, grads, self.m, self.v, self.owners, self.lrs, strict=True):
            view = (-1,) + (1,) * (p.dim() - 1)
            a = active[owner].view(view)
            m.copy_(torch.where(a, b1 * m + (1 - b1) * g, m))
            v.copy_(torch.where(a, b2 * v + (1 - b2) * g * g, v))
            denom = v.sqrt() / bc2[owner].sqrt().view(view) + eps
            p.copy_(torch.where(a, p - (lr / bc1[owner]).view(view) * m / denom, p))


def train_cohort(
    shared_vec: torch.Tensor,
    private: torch.Tensor,
    schedules: list[UserSchedule],
    shape: NeuMFShape,
    cfg: LocalTrainConfig,
    freeze_shared: bool = False,
) -> tuple[CohortDelta, torch.Tensor, torch.Tensor]:
    """Train U users together (call per chunk of at most ``cfg.chunk_users`` users).

    Every user owns a copy of only the item rows it touches (one ragged table, T = sum R_u rows)
    and of the MLP (stacked, (U, ...)). With SGD only the rows of the current mini-batch are
    updated (exactly what a dense SGD step does, since other rows have zero gradient), so a step
    costs O(U * B * f), not O(catalogue).

    Parameters
    ----------
    shared_vec : torch.Tensor, shape (d,)
        Global shared parameters of the round.
    private : torch.Tensor, shape (U, 3f)
        The users' private embeddings.
    schedules : list of UserSchedule, length U

    Returns
    -------
    delta : CohortDelta
        theta_local - theta_global per user (sparse rows + dense MLP).
    new_private : torch.Tensor, shape (U, 3f)
    losses : torch.Tensor, shape (U,)
        Mean training loss per user over its steps.
    """
    n_users, f, bsz = len(schedules), shape.factors, cfg.batch_size
    dtype = private.dtype
    shared = unflatten_shared(shared_vec.to(dtype), shape)
    sizes = torch.tensor([len(s.rows) for s in schedules])
    offsets = torch.cumsum(sizes, 0) - sizes
    rows = torch.as_tensor(np.concatenate([s.rows for s in schedules])).long()
    row_user = torch.repeat_interleave(torch.arange(n_users), sizes)
    table0 = torch.cat([shared["gmf_item"], shared["mlp_item"]], dim=1)[rows]  # (T, 3f)
    table = table0.clone()
    mlp0 = {k: shared[k].unsqueeze(0).expand(n_users, *shared[k].shape).clone() for k in MLP_KEYS}
    mlp = {k: v.clone().requires_grad_(not freeze_shared) for k, v in mlp0.items()}
    priv = private.clone().requires_grad_(True)
    user_ids = torch.arange(n_users)
    adam = None
    if cfg.optimizer == "adam":
        params = [priv] + ([] if freeze_shared else [table] + list(mlp.values()))
        owners = [user_ids] + ([] if freeze_shared else [row_user] + [user_ids] * len(MLP_KEYS))
        lrs = [cfg.user_lr] + [cfg.lr] * (len(params) - 1)
        adam = _BatchedAdam(params, owners, lrs, n_users)

    n_steps = max(len(s.steps) for s in schedules)
    idx = torch.zeros(n_steps, n_users, bsz, dtype=torch.long)
    lab = torch.zeros(n_steps, n_users, bsz, dtype=dtype)
    msk = torch.zeros(n_steps, n_users, bsz, dtype=dtype)
    for u, s in enumerate(schedules):
        for t, (local, labels) in enumerate(s.steps):
            idx[t, u, : len(local)] = torch.as_tensor(local) + offsets[u]
            lab[t, u, : len(local)] = torch.as_tensor(labels)
            msk[t, u, : len(local)] = 1.0
    loss_sum = torch.zeros(n_users, dtype=dtype)
    loss_cnt = torch.zeros(n_users, dtype=dtype)
    for t in range(n_steps):
        counts = msk[t].sum(1)
        active = counts > 0
        flat_idx = idx[t].reshape(-1)
        emb = table[flat_idx].view(n_users, bsz, 3 * f).requires_grad_(not freeze_shared)
        gmf = priv[:, None, :f] * emb[..., :f]
        h = torch.cat([priv[:, None, f:].expand(-1, bsz, -1), emb[..., f:]], dim=2)
        h = torch.relu(torch.baddbmm(mlp["b1"][:, None, :], h, mlp["w1"].transpose(1, 2)))
        h = torch.relu(torch.baddbmm(mlp["b2"][:, None, :], h, mlp["w2"].transpose(1, 2)))
        logits = torch.baddbmm(mlp["bo"][:, None, :], torch.cat([gmf, h], 2), mlp["wo"].transpose(1, 2))
        bce = F.binary_cross_entropy_with_logits(logits.squeeze(-1), lab[t], reduction="none")
        per_user = (bce * msk[t]).sum(1) / counts.clamp(min=1)
        leaves = [priv] + ([] if freeze_shared else [emb] + [mlp[k] for k in MLP_KEYS])
        grads = torch.autograd.grad(per_user.sum(), leaves)
        with torch.no_grad():
            if adam is None:  # SGD: inactive users have zero gradient, so no masking is needed
                priv.sub_(cfg.user_lr * grads[0])
                if not freeze_shared:
                    table.index_add_(0, flat_idx, grads[1].reshape(-1, 3 * f), alpha=-cfg.lr)
                    for k, g in zip(MLP_KEYS, grads[2:], strict=True):
                        mlp[k].sub_(cfg.lr * g)
            else:
                dense = list(grads[:1])
                if not freeze_shared:
                    g_table = torch.zeros_like(table).index_add_(0, flat_idx, grads[1].reshape(-1, 3 * f))
                    dense += [g_table, *grads[2:]]
                adam.step(dense, active)
        loss_sum += per_user.detach() * active
        loss_cnt += active.to(dtype)
    with torch.no_grad():
        item_delta = table - table0
        mlp_delta = torch.cat([(mlp[k].detach() - mlp0[k]).reshape(n_users, -1) for k in MLP_KEYS], 1)
    return CohortDelta(rows, row_user, item_delta, mlp_delta), priv.detach(), loss_sum / loss_cnt.clamp(min=1)


def train_sequentially(
    shared_vec: torch.Tensor,
    private: torch.Tensor,
    schedules: list[UserSchedule],
    shape: NeuMFShape,
    cfg: LocalTrainConfig,
    freeze_shared: bool = False,
) -> tuple[CohortDelta, torch.Tensor, torch.Tensor]:
    """Same contract as :func:`train_cohort`, one user at a time with :func:`train_user_sequential`.

    The delta of each user is kept for the rows it touched (``schedule.rows``), so both paths feed
    the same update pipeline.
    """
    n_items, f = shape.n_items, shape.factors
    rows, owners, item_deltas, mlp_deltas, privs, losses = [], [], [], [], [], []
    for u, s in enumerate(schedules):
        new_shared, new_priv, loss = train_user_sequential(shared_vec, private[u], s, shape, cfg, freeze_shared)
        d = new_shared - shared_vec
        r = torch.as_tensor(s.rows).long()
        gmf = d[: n_items * f].view(n_items, f)[r]
        mlp_rows = d[n_items * f : n_items * 3 * f].view(n_items, 2 * f)[r]
        rows.append(r)
        owners.append(torch.full((len(r),), u, dtype=torch.long))
        item_deltas.append(torch.cat([gmf, mlp_rows], 1))
        mlp_deltas.append(d[n_items * 3 * f :])
        privs.append(new_priv)
        losses.append(loss)
    delta = CohortDelta(torch.cat(rows), torch.cat(owners), torch.cat(item_deltas), torch.stack(mlp_deltas))
    return delta, torch.stack(privs), torch.tensor(losses)


def mlp_offset(shape: NeuMFShape) -> int:
    """Offset of the MLP block (w1...bo) in the flat shared vector."""
    return shape.n_items * 3 * shape.factors


__all__ = [
    "CohortDelta", "LocalTrainConfig", "UserSchedule", "build_schedule", "flatten_shared",
    "train_cohort", "train_sequentially", "train_user_sequential", "user_rng", "mlp_offset",
]  # fmt: skip
