"""Robustness sweep report: HR@10 / ER@10 per strategy x attack x malicious fraction (used by `fedrec results`)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from experiments.seed_stats import mean_sd
from strategies.config import RobustConfig, TrustConfig

ROBUST_RULES = ("median", "trimmed", "krum", "multikrum", "bulyan")


def _non_default(section: dict[str, Any], defaults: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """``k=v,...`` for the keys of ``section`` whose value differs from today's default."""
    diff = {k: v for k, v in section.items() if k in defaults and k not in skip and v != defaults[k]}
    return ",".join(f"{k}={v}" for k, v in sorted(diff.items()))


def strategy_label(strategy: dict[str, Any]) -> str:
    """``fedavg``, ``trust:update``, ``median``, ... with ``(k=v,...)`` for every trust (or robust)
    setting that differs from the current defaults, so variants of one strategy are separate rows
    (and a run made under older defaults says so)."""
    label = strategy.get("name", "?")
    if label == "trust":
        t = strategy.get("trust", {})
        label = f"trust:{t.get('scorer', 'constant')}"
        extra = _non_default(t, asdict(TrustConfig()), skip=("scorer",))
    elif label in ROBUST_RULES:
        extra = _non_default(strategy.get("robust", {}), asdict(RobustConfig()))
    else:
        extra = ""
    return label + (f"({extra})" if extra else "")


def run_facts(run_dir: Path) -> dict[str, Any] | None:
    """Strategy label, attack, fraction and seed of a run, from its resolved ``config.yaml`` (None if absent)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    cfg = yaml.safe_load(path.read_text()) or {}
    a = cfg.get("attack", {})
    # Parameters are part of the attack's name: sign_flip with scale 1 and with scale 10 are different cells.
    params = ",".join(f"{k}={v}" for k, v in sorted((a.get("params") or {}).items()) if k != "targets")
    attack = a.get("name", "none") + (f"({params})" if params else "")
    return {"strategy": strategy_label(cfg.get("strategy", {})), "attack": attack,
            "fraction": float(a.get("fraction", 0.0)), "seed": int(cfg.get("seed", 0))}  # fmt: skip


def group_cells(rows: list[dict[str, Any]]) -> dict[tuple[str, str, float], dict[str, Any]]:
    """(strategy, attack, fraction) -> ``seeds``, ``hr@10`` / ``hr@10_sd`` and ``er@10`` / ``er@10_sd``
    (mean and sample sd over the seeds that reported the metric; None when none did)."""
    runs: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if "fraction" in r:
            runs[(r["strategy"], r["attack"], r["fraction"])].append(r)
    cells = {}
    for key, rs in runs.items():
        cell: dict[str, Any] = {"seeds": sorted(r.get("seed", 0) for r in rs)}
        for m in ("hr@10", "er@10"):
            vals = [float(r[m]) for r in rs if r.get(m) is not None]
            cell[m], cell[f"{m}_sd"] = mean_sd(vals) if vals else (None, None)
        cells[key] = cell
    return cells


def _cell(c: dict[str, Any]) -> str:
    n = len(c["seeds"])
    hr, er = c["hr@10"], c["er@10"]
    text = "" if hr is None else f"{hr:.4f}" + (f" ± {c['hr@10_sd']:.4f}" if n > 1 else "")
    text += "" if er is None else f" / {er:.3f}" + (f" ± {c['er@10_sd']:.3f}" if n > 1 else "")
    return text + (f" (n={n})" if n > 1 else "")


def pivot_markdown(cells: dict[tuple[str, str, float], dict[str, Any]]) -> str:
    """Rows: strategy x attack; columns: fraction f; cells (from :func:`group_cells`): ``HR@10``
    (``/ ER@10`` with targets), as mean ± sd over seeds with ``(n=...)`` when several seeds ran.

    A run with ``attack.fraction=0`` is that attack's clean cell (same evaluation, no poisoner).
    """
    table: dict[tuple[str, str], dict[float, str]] = defaultdict(dict)
    for (s, a, f), c in cells.items():
        table[(s, a)][f] = _cell(c)
    fractions = sorted({f for _, _, f in cells})
    head = "| strategy | attack | " + " | ".join(f"f={f:g}" for f in fractions) + " |\n"
    head += "|---|---|" + "---|" * len(fractions) + "\n"
    body = "".join(f"| {s} | {a} | " + " | ".join(cells_.get(f, "") for f in fractions) + " |\n"
                   for (s, a), cells_ in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])))  # fmt: skip
    return head + body


def paired_differences(rows: list[dict[str, Any]], baseline: str = "fedavg") -> list[dict[str, Any]]:
    """Relative HR@10 difference of every strategy against ``baseline`` on the same attack, fraction
    and seed (same seed: same malicious users, training randomness and evaluation).

    Returns one dict per (strategy, attack, fraction) that shares at least one seed with the
    baseline: ``seeds``, ``diffs`` (``hr / hr_baseline - 1`` per seed), ``mean``, ``sd``.
    """
    hr = {(r["strategy"], r["attack"], r["fraction"], r.get("seed", 0)): float(r["hr@10"])
          for r in rows if "fraction" in r and r.get("hr@10") is not None}  # fmt: skip
    pairs: dict[tuple[str, str, float], dict[int, float]] = defaultdict(dict)
    for (s, a, f, seed), v in sorted(hr.items()):
        base = hr.get((baseline, a, f, seed))
        if s != baseline and base:
            pairs[(s, a, f)][seed] = v / base - 1.0
    out = []
    for (s, a, f), by_seed in sorted(pairs.items()):
        mean, sd = mean_sd(list(by_seed.values()))
        out.append({"strategy": s, "baseline": baseline, "attack": a, "fraction": f, "seeds": sorted(by_seed),
                    "diffs": [by_seed[k] for k in sorted(by_seed)], "mean": mean, "sd": sd})  # fmt: skip
    return out


def paired_markdown(pairs: list[dict[str, Any]]) -> str:
    """Markdown of ``paired_differences``: per-seed and mean ± sd relative HR@10 difference."""
    head = "| strategy | vs | attack | f | seeds | HR@10 difference per seed | mean ± sd |\n|---|---|---|---|---|---|---|\n"
    return head + "".join(
        f"| {p['strategy']} | {p['baseline']} | {p['attack']} | {p['fraction']:g} | "
        f"{','.join(map(str, p['seeds']))} | {', '.join(f'{d:+.2%}' for d in p['diffs'])} | "
        f"{p['mean']:+.2%} ± {p['sd']:.2%} |\n" for p in pairs)  # fmt: skip


def clean_cells(cells: dict[tuple[str, str, float], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each strategy's clean cell: a run of any attack at f = 0 (no user is malicious, so every
    attack's f = 0 run is the same clean run; the one with the most seeds is taken)."""
    out: dict[str, dict[str, Any]] = {}
    for (s, _, f), c in sorted(cells.items()):
        if f == 0 and c["hr@10"] is not None and len(c["seeds"]) > len(out.get(s, {}).get("seeds", [])):
            out[s] = c
    return out


def plot_robustness(cells: dict[tuple[str, str, float], dict[str, Any]], out: Path) -> None:
    """One panel per attack: HR@10 (mean ± sd over seeds) against the malicious fraction, one line
    per strategy, starting from the strategy's clean run (``clean_cells``) when the attack has no
    f = 0 run of its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = clean_cells(cells)
    attacks = sorted({a for _, a, f in cells if f > 0})
    colour = {s: f"C{i % 10}" for i, s in enumerate(sorted({s for s, _, _ in cells}))}  # one colour per strategy
    ncols = min(max(len(attacks), 1), 4)
    nrows = -(-max(len(attacks), 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(attacks):]:
        ax.set_visible(False)
    for ax, attack in zip(axes.flat, attacks, strict=False):
        lines: dict[str, dict[float, tuple[float, float]]] = defaultdict(dict)
        for (s, a, f), c in cells.items():
            if a == attack and c["hr@10"] is not None:
                lines[s][f] = (c["hr@10"], c["hr@10_sd"])
        for name, pts in sorted(lines.items()):
            if 0.0 not in pts and name in clean:
                pts[0.0] = (clean[name]["hr@10"], clean[name]["hr@10_sd"])
            xs = sorted(pts)
            ax.errorbar(xs, [pts[x][0] for x in xs], yerr=[pts[x][1] for x in xs], marker="o", capsize=3,
                        color=colour[name], label=name[:48])  # fmt: skip
        ax.set_title(attack, fontsize=8)
        ax.set_xlabel("malicious fraction f")
        ax.set_ylabel("HR@10 (honest users)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def write_robustness(rows: list[dict[str, Any]], root: Path, out: Path) -> str | None:
    """Add strategy/attack/fraction/seed to ``rows`` and write ``robustness.md``/``.png``/``.json``
    (the pivot, then the paired differences against FedAvg) when any run has an attack configured;
    returns the markdown (None when there is no attack run)."""
    for r in rows:
        facts = run_facts(root / r["run"]) if (root / r["run"]).is_dir() else run_facts(root)
        if facts:
            r.update(facts)
    if not any(r.get("attack", "none") not in ("none", "") for r in rows):
        return None
    cells = group_cells(rows)
    pairs = paired_differences(rows)
    md = pivot_markdown(cells)
    if pairs:
        md += "\nPaired against FedAvg (same attack, f and seed):\n\n" + paired_markdown(pairs)
    (out / "robustness.md").write_text(md)
    flat = [{"strategy": s, "attack": a, "fraction": f, **c} for (s, a, f), c in sorted(cells.items())]
    (out / "robustness.json").write_text(json.dumps({"cells": flat, "paired": pairs}, indent=2))
    plot_robustness(cells, out / "robustness.png")
    return md
