"""Private state stays with its user across rounds and across placements (nodes)."""

import numpy as np
import pytest
import torch

from configs.store import compose_config
from experiments.simulate import run_simulation
from recommender.data import generate_synthetic, leave_one_out
from recommender.local_training import build_schedule, train_cohort, user_rng
from recommender.model_store import load_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BASE = ["data=synthetic", "data.users=40", "data.items=300", "data.mean_interactions=25",
        "simulation.eval_every=0", "client.chunk_users=16"]


def _run(tmp_path, name, nodes, rounds):
    over = [*BASE, f"simulation.nodes={nodes}", f"simulation.rounds={rounds}", f"runs_dir={tmp_path}", f"name={name}"]
    run_simulation(compose_config(over), over, show_progress=False)
    art = np.load(tmp_path / name / "simulation_artifacts" / "private_embeddings.npz")
    emb = np.zeros((40, art["emb"].shape[1]), np.float32)
    emb[art["users"]] = art["emb"]
    return emb


def test_private_state_follows_the_user(tmp_path):
    # round 1 on three nodes, rounds 1-2 on two nodes: user 5 is hosted by different nodes
    one = _run(tmp_path, "r1", nodes=3, rounds=1)
    two = _run(tmp_path, "r2", nodes=2, rounds=2)
    # round 2 continued from round 1's embedding (computed on another placement): replay it by hand
    cfg = compose_config([*BASE, "simulation.nodes=2"])
    split = leave_one_out(generate_synthetic(40, 300, mean_interactions=25, seed=0))
    v1 = load_version(tmp_path / "r2", 1)
    u = 5
    sched = build_schedule(split.train_of(u), split.seen_of(u), split.n_items, cfg.client, user_rng(cfg.seed, 2, u))
    _, replay, _ = train_cohort(v1.shared, torch.from_numpy(one[u : u + 1]), [sched], v1.shape, cfg.client)
    assert np.allclose(replay.numpy()[0], two[u], atol=1e-4)
    assert not np.allclose(one[u], two[u])
