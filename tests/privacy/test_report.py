"""Privacy report files and the pre-run plan."""

import json

import numpy as np
import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from privacy import (
    ParticipationLedger,
    PrivacyAccountant,
    build_privacy_report,
    poisson_sample,
    privacy_plan,
    render_plan_table,
)


def _run(population=400, rounds=12, q=0.1, z=1.0, cap=None):
    rng = np.random.default_rng(0)
    ledger = ParticipationLedger(population, cap)
    acc = PrivacyAccountant("rdp")
    for _ in range(rounds):
        ledger.record(ledger.eligible(poisson_sample(population, q, rng)))
        acc.step(z, q)
    return ledger, acc


def test_report_writes_three_files(tmp_path):
    ledger, acc = _run(cap=3)
    rep = build_privacy_report(
        ledger.state_dict(),
        acc.state_dict(),
        400,
        None,
        tmp_path,
        target_epsilon=8.0,
        max_prv_points=3,
    )
    for name in ("privacy_report.md", "privacy_report.json", "privacy_report.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "privacy_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((tmp_path / "privacy_report.json").read_text())
    assert on_disk == rep
    assert rep["epsilon"] == pytest.approx(acc.get_epsilon(400**-1.1))
    assert rep["epsilon_final"]["prv"] < rep["epsilon_final"]["rdp"]
    assert len(rep["curves"]["rdp"]) == 12 and rep["curves"]["prv_rounds"][-1] == 12
    assert rep["guarantee"].startswith("After 12 rounds with Poisson sampling q=0.1, noise z=1,")
    assert "DP at user level" in rep["guarantee"]
    assert rep["participation"]["max"] <= 3
    md = (tmp_path / "privacy_report.md").read_text()
    assert rep["guarantee"] in md and "privacy_report.png" in md


def test_report_full_participation_has_no_amplification(tmp_path):
    ledger, acc = _run(population=50, rounds=4, q=1.0, z=1.2)
    rep = build_privacy_report(ledger.state_dict(), acc.state_dict(), 50, None, tmp_path, max_prv_points=2)
    assert rep["guarantee"].startswith("After 4 rounds with every user in every round (q=1), noise z=1.2,")
    assert rep["server_view"].startswith("No sampling (q=1), so no amplification")
    # Without sampling the server's view and the released models' are the same Gaussian mechanism.
    assert rep["epsilon"] == pytest.approx(ledger.worst_case_epsilon(1.2, 50**-1.1, accountant="rdp"), rel=1e-6)


def test_report_with_no_rounds(tmp_path):
    rep = build_privacy_report(
        ParticipationLedger(10).state_dict(), PrivacyAccountant().state_dict(), 10, 1e-3, tmp_path
    )
    assert rep["epsilon"] == 0.0 and rep["rounds"] == 0
    assert (tmp_path / "privacy_report.png").exists()


def test_plan_table_and_noise_for_target():
    plan = privacy_plan(1000, 50, 1.0, 40, target_epsilon=3.0, delta=1e-5)
    assert [row["round"] for row in plan["table"]] == [4, 10, 20, 40]
    q = plan["sample_rate"]
    assert q == 0.05
    opacus = RDPAccountant()
    opacus.history = [(1.0, q, 40)]
    assert plan["table"][-1]["rdp"] == opacus.get_epsilon(1e-5)
    for name, cls in (("rdp", RDPAccountant), ("prv", PRVAccountant)):
        z = plan["noise_for_target"][name]
        check = cls()
        check.history = [(z, q, 40)]
        assert 3.0 - 0.02 <= check.get_epsilon(1e-5) <= 3.0  # the plan's noise meets the target
    assert plan["noise_for_target"]["prv"] <= plan["noise_for_target"]["rdp"]
    afforded = plan["rounds_within_target"]
    within = RDPAccountant()
    within.history = [(1.0, q, afforded)]
    beyond = RDPAccountant()
    beyond.history = [(1.0, q, afforded + 1)]
    assert within.get_epsilon(1e-5) <= 3.0 < beyond.get_epsilon(1e-5)

    table = render_plan_table(plan)
    assert "| round | RDP | PRV |" in table and "| 40 |" in table
    assert "Target epsilon 3" in table
