"""Benchmark: per-request latency of the in-process hybrid pipeline, and its growth with the catalogue.

Models are loaded and embeddings precomputed before timing; each timed request runs every strategy,
RRF, trust, MMR and explanations. Ratios are against the single-strategy popularity request
measured in the same run (scoring + top-k over the same catalogue).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "n": len(a)}  # fmt: skip


def _time(fn, reqs, warmup: int = 5) -> dict[str, float]:
    """Wall-clock percentiles of ``fn`` per request, plus the same of its CPU time (``cpu_*``).

    On a shared, loaded machine wall time includes waiting for a core; the process CPU time of a
    one-thread request is the work itself, so both are reported.
    """
    for r in reqs[:warmup]:
        fn(r)
    wall, cpu = [], []
    for r in reqs:
        c, t = time.process_time(), time.perf_counter()
        fn(r)
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return {**_percentiles(wall), **{f"cpu_{k}": v for k, v in _percentiles(cpu).items() if k != "n"}}


def _popularity_request(rec, k: int = 10):
    def run(req):
        s = rec.context.score_popularity().copy()
        s[req.items] = -np.inf
        return np.argpartition(-s, k)[:k]

    return run


def bench_pipeline(rec, n_requests: int = 300, k: int = 10, seed: int = 0, progress=None) -> dict:
    """Latency of known-user requests, history requests (live fold-in) and the popularity baseline."""
    rng = np.random.default_rng(seed)
    users = rng.choice(rec.ds.raw_user_ids, n_requests)
    known = [rec.request_for_user(int(u)) for u in users]
    hist = []
    for u in users[: max(20, n_requests // 5)]:
        r = rec.request_for_user(int(u))
        hist.append(rec.request_for_history(rec.ds.raw_item_ids[r.items[-30:]].tolist()))
    base = _time(_popularity_request(rec, k), known)
    out = {"baseline_popularity": base}
    out["hybrid_known_user"] = _time(lambda r: rec.recommend(r, k), known)
    out["hybrid_history_request"] = _time(lambda r: rec.recommend(r, k), hist, warmup=2)
    for key in ("hybrid_known_user", "hybrid_history_request"):
        out[key]["p99_vs_baseline_p99"] = out[key]["p99_ms"] / max(base["p99_ms"], 1e-9)
        out[key]["cpu_p99_vs_baseline_cpu_p99"] = out[key]["cpu_p99_ms"] / max(base["cpu_p99_ms"], 1e-9)
    return out


def synthetic_catalogue_recommender(rec, n_items: int, seed: int = 0):
    """A copy of ``rec`` whose catalogue is tiled to ``n_items`` items (synthetic scale-up).

    Item factors, content vectors, GNN and NeuMF item embeddings, metadata and trust are tiled with
    small noise, so every strategy scores ``n_items`` items with the same per-item cost as real data.
    """
    import copy

    import torch

    from recommender.ncf import NeuMFShape, flatten_shared, unflatten_shared

    rng = np.random.default_rng(seed)
    i0 = rec.catalog.n_items
    reps = int(np.ceil(n_items / i0))

    def tile(a):
        t = np.concatenate([a] * reps, 0)[:n_items].astype(np.float32)
        return t + rng.normal(0, 1e-3, t.shape).astype(np.float32)

    new = copy.copy(rec)
    new.catalog = copy.copy(rec.catalog)
    cat = new.catalog
    cat.raw_item_ids = np.arange(1, n_items + 1)
    cat.titles = (rec.catalog.titles * reps)[:n_items]
    cat.years = np.tile(rec.catalog.years, reps)[:n_items]
    cat.genres = np.tile(rec.catalog.genres, (reps, 1))[:n_items]
    new.trust = np.tile(rec.trust, reps)[:n_items]
    st = dict(rec.strategies)
    if "collaborative" in st:
        a = copy.copy(st["collaborative"])
        a.item_factors = tile(a.item_factors)
        if a.bm25_idf is not None:
            a.bm25_idf = np.tile(a.bm25_idf, reps)[:n_items]
        a._solver = None  # the fold-in solver holds the item factors it was built with
        st["collaborative"] = a
    if "gnn" in st:
        g = copy.copy(st["gnn"])
        g.item_emb = tile(g.item_emb)
        st["gnn"] = g
    if "neumf" in st:
        n = copy.copy(st["neumf"])
        sh = {k: v.clone() for k, v in n.shared.items()}
        sh["gmf_item"] = torch.as_tensor(tile(sh["gmf_item"].numpy()))
        sh["mlp_item"] = torch.as_tensor(tile(sh["mlp_item"].numpy()))
        n.shape = NeuMFShape(n_items, n.shape.factors)
        n.shared_vec = flatten_shared(sh)
        n.shared = unflatten_shared(n.shared_vec, n.shape)
        n._items = torch.arange(n_items)
        n._item_pre = None
        st["neumf"] = n
    c = copy.copy(st["content"])
    c.item_vectors = tile(c.item_vectors)
    c.genre_norm = np.tile(c.genre_norm, (reps, 1))[:n_items]
    st["content"] = c
    x = copy.copy(st["context"])
    x.n_items = n_items
    x.popularity = np.tile(x.popularity, reps)[:n_items]
    st["context"] = x
    new.strategies, new.content, new.context = st, c, x
    return new


def run_benchmark(run_dir: str, n_requests: int = 300, scale_items: tuple[int, ...] = (1682, 10_000, 50_000),
                  seed: int = 0, config: str = "default") -> dict:  # fmt: skip
    import torch

    from experiments.recommend import _load_data
    from recommender.hybrid import HybridRecommender, load_config

    torch.set_num_threads(1)  # one request = one core, as a serving worker would run
    cfg = load_config(config, [f"seed={seed}"])
    ds, split = _load_data(run_dir)
    t = time.perf_counter()
    rec = HybridRecommender.build(run_dir, ds, split, cfg)
    load_s = time.perf_counter() - t
    res = {"load_seconds": load_s, "ml100k": bench_pipeline(rec, n_requests, seed=seed), "scaling": {}}
    base_p99 = base_cpu = None
    for n in scale_items:
        r2 = rec if n == rec.catalog.n_items else synthetic_catalogue_recommender(rec, n, seed)
        b = bench_pipeline(r2, max(50, n_requests // 3), seed=seed)
        h = b["hybrid_known_user"]
        row = {"items": n, "hybrid_p99_ms": h["p99_ms"], "hybrid_p50_ms": h["p50_ms"],
               "hybrid_cpu_p50_ms": h["cpu_p50_ms"], "hybrid_cpu_p99_ms": h["cpu_p99_ms"],
               "baseline_p99_ms": b["baseline_popularity"]["p99_ms"]}  # fmt: skip
        base_p99 = base_p99 or row["hybrid_p99_ms"]
        base_cpu = base_cpu or row["hybrid_cpu_p99_ms"]
        row["p99_vs_ml100k_p99"] = row["hybrid_p99_ms"] / base_p99
        row["cpu_p99_vs_ml100k_cpu_p99"] = row["hybrid_cpu_p99_ms"] / base_cpu
        res["scaling"][str(n)] = row
    return res


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 160)
    with console.status("benchmarking the hybrid recommender"):
        res = run_benchmark(args.run_dir, args.requests, seed=args.seed)
    t = Table(title="Hybrid pipeline latency per request (in-process, 1 thread)")
    for c in ("request", "p50 ms", "p95 ms", "p99 ms", "p99 / popularity p99", "CPU p50 ms", "CPU p95 ms",
              "CPU p99 ms"):  # fmt: skip
        t.add_column(c, justify="right" if c != "request" else "left")
    b = res["ml100k"]
    for name, r in b.items():
        t.add_row(name, f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}", f"{r['p99_ms']:.2f}",
                  f"{r.get('p99_vs_baseline_p99', 1.0):.1f}x", f"{r['cpu_p50_ms']:.2f}", f"{r['cpu_p95_ms']:.2f}",
                  f"{r['cpu_p99_ms']:.2f}")  # fmt: skip
    console.print(t)
    s = Table(title="p99 vs catalogue size (synthetic tiling of ML-100K)")
    for c in ("items", "hybrid p50 ms", "hybrid p99 ms", "p99 / ML-100K p99", "CPU p50 ms", "CPU p99 ms",
              "CPU p99 / ML-100K", "popularity p99 ms"):  # fmt: skip
        s.add_column(c, justify="right")
    for row in res["scaling"].values():
        s.add_row(str(row["items"]), f"{row['hybrid_p50_ms']:.2f}", f"{row['hybrid_p99_ms']:.2f}",
                  f"{row['p99_vs_ml100k_p99']:.2f}x", f"{row['hybrid_cpu_p50_ms']:.2f}",
                  f"{row['hybrid_cpu_p99_ms']:.2f}", f"{row['cpu_p99_vs_ml100k_cpu_p99']:.2f}x",
                  f"{row['baseline_p99_ms']:.3f}")  # fmt: skip
    console.print(s)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return 0


def add_bench_command(bench_subparsers) -> None:
    """Register ``fedrec bench recommender RUN_DIR [--json PATH]``."""
    p = bench_subparsers.add_parser("recommender", help="per-request latency of the hybrid recommender")
    p.add_argument("run_dir")
    p.add_argument("--json", default=None)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bench)
