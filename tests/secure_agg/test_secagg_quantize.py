"""Quantisation into Z_2^32: no-wrap guarantee, error bound, refusal, trust weights in the sum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_agg import (
    QuantizationConfig,
    QuantizationError,
    SecAggConfig,
    SecAggConfigError,
    check_no_wrap,
    dequantize,
    pack_weighted,
    quantize,
    quantize_rows,
    quantize_sum_rows,
    unpack_weighted,
    weighted_mean,
)
from secure_agg.simulate import run_round


def test_no_wrap_at_n_max_with_extreme_values():
    cfg = QuantizationConfig(clip_bound=1.0, noise_std=0.05, n_max=10_000).validate()
    r, L = cfg.r, cfg.levels
    assert L == (2**32 - 1) // 10_000
    rng = np.random.default_rng(0)
    x = np.full((cfg.n_max, 4), 1e9)  # far beyond r: every entry clips to +r -> level L
    q, n_clipped = quantize(x, cfg, rng)
    assert n_clipped == x.size
    assert int(q.max()) == L
    exact = int(q.astype(np.int64).sum(axis=0).max())
    assert exact == cfg.n_max * L <= 2**32 - 1
    # masks that cancel mod 2^32 leave the exact integer sum: no wrap after unmasking
    masks = rng.integers(0, 2**32, size=q.shape, dtype=np.uint32)
    masks[-1] = -masks[:-1].sum(axis=0, dtype=np.uint32)
    masked_sum = (q + masks).sum(axis=0, dtype=np.uint32)
    np.testing.assert_array_equal(masked_sum.astype(np.int64), q.astype(np.int64).sum(axis=0))
    np.testing.assert_allclose(dequantize(masked_sum, cfg.n_max, cfg), cfg.n_max * r, rtol=1e-12)
    # and the other extreme
    q_low, _ = quantize(-x, cfg, rng)
    assert int(q_low.max()) == 0
    np.testing.assert_allclose(
        dequantize(q_low.sum(axis=0, dtype=np.uint32), cfg.n_max, cfg), -cfg.n_max * r
    )


def test_no_wrap_through_the_protocol_at_n_max():
    cfg = QuantizationConfig(clip_bound=2.0, n_max=24).validate()
    rng = np.random.default_rng(1)
    x = np.full((24, 3), 5.0)
    q, _ = quantize(x, cfg, rng)
    res = run_round(SecAggConfig(threshold=0.5), {u: q[u] for u in range(24)})
    assert int(res.total.max()) == 24 * cfg.levels
    assert 24 * cfg.levels <= 2**32 - 1 < 24 * (cfg.levels + 1)  # tight: one more level could wrap
    np.testing.assert_allclose(dequantize(res.total, 24, cfg), 24 * cfg.r)


def test_wrapping_configs_are_refused_with_numbers():
    with pytest.raises(QuantizationError, match=r"n_max=10 .*would wrap"):
        check_no_wrap(10, 1.0, 32, scale=2.0**31)
    with pytest.raises(QuantizationError, match="reaches 429496729600 > 2\\^32 - 1 = 4294967295"):
        check_no_wrap(100, 1.0, 32, scale=2.0**31)
    with pytest.raises(QuantizationError, match="levels per user"):
        check_no_wrap(2**20, 1.0, 16)
    with pytest.raises(QuantizationError, match="bits=33"):
        check_no_wrap(10, 1.0, 33)
    with pytest.raises(QuantizationError, match="would wrap"):
        QuantizationConfig(clip_bound=1.0, n_max=1000, scale=3e6).validate()
    with pytest.raises(SecAggConfigError, match="n_max"):
        SecAggConfig(bits=8, n_max=300).validate()
    assert check_no_wrap(1000, 1.0, 32, scale=2e6) == 4_000_000


def test_dequantize_refuses_more_users_than_n_max():
    cfg = QuantizationConfig(clip_bound=1.0, n_max=10)
    with pytest.raises(QuantizationError, match="n_users=11"):
        dequantize(np.zeros(3, np.uint32), 11, cfg)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 30),
    d=st.integers(1, 8),
    sigma=st.sampled_from([0.0, 0.01, 0.3]),
    n_max=st.sampled_from([30, 1000, 10_000]),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float64, np.float32]),
    scale=st.sampled_from([1.5, 1e-4]),
)
def test_dequantised_sum_within_error_bound(n, d, sigma, n_max, seed, dtype, scale):
    # n_max = 30 gives L > 2^24 levels (quantize's int64 path), the others L < 2^24 (float32 path)
    cfg = QuantizationConfig(clip_bound=1.0, noise_std=sigma, n_max=n_max).validate()
    rng = np.random.default_rng(seed)
    x = rng.uniform(-scale * cfg.r, scale * cfg.r, size=(n, d)).astype(dtype)
    q, n_clipped = quantize(x, cfg, rng)
    assert q.dtype == np.uint32 and q.shape == x.shape and int(q.max()) <= cfg.levels
    assert n_clipped == int((np.abs(x) > cfg.r).sum())
    total = q.sum(axis=0, dtype=np.uint32)
    got = dequantize(total, n, cfg)
    want = np.clip(x.astype(np.float64), -cfg.r, cfg.r).sum(axis=0)
    bound, _ = cfg.error_bound(n)
    assert np.all(np.abs(got - want) <= bound * (1 + 1e-9) + 1e-9)


def test_stochastic_rounding_is_unbiased():
    cfg = QuantizationConfig(clip_bound=1.0, n_max=2**31)  # coarse: 1 level per user
    assert cfg.levels == 1
    x = np.full(200_000, 0.3)
    q, _ = quantize(x, cfg, np.random.default_rng(2))
    # each value is -r or +r; the mean must still be 0.3
    assert abs(float((q * 2.0 - 1.0).mean()) - 0.3) < 0.01


def test_float32_quantisation_is_unbiased_for_small_values():
    # values far below one level: only stochastic rounding carries them, and the float32
    # arithmetic must not bias it (the offset L / 2 is added after rounding, exactly)
    cfg = QuantizationConfig(clip_bound=1.0, n_max=1000).validate()
    v = 0.37 * cfg.step
    q, _ = quantize(np.full(400_000, v, np.float32), cfg, np.random.default_rng(3))
    # E[q] = v * s + L / 2 = 0.37 + L / 2; the sd of the mean is ~0.0008
    assert abs(float(q.astype(np.float64).mean()) - cfg.levels / 2 - 0.37) < 0.005


def test_quantize_rows_equals_packed_quantize():
    cfg = QuantizationConfig(clip_bound=1.0, noise_std=0.1, n_max=500).validate()
    rng = np.random.default_rng(4)
    vals = rng.normal(0, 0.3, (5, 70_000)).astype(np.float32)  # wider than one QUANT_BLOCK
    w = rng.uniform(0, 1, 5)
    a, na = quantize_rows(vals, w, cfg, np.random.default_rng(9))
    # float32 x * s is the float64 product (exact) rounded once: the same bits either way
    packed = np.concatenate([vals.astype(np.float64), w[:, None]], axis=1)
    c, nc = quantize(packed, cfg, np.random.default_rng(9), weighted=True)
    np.testing.assert_array_equal(a, c)
    assert na == nc
    with pytest.raises(QuantizationError, match="shape"):
        quantize_rows(vals, w[:3], cfg, rng)


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 6), d=st.integers(1, 70_000), seed=st.integers(0, 2**32 - 1))
def test_quantize_sum_rows_equals_sum_of_quantize_rows(rows, d, seed):
    cfg = QuantizationConfig(clip_bound=1.0, noise_std=0.1, n_max=500).validate()
    rng = np.random.default_rng(seed)
    vals = rng.normal(0, 0.5, (rows, d)).astype(np.float32)  # some beyond r = 1.6: clipped, counted
    w = rng.uniform(0, 1, rows)
    q, n = quantize_rows(vals, w, cfg, np.random.default_rng(seed + 1))
    acc = rng.integers(0, 2**32, d + 1, dtype=np.uint32)  # any start value: the adds are mod 2^32
    want = acc + q.sum(0, dtype=np.uint32)
    assert quantize_sum_rows(vals, w, cfg, np.random.default_rng(seed + 1), acc) == n
    np.testing.assert_array_equal(acc, want)
    with pytest.raises(QuantizationError, match="accumulator"):
        quantize_sum_rows(vals, w, cfg, rng, np.zeros(d, np.uint32))


def test_quantize_refuses_nan_and_bad_weights():
    cfg = QuantizationConfig(clip_bound=1.0)
    rng = np.random.default_rng(0)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(QuantizationError, match="NaN"):
            quantize(np.array([0.0, bad]), cfg, rng)
    with pytest.raises(QuantizationError, match="weights"):
        quantize(pack_weighted(np.zeros((2, 3)), np.array([0.5, 1.5])), cfg, rng, weighted=True)


def test_from_secagg_uses_config_fields():
    q = QuantizationConfig.from_secagg(SecAggConfig(n_max=500, clip_range_sigmas=4.0), 2.0, 0.5)
    assert q.r == pytest.approx(2.0 + 4.0 * 0.5)
    assert q.levels == (2**32 - 1) // 500


def test_pack_unpack_weighted_shapes():
    up = np.arange(6.0).reshape(2, 3)
    w = np.array([0.5, 1.0])
    packed = pack_weighted(up, w)
    np.testing.assert_array_equal(packed, [[0, 0.5, 1, 0.5], [3, 4, 5, 1]])
    s, tw = unpack_weighted(packed.sum(axis=0))
    np.testing.assert_array_equal(s, [3, 4.5, 6])
    assert tw == 1.5
    with pytest.raises(QuantizationError, match="pack_weighted"):
        pack_weighted(up, np.ones(3))


@pytest.mark.parametrize("neighbours", [None, 4])
def test_trust_weighted_mean_recovered_through_masking(neighbours):
    rng = np.random.default_rng(7)
    n, d, clip = 16, 6, 1.0
    raw = rng.normal(size=(n, d))
    updates = raw * np.minimum(1.0, clip / np.linalg.norm(raw, axis=1, keepdims=True))
    w = rng.uniform(0.0, 1.0, size=n)
    w[3] = 0.0  # a distrusted user contributes nothing
    cfg = QuantizationConfig(clip_bound=clip, n_max=100).validate()
    packed = pack_weighted(updates, w)
    q, n_clipped = quantize(packed, cfg, rng, weighted=True)
    assert n_clipped == 0
    ids = list(range(100, 100 + n))
    res = run_round(
        SecAggConfig(threshold=0.5, neighbours=neighbours),
        {u: q[i] for i, u in enumerate(ids)},
        dropped={"masked_input": [ids[0], ids[5]], "unmask": [ids[9]]},
        nodes=[ids[:8], ids[8:]],
        presum=True,
        graph_seed=b"\x03" * 32,  # a fixed neighbour graph: this test is about quantisation, not t
    )
    surv = np.array([ids.index(u) for u in res.survivors])
    total = dequantize(res.total, len(surv), cfg, weighted=True)
    s_hat, w_hat = unpack_weighted(total)
    s_true = (updates[surv] * w[surv, None]).sum(axis=0)
    w_true = w[surv].sum()
    e_s, e_w = cfg.error_bound(len(surv))
    assert np.all(np.abs(s_hat - s_true) <= e_s)
    assert abs(w_hat - w_true) <= e_w
    mean_bound = (e_s + np.abs(s_true / w_true) * e_w) / w_hat
    assert np.all(np.abs(weighted_mean(total) - s_true / w_true) <= mean_bound)
    assert np.all(mean_bound < 1e-4)  # "exactly within quantisation": tiny at 32 bits


def test_weighted_mean_refuses_zero_weight():
    with pytest.raises(QuantizationError, match="total weight"):
        weighted_mean(np.array([1.0, 2.0, 0.0]))


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    n=st.integers(2, 20),
    d=st.integers(1, 4),
    k=st.sampled_from([None, 2, 4]),
    drops=st.lists(st.integers(0, 3), min_size=4, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_protocol_float_sum_within_quantisation_bound(n, d, k, drops, seed):
    from secure_agg import SecAggAbort
    from secure_agg.config import STAGES

    rng = np.random.default_rng(seed)
    cfg = QuantizationConfig(clip_bound=1.0, noise_std=0.1, n_max=64).validate()
    x = rng.normal(scale=0.5, size=(n, d))
    q, _ = quantize(x, cfg, rng)
    order = list(rng.permutation(n))
    dropped, pos = {}, 0
    for stage, m in zip(STAGES, drops, strict=True):
        dropped[stage] = [int(u) for u in order[pos : pos + m]]
        pos += m
    try:
        res = run_round(
            SecAggConfig(threshold=0.5, neighbours=k),
            {u: q[u] for u in range(n)},
            dropped=dropped,
        )
    except SecAggAbort:
        return
    surv = list(res.survivors)
    got = dequantize(res.total, len(surv), cfg)
    want = np.clip(x[surv], -cfg.r, cfg.r).sum(axis=0)
    assert np.all(np.abs(got - want) <= cfg.error_bound(len(surv))[0])
