"""Secure aggregation inside fedrec's round, in process (InProcessGrid: real ClientApp, no Ray)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from flwr.app import ConfigRecord

from client.app import app
from client.secagg import quantization_config
from configs.store import compose_config
from server.app import build_loop
from tests.server.inproc_grid import InProcessGrid

BASE = ["data=synthetic", "data.users=40", "data.items=200", "data.mean_interactions=15",
        "simulation.rounds=3", "simulation.eval_every=0", "simulation.nodes=2", "overwrite=true"]  # fmt: skip


def _loop(tmp_path, name: str, *extra: str, intercept=None):
    cfg = compose_config([*BASE, f"runs_dir={tmp_path}", f"name={name}", *extra])
    loop = build_loop(cfg)
    grid = InProcessGrid(app, 2, intercept)
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


def _mangle(stage_type: str, how: str):
    def intercept(msg, reply):
        if msg.metadata.message_type != stage_type or msg.metadata.group_id != "1":
            return reply
        rec = reply.content["secagg"]
        users, envs = list(rec["users"]), [bytes(e) for e in rec["envelopes"]]
        if not users:
            return reply
        if how == "tamper":
            envs[0] = envs[0][:-1] + bytes([envs[0][-1] ^ 1])
        elif how == "truncate":
            envs[0] = envs[0][:-20]
        elif how == "replay":
            users.append(users[0])
            envs.append(envs[0])
        elif how == "foreign":  # speak for a user of another node
            users.append(10**6)
            envs.append(envs[0])
        reply.content["secagg"] = ConfigRecord({"users": users, "envelopes": envs, "dropped": list(rec["dropped"])})
        return reply

    return intercept


@pytest.mark.parametrize(("how", "reason", "lost"), [("tamper", "tampered", 1), ("truncate", "truncated", 1),
                                                     ("replay", "replayed", 0), ("foreign", "misrouted", 0)])  # fmt: skip
def test_rejected_envelopes_are_counted_and_the_round_goes_on(tmp_path, how, reason, lost):
    _, loop, grid = _loop(tmp_path, how, "secure_agg=on", intercept=_mangle("train.secagg_advertise", how))
    rec = loop.run_round(grid)
    assert "failure" not in rec["secagg"]
    assert rec["secagg"]["rejected"][reason] >= 1  # both nodes' replies pass the interceptor
    assert rec["users"] == 40 - lost * 2
    summary = loop.write_summary(finished=False)
    assert summary["rejected_messages"][reason] == rec["secagg"]["rejected"][reason]


def test_update_scoring_strategy_is_refused_under_secure_agg(tmp_path):
    _, loop, grid = _loop(tmp_path, "refuse", "secure_agg=on")
    loop.strategy.needs_individual_updates = True
    with pytest.raises(ValueError, match="hides individual updates"):
        loop.run_round(grid)
