"""Validation NDCG@10 and request cost of NeuMF fold-in settings (phase 1: train split, validation item).

For choosing ``recommender.neumf`` without a full ``evaluate-recommender``: every known user is
folded in from the train split with each setting (the shared model frozen, as served), every user's
validation item is ranked against the whole catalogue minus the train history, and the CPU time of
one history request (fold-in + scoring of a user's train history) is timed on a sample of users.
The test item is never read.

Usage::

    python -m experiments.foldin_validation runs/ml100k_seed0 --seed 0 \\
        --try epochs=10,private_lr=8.0 --try batch_size=1000,private_lr=64.0,epochs=5 --json PATH
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np


def _parse_setting(text: str) -> dict[str, object]:
    """``"epochs=10,optimizer=adam"`` -> ``{"epochs": 10, "optimizer": "adam"}`` (typed by the config)."""
    from recommender.neumf_strategy import FoldInConfig

    types = {f.name: f.type for f in dataclasses.fields(FoldInConfig)}
    out: dict[str, object] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in types:
            raise SystemExit(f"--try {text!r}: {key!r} is not a recommender.neumf key ({', '.join(types)})")
        out[key] = value if types[key] in ("str", str) else (int(value) if types[key] in ("int", int) else float(value))
    return out


def validate_foldin(run_dir: str, settings: list[dict[str, object]], seed: int = 0,
                    requests: int = 150, version: int | None = None) -> list[dict]:  # fmt: skip
    """Fold-in quality and cost for each setting (``{}`` = the defaults).

    ``version`` picks a model version of the run's registry (default: the one ``LATEST`` names),
    e.g. to see whether more federated rounds make a better fold-in.

    Returns
    -------
    list of dict
        Per setting: ``setting``, validation ``ndcg@10``, ``precompute_cpu_seconds`` (all users) and
        ``request_cpu_ms_p50`` / ``_p99`` (one history request on one torch thread).
    """
    import torch

    from experiments.recommend import _load_data
    from recommender.evaluate_hybrid import history_exclude
    from recommender.metrics import full_ndcg
    from recommender.model_store import load_version
    from recommender.neumf_strategy import FoldInConfig, NeuMFStrategy

    torch.set_num_threads(1)  # one request = one core, as in `fedrec bench recommender`
    _, split = _load_data(run_dir)
    model = load_version(run_dir, version)
    exclude = history_exclude(split)
    sample = np.random.default_rng(0).choice(split.n_users, min(requests, split.n_users), replace=False)
    out = []
    for setting in settings:
        st = NeuMFStrategy(model.shared, model.shape, FoldInConfig(**setting), seed=seed)
        t0 = time.process_time()
        st.precompute_users(split)
        precompute = time.process_time() - t0
        scores = st.score_users(np.arange(split.n_users))
        ndcg = full_ndcg(scores, split.val_item, exclude, 10, seed)
        ms = []
        for u in sample:
            t0 = time.process_time()
            st.score_history(split.train_of(int(u)))
            ms.append(1e3 * (time.process_time() - t0))
        out.append({"setting": setting, "ndcg@10": ndcg, "precompute_cpu_seconds": precompute,
                    "request_cpu_ms_p50": float(np.percentile(ms, 50)),
                    "request_cpu_ms_p99": float(np.percentile(ms, 99))})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: print each setting's validation NDCG@10 and request cost, and write them as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--try", dest="settings", action="append", default=[], metavar="KEY=V[,KEY=V]",
                   help="a fold-in setting to compare with the defaults (repeatable)")  # fmt: skip
    p.add_argument("--version", type=int, default=None, help="model version (default: LATEST)")
    p.add_argument("--json", required=True, help="write the result here")
    args = p.parse_args(argv)
    rows = validate_foldin(args.run_dir, [{}] + [_parse_setting(s) for s in args.settings], args.seed,
                           version=args.version)  # fmt: skip
    for r in rows:
        label = ",".join(f"{k}={v}" for k, v in r["setting"].items()) or "(defaults)"
        print(f"{label}: validation NDCG@10 {r['ndcg@10']:.4f}, precompute {r['precompute_cpu_seconds']:.1f} s CPU, "
              f"request CPU p50 {r['request_cpu_ms_p50']:.1f} ms p99 {r['request_cpu_ms_p99']:.1f} ms")  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"run_dir": args.run_dir, "seed": args.seed, "version": args.version,
                                           "rows": rows}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
