"""`fedrec bench secagg`: per-stage cost of fedrec's secure aggregation against plain streaming
aggregation, Flower's SecAgg+ (the pinned flwr) and this machine's cryptographic floor.

What is measured, in this process, as CPU seconds (``time.process_time``: the machine may be shared,
and wall time would count other processes), same n, d and neighbour count k:

- **fedrec**: one party per user (the device deployment: a node hosting one user, so one envelope
  and one RSA unwrap per user and stage), the real ``secure_agg`` client and server state
  machines, wire encodings and AES-GCM/RSA-OAEP envelopes.
  Client seconds are summed over all users; the masked-input stage includes quantising
  ``[w * update, w]``. Users that drop do so after sharing keys (before their masked input), the
  case that makes the server rebuild pairwise masks.
- **plain**: what secure_agg=off costs for the same uploads: each client weights its float32
  update and serialises it, the server deserialises and adds it into ``StreamingWeightedSum``.
- **flower**: Flower's SecAgg+ client stages, i.e. the functions ``secaggplus_mod`` runs per
  stage (``_setup``, ``_share_keys``, ``_collect_masked_vectors``, ``_unmask``) called on
  ``SecAggPlusState`` objects, and its server stages replicated line for line from
  ``SecAggPlusWorkflow`` with flwr's own primitives (ciphertext routing, ``parameters_addition``,
  ``combine_shares``, ``pseudo_rand_gen``, ``generate_shared_key``, ``dequantize``). num_shares =
  k + 1 and the same threshold t. Not timed (in Flower's favour): Message/record conversion and
  the mod's per-stage state (de)serialisation, and transport for both frameworks.
- **floor**: ``secure_agg.floor`` from this machine's AES-256-CTR and X25519 rates, measured before
  and after the per-n grid with the faster of the two kept (other jobs only slow them down):
  (k + 1) keystreams and 2k agreements per user, plus the server's unmasking.
  Next to it, the envelope the issue requires on top: one RSA-2048-OAEP unwrap per upload (2n + 2
  survivors uploads, one party per user) at the measured unwrap rate.
- **round**: ``fedrec simulate`` on a synthetic population (NeuMF f=32, 1,682 items), 100 users per
  round, secure_agg=on vs off, each in its own process; median wall seconds per round over rounds
  2+. With ``--round-inprocess`` instead: the same round loop and ClientApp in this process
  (``experiments.inprocess``, no Ray), median CPU seconds per round over rounds 2+, on vs off.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask")
FULL = {"ns": (10, 100, 500), "dropouts": (0.0, 0.1), "neighbours": 20}
QUICK = {"ns": (8, 16), "dropouts": (0.0, 0.1), "neighbours": 4, "d": 2048}


def neumf_dim(items: int = 1682, factors: int = 32) -> int:
    from recommender.ncf import NeuMFShape

    return NeuMFShape(items, factors).shared_dim


class _Clock:
    """Accumulates seconds and bytes per (side, stage)."""

    def __init__(self) -> None:
        self.t = {s: {"client_seconds": 0.0, "server_seconds": 0.0, "bytes_up": 0, "bytes_down": 0} for s in STAGES}

    def add(self, stage: str, side: str, seconds: float) -> None:
        self.t[stage][f"{side}_seconds"] += seconds

    def totals(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stages": self.t}
        for k in ("client_seconds", "server_seconds", "bytes_up", "bytes_down"):
            out[k] = sum(v[k] for v in self.t.values())
        out["total_seconds"] = out["client_seconds"] + out["server_seconds"]
        return out


def _update(d: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(0, 1, d).astype(np.float32)
    return x / max(float(np.linalg.norm(x)), 1e-12) * 0.5  # a clipped update, norm 0.5 <= C = 1


# ---- fedrec --------------------------------------------------------------------------------
def _open1(opener, blob: bytes, rnd: int, user: int, stage: str) -> bytes:
    """Open a one-user device's envelope (node id = user id here) and return its payload."""
    return opener.open(blob, rnd, user, stage, (user,)).payloads[user]


def bench_fedrec(n: int, d: int, k: int, dropout: float, rsa_key, seed: int = 0) -> dict[str, Any]:
    """One secure round, one party per user, timed per stage and side (see module docstring)."""
    from secure_agg import (
        ClientCohort,
        EnvelopeOpener,
        EnvelopeSealer,
        QuantizationConfig,
        SecAggConfig,
        SecAggServer,  # fmt: skip
        dequantize,
        quantize_rows,
    )
    from secure_agg import messages as M

    rng = np.random.default_rng(seed)
    cfg = SecAggConfig(enabled=True, threshold=0.5, neighbours=k)
    q = QuantizationConfig(clip_bound=1.0, n_max=max(n, 2)).validate()
    run, rnd, dim = "bench", 1, d + 1
    sealer = EnvelopeSealer.from_config(rsa_key.public_key(), run, cfg)
    opener = EnvelopeOpener(rsa_key, run)
    users = list(range(n))
    update = _update(d, rng)
    weights = rng.uniform(0.5, 1.0, n)
    gone = set(rng.choice(n, int(round(dropout * n)), replace=False).tolist())
    c = _Clock()
    tc = time.process_time

    t = tc()
    server = SecAggServer(cfg, rnd, users, dim=dim, run_id=run)
    c.add("advertise_keys", "server", tc() - t)
    cohorts, env = {}, {}
    t = tc()
    for u in users:
        cohorts[u] = ClientCohort(cfg, rnd, [u], run_id=run)
        env[u] = sealer.seal({u: M.encode_advertise(cohorts[u].advertise_keys()[u])}, rnd, u, "advertise_keys")
    c.add("advertise_keys", "client", tc() - t)
    c.t["advertise_keys"]["bytes_up"] = sum(map(len, env.values()))
    t = tc()
    roster = server.advertise([M.decode_advertise(_open1(opener, b, rnd, u, "advertise_keys")) for u, b in env.items()])
    roster_blob = M.encode_roster(roster)
    c.add("advertise_keys", "server", tc() - t)

    c.t["share_keys"]["bytes_down"] = len(roster_blob) * n
    t = tc()
    for u in users:
        r = M.decode_roster(roster_blob)
        env[u] = sealer.seal({u: M.encode_share_keys(cohorts[u].share_keys(r)[u])}, rnd, u, "share_keys")
    c.add("share_keys", "client", tc() - t)
    c.t["share_keys"]["bytes_up"] = sum(map(len, env.values()))
    t = tc()
    inboxes = server.route_shares([M.decode_share_keys(_open1(opener, b, rnd, u, "share_keys")) for u, b in env.items()])
    inbox_blobs = {v: M.encode_inbox(v, box) for v, box in inboxes.items()}
    c.add("share_keys", "server", tc() - t)

    live = [u for u in users if u not in gone]
    c.t["masked_input"]["bytes_down"] = sum(len(inbox_blobs[u]) for u in live)
    qrng = np.random.default_rng(seed + 1)
    for u in live:  # streamed: one masked vector in flight at a time, O(d) memory on both sides
        t = tc()
        _, box = M.decode_inbox(inbox_blobs[u])
        # float32 weighted row + its weight, as client.secagg quantises a trained user's delta
        qv = quantize_rows(update[None] * np.float32(weights[u]), weights[u : u + 1], q, qrng)[0][0]
        y = cohorts[u].masked_input({u: box}, {u: qv})[u]
        blob = sealer.seal({u: M.encode_masked(M.MaskedInput((u,), y))}, rnd, u, "masked_input")
        c.add("masked_input", "client", tc() - t)
        c.t["masked_input"]["bytes_up"] += len(blob)
        t = tc()
        server.receive_masked(M.decode_masked(_open1(opener, blob, rnd, u, "masked_input")))
        c.add("masked_input", "server", tc() - t)
    t = tc()
    req_blob = M.encode_unmask_request(server.unmask_requests())
    c.add("masked_input", "server", tc() - t)

    c.t["unmask"]["bytes_down"] = len(req_blob) * len(live)
    t = tc()
    for u in live:
        r = cohorts[u].unmask(M.decode_unmask_request(req_blob))[u]
        env[u] = sealer.seal({u: M.encode_unmask_response(r)}, rnd, u, "unmask")
    c.add("unmask", "client", tc() - t)
    c.t["unmask"]["bytes_up"] = sum(len(env[u]) for u in live)
    t = tc()
    total = server.finish([M.decode_unmask_response(_open1(opener, env[u], rnd, u, "unmask")) for u in live])
    mean = dequantize(total, len(live), q, weighted=True)
    c.add("unmask", "server", tc() - t)
    expect = update * weights[live].sum()
    err = float(np.abs(mean[:-1] - expect).max())
    out = c.totals()
    out.update({"survivors": len(live), "threshold": server.t, "max_abs_error": err,
                "quantisation_bound": q.error_bound(len(live))[0]})  # fmt: skip
    return out


# ---- plain -----------------------------------------------------------------------------------
def bench_plain(n: int, d: int, seed: int = 0) -> dict[str, Any]:
    """Plain streaming aggregation of the same n float32 uploads (secure_agg=off)."""
    from strategies.aggregation import StreamingWeightedSum

    rng = np.random.default_rng(seed)
    update, weights = _update(d, rng), rng.uniform(0.5, 1.0, n)
    agg = StreamingWeightedSum(d)
    cs = ss = 0.0
    up = 0
    for u in range(n):
        t = time.process_time()
        blob = (update * np.float32(weights[u])).tobytes()
        cs += time.process_time() - t
        up += len(blob)
        t = time.process_time()
        agg.add(np.frombuffer(blob, np.float32).astype(np.float64), float(weights[u]))
        ss += time.process_time() - t
    t = time.process_time()
    agg.mean()
    ss += time.process_time() - t
    return {"client_seconds": cs, "server_seconds": ss, "total_seconds": cs + ss, "bytes_up": up}


# ---- Flower SecAgg+ --------------------------------------------------------------------------
def bench_flower(n: int, d: int, k: int, t_threshold: int, dropout: float, seed: int = 0) -> dict[str, Any]:
    """Flower SecAgg+ (pinned flwr) stage compute on the same n, d, k + 1 shares and threshold."""
    from flwr.client.mod.secure_aggregation.secaggplus_mod import (
        SecAggPlusState,
        _collect_masked_vectors,
        _setup,  # fmt: skip
        _share_keys,
        _unmask,
    )
    from flwr.common import bytes_to_ndarray, ndarrays_to_parameters
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_extract,
        get_parameters_shape,
        parameters_addition,
        parameters_mod,
        parameters_subtraction,  # fmt: skip
    )
    from flwr.common.secure_aggregation.quantization import dequantize
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

    logging.getLogger("flwr").setLevel(logging.WARNING)  # importing flwr sets it to DEBUG: one line per stage
    rng = np.random.default_rng(seed)
    update = _update(d, rng)
    c = _Clock()
    tc = time.process_time
    nids = list(range(1, n + 1))
    num_shares = min(k + 1, n)
    if num_shares < n and num_shares % 2 == 0:
        num_shares += 1  # the workflow makes it odd
    half = num_shares >> 1
    # workflow: shuffled ring, neighbours = the half_share nodes on each side, itself included
    t = tc()
    order = list(rng.permutation(nids))
    nbrs = {nid: {order[(i + o) % n] for o in range(-half, half + 1)} for i, nid in enumerate(order)}
    setup_cfg = {Key.SAMPLE_NUMBER: n, Key.SHARE_NUMBER: num_shares, Key.THRESHOLD: t_threshold,
                 Key.CLIPPING_RANGE: 8.0, Key.TARGET_RANGE: 4194304, Key.MOD_RANGE: 4294967296,
                 Key.MAX_WEIGHT: 1000.0}  # fmt: skip
    c.add("advertise_keys", "server", tc() - t)
    states = {nid: SecAggPlusState(nid=nid) for nid in nids}
    pks = {}
    t = tc()
    for nid in nids:
        pks[nid] = _setup(states[nid], setup_cfg)
    c.add("advertise_keys", "client", tc() - t)
    c.t["advertise_keys"]["bytes_up"] = sum(len(v[Key.PUBLIC_KEY_1]) + len(v[Key.PUBLIC_KEY_2]) for v in pks.values())

    t = tc()
    key_cfg = {nid: {str(v): [pks[v][Key.PUBLIC_KEY_1], pks[v][Key.PUBLIC_KEY_2]] for v in nbrs[nid]} for nid in nids}
    c.add("share_keys", "server", tc() - t)
    c.t["share_keys"]["bytes_down"] = sum(len(b) for kc in key_cfg.values() for pair in kc.values() for b in pair)
    fwd: dict[int, tuple[list[int], list[bytes]]] = {nid: ([], []) for nid in nids}
    res = {}
    t = tc()
    for nid in nids:
        res[nid] = _share_keys(states[nid], key_cfg[nid])
    c.add("share_keys", "client", tc() - t)
    c.t["share_keys"]["bytes_up"] = sum(len(x) + 8 for r in res.values() for x in r[Key.CIPHERTEXT_LIST])
    t = tc()
    for src, r in res.items():
        for dst, ct in zip(r[Key.DESTINATION_LIST], r[Key.CIPHERTEXT_LIST], strict=True):
            fwd[dst][0].append(src)
            fwd[dst][1].append(ct)
    c.add("share_keys", "server", tc() - t)

    dead = set(rng.choice(nids, int(round(dropout * n)), replace=False).tolist())
    active = [nid for nid in nids if nid not in dead]
    params = ndarrays_to_parameters([update])
    masked = None
    for nid in active:
        cfg = {Key.CIPHERTEXT_LIST: fwd[nid][1], Key.SOURCE_LIST: fwd[nid][0]}
        c.t["masked_input"]["bytes_down"] += sum(len(x) + 8 for x in fwd[nid][1])
        t = tc()
        out = _collect_masked_vectors(states[nid], cfg, 10, params)
        c.add("masked_input", "client", tc() - t)
        c.t["masked_input"]["bytes_up"] += sum(len(b) for b in out[Key.MASKED_PARAMETERS])
        t = tc()  # the workflow's collect_masked_vectors_stage, streamed
        vec = [bytes_to_ndarray(b) for b in out[Key.MASKED_PARAMETERS]]
        masked = vec if masked is None else parameters_addition(masked, vec)
        c.add("masked_input", "server", tc() - t)
    t = tc()
    masked = parameters_mod(masked, 4294967296)
    c.add("masked_input", "server", tc() - t)

    active_set = set(active)
    shares: dict[int, list[bytes]] = {nid: [] for nid in nids}
    for nid in active:
        cfg = {Key.ACTIVE_NODE_ID_LIST: list(nbrs[nid] & active_set), Key.DEAD_NODE_ID_LIST: list(nbrs[nid] & dead)}
        t = tc()
        out = _unmask(states[nid], cfg)
        c.add("unmask", "client", tc() - t)
        c.t["unmask"]["bytes_up"] += sum(len(s) + 8 for s in out[Key.SHARE_LIST])
        for owner, s in zip(out[Key.NODE_ID_LIST], out[Key.SHARE_LIST], strict=True):
            shares[owner].append(s)
    t = tc()  # the workflow's unmask_stage
    for nid, share_list in shares.items():
        if len(share_list) < t_threshold:
            raise RuntimeError(f"flower SecAgg+: node {nid} has {len(share_list)} shares < t={t_threshold}")
        secret = combine_shares(share_list)
        if nid in active_set:
            masked = parameters_subtraction(masked, pseudo_rand_gen(secret, 4294967296, get_parameters_shape(masked)))
        else:
            for v in nbrs[nid] - {nid}:
                sk = generate_shared_key(bytes_to_private_key(secret), bytes_to_public_key(pks[v][Key.PUBLIC_KEY_1]))
                mask = pseudo_rand_gen(sk, 4294967296, get_parameters_shape(masked))
                masked = parameters_addition(masked, mask) if nid > v else parameters_subtraction(masked, mask)
    recon = parameters_mod(masked, 4294967296)
    q_total, recon = factor_extract(recon)
    agg = dequantize(recon, 8.0, 4194304)
    agg[0] += -(len(active) - 1) * 8.0
    agg[0] *= 4194304 / q_total
    c.add("unmask", "server", tc() - t)
    out = c.totals()
    out.update({"survivors": len(active), "num_shares": num_shares, "threshold": t_threshold,
                "max_abs_error": float(np.abs(agg[0] - update).max())})  # fmt: skip
    return out


# ---- a full simulated round ------------------------------------------------------------------
ROUND_OVERRIDES = ["data=synthetic", "data.users=1000", "data.items=1682", "data.mean_interactions=100",
                   "model.factors=32", "simulation.users_per_round=100", "simulation.eval_every=0",
                   "simulation.nodes=2"]  # fmt: skip


#: ``--quick --round-inprocess``: a tiny population, for the smoke test.
QUICK_ROUND_OVERRIDES = ["data=synthetic", "data.users=60", "data.items=200", "data.mean_interactions=15",
                         "model.factors=4", "simulation.users_per_round=20", "simulation.eval_every=0"]  # fmt: skip


def bench_round(rounds: int = 4, timeout: float = 900.0) -> dict[str, Any]:
    """Median round seconds of ``fedrec simulate`` with secure_agg off and on (separate processes)."""
    out: dict[str, Any] = {"overrides": ROUND_OVERRIDES, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="fedrec_bench_secagg_") as tmp:
        for mode in ("off", "on"):
            cmd = [sys.executable, "-m", "experiments.cli", "simulate", *ROUND_OVERRIDES, f"simulation.rounds={rounds}",
                   f"secure_agg={mode}", f"runs_dir={tmp}", f"name={mode}", "overwrite=true"]  # fmt: skip
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, timeout=timeout, cwd=str(Path(__file__).parents[1]))
            summary = json.loads((Path(tmp) / mode / "summary.json").read_text())
            secs = [r["seconds"] for r in summary["per_round"]]
            out[mode] = {"round_seconds": secs, "median_round_seconds": statistics.median(secs[1:] or secs),
                         "process_seconds": time.perf_counter() - t}  # fmt: skip
            if mode == "on":
                stages = [r["secagg"]["stages"] for r in summary["per_round"][1:] or summary["per_round"]]
                out[mode]["exchange_seconds"] = {s: statistics.median(x[s].get("exchange_seconds", 0.0) for x in stages)
                                                 for s in STAGES}  # fmt: skip
    out["overhead"] = out["on"]["median_round_seconds"] / out["off"]["median_round_seconds"] - 1.0
    return out


def bench_round_inprocess(rounds: int = 4, overrides: list[str] | None = None, nodes: int = 2) -> dict[str, Any]:
    """Median CPU seconds per round (rounds 2+) of the in-process round loop, secure_agg off vs on.

    Same workload as ``bench_round`` (``ROUND_OVERRIDES``), but the real ``RoundLoop`` drives the
    real ClientApp in this process (``experiments.inprocess.InProcessGrid``): no Ray, no transport,
    and ``time.process_time`` so that other processes on a shared machine do not count.
    """
    from experiments.inprocess import run_rounds_inprocess

    base = list(ROUND_OVERRIDES if overrides is None else overrides)
    out: dict[str, Any] = {"overrides": base, "rounds": rounds, "nodes": nodes, "clock": "process_time"}
    with tempfile.TemporaryDirectory(prefix="fedrec_bench_secagg_") as tmp:
        for mode in ("off", "on"):
            res = run_rounds_inprocess([*base, f"simulation.rounds={rounds}", f"secure_agg={mode}",
                                        f"runs_dir={tmp}", f"name={mode}", "overwrite=true"], nodes)  # fmt: skip
            cpu, wall = res["cpu_seconds"], res["wall_seconds"]
            out[mode] = {"cpu_seconds": cpu, "wall_seconds": wall,
                         "median_cpu_seconds": statistics.median(cpu[1:] or cpu),
                         "median_wall_seconds": statistics.median(wall[1:] or wall),
                         "users": [r.get("users") for r in res["summary"]["per_round"]]}  # fmt: skip
    out["overhead"] = out["on"]["median_cpu_seconds"] / out["off"]["median_cpu_seconds"] - 1.0
    return out


# ---- driver ----------------------------------------------------------------------------------
def measure_unwrap_rate(key, seconds: float = 0.5) -> float:
    """RSA-2048-OAEP(SHA-256) unwraps of a 32-byte key per CPU second (the envelope's per-upload cost)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    blob = key.public_key().encrypt(bytes(32), oaep)
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds or n == 0:
        key.decrypt(blob, oaep)
        n += 1
    return n / (time.process_time() - t0)


def run_benchmark(quick: bool = False, with_round: bool = True, progress=None, round_inprocess: bool = False,
                  grid: bool = True, ns: tuple[int, ...] | None = None,
                  flower_max_n: int | None = None) -> dict[str, Any]:  # fmt: skip
    from cryptography.hazmat.primitives.asymmetric import rsa

    from secure_agg import SecAggConfig, measure_rates
    from secure_agg.floor import MachineRates, fastest_rates, floor_breakdown

    spec = QUICK if quick else FULL
    d = spec.get("d") or neumf_dim()
    k = spec["neighbours"]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def sample_rates() -> dict[str, float]:
        return {**measure_rates(0.2 if quick else 2.0, clock=time.process_time).as_dict(),
                "rsa_oaep_unwraps_per_s": measure_unwrap_rate(key, 0.1 if quick else 0.5)}  # fmt: skip

    samples = [sample_rates()]
    res: dict[str, Any] = {"d": d, "neighbours": k, "threshold_fraction": 0.5, "quick": quick,
                           "flower_max_n": flower_max_n, "results": []}  # fmt: skip
    for n in (ns or spec["ns"]) if grid else ():
        for drop in spec["dropouts"]:
            if progress:
                progress(f"n={n} dropout={drop:.0%}")
            kk = min(k, n - 1)
            t_thr = SecAggConfig(threshold=0.5, neighbours=k).resolve_threshold(n)
            row: dict[str, Any] = {"n": n, "dropout": drop, "k": kk}
            row["fedrec"] = bench_fedrec(n, d, k, drop, key)
            row["plain"] = bench_plain(n, d)
            if flower_max_n is None or n <= flower_max_n:
                row["flower"] = bench_flower(n, d, kk, t_thr, drop)
            else:
                row["flower"] = {"skipped": f"n > --flower-max-n {flower_max_n}"}
            res["results"].append(row)
    if res["results"]:
        samples.append(sample_rates())
    best = fastest_rates(samples)  # of the measurements before and after the grid
    res["rates"], res["rate_samples"] = best, samples
    rates = MachineRates(best["aes_ctr_bytes_per_s"], best["x25519_per_s"])
    for row in res["results"]:
        n, drop = row["n"], row["dropout"]
        row["floor"] = floor_breakdown(n, d + 1, k, rates, dropout=drop)
        # the envelope: one RSA-OAEP unwrap per upload (a device is its own node here);
        # not in the floor, which counts AES-CTR and X25519 only
        survivors = row["fedrec"]["survivors"]
        row["floor"]["envelope_unwraps"] = 2 * n + 2 * survivors
        row["floor"]["envelope_seconds"] = row["floor"]["envelope_unwraps"] / best["rsa_oaep_unwraps_per_s"]
        f, fl = row["fedrec"]["total_seconds"], row["floor"]["total_seconds"]
        masking = row["fedrec"]["stages"]["masked_input"]["client_seconds"] + \
            row["fedrec"]["stages"]["unmask"]["server_seconds"]  # fmt: skip
        row["ratios"] = {
            "fedrec_vs_floor": f / fl,
            "fedrec_vs_floor_plus_envelope": f / (fl + row["floor"]["envelope_seconds"]),
            "fedrec_vs_plain": f / max(row["plain"]["total_seconds"], 1e-12),
            "fedrec_masking_vs_floor": masking / fl,
        }
        if "total_seconds" in row["flower"]:
            row["ratios"]["flower_vs_fedrec"] = row["flower"]["total_seconds"] / f
    if with_round and round_inprocess:
        if progress:
            progress("in-process round loop, secure_agg off vs on")
        res["round"] = bench_round_inprocess(rounds=3 if quick else 4,
                                             overrides=QUICK_ROUND_OVERRIDES if quick else None)  # fmt: skip
    elif with_round and not quick:
        if progress:
            progress("fedrec simulate, 100 users per round, secure_agg off vs on")
        res["round"] = bench_round()
    else:
        res["round"] = {"skipped": "--quick" if quick else "--no-round"}
    return res


def _fmt_s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _fmt_b(x: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{int(x)} B"


def render(res: dict[str, Any], console) -> None:
    from rich.table import Table

    r = res["rates"]
    console.print(f"d = {res['d']} (+1 weight), k = {res['neighbours']} neighbours, t = ceil(0.5 (k+1)); "
                  f"AES-256-CTR {r['aes_ctr_bytes_per_s'] / 1e9:.2f} GB/s, X25519 {r['x25519_per_s']:.0f}/s")  # fmt: skip
    t = Table(title="Per-stage compute (client seconds summed over users / server seconds) and upload bytes")
    for col in ("n", "drop", "system", *STAGES, "total s", "up bytes"):
        t.add_column(col, justify="right")
    for row in res["results"]:
        for name in ("fedrec", "flower"):
            b = row[name]
            if "skipped" in b:
                t.add_row(str(row["n"]), f"{row['dropout']:.0%}", name, b["skipped"], "", "", "", "", "")
                continue
            cells = [f"{_fmt_s(b['stages'][s]['client_seconds'])} / {_fmt_s(b['stages'][s]['server_seconds'])}"
                     for s in STAGES]  # fmt: skip
            t.add_row(str(row["n"]), f"{row['dropout']:.0%}", name, *cells, _fmt_s(b["total_seconds"]),
                      _fmt_b(b["bytes_up"]))  # fmt: skip
        p = row["plain"]
        t.add_row(str(row["n"]), f"{row['dropout']:.0%}", "plain", "", "", f"{_fmt_s(p['client_seconds'])} / "
                  f"{_fmt_s(p['server_seconds'])}", "", _fmt_s(p["total_seconds"]), _fmt_b(p["bytes_up"]))  # fmt: skip
        fl = row["floor"]
        t.add_row(str(row["n"]), f"{row['dropout']:.0%}", "floor", "", "", "", "", _fmt_s(fl["total_seconds"]), "")
        t.add_row(str(row["n"]), f"{row['dropout']:.0%}", "envelope unwraps", "", "", "", "",
                  _fmt_s(fl["envelope_seconds"]), f"{fl['envelope_unwraps']} unwraps", end_section=True)  # fmt: skip
    console.print(t)
    s = Table(title="Targets: fedrec total <= 2x floor, Flower >= 5x fedrec")
    for col in ("n", "drop", "fedrec / floor", "fedrec / (floor + unwraps)", "masking / floor", "Flower / fedrec",
                "fedrec / plain"):  # fmt: skip
        s.add_column(col, justify="right")
    for row in res["results"]:
        q = row["ratios"]
        s.add_row(str(row["n"]), f"{row['dropout']:.0%}", f"{q['fedrec_vs_floor']:.2f}x",
                  f"{q['fedrec_vs_floor_plus_envelope']:.2f}x", f"{q['fedrec_masking_vs_floor']:.2f}x",
                  f"{q['flower_vs_fedrec']:.1f}x" if "flower_vs_fedrec" in q else "skipped",
                  f"{q['fedrec_vs_plain']:.0f}x")  # fmt: skip
    console.print(s)
    rd = res.get("round", {})
    if "overhead" in rd and rd.get("clock") == "process_time":
        console.print(f"in-process round loop, {rd['nodes']} nodes: median CPU per round (rounds 2+) "
                      f"{rd['off']['median_cpu_seconds']:.2f} s off, {rd['on']['median_cpu_seconds']:.2f} s on "
                      f"-> secure aggregation adds {rd['overhead']:+.0%} (target <= +25%)")  # fmt: skip
    elif "overhead" in rd:
        console.print(f"fedrec simulate, 100 users/round: median round {rd['off']['median_round_seconds']:.2f} s off, "
                      f"{rd['on']['median_round_seconds']:.2f} s on -> secure aggregation adds "
                      f"{rd['overhead']:+.0%} (target <= +25%)")  # fmt: skip
    else:
        console.print(f"full-round overhead: skipped ({rd.get('skipped')})")


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    for name in ("secure_agg", "flwr"):  # flwr's SecAgg+ mod logs every stage of every client at DEBUG
        logging.getLogger(name).setLevel(logging.WARNING)
    console = Console(width=None if Console().is_terminal else 200)
    with console.status("benchmarking secure aggregation") as status:
        res = run_benchmark(quick=args.quick, with_round=not args.no_round, round_inprocess=args.round_inprocess,
                            grid=not args.round_only, ns=tuple(args.ns) if args.ns else None,
                            flower_max_n=args.flower_max_n,
                            progress=lambda s: status.update(f"benchmarking secure aggregation: {s}"))  # fmt: skip
    flags = [("--quick", args.quick), ("--no-round", args.no_round), ("--round-inprocess", args.round_inprocess),
             ("--round-only", args.round_only)]  # fmt: skip
    res["command"] = " ".join(["fedrec bench secagg", *(f for f, on in flags if on),
                               *([f"--ns {' '.join(map(str, args.ns))}"] if args.ns else []),
                               *([f"--flower-max-n {args.flower_max_n}"] if args.flower_max_n is not None else [])])  # fmt: skip
    render(res, console)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
        console.print(f"wrote {args.json}")
    return 0


def add_bench_command(bench_subparsers) -> None:
    """Register ``fedrec bench secagg [--json PATH] [--quick] [--no-round] [--round-inprocess] [--round-only]``."""
    p = bench_subparsers.add_parser("secagg", help="secure aggregation vs plain, Flower SecAgg+ and the crypto floor")
    p.add_argument("--json", default=None, help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="small smoke version (seconds; no simulated round)")
    p.add_argument("--no-round", action="store_true", help="skip the fedrec simulate on/off round measurement")
    p.add_argument("--round-inprocess", action="store_true",
                   help="measure the 100-user round in process (real round loop and ClientApp, no Ray), "
                        "CPU seconds per round, instead of two fedrec simulate processes")  # fmt: skip
    p.add_argument("--ns", type=int, nargs="+", default=None, help="user counts to run (default 10 100 500)")
    p.add_argument("--round-only", action="store_true", help="only the round measurement, not the per-n table")
    p.add_argument("--flower-max-n", type=int, default=None,
                   help="run Flower SecAgg+ only for n up to this (it takes minutes at n = 500)")
    p.set_defaults(func=cmd_bench)

