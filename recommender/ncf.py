"""NeuMF (He et al. 2017) with an explicit shared/private parameter split.

Shared parameters (item embeddings, MLP tower, output layer) travel between server and nodes as one
flat float32 vector; private parameters (the user's GMF and MLP embeddings, ``3f`` floats per user)
never leave the node. The model is written twice on purpose: as an ``nn.Module`` (one user or the
central recommender) and as a batched functional forward over per-user parameter copies (cohorts);
``tests/recommender/test_local_training.py`` keeps the two equal.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class NeuMFShape:
    """Sizes of a NeuMF model.

    Parameters
    ----------
    n_items : int
        Catalogue size I.
    factors : int
        GMF factor f; the MLP embeddings have 2f and the tower is 4f -> 2f -> f.
    """

    n_items: int
    factors: int = 32

    @property
    def private_dim(self) -> int:
        """Floats of private state per user: GMF (f) + MLP (2f) user embeddings."""
        return 3 * self.factors

    def shared_shapes(self) -> OrderedDict[str, tuple[int, ...]]:
        """Name -> shape of every shared tensor, in flattening order."""
        f, n = self.factors, self.n_items
        return OrderedDict(
            [
                ("gmf_item", (n, f)),
                ("mlp_item", (n, 2 * f)),
                ("w1", (2 * f, 4 * f)),
                ("b1", (2 * f,)),
                ("w2", (f, 2 * f)),
                ("b2", (f,)),
                ("wo", (1, 2 * f)),
                ("bo", (1,)),
            ]
        )

    @property
    def shared_dim(self) -> int:
        """Length d of the flat shared vector."""
        return int(sum(np.prod(s) for s in self.shared_shapes().values()))


def flatten_shared(shared: dict[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate shared tensors in canonical order into one float32 vector of length d."""
    names = _order(shared)
    return torch.cat([shared[k].reshape(-1) for k in names])


def unflatten_shared(vec: torch.Tensor | np.ndarray, shape: NeuMFShape) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten_shared`: a length-d vector to named tensors (views of ``vec``)."""
    vec = torch.as_tensor(vec)
    if not vec.is_floating_point():
        raise TypeError(f"shared vector must be floating point, got {vec.dtype}")
    if vec.numel() != shape.shared_dim:
        raise ValueError(f"shared vector has {vec.numel()} floats, NeuMF{shape} needs {shape.shared_dim}")
    out, off = {}, 0
    for name, s in shape.shared_shapes().items():
        n = int(np.prod(s))
        out[name] = vec[off : off + n].view(s)
        off += n
    return out


def _order(shared: dict[str, torch.Tensor]) -> list[str]:
    names = ["gmf_item", "mlp_item", "w1", "b1", "w2", "b2", "wo", "bo"]
    missing = [k for k in names if k not in shared]
    if missing:
        raise KeyError(f"shared parameters missing {missing}")
    return names


def init_shared(shape: NeuMFShape, seed: int = 0) -> dict[str, torch.Tensor]:
    """Initial shared parameters: embeddings N(0, 0.01^2) as in NCF, layers Kaiming-uniform."""
    g = torch.Generator().manual_seed(seed)
    f = shape.factors
    out = {
        "gmf_item": torch.randn(shape.n_items, f, generator=g) * 0.01,
        "mlp_item": torch.randn(shape.n_items, 2 * f, generator=g) * 0.01,
    }
    for w, b, fan_in, fan_out in (("w1", "b1", 4 * f, 2 * f), ("w2", "b2", 2 * f, f), ("wo", "bo", 2 * f, 1)):
        bound = 1.0 / np.sqrt(fan_in)
        out[w] = (torch.rand(fan_out, fan_in, generator=g) * 2 - 1) * bound * np.sqrt(3)
        out[b] = torch.zeros(fan_out)
    return out


def init_private(n_users: int, shape: NeuMFShape, seed: int | torch.Generator = 0) -> torch.Tensor:
    """Initial private embeddings, shape (n_users, 3f): [GMF f | MLP 2f], N(0, 0.01^2)."""
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    return torch.randn(n_users, shape.private_dim, generator=g) * 0.01


def neumf_logits(
    shared: dict[str, torch.Tensor], user_vec: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """NeuMF scores for (user, item) pairs.

    Parameters
    ----------
    shared : dict of tensors
        Shared parameters as from :func:`unflatten_shared`.
    user_vec : torch.Tensor, shape (B, 3f) or (3f,)
        Private embedding(s) [GMF | MLP]; a single vector is broadcast over items.
    items : torch.Tensor[int64], shape (B,)

    Returns
    -------
    torch.Tensor, shape (B,)
        Logits (sigmoid gives the interaction probability).
    """
    f = shared["gmf_item"].shape[1]
    if user_vec.dim() == 1:
        user_vec = user_vec.unsqueeze(0).expand(items.shape[0], -1)
    gmf = user_vec[:, :f] * shared["gmf_item"][items]
    h = torch.cat([user_vec[:, f:], shared["mlp_item"][items]], dim=1)
    h = torch.relu(h @ shared["w1"].T + shared["b1"])
    h = torch.relu(h @ shared["w2"].T + shared["b2"])
    return (torch.cat([gmf, h], dim=1) @ shared["wo"].T).squeeze(1) + shared["bo"]


def score_all_items(
    shared: dict[str, torch.Tensor], user_vecs: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """Score every item for every user, shape (U, I), without materialising (U*I, 4f) at once."""
    n_items = shared["gmf_item"].shape[0]
    out = torch.empty(user_vecs.shape[0], n_items)
    items = torch.arange(n_items)
    with torch.no_grad():
        for lo in range(0, user_vecs.shape[0], chunk):
            uv = user_vecs[lo : lo + chunk]
            u_rep = uv.repeat_interleave(n_items, 0)
            out[lo : lo + chunk] = neumf_logits(shared, u_rep, items.repeat(uv.shape[0])).view(-1, n_items)
    return out


def score_items(shared: dict[str, torch.Tensor], user_vecs: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Score a per-user candidate list: ``items`` shape (U, K) -> scores (U, K)."""
    u, k = items.shape
    with torch.no_grad():
        return neumf_logits(shared, user_vecs.repeat_interleave(k, 0), items.reshape(-1)).view(u, k)


class NeuMF(nn.Module):
    """NeuMF as an ``nn.Module`` holding one set of shared parameters and n_users private rows.

    Parameters
    ----------
    shape : NeuMFShape
    n_users : int
        Private rows held by this module (1 for a device).
    """

    def __init__(self, shape: NeuMFShape, n_users: int = 1) -> None:
        super().__init__()
        self.shape = shape
        self.shared = nn.ParameterDict({k: nn.Parameter(v) for k, v in init_shared(shape).items()})
        self.private = nn.Parameter(init_private(n_users, shape))

    def load_shared(self, vec: torch.Tensor | np.ndarray) -> None:
        with torch.no_grad():
            for k, v in unflatten_shared(vec, self.shape).items():
                self.shared[k].copy_(v)

    def shared_vector(self) -> torch.Tensor:
        return flatten_shared({k: v.detach() for k, v in self.shared.items()})

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for local user rows ``users`` (B,) and items (B,)."""
        return neumf_logits(dict(self.shared), self.private[users], items)

    def __repr__(self) -> str:
        s = self.shape
        return (f"NeuMF(items={s.n_items}, f={s.factors}, shared_dim={s.shared_dim}, "
                f"private_rows={self.private.shape[0]}x{s.private_dim})")  # fmt: skip
