"""SecAgg+ neighbour graph: a random k-regular graph derived from a public server seed."""

from __future__ import annotations

from collections.abc import Sequence

from secure_agg.config import graph_degree
from secure_agg.primitives import CtrDrbg


def build_graph(user_ids: Sequence[int], k: int | None, seed: bytes) -> dict[int, tuple[int, ...]]:
    """Neighbours of every user: ``{u: sorted tuple of neighbours (u excluded)}``.

    ``k`` None (or k >= n - 1) gives the complete graph. Otherwise the users are put in a random
    order drawn from ``seed`` (AES-CTR DRBG, so any party can recompute and check the graph) and
    connected as the Harary graph H_{k,n} on that cycle, as in Bell et al. 2020: each user links
    to the k/2 users on either side, plus the opposite user when k is odd (n even). An odd k with
    odd n is impossible (n*k must be even) and is raised to k + 1.

    Parameters
    ----------
    user_ids : sequence of int
        Distinct user ids of the round (U1).
    k : int or None
        Requested degree.
    seed : bytes
        32-byte public seed chosen by the server from the OS CSPRNG.
    """
    users = sorted(set(user_ids))
    n = len(users)
    if k is None or graph_degree(n, k) >= n - 1:
        return {u: tuple(v for v in users if v != u) for u in users}
    deg = graph_degree(n, k)
    order = CtrDrbg(seed, "neighbour-graph").permutation(users)
    half = deg // 2
    adj: dict[int, set[int]] = {u: set() for u in users}
    for i, u in enumerate(order):
        offsets = list(range(1, half + 1))
        if deg % 2 == 1:
            offsets.append(n // 2)
        for off in offsets:
            v = order[(i + off) % n]
            adj[u].add(v)
            adj[v].add(u)
    return {u: tuple(sorted(adj[u])) for u in users}
