"""GNN strategy: attention-aggregating GraphSAGE on the user/item/person graph, trained with BPR.

The heterogeneous graph (user-WATCHED-item, item-SIMILAR-item by content cosine, item-SAME_GENRE-item,
person-ACTED_IN-item from the knowledge graph, every relation in both directions) is stored as one
typed graph (``node_type``, one-hot ``edge_attr`` per relation and direction). Each layer is a
GraphSAGE update whose neighbour aggregation is multi-head attention conditioned on the relation
(PyG ``GATv2Conv`` with ``edge_dim`` and a residual root weight, without self loops, i.e. SAGE's
``W_root x_v + AGG_attn(neighbours)``), and the node embedding concatenates every layer's output
(jumping knowledge). Mini-batches come from PyG's ``NeighborLoader``, with each batch's own
positive edges removed from its message-passing graph. Item input
features are the fused content vector plus the federated NeuMF item embeddings; users and persons
enter by type only, so a user is represented by what it watched (inductive). Node embeddings are
computed once per model version with full neighbourhoods and cached for serving.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recommender.catalog import Catalog
from recommender.data import Split
from recommender.torch_threads import torch_threads

log = logging.getLogger(__name__)

RELATIONS = ("watched", "watched_by", "similar", "same_genre", "acted_in", "has_person")
USER, ITEM, PERSON = 0, 1, 2


@dataclass
class GNNConfig:
    """GNN parameters (config group ``recommender.gnn``).

    Parameters
    ----------
    dims : list[int]
        Input projection width, then the output width of each layer (3 layers). The design's
        ``[512, 256, 128, 64]`` is ``configs/recommender/design.yaml``; the default is small enough
        to train in well under 2 minutes on 2 CPU cores.
    heads : list[int]
        Attention heads per layer (design 8/4/2); ``dims[l+1]`` must be divisible by ``heads[l]``.
    samples : list[int]
        Neighbours sampled per hop (design 25/15/10).
    steps, batch_size, negatives, lr, weight_decay : training (BPR with 4 negatives per positive).
        Each step costs about the same for 128 or 1,024 pairs (the 3-hop sampled subgraph of a
        batch already covers much of the graph), so the default uses large batches: 1,000 x 1,024
        pairs, about ten epochs of the ML-100K train split (chosen on validation: 200 steps gave
        validation NDCG@10 0.0512, 1,000 steps 0.0565 and 2,000 steps 0.0561, 3-seed means; README).
    user_ids : bool
        Add a learned per-user input embedding (transductive; request histories still work
        through the item embeddings).
    mask_targets : bool
        Remove each batch's (user, positive item) edges from its sampled message-passing graph, so
        the model cannot score a pair by recognising the edge between them (held-out items never
        have one).
    jk : bool
        Jumping-knowledge output: the node embedding is the concatenation of the input projection
        and every layer's output (width ``sum(dims)``), so a user-item score is the sum of the
        per-layer dot products. The last layer alone is oversmoothed towards popularity after
        three mean-like attention hops (validation NDCG@10 of the GNN alone: README).
    similar_k, same_genre_k : int
        SIMILAR edges per item (top content cosine) and random SAME_GENRE partners per item. 20 and
        10 (were 10 and 5): chosen by the fusion's out-of-fold validation gain over ALS, +8.2%
        against +7.4% (README), though the GNN alone scores no better.
    """

    dims: list[int] = field(default_factory=lambda: [32, 32, 32, 32])
    heads: list[int] = field(default_factory=lambda: [4, 2, 1])
    samples: list[int] = field(default_factory=lambda: [5, 5, 5])
    steps: int = 1000
    batch_size: int = 1024
    negatives: int = 4
    lr: float = 0.01
    user_ids: bool = True
    mask_targets: bool = True
    jk: bool = True
    weight_decay: float = 1e-5
    reg: float = 1e-4
    similar_k: int = 20
    same_genre_k: int = 10
    dropout: float = 0.0

    def validate(self) -> None:
        if len(self.dims) != len(self.heads) + 1 or len(self.samples) != len(self.heads):
            raise ValueError(f"recommender.gnn: dims {self.dims} needs one more entry than heads {self.heads}"
                             f" and samples {self.samples} one per layer")  # fmt: skip
        for d, h in zip(self.dims[1:], self.heads, strict=True):
            if d % h:
                raise ValueError(f"recommender.gnn: width {d} is not divisible by {h} heads")


def build_graph(split: Split, cat: Catalog, item_features: np.ndarray, cfg: GNNConfig, seed: int = 0):
    """The typed graph as a PyG ``Data``.

    Node order: users ``[0, U)``, items ``[U, U+I)``, persons ``[U+I, U+I+P)``.

    Returns
    -------
    torch_geometric.data.Data with ``x`` (N, F) (items' features, zeros elsewhere),
    ``node_type`` (N,), ``edge_index`` (2, E), ``edge_attr`` (E, 6) one-hot relation.
    """
    from torch_geometric.data import Data

    rng = np.random.default_rng(seed)
    u_n, i_n, p_n = split.n_users, split.n_items, cat.cast.shape[1]
    src, dst, rel = [], [], []

    def add(s, d, r_fwd, r_bwd=None):
        src.append(s)
        dst.append(d)
        rel.append(np.full(len(s), r_fwd))
        if r_bwd is not None:
            src.append(d)
            dst.append(s)
            rel.append(np.full(len(s), r_bwd))

    users = np.repeat(np.arange(u_n), np.diff(split.train_indptr))
    add(users, u_n + split.train_items.astype(np.int64), 0, 1)
    feats = item_features / np.maximum(np.linalg.norm(item_features, axis=1, keepdims=True), 1e-12)
    sim = feats @ feats.T
    np.fill_diagonal(sim, -np.inf)
    k = min(cfg.similar_k, i_n - 1)
    nbr = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    add(u_n + np.repeat(np.arange(i_n), k), u_n + nbr.ravel(), 2)
    g = cat.genres
    for i in range(i_n):
        cand = np.flatnonzero((g[i] & g).any(1))
        cand = cand[cand != i]
        if len(cand):
            pick = rng.choice(cand, min(cfg.same_genre_k, len(cand)), replace=False)
            add(np.full(len(pick), u_n + i), u_n + pick, 3)
    if p_n:
        coo = cat.cast.tocoo()
        add(u_n + i_n + coo.col.astype(np.int64), u_n + coo.row.astype(np.int64), 4, 5)
    edge_index = torch.as_tensor(np.stack([np.concatenate(src), np.concatenate(dst)]), dtype=torch.long)
    edge_attr = F.one_hot(torch.as_tensor(np.concatenate(rel)), len(RELATIONS)).float()
    n = u_n + i_n + p_n
    x = torch.zeros(n, item_features.shape[1])
    x[u_n : u_n + i_n] = torch.as_tensor(item_features, dtype=torch.float32)
    node_type = torch.cat([torch.full((u_n,), USER), torch.full((i_n,), ITEM), torch.full((p_n,), PERSON)])
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, node_type=node_type, num_nodes=n)


def _pure_torch_sampler_cls():
    """A ``NeighborSampler`` whose homogeneous sampling runs in plain torch.

    PyG delegates sampling to ``pyg-lib`` or ``torch-sparse``; neither has wheels for torch 2.13 on
    PyPI. When one is installed it is used as is; otherwise this uniform, without-replacement,
    directional sampler (the same semantics) takes over so ``NeighborLoader`` still works.
    """
    import torch_geometric.typing as pyg_typing
    from torch_geometric.sampler import NeighborSampler, SamplerOutput

    class TorchNeighborSampler(NeighborSampler):
        def __init__(self, *args, seed: int = 0, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._gen = torch.Generator().manual_seed(seed)

        def _sample(self, seed, seed_time=None, **kwargs):
            if pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE or isinstance(seed, dict):
                return super()._sample(seed, seed_time, **kwargs)
            colptr, row = self.colptr, self.row
            local = torch.full((self.num_nodes,), -1, dtype=torch.long)
            nodes = seed.to(torch.long)
            local[nodes] = torch.arange(len(nodes))
            frontier = nodes
            rows, cols, edges, n_nodes, n_edges = [], [], [], [len(nodes)], []
            for k in self.num_neighbors.get_mapped_values():
                start = colptr[frontier]
                deg = colptr[frontier + 1] - start
                seg = torch.repeat_interleave(torch.arange(len(frontier)), deg)
                first = torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
                offset = torch.arange(len(seg)) - first
                if k >= 0:
                    key = torch.rand(len(seg), generator=self._gen)
                    order = torch.argsort(seg.double() * 2.0 + key)
                    rank = torch.empty_like(order)
                    rank[order] = torch.arange(len(seg)) - first
                    keep = rank < k
                else:
                    keep = torch.ones(len(seg), dtype=torch.bool)
                e = (start[seg] + offset)[keep]
                s = row[e]
                d = local[frontier[seg[keep]]]
                new = torch.unique(s[local[s] < 0])
                local[new] = torch.arange(len(nodes), len(nodes) + len(new))
                nodes = torch.cat([nodes, new])
                rows.append(local[s])
                cols.append(d)
                edges.append(e)
                n_nodes.append(len(new))
                n_edges.append(len(e))
                frontier = new
            return SamplerOutput(node=nodes, row=torch.cat(rows), col=torch.cat(cols), edge=torch.cat(edges),
                                 batch=None, num_sampled_nodes=n_nodes, num_sampled_edges=n_edges)  # fmt: skip

    return TorchNeighborSampler


class AttnSAGE(nn.Module):
    """GraphSAGE with relation-aware multi-head attention aggregation.

    Parameters
    ----------
    in_dim : int
        Item feature width F.
    dims : list[int]
        ``[d0, d1, ..., dL]``: input projection width, then each layer's output width.
    heads : list[int], length L
    n_relations : int
        One-hot relation width (edge_dim of the attention).
    dropout : float
        Attention dropout.
    n_users : int
        Learned per-user input embeddings (0 = none; users enter by type only).
    jk : bool
        Return the concatenation of the input projection and every layer's output.

    Shapes
    ------
    forward(x (N, F), node_type (N,), edge_index (2, E), edge_attr (E, R)) -> (N, dL),
    or (N, d0 + d1 + ... + dL) with ``jk``
    """

    def __init__(self, in_dim: int, dims: list[int], heads: list[int], n_relations: int = len(RELATIONS),
                 dropout: float = 0.0, n_users: int = 0, jk: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.jk = jk
        self.user_emb = nn.Embedding(n_users, dims[0]) if n_users else None
        from torch_geometric.nn import GATv2Conv

        self.dims, self.heads = list(dims), list(heads)
        self.inp = nn.Linear(in_dim, dims[0])
        self.type_emb = nn.Embedding(3, dims[0])
        self.convs = nn.ModuleList(
            GATv2Conv(dims[i], dims[i + 1] // h, heads=h, edge_dim=n_relations, add_self_loops=False,
                      residual=True, dropout=dropout)
            for i, h in enumerate(heads)
        )  # fmt: skip
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.inp.reset_parameters()
        nn.init.normal_(self.type_emb.weight, std=0.1)
        if self.user_emb is not None:
            nn.init.normal_(self.user_emb.weight, std=0.1)
        for c in self.convs:
            c.reset_parameters()

    def forward(self, x, node_type, edge_index, edge_attr, n_id=None) -> torch.Tensor:
        h = self.inp(x) + self.type_emb(node_type)
        if self.user_emb is not None:
            # users are the first U global node ids; n_id maps a sampled subgraph back to them
            gid = torch.arange(len(x)) if n_id is None else n_id
            is_user = node_type == USER
            h = h.clone()
            h[is_user] = h[is_user] + self.user_emb(gid[is_user])
        layers = [h]
        for i, conv in enumerate(self.convs):
            h = conv(h, edge_index, edge_attr)
            if i < len(self.convs) - 1:
                h = F.elu(h)
            layers.append(h)
        return torch.cat(layers, -1) if self.jk else h

    def __repr__(self) -> str:
        return f"AttnSAGE(dims={self.dims}, heads={self.heads})"


def train_gnn(data, split: Split, cfg: GNNConfig, seed: int = 0, progress=None) -> tuple[AttnSAGE, dict]:
    """BPR training on sampled neighbourhoods; returns the model and a small log.

    Each step draws ``batch_size`` (user, positive) train pairs and ``negatives`` uniform negative
    items per pair; the seeds are the batch's distinct users and items, expanded by
    ``NeighborLoader`` with ``cfg.samples`` neighbours per hop; with ``cfg.mask_targets`` the
    batch's positive edges are removed from the sampled graph. Runs on one torch thread (restored
    afterwards): the matrices are small, and a second thread only adds spin-waiting on a shared box.
    """
    with torch_threads(1):
        return _train(data, split, cfg, seed, progress)


def _train(data, split: Split, cfg: GNNConfig, seed: int, progress) -> tuple[AttnSAGE, dict]:
    from torch_geometric.loader import NeighborLoader

    cfg.validate()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sampler = _pure_torch_sampler_cls()(data, num_neighbors=list(cfg.samples), seed=seed)
    loader = NeighborLoader(data, num_neighbors=list(cfg.samples), neighbor_sampler=sampler,
                            batch_size=cfg.batch_size)  # fmt: skip
    model = AttnSAGE(data.x.shape[1], cfg.dims, cfg.heads, dropout=cfg.dropout,
                     n_users=split.n_users if cfg.user_ids else 0, jk=cfg.jk)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    u_n = split.n_users
    pair_user = np.repeat(np.arange(u_n), np.diff(split.train_indptr))
    pair_item = split.train_items.astype(np.int64)
    losses, t0, c0 = [], time.perf_counter(), time.process_time()
    n_nodes = int(data.num_nodes)
    for step in range(cfg.steps):
        b = rng.integers(0, len(pair_user), cfg.batch_size)
        us, ps = pair_user[b], pair_item[b] + u_n
        ns = rng.integers(0, split.n_items, (cfg.batch_size, cfg.negatives)) + u_n
        seeds, inv = np.unique(np.concatenate([us, ps, ns.ravel()]), return_inverse=True)
        batch = loader(torch.as_tensor(seeds))  # NeighborLoader: sample + gather features
        ei, ea = batch.edge_index, batch.edge_attr
        if cfg.mask_targets:
            ei, ea = _drop_target_edges(ei, ea, batch.n_id, us, ps, n_nodes)
        h = model(batch.x, batch.node_type, ei, ea, batch.n_id)[: len(seeds)]
        inv = torch.as_tensor(inv)
        hu, hp = h[inv[: len(us)]], h[inv[len(us) : 2 * len(us)]]
        hn = h[inv[2 * len(us) :]].view(len(us), cfg.negatives, -1)
        pos = (hu * hp).sum(-1, keepdim=True)
        neg = (hu[:, None, :] * hn).sum(-1)
        loss = -F.logsigmoid(pos - neg).mean()
        loss = loss + cfg.reg * (hu.pow(2).sum(-1).mean() + hp.pow(2).sum(-1).mean() + hn.pow(2).sum(-1).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, cfg.steps, loss.item())
    log.info("GNN trained %d steps in %.1fs, final BPR loss %.4f", cfg.steps, time.perf_counter() - t0,
             float(np.mean(losses[-20:])))  # fmt: skip
    return model, {"loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:])),
                   "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}  # fmt: skip


def _drop_target_edges(edge_index: torch.Tensor, edge_attr: torch.Tensor, n_id: torch.Tensor,
                       users: np.ndarray, items: np.ndarray, n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the batch's supervision edges (user-item, both directions) from its message-passing graph.

    Otherwise the model learns to recognise a direct edge between the pair it scores, which it never
    sees for a held-out item (the classic target leakage of GNN link prediction).
    """
    src, dst = n_id[edge_index[0]], n_id[edge_index[1]]
    u, i = torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)
    targets = torch.cat([u * n_nodes + i, i * n_nodes + u])
    keep = ~torch.isin(src * n_nodes + dst, targets)
    return edge_index[:, keep], edge_attr[keep]


@torch.no_grad()
def node_embeddings(model: AttnSAGE, data) -> torch.Tensor:
    """Embeddings of every node with full neighbourhoods (serving), shape (N, dL)."""
    model.eval()
    return model(data.x, data.node_type, data.edge_index, data.edge_attr)


class GNNStrategy:
    """Scores ``<h_user, h_item>`` with precomputed node embeddings.

    Parameters
    ----------
    user_emb : np.ndarray[float32], shape (U, d)
    item_emb : np.ndarray[float32], shape (I, d)
    info : dict, optional
        The training log of :func:`train_gnn` (reported, not used for scoring).
    """

    name = "gnn"

    def __init__(self, user_emb: np.ndarray, item_emb: np.ndarray, info: dict | None = None) -> None:
        self.user_emb, self.item_emb = user_emb, item_emb
        self.info = dict(info or {})

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self.user_emb[users] @ self.item_emb.T

    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None, user: int | None = None) -> np.ndarray:
        """Scores for one request, shape (I,).

        A known user uses its node embedding; a history sent with the request is represented by
        the weighted mean of its items' embeddings (a new user node is not inserted at serving
        time, which would need a 3-hop neighbourhood pass per request).
        """
        if user is not None:
            return self.user_emb[user] @ self.item_emb.T
        if len(items) == 0:
            return np.full(len(self.item_emb), np.nan, np.float32)
        w = np.ones(len(items)) if weights is None else np.asarray(weights, np.float64)
        w = w / w.sum() if w.sum() > 0 else np.full(len(items), 1.0 / len(items))
        return (w @ self.item_emb[items]).astype(np.float32) @ self.item_emb.T
