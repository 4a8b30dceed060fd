"""Config validation, thresholds, dropout injection, cost floor, package boundaries."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from secure_agg import (
    MachineRates,
    SecAggConfig,
    SecAggConfigError,
    compute_floor,
    floor_breakdown,
    inject_dropouts,
    measure_rates,
    resolve_threshold,
)
from secure_agg.config import STAGES
from secure_agg.simulate import plan_dropouts


def test_defaults_validate():
    cfg = SecAggConfig().validate()
    assert cfg.enabled is False and cfg.bits == 32 and cfg.neighbours is None
    assert cfg.dropout == {s: 0.0 for s in STAGES}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 0}, "threshold=0"),
        ({"threshold": 2.5}, "whole number"),
        ({"neighbours": 1}, "neighbours=1"),
        ({"bits": 33}, "bits=33"),
        ({"clip_range_sigmas": 0}, "clip_range_sigmas"),
        ({"n_max": 0}, "n_max=0"),
        ({"dropout": {"masked_input": 1.0}}, "dropout.masked_input=1.0"),
        ({"dropout": {"bogus": 0.1}}, "'bogus'"),
        ({"fixed_message_bytes": {"unmask": 0}}, "fixed_message_bytes.unmask=0"),
        ({"pad_bucket_bytes": 0}, "pad_bucket_bytes=0"),
    ],
)
def test_validate_names_the_bad_key(kwargs, match):
    with pytest.raises(SecAggConfigError, match=match):
        SecAggConfig(**kwargs).validate()


def test_threshold_resolution():
    assert resolve_threshold(0.5, 10) == 5
    assert resolve_threshold(0.3, 10) == 3  # no float drift to 4
    assert resolve_threshold(0.01, 10) == 2  # never below 2
    assert resolve_threshold(7, 10) == 7
    assert resolve_threshold(70, 10) == 10
    assert resolve_threshold(1.0, 10) == 10
    with pytest.raises(SecAggConfigError, match="too small"):
        resolve_threshold(0.5, 1)
    # SecAgg+: relative to the neighbourhood (k + 1 holders), not to n
    assert SecAggConfig(neighbours=10).resolve_threshold(1000) == 6
    assert SecAggConfig(neighbours=9).resolve_threshold(1001) == 6  # odd k, odd n -> k = 10


def test_inject_dropouts_is_exact_and_seeded():
    ids = list(range(100))
    kept, dropped = inject_dropouts(ids, "share_keys", 0.1, np.random.default_rng(3))
    assert len(dropped) == 10 and sorted(kept + dropped) == ids
    assert (kept, dropped) == inject_dropouts(ids, "share_keys", 0.1, np.random.default_rng(3))
    assert inject_dropouts(ids, "unmask", 0.0, np.random.default_rng(0)) == (ids, [])
    with pytest.raises(SecAggConfigError, match="unknown stage"):
        inject_dropouts(ids, "train", 0.1, np.random.default_rng(0))


def test_plan_dropouts_follows_config_fractions():
    cfg = SecAggConfig(dropout={"share_keys": 0.1, "masked_input": 0.2})
    plan = plan_dropouts(range(50), cfg.dropout, np.random.default_rng(0))
    assert [len(plan[s]) for s in STAGES] == [0, 5, 9, 0]
    assert not set(plan["share_keys"]) & set(plan["masked_input"])


def test_floor_formula():
    rates = MachineRates(aes_ctr_bytes_per_s=1e9, x25519_per_s=1e4)
    b = floor_breakdown(100, 1000, 10, rates)
    assert b["client_keystream_bytes"] == 100 * 11 * 4000
    assert b["client_key_agreements"] == 100 * 2 * 10
    assert b["server_keystream_bytes"] == 100 * 4000
    assert b["total_seconds"] == pytest.approx(
        100 * 11 * 4000 / 1e9 + 2000 / 1e4 + 100 * 4000 / 1e9
    )
    assert compute_floor(100, 1000, None, rates) > compute_floor(100, 1000, 10, rates)
    assert compute_floor(100, 1000, 10, rates, dropout=0.1) > compute_floor(100, 1000, 10, rates)


def test_measure_rates_positive():
    r = measure_rates(seconds=0.05, d=4096)
    assert r.aes_ctr_bytes_per_s > 1e6 and r.x25519_per_s > 100


def test_package_imports_no_flower_and_no_torch():
    code = (
        "import sys, secure_agg, secure_agg.simulate, secure_agg.floor;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('flwr', 'torch')];"
        "assert not bad, bad"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=str(__import__("pathlib").Path(__file__).parents[2]),
    )
