"""Stock Flower baseline for `fedrec bench simulate`: one SuperNode per user, Flower's own FedAvg.

This is how a Flower user would simulate the same workload without fedrec's cohorts: every user is
its own SuperNode running a ClientApp that trains that one user (the same sequential local-training
code fedrec uses on devices), replies with its full shared-parameter vector, and Flower's Message-API
``FedAvg`` averages the replies. Nothing here is used by fedrec itself.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from client.node_data import local_split, run_config
from client.state import initial_private
from recommender.local_training import build_schedule, train_user_sequential, user_rng
from recommender.ncf import NeuMFShape, flatten_shared, init_shared

client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = run_config(str(msg.content["config"]["fedrec-config"]))
    split = local_split(cfg.data)
    shape = NeuMFShape(split.n_items, cfg.model.factors)
    user = int(context.node_config["partition-id"])
    rnd = int(msg.content["config"]["server-round"])
    torch.set_num_threads(1)
    rec = context.state.array_records.get("private")
    private = torch.from_numpy(rec["emb"].numpy().copy()) if rec is not None else \
        torch.from_numpy(initial_private(np.array([user]), shape, cfg.seed)[0])  # fmt: skip
    shared = torch.from_numpy(msg.content["arrays"]["shared"].numpy().copy())
    sched = build_schedule(split.train_of(user), split.seen_of(user), split.n_items, cfg.client,
                           user_rng(cfg.seed, rnd, user))  # fmt: skip
    new_shared, new_private, loss = train_user_sequential(shared, private, sched, shape, cfg.client)
    context.state.array_records["private"] = ArrayRecord({"emb": Array(new_private.numpy())})
    content = RecordDict({"arrays": ArrayRecord({"shared": Array(new_shared.numpy())}),
                          "metrics": MetricRecord({"num-examples": int(len(split.train_of(user))), "loss": loss})})  # fmt: skip
    return Message(content, reply_to=msg)


class _TimedFedAvg(FedAvg):
    """Flower's FedAvg, recording when each round starts and ends."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.round_started: dict[int, float] = {}
        self.round_ended: dict[int, float] = {}

    def configure_train(self, server_round, arrays, config, grid):
        self.round_started[server_round] = time.perf_counter()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        out = super().aggregate_train(server_round, replies)
        self.round_ended[server_round] = time.perf_counter()
        return out


def make_server_app(config_yaml: str, population: int, per_round: int, rounds: int, n_items: int,
                    factors: int, result: dict) -> ServerApp:  # fmt: skip
    """A ServerApp running Flower's FedAvg over ``per_round`` of ``population`` single-user nodes."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = _TimedFedAvg(fraction_train=per_round / population, fraction_evaluate=0.0,
                                min_train_nodes=per_round, min_available_nodes=population)  # fmt: skip
        init = flatten_shared(init_shared(NeuMFShape(n_items, factors))).numpy()
        result["first_message"] = time.perf_counter()
        strategy.start(grid=grid, initial_arrays=ArrayRecord({"shared": Array(init)}), num_rounds=rounds,
                       train_config=ConfigRecord({"fedrec-config": config_yaml}))  # fmt: skip
        result["round_started"] = strategy.round_started
        result["round_ended"] = strategy.round_ended

    return app
