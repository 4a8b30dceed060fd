"""Upload envelope: happy path, one test per rejection reason, key file permissions, wire sizes."""

from __future__ import annotations

import json
import os
import stat
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from secure_agg import (
    EnvelopeOpener,
    EnvelopeSealer,
    MisroutedEnvelope,
    RejectionCounter,
    ReplayedEnvelope,
    SecAggConfigError,
    TamperedEnvelope,
    TruncatedEnvelope,
    WrongKeyEnvelope,
    generate_server_keypair,
    load_private_key,
    load_public_key,
    seal_many,
)
from secure_agg.envelope import FIXED_HEADER_BYTES, overhead_bytes
from secure_agg.messages import (
    AdvertiseKeys,
    MaskedInput,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    decode_advertise,
    decode_inbox,
    decode_masked,
    decode_roster,
    decode_share_keys,
    decode_unmask_request,
    decode_unmask_response,
    encode_advertise,
    encode_inbox,
    encode_masked,
    encode_roster,
    encode_share_keys,
    encode_unmask_request,
    encode_unmask_response,
)

RUN = "run-2026-11-26"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def sealer(key) -> EnvelopeSealer:
    return EnvelopeSealer(key.public_key(), RUN, bucket=256)


@pytest.fixture
def opener(key) -> EnvelopeOpener:
    return EnvelopeOpener(key, RUN)


PAYLOAD = b"masked vector bytes " * 10
W = 256  # wrapped key bytes, RSA-2048
PREFIX = FIXED_HEADER_BYTES + W + 12


def _blob(sealer, payload=PAYLOAD, rnd=5, user=42, stage="masked_input") -> bytes:
    return sealer.seal(payload, rnd, user, stage)


def test_happy_path_and_layout(sealer, opener, key):
    blob = _blob(sealer)
    assert blob[0] == 1
    assert len(blob) == overhead_bytes() + 256  # 4 + 200 bytes padded to the 256-byte bucket
    assert overhead_bytes() == 340
    assert opener.open(blob, 5, 42, "masked_input") == PAYLOAD
    assert opener.counter.total == 0


def test_fixed_size_hides_payload_length(key):
    s = EnvelopeSealer(key.public_key(), RUN, fixed_sizes={"unmask": 1000})
    sizes = {len(s.seal(b"x" * n, 1, 1, "unmask")) for n in (0, 10, 996)}
    assert sizes == {1340}
    with pytest.raises(SecAggConfigError, match="fixed size 1000"):
        s.seal(b"x" * 997, 1, 1, "unmask")
    o = EnvelopeOpener(key, RUN)
    assert o.open(s.seal(b"abc", 1, 2, "unmask"), 1, 2, "unmask") == b"abc"


@pytest.mark.parametrize(
    ("region", "offset"),
    [
        ("ciphertext", PREFIX + 3),
        ("tag", -1),
        ("wrapped key", FIXED_HEADER_BYTES + 17),
        ("nonce", PREFIX - 2),
        ("header version", 0),
        ("header stage", 1),
        ("header flags", 2),
        ("header round", 4),
        ("header user", 12),
        ("header length shrunk", 52),
    ],
)
def test_tampered(sealer, opener, region, offset):
    blob = bytearray(_blob(sealer))
    if region == "header length shrunk":
        p = struct.unpack_from("<I", blob, 52)[0]
        struct.pack_into("<I", blob, 52, p - 16)
    else:
        blob[offset] ^= 0x01
    with pytest.raises(TamperedEnvelope):
        opener.open(bytes(blob), 5, 42, "masked_input")
    assert opener.counter.counts["tampered"] == 1


def test_tampered_wrap_and_gcm_failures_are_indistinguishable(sealer, opener):
    a = bytearray(_blob(sealer))
    a[FIXED_HEADER_BYTES + 5] ^= 0x80
    b = bytearray(_blob(sealer))
    b[-3] ^= 0x80
    msgs = []
    for blob in (a, b):
        with pytest.raises(TamperedEnvelope) as exc:
            opener.open(bytes(blob), 5, 42, "masked_input")
        msgs.append(str(exc.value))
    assert msgs[0] == msgs[1]


def test_extra_trailing_bytes_are_tampering(sealer, opener):
    with pytest.raises(TamperedEnvelope, match="beyond"):
        opener.open(_blob(sealer) + b"\x00", 5, 42, "masked_input")


@pytest.mark.parametrize(
    "cut",
    [
        0,
        1,
        FIXED_HEADER_BYTES - 1,
        FIXED_HEADER_BYTES,
        FIXED_HEADER_BYTES + 100,
        PREFIX - 1,
        PREFIX,
        PREFIX + 100,
        -16,
        -1,
    ],
    ids=[
        "empty",
        "1",
        "in-fixed",
        "fixed",
        "in-wrapped",
        "in-nonce",
        "no-body",
        "in-body",
        "no-tag",
        "part-tag",
    ],
)
def test_truncated_every_prefix_class(sealer, opener, cut):
    blob = _blob(sealer)
    prefix = blob[:cut] if cut >= 0 else blob[: len(blob) + cut]
    with pytest.raises(TruncatedEnvelope):
        opener.open(prefix, 5, 42, "masked_input")


def test_header_length_grown_reads_as_truncated(sealer, opener):
    blob = bytearray(_blob(sealer))
    struct.pack_into("<I", blob, 52, struct.unpack_from("<I", blob, 52)[0] + 1)
    with pytest.raises(TruncatedEnvelope):
        opener.open(bytes(blob), 5, 42, "masked_input")


def test_replayed(sealer, opener):
    blob = _blob(sealer)
    opener.open(blob, 5, 42, "masked_input")
    with pytest.raises(ReplayedEnvelope):
        opener.open(blob, 5, 42, "masked_input")
    # a fresh envelope for the same slot is a replay too (one upload per user, stage and round)
    with pytest.raises(ReplayedEnvelope):
        opener.open(_blob(sealer), 5, 42, "masked_input")
    assert opener.open(_blob(sealer, rnd=6), 6, 42, "masked_input") == PAYLOAD
    opener.forget_before(6)
    assert opener.open(blob, 5, 42, "masked_input") == PAYLOAD  # caller keeps rounds monotone


def test_tampered_envelope_does_not_burn_the_replay_slot(sealer, opener):
    bad = bytearray(_blob(sealer))
    bad[-1] ^= 1
    with pytest.raises(TamperedEnvelope):
        opener.open(bytes(bad), 5, 42, "masked_input")
    assert opener.open(_blob(sealer), 5, 42, "masked_input") == PAYLOAD


@pytest.mark.parametrize(
    ("expect", "field"),
    [
        ((6, 42, "masked_input"), "round"),
        ((5, 43, "masked_input"), "user"),
        ((5, 42, "unmask"), "stage"),
    ],
)
def test_misrouted_round_user_stage(sealer, opener, expect, field):
    with pytest.raises(MisroutedEnvelope, match=field):
        opener.open(_blob(sealer), *expect)
    # a misrouted envelope does not occupy the slot it was really meant for
    assert opener.open(_blob(sealer), 5, 42, "masked_input") == PAYLOAD


def test_misrouted_run(key, opener):
    other_run = EnvelopeSealer(key.public_key(), "another-run")
    with pytest.raises(MisroutedEnvelope, match="run"):
        opener.open(_blob(other_run), 5, 42, "masked_input")


def test_wrong_key(other_key, opener):
    s = EnvelopeSealer(other_key.public_key(), RUN)
    with pytest.raises(WrongKeyEnvelope, match="fingerprint"):
        opener.open(_blob(s), 5, 42, "masked_input")


def test_rejection_counter_json(sealer, opener, other_key):
    good = _blob(sealer)
    blobs = {
        42: good,
        43: good,  # user mismatch -> misrouted
        44: _blob(EnvelopeSealer(other_key.public_key(), RUN), user=44),
        45: _blob(sealer, user=45)[:100],
    }
    ok, bad = opener.open_many(blobs, 5, "masked_input")
    assert set(ok) == {42}
    assert {u: e.reason for u, e in bad.items()} == {
        43: "misrouted",
        44: "wrong_key",
        45: "truncated",
    }
    d = json.loads(opener.counter.to_json())
    assert d == {
        "tampered": 0,
        "truncated": 1,
        "replayed": 0,
        "misrouted": 1,
        "wrong_key": 1,
        "total": 3,
    }
    merged = RejectionCounter().merge(opener.counter)
    merged.record("replayed")
    assert merged.total == 4


def test_seal_many_open_many_cohort(sealer, opener):
    payloads = {u: f"user {u}".encode() for u in range(10)}
    blobs = seal_many(sealer, payloads, 3, "share_keys")
    ok, bad = opener.open_many(blobs, 3, "share_keys")
    assert ok == payloads and not bad


def test_generate_keypair_mode_0600_and_roundtrip(tmp_path):
    path = tmp_path / "server_key.pem"
    old = os.umask(0)  # even with a permissive umask the file must come out 0600
    try:
        pub = generate_server_keypair(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    priv = load_private_key(path)
    assert load_public_key(tmp_path / "server_key.pub.pem").public_numbers() == pub.public_numbers()
    s = EnvelopeSealer(pub, RUN)
    assert EnvelopeOpener(priv, RUN).open(s.seal(b"hi", 1, 1, "update"), 1, 1, "update") == b"hi"
    with pytest.raises(FileExistsError):
        generate_server_keypair(path)
    path.chmod(0o644)
    with pytest.raises(SecAggConfigError, match="0644"):
        load_private_key(path)
    generate_server_keypair(path, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keypair_refuses_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "key.pem"
    link.symlink_to(target)
    with pytest.raises(OSError):
        generate_server_keypair(link, overwrite=True)


def test_small_rsa_keys_refused():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(SecAggConfigError, match="1024"):
        EnvelopeSealer(small.public_key(), RUN)


def test_protocol_messages_roundtrip_through_envelopes(sealer, opener):
    adv = AdvertiseKeys(7, b"c" * 32, b"s" * 32)
    sk = ShareKeys(7, b"k" * 32, {8: b"x" * 149, 9: b"y" * 149})
    mi = MaskedInput((7, 8), np.arange(5, dtype=np.uint32))
    ur = UnmaskResponse(7, {8: b"b" * 52}, {9: b"s" * 52})
    assert len(encode_advertise(adv)) == 73
    assert len(encode_share_keys(sk)) == 45 + 2 * 157
    assert len(encode_masked(mi)) == 9 + 8 * 2 + 4 * 5
    assert len(encode_unmask_response(ur)) == 17 + 2 * 60
    for stage, blob, dec, want in [
        ("advertise_keys", encode_advertise(adv), decode_advertise, adv),
        ("share_keys", encode_share_keys(sk), decode_share_keys, sk),
        ("unmask", encode_unmask_response(ur), decode_unmask_response, ur),
    ]:
        assert dec(opener.open(sealer.seal(blob, 1, 7, stage), 1, 7, stage)) == want
    got = decode_masked(
        opener.open(sealer.seal(encode_masked(mi), 1, 7, "masked_input"), 1, 7, "masked_input")
    )
    assert got.user_ids == mi.user_ids and np.array_equal(got.vector, mi.vector)
    req = UnmaskRequest((1, 2, 3), (4,))
    assert decode_unmask_request(encode_unmask_request(req)) == req
    assert decode_inbox(encode_inbox(5, {8: b"z" * 149})) == (5, {8: b"z" * 149})


def test_roster_roundtrip():
    from secure_agg import ClientCohort, SecAggConfig, SecAggServer

    cfg = SecAggConfig(neighbours=2)
    srv = SecAggServer(cfg, 3, [1, 2, 3, 4, 5], dim=4, run_id=RUN)
    roster = srv.advertise(ClientCohort(cfg, 3, [1, 2, 3, 4, 5], run_id=RUN).advertise_keys())
    back = decode_roster(encode_roster(roster))
    assert back == roster
    assert back.neighbours == roster.neighbours


def test_sealer_from_config_fixes_masked_input_size(key):
    from secure_agg import SecAggConfig
    from secure_agg.messages import masked_input_bytes

    dim = 1001
    size = 4 + masked_input_bytes(dim, n_users=8)
    cfg = SecAggConfig(fixed_message_bytes={"masked_input": size}).validate()
    s = EnvelopeSealer.from_config(key.public_key(), RUN, cfg)
    lens = set()
    for n in (1, 3, 8):
        m = MaskedInput(tuple(range(n)), np.zeros(dim, np.uint32))
        payload = encode_masked(m)
        assert len(payload) == masked_input_bytes(dim, n)
        lens.add(len(s.seal(payload, 1, 0, "masked_input")))
    assert lens == {overhead_bytes() + size}
