"""`fedrec simulate`: a Hydra main that runs fedrec's ServerApp and ClientApp in Flower's simulation
engine, with a progress bar showing each round's metrics."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from configs.schema import FedrecConfig, from_container
from configs.store import CONFIG_DIR, register_configs

log = logging.getLogger(__name__)


def _quiet_flower() -> None:
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # Ray starts its workers at nice 15 by default; on a shared 2-core machine that starves the
    # ClientApps behind any other process, so run them at normal priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger(name).propagate = False


def run_simulation(cfg: FedrecConfig, overrides: list[str] | None = None, show_progress: bool = True,
                   export_private: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run one fedrec simulation to the end and return its summary (also in summary.json)."""
    import warnings

    _quiet_flower()
    from flwr.simulation import run_simulation as flwr_run_simulation

    _quiet_flower()  # again: importing flwr resets its logger
    from client.app import app as client_app
    from server.app import make_server_app

    if cfg.resume:
        from server.resume import resume_config

        cfg = resume_config(cfg, overrides)
    workers = cfg.simulation.workers or os.cpu_count() or 1
    bar = _ProgressBar(cfg.simulation.rounds, enabled=show_progress)
    server_app = make_server_app(cfg, overrides, progress=bar.update, export_private=export_private)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": workers, "num_gpus": 0, "include_dashboard": False,
                             "logging_level": logging.ERROR, "log_to_driver": True}}  # fmt: skip
    t0 = time.perf_counter()
    with bar, warnings.catch_warnings(), _stop_on_signals(server_app):
        warnings.simplefilter("ignore")
        flwr_run_simulation(server_app, client_app, num_supernodes=cfg.simulation.nodes,
                            backend_config=backend, verbose_logging=False)  # fmt: skip
    loop = getattr(server_app, "loop", None)
    if loop is None or not getattr(loop, "result", None):
        raise RuntimeError("the simulation ended without finishing the run; see the log above")
    summary = loop.result
    summary["process_seconds"] = time.perf_counter() - t0
    loop.run_dir.write_summary(summary)
    return summary


@contextlib.contextmanager
def _stop_on_signals(server_app):
    """SIGINT/SIGTERM: finish the round in flight, checkpoint, stop (a second signal aborts at once;
    every completed round is already checkpointed atomically, so aborting loses only that round)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        loop = getattr(server_app, "loop", None)
        if loop is None or loop.stop_event.is_set():
            raise KeyboardInterrupt
        log.warning("%s: finishing round %d, then saving and stopping (again to abort now)",
                    signal.Signals(signum).name, loop.round + 1)  # fmt: skip
        loop.request_stop()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


class _ProgressBar:
    """A rich progress bar over rounds with the latest metrics in its description."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.progress, self.task = total, enabled and sys.stderr.isatty(), None, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(TextColumn("[bold]rounds"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.description}"))  # fmt: skip
            self.progress.__enter__()
            self.task = self.progress.add_task("", total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def update(self, rnd: int, total: int, record: dict[str, Any]) -> None:
        parts = [f"loss {record.get('train-loss', float('nan')):.3f}", f"users {record.get('users', 0)}",
                 f"{record.get('seconds', 0):.1f}s"]  # fmt: skip
        for k in ("hr@10", "full-ndcg@10", "epsilon"):
            if k in record:
                parts.append(f"{k} {record[k]:.4f}")
        line = f"round {rnd}/{total}: " + "  ".join(parts)
        if self.progress is not None:
            self.progress.update(self.task, completed=rnd, description=" ".join(parts))
            if "hr@10" in record:
                self.progress.console.print(line)
        else:
            print(line, flush=True)


def outcome_line(cfg: Any, summary: dict[str, Any]) -> str:
    """The one-line result of a run; a resumed run is named by its saved name and its directory
    (``resume=RUN_DIR``), not by the command line's default ``name``."""
    final = summary["final"]
    where = str(cfg.resume) if cfg.resume else os.path.join(cfg.runs_dir, cfg.name)
    return (f"run {summary.get('name', cfg.name)}: {summary['rounds']} rounds in {summary['wall_seconds']:.0f}s "
            f"(+{summary['startup_seconds']:.1f}s start-up); HR@10 {final.get('hr@10')}, "
            f"NDCG@10 {final.get('ndcg@10')}, full NDCG@10 {final.get('full-ndcg@10')}"
            + (f", epsilon {summary['epsilon']:.3f} at delta {summary['delta']:.2e}" if summary.get("epsilon") else "")
            + f" -> {where}")  # fmt: skip


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base=None)
def hydra_main(dcfg: DictConfig) -> float:
    """Hydra entry point: compose, validate, simulate, print the outcome."""
    cfg = from_container(dcfg)
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:
        overrides = []
    summary = run_simulation(cfg, overrides)
    final = summary["final"]
    print(outcome_line(cfg, summary))
    if summary.get("stop_reason"):  # e.g. the privacy budget: one line naming round, epsilon and setting
        print(summary["stop_reason"])
    return float(final.get("hr@10") or 0.0)


def main(argv: list[str]) -> None:
    """Run the Hydra main with ``argv`` as its command line (overrides, -m, --cfg ...)."""
    register_configs()
    sys.argv = ["fedrec simulate", *argv]
    hydra_main()
