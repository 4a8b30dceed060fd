"""Per-round cost floor of a secure + distributed-DP round of cohorts, from this machine's measured rates.

A lower bound on what ``secure_agg=on privacy=distributed`` must add to a plain round, whatever the
implementation, under fedrec's protocol with users grouped on nodes:

- **AES-256-CTR keystream** (``secure_agg.primitives``): every user expands its self mask and one
  pairwise mask per neighbour on *another* node (pairwise masks inside a node cancel in the node's
  sum and are skipped), 4 (d + 1) bytes each; the server expands every survivor's self mask.
- **X25519 agreements**: per user one share-encryption agreement per neighbour on another node, one
  per pair of neighbours on the same node (a node derives both directions at once), and one
  mask agreement per neighbour on another node. Key generation is left out (so the floor stays a
  lower bound).
- **Gaussian draws**: distributed DP makes every user draw d Gaussians (torch's float32
  ``normal_`` on a ``torch.Generator``, as ``client.pipeline`` does), where a plain round only
  touches the rows a user trained.
- **Stochastic-rounding randomness**: one 24-bit uniform per coordinate and user, two per 64-bit
  word of numpy's default bit generator (``secure_agg.quantize``).

Shamir sharing, AES-GCM share encryption, envelopes, quantisation arithmetic, the mask additions
and transport come on top. Client work runs on the nodes in parallel (at most one node per core);
the server's is serial, so the wall-time floor of a round is client / min(nodes, cores) + server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from secure_agg.config import graph_degree
from secure_agg.floor import MachineRates, measure_rates


@dataclass(frozen=True)
class PipelineRates(MachineRates):
    """Measured single-core rates (CPU time) of the primitives a secure + DP round cannot avoid:
    the secure-aggregation ones of :class:`secure_agg.floor.MachineRates` plus DP's."""

    gaussians_per_s: float
    rounding_words_per_s: float


def measure_pipeline_rates(
    seconds: float = 2.0, d: int = 171_874, clock: Callable[[], float] = time.process_time
) -> PipelineRates:
    """Time the four primitives for about ``seconds`` in total (single thread).

    Gaussians are drawn into a reused float32 buffer of ``client.pipeline.BLOCK_USERS`` rows of d
    (the pipeline's block), the rounding words with ``numpy.random.default_rng().bit_generator.random_raw``.
    """
    import torch

    from client.pipeline import BLOCK_USERS
    from recommender.torch_threads import torch_threads

    crypto = measure_rates(seconds / 2, d, clock=clock)
    budget = seconds / 4
    with torch_threads(1):
        gen = torch.Generator().manual_seed(0)
        buf = torch.empty(BLOCK_USERS, d, dtype=torch.float32)
        n, t0 = 0, clock()
        while clock() - t0 < budget or n == 0:
            buf.normal_(generator=gen)
            n += buf.numel()
        gauss = n / (clock() - t0)
    bits = np.random.default_rng(0).bit_generator
    n, t0 = 0, clock()
    while clock() - t0 < budget or n == 0:
        bits.random_raw(1 << 20)
        n += 1 << 20
    words = n / (clock() - t0)
    return PipelineRates(crypto.aes_ctr_bytes_per_s, crypto.x25519_per_s, gauss, words)


def sadp_floor(users: int, d: int, neighbours: int, nodes: int, rates: PipelineRates,
               cores: int) -> dict[str, float]:  # fmt: skip
    """Work and seconds of the floor of one round: ``users`` users on ``nodes`` nodes, vectors of d.

    Parameters
    ----------
    users : int
        Users in the round (all survive).
    d : int
        Length of the masked vector (shared parameters + 1 weight coordinate).
    neighbours : int
        Requested SecAgg+ degree k (``secure_agg.neighbours``).
    nodes : int
        Nodes the users are spread over evenly; each user's neighbours are a uniform sample of the
        others, so k (users - users / nodes) / (users - 1) of them live on other nodes on average.
    rates : PipelineRates
    cores : int
        Cores the nodes run on in parallel.

    Returns
    -------
    dict
        Counts (keystream bytes, agreements, Gaussians, rounding words), CPU seconds per
        primitive, ``client_cpu_seconds``, ``server_cpu_seconds``, ``cpu_seconds`` and
        ``wall_seconds`` = client / min(nodes, cores) + server.
    """
    if users < 2 or d < 1 or nodes < 1 or cores < 1:
        raise ValueError(f"need users >= 2, d >= 1, nodes >= 1, cores >= 1; got {users}, {d}, {nodes}, {cores}")
    k = graph_degree(users, neighbours)
    per_node = users / nodes
    k_cross = k * (users - per_node) / (users - 1)
    k_in = k - k_cross
    client_bytes = users * (1 + k_cross) * 4 * d
    server_bytes = users * 4 * d
    agreements = users * (2 * k_cross + k_in / 2)
    gaussians = users * (d - 1)  # the weight coordinate carries no noise
    words = users * d / 2
    s_aes = client_bytes / rates.aes_ctr_bytes_per_s
    s_x = agreements / rates.x25519_per_s
    s_g = gaussians / rates.gaussians_per_s
    s_r = words / rates.rounding_words_per_s
    client = s_aes + s_x + s_g + s_r
    server = server_bytes / rates.aes_ctr_bytes_per_s
    return {
        "users": float(users), "d": float(d), "k": float(k), "k_other_nodes": k_cross,
        "client_keystream_bytes": client_bytes, "server_keystream_bytes": float(server_bytes),
        "key_agreements": agreements, "gaussians": float(gaussians), "rounding_words": words,
        "keystream_seconds": s_aes, "agreement_seconds": s_x, "gaussian_seconds": s_g,
        "rounding_seconds": s_r, "client_cpu_seconds": client, "server_cpu_seconds": server,
        "cpu_seconds": client + server, "parallel": float(min(nodes, cores)),
        "wall_seconds": client / min(nodes, cores) + server,
    }  # fmt: skip
