"""Structured config of the privacy stage (Hydra group ``privacy``) and its validation."""

import logging
import math
from dataclasses import dataclass

from privacy.errors import PrivacyError

__all__ = ["ACCOUNTANTS", "MODES", "UNITS", "PrivacyConfig", "default_delta"]

MODES = ("off", "central", "distributed", "local")
ACCOUNTANTS = ("rdp", "prv")
UNITS = ("user", "example")

logger = logging.getLogger(__name__)


def default_delta(population: int) -> float:
    """Default delta for a population of ``population`` users: ``1 / N**1.1``.

    Strictly below ``1/N`` so that "release one user's data in the clear" is not
    an (epsilon, delta)-DP mechanism for any epsilon.
    """
    if population < 1:
        raise PrivacyError(f"population {population} must be >= 1 to derive privacy.delta")
    return 1.0 / float(population) ** 1.1


@dataclass
class PrivacyConfig:
    """User-level differential-privacy settings.

    Parameters
    ----------
    mode : str, default "off"
        ``off`` | ``central`` (server adds N(0, (zC)^2) once to the sum) |
        ``distributed`` (each user adds N(0, (zC)^2 / m_min), the sum of m_min
        users carries (zC)^2) | ``local`` (each user adds N(0, (zC)^2)).
    noise_multiplier : float, default 1.0
        z, noise std divided by the L2 sensitivity C.
    clip_norm : float, default 1.0
        C, per-user L2 bound on the flattened shared-parameter delta.
    min_survivors : int, default 0
        m_min for distributed mode; 0 means the expected users per round,
        ``max(1, floor(q * N))``.
    sample_rate : float, default 0.1
        q, Poisson inclusion probability of each user per round.
    target_epsilon : float or None, default None
        Stop before the round that would exceed it; None means no budget.
    delta : float or None, default None
        None means ``1 / N**1.1`` with N the population.
    accountant : str, default "rdp"
        ``rdp`` (Opacus RDPAccountant) or ``prv`` (Opacus PRVAccountant).
    max_participations : int or None, default None
        K, cap on rounds a user may take part in; None means no cap.
    unit : str, default "user"
        ``user``: user-level DP only. ``example``: in addition, every user trains
        with DP-SGD (per-example clipping to ``example_clip_norm``, noise
        ``example_noise_multiplier``; ``client/example_dp.py``), which makes each
        user's updates example-level DP with a per-user accountant. ``mode`` still
        selects the user-level mechanism (``off`` for example level only).
    example_noise_multiplier : float, default 1.0
        sigma of DP-SGD with ``unit=example``.
    example_clip_norm : float, default 1.0
        Per-example L2 clip of DP-SGD with ``unit=example``.
    """

    mode: str = "off"
    noise_multiplier: float = 1.0
    clip_norm: float = 1.0
    min_survivors: int = 0
    sample_rate: float = 0.1
    target_epsilon: float | None = None
    delta: float | None = None
    accountant: str = "rdp"
    max_participations: int | None = None
    unit: str = "user"
    example_noise_multiplier: float = 1.0
    example_clip_norm: float = 1.0

    @property
    def enabled(self) -> bool:
        """True when any DP mechanism runs (``mode != "off"``)."""
        return self.mode != "off"

    def validate(self, population: int) -> None:
        """Check every field against a population of ``population`` users.

        Raises
        ------
        PrivacyError
            Naming the first offending field, its value and the accepted range.
        """
        if int(population) < 1:
            raise PrivacyError(f"population {population} must be >= 1")
        if self.mode not in MODES:
            raise PrivacyError(f"privacy.mode {self.mode!r} is not one of {'|'.join(MODES)}")
        if self.accountant not in ACCOUNTANTS:
            raise PrivacyError(
                f"privacy.accountant {self.accountant!r} is not one of {'|'.join(ACCOUNTANTS)}"
            )
        if self.unit not in UNITS:
            raise PrivacyError(f"privacy.unit {self.unit!r} is not one of {'|'.join(UNITS)}")
        z = float(self.noise_multiplier)
        if not math.isfinite(z) or z < 0:
            raise PrivacyError(f"privacy.noise_multiplier {z} must be finite and >= 0")
        if self.enabled and z == 0:
            # Allowed as the no-noise end of a privacy-utility sweep (clipping and Poisson sampling
            # still run); the accountant reports epsilon = inf and any target_epsilon stops round 1.
            logger.warning(
                "privacy.noise_multiplier=0 with privacy.mode=%s gives no privacy (epsilon = inf); "
                "set a positive noise_multiplier for a guarantee",
                self.mode,
            )
        if self.unit == "example":
            for name in ("example_noise_multiplier", "example_clip_norm"):
                v = float(getattr(self, name))
                if not math.isfinite(v) or v <= 0:
                    raise PrivacyError(f"privacy.{name} {v} must be finite and > 0 with privacy.unit=example")
        c = float(self.clip_norm)
        if not math.isfinite(c) or c <= 0:
            raise PrivacyError(f"privacy.clip_norm {c} must be finite and > 0")
        q = float(self.sample_rate)
        if not 0.0 < q <= 1.0:
            raise PrivacyError(f"privacy.sample_rate {q} must be in (0, 1]")
        if int(self.min_survivors) < 0:
            raise PrivacyError(f"privacy.min_survivors {self.min_survivors} must be >= 0")
        if int(self.min_survivors) > population:
            raise PrivacyError(
                f"privacy.min_survivors {self.min_survivors} exceeds the population "
                f"{population}; lower it (0 means expected users per round)"
            )
        if self.target_epsilon is not None and not float(self.target_epsilon) > 0:
            raise PrivacyError(f"privacy.target_epsilon {self.target_epsilon} must be > 0 or null")
        if self.delta is not None and not 0.0 < float(self.delta) < 1.0:
            raise PrivacyError(f"privacy.delta {self.delta} must be in (0, 1) or null")
        if self.max_participations is not None and int(self.max_participations) < 1:
            raise PrivacyError(
                f"privacy.max_participations {self.max_participations} must be >= 1 or null"
            )

    def resolved_delta(self, population: int) -> float:
        """``delta`` if set, else ``1 / population**1.1``."""
        return float(self.delta) if self.delta is not None else default_delta(population)

    def resolved_min_survivors(self, population: int) -> int:
        """m_min: ``min_survivors`` if > 0, else ``max(1, floor(q * population))``.

        Flooring the expected count errs towards more noise per user.
        """
        if self.min_survivors > 0:
            return int(self.min_survivors)
        return max(1, math.floor(self.sample_rate * population))
