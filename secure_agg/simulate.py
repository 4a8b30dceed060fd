"""In-process driver of one secure-aggregation round (tests, benchmarks, simulation).

Runs the real client and server state machines, message by message, with users grouped into
nodes and chosen users dropping before each stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from secure_agg.client import ClientCohort
from secure_agg.config import STAGES, SecAggConfig
from secure_agg.dropout import inject_dropouts
from secure_agg.errors import SecAggConfigError
from secure_agg.server import SecAggServer


@dataclass
class RoundResult:
    total: np.ndarray  # uint32[dim], sum of the survivors' inputs
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]  # shared keys, then did not send a masked input
    server: SecAggServer


def plan_dropouts(
    user_ids: Sequence[int], fractions: Mapping[str, float], rng: np.random.Generator
) -> dict[str, list[int]]:
    """Users dropping before each stage, each stage drawing from those still present."""
    left = sorted(user_ids)
    out: dict[str, list[int]] = {}
    for stage in STAGES:
        left, out[stage] = inject_dropouts(left, stage, fractions.get(stage, 0.0), rng)
    return out


def run_round(
    config: SecAggConfig,
    inputs: Mapping[int, np.ndarray],
    *,
    round_id: int = 0,
    run_id: str | bytes = b"sim",
    dropped: Mapping[str, Iterable[int]] | None = None,
    nodes: Sequence[Sequence[int]] | None = None,
    presum: bool = False,
    graph_seed: bytes | None = None,
    weights: Mapping[int, float] | None = None,
) -> RoundResult:
    """One round over ``inputs`` ({user: uint32[dim]}); raises ``SecAggAbort`` like the server.

    ``dropped[stage]`` lists users that go silent before sending their message of that stage
    (``unmask``: survivors that never answer). ``nodes`` groups users into cohorts (default one
    node per user); with ``presum`` every node uploads one pre-summed masked vector.
    """
    dropped = (
        {s: set(dropped.get(s, ())) for s in STAGES} if dropped else {s: set() for s in STAGES}
    )
    unknown = set(dropped) - set(STAGES)
    if unknown:
        raise SecAggConfigError(f"unknown dropout stages {sorted(unknown)}")
    users = sorted(inputs)
    dims = {np.asarray(v).shape for v in inputs.values()}
    if len(dims) != 1:
        raise SecAggConfigError(f"inputs have different shapes {sorted(dims)}")
    (dim,) = dims.pop()
    nodes = [list(n) for n in nodes] if nodes is not None else [[u] for u in users]
    server = SecAggServer(
        config, round_id, users, dim=dim, run_id=run_id, graph_seed=graph_seed, weights=weights
    )
    cohorts = [ClientCohort(config, round_id, n, run_id=run_id) for n in nodes]

    def live(c: ClientCohort, stage: str) -> list[int]:
        return [u for u in c.users if u not in dropped[stage]]

    adv = {}
    for c in cohorts:
        adv.update(c.advertise_keys(live(c, "advertise_keys")))
    roster = server.advertise(adv)
    shares = {}
    for c in cohorts:
        shares.update(c.share_keys(roster, live(c, "share_keys")))
    inboxes = server.route_shares(shares)
    for c in cohorts:
        act = [u for u in live(c, "masked_input") if u in inboxes]
        vecs = {u: np.asarray(inputs[u], dtype=np.uint32) for u in act}
        if presum:
            m = c.masked_input_sum(inboxes, vecs, act)
            if m.user_ids:
                server.receive_masked(m)
        else:
            for u, y in c.masked_input(inboxes, vecs, act).items():
                server.receive_masked(u, y)
    request = server.unmask_requests()
    survivors = set(request.survivors)
    responses = []
    for c in cohorts:
        act = [u for u in live(c, "unmask") if u in survivors]
        if c.stage == "unmask" and c.users:
            responses.extend(c.unmask(request, act).values())
    total = server.finish(responses)
    return RoundResult(total, request.survivors, request.dropped, server)
