"""Trust scorers: per-user trust in [0, 1] that weights a user's update in the aggregate."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class TrustScorer(ABC):
    """Assigns each user a trust weight in [0, 1].

    ``weights_for_round`` is called before a round (the weights travel to the users, who apply
    them inside the masked sum); ``observe`` is called after aggregation with whatever per-user
    evidence the server saw (individual updates only when secure aggregation is off).
    A scorer with ``uses_updates`` also re-scores the round's own updates before they are summed
    (``score_updates``); ``needs_updates`` says the server must ask nodes for per-user rows.
    """

    uses_updates: bool = False

    @property
    def needs_updates(self) -> bool:
        """Whether this scorer wants the round's individual (unweighted) updates."""
        return self.uses_updates

    @abstractmethod
    def weights_for_round(self, users: np.ndarray) -> np.ndarray:
        """Trust of each user in ``users`` (int64, shape (U,)) -> float64 (U,) in [0, 1]."""

    def score_updates(self, users: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        """Same-round trust from unweighted updates ``deltas`` (U, d) -> (U,) in [0, 1]."""
        raise NotImplementedError(f"{type(self).__name__} does not score individual updates")

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


def _register_builtin() -> None:
    # The scorers live one per file and subclass TrustScorer from here: import them on first use.
    from strategies.reputation import ReputationTrust
    from strategies.update_trust import UpdateTrust

    SCORERS.setdefault("update", UpdateTrust)
    SCORERS.setdefault("reputation", ReputationTrust)


def create_scorer(name: str, **kwargs) -> TrustScorer:
    """Build a trust scorer by name (``strategy.trust.scorer`` in config)."""
    _register_builtin()
    if name not in SCORERS:
        raise ValueError(f"unknown trust scorer {name!r}: choose one of {sorted(SCORERS)}")
    return SCORERS[name](**kwargs)
