"""End to end in Flower's simulation engine on a small synthetic population."""

import json

import numpy as np
import pytest

from configs.store import compose_config
from experiments.simulate import run_simulation
from recommender.data import generate_synthetic, leave_one_out
from recommender.metrics import sampled_report

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OVERRIDES = ["data=synthetic", "data.users=120", "data.items=400", "data.mean_interactions=40",
             "simulation.rounds=3", "simulation.eval_every=3", "simulation.nodes=2"]


def test_three_rounds_beat_popularity(tmp_path):
    cfg = compose_config([*OVERRIDES, f"runs_dir={tmp_path}", "name=t"])
    summary = run_simulation(cfg, OVERRIDES, show_progress=False)
    ds = generate_synthetic(120, 400, mean_interactions=40, seed=0)
    sp = leave_one_out(ds)
    pop = sp.item_popularity().astype(float)
    popularity = sampled_report(pop[sp.test_item], pop[sp.eval_negatives])["hr@10"]
    assert summary["rounds"] == 3 and summary["finished"]
    assert summary["final"]["hr@10"] > popularity, (summary["final"], popularity)
    run = tmp_path / "t"
    assert (run / "models" / "LATEST").read_text().strip() == "v0003"
    assert (run / "models" / "v0003.json").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert list((run / "tb").iterdir())
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["final"]["hr@10"] == summary["final"]["hr@10"]
    # the run is scored from outside with raw ids
    from experiments import load_run

    scorer = load_run(run)
    s = scorer.score(np.array([1, 1, 2]), np.array([1, 2, 3]))
    assert s.shape == (3,) and np.isfinite(s).all()
    # a finished run is not overwritten without overwrite=true
    from server.rundir import RunDirError

    with pytest.raises(RunDirError, match="overwrite"):
        run_simulation(cfg, OVERRIDES, show_progress=False)
