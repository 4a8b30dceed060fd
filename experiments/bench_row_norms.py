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
                   seed: int = 0, run: str | None = None, lam: float = 10.0) -> dict:  # fmt: skip
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
        "item_outlier_share": item_outlier_share(ratio_own, touched, honest[:, 0], target_col[0], lam),
    }  # fmt: skip


def item_outlier_share(ratio_own: np.ndarray, touched: np.ndarray, honest: np.ndarray, targets: np.ndarray,
                       lam: float, factor: float = 3.0, min_touchers: int = 5) -> dict:  # fmt: skip
    """How concentrated the rows above ``factor`` x their user's own q90 are, item by item.

    Honest outlying rows scattered over many items look different from a promotion, whose
    promoters' boosted (x ``lam``) target rows all sit on the same few items.

    Parameters
    ----------
    ratio_own : np.ndarray, shape (U, I)
        Row-delta norm / the user's own 90th-percentile row norm (nan where untouched), before any boost.
    touched : np.ndarray[bool], shape (U, I)
    honest : np.ndarray[bool], shape (U,)
    targets : np.ndarray[bool], shape (I,)
    lam : float
        Boost of the promoters' target rows (``attack=targeted_promotion``'s ``lam``).

    Returns
    -------
    dict: ``honest_items`` percentiles (``PERCENTILES``) and max of the share of an item's touchers
    that are above the bound (honest users only, items with >= ``min_touchers``), its ``max_count``,
    and ``target_items`` (share with the promoters boosted, one per target).
    """
    boosted = np.where(~honest[:, None] & targets[None, :], lam * ratio_own, ratio_own)
    over = np.nan_to_num(boosted, nan=0.0) > factor
    h_over, h_touch = over[honest].sum(0), touched[honest].sum(0)
    ok = (h_touch >= min_touchers) & ~targets
    share = h_over[ok] / h_touch[ok]
    return {"factor": factor, "lam": lam, "percentiles_of": list(PERCENTILES),
            "honest_items": np.percentile(share, PERCENTILES).round(4).tolist(), "honest_max": float(share.max()),
            "honest_max_count": int(h_over[ok].max()),
            "target_items": (over[:, targets].sum(0) / np.maximum(touched[:, targets].sum(0), 1)).round(4).tolist()}  # fmt: skip


def cmd_bench(args: argparse.Namespace) -> None:
    res = row_norm_stats(args.users, args.fraction, args.n_targets, args.repeat, args.seed, args.run, args.lam)
    print(f"ratio = row-delta norm / row median, percentiles {res['percentiles_of']}")
    for k, v in res["percentiles"].items():
        print(f"  {k:22s} {v}")
    print("ratio = row-delta norm / the user's own 90th-percentile row norm")
    for k, v in res["percentiles_own_q90"].items():
        print(f"  {k:22s} {v}")
    print("share of honest rows clipped: " + ", ".join(f"{k} {v:.3f}" for k, v in res["clipped_share"].items()))
    io = res["item_outlier_share"]
    print(f"share of an item's touchers above {io['factor']:g}x own q90, honest items {io['honest_items']} "
          f"(max {io['honest_max']:.4f}, {io['honest_max_count']} users); target items (x{io['lam']:g}) {io['target_items']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


def add_bench_command(bench_subparsers) -> None:
    """Register ``fedrec bench row-norms [--users N] [--json PATH]``."""
    p = bench_subparsers.add_parser("row-norms", help="item-row delta norms vs their row's median (row clipping)")
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--n-targets", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--lam", type=float, default=10.0, help="boost of the promoters' target rows (item-share report)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", default=None, help="start from this finished run's last checkpoint (default: init)")
    p.add_argument("--json", default=None)
    p.set_defaults(func=cmd_bench)
