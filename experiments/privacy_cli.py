"""`fedrec privacy report RUN_DIR` and `fedrec privacy plan ...`: privacy reports before and after training."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "plan", "report"]


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")


def _fmt(v: Any) -> str:
    v = float(v)
    return "inf" if math.isinf(v) else f"{v:.3f}"


def report(run_dir: str | Path, json_path: str | None = None, pld: bool = False,
           prv_points: int = 20) -> dict[str, Any]:  # fmt: skip
    """Build ``privacy_report.{md,json,png}`` in ``run_dir`` from its checkpoint and config.

    Reads ``checkpoints/last.pt`` (accountant history and participation ledger), ``config.yaml``
    (population, delta, target) and ``summary.json`` (accounting time per round, if present).

    Raises
    ------
    SystemExit
        If the run has no checkpoint or ran with neither user- nor example-level DP.
    """
    from configs.schema import from_yaml
    from privacy.accountant import PrivacyAccountant
    from privacy.example import example_level_summary
    from privacy.ledger import ParticipationLedger
    from privacy.report import build_privacy_report, to_jsonable
    from server.rundir import RunDir, RunDirError

    rd = RunDir(run_dir)
    cfg_file = rd.path / "config.yaml"
    if not cfg_file.is_file():
        raise SystemExit(f"{rd.path} has no config.yaml: point fedrec privacy report at a run directory")
    cfg = from_yaml(cfg_file.read_text())
    p = cfg.privacy
    try:
        state = rd.load_checkpoint()
    except RunDirError as exc:
        raise SystemExit(str(exc)) from None
    if state.get("accountant") is None and p.unit != "example":
        raise SystemExit(f"{rd.path} ran with privacy.mode=off and privacy.unit=user: there is no privacy "
                         "guarantee to report; run with privacy=distributed|central|local")  # fmt: skip
    population = cfg.data.population
    example = None
    if p.unit == "example":
        import numpy as np

        from client.node_data import local_split

        split = local_split(cfg.data)
        counts = ParticipationLedger.from_state_dict(state["ledger"]).counts
        example = example_level_summary(np.diff(split.train_indptr), counts, p.example_noise_multiplier,
                                        p.example_clip_norm, p.resolved_delta(population),
                                        cfg.client.batch_size, cfg.client.epochs)  # fmt: skip
    acc_seconds = None
    if rd.summary.is_file():
        per_round = json.loads(rd.summary.read_text()).get("per_round", [])
        secs = [h["accounting_seconds"] for h in per_round if "accounting_seconds" in h]
        acc_seconds = sum(secs) / len(secs) if secs else None
    # mode=off with unit=example: the user-level part of the report is empty (no rounds accounted).
    acc_state = state["accountant"] or PrivacyAccountant(p.accountant).state_dict()
    rep = build_privacy_report(state["ledger"], acc_state, population, p.delta, rd.path,
                               target_epsilon=p.target_epsilon, max_prv_points=prv_points, cross_check_pld=pld,
                               example_level=example, accounting_seconds=acc_seconds)  # fmt: skip
    rep["privacy_mode"] = p.mode
    rep = to_jsonable(rep)
    _write_json(json_path, rep)
    return rep


def plan(population: int, per_round: float, noise: float, rounds: int, target_epsilon: float | None = None,
         delta: float | None = None, accountants: tuple[str, ...] = ("rdp", "prv"),
         json_path: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Epsilon table of a planned run (and the noise a target needs), timed; see ``privacy_plan``."""
    from privacy.report import privacy_plan

    t0 = time.perf_counter()
    out = privacy_plan(population, per_round, noise, rounds, target_epsilon, delta, accountants)
    out["seconds"] = time.perf_counter() - t0
    _write_json(json_path, out)
    return out


def _report_cmd(args: argparse.Namespace) -> None:
    rep = report(args.run_dir, args.json, pld=args.pld, prv_points=args.prv_points)
    final = rep["epsilon_final"]
    print(rep["guarantee"])
    print(rep["server_view"])
    print(f"delta {float(rep['delta']):.3g} ({rep['delta_source']}); "
          + "; ".join(f"{k.upper()} epsilon {_fmt(v)}" for k, v in final.items()))  # fmt: skip
    rdp = float(final["rdp"])
    if rep["rounds"] and rdp > 0 and math.isfinite(rdp):
        adv = float(rep["curves"]["advanced"][-1])
        print(f"ratios to RDP: PRV x{float(final['prv']) / rdp:.3f}, advanced composition x{adv / rdp:.1f}")
    if rep.get("accounting_seconds_per_round") is not None:
        print(f"accounting took {float(rep['accounting_seconds_per_round']) * 1e3:.2f} ms per round")
    if rep.get("example_level"):
        print(rep["example_level"]["sentence"])
    print(f"wrote {rep['files']['md']}, {rep['files']['json']}, {rep['files']['png']}")


def _plan_cmd(args: argparse.Namespace) -> None:
    from privacy.cli_helpers import render_plan_table

    accs = tuple(a.strip() for a in args.accountants.split(",") if a.strip())
    out = plan(args.population, args.per_round, args.noise, args.rounds, args.target_epsilon, args.delta, accs,
               args.json)  # fmt: skip
    print(render_plan_table(out), end="")
    print(f"(computed in {out['seconds']:.2f}s)")


def add_commands(sub) -> None:
    """Register ``fedrec privacy report|plan``."""
    priv = sub.add_parser("privacy", help="privacy reports (after a run) and plans (before one)")
    psub = priv.add_subparsers(dest="privacy_command", required=True)
    r = psub.add_parser("report", help="write privacy_report.md/.json/.png into a run directory")
    r.add_argument("run_dir", help="a run directory (runs/<name>)")
    r.add_argument("--json", default=None, help="also write the report JSON here")
    r.add_argument("--pld", action="store_true", help="cross-check the final epsilon with dp_accounting PLD")
    r.add_argument("--prv-points", type=int, default=20, help="rounds at which PRV is evaluated (default 20)")
    r.set_defaults(func=_report_cmd)
    p = psub.add_parser("plan", help="epsilon table of a planned run, and the noise a target needs")
    p.add_argument("--population", type=int, required=True, help="N, users")
    p.add_argument("--per-round", type=float, required=True, help="expected users per round m (q = m/N)")
    p.add_argument("--noise", type=float, required=True, help="noise multiplier z")
    p.add_argument("--rounds", type=int, required=True, help="rounds T")
    p.add_argument("--target-epsilon", type=float, default=None, help="also the z that reaches it in T rounds")
    p.add_argument("--delta", type=float, default=None, help="default 1/N^1.1")
    p.add_argument("--accountants", default="rdp,prv", help="comma list of rdp,prv (default both)")
    p.add_argument("--json", default=None, help="also write the plan JSON here")
    p.set_defaults(func=_plan_cmd)
