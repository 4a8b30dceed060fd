"""TrustWeightedFedAvg: FedAvg over users, weight = trust x capped examples, streaming aggregation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies.aggregation import StreamingWeightedSum
from strategies.row_clip import RowClipStats
from strategies.server_opt import ServerOptState, server_step
from strategies.trust import TrustScorer

log = logging.getLogger(__name__)

PROBE_TRUST = 1e-6


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
        self.last_excluded_updates = 0
        self._excluded: set[int] = set()
        self.needs_individual_updates = scorer.needs_updates
        # Central DP: draws the noise added once to the weighted *sum* (before the mean, the item
        # block's scaling and the server optimizer), so every later step is post-processing.
        self.sum_noise: Callable[[int], np.ndarray] | None = None
        # Per-item-row clipping of individual updates before they are scored and summed (set by
        # the factory for the update scorer): bounds a targeted promotion's boosted target rows.
        self.row_clip: Callable[[np.ndarray], RowClipStats] | None = None
        self.last_rows_clipped = 0
        # Per-round diagnostics of update scoring, reported in the round's metrics (summary.json).
        self.last_diagnostics: dict[str, float] = {}

    # ---- what to send ------------------------------------------------------------------------
    def plan_round(self, users_by_node: dict[int, np.ndarray]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Attach trust to every sampled user; returns node -> (users, trust)."""
        self._plan, excluded = {}, 0
        self._excluded: set[int] = set()
        for node, users in users_by_node.items():
            trust = np.clip(self.scorer.weights_for_round(users), 0.0, 1.0)
            low = trust < self.threshold
            excluded += int(low.sum())
            self._excluded.update(users[low].tolist())
            # With individual updates an excluded user still sends its row at a vanishing probe
            # weight, so its reputation can recover from fresh evidence; the sum gives it weight 0.
            trust = np.where(low, PROBE_TRUST if self.needs_individual_updates else 0.0, trust)
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
        per_user: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for msg in replies:
            if msg.has_error():
                log.warning("round %d: node %d replied with an error: %s", server_round,
                            msg.metadata.src_node_id, msg.error.reason)  # fmt: skip
                continue
            m = msg.content["metrics"]
            upd = msg.content["update"]
            if "rows" in upd:  # kept until every reply is in: scoring needs the whole round
                rep = msg.content["report"]
                per_user.append((rep["users"].numpy(), upd["rows"].numpy(), rep["weights"].numpy()))
            else:
                agg.add(upd["sum"].numpy().astype(np.float64), float(m["weight-sum"]), int(m["users"]))
                observe_norms = getattr(self.scorer, "observe_norms", None)
                if observe_norms is not None and "norms" in msg.content["report"]:
                    observe_norms(msg.content["report"]["users"].numpy(), msg.content["report"]["norms"].numpy())
            n_ex += int(m["num-examples"])
            users += int(m["users"])
            loss += float(m["train-loss"]) * int(m["users"])
        if per_user:
            ids, deltas, weights = unweight_rows(per_user, self._excluded)
            total, weight = self.combine_rows(server_round, ids, deltas, weights)
            if weight > 0:
                agg.add(total, weight, len(ids))
            self.scorer.observe(ids, deltas)
            del deltas
        return self.aggregate_sum(server_round, self._theta, agg, loss / max(users, 1), n_ex)

    def aggregate_sum(self, server_round: int, theta: np.ndarray, agg: StreamingWeightedSum, train_loss: float,
                      num_examples: int) -> tuple[ArrayRecord | None, MetricRecord | None]:  # fmt: skip
        """Server step from ``sum_u w_u delta_u`` and ``sum_u w_u`` however they were obtained
        (streamed node replies, or the unmasked sum of secure aggregation)."""
        if self.sum_noise is not None and agg.count:
            agg.total += self.sum_noise(agg.dim)
        mean = agg.mean(self.fixed_denominator)
        if mean is None:
            log.warning("round %d: no usable update arrived; the model is unchanged", server_round)
            return None, None
        if self.item_aggregation == "sum":  # the block's step is item_lr * weighted sum, not server_lr * mean
            mean[: self.item_block] *= (self.fixed_denominator or agg.weight) * self.item_lr / self.server_lr
        new = server_step(theta, mean, self.opt_state, self.server_optimizer, self.server_lr)
        metrics = MetricRecord({"train-loss": train_loss, "users": agg.count, "num-examples": num_examples,
                                "weight-sum": agg.weight, "update-norm": float(np.linalg.norm(mean)),
                                "trust-excluded": self.last_excluded + self.last_excluded_updates,
                                "rows-clipped": self.last_rows_clipped, **self.last_diagnostics})  # fmt: skip
        return ArrayRecord({"shared": Array(new)}), metrics

    def combine_rows(self, server_round: int, users: np.ndarray, deltas: np.ndarray, weights: np.ndarray
                     ) -> tuple[np.ndarray, float]:  # fmt: skip
        """Reduce the round's unweighted per-user updates to ``(sum_u w'_u delta_u, sum_u w'_u)``.

        ``weights`` are the planned w_u (0 for users excluded before the round). ``row_clip``, when
        set, first clips outlying item rows of ``deltas`` in place. A scorer with
        ``uses_updates`` multiplies the weights by its same-round trust, after thresholding. Robust
        baselines override this. ``deltas`` is (U, d) float32; returns float64 (d,) and a float.
        """
        trust = np.ones(len(users))
        self.last_excluded_updates = self.last_rows_clipped = 0
        self.last_diagnostics = {}
        if self.row_clip is not None:
            st = self.row_clip(deltas)
            self.last_rows_clipped = st.rows
            self.last_diagnostics["row-energy-removed"] = st.energy_removed
            if st.rows:
                log.info("round %d: row clip: %d of %d touched item rows clipped, %d of them zeroed (%d of %d users), "
                         "%.2f%% of the item rows' squared norm removed", server_round, st.rows, st.touched, st.zeroed,
                         st.users, len(users), 100 * st.energy_removed)  # fmt: skip
        if self.scorer.uses_updates:
            self.scorer.theta = self._theta
            trust = np.clip(self.scorer.score_updates(users, deltas), 0.0, 1.0)
            low = (trust < self.threshold) & (weights > 0)
            self.last_excluded_updates = int(low.sum())
            trust[trust < self.threshold] = 0.0
            self.last_diagnostics.update(trust_diagnostics(trust, weights, self.threshold,
                                                           getattr(self.scorer, "last_components", None)))  # fmt: skip
            if self.last_excluded_updates:
                log.info("round %d: trust: %d of %d updates under threshold %.2f get weight 0", server_round,
                         self.last_excluded_updates, len(users), self.threshold)  # fmt: skip
        w = (trust * weights).astype(np.float32)
        return (w @ deltas).astype(np.float64), float(w.sum(dtype=np.float64))

    # ---- checkpoint --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"opt": self.opt_state, "scorer": self.scorer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt_state = state["opt"]
        self.scorer.load_state_dict(state["scorer"])


def trust_diagnostics(trust: np.ndarray, weights: np.ndarray, threshold: float,
                      components: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:  # fmt: skip
    """What same-round trust did to a round's planned weights.

    Parameters
    ----------
    trust : np.ndarray, shape (U,)
        Thresholded trust (0 below ``threshold``).
    weights : np.ndarray, shape (U,)
        Planned weights w_u (0 for users excluded before the round, who are not counted).
    components : (cos score, norm score), optional
        The scorer's two parts (``update_trust_components``), each (U,).

    Returns
    -------
    dict with ``trust-weight-kept`` (``sum trust w / sum w``), ``trust-soft`` (users kept at trust
    < 1) and, with ``components``, ``trust-excluded-cos`` / ``trust-excluded-norm`` (users whose
    cosine / norm score alone is under the threshold; a user can be in both).
    """
    live = weights > 0
    total = float(weights[live].sum())
    out = {"trust-weight-kept": float((trust * weights)[live].sum()) / total if total > 0 else 1.0,
           "trust-soft": int(((trust >= threshold) & (trust < 1.0) & live).sum())}  # fmt: skip
    if components is not None:
        cos_s, norm_s = components
        out["trust-excluded-cos"] = int(((cos_s < threshold) & live).sum())
        out["trust-excluded-norm"] = int(((norm_s < threshold) & live).sum())
    return out


def unweight_rows(per_user: list[tuple[np.ndarray, np.ndarray, np.ndarray]], excluded: set[int]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Stack the nodes' per-user rows and divide out their weights.

    Parameters
    ----------
    per_user : list of (users (U_i,), rows (U_i, d) = w_u * delta_u, weights (U_i,) = w_u)
    excluded : set of int
        Users excluded before the round (they sent a probe-weighted row; their weight becomes 0).

    Returns
    -------
    users (U,), deltas (U, d) float32 unweighted (rows with w_u = 0 stay 0), weights (U,) float64
    """
    users = np.concatenate([u for u, _, _ in per_user]).astype(np.int64)
    deltas = np.concatenate([r for _, r, _ in per_user]).astype(np.float32, copy=False)
    weights = np.concatenate([w for _, _, w in per_user]).astype(np.float64)
    if deltas.shape[0] != len(users) or len(weights) != len(users):
        raise ValueError(f"per-user reply has {deltas.shape[0]} rows for {len(users)} users")
    pos = weights > 0
    deltas[pos] /= weights[pos, None].astype(np.float32)
    weights = np.where(np.isin(users, np.fromiter(excluded, np.int64, len(excluded))), 0.0, weights)
    return users, deltas, weights
