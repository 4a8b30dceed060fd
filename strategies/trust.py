"""Trust scorers: per-user trust in [0, 1] that weights a user's update in the aggregate."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class TrustScorer(ABC):
    """Assigns each user a trust weight in [0, 1].

    ``weights_for_round`` is called before a round (the weights travel to the users, who apply
    them inside the masked sum); ``observe`` is called after aggregation with whatever per-user
    evidence the server saw (individual updates only when secure aggregation is off).
    """

    @abstractmethod
    def weights_for_round(self, users: np.ndarray) -> np.ndarray:
        """Trust of each user in ``users`` (int64, shape (U,)) -> float64 (U,) in [0, 1]."""

    def observe(self, users: np.ndarray, updates: np.ndarray | None) -> None:  # noqa: B027
        """Update internal state after a round (default: nothing)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027
        """Restore what ``state_dict`` returned."""


class ConstantTrust(TrustScorer):
    """Every user gets the same trust (1.0 by default): plain FedAvg weighting."""

    def __init__(self, value: float = 1.0) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"constant trust must be in [0, 1], got {value}")
        self.value = value

    def weights_for_round(self, users: np.ndarray) -> np.ndarray:
        return np.full(len(users), self.value, np.float64)


SCORERS: dict[str, type[TrustScorer]] = {"constant": ConstantTrust}


def create_scorer(name: str, **kwargs) -> TrustScorer:
    """Build a trust scorer by name (``strategy.trust.scorer`` in config)."""
    if name not in SCORERS:
        raise ValueError(f"unknown trust scorer {name!r}: choose one of {sorted(SCORERS)}")
    return SCORERS[name](**kwargs)
