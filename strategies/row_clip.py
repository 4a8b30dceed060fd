"""Per-item-row clipping: bound each user's delta on one item row, row by row.

A targeted promotion boosts a handful of item rows of an otherwise honest update. Those rows carry
a tiny share of the update's energy, so update-level cosine and norm scores do not see them. Here
every (user, item row) is judged on its own and a row above its bound is scaled down to it (or
dropped above ``zero_factor``). Clipping is row-level, so a user keeps all its other rows.

Two references for the bound, both robust statistics of norms (``fedrec bench row-norms`` measures
them on ML-100K):

``user`` (default): ``factor`` x the user's own 90th-percentile row norm. A promoter's boosted
    target rows stand out against its own honest rows (at round 9 of a clean run its unboosted
    fake rows are already a median 6.6x its own q90, so x10 they are ~66x), while 99% of honest
    positive rows are below 2.7x. The attacker cannot move other users' statistics, only its own.
``row``: ``factor`` x the median norm of that item row over the round's users who touched it
    (robust while attackers are under half of a row's users). Honest rows are heavy-tailed against
    it (round 9: 99th percentile 50x for positive rows, which are a minority of a row's users next to
    negative samples), so any bound that catches promoters also clips many honest positive rows.

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


def user_row_quantile(norms: np.ndarray, q: float) -> np.ndarray:
    """Each user's ``q``-th percentile of its own touched row norms, shape (U,); 0 if none touched."""
    x = np.where(norms > 0, norms, np.nan)
    out = np.zeros(norms.shape[0])
    ok = (norms > 0).any(axis=1)
    out[ok] = np.nanpercentile(x[ok], q, axis=1)
    return out


def reference_norms(norms: np.ndarray, reference: str = "user", min_users: int = 5,
                    quantile: float = 90.0) -> np.ndarray:  # fmt: skip
    """The norm each (user, row) is compared with, broadcastable to (U, I).

    ``user``: the user's own ``quantile``-th percentile row norm, (U, 1). ``row``: the row's median
    over its users, (1, I) (+inf for rows with fewer than ``min_users`` users).
    """
    if reference == "user":
        return user_row_quantile(norms, quantile)[:, None]
    if reference == "row":
        return row_bounds(norms, 1.0, min_users)[None, :]
    raise ValueError(f"strategy.trust.row_clip_reference={reference!r}: choose user or row")


def row_clip_factors(norms: np.ndarray, factor: float, min_users: int = 5, zero_factor: float = np.inf,
                     reference: str = "row", quantile: float = 90.0) -> np.ndarray:  # fmt: skip
    """Scale of every (user, row): ``min(1, factor * ref / norm)``, and 0 where the norm exceeds
    ``zero_factor * ref`` (``ref`` from ``reference_norms``); 1 for untouched rows. ``factor=inf``
    only zeroes.

    Returns
    -------
    np.ndarray[float64], shape (U, I), in [0, 1].
    """
    ref = reference_norms(norms, reference, min_users, quantile)
    with np.errstate(divide="ignore", invalid="ignore"):  # inf * 0 (no bound, no touched row) is nan: no change
        s = np.where(norms > factor * ref, factor * ref / norms, 1.0)
        return np.where(norms > zero_factor * ref, 0.0, s)


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
    row, rows touched, and the share of the item rows' summed squared norm that clipping removed."""

    rows: int
    users: int
    touched: int
    zeroed: int = 0
    energy_removed: float = 0.0


class ItemRowClip:
    """Clip every user's item rows to ``factor`` x a reference norm, and zero rows above
    ``zero_factor`` x it (see the module docstring for the two references).

    Parameters
    ----------
    n_items, factors : int
        Model shape (the item block is ``3 * n_items * factors`` floats at the start of the vector).
    factor : float, default 3.0
        Bound as a multiple of the reference. With ``reference="user"``, 0.2% of honest rows are
        above 3x (round 1 and round 9 of a clean ML-100K run); a promoter boosting its target rows
        x10 is at ~20x (round 1) to ~66x (round 9). ``inf`` (config 0): no clipping.
    min_users : int, default 5
        ``row`` reference: rows touched by fewer users this round are left alone.
    zero_factor : float, default inf
        Rows above this multiple of the reference are dropped (scale 0), not clipped.
    reference : {"user", "row"}, default "user"
    quantile : float, default 90
        ``user`` reference: the percentile of the user's own touched row norms.
    """

    def __init__(self, n_items: int, factors: int, factor: float = 3.0, min_users: int = 5,
                 zero_factor: float = np.inf, reference: str = "user", quantile: float = 90.0) -> None:  # fmt: skip
        if factor <= 0 or zero_factor <= 0:
            raise ValueError(f"strategy.trust.row_clip_factor={factor} and row_zero_factor={zero_factor} must be > 0")
        if min_users < 1:
            raise ValueError(f"strategy.trust.row_clip_min_users={min_users} must be >= 1")
        if reference not in ("user", "row"):
            raise ValueError(f"strategy.trust.row_clip_reference={reference!r}: choose user or row")
        if not 0 < quantile <= 100:
            raise ValueError(f"row clip quantile={quantile} must be in (0, 100]")
        self.n_items, self.factors, self.factor, self.min_users = n_items, factors, factor, min_users
        self.zero_factor, self.reference, self.quantile = zero_factor, reference, quantile

    def __call__(self, deltas: np.ndarray) -> RowClipStats:
        """Clip ``deltas`` (U, d) float32 in place; returns what was clipped."""
        norms = item_row_norms(deltas, self.n_items, self.factors)
        s = row_clip_factors(norms, self.factor, self.min_users, self.zero_factor, self.reference, self.quantile)
        rows = clip_item_rows(deltas, s, self.n_items, self.factors)
        sq = norms**2
        total = float(sq.sum())
        removed = float((sq * (1.0 - s**2)).sum()) / total if total > 0 else 0.0
        return RowClipStats(rows=rows, users=int((s < 1.0).any(axis=1).sum()), touched=int((norms > 0).sum()),
                            zeroed=int(((s == 0.0) & (norms > 0)).sum()), energy_removed=removed)  # fmt: skip
