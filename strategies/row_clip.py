"""Per-item-row clipping: bound each user's delta on one item row by what that row's users sent.

A targeted promotion boosts a handful of item rows of an otherwise honest update. Those rows carry
a tiny share of the update's energy, so update-level cosine and norm scores do not see them. Here
every item row is judged on its own: a user's row-delta norm is compared with ``factor`` x the
median norm of the users who touched that row this round (the median is robust while attackers
are fewer than half of a row's users), and a row above the bound is scaled down to it. Clipping is
row-level, so an honest user whose one row is unusual keeps all its other rows.

Why a multiple of the median and not median + k x MAD: honest row norms are heavy-tailed (ML-100K,
round 1, 400 users, ``fedrec bench row-norms``: the 95th / 99th percentile of norm / row median is
2.7 / 3.2 for positive and 2.3 / 3.4 for negative-sample rows), so a MAD bound with k = 3 clips
15.5% of honest rows; 4 x the median clips 0.4%.

The flat shared vector starts with ``gmf_item`` (I, f) then ``mlp_item`` (I, 2f) (see
``recommender.ncf.NeuMFShape``); item i's row is ``gmf_item[i]`` together with ``mlp_item[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _item_views(deltas: np.ndarray, n_items: int, factors: int) -> tuple[np.ndarray, np.ndarray]:
    """(U, I, f) and (U, I, 2f) views of the two item-embedding blocks of ``deltas`` (U, d)."""
    u, n, f = deltas.shape[0], n_items, factors
    if deltas.shape[1] < 3 * n * f:
        raise ValueError(f"deltas have {deltas.shape[1]} columns, fewer than the item block 3*{n}*{f}")
    return deltas[:, : n * f].reshape(u, n, f), deltas[:, n * f : 3 * n * f].reshape(u, n, 2 * f)


def item_row_norms(deltas: np.ndarray, n_items: int, factors: int) -> np.ndarray:
    """L2 norm of every user's delta on every item row.

    Parameters
    ----------
    deltas : np.ndarray[float32], shape (U, d)
        Unweighted per-user updates, item block first.
    n_items, factors : int
        Catalogue size I and GMF factor f (an item row has f + 2f floats).

    Returns
    -------
    np.ndarray[float64], shape (U, I); 0 where the user did not touch the row.
    """
    gmf, mlp = _item_views(deltas, n_items, factors)
    sq = np.einsum("uif,uif->ui", gmf, gmf).astype(np.float64) + np.einsum("uif,uif->ui", mlp, mlp)
    return np.sqrt(sq)


def row_bounds(norms: np.ndarray, factor: float, min_users: int = 5) -> np.ndarray:
    """Per-row bound ``factor * median`` of the row's norms over the users who touched it.

    Parameters
    ----------
    norms : np.ndarray, shape (U, I)
        Row-delta norms (0 = untouched, not counted).
    factor : float
        Multiple of the row's median norm above which a row is an outlier.
    min_users : int
        Rows touched by fewer users get bound +inf (too little evidence to call anything an outlier).

    Returns
    -------
    np.ndarray[float64], shape (I,)
    """
    touched = norms > 0
    count = touched.sum(axis=0)
    x = np.where(touched, norms, np.nan)
    bound = np.full(norms.shape[1], np.inf)
    ok = count >= max(min_users, 1)
    if ok.any():
        bound[ok] = factor * np.nanmedian(x[:, ok], axis=0)
    return bound


def row_clip_factors(norms: np.ndarray, factor: float, min_users: int = 5,
                     zero_factor: float = np.inf) -> np.ndarray:  # fmt: skip
    """Scale of every (user, row): ``min(1, factor * median_row / norm)``, and 0 where the norm
    exceeds ``zero_factor * median_row``; 1 for untouched rows. ``factor=inf`` only zeroes.

    Returns
    -------
    np.ndarray[float64], shape (U, I), in [0, 1].
    """
    med = row_bounds(norms, 1.0, min_users)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(norms > factor * med, factor * med / norms, 1.0)
    return np.where(norms > zero_factor * med, 0.0, s)


def clip_item_rows(deltas: np.ndarray, factors_ui: np.ndarray, n_items: int, factors: int) -> int:
    """Scale ``deltas``' item rows in place by ``factors_ui`` (U, I); returns how many rows changed."""
    uu, ii = np.nonzero(factors_ui < 1.0)
    if len(uu):
        gmf, mlp = _item_views(deltas, n_items, factors)
        s = factors_ui[uu, ii].astype(deltas.dtype)[:, None]
        gmf[uu, ii] *= s
        mlp[uu, ii] *= s
    return len(uu)


@dataclass
class RowClipStats:
    """What one round's row clipping did: rows changed (of them ``zeroed``), users with a changed
    row, rows touched."""

    rows: int
    users: int
    touched: int
    zeroed: int = 0


class ItemRowClip:
    """Clip every user's item rows to ``factor`` x the median of that row's norms this round, and
    zero rows above ``zero_factor`` x the median.

    Parameters
    ----------
    n_items, factors : int
        Model shape (the item block is ``3 * n_items * factors`` floats at the start of the vector).
    factor : float, default 4.0
        Bound as a multiple of the row's median norm. A promoter's unboosted target row (3 fake
        interactions) is ~2x its row's median, so boosted x10 it sits ~20x above; an honest row is
        above 4x only in the 0.4% tail. An attacker who stays under 4x (boost <= ~2) is not clipped.
        ``inf`` (config 0): no clipping.
    zero_factor : float, default inf
        Rows above this multiple of the median are dropped (scale 0), not clipped: a row that far
        out is an attack, not a large honest step, and clipping would still let it push at the bound.
    min_users : int, default 5
        Rows touched by fewer users this round are left alone.
    """

    def __init__(self, n_items: int, factors: int, factor: float = 4.0, min_users: int = 5,
                 zero_factor: float = np.inf) -> None:  # fmt: skip
        if factor <= 0 or zero_factor <= 0:
            raise ValueError(f"strategy.trust.row_clip_factor={factor} and row_zero_factor={zero_factor} must be > 0")
        if min_users < 1:
            raise ValueError(f"strategy.trust.row_clip_min_users={min_users} must be >= 1")
        self.n_items, self.factors, self.factor, self.min_users = n_items, factors, factor, min_users
        self.zero_factor = zero_factor

    def __call__(self, deltas: np.ndarray) -> RowClipStats:
        """Clip ``deltas`` (U, d) float32 in place; returns what was clipped."""
        norms = item_row_norms(deltas, self.n_items, self.factors)
        s = row_clip_factors(norms, self.factor, self.min_users, self.zero_factor)
        rows = clip_item_rows(deltas, s, self.n_items, self.factors)
        return RowClipStats(rows=rows, users=int((s < 1.0).any(axis=1).sum()), touched=int((norms > 0).sum()),
                            zeroed=int(((s == 0.0) & (norms > 0)).sum()))  # fmt: skip
