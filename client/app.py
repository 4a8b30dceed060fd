"""Flower ClientApp: a node trains and evaluates the cohort of users it hosts.

Message contract (server -> node): ``config`` ConfigRecord with ``fedrec-config`` (the resolved run
config as YAML) and ``server-round``; ``arrays`` ArrayRecord with the flat ``shared`` vector;
``plan`` ArrayRecord with the sampled ``users`` of this node (int64) and their ``trust`` (float64).
Node -> server: ``update`` ArrayRecord (``sum``: sum of w_u * clip(delta_u) + noise, or ``rows``:
one row per user), ``metrics`` MetricRecord, ``report`` ArrayRecord (``users`` included,
``dropped``, ``norms``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.attacks import AttackHook
from client.node_data import local_split, node_users, run_config
from client.pipeline import process_chunk, user_weights
from client.state import PrivateStore, node_state_dir
from recommender.local_training import build_schedule, train_cohort, train_sequentially, user_rng
from recommender.metrics import full_ranks, rank_metrics, sampled_ranks
from recommender.ncf import NeuMFShape, score_all_items, score_items, unflatten_shared

log = logging.getLogger(__name__)
app = ClientApp()


def _setup(msg: Message, context: Context):
    cfg = run_config(str(msg.content["config"]["fedrec-config"]))
    split = local_split(cfg.data)
    shape = NeuMFShape(split.n_items, cfg.model.factors)
    hosted = node_users(context.node_config, cfg.data.population)
    return cfg, split, shape, hosted


def _dropped(users: np.ndarray, fraction: float, seed: int, rnd: int) -> np.ndarray:
    """Simulated dropouts: each user vanishes with probability ``fraction`` (seeded per user)."""
    if fraction <= 0:
        return np.zeros(len(users), bool)
    return np.array([np.random.default_rng([seed, rnd, int(u), 31]).random() < fraction for u in users])


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    """Tell the server which users this node hosts (sent once, at start-up)."""
    cfg, split, _, hosted = _setup(msg, context)
    counts = np.diff(split.train_indptr)[hosted]
    content = RecordDict({"node": ArrayRecord({"users": Array(hosted), "train-counts": Array(counts)})})
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the sampled users of this node and reply with their aggregated contribution."""
    t0 = time.perf_counter()
    cfg, split, shape, hosted = _setup(msg, context)
    rnd = int(msg.content["config"]["server-round"])
    plan = msg.content["plan"]
    users = plan["users"].numpy().astype(np.int64)
    trust = plan["trust"].numpy().astype(np.float64)
    individual = bool(msg.content["config"].get("individual", False))
    attack = AttackHook(cfg, split)
    torch.set_num_threads(1)
    store = PrivateStore(context, hosted, shape, cfg.seed, as_of=rnd - 1,
                         disk=node_state_dir(msg.content["config"], context.node_config))  # fmt: skip
    store.rows(users)  # refuse users this node does not host, naming them
    gone = _dropped(users, cfg.simulation.dropout, cfg.seed, rnd)
    users, trust, dropped = users[~gone], trust[~gone], users[gone]
    counts = np.diff(split.train_indptr)[users]
    order = np.argsort(counts, kind="stable")  # similar schedule lengths per chunk: less padding
    users, trust, counts = users[order], trust[order], counts[order]
    shared = torch.from_numpy(msg.content["arrays"]["shared"].numpy().copy())
    gen = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, rnd, int(hosted[0])]).integers(2**62)))
    acc = None
    rows, norms, losses = [], [], []
    weight_sum = 0.0
    for lo in range(0, len(users), cfg.client.chunk_users):
        chunk = users[lo : lo + cfg.client.chunk_users]
        schedules = [build_schedule(attack.positives(int(u), split.train_of(int(u)), rnd), split.seen_of(int(u)),
                                    split.n_items, cfg.client, user_rng(cfg.seed, rnd, int(u))) for u in chunk]  # fmt: skip
        if cfg.privacy.unit == "example":  # DP-SGD per user, sequential (client/example_dp.py)
            from client.example_dp import train_chunk_example_dp

            delta, new_private, loss = train_chunk_example_dp(shared, store.get(chunk), chunk, split, shape, cfg, rnd)
        else:
            train = train_cohort if cfg.client.path == "cohort" else train_sequentially
            delta, new_private, loss = train(shared, store.get(chunk), schedules, shape, cfg.client)
        store.put(chunk, new_private)
        delta = attack.poison(delta, chunk, rnd)  # identity unless cfg.attack makes some of these users malicious
        w = user_weights(trust[lo : lo + len(chunk)], counts[lo : lo + len(chunk)], cfg.strategy.example_cap)
        contrib = process_chunk(delta, w, cfg, shape, gen, individual=individual)
        if individual:
            rows.append(contrib.weighted.float().numpy())
        else:
            acc = contrib.weighted if acc is None else acc + contrib.weighted
        weight_sum += contrib.weight_sum
        norms.append(contrib.norms)
        losses.append(loss.numpy())
    store.save(rnd)
    update = {"rows": Array(np.concatenate(rows) if rows else np.zeros((0, shape.shared_dim), np.float32))} \
        if individual else {"sum": Array((acc if acc is not None else torch.zeros(shape.shared_dim)).float().numpy())}
    loss_all = np.concatenate(losses) if losses else np.zeros(0)
    content = RecordDict({
        "update": ArrayRecord(update),
        "metrics": MetricRecord({
            "num-examples": int(counts.sum()), "weight-sum": float(weight_sum), "users": len(users),
            "train-loss": float(loss_all.mean()) if len(loss_all) else 0.0,
            "node-seconds": time.perf_counter() - t0,
        }),
        "report": ArrayRecord({
            "users": Array(users), "dropped": Array(dropped),
            "norms": Array(np.concatenate(norms) if norms else np.zeros(0, np.float32)),
            "weights": Array(user_weights(trust, counts, cfg.strategy.example_cap)),
        }),
    })  # fmt: skip
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score this node's users' held-out test items with the global model and their embeddings.

    Replies with sums (not means) so the server can average exactly over all users: sampled
    HR/NDCG@10 (test item vs its 99 negatives) and full-ranking HR/NDCG@10 (all items outside the
    user's train and validation history), plus a histogram of recommended items for coverage.
    """
    cfg, split, shape, hosted = _setup(msg, context)
    rnd = int(msg.content["config"]["server-round"])
    attack = AttackHook(cfg, split)
    users = attack.honest(hosted)  # an attack's fake users are not the audience it is measured on
    limit = cfg.simulation.eval_max_users
    if limit and len(users) > limit:
        users = np.sort(np.random.default_rng([cfg.seed, 17, int(hosted[0])]).choice(users, limit, replace=False))
    store = PrivateStore(context, hosted, shape, cfg.seed, as_of=rnd,
                         disk=node_state_dir(msg.content["config"], context.node_config))  # fmt: skip
    shared = unflatten_shared(torch.from_numpy(msg.content["arrays"]["shared"].numpy().copy()), shape)
    priv = store.get(users)
    torch.set_num_threads(1)
    seed = int(np.random.default_rng([cfg.seed, rnd, int(hosted[0]), 5]).integers(2**31))
    test = split.test_item[users].astype(np.int64)
    cand = np.concatenate([test[:, None], split.eval_negatives[users]], axis=1)
    s = score_items(shared, priv, torch.from_numpy(cand)).numpy()
    sampled = rank_metrics(sampled_ranks(s[:, 0], s[:, 1:], seed), 10)
    hr_f = ndcg_f = 0.0
    exposed = 0
    top_hist = np.zeros(split.n_items, np.int64)
    for lo in range(0, len(users), 256):
        us = users[lo : lo + 256]
        full = score_all_items(shared, priv[lo : lo + 256]).numpy()
        exclude = np.zeros(full.shape, bool)
        for j, u in enumerate(us):
            exclude[j, split.train_of(int(u))] = True
            exclude[j, split.val_item[u]] = True
        ranks = full_ranks(full, test[lo : lo + 256], exclude, seed + lo)
        m = rank_metrics(ranks, 10)
        hr_f += m["hr@10"] * len(us)
        ndcg_f += m["ndcg@10"] * len(us)
        full[exclude] = -np.inf
        top10 = np.argpartition(-full, 10, axis=1)[:, :10]
        top_hist += np.bincount(top10.ravel(), minlength=split.n_items)
        exposed += attack.exposure(top10)
    n = len(users)
    content = RecordDict({
        "metrics": MetricRecord({
            "num-examples": n, "hr@10-sum": sampled["hr@10"] * n, "ndcg@10-sum": sampled["ndcg@10"] * n,
            "full-hr@10-sum": hr_f, "full-ndcg@10-sum": ndcg_f,
            **({"er@10-sum": float(exposed)} if attack.targets is not None else {}),
        }),
        "coverage": ArrayRecord({"top10-hist": Array(top_hist)}),
        "config": ConfigRecord({"users": n}),
    })  # fmt: skip
    return Message(content, reply_to=msg)


@app.query("export")
def export(msg: Message, context: Context) -> Message:
    """Simulation only: hand the private embeddings to the server to be saved with the run.

    Refused unless the node runs inside the simulation engine (no ``FEDREC_DEVICE`` marker):
    on a real device the embeddings never leave the node.
    """
    import os

    if os.environ.get("FEDREC_DEVICE"):
        raise PermissionError("private embeddings never leave a device")
    cfg, _, shape, hosted = _setup(msg, context)
    store = PrivateStore(context, hosted, shape, cfg.seed, as_of=int(msg.content["config"]["server-round"]),
                         disk=node_state_dir(msg.content["config"], context.node_config))  # fmt: skip
    return Message(RecordDict({"private": ArrayRecord({"users": Array(hosted), "emb": Array(store.matrix)})}),
                   reply_to=msg)  # fmt: skip


# Secure aggregation: the four protocol stages as train.secagg_* actions (adapters in client/secagg.py).
from client import secagg as _secagg  # noqa: E402

_secagg.register(app)
