"""Run fedrec's real round loop against the real ClientApp in this process (no Ray, no gRPC).

Used by benchmarks that want CPU seconds per round without the simulation engine's transport and
start-up: each message is delivered synchronously to the ClientApp of its destination node, which
keeps one persistent ``Context`` per node, as a SuperNode would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Context, Message, RecordDict


class InProcessGrid:
    """A minimal ``flwr.serverapp.Grid`` stand-in: ``get_node_ids`` and ``send_and_receive``.

    Parameters
    ----------
    nodes : int
        Number of nodes; node i (id 1000 + i, so an id is never mistaken for a partition or a
        count in logs) gets ``partition-id`` i of ``num-partitions`` nodes.
    app : callable, optional
        The ClientApp that receives the messages (default: fedrec's ``client.app.app``).
    intercept : callable, optional
        ``intercept(message, reply) -> reply | None``: lets a test drop (None), alter or replace
        a node's reply before the server sees it.

    Attributes
    ----------
    sent : list of Message
        Every message delivered, in order.
    """

    def __init__(self, nodes: int, app: Callable[[Message, Context], Message] | None = None,
                 intercept: Callable[[Message, Message], Message | None] | None = None) -> None:  # fmt: skip
        from flwr.supercore.task_identity import TaskIdentity

        # Message() reads the run/task identity that a real ServerApp process sets up.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
        if app is None:
            from client.app import app
        self.app, self.intercept = app, intercept
        self.contexts = {
            1000 + i: Context(run_id=1, node_id=1000 + i, node_config={"partition-id": i, "num-partitions": nodes},
                           state=RecordDict(), run_config={})
            for i in range(nodes)
        }  # fmt: skip
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], timeout: float | None = None) -> list[Message]:
        out = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = m.object_id  # as Flower's Grid does on push
            self.sent.append(m)
            reply = self.app(m, self.contexts[m.metadata.dst_node_id])
            if self.intercept is not None:
                reply = self.intercept(m, reply)
            if reply is not None:
                out.append(reply)
        return out


def run_rounds_inprocess(overrides: list[str], nodes: int) -> dict[str, Any]:
    """Run ``fedrec simulate``'s loop in process; CPU and wall seconds of every round.

    Returns ``{"cpu_seconds": [...], "wall_seconds": [...], "summary": summary.json dict}``; round
    1's CPU seconds include node discovery and the first data load.
    """
    from configs.store import compose_config
    from server.app import build_loop

    overrides = [*overrides, f"simulation.nodes={nodes}"]
    cpu: list[float] = []
    wall: list[float] = []
    mark = [time.process_time(), time.perf_counter()]

    def tick(rnd: int, rounds: int, record: dict[str, Any]) -> None:
        now = [time.process_time(), time.perf_counter()]
        cpu.append(now[0] - mark[0])
        wall.append(now[1] - mark[1])
        mark[:] = now

    loop = build_loop(compose_config(overrides), overrides, progress=tick)
    loop.export_private_embeddings = False
    mark[:] = [time.process_time(), time.perf_counter()]
    summary = loop.run(InProcessGrid(nodes))
    return {"cpu_seconds": cpu, "wall_seconds": wall, "summary": summary}
