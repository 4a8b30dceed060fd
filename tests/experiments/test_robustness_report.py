"""`fedrec results` robustness pivot: strategy x attack rows, fraction columns, HR / ER cells."""

from __future__ import annotations

from experiments.robustness import pivot_markdown, run_facts


def test_run_facts_and_pivot(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.yaml").write_text(
        "strategy:\n  name: trust\n  trust:\n    scorer: update\nattack:\n  name: sign_flip\n  fraction: 0.2\n"
        "  params:\n    scale: 10.0\n"
    )
    facts = run_facts(tmp_path / "a")
    assert facts == {"strategy": "trust:update", "attack": "sign_flip(scale=10.0)", "fraction": 0.2}
    rows = [{**facts, "hr@10": 0.44}, {"strategy": "fedavg", "attack": "sign_flip(scale=10.0)", "fraction": 0.0,
                                       "hr@10": 0.41, "er@10": 0.0}]  # fmt: skip
    md = pivot_markdown(rows)
    assert "| f=0 | f=0.2 |" in md and "| trust:update | sign_flip(scale=10.0) |  | 0.4400 |" in md
    assert "0.4100 / 0.000" in md
    assert run_facts(tmp_path / "missing") is None
