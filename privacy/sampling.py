"""Per-round user selection: Poisson (what DP accounting assumes) or fixed size."""

from __future__ import annotations

import numpy as np

from privacy.errors import PrivacyError

__all__ = ["fixed_size_sample", "poisson_sample", "sample_users"]


def _check_population(population: int) -> int:
    if int(population) < 1:
        raise PrivacyError(f"population {population} must be >= 1")
    return int(population)


def poisson_sample(population: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Include each user independently with probability ``rate``.

    This is the sampling the accountant's amplification analysis assumes: the
    round size is Binomial(N, q) and may be 0.

    Parameters
    ----------
    population : int
        N >= 1; users are ``0 .. N-1``.
    rate : float
        q in [0, 1].
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray, shape [k], int64
        Sorted ids of the selected users.
    """
    n = _check_population(population)
    q = float(rate)
    if not 0.0 <= q <= 1.0:
        raise PrivacyError(f"privacy.sample_rate {q} must be in [0, 1]")
    return np.flatnonzero(rng.random(n) < q).astype(np.int64)


def fixed_size_sample(population: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Choose exactly ``size`` distinct users uniformly (no amplification analysis).

    Returns
    -------
    numpy.ndarray, shape [size], int64
        Sorted ids of the selected users.
    """
    n = _check_population(population)
    k = int(size)
    if not 0 <= k <= n:
        raise PrivacyError(f"sample size {k} must be in [0, population {n}]")
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


def sample_users(
    mode_dp_on: bool,
    population: int,
    rng: np.random.Generator,
    rate: float,
    size: int | None = None,
) -> np.ndarray:
    """Select a round's users: Poisson(``rate``) when DP is on, else fixed size.

    Parameters
    ----------
    mode_dp_on : bool
        ``PrivacyConfig.enabled``.
    population : int
        N.
    rng : numpy.random.Generator
    rate : float
        q, the Poisson rate (DP on) and the default fraction when DP is off.
    size : int or None
        Fixed round size when DP is off; None means ``max(1, round(q * N))``.

    Returns
    -------
    numpy.ndarray, int64, sorted user ids
    """
    if mode_dp_on:
        return poisson_sample(population, rate, rng)
    n = _check_population(population)
    k = max(1, round(float(rate) * n)) if size is None else int(size)
    return fixed_size_sample(n, min(k, n), rng)
