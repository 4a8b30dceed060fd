"""Config of the server-side aggregation policy (Hydra group ``strategy``)."""

from __future__ import annotations

from dataclasses import dataclass, field

STRATEGIES = ("fedavg", "trust", "median", "trimmed", "krum", "bulyan")


@dataclass
class TrustConfig:
    """Trust scoring.

    Parameters
    ----------
    scorer : str
        Trust scorer by name (``constant`` here; the trust issue adds update-based scorers).
    threshold : float
        Users whose trust falls below it get weight 0 for the round.
    value : float
        Trust of the constant scorer.
    """

    scorer: str = "constant"
    threshold: float = 0.6
    value: float = 1.0


@dataclass
class StrategyConfig:
    """Aggregation policy.

    Parameters
    ----------
    name : str
        One of ``fedavg|trust|median|trimmed|krum|bulyan``.
    server_lr : float
        Server learning rate eta.
    server_optimizer : {"adam", "sgd"}
        ``sgd``: theta <- theta + eta * mean_delta (FedAvg); ``adam``: FedAdam on mean_delta.
    item_aggregation : {"sum", "mean"}
        How the item-embedding rows are combined. ``mean``: like every other parameter, the
        weighted mean over all of the round's users. ``sum``: the weighted sum (the mean times the
        denominator), as in federated collaborative filtering: an item row is touched only by the
        few users who interacted with or sampled it, so averaging over every user of the round
        shrinks its step by that ratio and items barely move. It is a per-block server learning
        rate, so DP (post-processing of the noised sum) and secure aggregation are unaffected.
    item_lr : float
        With ``item_aggregation=sum``: item rows move by ``item_lr * sum_u w_u delta_u``. The
        default 100 (= example_cap) makes that ``sum_u min(n_u, n_cap) delta_u``, i.e. every
        user's item-row delta counted once per (capped) training example.
    example_cap : int
        n_cap: a user's example weight is ``min(n_examples, n_cap) / n_cap`` in [0, 1], times
        its trust, so every weight stays in [0, 1] (DP sensitivity stays C).
    trust : TrustConfig
    """

    name: str = "trust"
    server_lr: float = 1.0
    server_optimizer: str = "sgd"
    item_aggregation: str = "sum"
    item_lr: float = 100.0
    example_cap: int = 100
    trust: TrustConfig = field(default_factory=TrustConfig)

    def validate(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"strategy.name={self.name!r}: choose one of {'|'.join(STRATEGIES)}")
        if self.server_lr <= 0:
            raise ValueError(f"strategy.server_lr={self.server_lr} must be > 0")
        if self.server_optimizer not in ("adam", "sgd"):
            raise ValueError(f"strategy.server_optimizer={self.server_optimizer!r}: choose adam or sgd")
        if self.item_aggregation not in ("sum", "mean"):
            raise ValueError(f"strategy.item_aggregation={self.item_aggregation!r}: choose sum or mean")
        if self.example_cap < 1:
            raise ValueError(f"strategy.example_cap={self.example_cap} must be >= 1")
        if not 0 <= self.trust.threshold <= 1:
            raise ValueError(f"strategy.trust.threshold={self.trust.threshold} must be in [0, 1]")
