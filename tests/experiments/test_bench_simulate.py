"""`fedrec bench simulate` orchestration: alternation, skips and same-run ratios (measurements stubbed)."""

import argparse
import json
import os

import pytest

from experiments import bench_simulate, sadp_floor

RATES = sadp_floor.PipelineRates(aes_ctr_bytes_per_s=4e9, x25519_per_s=2e4, gaussians_per_s=2e8,
                                 rounding_words_per_s=3e8)  # fmt: skip


def _args(tmp_path, **kw):
    base = dict(grid=["1000:100", "10000:1000"], rounds=3, repeats=1, nodes=2, stock_limit=600.0, no_stock=False,
                sa_dp=True, sa_dp_cpu=False, ml100k_paths=False, json=str(tmp_path / "b.json"), extra=[])  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_sa_dp_runs_alternate_and_report_their_ratio(tmp_path, monkeypatch):
    calls = []

    def fake(mode, population, per_round, rounds, nodes, extra, timeout):
        calls.append((mode, population, tuple(extra)))
        secure = "secure_agg=on" in extra
        sec = {"fedrec": 2.0, "stock": 30.0}[mode] * (1.5 if secure else 1.0)
        return {"median_round_seconds": sec, "startup_seconds": 1.0, "startup_plus_round1": 3.0,
                "peak_rss_gib": 1.0, "peak_pss_gib": 0.8, "round_seconds": [sec] * rounds}  # fmt: skip

    monkeypatch.setattr(bench_simulate, "_measure", fake)
    slow = sadp_floor.PipelineRates(1e9, 1e4, 1e8, 3e8)  # a measurement disturbed by another job
    samples = iter([slow, RATES] * 2)
    monkeypatch.setattr(sadp_floor, "measure_pipeline_rates", lambda seconds, d: next(samples))
    out = bench_simulate.run(_args(tmp_path))
    small, big = out["rows"]
    assert small["speedup"] == 15.0 and small["sa_dp_ratio"] == 1.5
    # the floor of the same cell (W1: d = 171,873 + 1, k = 20, 2 nodes on the machine's cores)
    want = sadp_floor.sadp_floor(100, 171_874, 20, 2, RATES, os.cpu_count() or 1)
    assert small["sa_dp_floor"]["wall_seconds"] == pytest.approx(want["wall_seconds"])
    assert small["sa_dp_floor"]["rates"] == RATES.as_dict()  # the fastest of before / after, per primitive
    assert len(small["sa_dp_floor"]["rate_samples"]) == 2
    assert small["sa_dp_floor_ratio"] == pytest.approx((2.0 + want["wall_seconds"]) / 2.0)
    assert big["sa_dp_floor"]["users"] == 1000
    assert "skipped" in big["stock"] and big["sa_dp_ratio"] == 1.5  # stock predicted > 10 min at 10,000
    # same workload with SA + DP on: Poisson rate = users per round / population
    assert ("fedrec", 1000, ("secure_agg=on", "privacy=distributed", "privacy.sample_rate=0.1")) in calls
    assert [c[0] for c in calls[:3]] == ["fedrec", "stock", "fedrec"]  # alternating within a cell
    assert json.loads((tmp_path / "b.json").read_text())["rows"][0]["sa_dp_ratio"] == 1.5


def test_without_sa_dp_no_secure_runs(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(bench_simulate, "_measure", lambda mode, p, r, n, nodes, extra, timeout: seen.append(extra)
                        or {"median_round_seconds": 1.0, "startup_seconds": 1.0, "startup_plus_round1": 2.0,
                            "peak_rss_gib": 1.0, "peak_pss_gib": 1.0, "round_seconds": [1.0]})  # fmt: skip
    out = bench_simulate.run(_args(tmp_path, sa_dp=False, no_stock=True, grid=["1000:100"]))
    assert seen == [[]] and "sa_dp" not in out["rows"][0] and "sa_dp_ratio" not in out["rows"][0]
    assert "sa_dp_floor" not in out["rows"][0]


def test_sa_dp_cpu_compares_in_process_cpu_with_the_floor(tmp_path, monkeypatch):
    from experiments import inprocess

    monkeypatch.setattr(bench_simulate, "_measure", lambda *a, **k: {
        "median_round_seconds": 1.0, "startup_seconds": 1.0, "startup_plus_round1": 2.0, "peak_rss_gib": 1.0,
        "peak_pss_gib": 1.0, "round_seconds": [1.0]})  # fmt: skip
    monkeypatch.setattr(sadp_floor, "measure_pipeline_rates", lambda seconds, d: RATES)
    seen = []

    def fake_rounds(overrides, nodes):
        seen.append(overrides)
        cpu = 9.0 if "secure_agg=on" in overrides else 3.0
        return {"cpu_seconds": [20.0, cpu, cpu], "wall_seconds": [1.0] * 3, "summary": {}}

    monkeypatch.setattr(inprocess, "run_rounds_inprocess", fake_rounds)
    out = bench_simulate.run(_args(tmp_path, grid=["1000:100"], no_stock=True, sa_dp_cpu=True))
    c = out["rows"][0]["sa_dp_cpu"]
    assert c["ratio"] == 3.0 and c["off"]["cpu_seconds"] == [20.0, 3.0, 3.0]  # round 1 (start-up) left out
    assert c["floor_ratio"] == pytest.approx((3.0 + out["rows"][0]["sa_dp_floor"]["cpu_seconds"]) / 3.0)
    assert "privacy=distributed" in seen[1] and "data.users=1000" in seen[0] and "secure_agg=on" not in seen[0]
