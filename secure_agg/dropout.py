"""Dropout injection for simulations, tests and benchmarks (pure, seeded)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from secure_agg.config import STAGES
from secure_agg.errors import SecAggConfigError


def inject_dropouts(
    user_ids: Sequence[int], stage: str, fraction: float, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Split ``user_ids`` into (kept, dropped) before ``stage``: round(fraction * n) users drop.

    Exactly round(fraction * n) users, chosen uniformly without replacement by ``rng`` (a seeded
    generator is right here: which users drop is simulation, not secret). Both lists are sorted.
    """
    if stage not in STAGES:
        raise SecAggConfigError(f"unknown stage {stage!r}; stages are {STAGES}")
    if not 0.0 <= fraction <= 1.0:
        raise SecAggConfigError(f"dropout fraction {fraction} for stage {stage!r} not in [0, 1]")
    ids = sorted(int(u) for u in user_ids)
    n_drop = int(round(fraction * len(ids)))
    drop_idx = rng.choice(len(ids), size=n_drop, replace=False) if n_drop else []
    dropped = sorted(ids[i] for i in drop_idx)
    gone = set(dropped)
    return [u for u in ids if u not in gone], dropped
