"""An in-process stand-in for Flower's Grid: messages go straight to a ClientApp, no Ray, no gRPC.

Every node keeps its own ``Context`` (partition-id / num-partitions like the simulation engine);
``intercept(msg, reply) -> reply | None`` lets a test drop, alter or replace a node's reply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid:
    def __init__(self, app, n_nodes: int,
                 intercept: Callable[[Message, Message], Message | None] | None = None) -> None:  # fmt: skip
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # Message() needs them
        self.app, self.intercept = app, intercept
        self.contexts = {
            1000 + i: Context(run_id=1, node_id=1000 + i, state=RecordDict(), run_config={},
                              node_config={"partition-id": i, "num-partitions": n_nodes})  # fmt: skip
            for i in range(n_nodes)
        }
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
