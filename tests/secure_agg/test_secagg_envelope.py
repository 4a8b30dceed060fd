"""Node upload envelope: layout, one test per rejection reason (whole envelope and single section),
key file permissions, wire sizes."""

from __future__ import annotations

import json
import os
import stat
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secure_agg import (
    EnvelopeOpener,
    EnvelopeSealer,
    MisroutedEnvelope,
    RejectionCounter,
    ReplayedEnvelope,
    SecAggConfigError,
    SecAggError,
    TamperedEnvelope,
    TruncatedEnvelope,
    WrongKeyEnvelope,
    generate_server_keypair,
    load_private_key,
    load_public_key,
)
from secure_agg import envelope as E
from secure_agg.envelope import FIXED_HEADER_BYTES, SECTION_OVERHEAD, overhead_bytes
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
NODE = 1001
USERS = (42, 43, 44)
W = 256  # wrapped key bytes, RSA-2048
HEADER = FIXED_HEADER_BYTES + W  # sections start here


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


def _payloads(users=USERS) -> dict[int, bytes]:
    return {u: f"payload of user {u} ".encode() * (1 + u % 3) for u in users}


def _blob(sealer, users=USERS, rnd=5, node=NODE, stage="masked_input") -> bytes:
    return sealer.seal(_payloads(users), rnd, node, stage)


def _open(opener, blob, rnd=5, node=NODE, stage="masked_input", users=USERS):
    return opener.open(blob, rnd, node, stage, set(users))


def _section(blob: bytes, i: int) -> int:
    """Offset of section i (every section of the fixture envelopes has P = 256)."""
    p = struct.unpack_from("<I", blob, 56)[0]
    return HEADER + i * (p + SECTION_OVERHEAD)


def test_happy_path_and_layout(sealer, opener):
    blob = _blob(sealer)
    assert blob[0] == 2 and overhead_bytes() == 340 and overhead_bytes(3) == 316 + 3 * 24
    assert struct.unpack_from("<QQ", blob, 4) == (5, NODE)
    assert struct.unpack_from("<II", blob, 52) == (3, 256)  # every payload fits the 256-byte bucket
    assert len(blob) == overhead_bytes(3) + 3 * 256
    got = _open(opener, blob)
    assert got.payloads == _payloads() and got.rejected == []
    assert opener.counter.total == 0


def test_sections_have_one_size_whatever_the_payloads(sealer, opener):
    payloads = {1: b"", 2: b"x" * 300, 3: b"y" * 10}
    blob = sealer.seal(payloads, 1, NODE, "unmask")
    p = struct.unpack_from("<I", blob, 56)[0]
    assert p == 512 and len(blob) == overhead_bytes(3) + 3 * p  # 4 + 300 rounded up to the bucket
    assert _open(opener, blob, 1, NODE, "unmask", payloads).payloads == payloads


def test_fixed_size_hides_payload_length(key):
    s = EnvelopeSealer(key.public_key(), RUN, fixed_sizes={"unmask": 1000})
    sizes = {len(s.seal({1: b"x" * n}, 1, NODE, "unmask")) for n in (0, 10, 996)}
    assert sizes == {overhead_bytes() + 1000}
    with pytest.raises(SecAggConfigError, match="fixed size 1000"):
        s.seal({1: b"x" * 997}, 1, NODE, "unmask")
    o = EnvelopeOpener(key, RUN)
    assert o.open(s.seal({2: b"abc"}, 1, NODE, "unmask"), 1, NODE, "unmask", {2}).payloads == {2: b"abc"}


def test_an_envelope_needs_a_payload(sealer):
    with pytest.raises(SecAggError, match="at least one user"):
        sealer.seal({}, 1, NODE, "unmask")


@pytest.mark.parametrize(
    ("region", "offset"),
    [
        ("header version", 0),
        ("header stage", 1),
        ("header flags", 2),
        ("header round", 4),
        ("header node", 12),
        ("header section size", 56),
        ("wrapped key", FIXED_HEADER_BYTES + 17),
        ("ciphertext", HEADER + 8 + 3),
        ("tag", -1),
    ],
)
def test_tampered_envelope(sealer, opener, region, offset):
    blob = bytearray(_blob(sealer, users=(42,)))
    if region == "header section size":  # shrink P and cut the blob to match: lengths agree, tags fail
        p = struct.unpack_from("<I", blob, 56)[0]
        struct.pack_into("<I", blob, 56, p - 16)
        del blob[-16:]
    else:
        blob[offset] ^= 0x01
    with pytest.raises(TamperedEnvelope):
        _open(opener, bytes(blob), users=(42,))
    assert opener.counter.as_dict() == {**opener.counter.as_dict(), "tampered": 1, "total": 1}


@pytest.mark.parametrize("part", ["user id", "ciphertext", "tag"])
def test_one_tampered_section_is_refused_and_the_others_accepted(sealer, opener, part):
    blob = bytearray(_blob(sealer))
    off = _section(blob, 1)
    where = {"user id": off, "ciphertext": off + 8 + 100, "tag": _section(blob, 2) - 1}[part]
    blob[where] ^= 0x04
    got = _open(opener, bytes(blob))
    assert got.payloads == {u: p for u, p in _payloads().items() if u != 43}
    assert [(u ^ (4 if part == "user id" else 0), e.reason) for u, e in got.rejected] == [(43, "tampered")]
    assert opener.counter.counts["tampered"] == 1 and opener.counter.total == 1


def test_swapped_sections_fail_authentication(sealer, opener):
    blob = bytearray(_blob(sealer))
    a, b, c = (_section(blob, i) for i in range(3))
    blob[a:c] = blob[b:c] + blob[a:b]  # sections 0 and 1 trade places: their nonces no longer match
    got = _open(opener, bytes(blob))
    assert set(got.payloads) == {44} and sorted(u for u, _ in got.rejected) == [42, 43]


def test_sections_spliced_from_another_envelope_fail(sealer, opener):
    one, two = bytearray(_blob(sealer)), _blob(sealer)  # same users, different keys
    one[_section(one, 2) :] = two[_section(two, 2) :]
    got = _open(opener, bytes(one))
    assert set(got.payloads) == {42, 43} and [(u, e.reason) for u, e in got.rejected] == [(44, "tampered")]


def test_tampered_wrap_and_gcm_failures_are_indistinguishable(sealer, opener):
    a = bytearray(_blob(sealer))
    a[FIXED_HEADER_BYTES + 5] ^= 0x80
    b = bytearray(_blob(sealer))
    for i in range(3):  # every section's tag
        b[_section(b, i + 1) - 3] ^= 0x80
    msgs = []
    for blob in (a, b):
        with pytest.raises(TamperedEnvelope) as exc:
            _open(opener, bytes(blob))
        msgs.append(str(exc.value))
    assert msgs[0] == msgs[1]


def test_extra_trailing_bytes_are_tampering(sealer, opener):
    with pytest.raises(TamperedEnvelope, match="beyond"):
        _open(opener, _blob(sealer) + b"\x00")


def test_section_count_shrunk_is_tampering(sealer, opener):
    blob = bytearray(_blob(sealer))
    struct.pack_into("<I", blob, 52, 2)
    with pytest.raises(TamperedEnvelope, match="beyond"):
        _open(opener, bytes(blob))


@pytest.mark.parametrize(("m", "p"), [(0, 256), (1, 3)])
def test_empty_or_undersized_sections_are_tampering(sealer, opener, m, p):
    blob = bytearray(_blob(sealer, users=(42,)))
    struct.pack_into("<II", blob, 52, m, p)
    with pytest.raises(TamperedEnvelope, match="announces"):
        _open(opener, bytes(blob), users=(42,))


@pytest.mark.parametrize(
    "cut",
    [0, 1, FIXED_HEADER_BYTES - 1, FIXED_HEADER_BYTES, FIXED_HEADER_BYTES + 100, HEADER, HEADER + 7,
     HEADER + 100, -(256 + 24) - 1, -16, -1],
    ids=["empty", "1", "in-fixed", "fixed", "in-wrapped", "no-sections", "in-user-id", "in-body",
         "in-second-last-section", "no-last-tag", "part-last-tag"],
)  # fmt: skip
def test_truncated_every_prefix_class(sealer, opener, cut):
    blob = _blob(sealer)
    with pytest.raises(TruncatedEnvelope):
        _open(opener, blob[:cut] if cut >= 0 else blob[: len(blob) + cut])
    assert opener.counter.counts["truncated"] == 1 and opener.counter.total == 1


def test_section_count_grown_reads_as_truncated(sealer, opener):
    blob = bytearray(_blob(sealer))
    struct.pack_into("<I", blob, 52, 4)
    with pytest.raises(TruncatedEnvelope):
        _open(opener, bytes(blob))


def test_replayed_envelope_and_slot(sealer, opener):
    blob = _blob(sealer)
    assert set(_open(opener, blob).payloads) == set(USERS)
    again = _open(opener, blob)  # the same envelope again: every section is a replay
    assert again.payloads == {} and [type(e) for _, e in again.rejected] == [ReplayedEnvelope] * 3
    # a fresh envelope for an accepted slot is a replay too (one upload per user, stage and round),
    # while a user not accepted yet goes through
    fresh = _open(opener, _blob(sealer, users=(43, 45)), users=(43, 45))
    assert set(fresh.payloads) == {45} and [(u, e.reason) for u, e in fresh.rejected] == [(43, "replayed")]
    assert opener.counter.counts["replayed"] == 4
    assert set(_open(opener, _blob(sealer, rnd=6), rnd=6).payloads) == set(USERS)
    opener.forget_before(6)
    assert set(_open(opener, blob).payloads) == set(USERS)  # the caller keeps rounds monotone


def _forge(key, payloads: list[tuple[int, bytes]], rnd=5, node=NODE, stage="masked_input") -> bytes:
    """An envelope built by hand with the server's public key (what a malicious node could send)."""
    k = AESGCM.generate_key(bit_length=256)
    p = 256
    header = E._FIXED.pack(E.VERSION, E.STAGE_CODES[stage], 0, rnd, node, E.run_tag(RUN.encode()),
                           E.key_fingerprint(key.public_key()), len(payloads), p)  # fmt: skip
    header += key.public_key().encrypt(k, E._OAEP)
    aad = E._aad_base(header, RUN.encode())
    parts = [header]
    for i, (u, body) in enumerate(payloads):
        uid = struct.pack("<Q", u)
        parts += [uid, AESGCM(k).encrypt(E._nonce(i), body.ljust(p, b"\x00"), aad + uid)]
    return b"".join(parts)


def test_a_user_twice_in_one_envelope_is_a_replay(key, opener):
    body = struct.pack("<I", 2) + b"hi"
    got = _open(opener, _forge(key, [(42, body), (42, body), (43, body)]), users=(42, 43))
    assert got.payloads == {42: b"hi", 43: b"hi"} and [(u, e.reason) for u, e in got.rejected] == [(42, "replayed")]


def test_payload_length_beyond_the_section_is_tampering(key, opener):
    got = _open(opener, _forge(key, [(42, struct.pack("<I", 253)), (43, struct.pack("<I", 252))]), users=(42, 43))
    assert set(got.payloads) == {43} and [(u, e.reason) for u, e in got.rejected] == [(42, "tampered")]


def test_tampered_section_does_not_burn_the_replay_slot(sealer, opener):
    bad = bytearray(_blob(sealer))
    bad[-1] ^= 1
    assert set(_open(opener, bytes(bad)).payloads) == {42, 43}
    assert set(_open(opener, _blob(sealer, users=(44,)), users=(44,)).payloads) == {44}


@pytest.mark.parametrize(
    ("expect", "field"),
    [((6, NODE, "masked_input"), "round"), ((5, NODE + 1, "masked_input"), "node"), ((5, NODE, "unmask"), "stage")],
)  # fmt: skip
def test_misrouted_round_node_stage(sealer, opener, expect, field):
    with pytest.raises(MisroutedEnvelope, match=field):
        _open(opener, _blob(sealer), *expect)
    assert opener.counter.counts["misrouted"] == 1 and opener.counter.total == 1
    # a misrouted envelope does not occupy the slots it was really meant for
    assert set(_open(opener, _blob(sealer)).payloads) == set(USERS)


def test_section_for_a_user_the_node_does_not_speak_for_is_misrouted(sealer, opener):
    got = _open(opener, _blob(sealer), users=(42, 44))
    assert set(got.payloads) == {42, 44} and [(u, e.reason) for u, e in got.rejected] == [(43, "misrouted")]
    # the user's real node can still deliver it
    assert set(_open(opener, _blob(sealer, users=(43,), node=7), node=7, users=(43,)).payloads) == {43}


def test_misrouted_run(key, opener):
    with pytest.raises(MisroutedEnvelope, match="run"):
        _open(opener, _blob(EnvelopeSealer(key.public_key(), "another-run")))


def test_wrong_key(other_key, opener):
    with pytest.raises(WrongKeyEnvelope, match="fingerprint"):
        _open(opener, _blob(EnvelopeSealer(other_key.public_key(), RUN)))


def test_rejection_counter_json(sealer, opener, other_key):
    with pytest.raises(WrongKeyEnvelope):
        _open(opener, _blob(EnvelopeSealer(other_key.public_key(), RUN)))
    with pytest.raises(TruncatedEnvelope):
        _open(opener, _blob(sealer)[:100])
    _open(opener, _blob(sealer), users=(42,))  # two sections misrouted
    assert json.loads(opener.counter.to_json()) == {
        "tampered": 0, "truncated": 1, "replayed": 0, "misrouted": 2, "wrong_key": 1, "total": 4,
    }  # fmt: skip
    merged = RejectionCounter().merge(opener.counter)
    merged.record("replayed")
    assert merged.total == 5


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
    assert EnvelopeOpener(priv, RUN).open(s.seal({1: b"hi"}, 1, 9, "update"), 1, 9, "update", {1}).payloads == {1: b"hi"}
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
        assert dec(opener.open(sealer.seal({7: blob}, 1, NODE, stage), 1, NODE, stage, {7}).payloads[7]) == want
    env = sealer.seal({7: encode_masked(mi)}, 1, NODE, "masked_input")
    got = decode_masked(opener.open(env, 1, NODE, "masked_input", {7}).payloads[7])
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
        lens.add(len(s.seal({0: payload}, 1, NODE, "masked_input")))
    assert lens == {overhead_bytes() + size}
