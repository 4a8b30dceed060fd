"""Private state is versioned by round so that it stays consistent with the server's checkpoint."""

import numpy as np
import torch
from flwr.app import Context, RecordDict

from client.state import PrivateStore, node_state_dir, state_versions
from recommender.ncf import NeuMFShape

SHAPE = NeuMFShape(50, 4)
USERS = np.arange(10, 16, dtype=np.int64)


def _ctx() -> Context:
    return Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 2}, state=RecordDict(),
                   run_config={})  # fmt: skip


def _train(ctx, disk, rnd, value):
    store = PrivateStore(ctx, USERS, SHAPE, seed=0, as_of=rnd - 1, disk=disk)
    store.put(USERS, torch.full((len(USERS), SHAPE.private_dim), float(value)))
    store.save(rnd)
    return store


def test_versions_keep_one_round_of_history(tmp_path):
    ctx = _ctx()
    for rnd in (1, 2, 3):
        _train(ctx, tmp_path, rnd, rnd)
    assert sorted(state_versions(tmp_path)) == [2, 3]  # round 3 may be redone from round 2
    assert PrivateStore(ctx, USERS, SHAPE, 0, as_of=3, disk=tmp_path).matrix[0, 0] == 3.0


def test_resumed_server_rewinds_a_live_node(tmp_path):
    """Server checkpointed round 2, the node already trained round 3: round 3 restarts from round 2."""
    ctx = _ctx()
    for rnd in (1, 2, 3):
        _train(ctx, tmp_path, rnd, rnd)
    store = PrivateStore(ctx, USERS, SHAPE, 0, as_of=2, disk=tmp_path)
    assert store.loaded_round == 2 and store.matrix[0, 0] == 2.0


def test_restarted_node_reloads_from_disk(tmp_path):
    _train(_ctx(), tmp_path, 1, 7)
    fresh = PrivateStore(_ctx(), USERS, SHAPE, 0, as_of=1, disk=tmp_path)  # new process: empty Context.state
    assert fresh.loaded_round == 1 and (fresh.matrix == 7.0).all()
    nothing = PrivateStore(_ctx(), USERS, SHAPE, 0, as_of=0, disk=tmp_path)  # round 1 again: initial state
    assert nothing.loaded_round == 0 and abs(nothing.matrix).max() < 0.1


def test_node_state_dir_device_wins(tmp_path, monkeypatch):
    cfg = {"node-state-dir": str(tmp_path / "run" / "node_state")}
    monkeypatch.delenv("FEDREC_DEVICE", raising=False)
    monkeypatch.delenv("FEDREC_NODE_STATE", raising=False)
    assert node_state_dir(cfg, {"partition-id": 3}) == tmp_path / "run" / "node_state" / "3"
    assert node_state_dir({}, {"partition-id": 3}) is None
    monkeypatch.setenv("FEDREC_DEVICE", "1")
    monkeypatch.setenv("FEDREC_NODE_STATE", str(tmp_path / "device"))
    # a device never lets the server choose where its private state lives
    assert node_state_dir(cfg, {"partition-id": 3}) == tmp_path / "device"
