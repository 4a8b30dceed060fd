"""SecAgg+ neighbour graph: a random k-regular graph derived from a public server seed."""

from __future__ import annotations

from collections.abc import Sequence

from secure_agg.config import graph_degree
from secure_agg.primitives import CtrDrbg


class NeighbourGraph:
    """The round's neighbour graph, answering one user's neighbourhood in O(k).

    ``k`` None (or k >= n - 1) gives the complete graph. Otherwise the users are put in a random
    order drawn from ``seed`` (AES-CTR DRBG, so any party can recompute and check the graph) and
    connected as the Harary graph H_{k,n} on that cycle, as in Bell et al. 2020: each user links
    to the k/2 users on either side, plus the opposite user when k is odd (n even). An odd k with
    odd n is impossible (n*k must be even) and is raised to k + 1. Since the offsets 1..k/2,
    -1..-k/2 (and n/2) are distinct modulo n when k < n - 1, every user has exactly ``degree``
    neighbours.

    Building costs one O(n) shuffle; ``of(u)`` then reads the user's k positions on the cycle, so
    a party checks its own neighbourhood without building everyone's (O(n k)).

    Parameters
    ----------
    user_ids : sequence of int
        Distinct user ids of the round (U1).
    k : int or None
        Requested degree.
    seed : bytes
        32-byte public seed chosen by the server from the OS CSPRNG.
    """

    def __init__(self, user_ids: Sequence[int], k: int | None, seed: bytes) -> None:
        self.users = sorted(set(user_ids))
        n = len(self.users)
        self.complete = k is None or graph_degree(n, k) >= n - 1
        self.degree = n - 1 if self.complete else graph_degree(n, k)
        if self.complete:
            self._order: list[int] = []
            self._pos: dict[int, int] = {}
            self._offsets: list[int] = []
            return
        self._order = CtrDrbg(seed, "neighbour-graph").permutation(self.users)
        self._pos = {u: i for i, u in enumerate(self._order)}
        half = self.degree // 2
        self._offsets = [*range(1, half + 1), *range(n - half, n)]
        if self.degree % 2 == 1:
            self._offsets.append(n // 2)

    def of(self, u: int) -> tuple[int, ...]:
        """Sorted neighbours of user ``u`` (u excluded); KeyError if u is not in the graph."""
        if self.complete:
            if u not in set(self.users):
                raise KeyError(u)
            return tuple(v for v in self.users if v != u)
        i, n = self._pos[u], len(self._order)
        return tuple(sorted(self._order[(i + off) % n] for off in self._offsets))

    def all(self) -> dict[int, tuple[int, ...]]:
        """``{u: sorted tuple of neighbours}`` for every user."""
        return {u: self.of(u) for u in self.users}


def build_graph(user_ids: Sequence[int], k: int | None, seed: bytes) -> dict[int, tuple[int, ...]]:
    """Neighbours of every user: ``{u: sorted tuple of neighbours (u excluded)}``.

    See ``NeighbourGraph`` for the construction and the parameters.
    """
    return NeighbourGraph(user_ids, k, seed).all()
