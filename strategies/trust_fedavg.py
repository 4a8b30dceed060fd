"""TrustWeightedFedAvg: FedAvg over users, weight = trust x capped examples, streaming aggregation."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies.aggregation import StreamingWeightedSum
from strategies.server_opt import ServerOptState, server_step
from strategies.trust import TrustScorer

log = logging.getLogger(__name__)


class TrustWeightedFedAvg(FedAvg):
    """Federated averaging of per-user updates with trust weights.

    The server addresses users and groups them by node: ``plan_round`` fixes, for each node, the
    sampled users and their trust; ``configure_train`` sends one message per node; nodes reply with
    ``sum_u w_u * clip(delta_u) (+ noise)`` and ``sum_u w_u``, which are summed as they arrive
    (O(d) memory). w_u = trust_u * min(n_u, n_cap) / n_cap is in [0, 1]; users whose trust is
    below ``threshold`` get trust 0 (excluded) for the round.

    Parameters
    ----------
    scorer : TrustScorer
        Source of trust weights (constant here; reputation/update-based in the trust issue).
    threshold : float, default 0.6
        Trust below it sets the user's weight to 0 for the round.
    server_lr : float, default 1.0
        Server learning rate eta.
    server_optimizer : {"sgd", "adam"}, default "sgd"
        ``sgd`` is FedAvg with server lr; ``adam`` is FedAdam on the aggregated delta.
    item_block : int, default 0
        Length of the leading item-embedding block of the flat vector; with
        ``item_aggregation="sum"`` that block is summed instead of averaged.
    item_aggregation : {"sum", "mean"}, default "mean"
    item_lr : float, default 1.0
        With ``sum``: the item block moves by ``item_lr * sum_u w_u delta_u`` (no server_lr).
    fixed_denominator : float or None, default None
        Divide the weighted sum by this instead of the received weight sum (DP: the expected
        total weight q * N, so the denominator does not depend on who participated).
    """

    def __init__(self, scorer: TrustScorer, threshold: float = 0.6, server_lr: float = 1.0,
                 server_optimizer: str = "sgd", fixed_denominator: float | None = None,
                 item_block: int = 0, item_aggregation: str = "mean", item_lr: float = 1.0) -> None:  # fmt: skip
        super().__init__(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=1,
                         min_evaluate_nodes=1, min_available_nodes=1, weighted_by_key="weight-sum")  # fmt: skip
        self.scorer = scorer
        self.threshold = threshold
        self.server_lr = server_lr
        self.server_optimizer = server_optimizer
        self.fixed_denominator = fixed_denominator
        self.item_block = item_block
        self.item_aggregation = item_aggregation
        self.item_lr = item_lr
        self.opt_state = ServerOptState()
        self._plan: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._theta: np.ndarray | None = None
        self.last_excluded = 0
        self.needs_individual_updates = False

    # ---- what to send ------------------------------------------------------------------------
    def plan_round(self, users_by_node: dict[int, np.ndarray]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Attach trust to every sampled user; returns node -> (users, trust)."""
        self._plan, excluded = {}, 0
        for node, users in users_by_node.items():
            trust = np.clip(self.scorer.weights_for_round(users), 0.0, 1.0)
            low = trust < self.threshold
            excluded += int(low.sum())
            trust = np.where(low, 0.0, trust)
            self._plan[node] = (users, trust)
        self.last_excluded = excluded
        if excluded:
            log.info("trust: %d users under threshold %.2f get weight 0 this round", excluded, self.threshold)
        return self._plan

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:  # fmt: skip
        """One message per node with the global shared vector, its users and their trust."""
        self._theta = arrays["shared"].numpy().astype(np.float32)
        config["server-round"] = server_round
        config["individual"] = self.needs_individual_updates
        msgs = []
        for node, (users, trust) in self._plan.items():
            content = RecordDict({
                "arrays": arrays, "config": config,
                "plan": ArrayRecord({"users": Array(users.astype(np.int64)), "trust": Array(trust.astype(np.float64))}),
            })  # fmt: skip
            msgs.append(Message(content=content, message_type=MessageType.TRAIN, dst_node_id=node))
        return msgs

    # ---- what to do with replies -------------------------------------------------------------
    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:  # fmt: skip
        """Stream the replies into one weighted sum and take a server optimizer step."""
        if self._theta is None:
            raise RuntimeError("aggregate_train called before configure_train")
        agg = StreamingWeightedSum(self._theta.shape[0])
        n_ex = users = 0
        loss = 0.0
        for msg in replies:
            if msg.has_error():
                log.warning("round %d: node %d replied with an error: %s", server_round,
                            msg.metadata.src_node_id, msg.error.reason)  # fmt: skip
                continue
            m = msg.content["metrics"]
            upd = msg.content["update"]
            if "rows" in upd:
                rows = upd["rows"].numpy()
                self.scorer.observe(msg.content["report"]["users"].numpy(), rows)
                agg.add(rows.sum(0, dtype=np.float64), float(m["weight-sum"]), int(m["users"]))
            else:
                agg.add(upd["sum"].numpy().astype(np.float64), float(m["weight-sum"]), int(m["users"]))
            n_ex += int(m["num-examples"])
            users += int(m["users"])
            loss += float(m["train-loss"]) * int(m["users"])
        mean = agg.mean(self.fixed_denominator)
        if mean is None:
            log.warning("round %d: no usable update arrived; the model is unchanged", server_round)
            return None, None
        if self.item_aggregation == "sum":  # the block's step is item_lr * weighted sum, not server_lr * mean
            mean[: self.item_block] *= (self.fixed_denominator or agg.weight) * self.item_lr / self.server_lr
        new = server_step(self._theta, mean, self.opt_state, self.server_optimizer, self.server_lr)
        metrics = MetricRecord({"train-loss": loss / max(users, 1), "users": users, "num-examples": n_ex,
                                "weight-sum": agg.weight, "update-norm": float(np.linalg.norm(mean))})  # fmt: skip
        return ArrayRecord({"shared": Array(new)}), metrics

    # ---- checkpoint --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"opt": self.opt_state, "scorer": self.scorer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt_state = state["opt"]
        self.scorer.load_state_dict(state["scorer"])
