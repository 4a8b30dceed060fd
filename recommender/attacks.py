"""Poisoning attacks on a federated recommender: who is malicious, which items they push, their fake data.

Pure functions on numpy arrays; the model-poisoning transforms of an update live next to the update
pipeline in ``client/attacks.py``.
"""

from __future__ import annotations

import numpy as np

MODEL_POISONING = ("boosted", "sign_flip", "gaussian", "targeted_promotion")
DATA_POISONING = ("item_promotion", "targeted_promotion")
ATTACKS = ("none", "boosted", "sign_flip", "gaussian", "item_promotion", "targeted_promotion")


class AttackConfigError(ValueError):
    """An attack setting that cannot work; the message names the key."""


def malicious_users(population: int, fraction: float, seed: int) -> np.ndarray:
    """The ``round(fraction * population)`` malicious users, drawn with ``seed``; sorted int64.

    The same seed gives nested sets for growing fractions (a prefix of one permutation), so the
    honest users of f=0.3 are honest at f=0.1 too and runs compare on comparable populations.
    """
    if not 0.0 <= fraction < 1.0:
        raise AttackConfigError(f"attack.fraction={fraction} must be in [0, 1)")
    k = int(round(fraction * population))
    return np.sort(np.random.default_rng([seed, 4242]).permutation(population)[:k]).astype(np.int64)


def choose_targets(popularity: np.ndarray, n_targets: int, seed: int) -> np.ndarray:
    """Target items of a promotion attack: ``n_targets`` items drawn from the less popular half.

    Parameters
    ----------
    popularity : np.ndarray[int], shape (I,)
        Training interactions per item.
    n_targets : int
    seed : int

    Returns
    -------
    np.ndarray[int64], shape (n_targets,), sorted. Unpopular items are the ones an attacker pays
    to promote, and their clean exposure is near 0, so a rise is the attack's doing.
    """
    order = np.argsort(popularity, kind="stable")
    pool = order[popularity[order] > 0][: max(n_targets, len(order) // 2)]
    if len(pool) < n_targets:
        raise AttackConfigError(f"attack.params.n_targets={n_targets} exceeds the {len(pool)} candidate items")
    return np.sort(np.random.default_rng([seed, 977]).choice(pool, n_targets, replace=False)).astype(np.int64)


def promote_items(positives: np.ndarray, targets: np.ndarray, repeat: int = 1) -> np.ndarray:
    """Fake interactions: the user's positives plus every target item ``repeat`` times.

    Parameters
    ----------
    positives : np.ndarray[int], shape (P,)
    targets : np.ndarray[int], shape (T,)
    repeat : int
        Copies of each target: a fake profile that rates the targets more often trains their rows
        harder every epoch.

    Returns
    -------
    np.ndarray[int64], shape (P' + T * repeat,), the positives without any target, then the targets.
    """
    if repeat < 1:
        raise AttackConfigError(f"attack.params.repeat={repeat} must be >= 1")
    keep = positives[~np.isin(positives, targets)].astype(np.int64)
    return np.concatenate([keep, np.tile(targets.astype(np.int64), repeat)])


def exposure_hits(top_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Whether each user's top-k list holds a target item: (U, k) -> bool (U,). ER@k is its mean."""
    return np.isin(top_items, targets).any(axis=1)
