"""Example-level accounting for DP-SGD inside local training (``privacy.unit=example``).

A user who took part in ``c`` rounds ran ``c * E * ceil(n_u / B)`` DP-SGD steps over its ``n_u``
records, each step a Poisson-subsampled Gaussian with ``(sigma, q_u = min(1, B / n_u))``. So the
participation ledger and the users' record counts give every user's example-level epsilon with no
state of their own (Opacus RDP, ``rdp_epsilon``). No amplification from the server's user sampling
is claimed at this level. Training itself is in ``client/example_dp.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from privacy.accountant import rdp_epsilon

__all__ = [
    "EXAMPLE_ALPHAS",
    "example_epsilons",
    "example_level_summary",
    "example_sample_rate",
    "example_steps_per_round",
]

# Integer RDP orders: one subsampled-Gaussian curve costs ~10 ms instead of ~0.4 s with Opacus's
# fractional defaults, which matters with one sampling rate per distinct record count (epsilon
# differs from the default orders by about 1%, always upwards: fewer orders is a valid, looser min).
EXAMPLE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in range(2, 65))


def example_sample_rate(n_records: int, batch_size: int) -> float:
    """Poisson rate of one DP-SGD step over a user's ``n_records`` records: ``min(1, B / n)``."""
    return min(1.0, float(batch_size) / max(int(n_records), 1))


def example_steps_per_round(n_records: int, batch_size: int, epochs: int) -> int:
    """DP-SGD steps a user runs in one round: ``E * ceil(n / B)`` (as Opacus's Poisson loader)."""
    return int(epochs) * max(1, math.ceil(int(n_records) / int(batch_size)))


def example_epsilons(
    n_records: np.ndarray,
    participations: np.ndarray,
    noise_multiplier: float,
    delta: float,
    batch_size: int,
    epochs: int,
) -> np.ndarray:
    """Example-level epsilon of every user, shape [U] (0 for users who never took part).

    User u's history is ``[(sigma, q_u, c_u * steps_per_round(n_u))]``; users sharing
    ``(n_u, c_u)`` share an epsilon, so each distinct pair is computed once.
    """
    n = np.asarray(n_records, dtype=np.int64).reshape(-1)
    c = np.asarray(participations, dtype=np.int64).reshape(-1)
    if n.size == 0:
        return np.zeros(0, dtype=np.float64)
    pairs, inverse = np.unique(np.stack([n, c], 1), axis=0, return_inverse=True)
    eps = np.zeros(len(pairs), dtype=np.float64)
    for i, (n_u, c_u) in enumerate(pairs):
        if c_u == 0 or n_u == 0:
            continue
        steps = int(c_u) * example_steps_per_round(int(n_u), batch_size, epochs)
        q = example_sample_rate(int(n_u), batch_size)
        eps[i] = rdp_epsilon([(float(noise_multiplier), q, steps)], delta, alphas=EXAMPLE_ALPHAS)
    return eps[inverse.reshape(-1)]


def example_level_summary(
    n_records: np.ndarray,
    participations: np.ndarray,
    noise_multiplier: float,
    clip_norm: float,
    delta: float,
    batch_size: int,
    epochs: int,
) -> dict[str, Any]:
    """JSON-able summary of the per-user example-level accountants, with a one-sentence guarantee."""
    eps = example_epsilons(n_records, participations, noise_multiplier, delta, batch_size, epochs)
    took_part = np.asarray(participations).reshape(-1) > 0
    vals = eps[took_part]
    worst = float(vals.max()) if vals.size else 0.0
    median = float(np.median(vals)) if vals.size else 0.0
    sentence = (
        f"Every user's sequence of updates is ({worst:.2f}, {delta:.3g})-DP with respect to any one "
        f"of the user's ratings (DP-SGD, sigma={noise_multiplier:g}, per-example clip {clip_norm:g}, "
        f"batch {batch_size}, {epochs} epoch(s) per round; worst user, median user {median:.2f}; "
        "RDP, no amplification by the server's user sampling)."
    )
    return {
        "noise_multiplier": float(noise_multiplier),
        "clip_norm": float(clip_norm),
        "delta": float(delta),
        "users_trained": int(took_part.sum()),
        "epsilon_max": worst,
        "epsilon_median": median,
        "sentence": sentence,
    }
