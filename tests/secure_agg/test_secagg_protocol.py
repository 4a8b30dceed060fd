"""Double-masking protocol: correctness under dropouts, aborts, stage order, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secure_agg import (
    ClientCohort,
    SecAggAbort,
    SecAggConfig,
    SecAggError,
    SecAggServer,
    UnmaskRequest,
    UnmaskResponse,
)
from secure_agg.config import STAGES
from secure_agg.simulate import run_round

PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _inputs(n: int, d: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.choice(10_000, size=n, replace=False)
    return {int(u): rng.integers(0, 2**32, size=d, dtype=np.uint32) for u in ids}


def _plain_sum(inputs, users, d) -> np.ndarray:
    total = np.zeros(d, dtype=np.uint32)
    for u in users:
        total += inputs[u]
    return total


def _expected_t(threshold: float, n: int) -> int:
    # written independently of resolve_threshold: fraction of n rounded up, >= 2, <= n
    t = math.ceil(round(threshold * n, 9)) if threshold <= 1 else int(threshold)
    return min(max(t, 2), n)


@st.composite
def _scenario(draw, max_n=60):
    n = draw(st.integers(2, max_n))
    d = draw(st.integers(1, 6))
    threshold = draw(st.sampled_from([0.3, 0.5, 0.5, 0.67, 1.0, 2, 3]))
    heavy = draw(st.sampled_from([False, False, False, True]))  # mostly survivable dropouts
    users = list(range(n))
    remaining = list(users)
    dropped = {}
    for stage in STAGES:
        k = draw(st.integers(0, min(len(remaining), max(1, n // (2 if heavy else 10)))))
        gone = draw(st.permutations(remaining))[:k] if remaining else []
        dropped[stage] = sorted(gone)
        remaining = [u for u in remaining if u not in set(gone)]
    presum = draw(st.booleans())
    node_size = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    return n, d, threshold, dropped, presum, node_size, seed


@PROPERTY
@given(_scenario())
def test_complete_graph_sum_or_clean_abort(scenario):
    n, d, threshold, dropped, presum, node_size, seed = scenario
    inputs = _inputs(n, d, seed)
    ids = sorted(inputs)
    dropped = {s: [ids[i] for i in v] for s, v in dropped.items()}
    nodes = [ids[i : i + node_size] for i in range(0, n, node_size)]
    t = _expected_t(threshold, n)
    alive = set(ids)
    must_abort = False
    survivors = None
    for stage in STAGES:
        alive -= set(dropped[stage])
        if stage == "unmask":
            pass
        elif stage == "masked_input":
            survivors = set(alive)
        must_abort |= len(alive) < t
    cfg = SecAggConfig(threshold=threshold)
    if must_abort:
        with pytest.raises(SecAggAbort, match="threshold|fewer than"):
            run_round(cfg, inputs, dropped=dropped, nodes=nodes, presum=presum)
        return
    res = run_round(cfg, inputs, dropped=dropped, nodes=nodes, presum=presum)
    assert set(res.survivors) == survivors
    np.testing.assert_array_equal(res.total, _plain_sum(inputs, survivors, d))


@PROPERTY
@given(_scenario(), st.integers(2, 8))
def test_secagg_plus_graph_sum_or_clean_abort(scenario, k):
    n, d, threshold, dropped, presum, node_size, seed = scenario
    if threshold > 1:
        threshold = min(threshold, k)
    inputs = _inputs(n, d, seed)
    ids = sorted(inputs)
    dropped = {s: [ids[i] for i in v] for s, v in dropped.items()}
    nodes = [ids[i : i + node_size] for i in range(0, n, node_size)]
    cfg = SecAggConfig(threshold=threshold, neighbours=k)
    t = cfg.resolve_threshold(n)
    try:
        res = run_round(
            cfg,
            inputs,
            dropped=dropped,
            nodes=nodes,
            presum=presum,
            graph_seed=bytes([seed % 256]) * 32,
        )
    except SecAggAbort:
        return  # aborting is always allowed; what is forbidden is a wrong sum
    survivors = set(res.survivors)
    assert len(survivors) >= t
    assert not survivors & set(dropped["advertise_keys"] + dropped["share_keys"])
    assert not survivors & set(dropped["masked_input"])
    np.testing.assert_array_equal(res.total, _plain_sum(inputs, survivors, d))


def test_secagg_plus_below_threshold_aborts():
    inputs = _inputs(30, 3)
    ids = sorted(inputs)
    cfg = SecAggConfig(neighbours=6, threshold=0.5)
    with pytest.raises(SecAggAbort):
        run_round(cfg, inputs, dropped={"masked_input": ids[:27]})


@pytest.mark.parametrize("neighbours", [None, 4])
def test_presum_equals_per_user(neighbours):
    inputs = _inputs(12, 5, seed=3)
    ids = sorted(inputs)
    nodes = [ids[:5], ids[5:9], ids[9:]]
    drop = {"share_keys": [ids[0]], "masked_input": [ids[6]], "unmask": [ids[11]]}
    cfg = SecAggConfig(neighbours=neighbours, threshold=0.4)
    a = run_round(cfg, inputs, dropped=drop, nodes=nodes, presum=True, graph_seed=bytes(32))
    b = run_round(cfg, inputs, dropped=drop, nodes=nodes, presum=False, graph_seed=bytes(32))
    np.testing.assert_array_equal(a.total, b.total)
    np.testing.assert_array_equal(a.total, _plain_sum(inputs, a.survivors, 5))


@pytest.mark.parametrize("stage", STAGES)
def test_abort_below_threshold_at_each_stage(stage):
    inputs = _inputs(6, 2)
    ids = sorted(inputs)
    cfg = SecAggConfig(threshold=4)
    with pytest.raises(SecAggAbort, match="t=4"):
        run_round(cfg, inputs, dropped={stage: ids[:3]})


def _setup(n=5, dim=3, cfg=None, round_id=1):
    cfg = cfg or SecAggConfig(threshold=3)
    ids = list(range(10, 10 + n))
    srv = SecAggServer(cfg, round_id, ids, dim=dim, run_id="run")
    coh = ClientCohort(cfg, round_id, ids, run_id="run")
    return cfg, ids, srv, coh


def test_stage_order_enforced():
    cfg, ids, srv, coh = _setup()
    with pytest.raises(SecAggError, match="stage"):
        srv.route_shares({})
    with pytest.raises(SecAggError, match="stage"):
        srv.unmask_requests()
    with pytest.raises(SecAggError, match="stage"):
        coh.unmask(UnmaskRequest((), ()))
    roster = srv.advertise(coh.advertise_keys())
    with pytest.raises(SecAggError, match="stage"):
        srv.advertise({})
    with pytest.raises(SecAggError, match="stage"):
        coh.advertise_keys()
    with pytest.raises(SecAggError, match="stage"):
        srv.receive_masked(ids[0], np.zeros(3, np.uint32))
    inboxes = srv.route_shares(coh.share_keys(roster))
    with pytest.raises(SecAggError, match="stage"):
        srv.finish([])
    x = np.ones((5, 3), np.uint32)
    masked = coh.masked_input(inboxes, x)
    with pytest.raises(SecAggError, match="stage"):
        coh.masked_input(inboxes, x)
    for u, y in masked.items():
        srv.receive_masked(u, y)
    req = srv.unmask_requests()
    assert srv.unmask_requests() == req  # idempotent within the stage
    total = srv.finish(coh.unmask(req).values())
    np.testing.assert_array_equal(total, np.full(3, 5, np.uint32))
    with pytest.raises(SecAggError, match="stage"):
        srv.finish([])


def test_server_refuses_calls_after_abort():
    cfg, ids, srv, coh = _setup()
    adv = coh.advertise_keys()
    with pytest.raises(SecAggAbort):
        srv.advertise({u: adv[u] for u in ids[:2]})
    with pytest.raises(SecAggError, match="aborted"):
        srv.route_shares({})


def test_server_input_validation():
    cfg, ids, srv, coh = _setup()
    roster = srv.advertise(coh.advertise_keys())
    inboxes = srv.route_shares(coh.share_keys(roster))
    masked = coh.masked_input(inboxes, np.zeros((5, 3), np.uint32))
    with pytest.raises(SecAggError, match="uint32"):
        srv.receive_masked(ids[0], masked[ids[0]].astype(np.int64))
    with pytest.raises(SecAggError, match="uint32"):
        srv.receive_masked(ids[0], masked[ids[0]][:2])
    with pytest.raises(SecAggError, match="not in U2"):
        srv.receive_masked(999, masked[ids[0]])
    srv.receive_masked(ids[0], masked[ids[0]])
    with pytest.raises(SecAggError, match="twice"):
        srv.receive_masked(ids[0], masked[ids[0]])
    with pytest.raises(SecAggError, match="twice"):
        srv.receive_masked([ids[1], ids[0]], masked[ids[1]])


@pytest.mark.parametrize("make", [lambda cfg, ids, rnd: ClientCohort(cfg, rnd, ids, run_id="r"),
                                  lambda cfg, ids, rnd: SecAggServer(cfg, rnd, ids, dim=3, run_id="r")])
def test_both_ends_check_user_ids_and_round_alike(make):
    cfg = SecAggConfig(threshold=2)
    with pytest.raises(SecAggError, match=r"duplicates \[3\]"):
        make(cfg, [1, 3, 3], 1)
    with pytest.raises(SecAggError, match=r"user ids \[-1\] are outside"):
        make(cfg, [-1, 2, 4], 1)
    with pytest.raises(SecAggError, match="round_id=-2"):
        make(cfg, [1, 2, 4], -2)
    party = make(cfg, [4, 1, 2], 7)
    assert party.round_id == 7 and party.run_id == b"r"


def test_client_rejects_float_inputs():
    cfg, ids, srv, coh = _setup()
    roster = srv.advertise(coh.advertise_keys())
    inboxes = srv.route_shares(coh.share_keys(roster))
    with pytest.raises(SecAggError, match="quantise first"):
        coh.masked_input(inboxes, np.zeros((5, 3), np.float32))


def _to_unmask(n=5, cfg=None, n_masked=None):
    cfg, ids, srv, coh = _setup(n=n, cfg=cfg)
    roster = srv.advertise(coh.advertise_keys())
    inboxes = srv.route_shares(coh.share_keys(roster))
    sent = ids[: n_masked or n]
    masked = coh.masked_input(inboxes, np.ones((len(sent), 3), np.uint32), users=sent)
    return ids, srv, coh, masked


def test_client_refuses_malicious_unmask_requests():
    ids, srv, coh, masked = _to_unmask()
    with pytest.raises(SecAggError, match="both"):
        coh.unmask(UnmaskRequest(tuple(ids), (ids[0],)))
    with pytest.raises(SecAggError, match="as dropped"):
        coh.unmask(UnmaskRequest(tuple(ids[1:]), (ids[0],)))
    with pytest.raises(SecAggError, match="omits"):
        coh.unmask(UnmaskRequest(tuple(ids[1:]), ()))
    with pytest.raises(SecAggError, match="fewer than"):
        coh.unmask(UnmaskRequest(tuple(ids[:2]), ()))


def test_unmask_never_reveals_both_shares_of_a_user():
    cfg = SecAggConfig(threshold=3)
    ids = list(range(6))
    srv = SecAggServer(cfg, 0, ids, dim=2)
    nodes = [ClientCohort(cfg, 0, [u]) for u in ids]
    adv = {}
    for c in nodes:
        adv.update(c.advertise_keys())
    roster = srv.advertise(adv)
    shares = {}
    for c in nodes:
        shares.update(c.share_keys(roster))
    inboxes = srv.route_shares(shares)
    for c in nodes[:4]:  # users 4 and 5 drop before masked input
        for u, y in c.masked_input(inboxes, np.zeros((1, 2), np.uint32)).items():
            srv.receive_masked(u, y)
    req = srv.unmask_requests()
    assert req == UnmaskRequest((0, 1, 2, 3), (4, 5))
    responses = [r for c in nodes[:4] for r in c.unmask(req).values()]
    for r in responses:
        assert set(r.b_shares) <= set(req.survivors)
        assert set(r.sk_shares) <= set(req.dropped)
    np.testing.assert_array_equal(srv.finish(responses), np.zeros(2, np.uint32))


def test_corrupted_shares_abort_instead_of_wrong_sum():
    ids, srv, coh, masked = _to_unmask(cfg=SecAggConfig(threshold=3), n_masked=4)
    for u in ids[:4]:
        srv.receive_masked(u, masked[u])
    req = srv.unmask_requests()
    resp = coh.unmask(req)
    bad = resp[ids[0]]
    owner = next(iter(bad.b_shares))
    share = bytearray(bad.b_shares[owner])
    share[5] ^= 1
    resp[ids[0]] = UnmaskResponse(bad.user_id, {**bad.b_shares, owner: bytes(share)}, bad.sk_shares)
    # the server takes the first t shares by x; make sure the corrupted holder is among them
    with pytest.raises(SecAggAbort, match="commitment|key"):
        srv.finish(list(resp.values()))


def test_corrupted_sk_share_detected_by_public_key():
    ids, srv, coh, masked = _to_unmask(cfg=SecAggConfig(threshold=3), n_masked=4)
    for u in ids[:4]:
        srv.receive_masked(u, masked[u])
    req = srv.unmask_requests()
    resp = coh.unmask(req)
    first = resp[ids[0]]
    share = bytearray(first.sk_shares[ids[4]])
    share[20] ^= 1
    resp[ids[0]] = UnmaskResponse(first.user_id, first.b_shares, {ids[4]: bytes(share)})
    with pytest.raises(SecAggAbort, match="mask key|inconsistent"):
        srv.finish(list(resp.values()))


def test_unrequested_share_rejected():
    ids, srv, coh, masked = _to_unmask()
    for u in ids:
        srv.receive_masked(u, masked[u])
    req = srv.unmask_requests()
    resp = coh.unmask(req)
    r = resp[ids[0]]
    resp[ids[0]] = UnmaskResponse(r.user_id, r.b_shares, {ids[1]: r.b_shares[ids[1]]})
    with pytest.raises(SecAggError, match="not requested"):
        srv.finish(list(resp.values()))


def test_roster_checks():
    cfg, ids, srv, coh = _setup()
    roster = srv.advertise(coh.advertise_keys())
    from dataclasses import replace

    with pytest.raises(SecAggError, match="threshold"):
        coh.share_keys(replace(roster, threshold=2))
    with pytest.raises(SecAggError, match="round"):
        coh.share_keys(replace(roster, round_id=roster.round_id + 1))
    other = ClientCohort(cfg, 1, ids, run_id="run")
    other_keys = other.advertise_keys()
    swapped = dict(roster.s_pks)
    swapped[ids[0]] = other_keys[ids[0]].s_pk
    with pytest.raises(SecAggError, match="wrong public keys"):
        coh.share_keys(replace(roster, s_pks=swapped))
    dup = dict(roster.c_pks)
    dup[ids[1]] = dup[ids[0]]
    with pytest.raises(SecAggError, match="repeated"):
        coh.share_keys(replace(roster, c_pks=dup))


def test_tampered_share_ciphertext_rejected_by_receiver():
    cfg, ids, srv, coh = _setup()
    roster = srv.advertise(coh.advertise_keys())
    inboxes = srv.route_shares(coh.share_keys(roster))
    ct = bytearray(inboxes[ids[0]][ids[1]])
    ct[30] ^= 0x80
    inboxes[ids[0]][ids[1]] = bytes(ct)
    with pytest.raises(SecAggError, match="authentication"):
        coh.masked_input(inboxes, np.zeros((5, 3), np.uint32))


def test_share_routed_to_wrong_receiver_rejected():
    cfg, ids, srv, coh = _setup()
    roster = srv.advertise(coh.advertise_keys())
    inboxes = srv.route_shares(coh.share_keys(roster))
    inboxes[ids[0]][ids[1]] = inboxes[ids[2]][ids[1]]  # 1 -> 2 ciphertext delivered to 0
    with pytest.raises(SecAggError, match="authentication"):
        coh.masked_input(inboxes, np.zeros((5, 3), np.uint32))


def test_weak_users_removed_from_u2():
    # complete graph of 6, t = 4: if 3 users never share, nobody keeps 4 holders -> abort
    inputs = _inputs(6, 2)
    ids = sorted(inputs)
    with pytest.raises(SecAggAbort):
        run_round(SecAggConfig(threshold=4), inputs, dropped={"share_keys": ids[:3]})


def test_dropout_summary_counts():
    inputs = _inputs(10, 2)
    ids = sorted(inputs)
    drop = {
        "advertise_keys": ids[:1],
        "share_keys": ids[1:2],
        "masked_input": ids[2:3],
        "unmask": ids[3:4],
    }
    res = run_round(SecAggConfig(threshold=0.5), inputs, dropped=drop)
    assert res.server.dropout_summary() == {
        "planned": 10,
        "advertised": 9,
        "shared": 8,
        "u2": 8,
        "u3": 7,
        "responded": 6,
        "recovered": 1,  # the masked-input dropout's pairwise masks were rebuilt from shares
    }
    assert res.dropped == (ids[2],)


def test_survivor_weight_sum():
    inputs = _inputs(5, 2)
    ids = sorted(inputs)
    w = {u: 0.1 * (i + 1) for i, u in enumerate(ids)}
    res = run_round(SecAggConfig(threshold=3), inputs, dropped={"masked_input": ids[:1]}, weights=w)
    assert res.server.survivor_weight_sum() == pytest.approx(sum(w[u] for u in ids[1:]))
