"""The client-side update pipeline, batched over a chunk of users.

delta -> clip to C -> weight by w_u -> add Gaussian noise -> (secure aggregation: quantise, mask)
-> contribution. Each step is a pure function from ``privacy/`` (or ``secure_agg/``); a stage that is
off in config is the identity. Without noise the deltas stay sparse (touched rows only) all the way
into the node's running sum; with noise every coordinate is touched, so the chunk is densified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from configs.schema import FedrecConfig
from privacy.mechanism import clip_factors, noise_std
from recommender.local_training import CohortDelta
from recommender.ncf import NeuMFShape


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
    p = cfg.privacy
    norms = delta.norms()
    factor = torch.as_tensor(weights, dtype=torch.float64)
    if p.mode != "off":
        factor = factor * clip_factors(norms, p.clip_norm)
    factor = factor.to(delta.mlp_delta.dtype)
    m_min = p.resolved_min_survivors(cfg.data.population) if p.mode != "off" else 1
    std = noise_std(p.mode, p.noise_multiplier, p.clip_norm, m_min) if p.mode != "off" else 0.0
    if std > 0 or individual:
        dense = delta.scale(factor).dense(shape)
        if std > 0:
            dense += torch.randn(dense.shape, generator=generator, dtype=dense.dtype) * std
        out = dense if individual else dense.sum(0, dtype=torch.float64)
    else:
        out = torch.zeros(shape.shared_dim, dtype=torch.float64)
        delta.sum_into(out, shape, factor)  # weighted on the fly: no scaled copy of the rows
    return ChunkContribution(out, float(weights.sum()), norms.numpy())
