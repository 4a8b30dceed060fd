"""Markdown rendering of privacy plans for the ``fedrec`` CLI (pure string functions)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["render_plan_table"]


def _eps(value: Any) -> str:
    v = float(value)
    return "inf" if math.isinf(v) else f"{v:.2f}"


def render_plan_table(plan: dict[str, Any]) -> str:
    """Render ``privacy_plan(...)`` output as a Markdown table plus a summary line.

    Returns
    -------
    str
        e.g.::

            N=1000, 100 users/round (q=0.1), z=1.0, delta=5.01e-04

            | round | RDP | PRV |
            |---:|---:|---:|
            | 10 | 2.61 | 2.09 |
    """
    accs = list(plan.get("accountants") or [k for k in plan["table"][0] if k != "round"])
    head = (
        f"N={plan['population']}, {plan['per_round']:g} users/round "
        f"(q={plan['sample_rate']:.4g}), z={plan['noise_multiplier']:g}, "
        f"delta={plan['delta']:.3g}"
    )
    lines = [
        head,
        "",
        "| round | " + " | ".join(a.upper() for a in accs) + " |",
        "|---:|" + "---:|" * len(accs),
    ]
    lines += [
        f"| {row['round']} | " + " | ".join(_eps(row[a]) for a in accs) + " |"
        for row in plan["table"]
    ]
    target = plan.get("target_epsilon")
    if target is not None:
        noise = plan.get("noise_for_target", {})
        needed = ", ".join(f"{a.upper()} z={float(z):.3f}" for a, z in noise.items())
        lines += [
            "",
            f"Target epsilon {float(target):g} after {plan['rounds']} rounds needs {needed}; "
            f"the planned z={plan['noise_multiplier']:g} affords "
            f"{plan.get('rounds_within_target', '?')} rounds (RDP).",
        ]
    return "\n".join(lines) + "\n"
