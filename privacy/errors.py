"""Exception types of the privacy package, with messages that say what to change."""

from __future__ import annotations

import math

__all__ = ["PrivacyBudgetExceeded", "PrivacyError"]


class PrivacyError(ValueError):
    """A privacy setting or input is invalid; the message names the value and the fix."""


class PrivacyBudgetExceeded(PrivacyError):
    """Completing a round would spend more than ``privacy.target_epsilon``.

    Parameters
    ----------
    epsilon : float
        Epsilon the accountant would report after ``round_num`` (may be ``inf``).
    target_epsilon : float
        The configured budget.
    round_num : int
        1-based round whose completion would exceed the budget.
    delta : float or None, default None
        The delta at which ``epsilon`` was computed, only for the message.

    Attributes
    ----------
    epsilon, target_epsilon, round_num, delta
        As given, so callers can log or stop cleanly.
    """

    def __init__(
        self,
        epsilon: float,
        target_epsilon: float,
        round_num: int,
        delta: float | None = None,
    ) -> None:
        self.epsilon = float(epsilon)
        self.target_epsilon = float(target_epsilon)
        self.round_num = int(round_num)
        self.delta = None if delta is None else float(delta)
        eps_txt = "inf" if math.isinf(self.epsilon) else f"{self.epsilon:.2f}"
        at_delta = "" if self.delta is None else f" (delta {self.delta:.3g})"
        super().__init__(
            f"epsilon {eps_txt} > target {self.target_epsilon:g}{at_delta} after round "
            f"{self.round_num}; raise privacy.target_epsilon or lower rounds / raise "
            "privacy.noise_multiplier"
        )

    def __reduce__(self):  # keep it picklable across Ray / multiprocessing boundaries
        return (type(self), (self.epsilon, self.target_epsilon, self.round_num, self.delta))
