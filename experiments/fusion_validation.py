"""Cross-validated fusion search on the validation item: do the learned weights carry over to other users?

Phase 1 only (strategies built on the train split, scored on each user's validation item; the test
item is never read). The validation users are split in two halves at random; the fusion search
(``recommender.evaluate_hybrid.search_fusion`` with the config's candidates) learns on one half and
the learned fusion is scored by NDCG@10 on the other, and vice versa. The out-of-fold NDCG@10 of the
fusion is compared with ALS on the same users. This is how the search settings (``learn.starts``,
``learn.metric_k``) are chosen without looking at the test item.

With ``--early-run RUN0`` (a run with ``data.fit_on=train_minus_last``) every setting is also
learned on the fitting half's validation items *and* its users' last train interactions (scored by
strategies built without them, ``evaluate-recommender --early-run``), and still scored on the
other half's validation items: does a second held-out interaction per user make better weights?

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
                   start_sets: list[list[str]], reps: int = 3, early_run: str | None = None) -> dict:  # fmt: skip
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
    early_run : str, optional
        Run with ``data.fit_on=train_minus_last``: each setting is also learned with the fitting
        half's earlier held-out interactions added (label suffix ``learned_on=val+earlier``).

    Returns
    -------
    dict
        Per setting: out-of-fold NDCG@10 gain over ALS in percent, per split and mean ± sd.
    """
    from experiments.recommend import _load_data
    from recommender.evaluate_hybrid import (
        check_runs,
        earlier_phase,
        history_exclude,
        learn_fusion,
        score_matrices,
        target_times,
        tuned_als_params,
    )
    from recommender.fusion import fuse_scores, ranks_from_scores
    from recommender.hybrid import HybridRecommender, load_config
    from recommender.metrics import full_ndcg

    cfg = load_config(None, [*overrides, f"seed={seed}"])
    check_runs(run_dir, None, early_run)
    ds, split = _load_data(run_dir)
    rec = HybridRecommender.build(run_dir, ds, split, cfg, tag="train")
    scores = score_matrices(rec, target_times(ds)[0])
    exclude, target = history_exclude(split), split.val_item
    names = [n for n in scores if n != "popularity"]
    default_w = {n: cfg.weights.get(n, 0.0) for n in names}
    # the rows a half can learn on: its validation items (0) and, with an early run, its earlier ones
    # (1): (scores, top-depth ranks, exclude, target) of every user, sliced per half below
    sources = [({n: scores[n] for n in names}, exclude, target)]
    if early_run is not None:
        sc_e, ex_e, tg_e, _ = earlier_phase(early_run, ds, split, cfg, tuned_als_params(rec))
        sources.append(({n: sc_e[n] for n in names}, ex_e, tg_e))
    del rec
    sources = [(sc, {n: ranks_from_scores(sc[n], cfg.depth, ex) for n in names}, ex, tg) for sc, ex, tg in sources]

    def ndcg(fused: np.ndarray, rows: np.ndarray, k: int) -> float:
        return full_ndcg(fused, target[rows], exclude[rows], k, cfg.seed)

    def learn_on(rows: np.ndarray, use: list[int], cfg_s) -> dict:
        """The best fusion candidate learned on ``rows`` of the sources ``use`` (stacked)."""
        sc = {n: np.concatenate([sources[i][0][n][rows] for i in use]) for n in names}
        rk = {n: np.concatenate([sources[i][1][n][rows] for i in use]) for n in names}
        ex = np.concatenate([sources[i][2][rows] for i in use])
        tg = np.concatenate([sources[i][3][rows] for i in use])
        return max(learn_fusion(sc, rk, ex, tg, default_w, cfg_s), key=lambda c: c["val_objective"])

    variants = [("", [0])] if early_run is None else [(" learned_on=val", [0]), (" learned_on=val+earlier", [0, 1])]
    settings = [(mk, st, suffix, use) for mk, st in itertools.product(metric_ks, start_sets) for suffix, use in variants]
    gains: dict[str, list[float]] = {f"metric_k={k} starts={','.join(st)}{sfx}": [] for k, st, sfx, _ in settings}
    n = split.n_users
    for rep in range(reps):
        perm = np.random.default_rng(rep).permutation(n)
        halves = (np.sort(perm[: n // 2]), np.sort(perm[n // 2 :]))
        als = sum(ndcg(scores["collaborative"][h], h, K) * len(h) for h in halves)
        for (mk, starts, _, use), label in zip(settings, gains, strict=True):
            learn = dataclasses.replace(cfg.learn, metric_k=mk, starts=list(starts))
            cfg_s = dataclasses.replace(cfg, learn=learn)
            fused_total = 0.0
            for a, b in ((0, 1), (1, 0)):
                A, B = halves[a], halves[b]
                c = learn_on(A, use, cfg_s)
                f = fuse_scores({s: scores[s][B] for s in names}, c["weights"], c["method"], exclude[B], cfg.depth,
                                c["rrf_k"])  # fmt: skip
                fused_total += ndcg(f, B, K) * len(B)
            gains[label].append(100.0 * (fused_total / als - 1.0))
    return {"run_dir": str(run_dir), "seed": seed, "overrides": overrides, "reps": reps, "early_run": early_run,
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
    p.add_argument("--early-run", default=None, metavar="RUN0",
                   help="run with data.fit_on=train_minus_last: also learn with each user's last train interaction")  # fmt: skip
    p.add_argument("--json", required=True, help="write the result here")
    args = p.parse_args(argv)
    out = cross_validate(args.run_dir, args.set, args.seed, args.metric_k,
                         [s.split(",") for s in args.starts], args.reps, args.early_run)  # fmt: skip
    for label, r in out["settings"].items():
        print(f"{args.run_dir} seed {args.seed} {label}: out-of-fold NDCG@10 vs ALS {r['mean']:+.2f}% "
              f"± {r['sd']:.2f} ({', '.join(f'{g:+.1f}' for g in r['per_split'])})")  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
