"""Update-based trust: score each user's update of this round against a robust reference."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from strategies.trust import TrustScorer


def cosine_to_reference(deltas: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``deltas`` (U, d) to ``reference`` (d,) -> (U,) in [-1, 1].

    A zero row or a zero reference has cosine 0 (no evidence either way).
    """
    norms = np.linalg.norm(deltas, axis=1)
    ref_norm = float(np.linalg.norm(reference))
    dots = deltas @ reference.astype(deltas.dtype, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where((norms > 0) & (ref_norm > 0), dots / (norms * ref_norm), 0.0)
    return np.clip(cos, -1.0, 1.0).astype(np.float64)


def cosine_score(cos: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear ramp: 0 at cosine ``low`` or below, 1 at ``high`` or above, shape preserved.

    Honest users of a recommender disagree a lot (ML-100K round 3: ~7% of honest updates have
    cosine < -0.1 to the round's median), so the ramp sits low: it is meant to zero updates that
    point *against* the consensus (sign flips), not to reward agreement.
    """
    return np.clip((cos - low) / (high - low), 0.0, 1.0)


def relative_cosine_score(cos: np.ndarray, z_low: float, z_high: float) -> np.ndarray:
    """Ramp on the round's robust z-score ``z = (cos - median) / (1.4826 * MAD)``: 0 at ``-z_low``
    or below, 1 at ``-z_high`` or above. ``z_low = 0`` turns it off (all 0, so only the absolute
    ramp counts).

    Honest cosines to the median spread out as training goes on (ML-100K, 8 rounds: the median
    falls to ~0.46 and 16% of honest updates sit below -0.1), so a fixed ramp excludes more and more
    honest users; a ramp relative to the round's own distribution excludes a roughly constant share.
    """
    if z_low <= 0 or len(cos) == 0:
        return np.zeros_like(cos, dtype=np.float64)
    if not z_low > z_high:
        raise ValueError(f"cos_z_low={z_low} must be > cos_z_high={z_high}")
    med = float(np.median(cos))
    scale = 1.4826 * float(np.median(np.abs(cos - med)))
    if scale <= 0:
        return np.where(cos >= med, 1.0, 0.0)
    z = (cos - med) / scale
    return np.clip((z + z_low) / (z_low - z_high), 0.0, 1.0)


def norm_score(norms: np.ndarray, factor: float) -> np.ndarray:
    """``min(1, factor * median(norms) / norm_u)`` in [0, 1]: 1 for ordinary norms, falling like
    1/norm beyond ``factor`` x the round's median, so an accepted update's weighted contribution is
    bounded by about ``factor`` x a typical one (a soft, data-driven clip against boosting)."""
    med = float(np.median(norms)) if len(norms) else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(norms > 0, factor * med / norms, 1.0)
    return np.clip(s, 0.0, 1.0)


def update_trust_components(deltas: np.ndarray, reference: np.ndarray | None = None, cos_low: float = -0.4,
                            cos_high: float = 0.1, norm_factor: float = 3.0, cos_z_low: float = 0.0,
                            cos_z_high: float = 1.5) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The two parts of ``update_trust_scores``: the cosine (direction) score and the norm score.

    Returns
    -------
    (cos_score, norm_score) : two np.ndarray[float64] of shape (U,), in [0, 1]
        ``cos_score = max(absolute ramp, relative ramp)``; see ``update_trust_scores`` for the
        parameters.
    """
    if len(deltas) == 0:
        return np.zeros(0), np.zeros(0)
    ref = np.median(deltas, axis=0) if reference is None else reference
    cos = cosine_to_reference(deltas, ref)
    cos_s = np.maximum(cosine_score(cos, cos_low, cos_high), relative_cosine_score(cos, cos_z_low, cos_z_high))
    return cos_s, norm_score(np.linalg.norm(deltas, axis=1), norm_factor)


def update_trust_scores(deltas: np.ndarray, reference: np.ndarray | None = None, cos_low: float = -0.4,
                        cos_high: float = 0.1, norm_factor: float = 3.0, cos_z_low: float = 0.0,
                        cos_z_high: float = 1.5) -> np.ndarray:  # fmt: skip
    """Trust in [0, 1] of each user's update: ``min(cosine score, norm score)``.

    The cosine score is ``max(absolute ramp, relative ramp)``: an update is distrusted for its
    direction only if it is an outlier both in absolute terms and against the round's distribution.

    Parameters
    ----------
    deltas : np.ndarray[float32], shape (U, d)
        Unweighted per-user updates of one round.
    reference : np.ndarray, shape (d,), optional
        Robust reference direction; default the coordinate-wise median of ``deltas`` (robust to
        fewer than half of the rows being arbitrary). FLTrust passes the server's root-data update.
    cos_low, cos_high : float
        Cosine ramp (see ``cosine_score``).
    norm_factor : float
        Norm outlier factor (see ``norm_score``).
    cos_z_low, cos_z_high : float
        Relative cosine ramp (see ``relative_cosine_score``); ``cos_z_low=0`` (default here) is off.

    Returns
    -------
    np.ndarray[float64], shape (U,)
    """
    cos_s, norm_s = update_trust_components(deltas, reference, cos_low, cos_high, norm_factor, cos_z_low, cos_z_high)
    return np.minimum(cos_s, norm_s)


class UpdateTrust(TrustScorer):
    """Same-round trust from the individual updates (secure aggregation off).

    Before a round every user has trust 1; after the updates arrive and before they are summed,
    ``score_updates`` replaces it with ``update_trust_scores``.

    Parameters
    ----------
    reference : {"median", "root"}, default "median"
        ``median``: coordinate-wise median of the round's updates. ``root``: FLTrust-style, the
        update the server computes on its own small root dataset (``reference_fn``).
    cos_low, cos_high : float, default -0.4, 0.1
        Cosine ramp; with the 0.6 threshold an update is dropped below cosine -0.1.
    norm_factor : float, default 3.0
        Updates longer than ``norm_factor / 0.6 = 5`` x the round's median norm are dropped.
    reference_fn : callable, optional
        ``theta (d,) -> reference update (d,)``; required with ``reference="root"``.
    cos_z_low, cos_z_high : float, default 3.0, 1.5
        Relative cosine ramp; with the 0.6 threshold the relative cut is at robust z = -2.1, and an
        update is dropped for its direction only if it is also below the absolute cut (-0.1).
        ``cos_z_low=0`` restores the fixed ramp alone. Used with ``reference="median"`` only.
    """

    uses_updates = True

    def __init__(self, reference: str = "median", cos_low: float = -0.4, cos_high: float = 0.1,
                 norm_factor: float = 3.0, reference_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                 cos_z_low: float = 3.0, cos_z_high: float = 1.5) -> None:  # fmt: skip
        if reference not in ("median", "root"):
            raise ValueError(f"strategy.trust.reference={reference!r}: choose median or root")
        if reference == "root" and reference_fn is None:
            raise ValueError("strategy.trust.reference=root needs the server's root dataset (reference_fn)")
        if not cos_low < cos_high:
            raise ValueError(f"strategy.trust.cos_low={cos_low} must be < cos_high={cos_high}")
        if norm_factor <= 0:
            raise ValueError(f"strategy.trust.norm_factor={norm_factor} must be > 0")
        if cos_z_low < 0 or (cos_z_low > 0 and not cos_z_low > cos_z_high):
            raise ValueError(f"strategy.trust.cos_z_low={cos_z_low} must be 0 (off) or > cos_z_high={cos_z_high}")
        self.reference, self.cos_low, self.cos_high = reference, cos_low, cos_high
        self.norm_factor, self.reference_fn = norm_factor, reference_fn
        self.cos_z_low, self.cos_z_high = cos_z_low, cos_z_high
        self.theta: np.ndarray | None = None
        # (cos score, norm score) of the last scored round, for the round's log line and metrics.
        self.last_components: tuple[np.ndarray, np.ndarray] | None = None

    def weights_for_round(self, users: np.ndarray) -> np.ndarray:
        return np.ones(len(users), np.float64)

    def score_updates(self, users: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        ref = None
        if self.reference == "root":
            if self.theta is None:
                raise RuntimeError("root reference needs the round's global model (set .theta)")
            ref = self.reference_fn(self.theta)
        # Against a trusted root reference, a round that disagrees as a whole is evidence in itself:
        # the relative ramp (which centres on the round's own median) applies to the median reference only.
        z_low = self.cos_z_low if self.reference == "median" else 0.0
        self.last_components = update_trust_components(deltas, ref, self.cos_low, self.cos_high, self.norm_factor,
                                                       z_low, self.cos_z_high)  # fmt: skip
        return np.minimum(*self.last_components)
