"""Item trust: a score in [0, 1] from documented catalogue signals; filter and boost by it.

Signals (all computed from the catalogue and the platform's interactions, weights configurable):

* ``support``   -- how many users interacted: ``min(1, log1p(n) / log1p(support_ref))``;
* ``quality``   -- Bayesian-shrunk mean rating ``(n * mean + m * prior) / (n + m)`` scaled from
  [1, 5] to [0, 1] (few ratings pull towards the catalogue prior instead of an extreme);
* ``metadata``  -- completeness: known release year, a real genre, a knowledge-graph link
  (each one third; the KG part counts as present when the catalogue has no KG at all).

``trust = sum_s w_s * signal_s / sum_s w_s``. Items under ``min_trust`` (0.6) are dropped from the
recommendation; items at or above ``boost_above`` get their relevance multiplied by
``1 + boost`` (10%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrustConfig:
    """Item-trust parameters (config group ``recommender.trust``).

    Parameters
    ----------
    w_support, w_quality, w_metadata : float
        Signal weights (normalised by their sum). Defaults 0.4 / 0.3 / 0.3.
    support_ref : float
        Interaction count that earns full support (default 20).
    prior_strength : float
        Pseudo-count m of the Bayesian mean rating (default 10).
    min_trust : float
        Items below are dropped (default 0.6).
    boost_above : float
        Items at or above are boosted (default 0.8).
    boost : float
        Relative relevance boost of high-trust items (default 0.10).
    enabled : bool
        Off -> every item trust 1, nothing dropped or boosted.
    """

    w_support: float = 0.4
    w_quality: float = 0.3
    w_metadata: float = 0.3
    support_ref: float = 20.0
    prior_strength: float = 10.0
    min_trust: float = 0.6
    boost_above: float = 0.8
    boost: float = 0.10
    enabled: bool = True


def item_trust(n_ratings: np.ndarray, mean_rating: np.ndarray, has_year: np.ndarray,
               has_genre: np.ndarray, has_kg: np.ndarray | None, cfg: TrustConfig) -> np.ndarray:  # fmt: skip
    """Trust score per item.

    Parameters
    ----------
    n_ratings, mean_rating : np.ndarray[float], shape (I,)
    has_year, has_genre : np.ndarray[bool], shape (I,)
    has_kg : np.ndarray[bool], shape (I,) or None
        None (no knowledge graph in the catalogue) counts as present for every item.

    Returns
    -------
    np.ndarray[float64], shape (I,), values in [0, 1]
    """
    n = np.asarray(n_ratings, np.float64)
    if not cfg.enabled:
        return np.ones(len(n))
    support = np.minimum(1.0, np.log1p(n) / np.log1p(cfg.support_ref))
    m = cfg.prior_strength
    prior = float(np.average(mean_rating, weights=n)) if n.sum() > 0 else 3.0
    shrunk = (n * np.asarray(mean_rating, np.float64) + m * prior) / (n + m)
    quality = np.clip((shrunk - 1.0) / 4.0, 0.0, 1.0)
    kg = np.ones(len(n)) if has_kg is None else np.asarray(has_kg, np.float64)
    metadata = (np.asarray(has_year, np.float64) + np.asarray(has_genre, np.float64) + kg) / 3.0
    w = np.array([cfg.w_support, cfg.w_quality, cfg.w_metadata], np.float64)
    return (w[0] * support + w[1] * quality + w[2] * metadata) / w.sum()


def apply_trust(relevance: np.ndarray, trust: np.ndarray, cfg: TrustConfig) -> np.ndarray:
    """Drop low-trust items and boost high-trust ones.

    Parameters
    ----------
    relevance : np.ndarray[float], shape (..., I)
        Non-negative relevance (e.g. RRF); entries with trust < ``min_trust`` become ``-inf``.
    trust : np.ndarray[float], shape (I,)

    Returns
    -------
    np.ndarray[float64], shape (..., I)
    """
    rel = np.asarray(relevance, np.float64)
    if not cfg.enabled:
        return rel.copy()
    factor = np.where(trust >= cfg.boost_above, 1.0 + cfg.boost, 1.0)
    out = rel * factor
    return np.where(trust < cfg.min_trust, -np.inf, out)
