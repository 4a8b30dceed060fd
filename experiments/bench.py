"""`fedrec bench <name>`: benchmarks, one sub-command per benchmark module.

Each module in ``BENCH_MODULES`` that exists contributes its sub-command through
``add_bench_command(bench_subparsers)``; a missing module is skipped, so benchmarks can land
independently.
"""

from __future__ import annotations

import importlib

BENCH_MODULES = ("experiments.bench_secagg", "experiments.bench_simulate", "experiments.bench_recommender",
                 "experiments.bench_row_norms")


def add_commands(subparsers) -> None:
    """Register ``fedrec bench`` and the sub-commands of every benchmark module present."""
    bench = subparsers.add_parser("bench", help="benchmarks (ratios against baselines measured in the same run)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    for name in BENCH_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        mod.add_bench_command(bench_sub)
