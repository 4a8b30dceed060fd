"""Client side of secure aggregation: one state machine for a cohort of users on one node."""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secure_agg.config import SecAggConfig
from secure_agg.errors import SecAggError
from secure_agg.graph import NeighbourGraph
from secure_agg.messages import (
    SECRET_BYTES,
    SHARE_BYTES,
    AdvertiseKeys,
    MaskedInput,
    Roster,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    decode_roster,
    encode_roster,
)
from secure_agg.primitives import (
    agree,
    apply_masks,
    pair_mask_seed,
    public_bytes,
    self_mask_seed,
    share_keys_between,
)
from secure_agg.protocol import (
    b_commitment,
    check_party_ids,
    decrypt_shares,
    encrypt_shares,
    pair_sign,
)
from secure_agg.shamir import encode_share, share_x, split_secrets

log = logging.getLogger(__name__)

_HELD = struct.Struct(f"<Q{SHARE_BYTES}s{SHARE_BYTES}s")  # owner, share of its s^SK, share of its b
_RECV = struct.Struct("<Q32s")  # sender, AES-GCM key of its shares


@dataclass
class _User:
    user_id: int
    c_raw: bytes  # X25519 private key for share encryption (raw 32 bytes)
    s_raw: bytes  # X25519 private key for pairwise masks (raw 32 bytes)
    c_pk: bytes
    s_pk: bytes
    b: bytes = b""
    neighbours: tuple[int, ...] = ()
    # owner -> (encoded share of owner's s^SK, encoded share of owner's b), this user's holdings
    held: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    masked_with: tuple[int, ...] = ()
    recv_keys: dict[int, bytes] = field(default_factory=dict)  # AES-GCM key of shares from v

    @classmethod
    def fresh(cls, user_id: int) -> _User:
        c, s = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        return cls(user_id, c.private_bytes_raw(), s.private_bytes_raw(), public_bytes(c), public_bytes(s))

    # key objects are built when a stage needs them, not on every load of the cohort's state
    @property
    def c_sk(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self.c_raw)

    @property
    def s_sk(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self.s_raw)


class ClientCohort:
    """The users of one node, advancing through the protocol together, one call per stage.

    Each stage call acts on the users still active and returns one message per user; a user that
    is absent from a call (not in ``users=``, missing from the roster or without an inbox) has
    dropped and stays out for the rest of the round. Calls out of order raise ``SecAggError``.

    Call sequence::

        cohort = ClientCohort(cfg, round_id, user_ids, run_id=run)
        adv = cohort.advertise_keys()                     # {u: AdvertiseKeys}      -> server
        shares = cohort.share_keys(roster)                # {u: ShareKeys}          -> server
        masked = cohort.masked_input(inboxes, q)          # {u: uint32[dim]}        -> server
          # or  cohort.masked_input_sum(inboxes, q)       # one MaskedInput for the whole cohort
          # or  cohort.masked_sum(inboxes, q.sum(0), us)  # the same, from the node's own sum
        resp = cohort.unmask(request)                     # {u: UnmaskResponse}     -> server

    Parameters
    ----------
    config : SecAggConfig
        Must equal the server's (threshold, neighbours).
    round_id : int
        Round number; the roster must carry the same.
    user_ids : sequence of int
        The users this node speaks for in this round.
    run_id : str or bytes, default ""
        Run identifier; the roster must carry the same.
    """

    def __init__(
        self,
        config: SecAggConfig,
        round_id: int,
        user_ids: Sequence[int],
        *,
        run_id: str | bytes = b"",
    ) -> None:
        self.config, self.round_id, self.run_id, ids = check_party_ids("ClientCohort", config, round_id, user_ids,
                                                                       run_id)  # fmt: skip
        self._users: dict[int, _User] = {}
        self._pending = sorted(ids)
        self.stage = "advertise_keys"
        self.roster: Roster | None = None
        self.dropped: set[int] = set()
        self._graph: dict[int, tuple[int, ...]] = {}  # own users' neighbours, from _check_roster

    @property
    def users(self) -> list[int]:
        """Users still taking part, sorted."""
        return list(self._pending) if self.stage == "advertise_keys" else sorted(self._users)

    def _require(self, stage: str, call: str) -> None:
        if self.stage != stage:
            raise SecAggError(f"{call}() called in stage {self.stage!r}; it belongs to {stage!r}")

    def _keep(self, keep: set[int], why: str) -> None:
        gone = set(self._users) - keep
        if gone:
            log.debug("round %d: users %s drop out (%s)", self.round_id, sorted(gone), why)
        for u in gone:
            del self._users[u]
        self.dropped |= gone

    def _select(self, users: Sequence[int] | None) -> set[int]:
        if users is None:
            return set(self._users)
        sel = {int(u) for u in users}
        unknown = sel - set(self._users)
        if unknown:
            raise SecAggError(f"users {sorted(unknown)} are not active in this cohort")
        return sel

    # ---- state between stages --------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise the cohort between stages (a node may be a fresh process for each stage).

        The blob holds the users' secret keys, self-mask seeds and held shares: keep it where
        the node keeps its other private state (Flower ``Context.state``), never send it.
        """
        users = {
            str(u): {
                "c": st.c_raw.hex(),
                "s": st.s_raw.hex(),
                "cp": st.c_pk.hex(),
                "sp": st.s_pk.hex(),
                "b": st.b.hex(),
                "nb": list(st.neighbours),
                # fixed-size records packed once per user: far less Python than one entry per share
                "held": b"".join(_HELD.pack(v, a, b) for v, (a, b) in st.held.items()).hex(),
                "mw": list(st.masked_with),
                "rk": b"".join(_RECV.pack(v, x) for v, x in st.recv_keys.items()).hex(),
            }
            for u, st in self._users.items()
        }
        meta = {
            "v": 3,
            "round": self.round_id,
            "run": self.run_id.hex(),
            "stage": self.stage,
            "pending": self._pending,
            "dropped": sorted(self.dropped),
            "roster": encode_roster(self.roster).hex() if self.roster is not None else None,
            "users": users,
        }
        return json.dumps(meta, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, config: SecAggConfig, blob: bytes) -> ClientCohort:
        """Inverse of ``to_bytes``; ``config`` must be the one the cohort was created with."""
        try:
            meta = json.loads(blob)
            if meta.get("v") != 3:
                raise SecAggError(f"unknown cohort state version {meta.get('v')!r}")
            self = cls(config, meta["round"], meta["pending"], run_id=bytes.fromhex(meta["run"]))
            self.stage = meta["stage"]
            self.dropped = {int(u) for u in meta["dropped"]}
            if meta["roster"] is not None:
                self.roster = decode_roster(bytes.fromhex(meta["roster"]))
                # recompute the graph ourselves, as _check_roster did when the roster arrived
                self._check_roster(self.roster)
            for u, d in meta["users"].items():
                st = _User(
                    int(u),
                    bytes.fromhex(d["c"]),
                    bytes.fromhex(d["s"]),
                    bytes.fromhex(d["cp"]),
                    bytes.fromhex(d["sp"]),
                    bytes.fromhex(d["b"]),
                    tuple(d["nb"]),
                    {v: (a, b) for v, a, b in _HELD.iter_unpack(bytes.fromhex(d["held"]))},
                    tuple(d["mw"]),
                    dict(_RECV.iter_unpack(bytes.fromhex(d["rk"]))),
                )
                self._users[int(u)] = st
        except (KeyError, TypeError, ValueError, struct.error) as exc:
            raise SecAggError(f"corrupt cohort state: {exc}") from exc
        return self

    # ---- stage 0 ---------------------------------------------------------------------------
    def advertise_keys(self, users: Sequence[int] | None = None) -> dict[int, AdvertiseKeys]:
        """Generate fresh X25519 key pairs c_u (encryption) and s_u (masks) per user."""
        self._require("advertise_keys", "advertise_keys")
        ids = self._pending if users is None else sorted({int(u) for u in users})
        unknown = set(ids) - set(self._pending)
        if unknown:
            raise SecAggError(f"users {sorted(unknown)} are not in this cohort")
        self.dropped |= set(self._pending) - set(ids)
        out = {}
        for u in ids:
            st = self._users[u] = _User.fresh(u)
            out[u] = AdvertiseKeys(u, st.c_pk, st.s_pk)
        self.stage = "share_keys"
        return out

    # ---- stage 1 ---------------------------------------------------------------------------
    def _check_roster(self, roster: Roster) -> None:
        if roster.round_id != self.round_id or roster.run_id != self.run_id:
            raise SecAggError(
                f"roster is for run {roster.run_id!r} round {roster.round_id}, this cohort is in "
                f"run {self.run_id!r} round {self.round_id}"
            )
        if roster.k != self.config.neighbours:
            raise SecAggError(
                f"roster uses neighbours={roster.k}, config says {self.config.neighbours}"
            )
        if roster.n_planned < len(roster.users):
            raise SecAggError(
                f"roster plans {roster.n_planned} users but lists {len(roster.users)}"
            )
        t = self.config.resolve_threshold(roster.n_planned)
        if roster.threshold != t:
            raise SecAggError(
                f"roster threshold t={roster.threshold}, config gives t={t} for "
                f"{roster.n_planned} planned users"
            )
        if len(roster.users) < t:
            raise SecAggError(f"roster has {len(roster.users)} users, fewer than t={t}")
        if len(set(roster.users)) != len(roster.users) or list(roster.users) != sorted(
            roster.users
        ):
            raise SecAggError("roster users must be sorted and distinct")
        if set(roster.c_pks) != set(roster.users) or set(roster.s_pks) != set(roster.users):
            raise SecAggError("roster public keys do not cover exactly the roster users")
        if roster.dim < 1 or len(roster.graph_seed) != 32:
            raise SecAggError(f"roster dim={roster.dim} or graph seed length is invalid")
        keys = [*roster.c_pks.values(), *roster.s_pks.values()]
        if len(set(keys)) != len(keys):
            raise SecAggError("roster contains repeated public keys")
        for u, st in self._users.items():
            if u in roster.c_pks and (
                roster.c_pks[u] != st.c_pk or roster.s_pks[u] != st.s_pk
            ):
                raise SecAggError(f"roster carries wrong public keys for user {u}")
        graph = NeighbourGraph(roster.users, roster.k, roster.graph_seed)
        if graph.degree + 1 < t:  # every user of the graph has exactly `degree` neighbours
            raise SecAggError(
                f"neighbour graph gives every user {graph.degree + 1} share holders, fewer than t={t}"
            )
        # our users' neighbourhoods, computed ourselves (O(k) each), whatever the roster carried
        listed = set(roster.users)
        self._graph = {u: graph.of(u) for u in self._users if u in listed}

    def share_keys(
        self, roster: Roster, users: Sequence[int] | None = None
    ) -> dict[int, ShareKeys]:
        """Check the roster, draw b_u, share s_u^SK and b_u t-of-(neighbours+1), encrypt shares."""
        self._require("share_keys", "share_keys")
        self._check_roster(roster)
        self._keep(self._select(users) & set(roster.users), "not in roster")
        self.roster = roster
        t = roster.threshold
        out = {}
        # a pair of users on this node needs one X25519 agreement for both directions' keys
        inside: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        for u in sorted(self._users):
            st = self._users[u]
            st.neighbours = self._graph[u]
            st.b = os.urandom(SECRET_BYTES)
            holders = tuple(sorted((u, *st.neighbours)))
            xs = [roster.x_of(h) for h in holders]
            shares = split_secrets([st.s_raw, st.b], xs, t)
            c_sk = st.c_sk
            cts = {}
            for h in holders:
                sk_sh, b_sh = (encode_share(s) for s in shares[roster.x_of(h)])
                if h == u:
                    st.held[u] = (sk_sh, b_sh)
                    continue
                keys = inside.pop((h, u), None)  # (u -> h, h -> u) if h derived them already
                if keys is None:
                    keys = share_keys_between(
                        agree(c_sk, roster.c_pks[h]), self.run_id, self.round_id, u, h
                    )
                    if h in self._users:
                        inside[(u, h)] = (keys[1], keys[0])  # as seen from h
                key, st.recv_keys[h] = keys
                cts[h] = encrypt_shares(key, self.run_id, self.round_id, u, h, sk_sh, b_sh)
            out[u] = ShareKeys(u, b_commitment(st.b, self.run_id, self.round_id, u), cts)
        self.stage = "masked_input"
        return out

    # ---- stage 2 ---------------------------------------------------------------------------
    def _open_inboxes(
        self, inboxes: Mapping[int, Mapping[int, bytes]], users: Sequence[int] | None
    ) -> None:
        assert self.roster is not None
        roster = self.roster
        self._keep(self._select(users) & set(inboxes), "no share inbox (excluded from U2)")
        for u in sorted(self._users):
            st = self._users[u]
            inbox = inboxes[u]
            stray = set(inbox) - set(st.neighbours)
            if stray:
                raise SecAggError(
                    f"inbox of user {u} has shares from non-neighbours {sorted(stray)}"
                )
            if len(inbox) + 1 < roster.threshold:
                raise SecAggError(
                    f"user {u} received {len(inbox)} shares; with its own that is fewer than "
                    f"t={roster.threshold}"
                )
            for v, ct in inbox.items():
                sk_sh, b_sh = decrypt_shares(st.recv_keys[v], self.run_id, self.round_id, v, u, ct)
                for sh in (sk_sh, b_sh):  # decrypt_shares checked their lengths
                    if share_x(sh) != roster.x_of(u):
                        raise SecAggError(f"share from user {v} to user {u} has the wrong x")
                st.held[v] = (sk_sh, b_sh)
            st.masked_with = tuple(sorted(inbox))
            st.recv_keys.clear()  # share-encryption keys are not needed any more

    def _vectors(self, vectors, users: Sequence[int] | None) -> dict[int, np.ndarray]:
        assert self.roster is not None
        dim = self.roster.dim
        if isinstance(vectors, Mapping):
            vecs = {int(u): np.asarray(v) for u, v in vectors.items()}
        else:
            arr = np.asarray(vectors)
            order = list(users) if users is not None else self.users
            if arr.ndim != 2 or arr.shape[0] != len(order):
                raise SecAggError(
                    f"vectors must be uint32[{len(order)}, {dim}] (one row per user in "
                    f"{order}), got {arr.dtype}{list(arr.shape)}"
                )
            vecs = {int(u): arr[i] for i, u in enumerate(order)}
        for u, v in vecs.items():
            if v.dtype != np.uint32 or v.shape != (dim,):
                raise SecAggError(
                    f"input of user {u} must be uint32[{dim}] (quantise first), got "
                    f"{v.dtype}{list(v.shape)}"
                )
        return vecs

    def _start_masked(self, inboxes, vectors, users) -> dict[int, np.ndarray]:
        self._require("masked_input", "masked_input")
        vecs = self._vectors(vectors, users)
        sel = set(vecs) if users is None else self._select(users)
        self._open_inboxes(inboxes, sorted(sel & set(vecs) & set(self._users)))
        return vecs

    def masked_input(
        self,
        inboxes: Mapping[int, Mapping[int, bytes]],
        vectors: Mapping[int, np.ndarray] | np.ndarray,
        users: Sequence[int] | None = None,
    ) -> dict[int, np.ndarray]:
        """Mask every user's quantised input: y_u = x_u + PRG(b_u) + sum_v sign(u,v) PRG(s_uv).

        ``vectors`` is ``{u: uint32[dim]}`` or a uint32[U, dim] array whose rows follow ``users``
        (default: the active users, sorted). Returns ``{u: uint32[dim]}``.
        """
        vecs = self._start_masked(inboxes, vectors, users)
        out = {}
        for u in sorted(self._users):
            y = np.array(vecs[u], dtype=np.uint32, copy=True, order="C")
            out[u] = apply_masks(y, self._mask_seeds(u, skip=()))
        self.stage = "unmask"
        return out

    def _mask_seeds(self, u: int, skip: Container[int]) -> list[tuple[bytes, int]]:
        """(AES key, sign) of user u's self mask and of its pairwise masks to neighbours not in ``skip``."""
        st = self._users[u]
        seeds = [(self_mask_seed(st.b, self.run_id, self.round_id, u), 1)]
        peers = [v for v in st.masked_with if v not in skip]
        if peers:
            assert self.roster is not None
            s_sk, s_pks = st.s_sk, self.roster.s_pks
            seeds += [
                (pair_mask_seed(s_sk, s_pks[v], self.run_id, self.round_id, u, v), pair_sign(u, v))
                for v in peers
            ]
        return seeds

    def masked_input_sum(
        self,
        inboxes: Mapping[int, Mapping[int, bytes]],
        vectors: Mapping[int, np.ndarray] | np.ndarray,
        users: Sequence[int] | None = None,
    ) -> MaskedInput:
        """Like ``masked_input`` but returns the cohort's masked vectors already summed.

        Pairwise masks between two users of the cohort cancel in the sum, so they are skipped;
        the result is bit-identical to summing ``masked_input``'s vectors. The sum reveals nothing
        the individual masked vectors would not (it is a function of them).
        """
        vecs = self._start_masked(inboxes, vectors, users)
        assert self.roster is not None
        acc = np.zeros(self.roster.dim, dtype=np.uint32)
        for u in sorted(self._users):
            np.add(acc, vecs[u], out=acc)
        return self._mask_cohort(acc)

    def masked_sum(
        self, inboxes: Mapping[int, Mapping[int, bytes]], total: np.ndarray, users: Sequence[int]
    ) -> MaskedInput:
        """``masked_input_sum`` for a node that has already summed its users' quantised inputs.

        ``total`` is the uint32[dim] sum (mod 2^32) of the inputs of exactly ``users``; every one of
        them must have its share inbox, since an input already in the sum cannot be left out.
        """
        self._require("masked_input", "masked_sum")
        assert self.roster is not None
        total = np.asarray(total)
        if total.dtype != np.uint32 or total.shape != (self.roster.dim,):
            raise SecAggError(
                f"summed input must be uint32[{self.roster.dim}], got {total.dtype}{list(total.shape)}"
            )
        sel = self._select(users)
        missing = sel - set(inboxes)
        if missing:
            raise SecAggError(f"users {sorted(missing)} are in the sum but have no share inbox")
        self._open_inboxes(inboxes, sorted(sel))
        return self._mask_cohort(np.array(total, dtype=np.uint32, copy=True, order="C"))

    def _mask_cohort(self, acc: np.ndarray) -> MaskedInput:
        inside = set(self._users)
        seeds: list[tuple[bytes, int]] = []
        for u in sorted(self._users):
            seeds += self._mask_seeds(u, skip=inside)
        apply_masks(acc, seeds)  # one fused pass over acc for every mask of the cohort
        self.stage = "unmask"
        return MaskedInput(tuple(sorted(self._users)), acc)

    # ---- stage 3 ---------------------------------------------------------------------------
    def unmask(
        self, request: UnmaskRequest, users: Sequence[int] | None = None
    ) -> dict[int, UnmaskResponse]:
        """Reveal, for each held owner, the b share if it survived or the s^SK share if it dropped.

        Refuses (``SecAggError``) a request that names a user both ways, lists one of this
        cohort's masked users as dropped, leaves a held owner unaccounted for, or has fewer than
        t survivors: any of these could let the server learn both masks of one user.
        """
        self._require("unmask", "unmask")
        assert self.roster is not None
        survivors, dropped = set(request.survivors), set(request.dropped)
        if survivors & dropped:
            raise SecAggError(
                f"unmask request names users {sorted(survivors & dropped)} both as survivors "
                "and as dropped"
            )
        if len(survivors) < self.roster.threshold:
            raise SecAggError(
                f"unmask request has {len(survivors)} survivors, fewer than "
                f"t={self.roster.threshold}"
            )
        masked = set(self._users)
        if masked & dropped:
            raise SecAggError(
                f"unmask request lists users {sorted(masked & dropped)} as dropped, but this "
                "node sent their masked inputs"
            )
        missing = masked - survivors
        if missing:
            raise SecAggError(
                f"unmask request omits users {sorted(missing)} whose masked inputs were sent"
            )
        out = {}
        for u in sorted(self._select(users)):
            st = self._users[u]
            b_sh, sk_sh = {}, {}
            for v, (sk_share, b_share) in st.held.items():
                if v in survivors:
                    b_sh[v] = b_share
                elif v in dropped:
                    if v == u:
                        raise SecAggError(f"request asks for user {u}'s own mask key share")
                    sk_sh[v] = sk_share
                else:
                    raise SecAggError(
                        f"unmask request lists user {v} (a share owner of user {u}) neither as "
                        "survivor nor as dropped"
                    )
            out[u] = UnmaskResponse(u, b_sh, sk_sh)
        self.stage = "done"
        return out
