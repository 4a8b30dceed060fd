"""Validation NDCG@10 of the hybrid's GNN strategy alone (phase 1: train split, validation item).

For tuning the GNN without a full ``evaluate-recommender``: the graph and the model are built on
the train split exactly as in phase 1 of the evaluation, and every user's validation item is ranked
against the whole catalogue minus the train history. The test item is never read.

Usage::

    python -m experiments.gnn_validation runs/ml100k_seed0 --seed 0 --set gnn.jk=false --json PATH
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def validate_gnn(run_dir: str, overrides: list[str], seed: int = 0) -> dict:
    """Train the GNN on the train split of ``run_dir``'s data and score the validation item.

    Parameters
    ----------
    run_dir : str
        Run directory with ``models/LATEST`` (its item embeddings are GNN input features).
    overrides : list[str]
        ``recommender`` config overrides, e.g. ``["gnn.steps=400"]``.
    seed : int
        Recommender seed (GNN initialisation, sampling, SAME_GENRE partners).

    Returns
    -------
    dict
        ``ndcg@10``, ``hr@10`` of the validation item, the GNN config, and the training log
        (``cpu_seconds`` of training on one thread, BPR loss at the start and the end).
    """
    from experiments.recommend import _load_data
    from recommender.evaluate_hybrid import history_exclude
    from recommender.hybrid import HybridRecommender, load_config
    from recommender.metrics import full_ranks, rank_metrics

    cfg = load_config(None, [*overrides, f"seed={seed}", "strategies=[gnn]"])
    ds, split = _load_data(run_dir)
    # cached like phase 1 of evaluate-recommender (same key), so a later evaluation reuses the model
    rec = HybridRecommender.build(run_dir, ds, split, cfg, tag="train")
    gnn = rec.strategies["gnn"]
    scores = gnn.score_users(np.arange(split.n_users))
    m = rank_metrics(full_ranks(scores, split.val_item, history_exclude(split), cfg.seed), 10)
    return {"run_dir": str(run_dir), "seed": seed, "overrides": overrides, "split": "validation",
            **m, "gnn": vars(cfg.gnn), "train": gnn.info}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """CLI: print the GNN's validation NDCG@10 / HR@10 and write them as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--json", required=True, help="write the result here")
    args = p.parse_args(argv)
    out = validate_gnn(args.run_dir, args.set, args.seed)
    print(f"{args.run_dir} seed {args.seed} {' '.join(args.set) or '(defaults)'}: validation "
          f"NDCG@10 {out['ndcg@10']:.4f} HR@10 {out['hr@10']:.4f}, GNN training "
          f"{out['train']['cpu_seconds']:.1f} s CPU")  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
