"""CLI commands of the central hybrid recommender: ``recommend`` and ``evaluate-recommender``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from recommender.data import DataError, leave_one_out, load_dataset
from recommender.model_store import RegistryError, load_version

log = logging.getLogger(__name__)


def _load_data(run_dir: str, seed: int = 0):
    try:
        meta = load_version(run_dir).meta
    except RegistryError as exc:
        raise SystemExit(f"error: {exc}") from exc
    name = (meta.get("data") or {}).get("name", "ml-100k")
    ds = load_dataset(name, seed=seed)
    return ds, leave_one_out(ds)


def _config(args):
    from recommender.hybrid import load_config

    return load_config(args.config, list(args.set or []) + ([f"seed={args.seed}"] if args.seed is not None else []))


def cmd_recommend(args: argparse.Namespace) -> int:
    """``fedrec recommend RUN_DIR --user 196 -k 10`` or ``--history 50,172,181``."""
    from rich.console import Console
    from rich.table import Table

    from recommender.hybrid import HybridRecommender

    console = Console(width=None if Console().is_terminal else 180)
    cfg = _config(args)
    ds, split = _load_data(args.run_dir)
    with console.status("loading the hybrid recommender (first run builds and caches its artefacts)") as st:
        rec = HybridRecommender.build(args.run_dir, ds, split, cfg, progress=lambda m: st.update(f"building: {m}"))
    if args.history is not None:
        raw = [int(x) for x in args.history.split(",") if x.strip()]
        try:
            req = rec.request_for_history(raw, device=args.device)
        except DataError as exc:
            raise SystemExit(f"error: {exc}") from exc
        who = f"history {raw}"
    else:
        req = rec.request_for_user(args.user, device=args.device)
        who = f"user {args.user}" + (" (unknown: cold start)" if req.unknown_user is not None else "")
    recs = rec.recommend(req, k=args.k, use_mmr=not args.no_mmr)
    table = Table(title=f"Top {args.k} for {who} - model v{rec.model.version}", show_lines=False)
    for col, kw in (("#", {"justify": "right"}), ("title", {}), ("year", {}), ("genres", {}),
                    ("relevance", {"justify": "right"}), ("trust", {"justify": "right"}),
                    ("explanation", {}), ("ranks (col/nmf/cnt/gnn/ctx)", {})):  # fmt: skip
        table.add_column(col, **kw)
    abbrev = (("collaborative", "col"), ("neumf", "nmf"), ("content", "cnt"), ("gnn", "gnn"), ("context", "ctx"))
    for n, r in enumerate(recs, 1):
        ranks = "/".join(str(r.ranks.get(s, 0) or "-") for s, _ in abbrev)
        table.add_row(str(n), r.title, str(r.year or ""), ", ".join(r.genres), f"{r.relevance:.4f}",
                      f"{r.trust:.2f}", r.explanation, ranks)  # fmt: skip
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in recs], indent=1, default=float))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``fedrec evaluate-recommender RUN_DIR [--test-run RUN_DIR2] [--early-run RUN_DIR0] [--json PATH] [--seed N]``."""
    from rich.console import Console
    from rich.table import Table

    from recommender.evaluate_hybrid import evaluate
    from recommender.hybrid import RecommenderError

    console = Console(width=None if Console().is_terminal else 160)
    cfg = _config(args)
    ds, split = _load_data(args.run_dir)
    with console.status("evaluating") as st:
        try:
            res = evaluate(args.run_dir, ds, split, cfg, progress=lambda m: st.update(m), test_run_dir=args.test_run,
                           early_run_dir=args.early_run)  # fmt: skip
        except RecommenderError as exc:
            raise SystemExit(f"error: {exc}") from exc
    t = Table(title=f"Leave-one-out test, model v{res['model_version']}, seed {res['seed']}")
    for c in ("list", "full HR@10", "full NDCG@10", "sampled HR@10", "sampled NDCG@10", "coverage@10", "ILD@10"):
        t.add_column(c, justify="right" if c != "list" else "left")
    for name, r in res["test"].items():
        if "full" in r:
            f, s = r["full"], r["sampled"]
            t.add_row(name, f"{f['hr@10']:.4f}", f"{f['ndcg@10']:.4f}", f"{s['hr@10']:.4f}", f"{s['ndcg@10']:.4f}",
                      f"{f['coverage@10']:.3f}", f"{r['ild@10']:.3f}")  # fmt: skip
        else:
            m = r["lists"]
            t.add_row(name, f"{m['hr@10']:.4f}", f"{m['ndcg@10']:.4f}", "-", "-", f"{m['coverage@10']:.3f}",
                      f"{m['ild@10']:.3f}")  # fmt: skip
    console.print(t)
    fl = res["fusion_learned"]
    console.print(f"weights default {res['weights_default']} ({res['fusion_default']['method']})")
    for c in res["fusion_search"]:
        console.print(f"  candidate {c['method']} k={c['rrf_k']}: validation NDCG@10 {c['val_ndcg@10']:.4f}, "
                      f"search objective ({res['fusion_objective']}) {c['val_objective']:.4f}, "
                      f"from the {c['start']} start")  # fmt: skip
    console.print(f"learned on validation: {fl['method']} (k={fl['rrf_k']}) weights "
                  f"{ {k: round(v, 3) for k, v in fl['weights'].items()} }")  # fmt: skip
    ci = res["fused_vs_best_single_ci"]
    console.print(f"best single strategy: {res['best_single']}; fused (learned) vs best single: "
                  f"{res['fused_vs_best_single_pct']:+.1f}% NDCG@10, 95% bootstrap interval over test users "
                  f"[{ci['low_pct']:+.1f}%, {ci['high_pct']:+.1f}%]")  # fmt: skip
    wpath = Path(args.run_dir) / "recommender" / "weights.json"
    wpath.parent.mkdir(parents=True, exist_ok=True)
    wpath.write_text(json.dumps(res["fusion_learned"], indent=1))
    out = Path(args.json or Path(args.run_dir) / "recommender" / f"evaluation-seed{res['seed']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    console.print(f"wrote {out}")
    return 0


def cmd_reference_run(args: argparse.Namespace) -> int:
    """``fedrec recommender-reference-run RUN_DIR``: a centrally trained NeuMF stand-in (development)."""
    from recommender.neumf_strategy import make_reference_run

    ds = load_dataset(args.data)
    make_reference_run(args.run_dir, leave_one_out(ds), args.data, epochs=args.epochs, seed=args.seed or 0)
    print(f"wrote {args.run_dir}/models/LATEST")  # CLI output, not library code
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run directory with models/LATEST")
    p.add_argument("--config", default="default", help="configs/recommender/<name>.yaml or a path")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. gnn.steps=50")
    p.add_argument("--seed", type=int, default=None)


def add_commands(subparsers) -> None:
    """Register ``recommend``, ``evaluate-recommender``, ``recommender-reference-run``, ``summarize-recommender``."""
    p = subparsers.add_parser("recommend", help="recommend for a user id or a watch history")
    _common(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, help="raw MovieLens user id")
    who.add_argument("--history", help="comma-separated raw item ids, most recent last")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--device", default=None, help="request context: device (recorded, not scored)")
    p.add_argument("--no-mmr", action="store_true", help="skip MMR re-ranking")
    p.add_argument("--json", default=None, help="also write the list as JSON")
    p.set_defaults(func=cmd_recommend)

    p = subparsers.add_parser("evaluate-recommender", help="evaluate strategies and fusion on leave-one-out")
    _common(p)
    p.add_argument("--json", default=None, help="output JSON (default RUN_DIR/recommender/evaluation-seedN.json)")
    p.add_argument("--test-run", default=None, metavar="RUN_DIR2",
                   help="federated run of the same config with data.fit_on=trainval, used for the test phase")  # fmt: skip
    p.add_argument("--early-run", default=None, metavar="RUN_DIR0",
                   help="federated run of the same config with data.fit_on=train_minus_last: the fusion weights are "
                        "also learned on each user's last train interaction")  # fmt: skip
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("recommender-reference-run",
                              help="write a centrally trained NeuMF as a run (development stand-in)")  # fmt: skip
    p.add_argument("run_dir")
    p.add_argument("--data", default="ml-100k")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_reference_run)

    from experiments.hybrid_summary import add_command

    add_command(subparsers)


def main(argv: list[str] | None = None) -> int:
    """A local harness until the commands are wired into ``fedrec``: ``python -m experiments.recommend``."""
    parser = argparse.ArgumentParser(prog="fedrec")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    bench = sub.add_parser("bench").add_subparsers(dest="bench", required=True)
    from experiments.bench_recommender import add_bench_command

    add_bench_command(bench)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
