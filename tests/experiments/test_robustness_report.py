"""`fedrec results` robustness pivot: strategy x attack rows, fraction columns, HR / ER cells."""

from __future__ import annotations

import argparse
import json

import pytest

from experiments.robustness import (
    clean_cells,
    group_cells,
    paired_differences,
    pivot_markdown,
    run_facts,
    strategy_label,
)


def test_run_facts_and_pivot(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.yaml").write_text(
        "seed: 2\nstrategy:\n  name: trust\n  trust:\n    scorer: update\nattack:\n  name: sign_flip\n"
        "  fraction: 0.2\n  params:\n    scale: 10.0\n"
    )
    facts = run_facts(tmp_path / "a")
    assert facts == {"strategy": "trust:update", "attack": "sign_flip(scale=10.0)", "fraction": 0.2, "seed": 2}
    rows = [{**facts, "hr@10": 0.44}, {"strategy": "fedavg", "attack": "sign_flip(scale=10.0)", "fraction": 0.0,
                                       "hr@10": 0.41, "er@10": 0.0}]  # fmt: skip
    md = pivot_markdown(group_cells(rows))
    assert "| f=0 | f=0.2 |" in md and "| trust:update | sign_flip(scale=10.0) |  | 0.4400 |" in md
    assert "0.4100 / 0.000" in md
    assert run_facts(tmp_path / "missing") is None


def test_label_names_settings_that_differ_from_the_defaults():
    assert strategy_label({"name": "trust", "trust": {"scorer": "update", "threshold": 0.6}}) == "trust:update"
    assert (strategy_label({"name": "trust", "trust": {"scorer": "update", "row_zero_factor": 0.0, "threshold": 0.6}})
            == "trust:update(row_zero_factor=0.0)")  # fmt: skip
    assert strategy_label({"name": "median", "robust": {"beta": 0.1}}) == "median(beta=0.1)"
    assert strategy_label({"name": "fedavg", "trust": {"threshold": 0.0}}) == "fedavg"


def _rows():
    base = {"attack": "item_promotion", "fraction": 0.0, "er@10": 0.0}
    return [{**base, "strategy": "fedavg", "seed": s, "hr@10": h} for s, h in ((0, 0.40), (1, 0.42), (2, 0.41))] + [
        {**base, "strategy": "trust:update", "seed": s, "hr@10": h} for s, h in ((0, 0.39), (1, 0.42), (3, 0.5))]  # fmt: skip


def test_pivot_averages_seeds():
    md = pivot_markdown(group_cells(_rows()))
    assert "| fedavg | item_promotion | 0.4100 ± 0.0100 / 0.000 ± 0.000 (n=3) |" in md


def test_paired_differences_use_only_shared_seeds():
    (p,) = paired_differences(_rows())
    assert p["strategy"] == "trust:update" and p["seeds"] == [0, 1]  # seed 3 has no FedAvg run
    assert p["diffs"] == pytest.approx([0.39 / 0.40 - 1, 0.0])
    assert p["mean"] == pytest.approx((0.39 / 0.40 - 1) / 2)


def test_results_command_writes_paired_table_and_json(tmp_path):
    from experiments.results import run as results_run

    for name, strategy, seed, hr in (("f0", "fedavg", 0, 0.40), ("t0", "trust", 0, 0.38)):
        d = tmp_path / name
        d.mkdir()
        trust = "  trust:\n    scorer: update\n" if strategy == "trust" else ""
        (d / "config.yaml").write_text(f"seed: {seed}\nstrategy:\n  name: {strategy}\n{trust}"
                                       "attack:\n  name: boosted\n  fraction: 0.2\n")  # fmt: skip
        (d / "summary.json").write_text(json.dumps({"final": {"hr@10": hr}, "per_round": [{"round": 1, "hr@10": hr}]}))
    out = tmp_path / "report"
    results_run(argparse.Namespace(dir=str(tmp_path), out=str(out), json=str(tmp_path / "rows.json")))
    md = (out / "robustness.md").read_text()
    assert "| trust:update | fedavg | boosted | 0.2 | 0 | -5.00% | -5.00% ± 0.00% |" in md
    assert json.loads((out / "robustness.json").read_text())["paired"][0]["diffs"] == pytest.approx([-0.05])
    assert (out / "robustness.png").stat().st_size > 0
    assert {r["seed"] for r in json.loads((tmp_path / "rows.json").read_text())} == {0}


def test_clean_cell_is_any_attack_at_f0_with_the_most_seeds():
    rows = _rows() + [{"strategy": "fedavg", "attack": "boosted", "fraction": 0.0, "seed": 0, "hr@10": 0.3}]
    clean = clean_cells(group_cells(rows))
    assert clean["fedavg"]["seeds"] == [0, 1, 2] and clean["trust:update"]["seeds"] == [0, 1, 3]
