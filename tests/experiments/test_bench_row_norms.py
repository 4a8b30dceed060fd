"""`fedrec bench row-norms`' item report: outlying rows concentrated on targets vs scattered."""

from __future__ import annotations

import numpy as np

from experiments.bench_row_norms import item_outlier_share


def test_item_outlier_share_separates_promoted_items():
    rng = np.random.default_rng(0)
    users, items = 60, 12
    ratio = rng.uniform(0.1, 1.5, size=(users, items))
    ratio[rng.integers(10, users, 5), rng.integers(1, items, 5)] = 4.0  # a few scattered honest outliers
    honest = np.arange(users) >= 10
    targets = np.zeros(items, bool)
    targets[0] = True
    ratio[:10, 0] = 1.0  # promoters' target row before the boost: ordinary; x10 it is far out
    res = item_outlier_share(ratio, np.ones_like(ratio, bool), honest, targets, lam=10.0)
    assert res["target_items"] == [round(10 / 60, 4)]
    assert res["honest_max_count"] <= 2 and res["honest_max"] <= 2 / 50
    assert res["honest_items"][0] == 0.0  # the median item has no outlier
