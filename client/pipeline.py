"""The client-side update pipeline, batched over a chunk of users.

delta -> clip to C -> weight by w_u -> add Gaussian noise -> (secure aggregation: quantise, mask)
-> contribution. Each step is a pure function from ``privacy/`` (or ``secure_agg/``); a stage that is
off in config is the identity. The deltas stay sparse (touched rows only) all the way into the
node's running sum; the chunk's noise is then one Gaussian draw for the sum. Only when the strategy
needs every user's row (``individual``) is the chunk densified and each row noised on its own.
With secure aggregation, ``quantised_sum`` streams a chunk through noise, quantisation and the node's
uint32 sum a block of users at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from configs.schema import FedrecConfig
from privacy.mechanism import clip_factors, noise_std
from recommender.local_training import CohortDelta
from recommender.ncf import NeuMFShape
from secure_agg import QuantizationConfig, quantize_sum_rows

#: Users per block in ``quantised_sum``. A multiple of 16 keeps torch's Gaussian draws identical to
#: one draw for the whole chunk (its sampler transforms 16 uniforms at a time).
BLOCK_USERS = 16


def user_weights(trust: np.ndarray, n_examples: np.ndarray, example_cap: int) -> np.ndarray:
    """w_u = trust_u * min(n_u, n_cap) / n_cap, in [0, 1] so the weighted update keeps norm <= C.

    Parameters
    ----------
    trust : np.ndarray[float], shape (U,), in [0, 1]
    n_examples : np.ndarray[int], shape (U,)
    example_cap : int
    """
    return np.clip(trust, 0.0, 1.0) * np.minimum(n_examples, example_cap) / float(example_cap)


@dataclass
class ChunkContribution:
    """What a chunk of users adds to the node's reply.

    Attributes
    ----------
    weighted : torch.Tensor
        ``sum_u w_u clip(delta_u) + noise_u`` as a flat (d,) float64 vector, or the individual rows
        (U, d) when the strategy needs them.
    weight_sum : float
    norms : np.ndarray, shape (U,)
        Pre-clipping norms (diagnostics, trust scoring).
    """

    weighted: torch.Tensor
    weight_sum: float
    norms: np.ndarray


def _factors_and_std(delta: CohortDelta, weights: np.ndarray, cfg: FedrecConfig) -> tuple[torch.Tensor, float]:
    """Per-user factor w_u * min(1, C / ||delta_u||) (w_u alone without DP) and the noise std."""
    p = cfg.privacy
    factor = torch.as_tensor(weights, dtype=torch.float64)
    if p.mode == "off":
        return factor.to(delta.mlp_delta.dtype), 0.0
    factor = factor * clip_factors(delta.norms(), p.clip_norm)
    m_min = p.resolved_min_survivors(cfg.data.population)
    return factor.to(delta.mlp_delta.dtype), noise_std(p.mode, p.noise_multiplier, p.clip_norm, m_min)


def process_chunk(
    delta: CohortDelta,
    weights: np.ndarray,
    cfg: FedrecConfig,
    shape: NeuMFShape,
    generator: torch.Generator,
    individual: bool = False,
) -> ChunkContribution:
    """Run clip -> weight -> noise on a chunk and reduce it to a contribution.

    Parameters
    ----------
    delta : CohortDelta
        The chunk's shared-parameter deltas (U users).
    weights : np.ndarray, shape (U,)
        w_u in [0, 1].
    individual : bool
        Keep one row per user (robust strategies need them) instead of their sum.
    """
    norms = delta.norms()
    factor, std = _factors_and_std(delta, weights, cfg)
    if individual:
        out = delta.scale(factor).dense(shape)
        if std > 0:
            out += torch.randn(out.shape, generator=generator, dtype=out.dtype) * std
    else:
        out = torch.zeros(shape.shared_dim, dtype=torch.float64)
        delta.sum_into(out, shape, factor)  # weighted on the fly: no scaled copy of the rows
        if std > 0:
            # Only the sum leaves the chunk, and the sum of U independent N(0, std^2 I) draws is one
            # N(0, U std^2 I) draw: the same distribution (so the same privacy accounting) from 1/U
            # of the Gaussians, and the deltas stay sparse instead of a dense (U, d) copy.
            out += torch.randn(out.shape, generator=generator, dtype=out.dtype) * (std * math.sqrt(delta.n_users))
    return ChunkContribution(out, float(weights.sum()), norms.numpy())


def quantised_sum(
    delta: CohortDelta,
    weights: np.ndarray,
    cfg: FedrecConfig,
    shape: NeuMFShape,
    generator: torch.Generator,
    q: QuantizationConfig,
    rng: np.random.Generator,
    total: np.ndarray,
) -> int:
    """total += sum_u quantise([w_u clip(delta_u) + noise_u, w_u]) mod 2^32; returns entries clipped.

    The same numbers as ``process_chunk(..., individual=True)`` followed by ``quantize_rows`` of
    its rows in blocks of ``BLOCK_USERS`` and their sum, bit for bit (same Gaussian and rounding
    draws), with one reused float32 (BLOCK_USERS, d) buffer: the noise is drawn straight into it
    (``normal_``), the block's sparse deltas are added on top, and the block is quantised and added
    into ``total`` while its pieces are in cache.

    Parameters
    ----------
    delta : CohortDelta
        The chunk's deltas (U users).
    weights : np.ndarray, shape (U,)
        w_u in [0, 1], also quantised as the last coordinate.
    generator : torch.Generator
        DP noise (not a mask).
    q : QuantizationConfig
    rng : numpy.random.Generator
        Stochastic rounding (not a mask).
    total : np.ndarray[uint32], shape (d + 1,)
        The node's running sum, modified in place.
    """
    factor, std = _factors_and_std(delta, weights, cfg)
    u = delta.n_users
    buf = torch.empty(min(BLOCK_USERS, u), shape.shared_dim, dtype=delta.mlp_delta.dtype)
    clipped = 0
    for lo in range(0, u, BLOCK_USERS):
        blk = buf[: min(BLOCK_USERS, u - lo)]
        if std > 0:
            blk.normal_(0.0, std, generator=generator)
        else:
            blk.zero_()
        delta.add_dense_into(blk, shape, lo, factor)
        clipped += quantize_sum_rows(blk.numpy(), weights[lo : lo + len(blk)], q, rng, total)
    return clipped
