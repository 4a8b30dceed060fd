"""`fedrec results DIR`: collect every run's summary.json under DIR into one table and a plot."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

COLUMNS = ("run", "overrides", "rounds", "hr@10", "ndcg@10", "full-hr@10", "full-ndcg@10", "coverage@10", "er@10",
           "epsilon", "delta", "wall_seconds", "users_per_round", "dropouts", "rejected")  # fmt: skip


def collect(root: str | Path) -> list[dict[str, Any]]:
    """One row per ``summary.json`` found below ``root`` (sorted by path)."""
    rows = []
    for path in sorted(Path(root).rglob("summary.json")):
        s = json.loads(path.read_text())
        final = s.get("final", {})
        rows.append({
            "run": str(path.parent.relative_to(root)) if path.parent != Path(root) else path.parent.name,
            "overrides": " ".join(s.get("overrides", [])), "rounds": s.get("rounds"),
            **{k: final.get(k) for k in ("hr@10", "ndcg@10", "full-hr@10", "full-ndcg@10", "coverage@10", "er@10")},
            "epsilon": s.get("epsilon"), "delta": s.get("delta"), "wall_seconds": s.get("wall_seconds"),
            "users_per_round": s.get("users_per_round"), "dropouts": s.get("dropouts"),
            "rejected": sum((s.get("rejected_messages") or {}).values()),
            "_per_round": s.get("per_round", []),
        })  # fmt: skip
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    return head + "".join("| " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |\n" for r in rows)


def plot(rows: list[dict[str, Any]], out: Path, x: str = "round", y: str = "hr@10") -> None:
    """HR@10 per round for every run (and HR@10 vs epsilon when runs report epsilon)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_eps = [r for r in rows if r.get("epsilon") is not None and r.get("hr@10") is not None]
    # Label runs by the overrides that differ between them (a sweep's shared overrides say nothing).
    common = set.intersection(*(set(r["overrides"].split()) for r in rows)) if rows else set()
    labels = {id(r): " ".join(t for t in r["overrides"].split() if t not in common) or r["run"] for r in rows}
    fig, axes = plt.subplots(1, 2 if with_eps else 1, figsize=(11 if with_eps else 6, 4), squeeze=False)
    ax = axes[0][0]
    for r in rows:
        pts = [(h["round"], h[y]) for h in r["_per_round"] if y in h]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=labels[id(r)][:40])
    ax.set_xlabel("round")
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if len(rows) <= 12:
        ax.legend(fontsize=7)
    if with_eps:
        ax2 = axes[0][1]
        # epsilon = inf (DP mode with noise_multiplier=0) is drawn at the right edge and labelled so.
        from experiments.privacy_utility import infinite_epsilon_position

        inf_x = infinite_epsilon_position([r["epsilon"] for r in with_eps])
        xs = [r["epsilon"] if math.isfinite(r["epsilon"]) else inf_x for r in with_eps]
        ax2.scatter(xs, [r["hr@10"] for r in with_eps])
        for x, r in zip(xs, with_eps, strict=True):
            label = labels[id(r)][:40] + ("" if math.isfinite(r["epsilon"]) else " (eps=inf)")
            ax2.annotate(label, (x, r["hr@10"]), fontsize=6)
        ax2.set_xscale("log")
        ax2.set_xlabel("epsilon")
        ax2.set_ylabel("HR@10")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> None:
    root = Path(args.dir)
    rows = collect(root)
    if not rows:
        raise SystemExit(f"no summary.json under {root}: point fedrec results at a run or sweep directory")
    md = to_markdown(rows)
    out = Path(args.out or root)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(md)
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / "results.png")
    from experiments.robustness import write_robustness

    robust_md = write_robustness(rows, root, out)  # strategy x attack x f pivot, when attacks ran
    from experiments.privacy_utility import write_privacy_utility

    dp_md = write_privacy_utility(rows, root, out)  # z rows, mean ± sd over seeds, when DP runs are present
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "_per_round"} for r in rows],
                                              indent=2, default=float))  # fmt: skip
    print(md)
    if robust_md:
        print(robust_md)
    if dp_md:
        print(dp_md)
    print(f"wrote {out / 'results.md'}, results.csv, results.png")


def add_command(sub) -> None:
    p = sub.add_parser("results", help="collect summary.json files into a table and a plot")
    p.add_argument("dir", help="a run directory or a Hydra sweep directory")
    p.add_argument("--out", default=None, help="where to write results.md/.csv/.png (default: DIR)")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    p.set_defaults(func=run)
