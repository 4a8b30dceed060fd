"""Privacy-utility report of a DP sweep (used by `fedrec results`): one row per noise setting,
mean ± sd over seeds, and HR@10 against epsilon with error bars."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from experiments.seed_stats import mean_sd

METRICS = ("hr@10", "ndcg@10", "full-ndcg@10")


def dp_facts(run_dir: Path) -> dict[str, Any] | None:
    """Privacy mode, noise multiplier z, sample rate q, clip norm C and seed of a run, from its
    resolved ``config.yaml``; None when the file is absent or DP is off."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    cfg = yaml.safe_load(path.read_text()) or {}
    p = cfg.get("privacy", {})
    if p.get("mode", "off") in ("off", False, None):  # YAML 1.1 reads an unquoted off as False
        return None
    return {"mode": p["mode"], "z": float(p.get("noise_multiplier", 0.0)), "q": float(p.get("sample_rate", 0.0)),
            "clip": float(p.get("clip_norm", 0.0)), "seed": int(cfg.get("seed", 0))}  # fmt: skip


def infinite_epsilon_position(epsilons: list[float]) -> float:
    """Where a plot draws epsilon = inf (DP with z = 0): at 3x the largest finite epsilon, so it
    sits at the right edge of a log axis and is labelled as such."""
    finite = [e for e in epsilons if math.isfinite(e)]
    return 3 * max(finite) if finite else 1.0


def group_by_noise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collapse DP runs (rows carrying ``dp_facts``) that differ only in the seed.

    Returns one dict per (mode, q, C, z), sorted by z: ``seeds``, ``epsilon`` (mean over seeds,
    inf when any seed's is inf), ``epsilon_sd``, and ``<metric>`` / ``<metric>_sd`` for ``METRICS``
    over the seeds that reported it.
    """
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if "z" in r:
            groups[(r["mode"], r["q"], r["clip"], r["z"])].append(r)
    out = []
    for (mode, q, clip, z), runs in sorted(groups.items(), key=lambda kv: kv[0][3]):
        eps = [float(r["epsilon"]) if r.get("epsilon") is not None else math.inf for r in runs]
        g: dict[str, Any] = {"mode": mode, "q": q, "clip": clip, "z": z, "seeds": sorted(r["seed"] for r in runs)}
        if all(math.isfinite(e) for e in eps):
            g["epsilon"], g["epsilon_sd"] = mean_sd(eps)
        else:
            g["epsilon"], g["epsilon_sd"] = math.inf, 0.0
        for m in METRICS:
            vals = [float(r[m]) for r in runs if r.get(m) is not None]
            g[m], g[f"{m}_sd"] = mean_sd(vals) if vals else (None, None)
        out.append(g)
    return out


def _pm(v: float | None, sd: float | None, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f} ± {sd:.{digits}f}"


def table_markdown(groups: list[dict[str, Any]]) -> str:
    """Markdown: z, epsilon, seeds, then mean ± sd of every metric."""
    head = "| z | epsilon | seeds | " + " | ".join(METRICS) + " |\n|---:|---:|---|" + "---:|" * len(METRICS) + "\n"
    body = ""
    for g in groups:
        eps = "inf" if not math.isfinite(g["epsilon"]) else (
            f"{g['epsilon']:.2f}" + (f" ± {g['epsilon_sd']:.2f}" if g["epsilon_sd"] > 0.005 else ""))
        seeds = ",".join(str(s) for s in g["seeds"])
        body += f"| {g['z']:g} | {eps} | {seeds} | " + " | ".join(_pm(g[m], g[f'{m}_sd']) for m in METRICS) + " |\n"
    return head + body


def plot_privacy_utility(groups: list[dict[str, Any]], out: Path) -> None:
    """HR@10 (mean ± sd over seeds) against epsilon on a log axis; epsilon = inf drawn at the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    pts = [g for g in groups if g["hr@10"] is not None]
    inf_x = infinite_epsilon_position([g["epsilon"] for g in pts])
    finite = [g["epsilon"] for g in pts if math.isfinite(g["epsilon"])]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for g in pts:
        x = g["epsilon"] if math.isfinite(g["epsilon"]) else inf_x
        ax.errorbar([x], [g["hr@10"]], yerr=[g["hr@10_sd"]], fmt="o", capsize=3, color="C0")
        label = f"z={g['z']:g}" + ("" if math.isfinite(g["epsilon"]) else " (eps=inf)")
        ax.annotate(label, (x, g["hr@10"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ticks = sorted({g["epsilon"] if math.isfinite(g["epsilon"]) else inf_x for g in pts})
    ax.set_xticks(ticks, ["inf" if t == inf_x and t not in finite else f"{t:.3g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("epsilon (user level)")
    ax.set_ylabel("HR@10 (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def write_privacy_utility(rows: list[dict[str, Any]], root: Path, out: Path) -> str | None:
    """Add DP facts to ``rows`` and write ``privacy_utility.md``/``.png`` when any run has DP on;
    returns the markdown (None when no run used DP)."""
    for r in rows:
        facts = dp_facts(root / r["run"]) if (root / r["run"]).is_dir() else dp_facts(root)
        if facts:
            r.update(facts)
    groups = group_by_noise(rows)
    if not groups:
        return None
    md = table_markdown(groups)
    (out / "privacy_utility.md").write_text(md)
    plot_privacy_utility(groups, out / "privacy_utility.png")
    return md
