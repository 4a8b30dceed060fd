"""Cryptographic cost floor of a secure-aggregation round on this machine.

The floor counts only the unavoidable primitives (AES-CTR keystream for masks, X25519
agreements), single core; Shamir sharing, numpy additions and transport come on top.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secure_agg.config import graph_degree
from secure_agg.primitives import MaskExpander, random_seed


@dataclass(frozen=True)
class MachineRates:
    """Measured single-core throughput."""

    aes_ctr_bytes_per_s: float
    x25519_per_s: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def fastest_rates(samples: list[dict[str, float]]) -> dict[str, float]:
    """Per primitive, the fastest of several rate measurements (each a ``{name: rate}`` dict).

    Other jobs on a shared machine only slow a primitive down, so the fastest measurement is the
    one closest to this machine's own rate (and keeps a floor built from it a lower bound).
    """
    return {name: max(smp[name] for smp in samples) for name in samples[0]}


def measure_rates(
    seconds: float = 0.5, d: int = 170_000, clock: Callable[[], float] = time.perf_counter
) -> MachineRates:
    """Time AES-256-CTR mask expansion (uint32[d] per call) and X25519 exchanges, ~seconds each half.

    ``clock=time.process_time`` measures CPU time instead of wall time, which stays meaningful on
    a machine shared with other processes.
    """
    budget = seconds / 2
    expander = MaskExpander(d)
    seed = random_seed()
    n_bytes, t0 = 0, clock()
    while clock() - t0 < budget or n_bytes == 0:
        expander.keystream(seed)
        n_bytes += 4 * d
    aes = n_bytes / (clock() - t0)

    a = X25519PrivateKey.generate()
    peers = [X25519PrivateKey.generate().public_key() for _ in range(16)]
    n_ex, t0 = 0, clock()
    while clock() - t0 < budget or n_ex == 0:
        for p in peers:
            a.exchange(p)
        n_ex += len(peers)
    x = n_ex / (clock() - t0)
    return MachineRates(aes_ctr_bytes_per_s=aes, x25519_per_s=x)


def floor_breakdown(
    n: int, d: int, neighbours: int | None, rates: MachineRates, *, dropout: float = 0.0
) -> dict[str, float]:
    """Work and seconds of one round: n users, vectors of d uint32, degree k, dropped fraction.

    Client side, per user: (k + 1) keystreams of 4d bytes (k pairwise masks + self mask) and 2k
    agreements (one for the share-encryption key, one for the mask seed, per neighbour).
    Server side: a self-mask keystream per survivor and, per dropped user, one agreement and one
    keystream per surviving neighbour.
    """
    k = n - 1 if neighbours is None else graph_degree(n, neighbours)
    dropped = round(dropout * n)
    survivors = n - dropped
    surviving_neighbours = k * survivors / max(n - 1, 1)
    client_bytes = n * (k + 1) * 4 * d
    client_ka = n * 2 * k
    server_streams = survivors + dropped * surviving_neighbours
    server_bytes = server_streams * 4 * d
    server_ka = dropped * surviving_neighbours
    out = {
        "k": float(k),
        "client_keystream_bytes": float(client_bytes),
        "client_key_agreements": float(client_ka),
        "server_keystream_bytes": float(server_bytes),
        "server_key_agreements": float(server_ka),
        "client_seconds": client_bytes / rates.aes_ctr_bytes_per_s + client_ka / rates.x25519_per_s,
        "server_seconds": server_bytes / rates.aes_ctr_bytes_per_s + server_ka / rates.x25519_per_s,
    }
    out["total_seconds"] = out["client_seconds"] + out["server_seconds"]
    return out


def compute_floor(
    n: int, d: int, neighbours: int | None, rates: MachineRates, *, dropout: float = 0.0
) -> float:
    """Seconds of unavoidable crypto work in one round, all users' client work plus the server's."""
    return floor_breakdown(n, d, neighbours, rates, dropout=dropout)["total_seconds"]
