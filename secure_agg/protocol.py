"""Pieces of the double-masking protocol shared by the client and server state machines."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secure_agg.config import SecAggConfig
from secure_agg.errors import SecAggError
from secure_agg.messages import SHARE_BYTES, SHARE_CT_BYTES, SHARE_PLAINTEXT_BYTES
from secure_agg.primitives import context_info

_SHARE_VERSION = 1
_STAGE_SHARE_KEYS = b"share_keys"


def normalise_run_id(run_id: str | bytes) -> bytes:
    b = run_id.encode() if isinstance(run_id, str) else bytes(run_id)
    if len(b) > 0xFFFF:
        raise SecAggError(f"run id is {len(b)} bytes, at most 65535 allowed")
    return b


def check_party_ids(who: str, config: SecAggConfig, round_id: int, user_ids: Sequence[int],
                    run_id: str | bytes) -> tuple[SecAggConfig, int, bytes, list[int]]:  # fmt: skip
    """The checks both ends make on construction: (validated config, round, run id bytes, user ids).

    User ids must be distinct integers in [0, 2^64) (they are bound as u64 into every key
    derivation and associated data); the round likewise. ``who`` names the caller in errors.
    """
    ids = [int(u) for u in user_ids]
    if len(set(ids)) != len(ids):
        dup = sorted({u for u in ids if ids.count(u) > 1})
        raise SecAggError(f"{who}: user_ids contains duplicates {dup[:10]}")
    bad = [u for u in ids if not 0 <= u < 1 << 64]
    if bad:
        raise SecAggError(f"{who}: user ids {bad[:10]} are outside [0, 2^64)")
    rnd = int(round_id)
    if not 0 <= rnd < 1 << 64:
        raise SecAggError(f"{who}: round_id={rnd} is outside [0, 2^64)")
    return config.validate(), rnd, normalise_run_id(run_id), ids


def pair_sign(u: int, v: int) -> int:
    """+1 if user u adds PRG(s_uv) to its input, -1 if it subtracts it (u < v adds)."""
    if u == v:
        raise SecAggError(f"a user has no pairwise mask with itself (user {u})")
    return 1 if v > u else -1


def b_commitment(b_u: bytes, run_id: bytes, round_id: int, u: int) -> bytes:
    """SHA-256 commitment to b_u, checked by the server after reconstructing b_u from shares."""
    return hashlib.sha256(context_info("b-commit", run_id, round_id, u) + b_u).digest()


def check_commitment(b_u: bytes, commit: bytes, run_id: bytes, round_id: int, u: int) -> bool:
    return hmac.compare_digest(b_commitment(b_u, run_id, round_id, u), commit)


def _share_aad(run_id: bytes, round_id: int, sender: int, receiver: int) -> bytes:
    return context_info("share-ct", run_id, round_id, sender, receiver) + _STAGE_SHARE_KEYS


def encrypt_shares(
    key: bytes,
    run_id: bytes,
    round_id: int,
    sender: int,
    receiver: int,
    sk_share: bytes,
    b_share: bytes,
) -> bytes:
    """AES-256-GCM encryption of one holder's shares; AAD binds run, round, sender, receiver, stage.

    Layout: nonce 12 | ciphertext of (version u8 | sender u64 | receiver u64 | sk share | b share)
    | tag 16, 149 bytes in all. The key is directional and used once; the random nonce is a
    second line of defence.
    """
    if len(sk_share) != SHARE_BYTES or len(b_share) != SHARE_BYTES:
        raise SecAggError(f"shares must be {SHARE_BYTES} bytes each")
    pt = struct.pack("<BQQ", _SHARE_VERSION, sender, receiver) + sk_share + b_share
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, pt, _share_aad(run_id, round_id, sender, receiver))


def decrypt_shares(
    key: bytes, run_id: bytes, round_id: int, sender: int, receiver: int, ct: bytes
) -> tuple[bytes, bytes]:
    """Inverse of ``encrypt_shares``; raises ``SecAggError`` naming sender and receiver."""
    if len(ct) != SHARE_CT_BYTES:
        raise SecAggError(
            f"share ciphertext from user {sender} to {receiver} is {len(ct)} bytes, "
            f"expected {SHARE_CT_BYTES}"
        )
    try:
        pt = AESGCM(key).decrypt(ct[:12], ct[12:], _share_aad(run_id, round_id, sender, receiver))
    except InvalidTag as exc:
        raise SecAggError(
            f"share ciphertext from user {sender} to user {receiver} failed authentication"
        ) from exc
    if len(pt) != SHARE_PLAINTEXT_BYTES:
        raise SecAggError(f"share plaintext is {len(pt)} bytes, expected {SHARE_PLAINTEXT_BYTES}")
    version, s, r = struct.unpack_from("<BQQ", pt)
    if version != _SHARE_VERSION or s != sender or r != receiver:
        raise SecAggError(
            f"share plaintext names sender {s} receiver {r} (version {version}), "
            f"expected {sender} -> {receiver}"
        )
    off = 17
    return pt[off : off + SHARE_BYTES], pt[off + SHARE_BYTES :]
