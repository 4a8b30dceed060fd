"""Masks: AES-CTR expansion, uniformity, no non-cryptographic generators, Shamir, neighbour graph."""

from __future__ import annotations

import ast
import itertools
import random
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from secure_agg import ClientCohort, SecAggConfig, SecAggError, SecAggServer, expand_mask
from secure_agg.graph import NeighbourGraph, build_graph
from secure_agg.primitives import (
    CtrDrbg,
    MaskExpander,
    apply_masks,
    pair_mask_seed,
    public_bytes,
    self_mask_seed,
)
from secure_agg.shamir import (
    PRIME,
    combine,
    decode_share,
    encode_share,
    lagrange_at_zero,
    split_secrets,
)
from secure_agg.simulate import run_round

PKG = Path(__file__).resolve().parents[2] / "secure_agg"


def test_expand_mask_is_aes256_ctr_keystream_little_endian():
    # independent CTR built from AES-ECB over big-endian 128-bit counters starting at 0
    key = bytes(range(32))
    d = 37
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    blocks = b"".join(i.to_bytes(16, "big") for i in range(-(-4 * d // 16)))
    stream = ecb.update(blocks)[: 4 * d]
    want = np.array([int.from_bytes(stream[4 * i : 4 * i + 4], "little") for i in range(d)])
    np.testing.assert_array_equal(expand_mask(key, d), want.astype(np.uint32))


def test_expander_reuses_buffers_but_is_deterministic():
    ex = MaskExpander(1000)
    a = ex.keystream(b"\x01" * 32).copy()
    ex.keystream(b"\x02" * 32)
    np.testing.assert_array_equal(ex.keystream(b"\x01" * 32), a)
    with pytest.raises(SecAggError, match="32 bytes"):
        ex.keystream(b"short")


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(1, 3000),
    block=st.integers(1, 700),
    signs=st.lists(st.sampled_from([1, -1]), min_size=0, max_size=6),
    data=st.data(),
)
def test_apply_masks_equals_one_keystream_at_a_time(d, block, signs, data):
    # the fused, blocked pass must be bit-identical to expanding each mask whole and adding it
    seeds = [data.draw(st.binary(min_size=32, max_size=32)) for _ in signs]
    start = np.frombuffer(data.draw(st.binary(min_size=4 * d, max_size=4 * d)), np.uint32).copy()
    want = start.copy()
    ex = MaskExpander(d)
    for seed, sign in zip(seeds, signs, strict=True):
        (ex.add if sign > 0 else ex.subtract)(want, seed)
    got = apply_masks(start.copy(), list(zip(seeds, signs, strict=True)), block=block)
    np.testing.assert_array_equal(got, want)


def test_apply_masks_rejects_bad_input():
    with pytest.raises(SecAggError, match="contiguous uint32"):
        apply_masks(np.zeros(4, np.int64), [(bytes(32), 1)])
    with pytest.raises(SecAggError, match="contiguous uint32"):
        apply_masks(np.zeros(8, np.uint32)[::2], [(bytes(32), 1)])
    with pytest.raises(SecAggError, match="32 bytes"):
        apply_masks(np.zeros(4, np.uint32), [(bytes(16), 1)])
    with pytest.raises(SecAggError, match="sign"):
        apply_masks(np.zeros(4, np.uint32), [(bytes(32), 0)])


def test_pair_seed_symmetric_and_bound_to_round():
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    s_ab = pair_mask_seed(a, public_bytes(b), b"run", 3, 1, 2)
    assert s_ab == pair_mask_seed(b, public_bytes(a), b"run", 3, 2, 1)
    assert s_ab != pair_mask_seed(a, public_bytes(b), b"run", 4, 1, 2)
    assert s_ab != pair_mask_seed(a, public_bytes(b), b"other", 3, 1, 2)
    assert self_mask_seed(bytes(32), b"run", 3, 1) != self_mask_seed(bytes(32), b"run", 3, 2)


def _masked_constant(d: int, value: int = 7) -> np.ndarray:
    cfg = SecAggConfig(threshold=2)
    ids = [1, 2, 3]
    srv = SecAggServer(cfg, 0, ids, dim=d)
    coh = ClientCohort(cfg, 0, ids)
    roster = srv.advertise(coh.advertise_keys())
    inboxes = srv.route_shares(coh.share_keys(roster))
    masked = coh.masked_input(inboxes, np.full((3, d), value, np.uint32))
    return masked[2]


def test_masked_constant_vector_is_uniform_bytes_and_bits():
    d = 1 << 16
    y = _masked_constant(d)
    counts = np.bincount(y.view(np.uint8), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-6
    ones = np.array([((y >> np.uint32(b)) & np.uint32(1)).sum() for b in range(32)])
    zeros = d - ones
    chi2 = float((((ones - d / 2) ** 2 + (zeros - d / 2) ** 2) / (d / 2)).sum())
    assert stats.chi2.sf(chi2, df=32) > 1e-6
    # and the top byte (where a small constant would show) is uniform on its own
    top = np.bincount((y >> np.uint32(24)).astype(np.int64), minlength=256)
    assert stats.chisquare(top).pvalue > 1e-6


_FORBIDDEN_NP = [
    "default_rng",
    "RandomState",
    "Generator",
    "seed",
    "rand",
    "randn",
    "randint",
    "random",
    "bytes",
    "choice",
    "permutation",
    "shuffle",
]
_FORBIDDEN_PY = [
    "random",
    "getrandbits",
    "randbytes",
    "randint",
    "randrange",
    "choice",
    "shuffle",
    "sample",
    "seed",
    "Random",
]


def test_masking_uses_no_non_cryptographic_generator(monkeypatch):
    rng = np.random.default_rng(5)
    inputs = {u: rng.integers(0, 2**32, size=64, dtype=np.uint32) for u in range(8)}
    expected = np.zeros(64, np.uint32)
    for u in range(1, 8):
        expected += inputs[u]

    def boom(*_a, **_k):
        raise AssertionError("a non-cryptographic generator was used during masking")

    for name in _FORBIDDEN_NP:
        monkeypatch.setattr(np.random, name, boom)
    for name in _FORBIDDEN_PY:
        monkeypatch.setattr(random, name, boom)
    with pytest.raises(AssertionError, match="non-cryptographic"):
        np.random.default_rng(0)
    for cfg in (SecAggConfig(threshold=0.5), SecAggConfig(threshold=0.5, neighbours=4)):
        res = run_round(
            cfg, inputs, dropped={"masked_input": [0]}, nodes=[[0, 1, 2], [3, 4], [5, 6, 7]]
        )
        np.testing.assert_array_equal(res.total, expected)


@pytest.mark.parametrize(
    "module",
    [
        "primitives.py",
        "shamir.py",
        "client.py",
        "server.py",
        "protocol.py",
        "graph.py",
        "messages.py",
    ],
)
def test_crypto_modules_do_not_reference_random_modules(module):
    tree = ast.parse((PKG / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(n == "random" or n.startswith("numpy.random") for n in names), module
        if isinstance(node, ast.Attribute) and node.attr == "random":
            assert not (isinstance(node.value, ast.Name) and node.value.id in {"np", "numpy"}), (
                module
            )


# ---- Shamir -------------------------------------------------------------------------------------
def test_field_is_prime_lucas_lehmer():
    s, m = 4, PRIME
    for _ in range(127 - 2):
        s = (s * s - 2) % m
    assert s == 0 and PRIME == 2**127 - 1


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(2, 12).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))), st.data())
def test_any_t_shares_reconstruct(nt, data):
    n, t = nt
    secrets_ = [bytes(data.draw(st.binary(min_size=32, max_size=32))) for _ in range(2)]
    xs = list(range(1, n + 1))
    shares = split_secrets(secrets_, xs, t)
    subset = data.draw(st.permutations(xs))[:t]
    for i, s in enumerate(secrets_):
        got = combine([shares[x][i] for x in subset], t, 32)
        assert got == s
        roundtrip = [decode_share(encode_share(shares[x][i]), 32) for x in subset]
        assert combine(roundtrip, t, 32) == s


def test_fewer_than_t_shares_refused_and_t_minus_1_shares_uninformative():
    xs = [1, 2, 3, 4]
    a = split_secrets([bytes(32)], xs, 3)
    with pytest.raises(SecAggError, match="need 3"):
        combine([a[1][0], a[2][0]], 3, 32)
    # t-1 shares are fresh uniform field elements whatever the secret: two sharings of the same
    # secret disagree, and interpolating them as if t were 2 gives garbage, not the secret
    b = split_secrets([bytes(32)], xs, 3)
    assert a[1][0] != b[1][0]
    try:
        guess = combine([a[1][0], a[2][0]], 2, 32)
    except SecAggError:  # usually: the short last chunk comes out of range
        guess = None
    assert guess != bytes(32)


def test_lagrange_coefficients_sum_to_one():
    for xs in itertools.combinations(range(1, 8), 4):
        assert sum(lagrange_at_zero(xs)) % PRIME == 1


def test_share_decoding_rejects_bad_input():
    with pytest.raises(SecAggError, match="bytes"):
        decode_share(b"\x00" * 10, 32)
    blob = bytearray(encode_share(split_secrets([bytes(32)], [1, 2], 2)[1][0]))
    blob[4:20] = b"\xff" * 16
    with pytest.raises(SecAggError, match="field"):
        decode_share(bytes(blob), 32)
    with pytest.raises(SecAggError, match="distinct"):
        split_secrets([bytes(32)], [1, 1], 1)


# ---- neighbour graph ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "k"), [(10, 4), (11, 4), (10, 3), (11, 3), (50, 10), (7, 6), (7, 20)]
)
def test_graph_is_regular_symmetric_and_seeded(n, k):
    users = list(range(100, 100 + n))
    g = build_graph(users, k, b"\x07" * 32)
    deg = min(k + (k % 2 == 1 and n % 2 == 1), n - 1)
    for u, nb in g.items():
        assert u not in nb
        assert len(nb) == deg
        for v in nb:
            assert u in g[v]
    assert g == build_graph(list(reversed(users)), k, b"\x07" * 32)
    if deg < n - 1:
        assert g != build_graph(users, k, b"\x08" * 32)


def test_graph_none_is_complete():
    g = build_graph([3, 1, 2], None, bytes(32))
    assert g == {1: (2, 3), 2: (1, 3), 3: (1, 2)}


def _reference_graph(users, k, seed):
    """The original whole-graph construction (edges added from both ends), for comparison."""
    from secure_agg.config import graph_degree

    users = sorted(set(users))
    n = len(users)
    if k is None or graph_degree(n, k) >= n - 1:
        return {u: tuple(v for v in users if v != u) for u in users}
    deg = graph_degree(n, k)
    order = CtrDrbg(seed, "neighbour-graph").permutation(users)
    adj = {u: set() for u in users}
    offsets = [*range(1, deg // 2 + 1), *([n // 2] if deg % 2 else [])]
    for i, u in enumerate(order):
        for off in offsets:
            adj[u].add(order[(i + off) % n])
            adj[order[(i + off) % n]].add(u)
    return {u: tuple(sorted(adj[u])) for u in users}


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 80), k=st.one_of(st.none(), st.integers(1, 90)),
       seed=st.binary(min_size=32, max_size=32))  # fmt: skip
def test_per_user_neighbourhood_equals_whole_graph(n, k, seed):
    users = random.Random(n).sample(range(10_000), n)
    graph = NeighbourGraph(users, k, seed)
    ref = _reference_graph(users, k, seed)
    assert {u: graph.of(u) for u in users} == ref
    assert all(len(nb) == graph.degree for nb in ref.values())
    with pytest.raises(KeyError):
        graph.of(10_001)


def test_drbg_stream_does_not_depend_on_draw_sizes():
    whole = CtrDrbg(b"\x01" * 32, "x").randbytes(10_000)
    d = CtrDrbg(b"\x01" * 32, "x")
    parts = b"".join(d.randbytes(m) for m in [1, 8, 4095, 3, 5000, 893])
    assert parts == whole[: len(parts)] and len(parts) == 10_000


def _reference_permutation(drbg, items):
    """The step-by-step Fisher-Yates, one ``randbelow`` per step."""
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = drbg.randbelow(i + 1)
        out[i], out[j] = out[j], out[i]
    return out


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300), seed=st.binary(min_size=32, max_size=32))
def test_block_permutation_equals_step_by_step(n, seed):
    a, b = CtrDrbg(seed, "neighbour-graph"), CtrDrbg(seed, "neighbour-graph")
    items = list(range(100, 100 + n))
    assert a.permutation(items) == _reference_permutation(b, items)
    assert a.randbytes(16) == b.randbytes(16)  # the same keystream consumed


class _ScriptedDrbg(CtrDrbg):
    """A DRBG whose first words are given (to hit randbelow's rejection, which has probability ~2^-60)."""

    def __init__(self, words):
        super().__init__(bytes(32), "scripted")
        self._buf = b"".join(w.to_bytes(8, "little") for w in words)


def test_block_permutation_handles_rejected_words_like_randbelow():
    # n = 4: bounds 4, 3, 2; 2^64 mod 3 = 1, so 2^64 - 1 is rejected when drawing below 3
    words = [9, 2**64 - 1, 5, 2**64 - 1, 11, 6]
    assert _ScriptedDrbg(words).permutation([1, 2, 3, 4]) == _reference_permutation(_ScriptedDrbg(words), [1, 2, 3, 4])
    a, b = _ScriptedDrbg(words), _ScriptedDrbg(words)
    a.permutation(list(range(4)))
    _reference_permutation(b, list(range(4)))
    assert a.randbytes(24) == b.randbytes(24)
