"""Cryptographic building blocks: X25519 agreement, HKDF-SHA256, AES-256-CTR mask expansion.

Every mask, seed and key comes from the OS CSPRNG (``os.urandom`` / ``secrets`` or OpenSSL's
key generation) and is expanded with AES-256-CTR; no numpy or ``random`` generator is used here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secure_agg.errors import SecAggError

SEED_BYTES = 32
KEY_BYTES = 32  # X25519 public/private key size
_ZERO_IV = bytes(16)  # each AES-CTR key below expands exactly one keystream, so a fixed IV is safe
_DOMAIN = b"fedrec/secagg/v1/"


def random_seed() -> bytes:
    """32 bytes from the OS CSPRNG."""
    return os.urandom(SEED_BYTES)


def hkdf(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) with an all-zero salt; ``info`` carries the domain separation."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


@lru_cache(maxsize=64)
def _context_prefix(label: str, run_id: bytes) -> bytes:
    lab = label.encode()
    return _DOMAIN + struct.pack("<H", len(lab)) + lab + struct.pack("<H", len(run_id)) + run_id


def context_info(label: str, run_id: bytes, round_id: int, *ids: int) -> bytes:
    """Canonical HKDF info: domain | label | len-prefixed run id | round | ids (all fixed width)."""
    # called tens of times per user and round: the constant prefix is built once per label and run
    return _context_prefix(label, bytes(run_id)) + struct.pack(f"<Q{len(ids)}Q", round_id, *ids)


def agree(private_key: X25519PrivateKey, peer_public: bytes) -> bytes:
    """Raw X25519 shared secret with a peer's 32-byte public key.

    OpenSSL rejects small-order points (all-zero shared secret); that is reported as a
    ``SecAggError`` because only a malformed or malicious key can cause it.
    """
    try:
        return private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise SecAggError(
            f"X25519 agreement failed for peer key {peer_public.hex()}: {exc}"
        ) from exc


def public_bytes(private_key: X25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes_raw()


def pair_mask_seed(
    private_key: X25519PrivateKey, peer_public: bytes, run_id: bytes, round_id: int, u: int, v: int
) -> bytes:
    """s_uv: the AES key of the pairwise mask of users u and v (symmetric in u, v)."""
    lo, hi = (u, v) if u < v else (v, u)
    return hkdf(
        agree(private_key, peer_public), context_info("pair-mask", run_id, round_id, lo, hi)
    )


def self_mask_seed(b_u: bytes, run_id: bytes, round_id: int, u: int) -> bytes:
    """AES key of user u's self mask, derived from the shared secret seed b_u."""
    return hkdf(b_u, context_info("self-mask", run_id, round_id, u))


def share_keys_between(
    shared_secret: bytes, run_id: bytes, round_id: int, u: int, v: int
) -> tuple[bytes, bytes]:
    """AES-256-GCM keys for shares sent u -> v and v -> u (directional), from one HKDF call.

    ``shared_secret`` is ``agree(c_u, c_v_pk)``, equal on both ends. One 64-byte HKDF-SHA256 output
    under the info of the unordered pair (lo, hi) is split: bytes [0, 32) key lo -> hi, [32, 64)
    key hi -> lo, so both parties derive both keys at once and the two directions differ.
    """
    lo, hi = (u, v) if u < v else (v, u)
    okm = hkdf(shared_secret, context_info("share-enc", run_id, round_id, lo, hi), length=64)
    up, down = okm[:32], okm[32:]
    return (up, down) if u == lo else (down, up)


class MaskExpander:
    """Expands 32-byte seeds into uniform uint32 vectors of length ``d`` with AES-256-CTR.

    One AES-CTR pass per (seed, vector): the encryptor runs over a zero buffer and its keystream
    is read as little-endian uint32, which is uniform over Z_2^32. Buffers are reused, so a
    returned keystream view is valid only until the next call.

    Parameters
    ----------
    d : int
        Vector length (number of uint32 coordinates).
    """

    def __init__(self, d: int) -> None:
        if d < 1:
            raise SecAggError(f"mask length d={d} must be >= 1")
        self.d = d
        self._zeros = memoryview(bytes(4 * d))
        self._buf = bytearray(4 * d + 15)  # update_into needs block_size - 1 bytes of slack

    def keystream(self, seed: bytes) -> np.ndarray:
        """PRG(seed): uint32[d] view into the internal buffer (copy it to keep it)."""
        if len(seed) != SEED_BYTES:
            raise SecAggError(f"mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
        enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_IV)).encryptor()
        enc.update_into(self._zeros, self._buf)
        return np.frombuffer(self._buf, dtype="<u4", count=self.d)

    def add(self, acc: np.ndarray, seed: bytes) -> None:
        """acc += PRG(seed) mod 2^32, in place."""
        np.add(acc, self.keystream(seed), out=acc)

    def subtract(self, acc: np.ndarray, seed: bytes) -> None:
        """acc -= PRG(seed) mod 2^32, in place."""
        np.subtract(acc, self.keystream(seed), out=acc)


#: uint32 coordinates per block in ``apply_masks``: 256 kB of keystream and of the accumulator stay
#: in L2; fewer, longer AES calls than 64 kB blocks (0.19 vs 0.21 ms per 688 kB mask here).
MASK_BLOCK = 1 << 16


def apply_masks(
    acc: np.ndarray, seeds: Sequence[tuple[bytes, int]], *, block: int = MASK_BLOCK
) -> np.ndarray:
    """acc += sum_i sign_i * PRG(seed_i) mod 2^32, in place; returns ``acc``.

    PRG(seed) is the AES-256-CTR keystream of ``MaskExpander.keystream`` (bit-identical: CTR
    mode continues across ``update`` calls). All keystreams advance together one block at a time,
    so each block of ``acc`` is read and written while it is in cache, instead of streaming the
    whole vector through memory once per seed.

    Parameters
    ----------
    acc : np.ndarray[uint32], shape (d,)
        Contiguous accumulator, modified in place.
    seeds : sequence of (bytes, int)
        32-byte AES keys with sign +1 (add) or -1 (subtract).
    block : int, default MASK_BLOCK
        Coordinates per step.
    """
    if acc.dtype != np.uint32 or acc.ndim != 1 or not acc.flags.c_contiguous:
        raise SecAggError(f"mask accumulator must be contiguous uint32[d], got {acc.dtype}{list(acc.shape)}")
    streams = []
    for seed, sign in seeds:
        if len(seed) != SEED_BYTES:
            raise SecAggError(f"mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
        if sign not in (1, -1):
            raise SecAggError(f"mask sign must be +1 or -1, got {sign}")
        enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_IV)).encryptor()
        streams.append((enc, np.add if sign > 0 else np.subtract))
    if not streams:
        return acc
    d = len(acc)
    block = max(1, min(block, d))
    zeros = memoryview(bytes(4 * block))
    buf = bytearray(4 * block + 15)  # update_into needs block_size - 1 bytes of slack
    for a in range(0, d, block):
        n = min(block, d - a)
        part = acc[a : a + n]
        ks = np.frombuffer(buf, dtype="<u4", count=n)
        for enc, op in streams:
            enc.update_into(zeros[: 4 * n], buf)
            op(part, ks, out=part)
    return acc


def expand_mask(seed: bytes, d: int) -> np.ndarray:
    """PRG(seed) as a fresh uint32[d] array (AES-256-CTR keystream, little-endian words)."""
    return MaskExpander(d).keystream(seed).astype(np.uint32, copy=True)


class CtrDrbg:
    """Deterministic CSPRNG (AES-256-CTR keystream of a 32-byte seed) for public randomness.

    Used to derive the SecAgg+ neighbour graph from the server's seed, so every party can
    recompute and check it; never used for secrets.
    """

    _CHUNK = 4096  # keystream bytes drawn per AES call; the output does not depend on it

    def __init__(self, seed: bytes, label: str) -> None:
        key = hkdf(seed, _DOMAIN + b"drbg/" + label.encode())
        self._enc = Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()
        self._buf = b""
        self._pos = 0

    def randbytes(self, n: int) -> bytes:
        """The next ``n`` bytes of the keystream (buffered, so many small draws stay cheap)."""
        if self._pos + n > len(self._buf):
            rest = self._buf[self._pos :]
            self._buf = rest + self._enc.update(bytes(max(self._CHUNK, n - len(rest))))
            self._pos = 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def randbelow(self, n: int) -> int:
        """Uniform integer in [0, n) by rejection sampling on 64-bit draws."""
        if n < 1:
            raise ValueError(f"randbelow needs n >= 1, got {n}")
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            x = int.from_bytes(self.randbytes(8), "little")
            if x < limit:
                return x % n

    def permutation(self, items: list[int]) -> list[int]:
        """Fisher-Yates shuffle of a copy of ``items``: swap i with ``randbelow(i + 1)``, i = n-1 .. 1.

        The n - 1 draws are taken as one block of 64-bit words and reduced with numpy; the
        result and the keystream consumed are those of calling ``randbelow`` once per step (every
        party recomputes the neighbour graph, so this runs once per user and round). A word that
        ``randbelow`` would reject (probability below n / 2^64 per step) sends the whole shuffle
        down the step-by-step path over the same words.
        """
        out = list(items)
        n = len(out)
        if n < 2:
            return out
        bound = np.arange(n, 1, -1, dtype=np.uint64)  # i + 1 for i = n - 1 .. 1
        words = np.frombuffer(self.randbytes(8 * (n - 1)), dtype="<u8")
        rem = (np.uint64(2**64 - 1) % bound + np.uint64(1)) % bound  # 2^64 mod (i + 1)
        accept = (rem == 0) | (words < np.zeros_like(rem) - rem)  # x < 2^64 - rem, as randbelow
        if accept.all():
            js = (words % bound).tolist()
        else:
            js = self._draw_steps(n, [int(w) for w in words])
        for i, j in zip(range(n - 1, 0, -1), js, strict=True):
            out[i], out[j] = out[j], out[i]
        return out

    def _draw_steps(self, n: int, words: list[int]) -> list[int]:
        """``randbelow(i + 1)`` for i = n-1 .. 1, reading ``words`` first, then the keystream."""
        js = []
        pending = iter(words)
        for i in range(n - 1, 0, -1):
            limit = (1 << 64) - ((1 << 64) % (i + 1))
            while True:
                x = next(pending, None)
                if x is None:
                    x = int.from_bytes(self.randbytes(8), "little")
                if x < limit:
                    js.append(x % (i + 1))
                    break
        return js
