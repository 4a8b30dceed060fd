"""End-of-run privacy report (Markdown, JSON, PNG) and the pre-run privacy plan."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privacy.accountant import (
    PrivacyAccountant,
    epsilon_from_history,
    noise_for_target_epsilon,
    pld_epsilon,
    rdp_epsilon,
    recompute_epsilons,
)
from privacy.composition import advanced_composition, naive_composition
from privacy.config import default_delta
from privacy.errors import PrivacyError
from privacy.ledger import ParticipationLedger

__all__ = ["build_privacy_report", "privacy_plan", "to_jsonable"]

logger = logging.getLogger(__name__)

PLAN_FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays and non-finite floats for strict JSON.

    ``inf``/``nan`` become the strings ``"inf"``/``"nan"`` (``float()`` reads them back).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else str(value)
    return obj


def _fmt(eps: float, digits: int = 2) -> str:
    return "inf" if math.isinf(eps) else f"{eps:.{digits}f}"


def _checkpoints(total: int, fractions: Sequence[float] = PLAN_FRACTIONS) -> list[int]:
    return sorted({min(total, max(1, math.ceil(f * total))) for f in fractions}) if total else []


def _spread(values: Sequence[float], name: str) -> str:
    lo, hi = min(values), max(values)
    return f"{name}={lo:g}" if lo == hi else f"{name} in [{lo:g}, {hi:g}]"


def _composition_bounds(
    history: list[tuple[float, float, int]], rounds: Sequence[int], delta: float
) -> tuple[np.ndarray, np.ndarray]:
    """Naive and advanced composition of per-round RDP epsilons, total delta <= ``delta``.

    Each of t rounds is charged ``(eps0, delta/(2t))`` with eps0 the largest
    single-round epsilon among the rounds so far; advanced composition uses
    ``delta' = delta/2``.
    """
    naive, advanced = [], []
    for t in rounds:
        prefix, left = [], t
        for z, q, n in history:
            if left <= 0:
                break
            prefix.append((z, q))
            left -= n
        delta0 = delta / (2 * t)
        eps0 = max(rdp_epsilon([(z, q, 1)], delta0) for z, q in prefix)
        naive.append(naive_composition(eps0, t, delta0)[0])
        advanced.append(advanced_composition(eps0, t, delta / 2, delta0)[0])
    return np.array(naive, dtype=np.float64), np.array(advanced, dtype=np.float64)


def _plot(
    path: Path,
    curves: dict[str, tuple[Sequence[int], Sequence[float]]],
    histogram: np.ndarray,
    target_epsilon: float | None,
) -> None:
    # Object-oriented Agg canvas: no pyplot, so the caller's backend is untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_eps, ax_hist = fig.subplots(1, 2)
    styles = {
        "RDP": {"lw": 2},
        "PRV": {"lw": 2, "marker": "o", "ms": 3},
        "naive composition": {"ls": "--"},
        "advanced composition": {"ls": ":"},
    }
    finite_max = 0.0
    for label, (xs, ys) in curves.items():
        ys_arr = np.asarray(ys, dtype=np.float64)
        if len(xs) and np.isfinite(ys_arr).any():
            finite_max = max(finite_max, float(np.nanmax(ys_arr[np.isfinite(ys_arr)])))
            ax_eps.plot(xs, ys_arr, label=label, **styles.get(label, {}))
    if target_epsilon is not None:
        ax_eps.axhline(target_epsilon, color="red", lw=1, label=f"target {target_epsilon:g}")
    if finite_max > 0:
        ax_eps.set_yscale("log")
    ax_eps.set_xlabel("round")
    ax_eps.set_ylabel("epsilon (user level)")
    ax_eps.set_title("Privacy spent per round")
    ax_eps.grid(True, which="both", alpha=0.3)
    if ax_eps.get_legend_handles_labels()[0]:
        ax_eps.legend(fontsize=8)
    ax_hist.bar(np.arange(histogram.size), histogram, color="tab:gray")
    ax_hist.set_xlabel("rounds participated")
    ax_hist.set_ylabel("users")
    ax_hist.set_title("Participation per user")
    fig.savefig(path, dpi=110)


def build_privacy_report(
    ledger_state: dict[str, Any],
    accountant_state: dict[str, Any],
    population: int,
    delta: float | None,
    out_dir: str | Path,
    *,
    target_epsilon: float | None = None,
    max_prv_points: int = 20,
    cross_check_pld: bool = False,
    example_level: dict[str, Any] | None = None,
    accounting_seconds: float | None = None,
) -> dict[str, Any]:
    """Write ``privacy_report.{md,json,png}`` into ``out_dir`` and return the JSON content.

    Parameters
    ----------
    ledger_state : dict
        ``ParticipationLedger.state_dict()`` of the run.
    accountant_state : dict
        ``PrivacyAccountant.state_dict()`` of the run.
    population : int
        N, number of users.
    delta : float or None
        None means ``1 / N**1.1``.
    out_dir : str or Path
        Created if missing (typically ``runs/<name>/``).
    target_epsilon : float or None
        Drawn and reported if given.
    max_prv_points : int, default 20
        PRV costs ~0.2-0.7 s per point; the curve is evaluated at this many
        evenly spaced rounds (always including the last). RDP uses every round.
    cross_check_pld : bool, default False
        Also report Google dp_accounting's PLD epsilon for the whole run.
    example_level : dict or None
        Example-level (DP-SGD, ``privacy.unit=example``) accounting to report alongside, with a
        ``sentence`` key (see ``client.example_dp.example_level_summary``).
    accounting_seconds : float or None
        Mean seconds the run's accountant took per round, shown if given.

    Returns
    -------
    dict
        JSON-able report: parameters, final epsilons, per-round curves,
        composition bounds, participation summary, guarantee sentence and the
        paths written (``files``).
    """
    d = default_delta(population) if delta is None else float(delta)
    delta_source = f"1/N^1.1 with N={int(population)} (default)" if delta is None else "privacy.delta"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ledger = ParticipationLedger.from_state_dict(ledger_state)
    if ledger.population != int(population):
        raise PrivacyError(
            f"ledger population {ledger.population} != population {population}; "
            "pass the run's population"
        )
    accountant = PrivacyAccountant.from_state_dict(accountant_state)
    history = accountant.history
    total = accountant.num_steps
    mechanism = accountant.mechanism

    rounds_all = list(range(1, total + 1))
    rdp_curve = recompute_epsilons(history, d, "rdp")
    k = max(1, min(int(max_prv_points), total)) if total else 0
    prv_rounds = sorted({int(r) for r in np.linspace(1, total, k).round()}) if total else []
    prv_curve = recompute_epsilons(history, d, "prv", rounds=prv_rounds)
    naive, advanced = _composition_bounds(history, rounds_all, d) if total else ([], [])

    final = {
        "rdp": float(rdp_curve[-1]) if total else 0.0,
        "prv": float(prv_curve[-1]) if total else 0.0,
    }
    if cross_check_pld:
        final["pld"] = pld_epsilon(history, d)
    reported = (
        final[mechanism] if mechanism in final else epsilon_from_history(history, d, mechanism)
    )

    zs = [z for z, _, _ in history] or [0.0]
    qs = [q for _, q, _ in history] or [0.0]
    hist = ledger.histogram()
    counts = ledger.counts
    worst = ledger.worst_case_epsilon(min(zs), d, accountant=mechanism) if counts.max() > 0 else 0.0
    checkpoints = _checkpoints(total)

    everyone = min(qs) >= 1.0  # q = 1: every user in every round, nothing to amplify
    sampling = "every user in every round (q=1)" if everyone else f"Poisson sampling {_spread(qs, 'q')}"
    guarantee = (
        f"After {total} rounds with {sampling}, noise "
        f"{_spread(zs, 'z')}, every user's participation is ({_fmt(reported)}, {d:.3g})-DP "
        f"at user level ({mechanism.upper()} accountant, add/remove one user's data, "
        f"for anyone observing the released models)."
    )
    server_note = (
        f"No sampling (q=1), so no amplification: the server's view is the same, epsilon {_fmt(worst)}."
        if everyone
        else "Amplification by sampling assumes the observer does not know who was sampled; "
        "against the server, which chose the sample, a user who took part in "
        f"{ledger.max_participations or int(counts.max())} rounds has epsilon "
        f"{_fmt(worst)} (no amplification, z={min(zs):g})."
    )
    if ledger.rounds != total:
        logger.warning(
            "ledger recorded %d rounds but the accountant %d; rounds with no survivors "
            "or skipped accounting explain a difference",
            ledger.rounds,
            total,
        )

    report: dict[str, Any] = {
        "population": int(population),
        "delta": d,
        "delta_source": delta_source,
        "rounds": total,
        "accountant": mechanism,
        "history": [list(e) for e in history],
        "epsilon": reported,
        "epsilon_final": final,
        "target_epsilon": target_epsilon,
        "guarantee": guarantee,
        "server_view": server_note,
        "worst_case_epsilon_no_amplification": worst,
        "checkpoints": [
            {
                "round": r,
                "rdp": float(rdp_curve[r - 1]),
                "naive": float(naive[r - 1]),
                "advanced": float(advanced[r - 1]),
            }
            for r in checkpoints
        ],
        "curves": {
            "rounds": rounds_all,
            "rdp": rdp_curve,
            "prv_rounds": prv_rounds,
            "prv": prv_curve,
            "naive": naive,
            "advanced": advanced,
        },
        "participation": {
            "ledger_rounds": ledger.rounds,
            "max_participations": ledger.max_participations,
            "histogram": hist,
            "max": int(counts.max()),
            "mean": float(counts.mean()),
            "never_sampled": int((counts == 0).sum()),
        },
    }

    paths = {
        "md": out / "privacy_report.md",
        "json": out / "privacy_report.json",
        "png": out / "privacy_report.png",
    }
    _plot(
        paths["png"],
        {
            "RDP": (rounds_all, rdp_curve),
            "PRV": (prv_rounds, prv_curve),
            "naive composition": (rounds_all, naive),
            "advanced composition": (rounds_all, advanced),
        },
        hist,
        target_epsilon,
    )
    if example_level is not None:
        report["example_level"] = example_level
    if accounting_seconds is not None:
        report["accounting_seconds_per_round"] = float(accounting_seconds)
    report["files"] = {k: str(p) for k, p in paths.items()}
    payload = to_jsonable(report)
    paths["json"].write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    paths["md"].write_text(_render_report_md(payload))
    logger.info("privacy report written to %s", out)
    return payload


def _render_report_md(rep: dict[str, Any]) -> str:
    final = rep["epsilon_final"]
    lines = [
        "# Privacy report",
        "",
        rep["guarantee"],
        "",
        f"> {rep['server_view']}",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| population N | {rep['population']} |",
        f"| rounds T | {rep['rounds']} |",
        f"| delta | {rep['delta']:.3g} ({rep.get('delta_source', 'privacy.delta')}) |",
        f"| accountant | {rep['accountant']} |",
        f"| history (z, q, rounds) | {', '.join(str(tuple(e)) for e in rep['history'])} |",
    ]
    lines += [f"| epsilon ({name.upper()}) | {_fmt(float(v), 3)} |" for name, v in final.items()]
    if rep["target_epsilon"] is not None:
        lines.append(f"| target epsilon | {rep['target_epsilon']:g} |")
    if rep.get("accounting_seconds_per_round") is not None:
        lines.append(f"| accounting time per round | {float(rep['accounting_seconds_per_round']) * 1e3:.2f} ms |")
    lines += [
        "",
        "## Epsilon by round",
        "",
        "| round | RDP | naive composition | advanced composition |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c['round']} | {_fmt(float(c['rdp']))} | {_fmt(float(c['naive']))} | "
        f"{_fmt(float(c['advanced']))} |"
        for c in rep["checkpoints"]
    ]
    part = rep["participation"]
    lines += [
        "",
        "Naive and advanced composition charge each round its own (eps0, delta/(2T)) and are shown "
        "only for comparison; the accountant's epsilon is the guarantee.",
        "",
        "## Participation",
        "",
        f"- rounds recorded: {part['ledger_rounds']}; cap K: {part['max_participations']}",
        f"- participations per user: max {part['max']}, mean {part['mean']:.2f}; "
        f"never sampled: {part['never_sampled']}",
        "",
        "![privacy report](privacy_report.png)",
        "",
    ]
    ex = rep.get("example_level")
    if ex:
        lines += ["## Example level (DP-SGD inside local training)", "", ex["sentence"], ""]
        lines += [f"- {k}: {v}" for k, v in ex.items() if k not in ("sentence", "per_user")]
        lines.append("")
    return "\n".join(lines)


def _rounds_within(noise: float, q: float, delta: float, target: float, cap: int = 10**7) -> int:
    """Largest T with RDP epsilon of ``[(z, q, T)]`` <= ``target`` (capped at ``cap``).

    RDP is monotone in T and, per (z, q), costs one cached curve, so a doubling
    then bisection search is ~50 cheap evaluations.
    """

    def ok(t: int) -> bool:
        return rdp_epsilon([(noise, q, t)], delta) <= target

    if not ok(1):
        return 0
    lo, hi = 1, 2
    while hi <= cap and ok(hi):
        lo, hi = hi, hi * 2
    if hi > cap:
        return cap
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def privacy_plan(
    population: int,
    per_round: float,
    noise: float,
    rounds: int,
    target_epsilon: float | None = None,
    delta: float | None = None,
    accountants: Sequence[str] = ("rdp", "prv"),
) -> dict[str, Any]:
    """Epsilon a planned run would spend, and the noise a target would need.

    Parameters
    ----------
    population : int
        N users.
    per_round : float
        Expected users per round; ``q = per_round / N``.
    noise : float
        Planned noise multiplier z.
    rounds : int
        Planned rounds T.
    target_epsilon : float or None
        If given, also the noise multiplier that reaches it after T rounds and
        how many rounds the planned noise affords (RDP).
    delta : float or None
        None means ``1 / N**1.1``.
    accountants : sequence of str
        Accountants to tabulate.

    Returns
    -------
    dict
        ``table``: rows ``{"round", <accountant>: epsilon}`` at 10%, 25%, 50% and
        100% of T; ``noise_for_target``: ``{<accountant>: z}``;
        ``rounds_within_target``: how many rounds the planned z affords under
        RDP (may exceed T; capped at 10^7).
    """
    n = int(population)
    if n < 1 or not 0 < float(per_round) <= n:
        raise PrivacyError(f"per_round {per_round} must be in (0, population {n}]")
    if int(rounds) < 1:
        raise PrivacyError(f"rounds {rounds} must be >= 1")
    q = float(per_round) / n
    d = default_delta(n) if delta is None else float(delta)
    history = [(float(noise), q, int(rounds))]
    points = _checkpoints(int(rounds))
    curves = {m: recompute_epsilons(history, d, m, rounds=points) for m in accountants}
    plan: dict[str, Any] = {
        "population": n,
        "per_round": float(per_round),
        "sample_rate": q,
        "noise_multiplier": float(noise),
        "rounds": int(rounds),
        "delta": d,
        "accountants": list(accountants),
        "table": [
            {"round": r, **{m: float(curves[m][i]) for m in accountants}}
            for i, r in enumerate(points)
        ],
        "target_epsilon": target_epsilon,
    }
    if target_epsilon is not None:
        plan["noise_for_target"] = {
            m: noise_for_target_epsilon(float(target_epsilon), q, int(rounds), d, m)
            for m in accountants
        }
        plan["rounds_within_target"] = _rounds_within(float(noise), q, d, float(target_epsilon))
    return to_jsonable(plan)
