"""User-level differential privacy for fedrec: clipping, noise, sampling, accounting, reports.

A plain library (no Flower): numpy/torch in, numbers and files out. The names below are
imported on first use (PEP 562): ``privacy.config`` is read by every process that parses a run
config, including each deployed ClientApp process, which must not pay for Opacus and SciPy.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "HistoryEntry": "privacy.accountant",
    "ParticipationLedger": "privacy.ledger",
    "PrivacyAccountant": "privacy.accountant",
    "PrivacyBudgetExceeded": "privacy.errors",
    "PrivacyConfig": "privacy.config",
    "PrivacyError": "privacy.errors",
    "add_gaussian_noise": "privacy.mechanism",
    "advanced_composition": "privacy.composition",
    "available_accountants": "privacy.accountant",
    "build_privacy_report": "privacy.report",
    "central_noise_std": "privacy.mechanism",
    "check_budget": "privacy.budget",
    "clip_factors": "privacy.mechanism",
    "clip_updates": "privacy.mechanism",
    "compact_history": "privacy.accountant",
    "create_accountant": "privacy.accountant",
    "default_delta": "privacy.config",
    "effective_noise_multiplier": "privacy.mechanism",
    "epsilon_from_history": "privacy.accountant",
    "fixed_size_sample": "privacy.sampling",
    "naive_composition": "privacy.composition",
    "noise_for_target_epsilon": "privacy.accountant",
    "noise_std": "privacy.mechanism",
    "pld_epsilon": "privacy.accountant",
    "poisson_sample": "privacy.sampling",
    "privacy_plan": "privacy.report",
    "prv_epsilon": "privacy.accountant",
    "rdp_epsilon": "privacy.accountant",
    "recompute_epsilons": "privacy.accountant",
    "register_accountant": "privacy.accountant",
    "render_plan_table": "privacy.cli_helpers",
    "sample_users": "privacy.sampling",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
