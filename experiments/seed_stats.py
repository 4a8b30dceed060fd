"""Mean and spread over seeds: the one definition every results table uses."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value).

    Parameters
    ----------
    values : sequence of float
        One value per seed; must not be empty.

    Returns
    -------
    (mean, sd) : tuple of float
    """
    vals = [float(v) for v in values]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)
