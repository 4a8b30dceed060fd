"""Upload envelope: AES-256-GCM payload, key wrapped with RSA-2048-OAEP to the server's key.

Wire format, version 1 (all integers little-endian; W = RSA modulus bytes, 256 for RSA-2048)::

    offset     size  field
    0          1     version (0x01)
    1          1     stage code (STAGE_CODES)
    2          2     flags, must be 0
    4          8     round id, u64
    12         8     user id, u64
    20         16    run tag: SHA-256(b"fedrec/envelope/v1/run" | run id)[:16]
    36         16    server key fingerprint: SHA-256(SubjectPublicKeyInfo DER)[:16]
    52         4     P, ciphertext length = padded plaintext length, u32
    56         W     RSA-OAEP(SHA-256, MGF1-SHA256) wrapping of a fresh random 256-bit key
    56+W       12    GCM nonce (random)
    68+W       P     AES-256-GCM ciphertext of: payload length u32 | payload | zero padding
    68+W+P     16    GCM tag

    total = 84 + W + P bytes (340 + P with RSA-2048)

The AAD is bytes [0, 68+W) followed by u16 len(run id) | run id, so every header field, the
wrapped key and the full run id are authenticated. P is a per-stage fixed size or the payload
rounded up to a bucket, so sizes leak no more than the stage.

Rejections, checked in this order: too short for the header or for P -> ``TruncatedEnvelope``;
unknown version, non-zero flags or trailing bytes -> ``TamperedEnvelope``; fingerprint of another
key -> ``WrongKeyEnvelope``; run tag of another run -> ``MisroutedEnvelope``; RSA unwrap or GCM
failure -> ``TamperedEnvelope`` (an unwrap failure continues with a random key, so the two are
indistinguishable and no padding oracle is exposed); authentic but round/user/stage not the
expected ones -> ``MisroutedEnvelope``; authentic and already accepted -> ``ReplayedEnvelope``.
A bit flipped in the fingerprint or run tag reads as wrong key / misrouted: those fields exist to
tell such envelopes apart, and all of them are rejected either way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import struct
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secure_agg.config import SecAggConfig
from secure_agg.errors import (
    ENVELOPE_ERRORS,
    EnvelopeError,
    MisroutedEnvelope,
    ReplayedEnvelope,
    SecAggConfigError,
    TamperedEnvelope,
    TruncatedEnvelope,
    WrongKeyEnvelope,
)
from secure_agg.protocol import normalise_run_id

log = logging.getLogger(__name__)

VERSION = 1
STAGE_CODES: dict[str, int] = {
    "advertise_keys": 1,
    "share_keys": 2,
    "masked_input": 3,
    "unmask": 4,
    "update": 16,  # plain (secure_agg off) model update
    "evaluate": 17,  # evaluation metrics
}
_FIXED = struct.Struct("<BBHQQ16s16sI")  # bytes [0, 56)
FIXED_HEADER_BYTES = _FIXED.size
NONCE_BYTES = 12
TAG_BYTES = 16
MIN_KEY_BITS = 2048
_OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def overhead_bytes(key_bits: int = 2048) -> int:
    """Envelope bytes besides the padded plaintext: 340 for RSA-2048."""
    return FIXED_HEADER_BYTES + key_bits // 8 + NONCE_BYTES + TAG_BYTES


def padded_size(payload_len: int, stage: str, fixed_sizes: Mapping[str, int], bucket: int) -> int:
    """Plaintext size P for a payload: the stage's fixed size, else 4 + len rounded up to bucket."""
    need = 4 + payload_len
    if stage in fixed_sizes:
        if need > fixed_sizes[stage]:
            raise SecAggConfigError(
                f"payload of {payload_len} bytes (+4 length) exceeds the fixed size "
                f"{fixed_sizes[stage]} for stage {stage!r}; raise fixed_message_bytes.{stage}"
            )
        return fixed_sizes[stage]
    return -(-need // bucket) * bucket


def key_fingerprint(public_key: rsa.RSAPublicKey) -> bytes:
    """First 16 bytes of SHA-256 over the key's SubjectPublicKeyInfo DER."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()[:16]


def run_tag(run_id: bytes) -> bytes:
    return hashlib.sha256(b"fedrec/envelope/v1/run" + run_id).digest()[:16]


def _stage_code(stage: str) -> int:
    try:
        return STAGE_CODES[stage]
    except KeyError:
        raise SecAggConfigError(
            f"unknown envelope stage {stage!r}; known: {list(STAGE_CODES)}"
        ) from None


def _aad(prefix: bytes, run_id: bytes) -> bytes:
    return prefix + struct.pack("<H", len(run_id)) + run_id


class EnvelopeSealer:
    """Seals uploads for one server key and run.

    Parameters
    ----------
    server_public_key : RSAPublicKey
        The server's RSA key (>= 2048 bits).
    run_id : str or bytes
        Run identifier, authenticated in every envelope.
    fixed_sizes : mapping of stage to int, optional
        Fixed padded plaintext size per stage (``SecAggConfig.fixed_message_bytes``).
    bucket : int, default 4096
        Padding bucket for stages without a fixed size.
    """

    def __init__(
        self,
        server_public_key: rsa.RSAPublicKey,
        run_id: str | bytes,
        *,
        fixed_sizes: Mapping[str, int] | None = None,
        bucket: int = 4096,
    ) -> None:
        if server_public_key.key_size < MIN_KEY_BITS:
            raise SecAggConfigError(
                f"server RSA key has {server_public_key.key_size} bits, at least {MIN_KEY_BITS} needed"
            )
        if bucket < 1:
            raise SecAggConfigError(f"bucket={bucket} must be >= 1")
        self.public_key = server_public_key
        self.run_id = normalise_run_id(run_id)
        self.fingerprint = key_fingerprint(server_public_key)
        self.fixed_sizes = dict(fixed_sizes or {})
        self.bucket = bucket

    @classmethod
    def from_config(
        cls, server_public_key: rsa.RSAPublicKey, run_id: str | bytes, config: SecAggConfig
    ) -> EnvelopeSealer:
        """Sealer padding as ``config.fixed_message_bytes`` / ``config.pad_bucket_bytes`` say."""
        return cls(
            server_public_key,
            run_id,
            fixed_sizes=config.fixed_message_bytes,
            bucket=config.pad_bucket_bytes,
        )

    def seal(self, payload: bytes, round_id: int, user_id: int, stage: str) -> bytes:
        """Encrypt ``payload`` for the server, bound to (run, round, user, stage)."""
        p = padded_size(len(payload), stage, self.fixed_sizes, self.bucket)
        plaintext = bytearray(p)
        plaintext[:4] = struct.pack("<I", len(payload))
        plaintext[4 : 4 + len(payload)] = payload
        key = AESGCM.generate_key(bit_length=256)
        wrapped = self.public_key.encrypt(key, _OAEP)
        nonce = os.urandom(NONCE_BYTES)
        prefix = (
            _FIXED.pack(
                VERSION,
                _stage_code(stage),
                0,
                round_id,
                user_id,
                run_tag(self.run_id),
                self.fingerprint,
                p,
            )
            + wrapped
            + nonce
        )
        ct = AESGCM(key).encrypt(nonce, bytes(plaintext), _aad(prefix, self.run_id))
        return prefix + ct

    def seal_many(
        self, payloads: Mapping[int, bytes], round_id: int, stage: str
    ) -> dict[int, bytes]:
        """Seal one payload per user of a cohort: ``{user: envelope}``."""
        return {u: self.seal(p, round_id, u, stage) for u, p in payloads.items()}


def seal_many(
    sealer: EnvelopeSealer, payloads: Mapping[int, bytes], round_id: int, stage: str
) -> dict[int, bytes]:
    return sealer.seal_many(payloads, round_id, stage)


class RejectionCounter:
    """Counts rejected envelopes per reason; ``as_dict()`` goes into summary.json."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {cls.reason: 0 for cls in ENVELOPE_ERRORS}

    def record(self, error: EnvelopeError | str) -> None:
        reason = error if isinstance(error, str) else error.reason
        self.counts[reason] = self.counts.get(reason, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return {**self.counts, "total": self.total}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    def merge(self, other: RejectionCounter) -> RejectionCounter:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        return self


class EnvelopeOpener:
    """Opens envelopes for one run with the server's private key, remembering what it accepted.

    Parameters
    ----------
    private_key : RSAPrivateKey
        The server's key.
    run_id : str or bytes
        The only run this opener accepts.
    counter : RejectionCounter, optional
        Every rejection is recorded here (one is created if omitted).
    """

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey,
        run_id: str | bytes,
        *,
        counter: RejectionCounter | None = None,
    ) -> None:
        self._key = private_key
        self.run_id = normalise_run_id(run_id)
        self._run_tag = run_tag(self.run_id)
        self.fingerprint = key_fingerprint(private_key.public_key())
        self._wrapped_len = private_key.key_size // 8
        self._prefix_len = FIXED_HEADER_BYTES + self._wrapped_len + NONCE_BYTES
        self.counter = counter if counter is not None else RejectionCounter()
        self._seen: set[tuple[int, int, int]] = set()

    def open(
        self, blob: bytes, expected_round: int, expected_user: int, expected_stage: str
    ) -> bytes:
        """Authenticate and decrypt; return the payload or raise a specific ``EnvelopeError``."""
        try:
            return self._open(bytes(blob), expected_round, expected_user, expected_stage)
        except EnvelopeError as exc:
            self.counter.record(exc)
            log.info("rejected envelope (%s): %s", exc.reason, exc)
            raise

    def _open(self, blob: bytes, exp_round: int, exp_user: int, exp_stage: str) -> bytes:
        exp_code = _stage_code(exp_stage)
        if len(blob) < self._prefix_len:
            raise TruncatedEnvelope(
                f"envelope is {len(blob)} bytes, shorter than its {self._prefix_len}-byte header"
            )
        version, code, flags, rnd, user, rtag, fp, p = _FIXED.unpack_from(blob)
        if version != VERSION:
            raise TamperedEnvelope(f"envelope version {version}, this opener reads {VERSION}")
        if flags != 0:
            raise TamperedEnvelope(f"envelope flags 0x{flags:04x} must be 0")
        expected_len = self._prefix_len + p + TAG_BYTES
        if len(blob) < expected_len:
            raise TruncatedEnvelope(
                f"envelope is {len(blob)} bytes, its header announces {expected_len}"
            )
        if len(blob) > expected_len:
            raise TamperedEnvelope(
                f"envelope has {len(blob) - expected_len} bytes beyond its announced {expected_len}"
            )
        if fp != self.fingerprint:
            raise WrongKeyEnvelope(
                f"envelope key fingerprint {fp.hex()} is not this server's {self.fingerprint.hex()}"
            )
        if rtag != self._run_tag:
            raise MisroutedEnvelope(
                f"envelope is for run tag {rtag.hex()}, this run's is {self._run_tag.hex()}"
            )
        prefix = blob[: self._prefix_len]
        wrapped = blob[FIXED_HEADER_BYTES : FIXED_HEADER_BYTES + self._wrapped_len]
        nonce = blob[self._prefix_len - NONCE_BYTES : self._prefix_len]
        try:
            key = self._key.decrypt(wrapped, _OAEP)
            if len(key) != 32:
                raise ValueError("wrong key length")
        except ValueError:
            key = os.urandom(32)  # implicit rejection: fail at the tag, same as any tampering
        try:
            plaintext = AESGCM(key).decrypt(
                nonce, blob[self._prefix_len :], _aad(prefix, self.run_id)
            )
        except InvalidTag:
            raise TamperedEnvelope(
                f"envelope from user {user} round {rnd} failed authentication"
            ) from None
        if (rnd, user, code) != (exp_round, exp_user, exp_code):
            raise MisroutedEnvelope(
                f"envelope is for round {rnd} user {user} stage code {code}; expected round "
                f"{exp_round} user {exp_user} stage {exp_stage!r} (code {exp_code})"
            )
        slot = (rnd, user, code)
        if slot in self._seen:
            raise ReplayedEnvelope(
                f"envelope for round {rnd} user {user} stage {exp_stage!r} was already accepted"
            )
        (n,) = struct.unpack_from("<I", plaintext)
        if n > len(plaintext) - 4:
            raise TamperedEnvelope(f"payload length {n} exceeds the {len(plaintext) - 4}-byte body")
        self._seen.add(slot)
        return plaintext[4 : 4 + n]

    def open_many(
        self, blobs: Mapping[int, bytes], expected_round: int, expected_stage: str
    ) -> tuple[dict[int, bytes], dict[int, EnvelopeError]]:
        """Open one envelope per user; returns (accepted payloads, rejections) by user id."""
        ok: dict[int, bytes] = {}
        bad: dict[int, EnvelopeError] = {}
        for u, blob in blobs.items():
            try:
                ok[u] = self.open(blob, expected_round, u, expected_stage)
            except EnvelopeError as exc:
                bad[u] = exc
        return ok, bad

    def forget_before(self, round_id: int) -> None:
        """Drop replay records of rounds < ``round_id`` (their envelopes stay misrouted anyway)."""
        self._seen = {s for s in self._seen if s[0] >= round_id}


# ---- key files -------------------------------------------------------------------------------
def public_key_path(private_path: str | os.PathLike) -> Path:
    p = Path(private_path)
    return p.with_name(p.stem + ".pub.pem")


def generate_server_keypair(
    path: str | os.PathLike, *, key_size: int = 2048, overwrite: bool = False
) -> rsa.RSAPublicKey:
    """Create an RSA key pair: private PEM at ``path`` (mode 0600), public PEM beside it.

    The private file is created with ``os.open(..., 0o600)`` (and fchmod'ed to 0600, in case it
    pre-existed), never through a symlink; it is refused if it exists unless ``overwrite``.
    """
    if key_size < MIN_KEY_BITS:
        raise SecAggConfigError(f"key_size={key_size} must be >= {MIN_KEY_BITS}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_TRUNC if overwrite else os.O_EXCL
    fd = os.open(os.fspath(path), flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    pub = key.public_key()
    public_key_path(path).write_bytes(
        pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pub


def load_private_key(path: str | os.PathLike) -> rsa.RSAPrivateKey:
    """Load the server's private key, refusing a file readable by group or others."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise SecAggConfigError(
            f"private key {path} has mode {mode:04o}, readable beyond its owner; chmod 600 it"
        )
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecAggConfigError(f"{path} does not hold an RSA private key")
    return key


def load_public_key(path: str | os.PathLike) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, rsa.RSAPublicKey):
        raise SecAggConfigError(f"{path} does not hold an RSA public key")
    return key
