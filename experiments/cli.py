"""The `fedrec` command: simulate, data, results, privacy, bench, recommend, deploy."""

from __future__ import annotations

import argparse
import logging
import sys


def _data(args: argparse.Namespace) -> None:
    from recommender.data import fetch_movielens, parse_movielens

    path = fetch_movielens(args.cache, source=args.source)
    ds = parse_movielens(path)
    print(f"ml-100k verified at {path}: {ds.n_users} users, {ds.n_items} items, {ds.n_interactions} ratings")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("simulate", help="run a federated simulation (Hydra overrides follow)", add_help=False)
    data = sub.add_parser("data", help="fetch and verify datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download MovieLens-100K into the cache")
    fetch.add_argument("dataset", choices=["ml-100k"])
    fetch.add_argument("--cache", default=None, help="cache dir (default $FEDREC_DATA or the user cache)")
    fetch.add_argument("--source", default="auto", choices=["auto", "grouplens", "recbole"])
    fetch.set_defaults(func=_data)
    from experiments import results

    results.add_command(sub)
    _optional_commands(sub)
    return parser


def _optional_commands(sub) -> None:
    """Commands whose modules may pull heavy dependencies are registered lazily by module."""
    import importlib

    for module in ("experiments.privacy_cli", "experiments.bench", "experiments.recommend", "experiments.deploy"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("experiments."):
                continue
            raise
        mod.add_commands(sub)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] == "simulate":
        from experiments.simulate import main as simulate_main

        simulate_main(argv[1:])
        return
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
