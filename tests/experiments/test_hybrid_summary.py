"""`fedrec summarize-recommender`: mean ± sd over seeds of evaluate-recommender results."""

import json

import pytest

from experiments.hybrid_summary import cmd_summarize, summarize


def _result(seed: int, als: float, fused: float) -> dict:
    def lst(ndcg: float) -> dict:
        return {"full": {"hr@10": 2 * ndcg, "ndcg@10": ndcg, "coverage@10": 0.4},
                "sampled": {"hr@10": 0.5, "ndcg@10": 0.3}, "ild@10": 0.8}  # fmt: skip

    return {"seed": seed, "model_version": 30, "best_single": "collaborative",
            "als_params": {"weighting": "none", "factors": 32, "regularization": 0.1, "alpha": 1.0},
            "weights_learned": {"collaborative": 0.7, "neumf": 0.3},
            "fused_vs_best_single_pct": 100 * (fused / als - 1),
            "test": {"collaborative": lst(als), "fused_learned": lst(fused),
                     "fused_learned+trust+mmr": {"lists": {"hr@10": 0.1, "ndcg@10": 0.05, "coverage@10": 0.3,
                                                           "ild@10": 0.82}}}}  # fmt: skip


def test_mean_sd_and_margins_by_hand():
    res = summarize([_result(0, 0.070, 0.077), _result(1, 0.080, 0.084), _result(2, 0.075, 0.078)])
    als = res["lists"]["collaborative"]["full_ndcg@10"]
    assert als["mean"] == pytest.approx(0.075)
    assert als["sd"] == pytest.approx(0.005)  # sample sd of 0.070, 0.080, 0.075
    assert als["values"] == [0.070, 0.080, 0.075]
    assert res["fused_vs_best_single_pct"]["mean"] == pytest.approx((10 + 5 + 4) / 3)
    assert "sampled_hr@10" not in res["lists"]["fused_learned+trust+mmr"]
    assert [p["als_ndcg@10"] for p in res["per_seed"]] == [0.070, 0.080, 0.075]


def test_cli_writes_json(tmp_path):
    paths = []
    for s, (a, f) in enumerate([(0.07, 0.075), (0.08, 0.082)]):
        p = tmp_path / f"e{s}.json"
        p.write_text(json.dumps(_result(s, a, f)))
        paths.append(str(p))

    class Args:
        results = paths
        json = str(tmp_path / "summary.json")

    assert cmd_summarize(Args) == 0
    out = json.loads((tmp_path / "summary.json").read_text())
    assert out["lists"]["fused_learned"]["full_ndcg@10"]["mean"] == pytest.approx(0.0785)


def test_pooled_gain_over_seeds_with_per_user_ndcg():
    """The pooled margin is total fused / total best-single NDCG over seeds and users; its interval brackets it."""
    rs = [_result(0, 0.5, 0.5), _result(1, 0.5, 0.5)]
    per_user = {0: ([1.0, 0.0, 0.5, 0.5], [0.5, 0.0, 0.5, 0.5]), 1: ([1.0, 0.5, 0.0, 0.5], [1.0, 0.0, 0.0, 0.5])}
    for r in rs:
        fused, best = per_user[r["seed"]]
        r["test"]["fused_learned"]["per_user_ndcg@10"] = fused
        r["test"]["collaborative"]["per_user_ndcg@10"] = best
    pooled = summarize(rs)["fused_vs_best_single_pooled"]
    assert pooled["gain_pct"] == pytest.approx(100 * (4.0 / 3.0 - 1))
    assert pooled["low_pct"] <= pooled["gain_pct"] <= pooled["high_pct"]
    assert 0.0 <= pooled["share_at_least_target"] <= 1.0
    assert "fused_vs_best_single_pooled" not in summarize([_result(0, 0.07, 0.077)])  # older JSON: no per-user
