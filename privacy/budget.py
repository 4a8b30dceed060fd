"""Pre-round budget check: refuse a round whose completion would exceed target epsilon."""

from __future__ import annotations

import logging

from privacy.accountant import PrivacyAccountant
from privacy.errors import PrivacyBudgetExceeded

__all__ = ["check_budget"]

logger = logging.getLogger(__name__)


def check_budget(
    accountant: PrivacyAccountant,
    next_noise_multiplier: float,
    sample_rate: float,
    delta: float,
    target_epsilon: float | None,
    next_round: int,
) -> None:
    """Raise if running round ``next_round`` would push epsilon above the target.

    Call before each round with the planned ``z`` and ``q``; the accountant is
    not modified. Dropouts below m_min lower the received ``z`` afterwards, so
    the final epsilon of a round may still exceed the plan slightly; the next
    call then raises.

    Parameters
    ----------
    accountant : PrivacyAccountant
        Holds the rounds already completed.
    next_noise_multiplier : float
        Planned z for the next round.
    sample_rate : float
        q for the next round.
    delta : float
    target_epsilon : float or None
        None disables the check.
    next_round : int
        1-based number of the round about to run, for the message.

    Raises
    ------
    PrivacyBudgetExceeded
        With the epsilon the round would reach, the target and the round.
    """
    if target_epsilon is None:
        return
    eps = accountant.epsilon_if_step(next_noise_multiplier, sample_rate, delta)
    if eps > float(target_epsilon):
        raise PrivacyBudgetExceeded(eps, float(target_epsilon), next_round, delta)
    logger.debug(
        "round %d within budget: epsilon %.4f <= target %.4f", next_round, eps, target_epsilon
    )
