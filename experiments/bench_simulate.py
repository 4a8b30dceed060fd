"""`fedrec bench simulate`: fedrec cohorts vs stock Flower (one SuperNode per user) on workload W1.

W1: NeuMF f=32, 1,682 items, 100 training positives per user with 4 negatives each, 1 local epoch,
batch 32, SGD lr 0.05, FedAvg. Every measurement runs in its own process (so its peak RSS, summed
over the process tree including the simulation engine's workers, is its own), the two frameworks
alternate within one invocation, and results are reported as ratios measured in the same run.
With ``--sa-dp`` every cell also runs fedrec with secure aggregation and distributed DP on (Poisson
sampling at rate users_per_round / population, so the expected cohort is the same), alternating
with the run that has both off, and reports the ratio of their seconds per round next to the
floor of that ratio: (off + the per-round floor of ``experiments.sadp_floor``, from rates measured
on this machine before and after the cell's runs, for the same users per round, d, neighbours and
nodes) / off.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median
from typing import Any

W1_OVERRIDES = [
    "data=synthetic", "data.items=1682", "data.exact_interactions=102", "model.factors=32",
    "client.epochs=1", "client.batch_size=32", "client.negatives=4", "client.lr=0.05",
    "client.private_lr=0.05", "client.optimizer=sgd", "strategy=fedavg", "strategy.server_lr=1.0",
    "strategy.server_optimizer=sgd", "strategy.item_aggregation=mean", "simulation.eval_every=0",
]  # fmt: skip
DEFAULT_GRID = ((1000, 100), (1000, 1000), (10000, 1000))
MODES = ("fedrec", "stock", "sa_dp")
# Stock Flower's per-round cost measured here grows ~linearly with users per round (about 45 ms per
# user per round on this 2-core machine); a run predicted above the limit is skipped and said so.
STOCK_SECONDS_PER_USER = 0.045


def sa_dp_overrides(population: int, per_round: int) -> list[str]:
    """Secure aggregation + distributed DP on the same workload: Poisson rate = per_round / population."""
    return ["secure_agg=on", "privacy=distributed", f"privacy.sample_rate={min(1.0, per_round / population):g}"]


def _sa_dp_d(population: int, per_round: int, extra: list[str]) -> tuple[int, int]:
    """(d + 1 masked coordinates, requested neighbours k) of the SA + DP cell's config."""
    from configs.store import compose_config
    from recommender.ncf import NeuMFShape

    cfg = compose_config([*W1_OVERRIDES, f"data.users={population}", *extra, *sa_dp_overrides(population, per_round)])
    return NeuMFShape(cfg.data.items, cfg.model.factors).shared_dim + 1, cfg.secure_agg.neighbours


def sa_dp_rates(population: int, per_round: int, extra: list[str]):
    """Measure the floor's primitive rates now (``experiments.sadp_floor``), for the cell's d."""
    from experiments.sadp_floor import measure_pipeline_rates

    return measure_pipeline_rates(2.0, _sa_dp_d(population, per_round, extra)[0])


def sa_dp_floor(population: int, per_round: int, nodes: int, extra: list[str], rates: list) -> dict[str, Any]:
    """The per-round floor of the SA + DP cell from the fastest of the rates measured around its runs
    (``secure_agg.floor.fastest_rates``)."""
    from experiments.sadp_floor import PipelineRates, sadp_floor
    from secure_agg.floor import fastest_rates

    d, k = _sa_dp_d(population, per_round, extra)
    best = PipelineRates(**fastest_rates([r.as_dict() for r in rates]))
    floor = sadp_floor(per_round, d, k, nodes, best, os.cpu_count() or 1)
    return {"rates": best.as_dict(), "rate_samples": [r.as_dict() for r in rates], **floor}


def sa_dp_cpu(population: int, per_round: int, rounds: int, nodes: int, extra: list[str]) -> dict[str, Any]:
    """CPU seconds per round (median of rounds 2+) of the cell with both off and with SA + DP on.

    The real round loop and ClientApp in this process (``experiments.inprocess``: no Ray, nodes
    run one after the other), timed with ``time.process_time``, so other jobs on a shared machine
    count far less than in wall time; comparable with the floor's CPU seconds.
    """
    from statistics import median as med

    from experiments import inprocess

    out: dict[str, Any] = {"clock": "process_time", "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="fedrec_bench_sadp_") as tmp:
        for mode in ("off", "sa_dp"):
            ov = [*W1_OVERRIDES, f"data.users={population}", f"simulation.users_per_round={per_round}",
                  f"simulation.rounds={rounds}", f"runs_dir={tmp}", f"name={mode}", "overwrite=true", *extra,
                  *(sa_dp_overrides(population, per_round) if mode == "sa_dp" else [])]  # fmt: skip
            cpu = inprocess.run_rounds_inprocess(ov, nodes)["cpu_seconds"]
            out[mode] = {"cpu_seconds": cpu, "median_cpu_seconds": med(cpu[1:] or cpu)}
    out["ratio"] = out["sa_dp"]["median_cpu_seconds"] / out["off"]["median_cpu_seconds"]
    return out


def _worker(args: argparse.Namespace) -> None:
    """Run one measurement in this process and write its JSON (called by the orchestrator)."""
    from configs.schema import to_yaml
    from configs.store import compose_config

    if args.population:  # W1 on a synthetic population
        overrides = [*W1_OVERRIDES, f"data.users={args.population}", f"simulation.users_per_round={args.per_round}"]
    else:  # the default ML-100K simulation
        overrides = ["simulation.eval_every=0"]
    overrides += [f"simulation.rounds={args.rounds}", f"runs_dir={args.runs_dir}", f"name={args.mode}",
                  "overwrite=true", *args.extra]  # fmt: skip
    t0 = time.perf_counter()
    if args.mode == "fedrec":
        overrides.append(f"simulation.nodes={args.nodes}")
        from experiments.simulate import run_simulation

        cfg = compose_config(overrides)
        summary = run_simulation(cfg, overrides, show_progress=False, export_private=False)
        rounds = [h["seconds"] for h in summary["per_round"]]
        out = {"round_seconds": rounds, "startup_seconds": summary["startup_seconds"],
               "total_seconds": time.perf_counter() - t0}  # fmt: skip
    else:
        import warnings

        from flwr.simulation import run_simulation as flwr_run_simulation

        from experiments.simulate import _quiet_flower
        from experiments.stock_flower import client_app, make_server_app

        _quiet_flower()
        cfg = compose_config(overrides + ["simulation.nodes=1"])
        result: dict[str, Any] = {}
        server = make_server_app(to_yaml(cfg), args.population, args.per_round, args.rounds, 1682, 32, result)
        backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                   "init_args": {"num_cpus": os.cpu_count() or 1, "num_gpus": 0, "include_dashboard": False}}  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flwr_run_simulation(server, client_app, num_supernodes=args.population, backend_config=backend)
        started, ended = result["round_started"], result["round_ended"]
        rounds = [ended[r] - started[r] for r in sorted(ended)]
        out = {"round_seconds": rounds, "startup_seconds": started[min(started)] - t0,
               "total_seconds": time.perf_counter() - t0}  # fmt: skip
    Path(args.out).write_text(json.dumps(out))


def _measure(mode: str, population: int, per_round: int, rounds: int, nodes: int, extra: list[str],
             timeout: float) -> dict[str, Any]:  # fmt: skip
    """Run one worker process, sampling the RSS of its whole process tree every 0.2 s."""
    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "experiments.bench_simulate", "_worker", "--mode", mode,
               "--population", str(population), "--per-round", str(per_round), "--rounds", str(rounds),
               "--nodes", str(nodes), "--runs-dir", tmp, "--out", str(out), "--", *extra]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        peak = peak_pss = 0
        stop = threading.Event()

        def sample() -> None:
            # RSS summed over the tree counts shared pages (torch's libraries) once per process;
            # PSS splits them between the processes that share them. Both are reported.
            nonlocal peak, peak_pss
            p = psutil.Process(proc.pid)
            while not stop.is_set():
                try:
                    tree = [c for c in [p, *p.children(recursive=True)] if c.is_running()]
                    peak = max(peak, sum(c.memory_info().rss for c in tree))
                    peak_pss = max(peak_pss, sum(c.memory_full_info().pss for c in tree))
                except psutil.Error:
                    pass
                time.sleep(0.3)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            return {"error": f"timed out after {timeout:.0f}s"}
        finally:
            stop.set()
            th.join()
        if proc.returncode != 0 or not out.is_file():
            return {"error": (err or b"").decode(errors="replace")[-800:]}
        res = json.loads(out.read_text())
    steady = res["round_seconds"][1:] or res["round_seconds"]
    # Stock Flower starts its client workers on the first round's messages, fedrec on the start-up
    # query: "start-up + round 1" is the comparable first-round cost.
    return {**res, "median_round_seconds": median(steady), "peak_rss_gib": peak / 2**30,
            "peak_pss_gib": peak_pss / 2**30,
            "startup_plus_round1": res["startup_seconds"] + res["round_seconds"][0]}


def _paths(args: argparse.Namespace, console) -> dict[str, Any]:
    """The default ML-100K simulation with the cohort trainer vs the one-user-at-a-time path."""
    out: dict[str, Any] = {}
    for rep in range(args.repeats):
        for path in ("cohort", "sequential"):
            console.print(f"[bold]ML-100K[/] client.path={path} repeat={rep + 1}")
            res = _measure("fedrec", 0, 0, args.rounds, args.nodes, [*args.extra, f"client.path={path}"], 3600)
            out.setdefault(path, []).append(res)
    row = {p: {"median_round_seconds": median(r["median_round_seconds"] for r in runs if "error" not in r),
               "peak_rss_gib": max(r["peak_rss_gib"] for r in runs if "error" not in r)}
           for p, runs in out.items() if any("error" not in r for r in runs)}  # fmt: skip
    if "cohort" in row and "sequential" in row:
        row["speedup"] = row["sequential"]["median_round_seconds"] / row["cohort"]["median_round_seconds"]
        console.print(f"ML-100K seconds per round: cohort {row['cohort']['median_round_seconds']:.2f}, "
                      f"sequential {row['sequential']['median_round_seconds']:.2f} -> {row['speedup']:.1f}x")  # fmt: skip
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    if args.ml100k_paths:
        result = {"workload": "ml100k-default", "rounds": args.rounds, "ml100k": _paths(args, console)}
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return result
    grid = [tuple(int(x) for x in g.split(":")) for g in args.grid] if args.grid else list(DEFAULT_GRID)
    rows = []
    for population, per_round in grid:
        row: dict[str, Any] = {"population": population, "per_round": per_round}
        # + its message dispatcher rescans every pending message per node: ~quadratic in nodes
        predicted = STOCK_SECONDS_PER_USER * per_round * args.rounds + 0.02 * population \
            + 4e-6 * population**2 * args.rounds
        rates = [sa_dp_rates(population, per_round, args.extra)] if args.sa_dp else []
        for rep in range(args.repeats):
            for mode in MODES:  # alternate the frameworks (and fedrec with SA + DP on)
                if mode == "sa_dp" and not args.sa_dp:
                    continue
                if mode == "stock" and (args.no_stock or predicted > args.stock_limit):
                    row["stock"] = {"skipped": f"predicted {predicted:.0f}s > limit {args.stock_limit:.0f}s"
                                    if not args.no_stock else "--no-stock"}  # fmt: skip
                    continue
                console.print(f"[bold]{mode}[/] population={population} per_round={per_round} repeat={rep + 1}")
                extra = [*args.extra, *sa_dp_overrides(population, per_round)] if mode == "sa_dp" else args.extra
                res = _measure("stock" if mode == "stock" else "fedrec", population, per_round, args.rounds,
                               args.nodes, extra, timeout=max(args.stock_limit * 1.5, 900))  # fmt: skip
                row.setdefault(f"{mode}_runs", []).append(res)
        for mode in MODES:
            runs = [r for r in row.pop(f"{mode}_runs", []) if "error" not in r]
            if runs:
                row[mode] = {
                    "median_round_seconds": median(r["median_round_seconds"] for r in runs),
                    "startup_seconds": median(r["startup_seconds"] for r in runs),
                    "startup_plus_round1": median(r["startup_plus_round1"] for r in runs),
                    "peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
                    "peak_pss_gib": max(r["peak_pss_gib"] for r in runs),
                }
            elif mode not in row and (mode != "sa_dp" or args.sa_dp):
                row[mode] = {"error": "all runs failed"}
        f, s = row.get("fedrec", {}), row.get("stock", {})
        if "median_round_seconds" in f and "median_round_seconds" in s:
            row["speedup"] = s["median_round_seconds"] / f["median_round_seconds"]
            row["memory_ratio"] = s["peak_rss_gib"] / f["peak_rss_gib"]
        if "median_round_seconds" in f and "median_round_seconds" in row.get("sa_dp", {}):
            row["sa_dp_ratio"] = row["sa_dp"]["median_round_seconds"] / f["median_round_seconds"]
        if args.sa_dp:
            if args.sa_dp_cpu:
                console.print(f"[bold]CPU in process[/] population={population} per_round={per_round}")
                row["sa_dp_cpu"] = sa_dp_cpu(population, per_round, args.rounds, args.nodes, args.extra)
            rates.append(sa_dp_rates(population, per_round, args.extra))  # before and after the cell's runs
            row["sa_dp_floor"] = sa_dp_floor(population, per_round, args.nodes, args.extra, rates)
            if "median_round_seconds" in f:
                # the least SA + DP can cost against both off: plain round + unavoidable primitives
                fs = f["median_round_seconds"]
                row["sa_dp_floor_ratio"] = (fs + row["sa_dp_floor"]["wall_seconds"]) / fs
                console.print(f"SA+DP / off: measured {row.get('sa_dp_ratio', float('nan')):.2f}x, "
                              f"plain + floor {row['sa_dp_floor_ratio']:.2f}x (floor "
                              f"{row['sa_dp_floor']['wall_seconds']:.2f} s wall, "
                              f"{row['sa_dp_floor']['cpu_seconds']:.2f} s CPU per round)")  # fmt: skip
            if "sa_dp_cpu" in row:
                c = row["sa_dp_cpu"]
                off = c["off"]["median_cpu_seconds"]
                c["floor_ratio"] = (off + row["sa_dp_floor"]["cpu_seconds"]) / off
                console.print(f"SA+DP / off in CPU seconds per round: measured {c['ratio']:.2f}x "
                              f"({c['sa_dp']['median_cpu_seconds']:.2f} / {off:.2f} s), plain + floor "
                              f"{c['floor_ratio']:.2f}x")  # fmt: skip
        rows.append(row)

    table = Table(title="W1: seconds per round (median of rounds 2+), start-up, peak RSS of the process tree")
    for col in ("population", "users/round", "fedrec s/round", "stock s/round", "speedup",
                "fedrec start-up+r1 s", "stock start-up+r1 s", "fedrec peak RSS/PSS GiB",
                "stock peak RSS/PSS GiB",
                *(("SA+DP s/round", "SA+DP / off", "floor s/round", "(off + floor) / off") if args.sa_dp else ())):  # fmt: skip
        table.add_column(col, justify="right")

    def g(d: dict, k: str, fmt: str = "{:.2f}") -> str:
        return fmt.format(d[k]) if k in d else d.get("skipped", d.get("error", "-"))[:40]

    for r in rows:
        f, s = r.get("fedrec", {}), r.get("stock", {})
        table.add_row(str(r["population"]), str(r["per_round"]), g(f, "median_round_seconds"),
                      g(s, "median_round_seconds"), f"{r['speedup']:.1f}x" if "speedup" in r else "-",
                      g(f, "startup_plus_round1"), g(s, "startup_plus_round1"),
                      f"{g(f, 'peak_rss_gib')}/{g(f, 'peak_pss_gib')}", f"{g(s, 'peak_rss_gib')}/{g(s, 'peak_pss_gib')}",
                      *((g(r.get("sa_dp", {}), "median_round_seconds"),
                         f"{r['sa_dp_ratio']:.2f}x" if "sa_dp_ratio" in r else "-",
                         g(r.get("sa_dp_floor", {}), "wall_seconds"),
                         f"{r['sa_dp_floor_ratio']:.2f}x" if "sa_dp_floor_ratio" in r else "-")
                        if args.sa_dp else ()))  # fmt: skip
    Console().print(table)
    result = {"workload": "W1", "rounds": args.rounds, "nodes": args.nodes, "extra_overrides": args.extra,
              "cpus": os.cpu_count(), "rows": rows}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def add_bench_command(bench_sub) -> None:
    p = bench_sub.add_parser("simulate", help="fedrec cohorts vs stock Flower (one SuperNode per user), W1")
    p.add_argument("--grid", nargs="*", default=None, help="POPULATION:PER_ROUND pairs (default 1000:100 "
                   "1000:1000 10000:1000)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=4, help="rounds per measurement (round 1 is warm-up)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--nodes", type=int, default=os.cpu_count() or 2, help="fedrec nodes (cohorts)")
    p.add_argument("--stock-limit", type=float, default=600.0, help="skip stock Flower above this many seconds")
    p.add_argument("--no-stock", action="store_true", help="measure fedrec only")
    p.add_argument("--sa-dp", action="store_true", help="also run fedrec with secure aggregation and distributed "
                   "DP on (same workload, alternating) and report the ratio to both off")  # fmt: skip
    p.add_argument("--sa-dp-cpu", action="store_true", help="with --sa-dp: also CPU seconds per round of both "
                   "configurations in process (no Ray) against the floor's CPU seconds")  # fmt: skip
    p.add_argument("--ml100k-paths", action="store_true",
                   help="instead: the default ML-100K simulation, cohort trainer vs sequential path")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("extra", nargs="*", default=[], help="extra Hydra overrides for fedrec (e.g. privacy=distributed)")
    p.set_defaults(func=run)


def _main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("_worker")
    for name, typ in (("--mode", str), ("--population", int), ("--per-round", int), ("--rounds", int),
                      ("--nodes", int), ("--runs-dir", str), ("--out", str)):  # fmt: skip
        w.add_argument(name, type=typ, required=True)
    w.add_argument("extra", nargs="*", default=[])
    w.set_defaults(func=_worker)
    add_bench_command(sub)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    _main()
