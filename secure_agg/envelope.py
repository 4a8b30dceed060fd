"""Upload envelope: one RSA-OAEP-wrapped AES-256-GCM key per node message, one section per user.

A node speaks for several users (a device for one, a simulation cohort for hundreds) and seals all
its users' uploads of one protocol stage into one envelope: a fresh 256-bit key K, wrapped once
with RSA-2048-OAEP(SHA-256) to the server's key, and one AES-256-GCM section per user. The server
then does one RSA unwrap per node message, not one per user.

Wire format, version 2 (all integers little-endian; W = RSA modulus bytes, 256 for RSA-2048)::

    offset     size  field
    0          1     version (0x02)
    1          1     stage code (STAGE_CODES)
    2          2     flags, must be 0
    4          8     round id, u64
    12         8     node id, u64
    20         16    run tag: SHA-256(b"fedrec/envelope/v2/run" | run id)[:16]
    36         16    server key fingerprint: SHA-256(SubjectPublicKeyInfo DER)[:16]
    52         4     m, number of sections, u32, >= 1
    56         4     P, padded plaintext size of every section, u32, >= 4
    60         W     RSA-OAEP(SHA-256, MGF1-SHA256) wrapping of a fresh random 256-bit key K
    60+W       m S   section i = 0 .. m-1, S = 8 + P + 16 bytes: user id u64 | AES-256-GCM
                     ciphertext under K of (payload length u32 | payload | zero padding) | tag 16

    total = 60 + W + m (P + 24) bytes (316 + m (P + 24) with RSA-2048)

Section i uses the nonce u32 0 | u64 i (K is fresh per envelope, so no key and nonce pair
repeats, and a section moved to another position fails authentication) and the associated data
bytes [0, 60+W) | u16 len(run id) | run id | the section's user id: run, round, stage, node, user,
the section count and size and the wrapped key are authenticated in every section. All sections
of an envelope have the same size P (the stage's fixed size, else the largest payload rounded up
to the padding bucket), so a section's size does not tell which user sent what.

Rejections of the whole envelope, counted once, checked in this order: too short for its header
or for its m sections -> ``TruncatedEnvelope``; unknown version, non-zero flags, m = 0, P < 4 or
trailing bytes -> ``TamperedEnvelope``; fingerprint of another key -> ``WrongKeyEnvelope``; run
tag of another run -> ``MisroutedEnvelope``; no section authenticates (RSA unwrap failure or every
GCM tag wrong) -> ``TamperedEnvelope`` (an unwrap failure continues with a random key, so the two
are indistinguishable and no padding oracle is exposed); authentic but for another round, node
or stage -> ``MisroutedEnvelope``. Rejections of one section, counted per section while the
envelope's other sections are accepted: its tag fails -> ``TamperedEnvelope``; its user is not
one the node speaks for -> ``MisroutedEnvelope``; its (round, user, stage) was already accepted,
earlier in the same envelope or in another one -> ``ReplayedEnvelope``. A bit flipped in the
fingerprint or run tag reads as wrong key / misrouted: those fields exist to tell such envelopes
apart, and all of them are rejected either way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

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
    SecAggError,
    TamperedEnvelope,
    TruncatedEnvelope,
    WrongKeyEnvelope,
)
from secure_agg.keys import MIN_KEY_BITS
from secure_agg.protocol import normalise_run_id

log = logging.getLogger(__name__)

VERSION = 2
STAGE_CODES: dict[str, int] = {
    "advertise_keys": 1,
    "share_keys": 2,
    "masked_input": 3,
    "unmask": 4,
    "update": 16,  # plain (secure_agg off) model update
    "evaluate": 17,  # evaluation metrics
}
_FIXED = struct.Struct("<BBHQQ16s16sII")  # bytes [0, 60)
FIXED_HEADER_BYTES = _FIXED.size
_USER = struct.Struct("<Q")
_LEN = struct.Struct("<I")
TAG_BYTES = 16
SECTION_OVERHEAD = _USER.size + TAG_BYTES  # user id + GCM tag, besides the padded plaintext
_OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def overhead_bytes(sections: int = 1, key_bits: int = 2048) -> int:
    """Envelope bytes besides the padded plaintexts: 316 + 24 per section with RSA-2048."""
    return FIXED_HEADER_BYTES + key_bits // 8 + sections * SECTION_OVERHEAD


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
    """16-byte tag of a run id carried in the clear, so envelopes of another run are told apart."""
    return hashlib.sha256(b"fedrec/envelope/v2/run" + run_id).digest()[:16]


def _stage_code(stage: str) -> int:
    try:
        return STAGE_CODES[stage]
    except KeyError:
        raise SecAggConfigError(
            f"unknown envelope stage {stage!r}; known: {list(STAGE_CODES)}"
        ) from None


def _nonce(i: int) -> bytes:
    return struct.pack("<IQ", 0, i)


def _aad_base(header: bytes, run_id: bytes) -> bytes:
    return header + struct.pack("<H", len(run_id)) + run_id


class EnvelopeSealer:
    """Seals a node's uploads for one server key and run.

    Parameters
    ----------
    server_public_key : RSAPublicKey
        The server's RSA key (>= 2048 bits).
    run_id : str or bytes
        Run identifier, authenticated in every section.
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
        self._run_tag = run_tag(self.run_id)
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

    def seal(self, payloads: Mapping[int, bytes], round_id: int, node_id: int, stage: str) -> bytes:
        """Encrypt one payload per user (``{user: bytes}``, at least one) in one envelope.

        Sections follow ascending user id; each is bound to (run, round, stage, node, user).
        """
        if not payloads:
            raise SecAggError("an envelope needs the payload of at least one user")
        users = sorted(int(u) for u in payloads)
        p = max(padded_size(len(payloads[u]), stage, self.fixed_sizes, self.bucket) for u in users)
        key = AESGCM.generate_key(bit_length=256)
        header = _FIXED.pack(
            VERSION, _stage_code(stage), 0, round_id, node_id, self._run_tag, self.fingerprint,
            len(users), p,
        ) + self.public_key.encrypt(key, _OAEP)  # fmt: skip
        aad = _aad_base(header, self.run_id)
        aead = AESGCM(key)
        parts = [header]
        for i, u in enumerate(users):
            payload = payloads[u]
            uid = _USER.pack(u)
            plaintext = b"".join((_LEN.pack(len(payload)), payload, bytes(p - 4 - len(payload))))
            parts += (uid, aead.encrypt(_nonce(i), plaintext, aad + uid))
        return b"".join(parts)


@dataclass
class OpenedEnvelope:
    """What ``EnvelopeOpener.open`` accepted from one envelope, and what it refused."""

    payloads: dict[int, bytes] = field(default_factory=dict)  # user -> payload, accepted
    rejected: list[tuple[int, EnvelopeError]] = field(default_factory=list)  # (claimed user, why)


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
    """Opens node envelopes for one run with the server's private key, remembering what it accepted.

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
        self._header_len = FIXED_HEADER_BYTES + self._wrapped_len
        self.counter = counter if counter is not None else RejectionCounter()
        self._seen: set[tuple[int, int, int]] = set()

    def open(
        self,
        blob: bytes,
        expected_round: int,
        expected_node: int,
        expected_stage: str,
        users: Collection[int],
    ) -> OpenedEnvelope:
        """Authenticate and decrypt a node's envelope.

        Parameters
        ----------
        blob : bytes
            The envelope.
        expected_round, expected_node, expected_stage
            Where the envelope must come from: the round in progress, the node the request was
            sent to, the stage being collected.
        users : collection of int
            The users this node speaks for in this stage; a section for any other is misrouted.

        Returns
        -------
        OpenedEnvelope
            Accepted payloads by user, and the refused sections (each already counted).

        Raises
        ------
        EnvelopeError
            The whole envelope is refused (counted once); see the module docstring.
        """
        try:
            res = self._open(bytes(blob), expected_round, expected_node, expected_stage, users)
        except EnvelopeError as exc:
            self.counter.record(exc)
            log.info("rejected envelope (%s): %s", exc.reason, exc)
            raise
        for _, exc in res.rejected:
            self.counter.record(exc)
            log.info("rejected envelope section (%s): %s", exc.reason, exc)
        return res

    def _check_header(self, blob: bytes) -> tuple[int, int, int, int, int]:
        """Structural checks before any decryption; returns (code, round, node, m, P)."""
        if len(blob) < self._header_len:
            raise TruncatedEnvelope(
                f"envelope is {len(blob)} bytes, shorter than its {self._header_len}-byte header"
            )
        version, code, flags, rnd, node, rtag, fp, m, p = _FIXED.unpack_from(blob)
        if version != VERSION:
            raise TamperedEnvelope(f"envelope version {version}, this opener reads {VERSION}")
        if flags != 0:
            raise TamperedEnvelope(f"envelope flags 0x{flags:04x} must be 0")
        if m == 0 or p < _LEN.size:
            raise TamperedEnvelope(f"envelope announces {m} sections of {p} bytes")
        expected_len = self._header_len + m * (p + SECTION_OVERHEAD)
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
        return code, rnd, node, m, p

    def _open(self, blob: bytes, exp_round: int, exp_node: int, exp_stage: str,
              users: Collection[int]) -> OpenedEnvelope:  # fmt: skip
        exp_code = _stage_code(exp_stage)
        code, rnd, node, m, p = self._check_header(blob)
        wrapped = blob[FIXED_HEADER_BYTES : self._header_len]
        try:
            key = self._key.decrypt(wrapped, _OAEP)
            if len(key) != 32:
                raise ValueError("wrong key length")
        except ValueError:
            key = os.urandom(32)  # implicit rejection: fail at the tags, same as any tampering
        aead = AESGCM(key)
        aad = _aad_base(blob[: self._header_len], self.run_id)
        view = memoryview(blob)
        sections: list[tuple[int, bytes | None]] = []
        off, size = self._header_len, _USER.size + p + TAG_BYTES
        for i in range(m):
            uid = blob[off : off + _USER.size]
            try:
                plaintext = aead.decrypt(_nonce(i), view[off + _USER.size : off + size], aad + uid)
            except InvalidTag:
                plaintext = None
            sections.append((_USER.unpack(uid)[0], plaintext))
            off += size
        if all(pt is None for _, pt in sections):
            raise TamperedEnvelope(f"envelope from node {node} round {rnd} failed authentication")
        if (rnd, node, code) != (exp_round, exp_node, exp_code):
            raise MisroutedEnvelope(
                f"envelope is for round {rnd} node {node} stage code {code}; expected round "
                f"{exp_round} node {exp_node} stage {exp_stage!r} (code {exp_code})"
            )
        out = OpenedEnvelope()
        allowed = users if isinstance(users, (set, frozenset, dict)) else set(users)
        for i, (u, pt) in enumerate(sections):
            where = f"section {i} (user {u}) of node {node}'s round {rnd} {exp_stage} envelope"
            if pt is None:
                out.rejected.append((u, TamperedEnvelope(f"{where} failed authentication")))
            elif u not in allowed:
                out.rejected.append(
                    (u, MisroutedEnvelope(f"{where}: the node does not speak for user {u}"))
                )
            elif u in out.payloads or (rnd, u, code) in self._seen:
                out.rejected.append((u, ReplayedEnvelope(f"{where} was already accepted")))
            elif (n := _LEN.unpack_from(pt)[0]) > len(pt) - _LEN.size:
                out.rejected.append(
                    (u, TamperedEnvelope(f"{where}: payload length {n} exceeds its body"))
                )
            else:
                out.payloads[u] = pt[_LEN.size : _LEN.size + n]
        self._seen.update((rnd, u, code) for u in out.payloads)
        return out

    def forget_before(self, round_id: int) -> None:
        """Drop replay records of rounds < ``round_id`` (their envelopes stay misrouted anyway)."""
        self._seen = {s for s in self._seen if s[0] >= round_id}
