"""Flower ServerApp: runs fedrec's round loop on whatever Grid Flower hands it.

``fedrec simulate`` builds the app with :func:`make_server_app` around an already-resolved config;
``flwr run .`` loads ``app`` below, which composes the config from ``configs/`` with the Hydra
overrides in the run config key ``fedrec-overrides``.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from configs.schema import FedrecConfig, to_yaml
from configs.store import compose_config
from server.loop import ProgressFn, RoundLoop
from server.rundir import RunDir

log = logging.getLogger(__name__)


def n_items_of(cfg: FedrecConfig) -> int:
    return 1682 if cfg.data.name == "ml-100k" else cfg.data.items


def build_loop(cfg: FedrecConfig, overrides: list[str] | None = None,
               progress: ProgressFn | None = None) -> RoundLoop:  # fmt: skip
    """Prepare the run directory (fresh or resumed) and the loop."""
    if cfg.resume:
        from server.resume import resume_config

        cfg = resume_config(cfg, overrides)  # the saved config wins; only schedule keys may change
        run_dir = RunDir(cfg.resume)
        state = run_dir.load_checkpoint()
        loop = RoundLoop(cfg, run_dir, n_items_of(cfg), overrides, progress)
        loop.load_state_dict(state)
        log.info("resuming %s after round %d", run_dir.path, loop.round)
    else:
        run_dir = RunDir(Path(cfg.runs_dir) / cfg.name)
        run_dir.prepare_new(cfg.overwrite)
        loop = RoundLoop(cfg, run_dir, n_items_of(cfg), overrides, progress)
    run_dir.write_text("config.yaml", to_yaml(cfg))
    return loop


def make_server_app(cfg: FedrecConfig, overrides: list[str] | None = None,
                    progress: ProgressFn | None = None, export_private: bool = True) -> ServerApp:  # fmt: skip
    """A ServerApp bound to a resolved config (used by ``fedrec simulate``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        loop = build_loop(cfg, overrides, progress)
        loop.export_private_embeddings = export_private
        # Simulated nodes lose Context.state with the process: they version their private state
        # under the run so that a resumed simulation continues bit for bit (client/state.py).
        loop.node_state_dir = loop.run_dir.path / "node_state"
        app.loop = loop
        loop.result = loop.run(grid)
        app.loop = loop

    return app


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run .``: overrides come from ``fedrec-overrides`` in the run config."""
    # flwr-serverapp leaves the root logger bare: without this the loop's per-round node health
    # lines never reach `flwr run --stream` (and `fedrec deploy`'s output).
    # stdout, not stderr: Flower mirrors only stdout into the run's log stream.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger("server").setLevel(logging.INFO)  # root may already carry Flower's handler
    overrides = shlex.split(str(context.run_config.get("fedrec-overrides", "")))
    rounds = int(context.run_config.get("num-server-rounds", 3))
    # The federation's size is set at the SuperLink, not here: start once at least one node is up.
    cfg = compose_config([f"simulation.rounds={rounds}", "simulation.min_nodes=1", *overrides])
    loop = build_loop(cfg, overrides)
    loop.export_private_embeddings = False
    loop.run(grid)
