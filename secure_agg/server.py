"""Server side of secure aggregation: a state machine over the four protocol stages."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secure_agg.config import SecAggConfig
from secure_agg.errors import SecAggAbort, SecAggError
from secure_agg.messages import (
    COMMIT_BYTES,
    KEY_BYTES,
    SECRET_BYTES,
    SHARE_CT_BYTES,
    AdvertiseKeys,
    MaskedInput,
    Roster,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from secure_agg.primitives import apply_masks, pair_mask_seed, public_bytes, self_mask_seed
from secure_agg.protocol import check_commitment, check_party_ids
from secure_agg.shamir import combine, decode_share

log = logging.getLogger(__name__)


class SecAggServer:
    """Honest-but-curious aggregator of one round (Bonawitz et al. 2017, SecAgg+ optional).

    Call sequence (each call is legal only in its stage, otherwise ``SecAggError``)::

        srv = SecAggServer(cfg, round_id, planned_users, dim=d + 1, run_id=run)
        roster = srv.advertise(advertise_msgs)          # -> broadcast to users in roster.users
        inboxes = srv.route_shares(share_key_msgs)      # -> inboxes[v] to user v
        srv.receive_masked(u, y_u)  /  srv.receive_masked([u1, u2, ...], partial_sum)   # streamed
        survivors, dropped = srv.unmask_requests()      # -> request to every survivor
        total = srv.finish(unmask_responses)            # uint32[dim] sum of survivors' inputs

    Any stage that leaves fewer than t users (or a user whose secret cannot be reconstructed from
    t shares) raises ``SecAggAbort`` and the server refuses further calls.

    Parameters
    ----------
    config : SecAggConfig
        Protocol settings (threshold, neighbours).
    round_id : int
        Round number, bound into every key derivation and ciphertext.
    user_ids : sequence of int
        Users selected for the round (the planned set); t is fixed from its size.
    dim : int
        Length of the masked uint32 vectors (d + 1 with the trust weight appended).
    weights : mapping of int to float, optional
        Trust weights the server sent to the users; ``survivor_weight_sum`` uses them to check
        the unmasked total weight.
    run_id : str or bytes, default ""
        Run identifier, bound into key derivations.
    graph_seed : bytes, optional
        32-byte seed of the SecAgg+ graph; drawn from ``os.urandom`` when omitted.
    """

    def __init__(
        self,
        config: SecAggConfig,
        round_id: int,
        user_ids: Sequence[int],
        *,
        dim: int,
        weights: Mapping[int, float] | None = None,
        run_id: str | bytes = b"",
        graph_seed: bytes | None = None,
    ) -> None:
        self.config, self.round_id, self.run_id, planned = check_party_ids("SecAggServer", config, round_id,
                                                                           user_ids, run_id)  # fmt: skip
        if dim < 1:
            raise SecAggError(f"dim={dim} must be >= 1")
        self.planned = tuple(sorted(planned))
        self.dim = int(dim)
        self.weights = dict(weights) if weights is not None else None
        self.t = config.resolve_threshold(len(self.planned))
        self.graph_seed = graph_seed if graph_seed is not None else os.urandom(32)
        if len(self.graph_seed) != 32:
            raise SecAggError(f"graph_seed must be 32 bytes, got {len(self.graph_seed)}")
        self.stage = "advertise_keys"
        self.roster: Roster | None = None
        self.u2: tuple[int, ...] = ()
        self._commits: dict[int, bytes] = {}
        self._sum: np.ndarray | None = None
        self._received: set[int] = set()
        self.request: UnmaskRequest | None = None
        self.counts: dict[str, int] = {"planned": len(self.planned)}

    # ---- helpers ---------------------------------------------------------------------------
    def _require(self, stage: str, call: str) -> None:
        if self.stage == "aborted":
            raise SecAggError(f"{call}() called after the round aborted")
        if self.stage != stage:
            raise SecAggError(f"{call}() called in stage {self.stage!r}; it belongs to {stage!r}")

    def _abort(self, msg: str) -> SecAggAbort:
        self.stage = "aborted"
        self._sum = None
        log.warning("secure aggregation round %d aborted: %s", self.round_id, msg)
        return SecAggAbort(f"round {self.round_id}: {msg}")

    def _check_count(self, n: int, what: str) -> None:
        if n < self.t:
            raise self._abort(f"only {n} users {what}, fewer than the threshold t={self.t}")

    def _holders(self, w: int, alive: set[int]) -> list[int]:
        assert self.roster is not None
        return [h for h in self.roster.holders(w) if h in alive]

    # ---- stage 0 ---------------------------------------------------------------------------
    def advertise(self, keys: Iterable[AdvertiseKeys] | Mapping[int, AdvertiseKeys]) -> Roster:
        """Collect public keys (U1) and return the roster to broadcast to every user in it."""
        self._require("advertise_keys", "advertise")
        msgs = list(keys.values()) if isinstance(keys, Mapping) else list(keys)
        c_pks: dict[int, bytes] = {}
        s_pks: dict[int, bytes] = {}
        planned = set(self.planned)
        for m in msgs:
            if m.user_id not in planned:
                raise SecAggError(f"advertise from user {m.user_id}, who is not in this round")
            if m.user_id in c_pks:
                raise SecAggError(f"user {m.user_id} advertised keys twice")
            if len(m.c_pk) != KEY_BYTES or len(m.s_pk) != KEY_BYTES:
                raise SecAggError(f"user {m.user_id} sent public keys that are not 32 bytes")
            c_pks[m.user_id], s_pks[m.user_id] = bytes(m.c_pk), bytes(m.s_pk)
        all_keys = [*c_pks.values(), *s_pks.values()]
        if len(set(all_keys)) != len(all_keys):
            raise SecAggError("two advertised public keys are equal; every key must be fresh")
        users = tuple(sorted(c_pks))
        self.counts["advertised"] = len(users)
        self._check_count(len(users), "advertised keys")
        self.roster = Roster(
            run_id=self.run_id,
            round_id=self.round_id,
            dim=self.dim,
            n_planned=len(self.planned),
            threshold=self.t,
            k=self.config.neighbours,
            graph_seed=self.graph_seed,
            users=users,
            c_pks=c_pks,
            s_pks=s_pks,
        )
        self.roster.neighbours  # noqa: B018  build the graph now so errors surface here
        self.stage = "share_keys"
        return self.roster

    # ---- stage 1 ---------------------------------------------------------------------------
    def route_shares(
        self, shares: Iterable[ShareKeys] | Mapping[int, ShareKeys]
    ) -> dict[int, dict[int, bytes]]:
        """Collect encrypted shares (U2) and return ``{receiver: {sender: ciphertext}}``.

        A user whose secrets would have fewer than t live holders is removed from U2 (repeated
        until stable), so every user left can still be reconstructed if it drops later.
        """
        self._require("share_keys", "route_shares")
        assert self.roster is not None
        msgs = list(shares.values()) if isinstance(shares, Mapping) else list(shares)
        roster = self.roster
        users = set(roster.users)
        cts: dict[int, Mapping[int, bytes]] = {}
        for m in msgs:
            u = m.user_id
            if u not in users:
                raise SecAggError(f"share-keys from user {u}, who is not in the roster")
            if u in cts:
                raise SecAggError(f"user {u} sent share-keys twice")
            expected = set(roster.neighbours[u])
            if set(m.ciphertexts) != expected:
                raise SecAggError(
                    f"user {u} sent shares for {sorted(m.ciphertexts)}, expected its neighbours "
                    f"{sorted(expected)}"
                )
            if any(len(c) != SHARE_CT_BYTES for c in m.ciphertexts.values()):
                raise SecAggError(f"user {u} sent a share ciphertext of the wrong size")
            if len(m.b_commit) != COMMIT_BYTES:
                raise SecAggError(f"user {u} sent a {len(m.b_commit)}-byte commitment")
            cts[u] = m.ciphertexts
            self._commits[u] = bytes(m.b_commit)
        u2 = set(cts)
        while True:
            weak = {w for w in u2 if len(self._holders(w, u2)) < self.t}
            if not weak:
                break
            log.info(
                "round %d: removing users %s with fewer than t=%d share holders",
                self.round_id,
                sorted(weak),
                self.t,
            )
            u2 -= weak
        self.u2 = tuple(sorted(u2))
        self.counts["shared"] = len(cts)
        self.counts["u2"] = len(u2)
        self._check_count(len(u2), "shared keys")
        inboxes = {v: {u: cts[u][v] for u in roster.neighbours[v] if u in u2} for v in self.u2}
        self._sum = np.zeros(self.dim, dtype=np.uint32)
        self.stage = "masked_input"
        return inboxes

    # ---- stage 2 ---------------------------------------------------------------------------
    def receive_masked(self, user_ids: int | Sequence[int] | MaskedInput, vector=None) -> None:
        """Add one masked vector (one user, or a node's pre-summed cohort) into the running sum.

        ``receive_masked(u, y)``, ``receive_masked([u1, u2], y1 + y2)`` or
        ``receive_masked(MaskedInput(...))``. O(dim) memory whatever the number of users.
        """
        self._require("masked_input", "receive_masked")
        if isinstance(user_ids, MaskedInput):
            user_ids, vector = user_ids.user_ids, user_ids.vector
        ids = [int(user_ids)] if np.isscalar(user_ids) else [int(u) for u in user_ids]
        if not ids or len(set(ids)) != len(ids):
            raise SecAggError(f"masked input must name distinct users, got {ids}")
        u2 = set(self.u2)
        for u in ids:
            if u not in u2:
                raise SecAggError(f"masked input for user {u}, who is not in U2 (did not share)")
            if u in self._received:
                raise SecAggError(f"masked input for user {u} received twice")
        vec = np.asarray(vector)
        if vec.dtype != np.uint32 or vec.shape != (self.dim,):
            raise SecAggError(
                f"masked input must be uint32[{self.dim}], got {vec.dtype}{list(vec.shape)}"
            )
        np.add(self._sum, vec, out=self._sum)
        self._received.update(ids)

    # ---- stage 3 ---------------------------------------------------------------------------
    def unmask_requests(self) -> UnmaskRequest:
        """Close stage 2: return (survivors U3, dropped U2 minus U3) to send to every survivor."""
        if self.stage == "unmask" and self.request is not None:
            return self.request
        self._require("masked_input", "unmask_requests")
        u3 = set(self._received)
        self.counts["u3"] = len(u3)
        self._check_count(len(u3), "sent masked inputs")
        for w in self.u2:
            n = len(self._holders(w, u3))
            if n < self.t:
                raise self._abort(
                    f"user {w}'s secrets have {n} surviving share holders, fewer than t={self.t}"
                )
        self.request = UnmaskRequest(tuple(sorted(u3)), tuple(u for u in self.u2 if u not in u3))
        self.stage = "unmask"
        return self.request

    def finish(self, responses: Iterable[UnmaskResponse]) -> np.ndarray:
        """Remove all masks and return the uint32[dim] sum of the survivors' inputs mod 2^32."""
        self._require("unmask", "finish")
        assert self.roster is not None and self.request is not None and self._sum is not None
        roster = self.roster
        survivors, dropped = set(self.request.survivors), set(self.request.dropped)
        b_shares: dict[int, list] = {u: [] for u in survivors}
        sk_shares: dict[int, list] = {u: [] for u in dropped}
        seen: set[int] = set()
        for r in responses:
            u = r.user_id
            if u not in survivors:
                raise SecAggError(f"unmask response from user {u}, who is not a survivor")
            if u in seen:
                raise SecAggError(f"user {u} sent two unmask responses")
            seen.add(u)
            x = roster.x_of(u)
            holds = set(roster.holders(u))
            for owners, kind, bucket in (
                (r.b_shares, "b", b_shares),
                (r.sk_shares, "sk", sk_shares),
            ):
                for v, blob in owners.items():
                    if v not in bucket or v not in holds:
                        raise SecAggError(
                            f"user {u} sent a {kind} share of user {v}, which was not requested"
                        )
                    share = decode_share(blob, SECRET_BYTES)
                    if share[0] != x:
                        raise SecAggError(
                            f"user {u} sent a share at x={share[0]}, its x-coordinate is {x}"
                        )
                    bucket[v].append(share)
        self.counts["responded"] = len(seen)
        self._check_count(len(seen), "answered the unmask request")
        for kind, bucket in (("b", b_shares), ("sk", sk_shares)):
            for v, shares in bucket.items():
                if len(shares) < self.t:
                    raise self._abort(
                        f"only {len(shares)} {kind} shares of user {v} arrived, fewer than "
                        f"t={self.t}"
                    )

        acc = self._sum
        seeds: list[tuple[bytes, int]] = []
        for u in sorted(survivors):
            b_u = combine(b_shares[u], self.t, SECRET_BYTES)
            if not check_commitment(b_u, self._commits[u], self.run_id, self.round_id, u):
                raise self._abort(f"reconstructed b of user {u} does not match its commitment")
            seeds.append((self_mask_seed(b_u, self.run_id, self.round_id, u), -1))
        for d in sorted(dropped):
            raw = combine(sk_shares[d], self.t, SECRET_BYTES)
            sk = X25519PrivateKey.from_private_bytes(raw)
            if public_bytes(sk) != roster.s_pks[d]:
                raise self._abort(f"reconstructed mask key of user {d} does not match its key")
            for v in roster.neighbours[d]:
                if v not in survivors:
                    continue
                seed = pair_mask_seed(sk, roster.s_pks[v], self.run_id, self.round_id, d, v)
                # survivor v added +PRG(s_vd) if d > v, else subtracted it: undo that
                seeds.append((seed, -1 if d > v else 1))
        apply_masks(acc, seeds)  # all of it only once every secret checked out
        self.counts["recovered"] = len(dropped)  # users whose pairwise masks were rebuilt from shares
        self.stage = "done"
        self._sum = None
        return acc

    # ---- reporting -------------------------------------------------------------------------
    def survivor_weight_sum(self) -> float:
        """Sum of the planned trust weights of the survivors (to check the unmasked total)."""
        if self.weights is None or self.request is None:
            raise SecAggError("survivor_weight_sum needs weights= and a closed masked-input stage")
        return float(sum(self.weights[u] for u in self.request.survivors))

    def dropout_summary(self) -> dict[str, int]:
        """Users present at each stage, JSON-able, for summary.json."""
        return dict(self.counts)
