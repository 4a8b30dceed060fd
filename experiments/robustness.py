"""Robustness sweep report: HR@10 / ER@10 per strategy x attack x malicious fraction (used by `fedrec results`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml


def run_facts(run_dir: Path) -> dict[str, Any] | None:
    """Strategy label, attack and fraction of a run, from its resolved ``config.yaml`` (None if absent)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    cfg = yaml.safe_load(path.read_text()) or {}
    s, a = cfg.get("strategy", {}), cfg.get("attack", {})
    label = s.get("name", "?")
    if label == "trust":
        label = f"trust:{s.get('trust', {}).get('scorer', 'constant')}"
    # Parameters are part of the attack's name: sign_flip with scale 1 and with scale 10 are different cells.
    params = ",".join(f"{k}={v}" for k, v in sorted((a.get("params") or {}).items()) if k != "targets")
    attack = a.get("name", "none") + (f"({params})" if params else "")
    return {"strategy": label, "attack": attack, "fraction": float(a.get("fraction", 0.0))}


def _cell(r: dict[str, Any]) -> str:
    hr, er = r.get("hr@10"), r.get("er@10")
    text = "" if hr is None else f"{hr:.4f}"
    return text + (f" / {er:.3f}" if er is not None else "")


def pivot_markdown(rows: list[dict[str, Any]]) -> str:
    """Rows: strategy x attack; columns: fraction f; cells: ``HR@10`` (``/ ER@10`` with targets).

    A run with ``attack.fraction=0`` is that attack's clean cell (same evaluation, no poisoner).
    """
    table: dict[tuple[str, str], dict[float, str]] = defaultdict(dict)
    fractions = sorted({r["fraction"] for r in rows if "fraction" in r})
    for r in rows:
        if "fraction" in r:
            table[(r["strategy"], r["attack"])][r["fraction"]] = _cell(r)
    head = "| strategy | attack | " + " | ".join(f"f={f:g}" for f in fractions) + " |\n"
    head += "|---|---|" + "---|" * len(fractions) + "\n"
    body = "".join(f"| {s} | {a} | " + " | ".join(cells.get(f, "") for f in fractions) + " |\n"
                   for (s, a), cells in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])))  # fmt: skip
    return head + body


def plot_robustness(rows: list[dict[str, Any]], out: Path) -> None:
    """One panel per attack: HR@10 against the malicious fraction, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = sorted({r["attack"] for r in rows if "fraction" in r})
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.5 * len(attacks), 3.6), squeeze=False)
    for ax, attack in zip(axes[0], attacks, strict=True):
        lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in rows:
            if r.get("attack") == attack and r.get("hr@10") is not None:
                lines[r["strategy"]].append((r["fraction"], r["hr@10"]))
        for name, pts in sorted(lines.items()):
            ax.plot(*zip(*sorted(pts), strict=True), marker="o", label=name)
        ax.set_title(attack)
        ax.set_xlabel("malicious fraction f")
        ax.set_ylabel("HR@10 (honest users)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def write_robustness(rows: list[dict[str, Any]], root: Path, out: Path) -> str | None:
    """Add strategy/attack/fraction to ``rows`` and write ``robustness.md``/``.png`` when any run has
    an attack configured; returns the markdown (None when there is no attack run)."""
    for r in rows:
        facts = run_facts(root / r["run"]) if (root / r["run"]).is_dir() else run_facts(root)
        if facts:
            r.update(facts)
    if not any(r.get("attack", "none") not in ("none", "") for r in rows):
        return None
    md = pivot_markdown(rows)
    (out / "robustness.md").write_text(md)
    plot_robustness(rows, out / "robustness.png")
    return md
