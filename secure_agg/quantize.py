"""Quantisation of float updates into Z_2^32 so that n <= n_max of them sum without wrapping.

Scheme
------
A coordinate v of a (weighted, clipped, noised) update is clipped to the range [-r, r] with

    r = w_max * C + c * sigma

(C the L2 clip bound, so |coordinate| <= w_max * C before noise; sigma the per-user Gaussian noise
std; c = ``clip_range_sigmas``; values beyond r are clipped and counted). It is shifted by +r,
scaled by s = L / (2 r) with L = floor((2^b - 1) / n_max) integer levels per user, stochastically
rounded (unbiased; a seeded ``numpy.random.Generator`` is fine here, it is not a mask) and clamped
to the integers [0, L]. The trust weight w in [0, 1], appended as the last coordinate, uses its
own range [0, 1]: q = round_stochastic(w * L), also in [0, L].

No-wrap proof
-------------
Every quantised coordinate q_i is an integer in [0, L]; the final clamp makes this hold whatever
the floating-point rounding. For n <= n_max users,

    0 <= sum_i q_i <= n * L <= n_max * floor((2^b - 1) / n_max) <= 2^b - 1 <= 2^32 - 1,

so the integer sum lies in [0, 2^32) and equals its residue mod 2^32. The masks cancel mod 2^32,
hence the unmasked uint32 sum *is* sum_i q_i, exactly. Dequantising, sum_i q_i / s - n * r removes
the n per-user shifts (n = number of survivors actually summed), and since each q_i differs from
(v_i + r) * s by less than 1 + 2^-22 (L + 2) levels (stochastic rounding, plus the float32
arithmetic of ``quantize``), the result differs from the sum of the clipped values by less than
n (1 + 2^-22 (L + 2)) / s per coordinate (n / L for the weight, quantised in float64). With an explicit ``scale`` the levels are L = floor(2 r scale) and ``check_no_wrap``
refuses the config unless n_max * L <= 2^b - 1, which restores the inequality above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from secure_agg.config import SecAggConfig
from secure_agg.errors import QuantizationError

MODULUS = 1 << 32


def check_no_wrap(n_max: int, r: float, bits: int, scale: float | None = None) -> int:
    """Integer levels L per user that keep a sum of ``n_max`` values below 2^bits; raise if none.

    Raises ``QuantizationError`` naming n_max, L, r, scale and 2^bits - 1 when
    n_max * L > 2^bits - 1 (the sum could wrap) or when L < 1 (nothing left to quantise with).
    """
    if not 1 <= bits <= 32:
        raise QuantizationError(f"bits={bits} must be in [1, 32] (sums are taken mod 2^32)")
    if n_max < 1:
        raise QuantizationError(f"n_max={n_max} must be >= 1")
    if not r > 0 or not math.isfinite(r):
        raise QuantizationError(f"quantisation range r={r} must be finite and > 0")
    top = (1 << bits) - 1
    if scale is None:
        levels = top // n_max
    else:
        if not scale > 0:
            raise QuantizationError(f"scale={scale} must be > 0")
        levels = math.floor(2 * r * scale)
    if levels < 1:
        raise QuantizationError(
            f"n_max={n_max} users leave {levels} levels per user within 2^{bits} - 1 = {top} "
            f"(r={r}, scale={scale}); lower n_max or raise bits"
        )
    if n_max * levels > top:
        raise QuantizationError(
            f"a sum of n_max={n_max} values of up to {levels} levels each (r={r}, "
            f"scale={scale}) reaches {n_max * levels} > 2^{bits} - 1 = {top} and would wrap; "
            f"use scale <= {top // n_max / (2 * r):.10g} or lower n_max"
        )
    return levels


@dataclass(frozen=True)
class QuantizationConfig:
    """Parameters of the float -> Z_2^32 map.

    Parameters
    ----------
    clip_bound : float
        C, the L2 clip bound of a user's update.
    noise_std : float, default 0.0
        sigma, std of the Gaussian noise each user adds per coordinate.
    clip_range_sigmas : float, default 6.0
        c in r = weight_max * C + c * sigma.
    weight_max : float, default 1.0
        Largest trust weight (weights live in [0, weight_max], weight_max <= 1).
    n_max : int, default 10000
        Most users whose values are ever summed.
    bits : int, default 32
        Bits available for the sum.
    scale : float, optional
        Explicit levels per unit; by default the largest that cannot wrap, L / (2 r).
    """

    clip_bound: float
    noise_std: float = 0.0
    clip_range_sigmas: float = 6.0
    weight_max: float = 1.0
    n_max: int = 10000
    bits: int = 32
    scale: float | None = None

    @classmethod
    def from_secagg(
        cls,
        config: SecAggConfig,
        clip_bound: float,
        noise_std: float = 0.0,
        weight_max: float = 1.0,
    ) -> QuantizationConfig:
        return cls(
            clip_bound=clip_bound,
            noise_std=noise_std,
            clip_range_sigmas=config.clip_range_sigmas,
            weight_max=weight_max,
            n_max=config.n_max,
            bits=config.bits,
        ).validate()

    @property
    def r(self) -> float:
        """Clipping range: values are clipped to [-r, r]."""
        return self.weight_max * self.clip_bound + self.clip_range_sigmas * self.noise_std

    @property
    def levels(self) -> int:
        """L, the largest quantised value of one user's coordinate."""
        return check_no_wrap(self.n_max, self.r, self.bits, self.scale)

    @property
    def step(self) -> float:
        """1 / s: float width of one level of a value coordinate."""
        return 2 * self.r / self.levels

    def validate(self) -> QuantizationConfig:
        if not self.clip_bound > 0:
            raise QuantizationError(f"clip_bound={self.clip_bound} must be > 0")
        if self.noise_std < 0:
            raise QuantizationError(f"noise_std={self.noise_std} must be >= 0")
        if not self.clip_range_sigmas > 0:
            raise QuantizationError(f"clip_range_sigmas={self.clip_range_sigmas} must be > 0")
        if not 0 < self.weight_max <= 1:
            raise QuantizationError(f"weight_max={self.weight_max} must be in (0, 1]")
        check_no_wrap(self.n_max, self.r, self.bits, self.scale)
        return self

    def error_bound(self, n_users: int) -> tuple[float, float]:
        """Per-coordinate bounds (value coordinates, weight coordinate) on |dequantised - true|.

        Per user and value coordinate: < 1 level from stochastic rounding plus 2^-22 (L + 2)
        levels from quantising in float32 (see ``quantize``); the weight is quantised in float64.
        """
        per_user = 1.0 + (self.levels + 2) * 2.0**-22
        return n_users * per_user * self.step, n_users / self.levels


#: Coordinates quantised per inner step: the float32 work buffers (~16 bytes per coordinate)
#: stay in the CPU cache instead of streaming d-sized float64 temporaries through memory.
QUANT_BLOCK = 1 << 15


def _uniform24(rng: np.random.Generator, out: np.ndarray) -> None:
    """out[:] = float32 uniforms on the multiples of 2^-24 in [0, 1) (as ``rng.random(dtype=float32)``).

    Drawn from the bit generator's raw 64-bit output (two 24-bit draws per word), about twice as
    fast as ``Generator.random``.
    """
    n = len(out)
    raw = rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]
    np.right_shift(raw, 8, out=raw)
    out[:] = raw
    out *= np.float32(2.0**-24)


def _round_block(
    x: np.ndarray, s: np.float32, half: float, levels: int, rng: np.random.Generator,
    out: np.ndarray, bufs: tuple[np.ndarray, ...],
) -> None:  # fmt: skip
    """out[:] = clamp(stochastic_round(x * s + half_frac) + half_int, 0, L) for a 1-D block.

    ``half`` = L / 2 is split into its integer part (added after rounding, exactly) and its
    fraction (0 or 0.5, added in float32), so the float32 arithmetic only ever sees x * s, whose
    rounding error is relative to |x * s|, not to the offset L / 2.
    """
    n = len(x)
    z, low, u, bit, q = (b[:n] for b in bufs)
    h_int = int(half)
    np.multiply(x, s, out=z, casting="same_kind")  # float64 input: one rounding to float32
    if half != h_int:
        z += np.float32(0.5)
    np.clip(z, -h_int, levels - h_int, out=z)
    np.floor(z, out=low)
    z -= low  # fractional part in [0, 1)
    _uniform24(rng, u)
    np.less(u, z, out=bit)  # 1 with probability frac (to within 2^-24): unbiased rounding
    if levels < 1 << 24:  # every integer involved is exact in float32
        low += bit
        low += np.float32(h_int)
        np.clip(low, 0, levels, out=low)  # the no-wrap proof rests on this clamp
        out[:] = low
        return
    q[:] = low
    q += bit
    q += h_int
    np.clip(q, 0, levels, out=q)  # the no-wrap proof rests on this clamp, not on float maths
    out[:] = q


def quantize(
    x: np.ndarray, cfg: QuantizationConfig, rng: np.random.Generator, *, weighted: bool = False
) -> tuple[np.ndarray, int]:
    """float[..., d] -> (uint32[..., d] in [0, L], number of value entries clipped to [-r, r]).

    Value coordinates are computed in float32, block by block (``QUANT_BLOCK``): y = x * s +
    L / 2 with s = L / (2 r) rounded to float32, then stochastically rounded with a float32
    uniform (24 random bits) and clamped to [0, L]. Besides the rounding itself (< 1 level), float32 adds at most
    2^-22 (L + 2) levels per coordinate (the rounding of x, s and x * s, each 2^-24 relative
    to |x * s| <= L / 2, and of the 0.5 offset); ``QuantizationConfig.error_bound`` includes it.
    With ``weighted`` the last coordinate is a trust weight in [0, 1] (see ``pack_weighted``),
    quantised on its own range in float64; a weight outside [0, weight_max] raises.

    Parameters
    ----------
    x : np.ndarray[float32 or float64], shape (..., d)
    cfg : QuantizationConfig
    rng : numpy.random.Generator
        Stochastic rounding only (not a mask).
    weighted : bool, default False

    Returns
    -------
    q : np.ndarray[uint32], shape (..., d)
    n_clipped : int
    """
    x = np.asarray(x)
    rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    if weighted:
        q, n_clipped = quantize_rows(rows[:, :-1], rows[:, -1], cfg, rng)
    else:
        q, n_clipped = quantize_rows(rows, None, cfg, rng)
    return q.reshape(x.shape), n_clipped


def quantize_rows(
    values: np.ndarray, weights: np.ndarray | None, cfg: QuantizationConfig, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """float[U, d] rows and optional weights float[U] -> (uint32[U, d (+ 1)], entries clipped).

    ``quantize`` without building the packed float[U, d + 1] input: with ``weights`` the result
    equals ``quantize(pack, cfg, rng, weighted=True)`` for ``pack = [values, weights]`` (same
    draws from ``rng``), so float32 rows are never copied to float64. See ``quantize``.
    """
    values = _check_rows(values)
    n_rows, d = values.shape
    out = np.empty((n_rows, d + (weights is not None)), dtype=np.uint32)
    if weights is not None:
        out[:, -1] = _quantize_weights(weights, n_rows, cfg, rng)

    def put(i: int, a: int, q: np.ndarray) -> None:
        out[i, a : a + len(q)] = q

    return out, _quantize_values(values, cfg, rng, put)


def quantize_sum_rows(
    values: np.ndarray, weights: np.ndarray, cfg: QuantizationConfig, rng: np.random.Generator, acc: np.ndarray
) -> int:
    """acc += sum over rows of ``quantize_rows(values, weights, cfg, rng)[0]`` mod 2^32; returns entries clipped.

    The same draws from ``rng`` and the same bits as ``quantize_rows`` followed by ``sum(0)``, but
    every quantised block is added into ``acc`` while it is in cache: no uint32[U, d + 1] array.

    Parameters
    ----------
    values : np.ndarray[float32 or float64], shape (U, d)
    weights : np.ndarray[float], shape (U,)
    acc : np.ndarray[uint32], shape (d + 1,)
        Modified in place; the last coordinate receives the quantised weights.
    """
    values = _check_rows(values)
    n_rows, d = values.shape
    if acc.dtype != np.uint32 or acc.shape != (d + 1,):
        raise QuantizationError(f"accumulator must be uint32[{d + 1}], got {acc.dtype}{list(acc.shape)}")
    acc[-1] += _quantize_weights(weights, n_rows, cfg, rng).sum(dtype=np.uint32)

    def add(i: int, a: int, q: np.ndarray) -> None:
        part = acc[a : a + len(q)]
        np.add(part, q, out=part)

    return _quantize_values(values, cfg, rng, add)


def _check_rows(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2:
        raise QuantizationError(f"quantize_rows wants values[U, d], got shape {list(values.shape)}")
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    return values


def _quantize_weights(weights: np.ndarray, n_rows: int, cfg: QuantizationConfig, rng: np.random.Generator) -> np.ndarray:
    """Trust weights float[U] in [0, weight_max] -> uint32[U] in [0, L] (float64, stochastic rounding)."""
    levels = cfg.levels
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_rows,):
        raise QuantizationError(f"weights must have shape [{n_rows}], got {list(w.shape)}")
    if not np.all(np.isfinite(w)):
        raise QuantizationError("update contains NaN or inf; refusing to quantise")
    if np.any(w < 0) or np.any(w > cfg.weight_max):
        raise QuantizationError(
            f"trust weights must lie in [0, {cfg.weight_max}], got min {w.min()} max {w.max()}"
        )
    yw = w * levels
    low = np.floor(yw)
    return np.clip(low + (rng.random(yw.shape) < yw - low), 0, levels).astype(np.uint32)


def _quantize_values(values: np.ndarray, cfg: QuantizationConfig, rng: np.random.Generator, sink) -> int:
    """Quantise float[U, d] block by block, handing each uint32 block to ``sink(row, start, block)``."""
    levels, r = cfg.levels, cfg.r
    n_rows, d = values.shape
    s, half = np.float32(levels / (2 * r)), levels / 2
    width = min(QUANT_BLOCK, max(d, 1))
    bufs = (np.empty(width, np.float32), np.empty(width, np.float32), np.empty(width, np.float32),
            np.empty(width, np.bool_), np.empty(width, np.int64))  # fmt: skip
    q = np.empty(width, np.uint32)
    n_clipped = 0
    for i in range(n_rows):
        row = values[i]
        for a in range(0, d, width):
            blk = row[a : a + width]
            lo, hi = blk.min(), blk.max()  # NaN propagates into both; two reductions, no temporaries
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise QuantizationError("update contains NaN or inf; refusing to quantise")
            if lo < -r or hi > r:
                n_clipped += int(np.count_nonzero(blk > r)) + int(np.count_nonzero(blk < -r))
            _round_block(blk, s, half, levels, rng, q[: len(blk)], bufs)
            sink(i, a, q[: len(blk)])
    return n_clipped


def dequantize(
    total: np.ndarray, n_users: int, cfg: QuantizationConfig, *, weighted: bool = False
) -> np.ndarray:
    """uint32[d] sum of ``n_users`` quantised vectors -> float64[d] sum of the (clipped) values.

    ``n_users`` must be the number of vectors actually summed (the survivors), <= n_max.
    """
    if not 0 <= n_users <= cfg.n_max:
        raise QuantizationError(
            f"n_users={n_users} outside [0, n_max={cfg.n_max}]: the sum may have wrapped"
        )
    total = np.asarray(total)
    if total.dtype != np.uint32:
        raise QuantizationError(f"expected a uint32 sum, got {total.dtype}")
    levels, r = cfg.levels, cfg.r
    out = total.astype(np.float64)
    if n_users * levels < MODULUS and np.any(out > n_users * levels):
        raise QuantizationError(
            f"sum exceeds n_users * L = {n_users * levels}: wrong n_users or a corrupted sum"
        )
    vals = out[..., :-1] if weighted else out
    vals *= 2 * r / levels
    vals -= n_users * r
    if weighted:
        out[..., -1] /= levels
    return out


def pack_weighted(update: np.ndarray, w: np.ndarray) -> np.ndarray:
    """float[U, d] updates and weights float[U] in [0, 1] -> float[U, d + 1] rows [w*update, w]."""
    update = np.asarray(update, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if update.ndim != 2 or w.shape != (update.shape[0],):
        raise QuantizationError(
            f"pack_weighted wants update[U, d] and w[U], got {list(update.shape)} and "
            f"{list(w.shape)}"
        )
    return np.concatenate([update * w[:, None], w[:, None]], axis=1)


def unpack_weighted(total: np.ndarray) -> tuple[np.ndarray, float]:
    """Dequantised float[d + 1] sum -> (sum_u w_u * update_u  float[d], total weight sum_u w_u)."""
    total = np.asarray(total, dtype=np.float64)
    return total[:-1], float(total[-1])


def weighted_mean(total: np.ndarray) -> np.ndarray:
    """float[d + 1] dequantised sum -> float[d] trust-weighted mean update; raises if no weight."""
    s, w = unpack_weighted(total)
    if not w > 0:
        raise QuantizationError(f"total weight {w} <= 0: no surviving user carried weight")
    return s / w
