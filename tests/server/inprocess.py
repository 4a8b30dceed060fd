"""Run the real RoundLoop against the real ClientApp in this process (no Ray, no gRPC).

Flower's simulation engine costs ~25 s of start-up per run; tests that need several tiny runs
(budget stop, resume) use this Grid instead, which delivers each message to the ClientApp of its
destination node synchronously, with one persistent Context per node.
"""

from __future__ import annotations

from typing import Any

from experiments.inprocess import InProcessGrid  # one grid for tests and benchmarks


def run_inprocess(overrides: list[str], nodes: int = 2) -> tuple[dict[str, Any], Any]:
    """Compose the config, build the loop (fresh or ``resume=``), run it; returns (summary, loop)."""
    from configs.store import compose_config
    from server.app import build_loop

    cfg = compose_config([*overrides, f"simulation.nodes={nodes}"])
    loop = build_loop(cfg, overrides)
    loop.export_private_embeddings = False
    return loop.run(InProcessGrid(nodes)), loop
