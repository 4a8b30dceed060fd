"""The ``fedrec`` recommender commands pass their run arguments through to the evaluation."""

import argparse

import pytest

from experiments import recommend
from recommender import evaluate_hybrid
from recommender.hybrid import RecommenderError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedrec")
    recommend.add_commands(p.add_subparsers(dest="command", required=True))
    return p


def test_evaluate_recommender_passes_the_test_and_early_runs(monkeypatch):
    seen = {}

    def fake_evaluate(run_dir, ds, split, cfg, progress=None, test_run_dir=None, early_run_dir=None):
        seen.update(run_dir=run_dir, test_run_dir=test_run_dir, early_run_dir=early_run_dir, seed=cfg.seed)
        raise RecommenderError("stop here")

    monkeypatch.setattr(evaluate_hybrid, "evaluate", fake_evaluate)
    monkeypatch.setattr(recommend, "_load_data", lambda run_dir, seed=0: (None, None))
    args = _parser().parse_args(["evaluate-recommender", "runs/a", "--seed", "2", "--test-run", "runs/tv",
                                 "--early-run", "runs/early"])  # fmt: skip
    with pytest.raises(SystemExit, match="stop here"):
        args.func(args)
    assert seen == {"run_dir": "runs/a", "test_run_dir": "runs/tv", "early_run_dir": "runs/early", "seed": 2}
