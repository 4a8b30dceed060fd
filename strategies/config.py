"""Config of the server-side aggregation policy (Hydra group ``strategy``)."""

from __future__ import annotations

from dataclasses import dataclass, field

STRATEGIES = ("fedavg", "trust", "median", "trimmed", "krum", "multikrum", "bulyan")


@dataclass
class TrustConfig:
    """Trust scoring.

    Parameters
    ----------
    scorer : {"constant", "update", "reputation"}
        ``constant``: everyone ``value``. ``update``: same-round score of each individual update
        (cosine to a robust reference and norm outlier score; needs secure aggregation off).
        ``reputation``: EMA of past scores, fixed before the round (works under secure aggregation).
    threshold : float
        Users whose trust falls below it get weight 0 for the round.
    value : float
        Trust of the constant scorer.
    reference : {"median", "root"}
        ``update`` scorer's reference: the round's coordinate-wise median, or FLTrust-style the
        server's update on a small root dataset of ``root_users`` users it holds.
    root_users : int
        Size of the server's root dataset (users drawn with the run seed).
    cos_low, cos_high : float
        Cosine ramp of the update score: 0 at ``cos_low``, 1 at ``cos_high``.
    norm_factor : float
        Norm score ``min(1, norm_factor * median_norm / norm)``.
    cos_z_low, cos_z_high : float
        Relative cosine ramp on the round's robust z-score of the cosine: 0 at ``-cos_z_low``, 1 at
        ``-cos_z_high``; the cosine score is the larger of the two ramps. ``cos_z_low=0`` is off.
    row_clip_factor : float
        ``update`` scorer: clip each user's item-row delta to this multiple of the reference norm
        (``strategies.row_clip``). 0 is off.
    row_clip_reference : {"user", "row"}
        ``user``: the user's own 90th-percentile row norm; ``row``: the median norm of that row over
        the round's users who touched it.
    row_zero_factor : float
        ``update`` scorer: drop (zero) an item-row delta above this multiple of the reference norm.
        0 is off.
    row_clip_min_users : int
        ``row`` reference: rows touched by fewer users in the round are not clipped.
    decay : float
        Reputation EMA factor.
    prior : float
        Reputation of a user never seen.
    """

    scorer: str = "constant"
    threshold: float = 0.6
    value: float = 1.0
    reference: str = "median"
    root_users: int = 20
    cos_low: float = -0.4
    cos_high: float = 0.1
    norm_factor: float = 3.0
    cos_z_low: float = 3.0
    cos_z_high: float = 1.5
    row_clip_factor: float = 3.0
    row_clip_reference: str = "user"
    row_clip_min_users: int = 5
    row_zero_factor: float = 6.0
    decay: float = 0.5
    prior: float = 1.0


@dataclass
class RobustConfig:
    """Flower's robust rules (``strategy=median|trimmed|krum|multikrum|bulyan``).

    Parameters
    ----------
    assumed_fraction : float
        Fraction of each round's users Krum/MultiKrum/Bulyan are sized for (f = fraction x U).
    beta : float
        Trimmed mean: fraction cut from each end per coordinate.
    """

    assumed_fraction: float = 0.2
    beta: float = 0.2


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
    robust : RobustConfig
    """

    name: str = "trust"
    server_lr: float = 1.0
    server_optimizer: str = "sgd"
    item_aggregation: str = "sum"
    item_lr: float = 100.0
    example_cap: int = 100
    trust: TrustConfig = field(default_factory=TrustConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)

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
        if self.trust.scorer not in ("constant", "update", "reputation"):
            raise ValueError(f"strategy.trust.scorer={self.trust.scorer!r}: choose constant, update or reputation")
        if self.trust.row_clip_factor < 0 or self.trust.row_zero_factor < 0:
            raise ValueError(f"strategy.trust.row_clip_factor={self.trust.row_clip_factor} and row_zero_factor="
                             f"{self.trust.row_zero_factor} must be >= 0 (0 is off)")  # fmt: skip
        if self.trust.row_clip_reference not in ("user", "row"):
            raise ValueError(f"strategy.trust.row_clip_reference={self.trust.row_clip_reference!r}: choose user or row")
        if not 0 <= self.robust.beta < 0.5:
            raise ValueError(f"strategy.robust.beta={self.robust.beta} must be in [0, 0.5)")
