"""`fedrec results` privacy-utility table: DP runs grouped by noise, mean ± sd over seeds, plot."""

from __future__ import annotations

import argparse
import json
import math
import statistics

from experiments.privacy_utility import dp_facts, group_by_noise, table_markdown
from experiments.results import run as results_run


def _run(root, name, z, seed, hr, eps, mode="distributed"):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"seed: {seed}\nprivacy:\n  mode: {mode}\n  noise_multiplier: {z}\n"
                                   "  sample_rate: 1.0\n  clip_norm: 0.1\n")  # fmt: skip
    summary = {"overrides": [f"privacy.noise_multiplier={z}", f"seed={seed}"], "rounds": 3, "epsilon": eps,
               "delta": 1e-3, "final": {"hr@10": hr, "ndcg@10": hr / 2, "full-ndcg@10": hr / 10}}  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))


def test_groups_seeds_by_noise_and_writes_table_and_plot(tmp_path, capsys):
    hrs = {0.0: [0.40, 0.42, 0.44], 2.0: [0.20, 0.26, 0.23]}
    for z, vals in hrs.items():
        for seed, hr in enumerate(vals):
            _run(tmp_path, f"z{z}_s{seed}", z, seed, hr, math.inf if z == 0 else 4.0 + 0.1 * seed)
    _run(tmp_path, "nodp", 0.0, 0, 0.9, None, mode="off")  # DP off: not part of the table
    results_run(argparse.Namespace(dir=str(tmp_path), out=None, json=None))
    md = (tmp_path / "privacy_utility.md").read_text()
    assert md in capsys.readouterr().out
    lines = [ln for ln in md.splitlines() if ln.startswith("| 0 ") or ln.startswith("| 2 ")]
    assert len(lines) == 2
    assert lines[0].startswith("| 0 | inf | 0,1,2 | 0.4200 ± 0.0200 |")
    sd = statistics.stdev(hrs[2.0])
    assert lines[1].startswith(f"| 2 | 4.10 ± 0.10 | 0,1,2 | 0.2300 ± {sd:.4f} |")
    assert (tmp_path / "privacy_utility.png").stat().st_size > 1000


def test_single_seed_and_off_runs(tmp_path):
    _run(tmp_path, "a", 1.5, 7, 0.3, 2.5)
    _run(tmp_path, "b", 0.0, 0, 0.5, None, mode="off")
    assert dp_facts(tmp_path / "b") is None and dp_facts(tmp_path / "missing") is None
    rows = [{"run": "a", "hr@10": 0.3, "epsilon": 2.5, **dp_facts(tmp_path / "a")}]
    groups = group_by_noise(rows)
    assert groups[0]["seeds"] == [7] and groups[0]["hr@10_sd"] == 0.0 and groups[0]["ndcg@10"] is None
    assert "| 1.5 | 2.50 | 7 | 0.3000 ± 0.0000 |  |  |" in table_markdown(groups)
