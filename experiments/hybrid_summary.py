"""Summarise several ``evaluate-recommender`` JSON results (one per seed): mean ± sd and per seed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.seed_stats import mean_sd

K = 10


def _row(r: dict) -> dict[str, float]:
    if "full" in r:
        f, s = r["full"], r["sampled"]
        return {"full_hr@10": f[f"hr@{K}"], "full_ndcg@10": f[f"ndcg@{K}"], "sampled_hr@10": s[f"hr@{K}"],
                "sampled_ndcg@10": s[f"ndcg@{K}"], "coverage@10": f[f"coverage@{K}"], "ild@10": r["ild@10"]}  # fmt: skip
    m = r["lists"]
    return {"full_hr@10": m[f"hr@{K}"], "full_ndcg@10": m[f"ndcg@{K}"], "coverage@10": m[f"coverage@{K}"],
            "ild@10": m["ild@10"]}  # fmt: skip


def summarize(results: list[dict], target_pct: float = 5.0) -> dict:
    """Mean and sample sd over seeds of every list's test metrics, plus a per-seed digest.

    Parameters
    ----------
    results : list of dict
        ``evaluate-recommender`` outputs (``recommender.evaluate_hybrid.evaluate``), one per seed.

    Returns
    -------
    dict
        ``lists``: name -> metric -> {"mean", "sd", "values"}; ``per_seed``: seed, model version,
        tuned ALS parameters, ALS and fused NDCG@10, fused vs best single (%), learned fusion
        method and weights;
        ``fused_vs_best_single_pct``: mean and sd of the per-seed margins.
    """
    names = list(results[0]["test"])
    lists: dict[str, dict] = {}
    for n in names:
        rows = [_row(r["test"][n]) for r in results]
        lists[n] = {m: dict(zip(("mean", "sd"), mean_sd(v), strict=True), values=v)
                    for m in rows[0] for v in [[float(x[m]) for x in rows]]}  # fmt: skip
    per_seed = []
    for r in results:
        t = r["test"]
        per_seed.append({"seed": r["seed"], "model_version": r["model_version"], "als_params": r["als_params"],
                         "als_ndcg@10": t["collaborative"]["full"][f"ndcg@{K}"] if "collaborative" in t else None,
                         "best_single": r["best_single"],
                         "best_single_ndcg@10": t[r["best_single"]]["full"][f"ndcg@{K}"],
                         "fused_learned_ndcg@10": t["fused_learned"]["full"][f"ndcg@{K}"],
                         "fused_vs_best_single_pct": r["fused_vs_best_single_pct"],
                         "weights_learned": r["weights_learned"],
                         "fusion_learned": {k: v for k, v in r.get("fusion_learned", {"method": "rrf"}).items()
                                            if k != "weights"}})  # fmt: skip
    margins = [p["fused_vs_best_single_pct"] for p in per_seed]
    out = {"lists": lists, "per_seed": per_seed,
           "fused_vs_best_single_pct": dict(zip(("mean", "sd"), mean_sd(margins), strict=True))}
    if all("per_user_ndcg@10" in r["test"]["fused_learned"] for r in results):
        out["fused_vs_best_single_pooled"] = pooled_gain(results, target_pct)
    return out


def pooled_gain(results: list[dict], target_pct: float = 5.0) -> dict:
    """Fused vs each seed's best single strategy over all seeds, with a bootstrap over test users.

    The seeds share one leave-one-out test split, so their test-item noise is shared: the sd over
    seeds does not show it. Resampling the test users (the same users for every seed and both
    lists, :func:`recommender.metrics.paired_bootstrap_gain`) does.

    Returns
    -------
    dict
        ``gain_pct`` (sum over seeds and users of fused NDCG@10 / the same for the best singles,
        minus 1), the 95% interval ``low_pct`` / ``high_pct``, and ``share_at_least_target``: the
        share of resamples whose gain reaches ``target_pct``.
    """
    import numpy as np

    from recommender.metrics import paired_bootstrap_gain

    fused = np.array([r["test"]["fused_learned"]["per_user_ndcg@10"] for r in results])
    best = np.array([r["test"][r["best_single"]]["per_user_ndcg@10"] for r in results])
    g = paired_bootstrap_gain(fused, best)
    boot = g.pop("boot_pct")
    return {**g, "target_pct": target_pct, "share_at_least_target": float((boot >= target_pct).mean())}


def cmd_summarize(args: argparse.Namespace) -> int:
    """``fedrec summarize-recommender EVAL.json ... [--json PATH]``."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 200)
    res = summarize([json.loads(Path(p).read_text()) for p in args.results])
    cols = ("full_hr@10", "full_ndcg@10", "sampled_hr@10", "sampled_ndcg@10", "coverage@10", "ild@10")
    t = Table(title=f"Test metrics, mean ± sd over {len(args.results)} seeds")
    t.add_column("list")
    for c in cols:
        t.add_column(c, justify="right")
    for n, m in res["lists"].items():
        t.add_row(n, *(f"{m[c]['mean']:.4f} ± {m[c]['sd']:.4f}" if c in m else "-" for c in cols))
    console.print(t)
    p = Table(title="Per seed")
    for c in ("seed", "model", "tuned ALS", "ALS NDCG@10", "fused learned", "vs best single", "learned fusion",
              "learned weights"):
        p.add_column(c)
    for s in res["per_seed"]:
        als = s["als_params"] or {}
        p.add_row(str(s["seed"]), f"v{s['model_version']}",
                  ", ".join(f"{k}={als[k]}" for k in ("weighting", "factors", "regularization", "alpha") if k in als),
                  f"{s['als_ndcg@10']:.4f}" if s["als_ndcg@10"] is not None else "-",
                  f"{s['fused_learned_ndcg@10']:.4f}", f"{s['fused_vs_best_single_pct']:+.1f}% ({s['best_single']})",
                  " ".join(f"{k}={v}" for k, v in s["fusion_learned"].items()),
                  " ".join(f"{k} {v:.2f}" for k, v in s["weights_learned"].items()))  # fmt: skip
    console.print(p)
    mg = res["fused_vs_best_single_pct"]
    console.print(f"fused (learned) vs best single strategy: {mg['mean']:+.1f}% ± {mg['sd']:.1f} NDCG@10 "
                  "(mean ± sd of the per-seed margins)")
    if "fused_vs_best_single_pooled" in res:
        pg = res["fused_vs_best_single_pooled"]
        console.print(f"pooled over seeds: {pg['gain_pct']:+.1f}%, 95% bootstrap interval over test users "
                      f"[{pg['low_pct']:+.1f}%, {pg['high_pct']:+.1f}%]; {100 * pg['share_at_least_target']:.0f}% "
                      f"of resamples reach {pg['target_pct']:+.0f}%")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
        console.print(f"wrote {args.json}")
    return 0


def add_command(subparsers) -> None:
    """Register ``fedrec summarize-recommender``."""
    p = subparsers.add_parser("summarize-recommender",
                              help="mean ± sd over seeds of evaluate-recommender JSON results")  # fmt: skip
    p.add_argument("results", nargs="+", help="evaluate-recommender --json outputs, one per seed")
    p.add_argument("--json", default=None, help="write the summary as JSON")
    p.set_defaults(func=cmd_summarize)
