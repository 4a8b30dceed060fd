"""The one-line outcome `fedrec simulate` prints names the run that actually ran."""

from types import SimpleNamespace

from experiments.simulate import outcome_line

SUMMARY = {"name": "ml100k_seed0", "rounds": 60, "wall_seconds": 75.0, "startup_seconds": 10.1,
           "final": {"hr@10": 0.67, "ndcg@10": 0.4, "full-ndcg@10": 0.08}}  # fmt: skip


def test_fresh_run_is_named_by_its_config():
    cfg = SimpleNamespace(name="ml100k_seed0", runs_dir="runs", resume=None)
    line = outcome_line(cfg, SUMMARY)
    assert line.startswith("run ml100k_seed0: 60 rounds") and line.endswith("-> runs/ml100k_seed0")


def test_resumed_run_is_named_by_its_saved_name_and_directory():
    # `fedrec simulate resume=runs/copy simulation.rounds=60` leaves the command line's name at its
    # default; the line used to say "run default ... -> runs/default".
    cfg = SimpleNamespace(name="default", runs_dir="runs", resume="runs/copy")
    line = outcome_line(cfg, SUMMARY)
    assert line.startswith("run ml100k_seed0:") and line.endswith("-> runs/copy")
    assert "default" not in line
