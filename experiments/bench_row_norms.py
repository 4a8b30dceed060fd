"""`fedrec bench row-norms`: how honest and promoted item-row deltas compare with their row's median.

Trains one round (from the initial model) of ``--users`` ML-100K users with the default local
training, makes the first ``--fraction`` of them targeted promoters (fake target interactions,
``repeat`` each, as ``attack=targeted_promotion``), and reports the distribution of
``row-delta norm / median norm of the row over its users`` for honest positive rows, honest
negative-sample rows and the promoters' target rows (before their boost x lam, which multiplies the
ratio by about lam), plus the share of honest rows each row-clipping bound would clip. It is the
measurement behind ``strategies.row_clip``'s default bound.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

PERCENTILES = (50, 80, 90, 95, 99, 99.9)


def row_norm_stats(users: int = 400, fraction: float = 0.1, n_targets: int = 5, repeat: int = 3,
                   seed: int = 0) -> dict:  # fmt: skip
    """One round's item-row norm ratios on ML-100K; see the module docstring.

    Returns
    -------
    dict with ``percentiles`` (name -> list aligned with ``PERCENTILES``), ``clipped_share``
    (bound -> share of honest touched rows above it), ``touchers_per_item_median``, settings.
    """
    from recommender.attacks import choose_targets, promote_items
    from recommender.data import leave_one_out, load_dataset
    from recommender.local_training import LocalTrainConfig, build_schedule, train_cohort, user_rng
    from recommender.ncf import NeuMFShape, init_private, init_shared
    from strategies.row_clip import item_row_norms, row_bounds

    split = leave_one_out(load_dataset("ml-100k"), seed=seed)
    shape = NeuMFShape(split.n_items, 32)
    shared = init_shared(shape, seed)
    vec = torch.cat([shared[k].reshape(-1) for k in shape.shared_shapes()])
    cfg = LocalTrainConfig()
    targets = choose_targets(np.bincount(split.train_items, minlength=split.n_items), n_targets, seed)
    n_bad = int(round(fraction * users))
    positives = [promote_items(split.train_of(u), targets, repeat) if u < n_bad else split.train_of(u)
                 for u in range(users)]  # fmt: skip
    sched = [build_schedule(positives[u], split.seen_of(u), split.n_items, cfg, user_rng(seed, 1, u))
             for u in range(users)]  # fmt: skip
    delta, _, _ = train_cohort(vec, init_private(users, shape, seed), sched, shape, cfg)
    norms = item_row_norms(delta.dense(shape).numpy(), shape.n_items, shape.factors)
    touched = norms > 0
    med = row_bounds(norms, 1.0, min_users=1)  # factor 1: the row's median
    ratio = np.where(touched, norms / np.where(np.isfinite(med), med, 1.0)[None, :], np.nan)
    pos = np.zeros_like(touched)
    for u in range(users):
        pos[u, positives[u]] = True
    honest = np.arange(users)[:, None] >= n_bad
    target_col = np.isin(np.arange(shape.n_items), targets)[None, :]
    groups = {"honest_positive": honest & pos & touched, "honest_negative": honest & ~pos & touched,
              "promoter_target_rows": ~honest & target_col & touched}  # fmt: skip
    x = np.where(touched, norms, np.nan)
    lmed = np.nanmedian(x, axis=0)
    mad_bound = lmed + 3.0 * 1.4826 * np.nanmedian(np.abs(x - lmed), axis=0)
    h = honest & touched
    return {
        "users": users, "fraction": fraction, "n_targets": n_targets, "repeat": repeat, "seed": seed,
        "percentiles_of": list(PERCENTILES),
        "percentiles": {k: np.percentile(ratio[m], PERCENTILES).round(3).tolist() for k, m in groups.items()},
        "clipped_share": {"median+3*1.4826*MAD": float((norms > mad_bound[None, :])[h].mean()),
                          **{f"{c}x median": float((ratio > c)[h].mean()) for c in (3.0, 4.0, 5.0)}},
        "touchers_per_item_median": float(np.median(touched.sum(0))),
    }  # fmt: skip


def cmd_bench(args: argparse.Namespace) -> None:
    res = row_norm_stats(args.users, args.fraction, args.n_targets, args.repeat, args.seed)
    print(f"ratio = row-delta norm / row median, percentiles {res['percentiles_of']}")
    for k, v in res["percentiles"].items():
        print(f"  {k:22s} {v}")
    print("share of honest rows clipped: " + ", ".join(f"{k} {v:.3f}" for k, v in res["clipped_share"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


def add_bench_command(bench_subparsers) -> None:
    """Register ``fedrec bench row-norms [--users N] [--json PATH]``."""
    p = bench_subparsers.add_parser("row-norms", help="item-row delta norms vs their row's median (row clipping)")
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--n-targets", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.set_defaults(func=cmd_bench)
