"""Shared fixtures: small synthetic populations and the development copy of ML-100K when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recommender.data import generate_synthetic, leave_one_out

SHARED_ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def small_population():
    return generate_synthetic(n_users=60, n_items=300, mean_interactions=30, seed=3)


@pytest.fixture(scope="session")
def small_split(small_population):
    return leave_one_out(small_population)


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory):
    """A verified ML-100K copy in a temp cache, from the development copy (skips when absent)."""
    if not SHARED_ML100K.is_dir():
        pytest.skip("development copy of ML-100K not present")
    from recommender.data import fetch_movielens

    return fetch_movielens(tmp_path_factory.mktemp("cache"), local_copy=SHARED_ML100K)


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
    """Tests never write into the real user cache."""
    if "FEDREC_DATA" not in os.environ:
        monkeypatch.setenv("FEDREC_DATA", str(tmp_path / "fedrec-cache"))
