"""Node side of secure aggregation: Flower messages <-> the ``secure_agg.ClientCohort`` state machine.

A node speaks for the users it hosts. Each stage is one message exchange inside the server's round
(message types ``train.secagg_<stage>``); the cohort's secret state (X25519 keys, self-mask seeds,
held shares) is kept between stages as bytes in ``Context.state``, never sent.

Message contract (server -> node): ``config`` ConfigRecord as for ``train`` plus ``secagg-run``
ConfigRecord (``run-id`` str, ``server-key`` PEM bytes of the run's RSA public key):

=============  ==================================================  =================================
stage          server -> node                                      node -> server
=============  ==================================================  =================================
advertise      ``plan`` (users, trust)                             one section per user
share          ``secagg-in``: ``roster`` bytes                     one section per user
masked         ``arrays`` (shared), ``plan``, ``secagg-in``:       one section: the cohort's
               ``receivers`` [int], ``inboxes`` [bytes]            pre-summed masked vector (under
                                                                   its lowest user id),
                                                                   ``metrics``, ``report``
unmask         ``secagg-in``: ``request`` bytes                    one section per user
=============  ==================================================  =================================

Every reply carries ``secagg`` ConfigRecord: ``envelopes`` [bytes], one node envelope (none when
no user of the node is left): one RSA-OAEP-wrapped AES-256-GCM key and one section per user, each
section's AAD binding run, round, stage, node and user (``secure_agg.envelope``); and ``dropped``
[int], the users that left before this stage (injected with ``secure_agg.dropout``).

The masked input is ``quantise([w_u * clip(delta_u) + noise_u, w_u])`` summed over the node's
surviving users, plus their self masks and the pairwise masks to users on other nodes (pairwise
masks inside the cohort cancel in the sum and are skipped; see ``ClientCohort.masked_input_sum``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from cryptography.hazmat.primitives import serialization
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.node_data import local_split, node_users, run_config
from client.pipeline import quantised_sum, user_weights
from client.state import PrivateStore, node_state_dir
from configs.schema import FedrecConfig
from privacy.mechanism import noise_std
from recommender.local_training import build_schedule, train_cohort, user_rng
from recommender.ncf import NeuMFShape
from secure_agg import (
    STAGES,
    ClientCohort,
    EnvelopeSealer,
    QuantizationConfig,
    SecAggError,
    inject_dropouts,
)
from secure_agg.messages import (
    decode_inbox,
    decode_roster,
    decode_unmask_request,
    encode_advertise,
    encode_masked,
    encode_share_keys,
    encode_unmask_response,
)

log = logging.getLogger(__name__)

#: Flower action names (message type ``train.<action>``), in protocol order.
ACTIONS: dict[str, str] = {
    "advertise_keys": "secagg_advertise",
    "share_keys": "secagg_share",
    "masked_input": "secagg_masked",
    "unmask": "secagg_unmask",
}
STATE_KEY = "fedrec-secagg"


def quantization_config(cfg: FedrecConfig) -> QuantizationConfig:
    """The float -> Z_2^32 map both ends derive from the run config.

    Range r = C + c * sigma with C = ``privacy.clip_norm`` (weights w <= 1 keep w * clip(delta)
    within C) and sigma the per-user noise std of the privacy mode. Without DP nothing is
    L2-clipped, so coordinates beyond r are clipped by the quantiser and counted. ``n_max`` is
    capped at the population: no round can sum more users, and a smaller n_max buys finer levels.
    """
    p, sa = cfg.privacy, cfg.secure_agg
    population = cfg.data.population
    sigma = 0.0
    if p.mode != "off":
        sigma = noise_std(p.mode, p.noise_multiplier, p.clip_norm, p.resolved_min_survivors(population))
    return QuantizationConfig(
        clip_bound=p.clip_norm, noise_std=sigma, clip_range_sigmas=sa.clip_range_sigmas,
        weight_max=1.0, n_max=min(sa.n_max, population), bits=sa.bits,
    ).validate()  # fmt: skip


def _setup(msg: Message, context: Context):
    cfg = run_config(str(msg.content["config"]["fedrec-config"]))
    rnd = int(msg.content["config"]["server-round"])
    run = msg.content["secagg-run"]
    return cfg, rnd, str(run["run-id"]), bytes(run["server-key"])


def _sealer(cfg: FedrecConfig, run_id: str, pem: bytes) -> EnvelopeSealer:
    return EnvelopeSealer.from_config(serialization.load_pem_public_key(pem), run_id, cfg.secure_agg)


def _node_key(context: Context, cfg: FedrecConfig) -> int:
    return int(node_users(context.node_config, cfg.data.population)[0])


def _live(users: list[int], stage: str, cfg: FedrecConfig, rnd: int, node: int) -> tuple[list[int], list[int]]:
    """Injected dropouts: (kept, dropped) before ``stage``, seeded by run seed, round, node, stage."""
    frac = float(cfg.secure_agg.dropout.get(stage, 0.0))
    rng = np.random.default_rng([cfg.seed, rnd, node, 7, STAGES.index(stage)])
    return inject_dropouts(users, stage, frac, rng)


def _save(context: Context, cohort: ClientCohort) -> None:
    context.state.config_records[STATE_KEY] = ConfigRecord({"cohort": cohort.to_bytes()})


def _load(context: Context, cfg: FedrecConfig, rnd: int, run_id: str) -> ClientCohort | None:
    rec = context.state.config_records.get(STATE_KEY)
    if rec is None:
        return None
    cohort = ClientCohort.from_bytes(cfg.secure_agg, bytes(rec["cohort"]))
    if cohort.round_id != rnd or cohort.run_id != run_id.encode():
        return None  # left over from an earlier (aborted) round
    return cohort


def _reply(msg: Message, envelope: bytes | None, dropped: list[int], extra: dict | None = None) -> Message:
    rec = ConfigRecord({"envelopes": [envelope] if envelope else [], "dropped": list(dropped)})
    return Message(RecordDict({"secagg": rec, **(extra or {})}), reply_to=msg)


def _seal(cfg: FedrecConfig, run_id: str, pem: bytes, payloads: dict[int, bytes], rnd: int, context: Context,
          stage: str) -> bytes | None:  # fmt: skip
    """One envelope for all of the node's payloads of this stage (None when there are none)."""
    if not payloads:
        return None
    return _sealer(cfg, run_id, pem).seal(payloads, rnd, int(context.node_id), stage)


def advertise(msg: Message, context: Context) -> Message:
    """Stage 0: fresh X25519 key pairs per user; reply with their public keys, sealed per user."""
    cfg, rnd, run_id, pem = _setup(msg, context)
    node = _node_key(context, cfg)
    users = [int(u) for u in msg.content["plan"]["users"].numpy()]
    live, dropped = _live(users, "advertise_keys", cfg, rnd, node)
    cohort = ClientCohort(cfg.secure_agg, rnd, users, run_id=run_id)
    adv = cohort.advertise_keys(live)
    _save(context, cohort)
    env = _seal(cfg, run_id, pem, {u: encode_advertise(m) for u, m in adv.items()}, rnd, context, "advertise_keys")
    return _reply(msg, env, dropped)


def share(msg: Message, context: Context) -> Message:
    """Stage 1: check the roster, Shamir-share each user's secrets to its neighbours (encrypted)."""
    cfg, rnd, run_id, pem = _setup(msg, context)
    cohort = _load(context, cfg, rnd, run_id)
    if cohort is None or cohort.stage != "share_keys":
        return _reply(msg, None, [])
    roster = decode_roster(bytes(msg.content["secagg-in"]["roster"]))
    listed = set(roster.users)
    live, dropped = _live([u for u in cohort.users if u in listed], "share_keys", cfg, rnd,
                          _node_key(context, cfg))  # fmt: skip
    shares = cohort.share_keys(roster, live)
    _save(context, cohort)
    env = _seal(cfg, run_id, pem, {u: encode_share_keys(m) for u, m in shares.items()}, rnd, context, "share_keys")
    return _reply(msg, env, dropped)


def _train_rows(cfg: FedrecConfig, msg: Message, context: Context, users: np.ndarray, trust: np.ndarray,
                rnd: int, q: QuantizationConfig):  # fmt: skip
    """Train ``users`` exactly as ``client.app.train`` does and return their quantised sum.

    Returns (uint32[d + 1] sum of quantise([w_u * clip(delta_u) + noise_u, w_u]), metrics, report).
    Memory stays bounded by one chunk's sparse deltas plus ``client.pipeline.BLOCK_USERS`` dense rows.
    """
    t0 = time.perf_counter()
    split = local_split(cfg.data)
    shape = NeuMFShape(split.n_items, cfg.model.factors)
    hosted = node_users(context.node_config, cfg.data.population)
    torch.set_num_threads(1)
    store = PrivateStore(context, hosted, shape, cfg.seed, as_of=rnd - 1,
                         disk=node_state_dir(msg.content["config"], context.node_config))  # fmt: skip
    store.rows(users)
    counts = np.diff(split.train_indptr)[users]
    order = np.argsort(counts, kind="stable")
    users, trust, counts = users[order], trust[order], counts[order]
    shared = torch.from_numpy(msg.content["arrays"]["shared"].numpy().copy())
    # same generator as client.app.train, so the noise draws match secure_agg=off exactly
    gen = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, rnd, int(hosted[0])]).integers(2**62)))
    qrng = np.random.default_rng([cfg.seed, rnd, int(hosted[0]), 11])  # stochastic rounding, not a mask
    total = np.zeros(shape.shared_dim + 1, np.uint32)
    norms, losses, clipped = [], [], 0
    weights = user_weights(trust, counts, cfg.strategy.example_cap)
    for lo in range(0, len(users), cfg.client.chunk_users):
        chunk = users[lo : lo + cfg.client.chunk_users]
        schedules = [build_schedule(split.train_of(int(u)), split.seen_of(int(u)), split.n_items, cfg.client,
                                    user_rng(cfg.seed, rnd, int(u))) for u in chunk]  # fmt: skip
        delta, new_private, loss = train_cohort(shared, store.get(chunk), schedules, shape, cfg.client)
        store.put(chunk, new_private)
        # no wrap: every entry is <= L and at most n_max <= 2^32 / L rows are ever summed
        clipped += quantised_sum(delta, weights[lo : lo + len(chunk)], cfg, shape, gen, q, qrng, total)
        norms.append(np.asarray(delta.norms()))
        losses.append(loss.numpy())
    store.save(rnd)
    loss_all = np.concatenate(losses) if losses else np.zeros(0)
    metrics = MetricRecord({
        "num-examples": int(counts.sum()), "users": len(users), "quant-clipped": int(clipped),
        "train-loss": float(loss_all.mean()) if len(loss_all) else 0.0,
        "node-seconds": time.perf_counter() - t0,
    })  # fmt: skip
    report = ArrayRecord({"users": Array(users),
                          "norms": Array(np.concatenate(norms) if norms else np.zeros(0, np.float32))})  # fmt: skip
    return total, metrics, report


def masked(msg: Message, context: Context) -> Message:
    """Stage 2: train the surviving users, quantise, sum, mask; reply with one sealed vector."""
    cfg, rnd, run_id, pem = _setup(msg, context)
    cohort = _load(context, cfg, rnd, run_id)
    if cohort is None or cohort.stage != "masked_input":
        return _reply(msg, None, [])
    sin = msg.content["secagg-in"]
    inboxes = {int(r): decode_inbox(bytes(b))[1] for r, b in zip(sin["receivers"], sin["inboxes"], strict=True)}
    live, dropped = _live([u for u in cohort.users if u in inboxes], "masked_input", cfg, rnd,
                          _node_key(context, cfg))  # fmt: skip
    plan = msg.content["plan"]
    trust_of = dict(zip(plan["users"].numpy().tolist(), plan["trust"].numpy().tolist(), strict=True))
    if not live:
        return _reply(msg, None, dropped)
    users = np.array(live, np.int64)
    q = quantization_config(cfg)
    total, metrics, report = _train_rows(cfg, msg, context, users, np.array([trust_of[u] for u in live]), rnd, q)
    t0 = time.perf_counter()
    m = cohort.masked_sum(inboxes, total, live)  # the cohort's inputs are summed already
    metrics["mask-seconds"] = time.perf_counter() - t0
    _save(context, cohort)
    env = _seal(cfg, run_id, pem, {m.user_ids[0]: encode_masked(m)} if m.user_ids else {}, rnd, context,
                "masked_input")  # fmt: skip
    return _reply(msg, env, dropped, {"metrics": metrics, "report": report})


def unmask(msg: Message, context: Context) -> Message:
    """Stage 3: reveal b shares of survivors and s^SK shares of dropped users, sealed per user."""
    cfg, rnd, run_id, pem = _setup(msg, context)
    cohort = _load(context, cfg, rnd, run_id)
    context.state.config_records.pop(STATE_KEY, None)  # the round ends here either way
    if cohort is None or cohort.stage != "unmask":
        return _reply(msg, None, [])
    request = decode_unmask_request(bytes(msg.content["secagg-in"]["request"]))
    live, dropped = _live(cohort.users, "unmask", cfg, rnd, _node_key(context, cfg))
    try:
        responses = cohort.unmask(request, live)
    except SecAggError as exc:
        # a request that could expose a user's input is refused for the whole cohort
        log.warning("round %d: refusing the unmask request: %s", rnd, exc)
        return _reply(msg, None, [], {"refused": ConfigRecord({"reason": str(exc)})})
    env = _seal(cfg, run_id, pem, {u: encode_unmask_response(r) for u, r in responses.items()}, rnd, context,
                "unmask")  # fmt: skip
    return _reply(msg, env, dropped)


HANDLERS = {"advertise_keys": advertise, "share_keys": share, "masked_input": masked, "unmask": unmask}


def register(app) -> None:
    """Register the four stage handlers on a ClientApp as ``train.secagg_*`` actions."""
    for stage, fn in HANDLERS.items():
        app.train(ACTIONS[stage])(fn)
