"""User-level differential privacy for fedrec: clipping, noise, sampling, accounting, reports.

A plain library (no Flower): numpy/torch in, numbers and files out.
"""

from privacy.accountant import (
    HistoryEntry,
    PrivacyAccountant,
    available_accountants,
    compact_history,
    create_accountant,
    epsilon_from_history,
    noise_for_target_epsilon,
    pld_epsilon,
    prv_epsilon,
    rdp_epsilon,
    recompute_epsilons,
    register_accountant,
)
from privacy.budget import check_budget
from privacy.cli_helpers import render_plan_table
from privacy.composition import advanced_composition, naive_composition
from privacy.config import PrivacyConfig, default_delta
from privacy.errors import PrivacyBudgetExceeded, PrivacyError
from privacy.ledger import ParticipationLedger
from privacy.mechanism import (
    add_gaussian_noise,
    central_noise_std,
    clip_factors,
    clip_updates,
    effective_noise_multiplier,
    noise_std,
)
from privacy.report import build_privacy_report, privacy_plan
from privacy.sampling import fixed_size_sample, poisson_sample, sample_users

__all__ = [
    "HistoryEntry",
    "ParticipationLedger",
    "PrivacyAccountant",
    "PrivacyBudgetExceeded",
    "PrivacyConfig",
    "PrivacyError",
    "add_gaussian_noise",
    "advanced_composition",
    "available_accountants",
    "build_privacy_report",
    "central_noise_std",
    "check_budget",
    "clip_factors",
    "clip_updates",
    "compact_history",
    "create_accountant",
    "default_delta",
    "effective_noise_multiplier",
    "epsilon_from_history",
    "fixed_size_sample",
    "naive_composition",
    "noise_for_target_epsilon",
    "noise_std",
    "pld_epsilon",
    "poisson_sample",
    "privacy_plan",
    "prv_epsilon",
    "rdp_epsilon",
    "recompute_epsilons",
    "register_accountant",
    "render_plan_table",
    "sample_users",
]
