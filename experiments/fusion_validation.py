"""Cross-validated fusion search on the validation item: do the learned weights carry over to other users?

Phase 1 only (strategies built on the train split, scored on each user's validation item; the test
item is never read). The validation users are split in two halves at random; the fusion search
(``recommender.evaluate_hybrid.search_fusion`` with the config's candidates) learns on one half and
the learned fusion is scored by NDCG@10 on the other, and vice versa. The out-of-fold NDCG@10 of the
fusion is compared with ALS on the same users. This is how the search settings (``learn.starts``,
``learn.metric_k``) are chosen without looking at the test item.

Usage::

    python -m experiments.fusion_validation runs/ml100k_seed0 --seed 0 --metric-k 10 50 \\
        --starts default default,equal,best --json PATH
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np

K = 10


def cross_validate(run_dir: str, overrides: list[str], seed: int, metric_ks: list[int],
                   start_sets: list[list[str]], reps: int = 3) -> dict:  # fmt: skip
    """Out-of-fold gain of the learned fusion over ALS, for every (metric_k, starts) setting.

    Parameters
    ----------
    run_dir : str
        Run directory with ``models/LATEST``.
    overrides : list[str]
        ``recommender`` config overrides (e.g. ``learn.methods=[combsum]``).
    seed : int
        Recommender seed.
    metric_ks : list[int]
        Cut-offs of the validation NDCG the search maximises (``learn.metric_k``).
    start_sets : list[list[str]]
        ``learn.starts`` settings.
    reps : int
        Random 2-fold splits of the validation users (seeds 0..reps-1).

    Returns
    -------
    dict
        Per setting: out-of-fold NDCG@10 gain over ALS in percent, per split and mean ± sd.
    """
    from experiments.recommend import _load_data
    from recommender.evaluate_hybrid import (
        history_exclude,
        score_matrices,
        search_fusion,
        target_times,
    )
    from recommender.fusion import fuse_scores, ranks_from_scores
    from recommender.hybrid import HybridRecommender, load_config
    from recommender.metrics import full_ndcg

    cfg = load_config(None, [*overrides, f"seed={seed}"])
    ds, split = _load_data(run_dir)
    rec = HybridRecommender.build(run_dir, ds, split, cfg, tag="train")
    scores = score_matrices(rec, target_times(ds)[0])
    exclude, target = history_exclude(split), split.val_item
    names = [n for n in scores if n != "popularity"]
    ranks = {n: ranks_from_scores(scores[n], cfg.depth, exclude) for n in names}
    default_w = {n: cfg.weights.get(n, 0.0) for n in names}

    def ndcg(fused: np.ndarray, rows: np.ndarray, k: int) -> float:
        return full_ndcg(fused, target[rows], exclude[rows], k, cfg.seed)

    settings = list(itertools.product(metric_ks, start_sets))
    gains: dict[str, list[float]] = {f"metric_k={k} starts={','.join(s)}": [] for k, s in settings}
    n = split.n_users
    for rep in range(reps):
        perm = np.random.default_rng(rep).permutation(n)
        halves = (np.sort(perm[: n // 2]), np.sort(perm[n // 2 :]))
        als = sum(ndcg(scores["collaborative"][h], h, K) * len(h) for h in halves)
        for (mk, starts), label in zip(settings, gains, strict=True):
            learn = dataclasses.replace(cfg.learn, metric_k=mk, starts=list(starts))
            cfg_s = dataclasses.replace(cfg, learn=learn)
            fused_total = 0.0
            for a, b in ((0, 1), (1, 0)):
                A, B = halves[a], halves[b]
                single = {s: ndcg(scores[s][A], A, K) for s in names}
                search = search_fusion({s: scores[s][A] for s in names}, {s: ranks[s][A] for s in names},
                                       exclude[A], lambda f, A=A, mk=mk: ndcg(f, A, mk), default_w, cfg_s,
                                       single)  # fmt: skip
                c = max(search, key=lambda c: c["val_objective"])
                f = fuse_scores({s: scores[s][B] for s in names}, c["weights"], c["method"], exclude[B], cfg.depth,
                                c["rrf_k"])  # fmt: skip
                fused_total += ndcg(f, B, K) * len(B)
            gains[label].append(100.0 * (fused_total / als - 1.0))
    return {"run_dir": str(run_dir), "seed": seed, "overrides": overrides, "reps": reps,
            "split": "validation users, 2-fold", "metric": "out-of-fold NDCG@10 of the fusion vs ALS, %",
            "settings": {lab: {"per_split": g, "mean": float(np.mean(g)), "sd": float(np.std(g))}
                         for lab, g in gains.items()}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """CLI: print the out-of-fold gain per search setting and write it as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--metric-k", type=int, nargs="+", default=[10, 50])
    p.add_argument("--starts", nargs="+", default=["default", "default,equal,best"],
                   help="comma-separated start sets")  # fmt: skip
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", required=True, help="write the result here")
    args = p.parse_args(argv)
    out = cross_validate(args.run_dir, args.set, args.seed, args.metric_k,
                         [s.split(",") for s in args.starts], args.reps)  # fmt: skip
    for label, r in out["settings"].items():
        print(f"{args.run_dir} seed {args.seed} {label}: out-of-fold NDCG@10 vs ALS {r['mean']:+.2f}% "
              f"± {r['sd']:.2f} ({', '.join(f'{g:+.1f}' for g in r['per_split'])})")  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
