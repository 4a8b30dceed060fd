"""Reputation trust: an exponential moving average of a user's past scores, used as next round's weight."""

from __future__ import annotations

import numpy as np

from strategies.trust import TrustScorer
from strategies.update_trust import norm_score, update_trust_scores


def ema_update(previous: np.ndarray, scores: np.ndarray, decay: float) -> np.ndarray:
    """``decay * previous + (1 - decay) * scores``, elementwise, stays in [0, 1] for inputs in [0, 1]."""
    return decay * previous + (1.0 - decay) * scores


class ReputationTrust(TrustScorer):
    """Trust fixed *before* the round from the user's history: the weight secure aggregation can use.

    Under secure aggregation the server sees only the masked sum, so the weights must be known
    before the round and applied by the users inside it; reputation built from earlier evidence is
    then the only trust available. The evidence is the same-round update score
    (``update_trust_scores``) whenever individual updates are visible, or, with only the nodes'
    self-reported pre-clipping norms (``observe_norms``), the norm score alone (weak: a malicious
    node can lie about its norm; clipping is what bounds it then).

    Parameters
    ----------
    decay : float, default 0.5
        EMA factor: ``rep <- decay * rep + (1 - decay) * score``. With the 0.6 threshold and a
        prior of 1, one round scored 0 drops a user to 0.5, excluded from the next round.
    prior : float, default 1.0
        Reputation of a user never observed.
    cos_low, cos_high, norm_factor, cos_z_low, cos_z_high : float
        Parameters of the update score (see ``strategies.update_trust``).
    """

    def __init__(self, decay: float = 0.5, prior: float = 1.0, cos_low: float = -0.4, cos_high: float = 0.1,
                 norm_factor: float = 3.0, cos_z_low: float = 3.0, cos_z_high: float = 1.5) -> None:  # fmt: skip
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"strategy.trust.decay={decay} must be in [0, 1)")
        if not 0.0 <= prior <= 1.0:
            raise ValueError(f"strategy.trust.prior={prior} must be in [0, 1]")
        self.decay, self.prior = decay, prior
        self.cos_low, self.cos_high, self.norm_factor = cos_low, cos_high, norm_factor
        self.cos_z_low, self.cos_z_high = cos_z_low, cos_z_high
        self.reputation: dict[int, float] = {}

    @property
    def needs_updates(self) -> bool:
        # Evidence comes from the individual updates when the server may see them.
        return True

    def weights_for_round(self, users: np.ndarray) -> np.ndarray:
        return np.array([self.reputation.get(int(u), self.prior) for u in users], np.float64)

    def _record(self, users: np.ndarray, scores: np.ndarray) -> None:
        new = ema_update(self.weights_for_round(users), np.clip(scores, 0.0, 1.0), self.decay)
        self.reputation.update(zip(users.tolist(), new.tolist(), strict=True))

    def observe(self, users: np.ndarray, updates: np.ndarray | None) -> None:
        """Fold this round's update scores into the users' reputations (no-op without updates)."""
        if updates is None or len(users) == 0:
            return
        self._record(users, update_trust_scores(updates, None, self.cos_low, self.cos_high, self.norm_factor,
                                                      self.cos_z_low, self.cos_z_high))  # fmt: skip

    def observe_norms(self, users: np.ndarray, norms: np.ndarray) -> None:
        """Evidence under secure aggregation: the nodes' reported pre-clipping norms only."""
        if len(users):
            self._record(users, norm_score(np.asarray(norms, np.float64), self.norm_factor))

    def state_dict(self) -> dict:
        users = np.fromiter(self.reputation.keys(), np.int64, len(self.reputation))
        return {"users": users, "reputation": np.fromiter(self.reputation.values(), np.float64, len(users))}

    def load_state_dict(self, state: dict) -> None:
        self.reputation = dict(zip(np.asarray(state["users"]).tolist(),
                                   np.asarray(state["reputation"]).tolist(), strict=True))  # fmt: skip
