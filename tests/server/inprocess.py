"""Run the real RoundLoop against the real ClientApp in this process (no Ray, no gRPC).

Flower's simulation engine costs ~25 s of start-up per run; tests that need several tiny runs
(budget stop, resume) use this Grid instead, which delivers each message to the ClientApp of its
destination node synchronously, with one persistent Context per node.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context, Message, RecordDict


class InProcessGrid:
    """A minimal ``flwr.serverapp.Grid`` stand-in: ``get_node_ids`` and ``send_and_receive``."""

    def __init__(self, nodes: int) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        # Message() reads the run/task identity that a real ServerApp process sets up.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
        self.contexts = {
            i + 1: Context(run_id=1, node_id=i + 1, node_config={"partition-id": i, "num-partitions": nodes},
                           state=RecordDict(), run_config={})
            for i in range(nodes)
        }  # fmt: skip

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Any, timeout: float | None = None) -> list[Message]:
        from client.app import app as client_app

        return [client_app(m, self.contexts[m.metadata.dst_node_id]) for m in messages]


def run_inprocess(overrides: list[str], nodes: int = 2) -> tuple[dict[str, Any], Any]:
    """Compose the config, build the loop (fresh or ``resume=``), run it; returns (summary, loop)."""
    from configs.store import compose_config
    from server.app import build_loop

    cfg = compose_config([*overrides, f"simulation.nodes={nodes}"])
    loop = build_loop(cfg, overrides)
    loop.export_private_embeddings = False
    return loop.run(InProcessGrid(nodes)), loop
