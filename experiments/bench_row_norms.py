"""`fedrec bench row-norms`: how honest and promoted item-row deltas compare with their row's median.

Trains one round (from the initial model, or from a finished run's last checkpoint and private
embeddings with ``--run DIR``) of ``--users`` ML-100K users with the default local
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


def _load_run(run: Path, users: int, shape) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Global vector, private embeddings of users 0..users-1 and round number of a finished run."""
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    emb = torch.zeros(users, shape.private_dim)
    for node in sorted((run / "node_state").iterdir()):
        last = sorted(node.glob("private.r*.npz"))[-1]
        z = np.load(last)
        keep = z["users"] < users
        emb[torch.from_numpy(z["users"][keep])] = torch.from_numpy(z["emb"][keep]).float()
    return torch.as_tensor(np.asarray(ck["theta"]), dtype=torch.float32), emb, int(ck["round"]) + 1


def row_norm_stats(users: int = 400, fraction: float = 0.1, n_targets: int = 5, repeat: int = 3,
                   seed: int = 0, run: str | None = None) -> dict:  # fmt: skip
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
    from strategies.row_clip import item_row_norms, row_bounds, user_row_quantile

    split = leave_one_out(load_dataset("ml-100k"), seed=seed)
    shape = NeuMFShape(split.n_items, 32)
    if run is None:
        shared = init_shared(shape, seed)
        vec, private, rnd = torch.cat([shared[k].reshape(-1) for k in shape.shared_shapes()]), None, 1
    else:
        vec, private, rnd = _load_run(Path(run), users, shape)
    cfg = LocalTrainConfig()
    targets = choose_targets(np.bincount(split.train_items, minlength=split.n_items), n_targets, seed)
    n_bad = int(round(fraction * users))
    positives = [promote_items(split.train_of(u), targets, repeat) if u < n_bad else split.train_of(u)
                 for u in range(users)]  # fmt: skip
    sched = [build_schedule(positives[u], split.seen_of(u), split.n_items, cfg, user_rng(seed, rnd, u))
             for u in range(users)]  # fmt: skip
    private = init_private(users, shape, seed) if private is None else private
    delta, _, _ = train_cohort(vec, private, sched, shape, cfg)
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
    own = user_row_quantile(norms, 90.0)
    ratio_own = np.where(touched, norms / np.where(own > 0, own, 1.0)[:, None], np.nan)
    x = np.where(touched, norms, np.nan)
    lmed = np.nanmedian(x, axis=0)
    mad_bound = lmed + 3.0 * 1.4826 * np.nanmedian(np.abs(x - lmed), axis=0)
    h = honest & touched
    return {
        "run": run, "round": rnd, "users": users, "fraction": fraction, "n_targets": n_targets, "repeat": repeat, "seed": seed,
        "percentiles_of": list(PERCENTILES),
        "percentiles": {k: np.percentile(ratio[m], PERCENTILES).round(3).tolist() for k, m in groups.items()},
        "percentiles_own_q90": {k: np.percentile(ratio_own[m], PERCENTILES).round(3).tolist()
                                for k, m in groups.items()},  # fmt: skip
        "clipped_share": {"median+3*1.4826*MAD": float((norms > mad_bound[None, :])[h].mean()),
                          **{f"{c}x median": float((ratio > c)[h].mean()) for c in (3.0, 4.0, 5.0, 8.0, 10.0, 15.0, 20.0)},
                          **{f"{c}x own q90": float((ratio_own > c)[h].mean()) for c in (2.0, 3.0, 4.0, 5.0)}},
        "touchers_per_item_median": float(np.median(touched.sum(0))),
    }  # fmt: skip


def cmd_bench(args: argparse.Namespace) -> None:
    res = row_norm_stats(args.users, args.fraction, args.n_targets, args.repeat, args.seed, args.run)
    print(f"ratio = row-delta norm / row median, percentiles {res['percentiles_of']}")
    for k, v in res["percentiles"].items():
        print(f"  {k:22s} {v}")
    print("ratio = row-delta norm / the user's own 90th-percentile row norm")
    for k, v in res["percentiles_own_q90"].items():
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
    p.add_argument("--run", default=None, help="start from this finished run's last checkpoint (default: init)")
    p.add_argument("--json", default=None)
    p.set_defaults(func=cmd_bench)
