"""secure_agg=on end to end in Flower's simulation engine (Ray), tiny synthetic population."""

import json

import numpy as np
import pytest
import torch

from client.secagg import quantization_config
from configs.store import compose_config
from experiments.simulate import run_simulation

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OVERRIDES = ["data=synthetic", "data.users=40", "data.items=200", "data.mean_interactions=15",
             "simulation.rounds=2", "simulation.eval_every=2", "simulation.nodes=2", "seed=3"]  # fmt: skip
DROPS = ["secure_agg.dropout.advertise_keys=0.1", "secure_agg.dropout.share_keys=0.1",
         "secure_agg.dropout.masked_input=0.1", "secure_agg.dropout.unmask=0.1"]  # fmt: skip


def _run(tmp_path, name, *extra):
    ov = [*OVERRIDES, *extra]
    cfg = compose_config([*ov, f"runs_dir={tmp_path}", f"name={name}"])
    return cfg, run_simulation(cfg, ov, show_progress=False, export_private=False)


def _theta(tmp_path, name, version):
    blob = torch.load(tmp_path / name / "models" / f"v{version:04d}.pt", weights_only=False)
    return blob["shared"].numpy()


def _plain_in_process(tmp_path):
    """The secure_agg=off baseline, run in process (same nodes, seeds and partition): saves a Ray start."""
    from client.app import app
    from experiments.inprocess import InProcessGrid
    from server.app import build_loop

    loop = build_loop(compose_config([*OVERRIDES, f"runs_dir={tmp_path}", "name=off"]))
    grid = InProcessGrid(2, app)
    loop.discover(grid)
    for _ in range(2):
        loop.run_round(grid)
    return loop.write_summary(finished=True)


def test_secure_agg_on_equals_off_up_to_quantisation_and_survives_dropouts(tmp_path):
    off = _plain_in_process(tmp_path)
    cfg, on = _run(tmp_path, "on", "secure_agg=on")
    assert on["finished"] and on["rounds"] == 2
    r_off, r_on = off["per_round"][0], on["per_round"][0]
    assert r_on["users"] == r_off["users"] == 40
    assert r_on["train-loss"] == pytest.approx(r_off["train-loss"], abs=1e-7)
    # after round 1 the models differ by quantisation only (item rows move by item_lr * sum)
    value_err, _ = quantization_config(cfg).error_bound(40)
    diff = np.abs(_theta(tmp_path, "off", 1) - _theta(tmp_path, "on", 1)).max()
    assert diff <= cfg.strategy.item_lr * value_err + 1e-6, diff
    # round 2 starts from slightly different models; the outcome stays the same within noise
    assert on["final"]["hr@10"] == pytest.approx(off["final"]["hr@10"], abs=0.1)
    assert on["rejected_messages"].get("total", sum(on["rejected_messages"].values())) == 0
    assert all("failure" not in r["secagg"] for r in on["per_round"])

    _, drop = _run(tmp_path, "drop", "secure_agg=on", *DROPS)
    assert drop["finished"] and drop["rounds"] == 2
    for r in drop["per_round"]:
        c = r["secagg"]["counts"]
        assert "failure" not in r["secagg"] and r["users"] == c["u3"] < 40 and c["responded"] < c["u3"]
    assert drop["dropouts"] == sum(40 - r["users"] for r in drop["per_round"])
    on_disk = json.loads((tmp_path / "drop" / "summary.json").read_text())
    assert on_disk["per_round"][0]["secagg"]["counts"] == drop["per_round"][0]["secagg"]["counts"]
