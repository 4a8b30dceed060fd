"""ClientCohort state survives serialisation between stages (a node may be a new process per stage)."""

import numpy as np
import pytest

from secure_agg import ClientCohort, SecAggConfig, SecAggError, SecAggServer


def _hop(cfg, cohort):
    return ClientCohort.from_bytes(cfg, cohort.to_bytes())


@pytest.mark.parametrize("neighbours", [None, 4])
def test_round_with_state_restored_before_every_stage(neighbours):
    cfg = SecAggConfig(enabled=True, threshold=0.5, neighbours=neighbours)
    rng = np.random.default_rng(0)
    users, dim = list(range(12)), 9
    x = {u: rng.integers(0, 1000, dim, dtype=np.uint32) for u in users}
    nodes = [users[:5], users[5:]]
    srv = SecAggServer(cfg, 3, users, dim=dim, run_id="r")
    cohorts = [ClientCohort(cfg, 3, n, run_id="r") for n in nodes]
    adv = {}
    for c in cohorts:
        adv.update(c.advertise_keys())
    cohorts = [_hop(cfg, c) for c in cohorts]
    roster = srv.advertise(adv)
    shares = {}
    for c in cohorts:
        shares.update(c.share_keys(roster))
    cohorts = [_hop(cfg, c) for c in cohorts]
    inboxes = srv.route_shares(shares)
    dropped = 7  # shares, then never sends its masked input
    for c in cohorts:
        live = [u for u in c.users if u != dropped]
        srv.receive_masked(c.masked_input_sum(inboxes, {u: x[u] for u in live}, live))
    cohorts = [_hop(cfg, c) for c in cohorts]
    req = srv.unmask_requests()
    resp = []
    for c in cohorts:
        resp.extend(c.unmask(req).values())
    total = srv.finish(resp)
    expect = sum((x[u].astype(np.uint64) for u in users if u != dropped), np.zeros(dim, np.uint64))
    np.testing.assert_array_equal(total, expect.astype(np.uint32))


def test_corrupt_state_is_refused():
    cfg = SecAggConfig(enabled=True)
    c = ClientCohort(cfg, 1, [1, 2, 3], run_id="r")
    c.advertise_keys()
    blob = c.to_bytes()
    with pytest.raises(SecAggError, match="corrupt"):
        ClientCohort.from_bytes(cfg, blob[: len(blob) // 2])


def test_masked_sum_of_a_node_sum_equals_masked_input_sum():
    cfg = SecAggConfig(enabled=True, threshold=0.5, neighbours=4)
    rng = np.random.default_rng(1)
    users, dim = list(range(10)), 7
    x = {u: rng.integers(0, 2**32, dim, dtype=np.uint32) for u in users}
    srv = SecAggServer(cfg, 2, users, dim=dim, run_id="r")
    cohorts = [ClientCohort(cfg, 2, n, run_id="r") for n in (users[:6], users[6:])]
    roster = srv.advertise({u: m for c in cohorts for u, m in c.advertise_keys().items()})
    inboxes = srv.route_shares({u: m for c in cohorts for u, m in c.share_keys(roster).items()})
    node = cohorts[0]
    live = [u for u in node.users if u != 2]  # user 2 drops before its masked input
    twin = _hop(cfg, node)
    a = node.masked_input_sum(inboxes, {u: x[u] for u in live}, live)
    total = np.sum([x[u] for u in live], axis=0, dtype=np.uint32)
    b = twin.masked_sum(inboxes, total, live)
    assert a.user_ids == b.user_ids == tuple(live)
    np.testing.assert_array_equal(a.vector, b.vector)
    # a user whose input is in the node's sum but who has no inbox cannot be left out: refused
    late = _hop(cfg, cohorts[1])
    short = {u: box for u, box in inboxes.items() if u != late.users[0]}
    with pytest.raises(SecAggError, match="no share inbox"):
        late.masked_sum(short, total, late.users)
    with pytest.raises(SecAggError, match="uint32"):
        _hop(cfg, cohorts[1]).masked_sum(inboxes, total.astype(np.int64), cohorts[1].users)
