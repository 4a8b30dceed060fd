"""Pure functions of the Gaussian mechanism: per-user clipping and noise calibration."""

from __future__ import annotations

import math

import torch

from privacy.config import MODES
from privacy.errors import PrivacyError

__all__ = [
    "add_gaussian_noise",
    "central_noise_std",
    "clip_factors",
    "clip_updates",
    "effective_noise_multiplier",
    "noise_std",
]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise PrivacyError(f"privacy.mode {mode!r} is not one of {'|'.join(MODES)}")


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    value = float(value)
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise PrivacyError(f"{name} {value} must be finite and {bound}")
    return value


def clip_factors(norms: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """Per-user clipping factors ``min(1, C / ||x_u||)`` from the norms, shape [U] -> [U].

    Used directly when updates are held sparsely (a cohort's touched rows), where multiplying by
    the factor is the clipping; ``clip_updates`` is the dense form.
    """
    c = _check_positive("privacy.clip_norm", clip_norm)
    norms64 = norms.to(torch.float64)
    return torch.clamp(c / norms64.clamp_min(torch.finfo(torch.float64).tiny), max=1.0)


def clip_updates(updates: torch.Tensor, clip_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip each user's update (one row) to L2 norm at most C.

    ``clipped[u] = x_u * min(1, C / ||x_u||_2)``; rows already within the bound
    are returned bit-for-bit unchanged (their factor is exactly 1.0).

    Parameters
    ----------
    updates : torch.Tensor, shape [U, d], floating (float32 in the pipeline)
        One flattened shared-parameter delta per user.
    clip_norm : float
        C > 0.

    Returns
    -------
    clipped : torch.Tensor, shape [U, d], same dtype/device as ``updates``
        New tensor; ``||clipped[u]|| <= C`` up to one float rounding of the dtype.
    norms : torch.Tensor, shape [U], same dtype
        Norms before clipping (useful for adaptive clipping and trust scoring).

    Raises
    ------
    PrivacyError
        If ``updates`` is not 2-D floating, ``clip_norm`` is not > 0, or a row
        holds NaN/inf (a broken or malicious update; clipping cannot bound it).
    """
    c = _check_positive("privacy.clip_norm", clip_norm)
    if updates.ndim != 2 or not updates.is_floating_point():
        raise PrivacyError(
            f"updates must be a 2-D floating tensor [users, dim], got shape "
            f"{tuple(updates.shape)} dtype {updates.dtype}"
        )
    finite_rows = torch.isfinite(updates).all(dim=1)
    if not bool(finite_rows.all()):
        bad = torch.nonzero(~finite_rows).flatten()[:10].tolist()
        raise PrivacyError(f"updates rows {bad} contain NaN/inf; drop those users before clipping")
    # Norms in float64 so that the scale keeps float32 rows within C after rounding.
    norms64 = torch.linalg.vector_norm(updates.to(torch.float64), dim=1)
    scale = clip_factors(norms64, c)
    clipped = updates * scale.to(updates.dtype).unsqueeze(1)
    return clipped, norms64.to(updates.dtype)


def central_noise_std(noise_multiplier: float, clip_norm: float) -> float:
    """Std of the noise the server adds once to the sum in central mode: ``z * C``."""
    z = _check_positive("privacy.noise_multiplier", noise_multiplier, allow_zero=True)
    c = _check_positive("privacy.clip_norm", clip_norm)
    return z * c


def noise_std(mode: str, noise_multiplier: float, clip_norm: float, min_survivors: int) -> float:
    """Std of the Gaussian noise each user adds to its own clipped update.

    ======================  ===========================  =====================================
    mode                    per-user std                 std of the sum of m users' noise
    ======================  ===========================  =====================================
    ``off``                 0                            0
    ``central``             0 (server adds ``z*C``)      ``z*C`` (from the server)
    ``distributed``         ``z*C / sqrt(m_min)``        ``z*C*sqrt(m / m_min)``
    ``local``               ``z*C``                      ``z*C*sqrt(m)``
    ======================  ===========================  =====================================

    Parameters
    ----------
    mode : str
        ``off`` | ``central`` | ``distributed`` | ``local``.
    noise_multiplier : float
        z >= 0.
    clip_norm : float
        C > 0.
    min_survivors : int
        m_min >= 1; used by ``distributed`` only (resolve 0 with
        ``PrivacyConfig.resolved_min_survivors`` first).

    Returns
    -------
    float
        Per-user standard deviation.
    """
    _check_mode(mode)
    if mode in ("off", "central"):
        return 0.0
    base = central_noise_std(noise_multiplier, clip_norm)
    if mode == "local":
        return base
    if int(min_survivors) < 1:
        raise PrivacyError(
            f"privacy.min_survivors {min_survivors} must be >= 1 in distributed mode "
            "(resolve 0 to the expected users per round first)"
        )
    return base / math.sqrt(int(min_survivors))


def add_gaussian_noise(
    x: torch.Tensor, std: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Return ``x + N(0, std^2 I)`` as a new tensor.

    Parameters
    ----------
    x : torch.Tensor, any shape, floating
        Typically [U, d] clipped updates (independent noise per row) or [d].
    std : float
        Standard deviation >= 0; ``0`` returns a copy of ``x``.
    generator : torch.Generator or None
        Source of randomness on ``x.device``. Seeded generators make simulations
        reproducible; on a real device seed it from OS entropy, since anyone who
        knows the seed can subtract the noise.

    Returns
    -------
    torch.Tensor, same shape/dtype/device as ``x``
    """
    s = _check_positive("noise std", std, allow_zero=True)
    if not x.is_floating_point():
        raise PrivacyError(f"cannot add Gaussian noise to a {x.dtype} tensor; use a float dtype")
    if s == 0.0:
        return x.clone()
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + s * noise


def effective_noise_multiplier(
    mode: str, noise_multiplier: float, survivors: int, min_survivors: int
) -> float:
    """Noise multiplier the released sum actually carries, for the accountant.

    In distributed mode each of the ``s`` surviving users adds independent
    ``N(0, (zC)^2 / m_min)``. A sum of ``s`` independent centred Gaussians has
    variance equal to the sum of the variances, so the aggregate noise is
    ``N(0, s (zC)^2 / m_min)`` with std ``zC sqrt(s / m_min)``; dividing by the
    sensitivity C gives the multiplier ``z sqrt(s / m_min)``. When ``s >= m_min``
    the extra noise is not credited (the planned ``z`` is reported), which keeps
    the accounting conservative and independent of who dropped.

    Parameters
    ----------
    mode : str
        ``off`` | ``central`` | ``distributed`` | ``local``.
    noise_multiplier : float
        Planned z.
    survivors : int
        s, users whose noised update is in the released sum.
    min_survivors : int
        m_min the per-user noise was calibrated for.

    Returns
    -------
    float
        ``z * sqrt(s / m_min)`` if distributed and ``s < m_min``, else ``z``
        (``0.0`` for ``off``). With ``s == 0`` nothing about any user was
        released: skip the accountant step for that round instead of stepping
        with 0 (which would, correctly, report infinite epsilon).
    """
    _check_mode(mode)
    z = _check_positive("privacy.noise_multiplier", noise_multiplier, allow_zero=True)
    if mode == "off":
        return 0.0
    if mode != "distributed":
        return z
    s, m = int(survivors), int(min_survivors)
    if m < 1 or s < 0:
        raise PrivacyError(
            f"survivors {s} must be >= 0 and privacy.min_survivors {m} >= 1 in distributed mode"
        )
    if s >= m:
        return z
    return z * math.sqrt(s / m)
