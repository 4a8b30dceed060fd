"""Secure aggregation inside fedrec's round, in process (InProcessGrid: real ClientApp, no Ray)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message

from client.app import app
from client.secagg import quantization_config
from configs.store import compose_config
from experiments.inprocess import InProcessGrid
from server.app import build_loop

BASE = ["data=synthetic", "data.users=40", "data.items=200", "data.mean_interactions=15",
        "simulation.rounds=3", "simulation.eval_every=0", "simulation.nodes=2", "overwrite=true"]  # fmt: skip


def _loop(tmp_path, name: str, *extra: str, intercept=None):
    cfg = compose_config([*BASE, f"runs_dir={tmp_path}", f"name={name}", *extra])
    loop = build_loop(cfg)
    grid = InProcessGrid(2, app, intercept)
    loop.discover(grid)
    return cfg, loop, grid


def test_secure_round_matches_plain_round_up_to_quantisation(tmp_path):
    _, plain, g1 = _loop(tmp_path, "off")
    rec_off = plain.run_round(g1)
    cfg, sec, g2 = _loop(tmp_path, "on", "secure_agg=on")
    theta0 = sec.theta.copy()
    rec_on = sec.run_round(g2)
    assert rec_on["users"] == rec_off["users"] == 40 and "failure" not in rec_on["secagg"]
    assert rec_on["train-loss"] == pytest.approx(rec_off["train-loss"], abs=1e-7)
    q = quantization_config(cfg)
    value_err, weight_err = q.error_bound(40)
    assert abs(rec_on["weight-sum"] - rec_off["weight-sum"]) <= weight_err
    # item rows move by item_lr * sum (server lr 1, sgd): error < item_lr * n * step per coordinate
    diff = np.abs(sec.theta - plain.theta)
    assert diff.max() <= cfg.strategy.item_lr * value_err + 1e-6, diff.max()
    assert np.abs(sec.theta - theta0).max() > 100 * diff.max()  # the model did move
    # the stages went over Flower messages of their own types, all envelopes accepted
    types = {m.metadata.message_type for m in g2.sent}
    assert {"train.secagg_advertise", "train.secagg_share", "train.secagg_masked", "train.secagg_unmask"} <= types
    assert "train" not in types
    assert rec_on["secagg"]["rejected"]["total"] == 0
    key = tmp_path / "on" / "secagg" / "server_key.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_injected_dropouts_at_every_stage_complete_the_round(tmp_path):
    drops = ["secure_agg.dropout.advertise_keys=0.1", "secure_agg.dropout.share_keys=0.1",
             "secure_agg.dropout.masked_input=0.1", "secure_agg.dropout.unmask=0.1"]  # fmt: skip
    _, loop, grid = _loop(tmp_path, "drop", "secure_agg=on", "privacy=distributed", "privacy.sample_rate=0.9", *drops)
    before = loop.theta.copy()
    rec = loop.run_round(grid)
    c = rec["secagg"]["counts"]
    assert "failure" not in rec["secagg"]
    assert c["planned"] > c["advertised"] > c["shared"] >= c["u3"] > c["responded"]
    # survivors are the users whose masked input is in the sum; the accountant hears that number
    assert rec["users"] == c["u3"] and rec["dropouts"] == c["planned"] - c["u3"]
    assert rec["noise_multiplier_received"] > 0 and np.abs(loop.theta - before).max() > 0


def test_below_threshold_fails_cleanly_and_next_round_runs(tmp_path):
    def lose_all_masked_inputs_in_round_1(msg, reply):
        if msg.metadata.message_type == "train.secagg_masked" and msg.metadata.group_id == "1":
            return None
        return reply

    _, loop, grid = _loop(tmp_path, "fail", "secure_agg=on", intercept=lose_all_masked_inputs_in_round_1)
    before = loop.theta.copy()
    rec1 = loop.run_round(grid)
    assert "fewer than the threshold" in rec1["secagg"]["failure"] and rec1.get("skipped")
    assert rec1["users"] == 0
    np.testing.assert_array_equal(loop.theta, before)  # model unchanged
    rec2 = loop.run_round(grid)
    assert "failure" not in rec2["secagg"] and rec2["users"] == 40
    assert not np.array_equal(loop.theta, before)


def _mangle(stage_type: str, how: str, node: int = 1000):
    """Alter node ``node``'s reply to ``stage_type`` in round 1 as an attacker on the wire (or the node) could."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from secure_agg import EnvelopeSealer

    def intercept(msg, reply):
        if msg.metadata.message_type != stage_type or msg.metadata.group_id != "1" or msg.metadata.dst_node_id != node:
            return reply
        rec = reply.content["secagg"]
        envs = [bytes(e) for e in rec["envelopes"]]
        run = msg.content["secagg-run"]
        key = serialization.load_pem_public_key(bytes(run["server-key"]))
        users = [int(u) for u in msg.content["plan"]["users"].numpy()]
        if how == "tamper":  # the last user's section
            envs[0] = envs[0][:-1] + bytes([envs[0][-1] ^ 1])
        elif how == "truncate":
            envs[0] = envs[0][:-20]
        elif how == "replay":
            envs.append(envs[0])
        elif how == "foreign":  # an authentic envelope of this node, speaking for a user it was not sent
            envs.append(EnvelopeSealer(key, str(run["run-id"])).seal({10**6: b"x"}, 1, node, "advertise_keys"))
        elif how == "other-node":  # sealed as if it came from another node
            envs[0] = EnvelopeSealer(key, str(run["run-id"])).seal({u: b"x" for u in users}, 1, node + 1,
                                                                   "advertise_keys")  # fmt: skip
        elif how == "wrong-key":
            other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
            envs[0] = EnvelopeSealer(other, str(run["run-id"])).seal({u: b"x" for u in users}, 1, node,
                                                                     "advertise_keys")  # fmt: skip
        reply.content["secagg"] = ConfigRecord({"envelopes": envs, "dropped": list(rec["dropped"])})
        return reply

    return intercept


@pytest.mark.parametrize(("how", "reason", "count", "lost"), [
    ("tamper", "tampered", 1, 1), ("truncate", "truncated", 1, 20), ("replay", "replayed", 20, 0),
    ("foreign", "misrouted", 1, 0), ("other-node", "misrouted", 1, 20), ("wrong-key", "wrong_key", 1, 20),
])  # fmt: skip
def test_rejected_envelopes_are_counted_and_the_round_goes_on(tmp_path, how, reason, count, lost):
    _, loop, grid = _loop(tmp_path, how, "secure_agg=on", intercept=_mangle("train.secagg_advertise", how))
    rec = loop.run_round(grid)
    assert "failure" not in rec["secagg"]
    rejected = rec["secagg"]["rejected"]
    assert rejected[reason] == rejected["total"] == count  # a whole envelope counts once, a section once each
    assert rec["users"] == 40 - lost
    summary = loop.write_summary(finished=False)
    assert summary["rejected_messages"][reason] == count


def test_update_scoring_strategy_is_refused_under_secure_agg(tmp_path):
    _, loop, grid = _loop(tmp_path, "refuse", "secure_agg=on")
    loop.strategy.needs_individual_updates = True
    with pytest.raises(ValueError, match="hides individual updates"):
        loop.run_round(grid)


class _NodeDiesAt:
    """A node that stops answering from one message type of round ``rnd`` on (plain train messages
    carry no round): the SuperLink then replies for it with Flower's ``NODE_UNAVAILABLE`` error,
    which is what a SIGKILLed SuperNode produces."""

    def __init__(self, node: int, message_type: str, rnd: int = 1) -> None:
        self.node, self.message_type, self.rnd, self.dead = node, message_type, str(rnd), False

    def __call__(self, msg, reply):
        if msg.metadata.dst_node_id != self.node:
            return reply
        if msg.metadata.message_type == self.message_type and msg.metadata.group_id in (self.rnd, ""):
            self.dead = True
        if not self.dead:
            return reply
        from flwr.app import Error
        from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

        err = Message(Error(ErrorCode.NODE_UNAVAILABLE, "Error: Node Unavailable"), reply_to=msg)
        err.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID  # the SuperLink writes it, not the node
        return err


def _four_nodes(tmp_path, name: str, intercept, *extra: str):
    cfg = compose_config([*BASE, f"runs_dir={tmp_path}", f"name={name}", "simulation.nodes=4", *extra])
    loop = build_loop(cfg)
    grid = InProcessGrid(4, app, intercept)
    loop.discover(grid)
    return loop, grid


def test_a_node_lost_after_sharing_keys_is_recovered_from_the_survivors_shares(tmp_path, caplog):
    # complete graph: t = 20 of the 40 users; node 1003 (10 users) dies once it has shared its keys
    dies = _NodeDiesAt(1003, "train.secagg_masked")
    loop, grid = _four_nodes(tmp_path, "lost", dies, "secure_agg=on", "secure_agg.neighbours=null")
    before = loop.theta.copy()
    rec = loop.run_round(grid)
    c = rec["secagg"]["counts"]
    assert "failure" not in rec["secagg"] and not rec.get("skipped"), rec["secagg"]
    assert c["advertised"] == c["u2"] == 40 and c["u3"] == c["responded"] == 30 and c["recovered"] == 10, c
    assert rec["users"] == 30 and rec["dropouts"] == 10
    assert np.abs(loop.theta - before).max() > 0
    assert "round 1 masked_input: node 1003 failed: Error: Node Unavailable" in caplog.text  # not "node 1"
    # the masks were removed exactly: the secure sum equals the plain sum of the same 30 survivors
    plain, pgrid = _four_nodes(tmp_path, "lost-plain", _NodeDiesAt(1003, "train"))
    rec_plain = plain.run_round(pgrid)
    assert rec_plain["users"] == 30 and rec_plain["dropouts"] == 10
    assert rec["weight-sum"] == pytest.approx(rec_plain["weight-sum"], abs=1e-3)
    assert np.abs(loop.theta - plain.theta).max() < 1e-3
    # the next round: the dead node's users drop out before advertising, the round still completes
    rec2 = loop.run_round(grid)
    c2 = rec2["secagg"]["counts"]
    assert "failure" not in rec2["secagg"] and c2["advertised"] == c2["u3"] == 30 and c2["recovered"] == 0
