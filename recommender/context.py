"""Context strategy: what is trending in the window before the request time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SECONDS_PER_DAY = 86_400


@dataclass
class ContextConfig:
    """Trending parameters (config group ``recommender.context``).

    Parameters
    ----------
    window_days : float
        Interactions in ``[t - window, t)`` count as trending (default 14 days).
    popularity_prior : float
        Weight of the all-time popularity share added to break ties and fill quiet windows.
    """

    window_days: float = 14.0
    popularity_prior: float = 0.05


def trending_scores(item_times_sorted: np.ndarray, items_by_time: np.ndarray, n_items: int,
                    now: float, window_s: float) -> np.ndarray:  # fmt: skip
    """Interaction count per item in ``[now - window_s, now)``, shape (I,).

    Parameters
    ----------
    item_times_sorted : np.ndarray[int64], shape (n,)
        Timestamps of the platform's interactions, ascending.
    items_by_time : np.ndarray[int], shape (n,)
        Item of each, aligned.
    """
    lo = np.searchsorted(item_times_sorted, now - window_s, "left")
    hi = np.searchsorted(item_times_sorted, now, "left")
    return np.bincount(items_by_time[lo:hi], minlength=n_items).astype(np.float64)


class ContextStrategy:
    """Trending-before-request-time scorer over the platform's interaction log.

    Parameters
    ----------
    items, timestamps : np.ndarray, shape (n,)
        The platform's interactions (train split in the demo).
    n_items : int
    cfg : ContextConfig
    """

    name = "context"

    def __init__(self, items: np.ndarray, timestamps: np.ndarray, n_items: int,
                 cfg: ContextConfig | None = None) -> None:  # fmt: skip
        order = np.argsort(timestamps, kind="stable")
        self.times = np.asarray(timestamps)[order]
        self.items = np.asarray(items)[order]
        self.n_items = n_items
        self.cfg = cfg or ContextConfig()
        pop = np.bincount(self.items, minlength=n_items).astype(np.float64)
        self.popularity = pop / max(pop.max(), 1.0)

    @property
    def last_time(self) -> int:
        return int(self.times[-1]) if len(self.times) else 0

    def score(self, now: float | None = None, device: str | None = None) -> np.ndarray:
        """Trending scores at time ``now`` (default: just after the last logged interaction), (I,).

        A request after the end of the log sees the log's last window. ``device`` is accepted for
        the request contract; ML-100K has no per-device signal, so it does not change the scores.
        """
        del device
        now = self.last_time + 1 if now is None else min(float(now), self.last_time + 1)
        window = self.cfg.window_days * SECONDS_PER_DAY
        counts = trending_scores(self.times, self.items, self.n_items, now, window)
        trend = counts / max(counts.max(), 1.0)
        return (trend + self.cfg.popularity_prior * self.popularity).astype(np.float32)

    def score_popularity(self) -> np.ndarray:
        """All-time popularity, shape (I,) (the cold-start and benchmark baseline)."""
        return self.popularity.astype(np.float32)
