"""`fedrec privacy plan` and `fedrec privacy report`: files, JSON, and the numbers in them."""

from __future__ import annotations

import json
import math

import pytest

from experiments.cli import main
from privacy.accountant import rdp_epsilon
from privacy.config import default_delta


def test_plan_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    main(["privacy", "plan", "--population", "1000", "--per-round", "100", "--noise", "1.0", "--rounds", "20",
          "--target-epsilon", "3", "--accountants", "rdp", "--json", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    plan = json.loads(out.read_text())
    assert "| round | RDP |" in text and "Target epsilon 3" in text
    assert plan["sample_rate"] == 0.1 and plan["delta"] == pytest.approx(default_delta(1000))
    last = plan["table"][-1]
    assert last["round"] == 20 and last["rdp"] == pytest.approx(rdp_epsilon([(1.0, 0.1, 20)], default_delta(1000)))
    z = plan["noise_for_target"]["rdp"]
    assert rdp_epsilon([(z, 0.1, 20)], default_delta(1000)) <= 3.0


@pytest.mark.integration
def test_report_writes_md_json_png(tmp_path, capsys):
    from tests.server.inprocess import run_inprocess

    n = 60
    summary, loop = run_inprocess(["data=synthetic", f"data.users={n}", "data.items=200", "data.mean_interactions=15",
                                   "simulation.eval_every=1000", "simulation.rounds=3", "privacy=distributed",
                                   "privacy.sample_rate=0.3", "privacy.min_survivors=1", "strategy.item_aggregation=mean",
                                   f"runs_dir={tmp_path}", "name=r"])  # fmt: skip
    out = tmp_path / "rep.json"
    main(["privacy", "report", str(tmp_path / "r"), "--json", str(out), "--prv-points", "3"])
    text = capsys.readouterr().out
    rep = json.loads(out.read_text())
    for suffix in ("md", "json", "png"):
        assert (tmp_path / "r" / f"privacy_report.{suffix}").stat().st_size > 0
    assert rep["epsilon"] == pytest.approx(summary["epsilon"], rel=1e-9)
    assert rep["delta_source"].startswith("1/N^1.1") and rep["delta"] == pytest.approx(default_delta(n))
    assert rep["rounds"] == 3 and rep["participation"]["ledger_rounds"] == 3
    assert 0 < float(rep["epsilon_final"]["prv"]) <= float(rep["epsilon_final"]["rdp"])
    assert rep["accounting_seconds_per_round"] > 0
    assert "user level" in text and "ratios to RDP" in text
    md = (tmp_path / "r" / "privacy_report.md").read_text()
    assert "1/N^1.1 with N=60 (default)" in md and not math.isnan(float(rep["epsilon"]))


def test_report_refuses_a_run_without_privacy(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(SystemExit, match="config.yaml"):
        main(["privacy", "report", str(tmp_path / "x")])
