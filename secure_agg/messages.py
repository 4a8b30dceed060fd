"""Protocol messages and their fixed little-endian wire layouts (for the Flower adapters)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np

from secure_agg.errors import SecAggError
from secure_agg.graph import build_graph
from secure_agg.primitives import KEY_BYTES, SEED_BYTES
from secure_agg.shamir import share_bytes

SECRET_BYTES = 32  # s_u^SK (X25519 private key) and b_u are both 32 bytes
SHARE_BYTES = share_bytes(SECRET_BYTES)  # 52
SHARE_PLAINTEXT_BYTES = 1 + 8 + 8 + 2 * SHARE_BYTES  # version, sender, receiver, two shares: 121
SHARE_CT_BYTES = 12 + SHARE_PLAINTEXT_BYTES + 16  # nonce | AES-GCM ciphertext | tag: 149
COMMIT_BYTES = 32
_NO_K = 0xFFFFFFFF

# message type tags (first byte of every encoding)
_T_ADVERTISE, _T_ROSTER, _T_SHARES, _T_INBOX, _T_MASKED, _T_REQUEST, _T_RESPONSE = range(1, 8)


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0, user -> server: the user's two X25519 public keys (c for encryption, s for masks)."""

    user_id: int
    c_pk: bytes
    s_pk: bytes


@dataclass(frozen=True)
class Roster:
    """Stage 0 answer, server -> every user of U1: the round's parties, keys and public parameters.

    ``neighbours`` is not sent: every party recomputes it from ``graph_seed`` and checks it.
    """

    run_id: bytes
    round_id: int
    dim: int
    n_planned: int
    threshold: int
    k: int | None
    graph_seed: bytes
    users: tuple[int, ...]
    c_pks: Mapping[int, bytes]
    s_pks: Mapping[int, bytes]

    @cached_property
    def neighbours(self) -> dict[int, tuple[int, ...]]:
        return build_graph(self.users, self.k, self.graph_seed)

    @cached_property
    def _index(self) -> dict[int, int]:
        return {u: i for i, u in enumerate(self.users)}

    def x_of(self, user_id: int) -> int:
        """Shamir x-coordinate of a share holder: 1 + position in the sorted roster."""
        return self._index[user_id] + 1

    @cached_property
    def _holders(self) -> dict[int, tuple[int, ...]]:
        return {u: tuple(sorted((u, *nb))) for u, nb in self.neighbours.items()}

    def holders(self, user_id: int) -> tuple[int, ...]:
        """Users holding shares of ``user_id``'s secrets (itself and its neighbours), sorted."""
        return self._holders[user_id]


@dataclass(frozen=True)
class ShareKeys:
    """Stage 1, user -> server: encrypted shares, one per neighbour, and a commitment to b_u."""

    user_id: int
    b_commit: bytes
    ciphertexts: Mapping[int, bytes]  # receiver -> SHARE_CT_BYTES


class UnmaskRequest(NamedTuple):
    """Stage 3, server -> survivors: who sent a masked input and who dropped after sharing."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 3, user -> server: shares of b_v for surviving v, of s_v^SK for dropped v."""

    user_id: int
    b_shares: Mapping[int, bytes] = field(default_factory=dict)
    sk_shares: Mapping[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class MaskedInput:
    """Stage 2, node -> server: a masked uint32 vector covering one user or a node's cohort."""

    user_ids: tuple[int, ...]
    vector: np.ndarray  # uint32[dim]


# ---- encodings ---------------------------------------------------------------------------------
def _take(blob: bytes, off: int, n: int) -> tuple[bytes, int]:
    if off + n > len(blob):
        raise SecAggError(f"message truncated: need {off + n} bytes, have {len(blob)}")
    return blob[off : off + n], off + n


def _unpack(fmt: str, blob: bytes, off: int) -> tuple[tuple, int]:
    size = struct.calcsize(fmt)
    raw, off = _take(blob, off, size)
    return struct.unpack(fmt, raw), off


def _expect_tag(blob: bytes, tag: int, name: str) -> None:
    if not blob or blob[0] != tag:
        got = blob[0] if blob else None
        raise SecAggError(f"not a {name} message (type tag {got}, expected {tag})")


def _done(blob: bytes, off: int, name: str) -> None:
    if off != len(blob):
        raise SecAggError(f"{name} message has {len(blob) - off} trailing bytes")


def encode_advertise(m: AdvertiseKeys) -> bytes:
    """73 bytes: tag u8 | user u64 | c_pk 32 | s_pk 32."""
    return struct.pack("<BQ32s32s", _T_ADVERTISE, m.user_id, m.c_pk, m.s_pk)


def decode_advertise(blob: bytes) -> AdvertiseKeys:
    _expect_tag(blob, _T_ADVERTISE, "advertise-keys")
    (_, u, c, s), off = _unpack("<BQ32s32s", blob, 0)
    _done(blob, off, "advertise-keys")
    return AdvertiseKeys(u, c, s)


def encode_roster(r: Roster) -> bytes:
    head = struct.pack(
        "<BQIIII32sH",
        _T_ROSTER,
        r.round_id,
        r.dim,
        r.n_planned,
        r.threshold,
        _NO_K if r.k is None else r.k,
        r.graph_seed,
        len(r.run_id),
    )
    body = [head, r.run_id, struct.pack("<I", len(r.users))]
    body += [_ROSTER_REC.pack(u, r.c_pks[u], r.s_pks[u]) for u in r.users]
    return b"".join(body)


def _records(blob: bytes, off: int, n: int, rec: struct.Struct) -> tuple[list[tuple], int]:
    """``n`` fixed-size records of layout ``rec`` starting at ``off`` (one C-level pass)."""
    raw, end = _take(blob, off, n * rec.size)
    return list(rec.iter_unpack(raw)) if n else [], end


_ROSTER_REC = struct.Struct("<Q32s32s")
_SHARE_REC = struct.Struct(f"<Q{SHARE_CT_BYTES}s")
_HELD_REC = struct.Struct(f"<Q{SHARE_BYTES}s")


def decode_roster(blob: bytes) -> Roster:
    _expect_tag(blob, _T_ROSTER, "roster")
    (_, rnd, dim, n_planned, t, k, seed, rl), off = _unpack("<BQIIII32sH", blob, 0)
    run_id, off = _take(blob, off, rl)
    (n,), off = _unpack("<I", blob, off)
    recs, off = _records(blob, off, n, _ROSTER_REC)
    _done(blob, off, "roster")
    users = [u for u, _, _ in recs]
    c_pks = {u: c for u, c, _ in recs}
    s_pks = {u: s for u, _, s in recs}
    return Roster(
        run_id, rnd, dim, n_planned, t, None if k == _NO_K else k, seed, tuple(users), c_pks, s_pks
    )


def encode_share_keys(m: ShareKeys) -> bytes:
    """45 + 157 * k bytes: tag | user u64 | commit 32 | count u32 | (receiver u64, ct 149) * k."""
    parts = [struct.pack("<BQ32sI", _T_SHARES, m.user_id, m.b_commit, len(m.ciphertexts))]
    for v in sorted(m.ciphertexts):
        ct = m.ciphertexts[v]
        if len(ct) != SHARE_CT_BYTES:
            raise SecAggError(f"share ciphertext is {len(ct)} bytes, expected {SHARE_CT_BYTES}")
        parts.append(_SHARE_REC.pack(v, ct))
    return b"".join(parts)


def decode_share_keys(blob: bytes) -> ShareKeys:
    _expect_tag(blob, _T_SHARES, "share-keys")
    (_, u, commit, n), off = _unpack("<BQ32sI", blob, 0)
    recs, off = _records(blob, off, n, _SHARE_REC)
    _done(blob, off, "share-keys")
    return ShareKeys(u, commit, dict(recs))


def encode_inbox(receiver: int, inbox: Mapping[int, bytes]) -> bytes:
    parts = [struct.pack("<BQI", _T_INBOX, receiver, len(inbox))]
    for s in sorted(inbox):
        if len(inbox[s]) != SHARE_CT_BYTES:
            raise SecAggError(f"share ciphertext is {len(inbox[s])} bytes, expected {SHARE_CT_BYTES}")
        parts.append(_SHARE_REC.pack(s, inbox[s]))
    return b"".join(parts)


def decode_inbox(blob: bytes) -> tuple[int, dict[int, bytes]]:
    _expect_tag(blob, _T_INBOX, "share inbox")
    (_, receiver, n), off = _unpack("<BQI", blob, 0)
    recs, off = _records(blob, off, n, _SHARE_REC)
    _done(blob, off, "share inbox")
    return receiver, dict(recs)


def encode_masked(m: MaskedInput) -> bytes:
    """9 + 8 * users + 4 * dim bytes: tag | n u32 | ids u64 * n | dim u32 | uint32 LE * dim."""
    vec = np.ascontiguousarray(m.vector, dtype="<u4")
    head = struct.pack(f"<BI{len(m.user_ids)}QI", _T_MASKED, len(m.user_ids), *m.user_ids, len(vec))
    return head + vec.tobytes()


def masked_input_bytes(dim: int, n_users: int = 1) -> int:
    """Encoded size of a masked input covering ``n_users`` (for fixed_message_bytes)."""
    return 9 + 8 * n_users + 4 * dim


def decode_masked(blob: bytes) -> MaskedInput:
    _expect_tag(blob, _T_MASKED, "masked-input")
    (_, n), off = _unpack("<BI", blob, 0)
    ids, off = _unpack(f"<{n}Q", blob, off)
    (dim,), off = _unpack("<I", blob, off)
    raw, off = _take(blob, off, 4 * dim)
    _done(blob, off, "masked-input")
    return MaskedInput(tuple(ids), np.frombuffer(raw, dtype="<u4").astype(np.uint32))


def encode_unmask_request(r: UnmaskRequest) -> bytes:
    s, d = r.survivors, r.dropped
    return struct.pack(f"<BII{len(s)}Q{len(d)}Q", _T_REQUEST, len(s), len(d), *s, *d)


def decode_unmask_request(blob: bytes) -> UnmaskRequest:
    _expect_tag(blob, _T_REQUEST, "unmask request")
    (_, ns, nd), off = _unpack("<BII", blob, 0)
    s, off = _unpack(f"<{ns}Q", blob, off)
    d, off = _unpack(f"<{nd}Q", blob, off)
    _done(blob, off, "unmask request")
    return UnmaskRequest(tuple(s), tuple(d))


def encode_unmask_response(m: UnmaskResponse) -> bytes:
    """17 + 60 * shares bytes: tag | user u64 | nb u32 | nsk u32 | (owner u64, share 52) * ..."""
    parts = [struct.pack("<BQII", _T_RESPONSE, m.user_id, len(m.b_shares), len(m.sk_shares))]
    for shares in (m.b_shares, m.sk_shares):
        for v in sorted(shares):
            if len(shares[v]) != SHARE_BYTES:
                raise SecAggError(f"share is {len(shares[v])} bytes, expected {SHARE_BYTES}")
            parts.append(_HELD_REC.pack(v, shares[v]))
    return b"".join(parts)


def decode_unmask_response(blob: bytes) -> UnmaskResponse:
    _expect_tag(blob, _T_RESPONSE, "unmask response")
    (_, u, nb, nsk), off = _unpack("<BQII", blob, 0)
    b_recs, off = _records(blob, off, nb, _HELD_REC)
    sk_recs, off = _records(blob, off, nsk, _HELD_REC)
    _done(blob, off, "unmask response")
    return UnmaskResponse(u, dict(b_recs), dict(sk_recs))


__all__ = [
    "COMMIT_BYTES",
    "KEY_BYTES",
    "SEED_BYTES",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "SHARE_CT_BYTES",
    "AdvertiseKeys",
    "MaskedInput",
    "Roster",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskResponse",
]
