"""The server's round loop: select users, send to nodes, aggregate, account, evaluate, save.

Flower's ``Strategy.start`` runs one train exchange per round with node-level sampling; fedrec
samples *users* (Poisson when DP is on, as the accountant assumes), groups them by node, and must
checkpoint privacy state every round, so the loop is written here around Flower's Grid and the
strategy's ``configure_*``/``aggregate_*`` methods.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from configs.schema import FedrecConfig, to_yaml
from privacy.accountant import PrivacyAccountant
from privacy.budget import check_budget
from privacy.errors import PrivacyBudgetExceeded
from privacy.example import example_epsilons
from privacy.ledger import ParticipationLedger
from privacy.mechanism import central_noise_std, effective_noise_multiplier
from privacy.sampling import fixed_size_sample, poisson_sample
from recommender.model_store import save_version
from recommender.ncf import NeuMFShape, flatten_shared, init_shared
from server.rundir import RunDir
from strategies.factory import create_strategy

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict[str, Any]], None]


class ModelDiverged(RuntimeError):
    """The aggregated global model has NaN/inf entries; the run stops with the last finite model."""


class RoundLoop:
    """One federated run over a Flower Grid.

    Parameters
    ----------
    cfg : FedrecConfig
        The validated run config.
    run_dir : RunDir
    n_items : int
        Catalogue size (fixes the model shape).
    overrides : list of str
        The command-line overrides, recorded in summary.json.
    progress : callable, optional
        Called as ``progress(round, rounds, metrics)`` after every round.
    """

    def __init__(self, cfg: FedrecConfig, run_dir: RunDir, n_items: int, overrides: list[str] | None = None,
                 progress: ProgressFn | None = None) -> None:  # fmt: skip
        self.cfg, self.run_dir, self.overrides, self.progress = cfg, run_dir, overrides or [], progress
        self.shape = NeuMFShape(n_items, cfg.model.factors)
        self.population = cfg.data.population
        p = cfg.privacy
        self.dp = p.mode != "off"
        self.delta = p.resolved_delta(self.population) if self.dp else None
        expected_weight = p.sample_rate * self.population if self.dp else None
        self.strategy = create_strategy(cfg, self.shape, fixed_denominator=expected_weight)
        self.accountant = PrivacyAccountant(p.accountant) if self.dp else None
        if p.mode == "central":  # N(0, (zC)^2) once on the weighted sum; drawn from the checkpointed rng
            std = central_noise_std(p.noise_multiplier, p.clip_norm)
            self.strategy.sum_noise = lambda dim: self.rng.normal(0.0, std, dim)
        self.ledger = ParticipationLedger(self.population, p.max_participations)
        self.rng = np.random.default_rng([cfg.seed, 1])
        self.theta = flatten_shared(init_shared(self.shape, cfg.model.init_seed)).numpy()
        self.round = 0
        self.history: list[dict[str, Any]] = []
        self.wall_seconds = 0.0
        self.startup_seconds = 0.0
        self.stop_reason: str | None = None
        self.dropouts_total = 0
        self.rejected: dict[str, int] = {}
        self.writer = None
        self.stop_event = threading.Event()
        self.grid: Grid | None = None
        self.connected: list[int] = []

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self.round, "theta": self.theta, "strategy": self.strategy.state_dict(),
            "accountant": self.accountant.state_dict() if self.accountant else None,
            "ledger": self.ledger.state_dict(), "rng": self.rng.bit_generator.state,
            "history": self.history, "wall_seconds": self.wall_seconds, "dropouts": self.dropouts_total,
            "rejected": self.rejected, "startup_seconds": self.startup_seconds,
        }  # fmt: skip

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.round, self.theta = int(s["round"]), np.asarray(s["theta"], np.float32)
        self.strategy.load_state_dict(s["strategy"])
        if self.accountant is not None and s["accountant"] is not None:
            self.accountant.load_state_dict(s["accountant"])
        self.ledger.load_state_dict(s["ledger"])
        self.rng.bit_generator.state = s["rng"]
        self.history, self.wall_seconds = list(s["history"]), float(s["wall_seconds"])
        self.dropouts_total, self.rejected = int(s["dropouts"]), dict(s["rejected"])
        self.startup_seconds = float(s.get("startup_seconds", 0.0))

    # ---- nodes -------------------------------------------------------------------------------
    def _config_record(self, server_round: int) -> ConfigRecord:
        if getattr(self, "_cfg_yaml", None) is None:  # the config is fixed for the run; rendering it costs ~0.1 s
            self._cfg_yaml = to_yaml(self.cfg)
        rec = ConfigRecord({"fedrec-config": self._cfg_yaml, "server-round": server_round})
        if getattr(self, "node_state_dir", None):  # simulation only: where nodes version their private state
            rec["node-state-dir"] = str(self.node_state_dir)
        return rec

    def _node_order(self, reply: Message) -> int:
        """A node's place in summation order: its smallest user (node ids are random per run)."""
        if getattr(self, "_first_user", None) is None:
            self._first_user = {}
            for i, nid in enumerate(self.node_ids):
                hosted = np.flatnonzero(self.user_node == i)
                self._first_user[nid] = int(hosted[0]) if len(hosted) else self.population
        return self._first_user.get(int(reply.metadata.src_node_id), self.population + 1)

    def wait_for_nodes(self, rnd: int) -> str | None:
        """Before a round: report which known nodes are connected and wait (up to
        ``simulation.connect_timeout``) for ``simulation.min_replies`` of them; returns why the
        round must be skipped, or None."""
        sim = self.cfg.simulation
        need = min(max(sim.min_replies, 1), len(self.node_ids))
        known = set(self.node_ids)
        t0 = time.perf_counter()
        while True:
            connected = sorted(known & set(self.grid.get_node_ids()))
            if len(connected) >= need:
                if len(connected) < len(known):
                    log.warning("round %d: %d of %d nodes connected (missing %s)", rnd, len(connected), len(known),
                                sorted(known - set(connected)))  # fmt: skip
                else:
                    log.info("round %d: all %d nodes connected", rnd, len(known))
                self.connected = connected
                return None
            if time.perf_counter() - t0 > sim.connect_timeout or self.stop_event.is_set():
                return (f"only {len(connected)} of {len(known)} nodes connected, {need} needed "
                        f"(simulation.min_replies) within simulation.connect_timeout={sim.connect_timeout}s")  # fmt: skip
            time.sleep(0.5)

    def discover(self, grid: Grid) -> None:
        """Wait (bounded) for the nodes, then ask each which users it hosts."""
        sim = self.cfg.simulation
        need = sim.min_nodes or sim.nodes
        t0 = time.perf_counter()
        nodes: list[int] = []
        while True:
            nodes = sorted(grid.get_node_ids())
            if len(nodes) >= need:
                break
            if time.perf_counter() - t0 > sim.connect_timeout:
                raise TimeoutError(f"only {len(nodes)} of {need} nodes connected within "
                                   f"simulation.connect_timeout={sim.connect_timeout}s; start more SuperNodes "
                                   "or lower simulation.min_nodes")  # fmt: skip
            time.sleep(0.2)
        # Nodes register one by one: once the minimum is there, wait until the count settles.
        settled = time.perf_counter()
        while time.perf_counter() - settled < 2.0:
            time.sleep(0.25)
            now = sorted(grid.get_node_ids())
            if len(now) != len(nodes):
                nodes, settled = now, time.perf_counter()
        log.info("%d nodes connected: %s", len(nodes), nodes)
        msgs = [Message(RecordDict({"config": self._config_record(0)}), dst_node_id=n,
                        message_type=f"{MessageType.QUERY}.describe") for n in nodes]  # fmt: skip
        replies = list(grid.send_and_receive(msgs, timeout=sim.round_timeout))
        # Flower node ids are unsigned 64-bit: users map to an index into self.node_ids instead.
        self.node_ids: list[int] = []
        self.user_node = np.full(self.population, -1, np.int32)
        self.train_counts = np.zeros(self.population, np.int64)
        for r in replies:
            if r.has_error():
                log.warning("node %d failed to describe itself: %s", r.metadata.src_node_id, r.error.reason)
                continue
            users = r.content["node"]["users"].numpy()
            if (self.user_node[users] >= 0).any():
                raise ValueError(f"node {r.metadata.src_node_id} claims users already hosted elsewhere")
            self.user_node[users] = len(self.node_ids)
            self.node_ids.append(int(r.metadata.src_node_id))
            self.train_counts[users] = r.content["node"]["train-counts"].numpy()
        hosted = int((self.user_node >= 0).sum())
        log.info("%d of %d users are hosted by %d nodes", hosted, self.population, len(replies))
        if hosted == 0:
            raise RuntimeError("no node described any users; check the nodes' --node-config")
        self.startup_seconds = time.perf_counter() - t0

    # ---- one round ---------------------------------------------------------------------------
    def _sample(self) -> np.ndarray:
        p, sim = self.cfg.privacy, self.cfg.simulation
        if self.dp:
            users = poisson_sample(self.population, p.sample_rate, self.rng)
        else:
            size = sim.users_per_round or self.population
            users = fixed_size_sample(self.population, size, self.rng)
        users = users[self.user_node[users] >= 0]
        return self.ledger.eligible(users) if p.max_participations else users

    def _group(self, users: np.ndarray) -> dict[int, np.ndarray]:
        nodes = self.user_node[users]
        return {self.node_ids[n]: users[nodes == n] for n in np.unique(nodes)}

    def run_round(self, grid: Grid) -> dict[str, Any]:
        """Run one training round (and evaluation when due); returns the round's record."""
        t0 = time.perf_counter()
        rnd = self.round + 1
        p = self.cfg.privacy
        if self.dp and p.target_epsilon is not None:
            check_budget(self.accountant, p.noise_multiplier, p.sample_rate, self.delta, p.target_epsilon, rnd)
        users = self._sample()
        plan = self.strategy.plan_round(self._group(users))
        secure = None
        if self.cfg.secure_agg.enabled:  # several exchanges per round; survivors = users in the unmasked sum
            from server.secagg import secure_round

            secure = secure_round(self, grid, rnd, plan)
            survivors, arrays, metrics = secure.survivors, secure.arrays, secure.metrics
        else:
            msgs = self.strategy.configure_train(rnd, ArrayRecord({"shared": Array(self.theta)}),
                                                 self._config_record(rnd), grid)  # fmt: skip
            replies = list(grid.send_and_receive(msgs, timeout=self.cfg.simulation.round_timeout))
            # Sum in node order, not arrival order: float addition is not associative, and a resumed
            # run must reproduce the uninterrupted one bit for bit.
            replies.sort(key=self._node_order)
            ok = sum(not r.has_error() for r in replies)
            if ok < min(self.cfg.simulation.min_replies, len(plan)):
                # Too few replies: recorded and skipped (model, optimizer and trust state untouched).
                log.warning("round %d: %d of %d nodes replied, %d needed (simulation.min_replies); skipping",
                            rnd, ok, len(plan), self.cfg.simulation.min_replies)  # fmt: skip
                replies = [r for r in replies if r.has_error()]
            included, dropped = [], 0
            for r in replies:
                if not r.has_error():
                    included.append(r.content["report"]["users"].numpy())
                    dropped += len(r.content["report"]["dropped"].numpy())
            missing_nodes = len(plan) - sum(not r.has_error() for r in replies)
            survivors = np.concatenate(included) if included else np.zeros(0, np.int64)
            dropped += len(users) - len(survivors) - dropped if missing_nodes else 0
            arrays, metrics = self.strategy.aggregate_train(rnd, replies) if any(
                not r.has_error() for r in replies) else (None, {})  # fmt: skip
        record: dict[str, Any] = {"round": rnd, "users_planned": int(len(users)), "users": int(len(survivors)),
                                  "dropouts": int(len(users) - len(survivors))}  # fmt: skip
        if secure is not None:
            record["secagg"] = secure.record
        self.dropouts_total += record["dropouts"]
        # A non-finite model (e.g. DP noise times a large strategy.item_lr) is never adopted or evaluated.
        diverged = arrays is not None and not np.isfinite(arrays["shared"].numpy()).all()
        if arrays is not None and not diverged:
            self.theta = arrays["shared"].numpy()
            record.update({k: float(v) for k, v in metrics.items()})
        elif diverged:
            record["skipped"] = True
        else:
            record["skipped"] = True
        if self.dp:
            t_acc = time.perf_counter()
            if len(survivors):  # no survivors: nothing was released (see effective_noise_multiplier)
                m_min = p.resolved_min_survivors(self.population)
                z_eff = effective_noise_multiplier(p.mode, p.noise_multiplier, len(survivors), m_min)
                self.accountant.step(z_eff, p.sample_rate)
                self.ledger.record(survivors)
                record["noise_multiplier_received"] = z_eff
            record["epsilon"] = self.accountant.get_epsilon(self.delta)
            record["accounting_seconds"] = time.perf_counter() - t_acc
        elif len(survivors):
            self.ledger.record(survivors)
        if p.unit == "example":  # per-user DP-SGD accountants: only this round's survivors changed
            prev = next((h["example_epsilon"] for h in reversed(self.history) if "example_epsilon" in h), 0.0)
            eps_u = example_epsilons(self.train_counts[survivors], self.ledger.counts[survivors],
                                     p.example_noise_multiplier, p.resolved_delta(self.population),
                                     self.cfg.client.batch_size, self.cfg.client.epochs)  # fmt: skip
            record["example_epsilon"] = max(prev, float(eps_u.max(initial=0.0)))
        if diverged:  # after the accounting: the server did see this round's noised sum
            raise ModelDiverged(f"round {rnd}: the aggregated model is not finite, training stopped with the model "
                                f"of round {self.round}; lower strategy.item_lr / strategy.server_lr "
                                "(they scale the DP noise too) or privacy.noise_multiplier")  # fmt: skip
        self.round = rnd
        every = self.cfg.simulation.eval_every
        if every and (rnd % every == 0 or rnd == self.cfg.simulation.rounds):
            record.update(self.evaluate(grid, rnd))
        record["seconds"] = time.perf_counter() - t0
        self.wall_seconds += record["seconds"]
        self.history.append(record)
        self._save(record)
        return record

    def evaluate(self, grid: Grid, rnd: int) -> dict[str, float]:
        """Federated evaluation of every node's users on the test split."""
        nodes = self.node_ids
        content = RecordDict({"arrays": ArrayRecord({"shared": Array(self.theta)}),
                              "config": self._config_record(rnd)})  # fmt: skip
        msgs = [Message(content, dst_node_id=n, message_type=MessageType.EVALUATE) for n in nodes]
        replies = sorted((r for r in grid.send_and_receive(msgs, timeout=self.cfg.simulation.round_timeout)
                          if not r.has_error()), key=self._node_order)  # fmt: skip
        if not replies:
            return {}
        n = sum(int(r.content["metrics"]["num-examples"]) for r in replies)
        out = {k: sum(float(r.content["metrics"][f"{k}-sum"]) for r in replies) / max(n, 1)
               for k in ("hr@10", "ndcg@10", "full-hr@10", "full-ndcg@10")}  # fmt: skip
        if all("er@10-sum" in r.content["metrics"] for r in replies):  # attack target items' exposure
            out["er@10"] = sum(float(r.content["metrics"]["er@10-sum"]) for r in replies) / max(n, 1)
        hist = sum(r.content["coverage"]["top10-hist"].numpy() for r in replies)
        out["coverage@10"] = float((hist > 0).mean())
        out["eval_users"] = n
        return out

    # ---- persistence -------------------------------------------------------------------------
    def _tb(self):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir.tb), purge_step=self.round or None)
        return self.writer

    def _save(self, record: dict[str, Any]) -> None:
        rnd = record["round"]
        w = self._tb()
        for key in ("train-loss", "hr@10", "ndcg@10", "full-hr@10", "full-ndcg@10", "coverage@10", "epsilon",
                    "example_epsilon",
                    "seconds", "users", "dropouts", "update-norm", "er@10", "trust-excluded"):  # fmt: skip
            if key in record and isinstance(record[key], float | int) and math.isfinite(record[key]):
                w.add_scalar(key.replace("@", "_at_"), record[key], rnd)
        w.flush()
        last_eval = next((h for h in reversed(self.history) if "hr@10" in h), {})
        import torch

        save_version(self.run_dir.path, rnd, torch.from_numpy(self.theta), self.shape, {
            "round": rnd, "metrics": {k: last_eval[k] for k in ("hr@10", "ndcg@10", "full-hr@10", "full-ndcg@10")
                                      if k in last_eval},
            "epsilon": record.get("epsilon"), "delta": self.delta, "data": asdict(self.cfg.data),
        })  # fmt: skip
        self.run_dir.save_checkpoint(self.state_dict())
        self.write_summary(finished=False)

    def write_summary(self, finished: bool) -> dict[str, Any]:
        evals = [h for h in self.history if "hr@10" in h]
        final = evals[-1] if evals else {}
        eps = next((h["epsilon"] for h in reversed(self.history) if "epsilon" in h), None)
        summary = {
            "name": self.cfg.name, "finished": finished, "stop_reason": self.stop_reason,
            "overrides": self.overrides, "rounds": self.round, "rounds_planned": self.cfg.simulation.rounds,
            "final": {k: final.get(k) for k in ("hr@10", "ndcg@10", "full-hr@10", "full-ndcg@10", "coverage@10",
                                                "er@10") if k in final or k != "er@10"},
            "per_round": self.history, "epsilon": eps if self.dp else None, "delta": self.delta,
            "privacy_mode": self.cfg.privacy.mode, "wall_seconds": self.wall_seconds,
            "example_epsilon": next((h["example_epsilon"] for h in reversed(self.history) if "example_epsilon" in h),
                                    None),
            "startup_seconds": self.startup_seconds,
            "users_per_round": float(np.mean([h["users"] for h in self.history])) if self.history else 0.0,
            "dropouts": self.dropouts_total, "rejected_messages": self.rejected,
            "population": self.population, "nodes": self.cfg.simulation.nodes,
        }  # fmt: skip
        self.run_dir.write_summary(summary)
        return summary

    def budget_stop_message(self, exc: PrivacyBudgetExceeded) -> str:
        """The one line that says why training stopped, what was spent, and what to change."""
        spent = self.accountant.get_epsilon(self.delta) if self.accountant is not None else 0.0
        would = "inf" if math.isinf(exc.epsilon) else f"{exc.epsilon:.3f}"
        return (f"privacy budget: stopped after round {self.round} at epsilon {spent:.3f} (delta {self.delta:.3g}); "
                f"round {exc.round_num} would reach epsilon {would} > privacy.target_epsilon={exc.target_epsilon:g}; "
                "raise privacy.target_epsilon (or privacy.noise_multiplier) to train further")  # fmt: skip

    # ---- the whole run -----------------------------------------------------------------------
    def skip_round(self, reason: str) -> dict[str, Any]:
        """Record round ``self.round + 1`` as skipped (no training) and checkpoint it."""
        rnd = self.round + 1
        log.warning("round %d skipped: %s", rnd, reason)
        record = {"round": rnd, "users_planned": 0, "users": 0, "dropouts": 0, "skipped": True,
                  "skip_reason": reason, "seconds": 0.0}  # fmt: skip
        self.round = rnd
        self.history.append(record)
        self._save(record)
        return record

    def request_stop(self) -> None:
        """Finish the round in flight, save, and stop (called from a signal handler)."""
        self.stop_event.set()

    def run(self, grid: Grid) -> dict[str, Any]:
        self.grid = grid
        self.discover(grid)
        while self.round < self.cfg.simulation.rounds:
            if self.stop_event.is_set():
                self.stop_reason = f"stopped by signal after round {self.round}; resume with resume={self.run_dir.path}"
                log.warning(self.stop_reason)
                if self.writer is not None:
                    self.writer.close()
                return self.write_summary(finished=False)
            try:
                reason = self.wait_for_nodes(self.round + 1)
                record = self.skip_round(reason) if reason else self.run_round(grid)
            except (PrivacyBudgetExceeded, ModelDiverged) as exc:
                self.stop_reason = self.budget_stop_message(exc) if isinstance(exc, PrivacyBudgetExceeded) else str(exc)
                log.warning(self.stop_reason)
                self.run_dir.save_checkpoint(self.state_dict())  # the last completed round is already saved
                break
            if self.progress:
                self.progress(self.round, self.cfg.simulation.rounds, record)
        if self.writer is not None:
            self.writer.close()
        self.export_private(grid)
        return self.write_summary(finished=True)

    def export_private(self, grid: Grid) -> None:
        """Simulation only: ask nodes for their users' private embeddings and save them with the run
        (``simulation_artifacts/``), so ``experiments.load_run(...).score`` can evaluate offline."""
        if not getattr(self, "export_private_embeddings", False):
            return
        nodes = self.node_ids
        msgs = [Message(RecordDict({"config": self._config_record(self.round)}), dst_node_id=n,
                        message_type=f"{MessageType.QUERY}.export") for n in nodes]  # fmt: skip
        users, embs = [], []
        for r in grid.send_and_receive(msgs, timeout=self.cfg.simulation.round_timeout):
            if not r.has_error():
                users.append(r.content["private"]["users"].numpy())
                embs.append(r.content["private"]["emb"].numpy())
        if users:
            import io

            from recommender.model_store import atomic_write_bytes

            buf = io.BytesIO()
            np.savez(buf, users=np.concatenate(users), emb=np.concatenate(embs),
                     note=np.array("SIMULATION ARTIFACT: private user embeddings never leave devices in deployment"))  # fmt: skip
            atomic_write_bytes(self.run_dir.path / "simulation_artifacts" / "private_embeddings.npz", buf.getvalue())
