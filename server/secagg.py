"""Server side of secure aggregation: one fedrec round as four Flower message exchanges driving
``secure_agg.SecAggServer``, with every node's upload opened from its AES-GCM/RSA envelope (one RSA
unwrap per node message, one authenticated section per user).

advertise-keys -> share-keys -> masked-input (nodes train here) -> unmask. A rejected envelope
(tampered, truncated, replayed, misrouted, wrong key) is counted and dropped, and its user is
treated as having dropped out at that stage; the protocol's dropout recovery carries the round on.
Fewer than t users left at any stage aborts the round cleanly: the model is unchanged, nothing
about the inputs is released, and the failure is written into the round record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid

from client.secagg import ACTIONS, quantization_config
from secure_agg import (
    EnvelopeError,
    EnvelopeOpener,
    RejectionCounter,
    SecAggAbort,
    SecAggError,
    SecAggServer,
    dequantize,
    generate_server_keypair,
    load_private_key,
    unpack_weighted,
)
from secure_agg.envelope import key_fingerprint
from secure_agg.messages import (
    decode_advertise,
    decode_masked,
    decode_share_keys,
    decode_unmask_response,
    encode_inbox,
    encode_roster,
    encode_unmask_request,
)
from strategies.aggregation import StreamingWeightedSum

log = logging.getLogger(__name__)

KEY_FILE = "server_key.pem"


@dataclass
class SecureRoundResult:
    """Outcome of one secure round, for ``RoundLoop.run_round``."""

    survivors: np.ndarray  # users whose masked input is in the sum (int64)
    arrays: ArrayRecord | None  # new global parameters, None when the round failed
    metrics: MetricRecord | None
    record: dict[str, Any] = field(default_factory=dict)  # goes into the round record as "secagg"


class ServerSecAgg:
    """Per-run secure-aggregation state: the RSA key pair, the envelope opener and its counter.

    The key pair is created once per run in ``<run>/secagg/server_key.pem`` (0600; reused on
    resume). The run id bound into every envelope and key derivation is the run name plus the
    key's fingerprint, so envelopes of another run (even one with the same name) are refused.

    Parameters
    ----------
    cfg : FedrecConfig
    run_path : pathlib.Path
        The run directory.
    dim : int
        Length d of the shared parameter vector (the masked vectors have d + 1 entries).
    """

    def __init__(self, cfg, run_path, dim: int) -> None:
        self.cfg, self.dim = cfg, dim
        key_path = run_path / "secagg" / KEY_FILE
        if not key_path.is_file():
            key_path.parent.mkdir(parents=True, exist_ok=True)
            generate_server_keypair(key_path)
        private = load_private_key(key_path)
        pub = private.public_key()
        self.public_pem = pub.public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
        self.run_id = f"{cfg.name}-{key_fingerprint(pub).hex()[:16]}"
        self.counter = RejectionCounter()
        self.opener = EnvelopeOpener(private, self.run_id, counter=self.counter)
        self.quant = quantization_config(cfg)
        self._dst: dict[str, int] = {}  # message id -> node, of the exchange in flight

    # ---- transport helpers ---------------------------------------------------------------------
    def _send(self, grid: Grid, stage: str, rnd: int, contents: dict[int, RecordDict], timing: dict) -> list[Message]:
        msgs = [Message(content=c, dst_node_id=n, message_type=f"{MessageType.TRAIN}.{ACTIONS[stage]}",
                        group_id=str(rnd)) for n, c in contents.items()]  # fmt: skip
        t0 = time.perf_counter()
        replies = list(grid.send_and_receive(msgs, timeout=self.cfg.simulation.round_timeout)) if msgs else []
        timing["exchange_seconds"] = time.perf_counter() - t0
        # The SuperLink answers for a dead node itself (src = the SuperLink): name the node it was sent to.
        self._dst = {m.metadata.message_id: int(m.metadata.dst_node_id) for m in msgs if m.metadata.message_id}
        return replies

    def _origin(self, reply: Message) -> int:
        return self._dst.get(reply.metadata.reply_to_message_id, int(reply.metadata.src_node_id))

    def _open(self, replies: Iterable[Message], stage: str, rnd: int, node_users: dict[int, set[int]],
              decode: Callable[[bytes], Any], timing: dict) -> tuple[dict[int, Any], dict[int, Message]]:  # fmt: skip
        """Open every envelope of a stage; returns ({user: decoded message}, {node: reply})."""
        out: dict[int, Any] = {}
        by_node: dict[int, Message] = {}
        up = 0
        for r in replies:
            if r.has_error():
                node = self._origin(r)
                log.warning("round %d %s: node %d failed: %s", rnd, stage, node, r.error.reason)
                continue
            node = int(r.metadata.src_node_id)
            by_node[node] = r
            for blob in r.content["secagg"]["envelopes"]:
                blob = bytes(blob)
                up += len(blob)
                try:
                    # a node may only speak for the users it was sent: other sections are misrouted
                    opened = self.opener.open(blob, rnd, node, stage, node_users.get(node, set()))
                except EnvelopeError:
                    continue  # counted by the opener; the node's users are treated as dropped
                for u, payload in opened.payloads.items():  # refused sections: counted, user dropped
                    try:
                        out[u] = decode(payload)
                    except SecAggError as exc:
                        self.counter.record("malformed")
                        log.info("round %d %s: malformed message of user %d: %s", rnd, stage, u, exc)
        timing["bytes_up"] = up
        return out, by_node

    def _run_cfg(self, rnd: int, cfg_record: ConfigRecord) -> dict[str, Any]:
        return {"config": cfg_record, "secagg-run": ConfigRecord({"run-id": self.run_id, "server-key": self.public_pem})}

    # ---- one round -----------------------------------------------------------------------------
    def run_round(self, grid: Grid, rnd: int, plan: dict[int, tuple[np.ndarray, np.ndarray]], theta: np.ndarray,
                  cfg_record: ConfigRecord, strategy) -> SecureRoundResult:  # fmt: skip
        """Run the four stages for the users in ``plan`` (node -> (users, trust)) and aggregate."""
        sa = self.cfg.secure_agg
        planned = sorted(int(u) for users, _ in plan.values() for u in users)
        node_users = {int(n): {int(u) for u in users} for n, (users, _) in plan.items()}
        user_node = {u: n for n, us in node_users.items() for u in us}
        stages: dict[str, dict[str, float]] = {s: {} for s in ACTIONS}
        record: dict[str, Any] = {"planned": len(planned)}
        base = self._run_cfg(rnd, cfg_record)
        self.opener.forget_before(rnd)
        survivors = np.zeros(0, np.int64)
        server = None
        try:
            if len(planned) < 2:
                raise SecAggAbort(f"round {rnd}: {len(planned)} user(s) sampled; secure aggregation needs >= 2")
            server = SecAggServer(sa, rnd, planned, dim=self.dim + 1, run_id=self.run_id)
            record["threshold"] = server.t
            plan_rec = {n: ArrayRecord({"users": Array(u.astype(np.int64)), "trust": Array(t.astype(np.float64))})
                        for n, (u, t) in plan.items()}  # fmt: skip

            # stage 0: advertise keys
            st = stages["advertise_keys"]
            replies = self._send(grid, "advertise_keys", rnd,
                                 {n: RecordDict({**base, "plan": plan_rec[n]}) for n in plan}, st)  # fmt: skip
            t0 = time.perf_counter()
            adv, _ = self._open(replies, "advertise_keys", rnd, node_users, decode_advertise, st)
            adv = {u: m for u, m in adv.items() if m.user_id == u}
            roster = server.advertise(adv)
            roster_blob = encode_roster(roster)
            st["server_seconds"] = time.perf_counter() - t0

            # stage 1: share keys (the roster goes to every node with a user in it)
            st = stages["share_keys"]
            nodes = sorted({user_node[u] for u in roster.users})
            st["bytes_down"] = len(roster_blob) * len(nodes)
            replies = self._send(grid, "share_keys", rnd,
                                 {n: RecordDict({**base, "secagg-in": ConfigRecord({"roster": roster_blob})})
                                  for n in nodes}, st)  # fmt: skip
            t0 = time.perf_counter()
            shares, _ = self._open(replies, "share_keys", rnd, node_users, decode_share_keys, st)
            inboxes = server.route_shares({u: m for u, m in shares.items() if m.user_id == u})
            st["server_seconds"] = time.perf_counter() - t0

            # stage 2: masked input (nodes train their surviving users here)
            st = stages["masked_input"]
            t0 = time.perf_counter()
            by_node: dict[int, list[int]] = {}
            for v in inboxes:
                by_node.setdefault(user_node[v], []).append(v)
            contents, down = {}, 0
            arrays = ArrayRecord({"shared": Array(theta)})
            for n, receivers in by_node.items():
                blobs = [encode_inbox(v, inboxes[v]) for v in receivers]
                down += sum(map(len, blobs))
                contents[n] = RecordDict({**base, "arrays": arrays, "plan": plan_rec[n],
                                          "secagg-in": ConfigRecord({"receivers": receivers, "inboxes": blobs})})  # fmt: skip
            st["bytes_down"] = down
            st["server_seconds"] = time.perf_counter() - t0
            replies = self._send(grid, "masked_input", rnd, contents, st)
            t0 = time.perf_counter()
            masked, by_reply = self._open(replies, "masked_input", rnd, node_users, decode_masked, st)
            loss = 0.0
            n_users = n_ex = clipped = 0
            for first, m in masked.items():
                node = user_node[first]
                if m.user_ids[0] != first or not set(m.user_ids) <= node_users[node]:
                    self.counter.record("misrouted")
                    continue
                try:
                    server.receive_masked(m)
                except SecAggError as exc:
                    self.counter.record("malformed")
                    log.info("round %d: masked input of node %d refused: %s", rnd, node, exc)
                    continue
                met = by_reply[node].content["metrics"]
                # where a node's time went (wall seconds on the node): training + DP + quantising, masking
                st.setdefault("node_seconds", []).append(float(met["node-seconds"]))
                st.setdefault("node_mask_seconds", []).append(float(met.get("mask-seconds", 0.0)))
                n_users += len(m.user_ids)
                n_ex += int(met["num-examples"])
                clipped += int(met["quant-clipped"])
                loss += float(met["train-loss"]) * len(m.user_ids)
            request = server.unmask_requests()
            st["server_seconds"] += time.perf_counter() - t0

            # stage 3: unmask
            st = stages["unmask"]
            req_blob = encode_unmask_request(request)
            nodes = sorted({user_node[u] for u in request.survivors})
            st["bytes_down"] = len(req_blob) * len(nodes)
            replies = self._send(grid, "unmask", rnd,
                                 {n: RecordDict({**base, "secagg-in": ConfigRecord({"request": req_blob})})
                                  for n in nodes}, st)  # fmt: skip
            t0 = time.perf_counter()
            resp, _ = self._open(replies, "unmask", rnd, node_users, decode_unmask_response, st)
            alive = set(request.survivors)
            total = server.finish([m for u, m in resp.items() if m.user_id == u and u in alive])
            survivors = np.array(request.survivors, np.int64)
            s, weight = unpack_weighted(dequantize(total, len(survivors), self.quant, weighted=True))
            agg = StreamingWeightedSum(self.dim)
            agg.add(s, max(weight, 0.0), len(survivors))
            new, metrics = strategy.aggregate_sum(rnd, theta, agg, loss / max(n_users, 1), n_ex)
            st["server_seconds"] = time.perf_counter() - t0
            record["quant_clipped"] = clipped
        except SecAggError as exc:  # SecAggAbort, or a protocol violation that stops the round
            log.warning("round %d: secure aggregation failed, the model is unchanged: %s", rnd, exc)
            record["failure"] = f"{type(exc).__name__}: {exc}"
            new, metrics, survivors = None, None, np.zeros(0, np.int64)
        finally:
            if server is not None:
                record["counts"] = server.dropout_summary()
            record["stages"] = stages
            record["rejected"] = self.counter.as_dict()
        return SecureRoundResult(survivors, new, metrics, record)


def secure_round(loop, grid: Grid, rnd: int, plan: dict[int, tuple[np.ndarray, np.ndarray]]) -> SecureRoundResult:
    """Hook for ``RoundLoop.run_round``: run a secure round on the strategy's plan for this round."""
    sec = getattr(loop, "_secagg", None)
    if sec is None:
        if getattr(loop.strategy, "needs_individual_updates", False):
            raise ValueError("secure_agg.enabled=true hides individual updates, but the strategy's trust scorer "
                             f"({loop.cfg.strategy.trust.scorer!r}) scores them; use a reputation or constant "
                             "scorer, or secure_agg=off")  # fmt: skip
        sec = loop._secagg = ServerSecAgg(loop.cfg, loop.run_dir.path, loop.shape.shared_dim)
        sec.counter.counts.update(loop.rejected)  # continue the counts of a resumed run
    res = sec.run_round(grid, rnd, plan, loop.theta, loop._config_record(rnd), loop.strategy)
    loop.rejected = {k: v for k, v in sec.counter.as_dict().items() if k != "total"}
    return res
