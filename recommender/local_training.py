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
ROW_BLOCK = 16384  # rows per block when reducing a CohortDelta (bounds temporaries to a few MB)


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
        Users trained together in one batched computation. Bounds memory: a chunk holds two
        copies (trained and initial) of every row its users touch, 384 bytes per row at f = 32,
        ~0.33 MB per W1 user and up to 1.3 MB for ML-100K's heaviest users.
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
    chunk_users: int = 128
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

    def _blocks(self) -> range:
        # Row blocks bound the temporaries of the reductions below (the same values, in the same
        # order, as one pass over all T rows).
        return range(0, self.rows.shape[0], ROW_BLOCK)

    def norms(self) -> torch.Tensor:
        """L2 norm of each user's full flattened delta, shape (U,)."""
        sq = self.mlp_delta.pow(2).sum(1)
        for a in self._blocks():
            sq.index_add_(0, self.row_user[a : a + ROW_BLOCK], self.item_delta[a : a + ROW_BLOCK].pow(2).sum(1))
        return sq.sqrt()

    def scale(self, factors: torch.Tensor) -> CohortDelta:
        """Multiply user u's delta by ``factors[u]``, shape (U,)."""
        factors = factors.to(self.mlp_delta.dtype)
        return CohortDelta(self.rows, self.row_user, self.item_delta * factors[self.row_user, None],
                           self.mlp_delta * factors[:, None])  # fmt: skip

    def dense(self, shape: NeuMFShape) -> torch.Tensor:
        """Densify to the canonical flat layout, shape (U, d)."""
        out = torch.zeros(self.n_users, shape.shared_dim, dtype=self.mlp_delta.dtype)
        self.add_dense_into(out, shape)
        return out

    def add_dense_into(self, out: torch.Tensor, shape: NeuMFShape, lo: int = 0,
                       factors: torch.Tensor | None = None) -> None:  # fmt: skip
        """out[i] += factors[lo + i] * delta of user lo + i, in the flat layout; out has shape (B, d).

        With ``out`` zero this is ``scale(factors).dense(shape)[lo : lo + B]``, bit for bit; a block
        of users at a time lets a caller reuse one (B, d) buffer (e.g. one that already holds noise).
        """
        b, f, n = out.shape[0], shape.factors, shape.n_items
        sel = ((self.row_user >= lo) & (self.row_user < lo + b)).nonzero().squeeze(1)
        users, rows, vals = self.row_user[sel], self.rows[sel], self.item_delta[sel]
        mlp_delta = self.mlp_delta[lo : lo + b]
        if factors is not None:
            factors = factors.to(self.mlp_delta.dtype)
            vals = vals * factors[users, None]
            mlp_delta = mlp_delta * factors[lo : lo + b, None]
        users = users - lo
        out[:, : n * f].view(b, n, f).index_put_((users, rows), vals[:, :f], accumulate=True)
        out[:, n * f : n * 3 * f].view(b, n, 2 * f).index_put_((users, rows), vals[:, f:], accumulate=True)
        out[:, n * 3 * f :] += mlp_delta

    def sum_into(self, acc: torch.Tensor, shape: NeuMFShape, factors: torch.Tensor | None = None) -> None:
        """Add the sum over users of the deltas into the flat accumulator ``acc`` (d,), sparsely.

        ``factors`` (U,) weights user u's delta first (the same numbers as ``scale(factors)``
        followed by ``sum_into``, without materialising the scaled copy).
        """
        f, n = shape.factors, shape.n_items
        fac = None if factors is None else factors.to(self.mlp_delta.dtype)
        gmf, mlp = acc[: n * f].view(n, f), acc[n * f : n * 3 * f].view(n, 2 * f)
        for a in self._blocks():
            block = self.item_delta[a : a + ROW_BLOCK]
            if fac is not None:
                block = block * fac[self.row_user[a : a + ROW_BLOCK], None]
            rows = self.rows[a : a + ROW_BLOCK]
            gmf.index_add_(0, rows, block[:, :f].to(acc.dtype))
            mlp.index_add_(0, rows, block[:, f:].to(acc.dtype))
        mlp_delta = self.mlp_delta if fac is None else self.mlp_delta * fac[:, None]
        acc[n * 3 * f :] += mlp_delta.sum(0).to(acc.dtype)


class _BatchedAdam:
    """Adam over tensors whose leading axis is indexed by ``owner`` (a user), stepping only a prefix
    of the users (the trainer orders users so the active ones are a prefix); mirrors
    torch.optim.Adam's formulas (default betas, eps)."""

    def __init__(self, params: list[torch.Tensor], owners: list[torch.Tensor], lrs: list[float],
                 n_users: int) -> None:  # fmt: skip
        self.params, self.owners, self.lrs = params, owners, lrs
        self.t = torch.zeros(n_users, dtype=params[0].dtype)
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, grads: list[torch.Tensor], lengths: list[int]) -> None:
        """Step the first ``lengths[i]`` entries of parameter i; ``lengths[0]`` is the active users."""
        b1, b2, eps = 0.9, 0.999, 1e-8
        k = lengths[0]
        self.t[:k] += 1
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v, owner, lr, n in zip(self.params, grads, self.m, self.v, self.owners, self.lrs, lengths,
                                            strict=True):  # fmt: skip
            view = (-1,) + (1,) * (p.dim() - 1)
            own = owner[:n]
            m[:n].mul_(b1).add_(g, alpha=1 - b1)
            v[:n].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = v[:n].sqrt() / bc2[own].sqrt().view(view) + eps
            p[:n].sub_((lr / bc1[own]).view(view) * m[:n] / denom)


@dataclass
class _Steps:
    """A chunk's mini-batches as padded tensors, users ordered by schedule length (longest first),
    so the users still training at step t are the first ``active[t]`` ones.

    Attributes
    ----------
    order : np.ndarray[int64], shape (U,)
        Position in the chunk of the user at each (ordered) slot.
    idx : torch.Tensor[int64], shape (S, U, B)
        Row of the ragged item table (in ordered layout) of each sample; padding points at the
        user's first row and has mask 0.
    labels, mask : torch.Tensor[float], shape (S, U, B)
    active : list[int], length S
        Users with a step t (a prefix of the ordered slots).
    row_prefix : list[int], length S
        Table rows owned by the active users at step t (also a prefix).
    """

    order: np.ndarray
    idx: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    active: list[int]
    row_prefix: list[int]


def _pack_steps(schedules: list[UserSchedule], offsets: np.ndarray, order: np.ndarray, bsz: int,
                dtype: torch.dtype) -> _Steps:  # fmt: skip
    """Fill the padded step tensors with numpy (one vectorised copy per user, not per step)."""
    n_users = len(schedules)
    n_steps = np.array([len(schedules[u].steps) for u in order], np.int64)
    s_max = int(n_steps.max(initial=0))
    idx = np.zeros((n_users, s_max * bsz), np.int64)
    lab = np.zeros((n_users, s_max * bsz), np.float32)
    msk = np.zeros((n_users, s_max * bsz), np.float32)
    for slot, u in enumerate(order):
        steps = schedules[u].steps
        if not steps:
            continue
        local = np.concatenate([s[0] for s in steps])
        # sample j of step t lands at column t * bsz + j (the last batch of an epoch may be short)
        col = np.concatenate([t * bsz + np.arange(len(s[0])) for t, s in enumerate(steps)])
        idx[slot] = offsets[slot]
        idx[slot, col] = local + offsets[slot]
        lab[slot, col] = np.concatenate([s[1] for s in steps])
        msk[slot, col] = 1.0

    def to_t(a: np.ndarray, dt: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(a).to(dt).view(n_users, s_max, bsz).transpose(0, 1).contiguous()

    active = [int((n_steps > t).sum()) for t in range(s_max)]
    ends = np.concatenate([[0], np.cumsum([len(schedules[u].rows) for u in order])])
    return _Steps(order, to_t(idx, torch.long), to_t(lab, dtype), to_t(msk, dtype), active,
                  [int(ends[k]) for k in active])  # fmt: skip


def _autograd_step(user: dict, item: dict, mlp: dict, flat: torch.Tensor, labels: torch.Tensor,
                   msk: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:  # fmt: skip
    """One training step's gradients by autograd, (user GMF, user MLP, item GMF, item MLP, *MLP),
    and the per-user mean loss, for the first ``k = len(labels)`` users (a frozen shared model
    takes :meth:`_FrozenItemSide.private_grads` instead)."""
    k, bsz = labels.shape
    f = user["gmf"].shape[1]
    # Leaves are detached views of the first k users' parameters: no copies, and the caller's
    # update writes straight into the stacked tensors.
    ug = user["gmf"][:k].detach().requires_grad_(True)
    um = user["mlp"][:k].detach().requires_grad_(True)
    w = {n: v[:k].detach().requires_grad_(True) for n, v in mlp.items()}
    eg = item["gmf"].index_select(0, flat).view(k, bsz, f).requires_grad_(True)
    em = item["mlp"].index_select(0, flat).view(k, bsz, 2 * f).requires_grad_(True)
    u1 = torch.baddbmm(w["b1"][:, :, None], w["w1u"], um[:, :, None]).transpose(1, 2)  # (k, 1, 2f)
    h = torch.relu(torch.baddbmm(u1, em, w["w1i"].transpose(1, 2)))
    h = torch.relu(torch.baddbmm(w["b2"][:, None, :], h, w["w2"].transpose(1, 2)))
    logits = torch.baddbmm(w["bo"][:, None, :], ug[:, None, :] * eg, w["wog"].transpose(1, 2))
    logits = torch.baddbmm(logits, h, w["woh"].transpose(1, 2)).squeeze(-1)
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    per_user = (bce * msk).sum(1) / msk.sum(1)
    return torch.autograd.grad(per_user.sum(), [ug, um, eg, em, *w.values()]), per_user.detach()


@dataclass
class _FrozenItemSide:
    """The item side of every sample, computed once when only the private embedding trains.

    With the shared parameters frozen (the serving fold-in) the item rows and the MLP never change,
    so the item half of the first MLP layer and the GMF rows times their output weights are
    computed once per row, and the two gradients of the user embedding are written out in
    :meth:`private_grads`: the same loss and the same SGD/Adam step as with autograd
    (``tests/recommender/test_local_training.py`` checks it against the sequential ``nn.Module``
    path), without autograd's per-step graph, which was most of a fold-in step.
    """

    item_pre: torch.Tensor  # (T, H1): em @ w1i^T + b1 per row
    gmf_out: torch.Tensor  # (T, f): eg * wo_gmf per row
    w1u: torch.Tensor  # (H1, 2f)
    w2: torch.Tensor  # (H2, H1)
    b2: torch.Tensor  # (H2,)
    woh: torch.Tensor  # (H2,)
    bo: torch.Tensor  # ()

    @classmethod
    def of(cls, table: torch.Tensor, split: dict[str, torch.Tensor], f: int) -> _FrozenItemSide:
        with torch.no_grad():
            return cls(item_pre=table[:, f:] @ split["w1i"].T + split["b1"], gmf_out=table[:, :f] * split["wog"][0],
                       w1u=split["w1u"], w2=split["w2"], b2=split["b2"], woh=split["woh"][0], bo=split["bo"][0])  # fmt: skip

    def private_grads(self, ug: torch.Tensor, um: torch.Tensor, flat: torch.Tensor, labels: torch.Tensor,
                      msk: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:  # fmt: skip
        """Gradients of the summed per-user mean BCE w.r.t. (ug, um), shapes (k, f) and (k, 2f),
        and that loss per user, for samples ``flat`` (k * B rows of the table)."""
        k, bsz = labels.shape
        with torch.no_grad():
            gmf = self.gmf_out.index_select(0, flat).view(k, bsz, -1)  # (k, B, f)
            h1 = (self.item_pre.index_select(0, flat).view(k, bsz, -1) + (um @ self.w1u.T)[:, None, :]).clamp_min_(0)
            pre2 = torch.addmm(self.b2, h1.view(k * bsz, -1), self.w2.T)  # (kB, H2)
            logits = torch.bmm(gmf, ug[:, :, None]).view(k, bsz) + (pre2.clamp_min(0) @ self.woh).view(k, bsz)
            logits += self.bo
            n = msk.sum(1, keepdim=True)
            per_user = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * msk).sum(1) / n[:, 0]
            g = (torch.sigmoid(logits) - labels) * msk / n  # d loss / d logit, (k, B)
            grad_ug = torch.bmm(g[:, None, :], gmf).view(k, -1)
            dh2 = g.view(-1, 1) * self.woh * (pre2 > 0)  # (kB, H2)
            dh1 = (dh2 @ self.w2).view(k, bsz, -1) * (h1 > 0)  # (k, B, H1)
            grad_um = dh1.sum(1) @ self.w1u
        return (grad_ug, grad_um), per_user


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
    costs O(U * B * f), not O(catalogue). Users are ordered longest schedule first, so step t
    computes only the users that still have a step t (a prefix, sliced without copying): a chunk
    mixing users with 20 and 700 ratings costs the sum of their steps, not U times the longest.

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
    order = np.argsort([-len(s.steps) for s in schedules], kind="stable")
    order_t = torch.from_numpy(order)
    sizes = np.array([len(schedules[u].rows) for u in order], np.int64)
    offsets = np.cumsum(sizes) - sizes
    rows = torch.from_numpy(np.concatenate([schedules[u].rows for u in order]).astype(np.int64))
    row_slot = torch.repeat_interleave(torch.arange(n_users), torch.from_numpy(sizes))
    steps = _pack_steps(schedules, offsets, order, bsz, dtype)
    # Every user's copy of its rows and of the MLP, with the parameters that multiply the user's
    # embedding split from those that multiply the item's: the user part of the first layer is
    # then computed once per user and step instead of once per sample (the same sums, regrouped).
    table = torch.cat([shared["gmf_item"], shared["mlp_item"]], 1).index_select(0, rows)  # (T, 3f)
    table0 = table.clone()
    item = {"gmf": table[:, :f], "mlp": table[:, f:]}  # views: updates land in ``table``
    split = {"w1u": shared["w1"][:, : 2 * f], "w1i": shared["w1"][:, 2 * f :], "b1": shared["b1"],
             "w2": shared["w2"], "b2": shared["b2"], "wog": shared["wo"][:, :f], "woh": shared["wo"][:, f:],
             "bo": shared["bo"]}  # fmt: skip
    mlp = {k: v.unsqueeze(0).repeat(n_users, *([1] * v.dim())) for k, v in split.items()}
    priv = private.index_select(0, order_t)
    user = {"gmf": priv[:, :f].clone(), "mlp": priv[:, f:].clone()}
    adam = None
    if cfg.optimizer == "adam":
        slots = torch.arange(n_users)
        params = [user["gmf"], user["mlp"]] + ([] if freeze_shared else [item["gmf"], item["mlp"], *mlp.values()])
        owners = [slots, slots] + ([] if freeze_shared else [row_slot, row_slot] + [slots] * len(mlp))
        lrs = [cfg.user_lr] * 2 + [cfg.lr] * (len(params) - 2)
        adam = _BatchedAdam(params, owners, lrs, n_users)

    loss_sum = torch.zeros(n_users, dtype=dtype)
    n_done = torch.zeros(n_users, dtype=dtype)
    train_shared = not freeze_shared
    frozen = _FrozenItemSide.of(table, split, f) if freeze_shared else None
    for t, k in enumerate(steps.active):
        msk = steps.mask[t, :k]
        flat = steps.idx[t, :k].reshape(-1)
        if frozen is not None:
            grads, per_user = frozen.private_grads(user["gmf"][:k], user["mlp"][:k], flat, steps.labels[t, :k], msk)
        else:
            grads, per_user = _autograd_step(user, item, mlp, flat, steps.labels[t, :k], msk)
        with torch.no_grad():
            if adam is None:  # SGD: a dense step would move only the batch's rows (others have zero grad)
                user["gmf"][:k].sub_(grads[0], alpha=cfg.user_lr)
                user["mlp"][:k].sub_(grads[1], alpha=cfg.user_lr)
                if train_shared:
                    item["gmf"].index_add_(0, flat, grads[2].reshape(-1, f), alpha=-cfg.lr)
                    item["mlp"].index_add_(0, flat, grads[3].reshape(-1, 2 * f), alpha=-cfg.lr)
                    for v, g in zip(mlp.values(), grads[4:], strict=True):
                        v[:k].sub_(g, alpha=cfg.lr)
            else:  # Adam moves every row of an active user (momentum), so the row gradients are densified
                dense, lengths = list(grads[:2]), [k, k]
                if train_shared:
                    n_rows = steps.row_prefix[t]
                    for g, width in zip(grads[2:4], (f, 2 * f), strict=True):
                        dense.append(torch.zeros(n_rows, width, dtype=dtype).index_add_(0, flat, g.reshape(-1, width)))
                    dense += grads[4:]
                    lengths += [n_rows, n_rows] + [k] * len(mlp)
                adam.step(dense, lengths)
            loss_sum[:k] += per_user
            n_done[:k] += 1
    # back from the ordered slots to the caller's user order
    inv = torch.from_numpy(np.argsort(order))
    owner = order_t.index_select(0, row_slot)
    back = torch.argsort(owner, stable=True)
    with torch.no_grad():
        item_delta = table.sub_(table0)
        del table0
        item_delta = item_delta.index_select(0, back)
        new = {"w1": torch.cat([mlp["w1u"], mlp["w1i"]], 2), "b1": mlp["b1"], "w2": mlp["w2"], "b2": mlp["b2"],
               "wo": torch.cat([mlp["wog"], mlp["woh"]], 2), "bo": mlp["bo"]}  # fmt: skip
        mlp_delta = torch.cat([(new[k] - shared[k]).reshape(n_users, -1) for k in MLP_KEYS], 1).index_select(0, inv)
        new_private = torch.cat([user["gmf"], user["mlp"]], 1).index_select(0, inv)
    delta = CohortDelta(rows.index_select(0, back), owner.index_select(0, back), item_delta, mlp_delta)
    return delta, new_private, (loss_sum / n_done.clamp(min=1)).index_select(0, inv)


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
