"""Flower's robust aggregation rules (median, trimmed mean, Krum/MultiKrum, Bulyan) over per-user updates.

Flower's strategies aggregate one reply per *node*; fedrec's unit is the user, so this adapter feeds
Flower's own arithmetic (``trim_mean``, ``select_multikrum``, ``aggregate_arrayrecords``,
``aggregate_n_closest_weights``) the per-user rows that ``TrustWeightedFedAvg`` collects when
``needs_individual_updates`` is set. ``FedMedian`` has no helper function; its one line,
``np.median(np.stack(layers), axis=0)``, is used as is.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
from flwr.serverapp.strategy.multikrum import select_multikrum
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from strategies.trust import ConstantTrust
from strategies.trust_fedavg import TrustWeightedFedAvg

log = logging.getLogger(__name__)

RULES = ("median", "trimmed", "krum", "multikrum", "bulyan")


def _records(deltas: np.ndarray, weights: np.ndarray) -> list[RecordDict]:
    # The shape of a Flower train reply: one ArrayRecord, one MetricRecord with the weighting key.
    return [RecordDict({"arrays": ArrayRecord({"delta": Array(d)}), "metrics": MetricRecord({"weight": float(w)})})
            for d, w in zip(deltas, weights, strict=True)]  # fmt: skip


def robust_aggregate(rule: str, deltas: np.ndarray, weights: np.ndarray, num_malicious: int,
                     beta: float = 0.2) -> np.ndarray | None:  # fmt: skip
    """Aggregate per-user updates with one of Flower's robust rules.

    Parameters
    ----------
    rule : {"median", "trimmed", "krum", "multikrum", "bulyan"}
    deltas : np.ndarray[float32], shape (U, d)
        Unweighted updates.
    weights : np.ndarray, shape (U,)
        Example weights, used where Flower's rule averages (Krum/MultiKrum's final mean).
    num_malicious : int
        f, the number of Byzantine users the rule is sized for (Krum, MultiKrum, Bulyan).
    beta : float
        Fraction cut from each end by the trimmed mean.

    Returns
    -------
    np.ndarray[float32], shape (d,), or None when the rule cannot run (Bulyan with U < 4f + 3).
    """
    n = len(deltas)
    if n == 0:
        return None
    if rule == "median":  # flwr FedMedian.aggregate_train
        return np.median(deltas, axis=0).astype(np.float32)
    if rule == "trimmed":
        return np.asarray(trim_mean(deltas, beta), np.float32)
    if rule in ("krum", "multikrum"):
        recs = _records(deltas, weights)
        chosen = select_multikrum(recs, num_malicious, 1 if rule == "krum" else max(1, n - num_malicious))
        return aggregate_arrayrecords(chosen, "weight")["delta"].numpy().astype(np.float32)
    if rule == "bulyan":  # flwr Bulyan.aggregate_train, on arrays
        if n < 4 * num_malicious + 3:
            log.warning("bulyan needs at least 4f+3=%d updates, got %d: round skipped", 4 * num_malicious + 3, n)
            return None
        theta = n - 2 * num_malicious
        chosen = select_multikrum(_records(deltas, weights), num_malicious, theta)
        stack = [[rec["arrays"]["delta"].numpy()] for rec in chosen]
        median = [np.median(np.stack([s[0] for s in stack]), axis=0)]
        return np.asarray(aggregate_n_closest_weights(median, stack, theta - 2 * num_malicious)[0], np.float32)
    raise ValueError(f"unknown robust rule {rule!r}: choose one of {RULES}")


class RobustAggregation(TrustWeightedFedAvg):
    """A Flower robust rule in place of the weighted mean, on the same round loop.

    The rule's output estimates the typical per-user delta; it is scaled by the round's weight sum
    so that the item block (``item_aggregation="sum"``) and the server step treat it exactly like
    the weighted mean of plain FedAvg.

    Parameters
    ----------
    rule : {"median", "trimmed", "krum", "multikrum", "bulyan"}
    assumed_fraction : float, default 0.2
        Fraction of the round's users the rule assumes Byzantine (f = floor(fraction * U)).
    beta : float, default 0.2
        Trimmed-mean cut per side.
    **kwargs
        Passed to ``TrustWeightedFedAvg`` (server_lr, item_block, ...).
    """

    def __init__(self, rule: str, assumed_fraction: float = 0.2, beta: float = 0.2, **kwargs) -> None:
        if rule not in RULES:
            raise ValueError(f"strategy.name={rule!r} is not a robust rule: choose one of {RULES}")
        if not 0.0 <= assumed_fraction < 0.5:
            raise ValueError(f"strategy.robust.assumed_fraction={assumed_fraction} must be in [0, 0.5)")
        super().__init__(ConstantTrust(1.0), threshold=0.0, **kwargs)
        self.rule, self.assumed_fraction, self.beta = rule, assumed_fraction, beta
        self.needs_individual_updates = True

    def combine_rows(self, server_round: int, users: np.ndarray, deltas: np.ndarray, weights: np.ndarray
                     ) -> tuple[np.ndarray, float]:  # fmt: skip
        keep = weights > 0
        d, w = (deltas, weights) if keep.all() else (deltas[keep], weights[keep])
        agg = robust_aggregate(self.rule, d, w, int(self.assumed_fraction * len(d)), self.beta)
        if agg is None:
            return np.zeros(deltas.shape[1]), 0.0
        total = float(w.sum())
        return agg.astype(np.float64) * total, total
