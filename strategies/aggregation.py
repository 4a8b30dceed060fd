"""Streaming weighted aggregation: a running sum in O(d) memory, never a list of n updates."""

from __future__ import annotations

import numpy as np


class StreamingWeightedSum:
    """Running sum of weighted updates and of their weights.

    Parameters
    ----------
    dim : int
        Length d of the flat update vector.

    Notes
    -----
    ``add`` takes either one update with its weight or a node's pre-summed contribution
    ``sum_u w_u x_u`` together with ``sum_u w_u``; both are exact, because a weighted mean only
    needs the two sums. Accumulation is in float64 so that summing thousands of float32 updates
    does not lose precision relative to the reference mean.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.total = np.zeros(dim, np.float64)
        self.weight = 0.0
        self.count = 0

    def add(self, weighted_update: np.ndarray, weight: float, count: int = 1) -> None:
        """Add ``weighted_update`` (already multiplied by its weight), shape (d,)."""
        if weighted_update.shape != (self.dim,):
            raise ValueError(f"update has shape {weighted_update.shape}, expected ({self.dim},)")
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"aggregation weight must be finite and >= 0, got {weight}")
        self.total += weighted_update
        self.weight += float(weight)
        self.count += count

    def mean(self, denominator: float | None = None) -> np.ndarray | None:
        """The weighted mean ``sum w x / sum w`` (or ``/ denominator``); None if nothing arrived."""
        denom = self.weight if denominator is None else denominator
        if self.count == 0 or denom <= 0:
            return None
        return (self.total / denom).astype(np.float32)


def weighted_mean_reference(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Reference weighted mean of stacked updates (U, d); used by tests to check the stream."""
    return (weights[:, None] * updates).sum(0) / weights.sum()
