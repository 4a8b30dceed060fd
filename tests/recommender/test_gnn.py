"""The GNN strategy: target-edge masking, jumping-knowledge output, training on a tiny population."""

import numpy as np
import torch

from recommender.catalog import Catalog
from recommender.data import generate_synthetic, leave_one_out
from recommender.gnn import (
    AttnSAGE,
    GNNConfig,
    _drop_target_edges,
    build_graph,
    node_embeddings,
    train_gnn,
)


def test_drop_target_edges_removes_the_pairs_in_both_directions_only():
    # global ids: users 0-1, items 2-4; the sampled subgraph holds nodes [0, 2, 1, 3] (local 0-3)
    n_id = torch.tensor([0, 2, 1, 3])
    edge_index = torch.tensor([[0, 1, 2, 3, 1],   # 0->2, 2->0, 1->3, 3->1, 2->1
                               [1, 0, 3, 2, 2]])  # fmt: skip
    edge_attr = torch.arange(5.0)[:, None]
    ei, ea = _drop_target_edges(edge_index, edge_attr, n_id, np.array([0]), np.array([2]), n_nodes=5)
    # (user 0, item 2) goes in both directions; user 1's edge to item 3 and the edge 2->1 stay
    assert ei.tolist() == [[2, 3, 1], [3, 2, 2]]
    assert ea.ravel().tolist() == [2.0, 3.0, 4.0]


def test_jk_output_concatenates_the_input_projection_and_every_layer():
    torch.manual_seed(0)
    x, node_type = torch.randn(6, 5), torch.tensor([0, 0, 1, 1, 1, 2])
    edge_index = torch.tensor([[0, 2, 1, 3, 4, 5], [2, 0, 3, 1, 2, 4]])
    edge_attr = torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 1, 2, 4]), 6).float()
    dims, heads = [8, 8, 4, 4], [2, 2, 1]
    jk = AttnSAGE(5, dims, heads, n_users=2, jk=True)
    last = AttnSAGE(5, dims, heads, n_users=2, jk=False)
    last.load_state_dict(jk.state_dict())
    out_jk, out_last = jk(x, node_type, edge_index, edge_attr), last(x, node_type, edge_index, edge_attr)
    assert out_jk.shape == (6, sum(dims)) and out_last.shape == (6, dims[-1])
    torch.testing.assert_close(out_jk[:, -dims[-1] :], out_last)


def test_training_lowers_the_bpr_loss_and_keeps_the_thread_count():
    ds = generate_synthetic(n_users=40, n_items=200, mean_interactions=20, min_interactions=8, seed=1,
                            preference_strength=4.0)  # fmt: skip
    split = leave_one_out(ds, n_negatives=10)
    cat = Catalog.from_split(ds, split)
    feats = np.random.default_rng(0).normal(size=(split.n_items, 12)).astype(np.float32)
    cfg = GNNConfig(dims=[16, 16, 16, 16], heads=[2, 2, 1], samples=[3, 3, 3], steps=60, batch_size=64)
    data = build_graph(split, cat, feats, cfg, seed=0)
    threads = torch.get_num_threads()
    model, info = train_gnn(data, split, cfg, seed=0)
    assert torch.get_num_threads() == threads
    assert info["loss_last"] < info["loss_first"] and info["cpu_seconds"] > 0
    emb = node_embeddings(model, data)
    assert emb.shape == (data.num_nodes, sum(cfg.dims)) and torch.isfinite(emb).all()
