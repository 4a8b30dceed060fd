"""A simulation killed with SIGKILL and resumed ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from configs.store import compose_config
from experiments.deploy_procs import Processes
from experiments.simulate import run_simulation
from server.resume import resume_config
from server.rundir import RunDirError

REPO = Path(__file__).resolve().parents[2]
BASE = ["data=synthetic", "data.users=60", "data.items=200", "data.mean_interactions=15", "privacy=distributed",
        "privacy.sample_rate=0.5", "strategy.item_aggregation=mean", "simulation.nodes=3", "simulation.rounds=5", "simulation.eval_every=2",
        "client.chunk_users=16"]
TIMING = {"seconds", "accounting_seconds", "node-seconds"}


def _registry(run: Path) -> dict[str, tuple[np.ndarray, dict]]:
    out = {}
    for pt in sorted((run / "models").glob("v*.pt")):
        blob = torch.load(pt, weights_only=False)
        out[pt.stem] = (blob["shared"].numpy(), {k: v for k, v in blob["meta"].items()})
    return out


def _rounds(run: Path) -> list[dict]:
    per = json.loads((run / "summary.json").read_text())["per_round"]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in per]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_then_resume_is_bitwise_equal(tmp_path):
    ref_over = [*BASE, f"runs_dir={tmp_path}", "name=ref"]
    ref = run_simulation(compose_config(ref_over), ref_over, show_progress=False)
    assert ref["finished"] and ref["rounds"] == 5

    over = [*BASE, f"runs_dir={tmp_path}", "name=cut"]
    run = tmp_path / "cut"
    procs = Processes(tmp_path / "logs", env={"PYTHONPATH": str(REPO)})
    try:
        proc = procs.start("simulate", [sys.executable, "-m", "experiments.cli", "simulate", *over], cwd=REPO)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads((run / "summary.json").read_text())["rounds"] >= 1:
                    break
            except (OSError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, (procs.log_path("simulate").read_text()[-3000:])
        procs.kill("simulate", signal.SIGKILL)  # mid-run: round 2 is in flight
        proc.wait(30)
    finally:
        assert procs.stop() == []
    done = json.loads((run / "summary.json").read_text())["rounds"]
    assert 1 <= done < 5 and not json.loads((run / "summary.json").read_text())["finished"]
    # the node state on disk never runs more than one round ahead of the checkpoint
    for node in (run / "node_state").iterdir():
        assert {int(f.name[9:15]) for f in node.glob("private.r*.npz")} <= {done - 1, done, done + 1}, node

    # resume=DIR alone restores the saved config; an override that changes the run is refused
    with pytest.raises(RunDirError, match="privacy.noise_multiplier"):
        resume_config(compose_config([f"resume={run}", "privacy.noise_multiplier=2.0"]),
                      [f"resume={run}", "privacy.noise_multiplier=2.0"])
    resumed = run_simulation(compose_config([f"resume={run}"]), [f"resume={run}"], show_progress=False)

    assert resumed["finished"] and resumed["rounds"] == 5
    assert resumed["epsilon"] == ref["epsilon"] and ref["epsilon"] > 0
    a, b = _registry(tmp_path / "ref"), _registry(run)
    assert list(a) == list(b) == ["v0001", "v0002", "v0003", "v0004", "v0005"]
    for v in a:
        assert np.array_equal(a[v][0], b[v][0]), f"{v} differs"
        assert a[v][1] == b[v][1], v
    assert _rounds(tmp_path / "ref") == _rounds(run)
    ck_a = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=False)
    ck_b = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert ck_a["ledger"].keys() == ck_b["ledger"].keys()
    for k in ck_a["ledger"]:
        assert np.array_equal(np.asarray(ck_a["ledger"][k]), np.asarray(ck_b["ledger"][k])), k
    assert ck_a["rng"] == ck_b["rng"]
    # the users' private embeddings (node side, restored from node_state/) match too
    emb_a, emb_b = (np.load(r / "simulation_artifacts" / "private_embeddings.npz") for r in (tmp_path / "ref", run))
    assert np.array_equal(emb_a["emb"][np.argsort(emb_a["users"])], emb_b["emb"][np.argsort(emb_b["users"])])
    # TensorBoard: one event per round per tag after the purge of the interrupted round
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("users")] == [1, 2, 3, 4, 5]
    assert not os.environ.get("FEDREC_DEVICE")
