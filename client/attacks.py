"""Malicious users on a node: model-poisoning transforms of a cohort's deltas, and the node's attack hook.

The transforms are pure functions on ``CohortDelta`` (a boolean mask picks the malicious users of
the chunk); ``AttackHook`` reads ``cfg.attack`` and applies them, plus the data poisoning of
``recommender/attacks.py``, where ``client/app.py`` trains and evaluates.
"""

from __future__ import annotations

import numpy as np
import torch

from configs.schema import FedrecConfig
from recommender.attacks import (
    ATTACKS,
    DATA_POISONING,
    AttackConfigError,
    choose_targets,
    exposure_hits,
    malicious_users,
    promote_items,
)
from recommender.data import Split
from recommender.local_training import CohortDelta

_PROMOTION = ("item_promotion", "targeted_promotion")


def _factors(mask: torch.Tensor, value: float) -> torch.Tensor:
    return torch.where(mask, torch.tensor(value, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))


def boost(delta: CohortDelta, mask: torch.Tensor, lam: float) -> CohortDelta:
    """Boosted update: malicious users (``mask`` (U,) bool) send ``lam * delta``."""
    return delta.scale(_factors(mask, lam))


def sign_flip(delta: CohortDelta, mask: torch.Tensor, scale: float = 1.0) -> CohortDelta:
    """Sign flip: malicious users send ``-scale * delta``."""
    return delta.scale(_factors(mask, -scale))


def gaussian_noise(delta: CohortDelta, mask: torch.Tensor, std: float, generator: torch.Generator) -> CohortDelta:
    """Gaussian attack: malicious users replace their update with N(0, std^2) noise on the
    coordinates they would have touched (their item rows and the whole MLP)."""
    rows_bad = mask[delta.row_user]
    item = torch.where(rows_bad[:, None], torch.randn(delta.item_delta.shape, generator=generator,
                                                       dtype=delta.item_delta.dtype) * std, delta.item_delta)  # fmt: skip
    mlp = torch.where(mask[:, None], torch.randn(delta.mlp_delta.shape, generator=generator,
                                                 dtype=delta.mlp_delta.dtype) * std, delta.mlp_delta)  # fmt: skip
    return CohortDelta(delta.rows, delta.row_user, item, mlp)


def boost_item_rows(delta: CohortDelta, mask: torch.Tensor, items: np.ndarray, lam: float) -> CohortDelta:
    """Targeted promotion (FedRecAttack-style, simplified): malicious users scale only the rows of
    ``items`` by ``lam``, leaving the rest of their update honest, so the poisoned mass sits on the
    target items' embeddings while the update as a whole stays close to the consensus."""
    on = mask[delta.row_user] & torch.from_numpy(np.isin(delta.rows.numpy(), items))
    factor = torch.where(on, torch.tensor(lam, dtype=delta.item_delta.dtype),
                         torch.tensor(1.0, dtype=delta.item_delta.dtype))  # fmt: skip
    return CohortDelta(delta.rows, delta.row_user, delta.item_delta * factor[:, None], delta.mlp_delta)


class AttackHook:
    """What ``cfg.attack`` does on this node: fake data at training, a poisoned update, honest-only eval.

    Parameters
    ----------
    cfg : FedrecConfig
        ``attack.name`` (see ``recommender.attacks.ATTACKS``), ``attack.fraction`` of the population
        malicious (seeded by ``cfg.seed``), active from ``attack.start_round``; ``attack.params``:
        ``lam`` (boosted, default 10; targeted_promotion, default 10), ``scale`` (sign_flip, 1),
        ``std`` (gaussian, 0.01), ``n_targets`` (promotion, 5), ``targets`` (explicit item list),
        ``repeat`` (promotion, 3).
    split : Split
        The population (item popularity picks the targets).
    """

    def __init__(self, cfg: FedrecConfig, split: Split) -> None:
        a = cfg.attack
        if a.name not in ATTACKS:
            raise AttackConfigError(f"attack.name={a.name!r}: choose one of {'|'.join(ATTACKS)}")
        self.name, self.start, self.params, self.seed = a.name, int(a.start_round), dict(a.params), cfg.seed
        n = cfg.data.population
        self.malicious = np.zeros(n, bool)
        if a.name != "none":
            self.malicious[malicious_users(n, a.fraction, cfg.seed)] = True
        self.targets: np.ndarray | None = None
        if a.name in _PROMOTION:
            if self.params.get("targets"):
                self.targets = np.sort(np.asarray(list(self.params["targets"]), np.int64))
            else:
                pop = np.bincount(split.train_items, minlength=split.n_items)
                self.targets = choose_targets(pop, int(self.params.get("n_targets", 5)), cfg.seed)

    def active(self, rnd: int) -> bool:
        return self.name != "none" and rnd >= self.start

    def positives(self, user: int, items: np.ndarray, rnd: int) -> np.ndarray:
        """The user's training positives, with fake target interactions if it is a data poisoner."""
        if self.active(rnd) and self.name in DATA_POISONING and self.malicious[user]:
            return promote_items(items, self.targets, int(self.params.get("repeat", 3)))
        return items

    def poison(self, delta: CohortDelta, users: np.ndarray, rnd: int) -> CohortDelta:
        """The chunk's deltas after its malicious users' model poisoning (identity when inactive)."""
        if not self.active(rnd) or self.name == "item_promotion":
            return delta
        mask = torch.from_numpy(self.malicious[users])
        if not bool(mask.any()):
            return delta
        p = self.params
        if self.name == "boosted":
            return boost(delta, mask, float(p.get("lam", 10.0)))
        if self.name == "sign_flip":
            return sign_flip(delta, mask, float(p.get("scale", 1.0)))
        if self.name == "gaussian":
            gen = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, rnd, int(users[0]), 13])
                                                    .integers(2**62)))  # fmt: skip
            return gaussian_noise(delta, mask, float(p.get("std", 0.01)), gen)
        return boost_item_rows(delta, mask, self.targets, float(p.get("lam", 10.0)))

    def honest(self, users: np.ndarray) -> np.ndarray:
        """Users evaluated: the honest ones (metrics are about the users an attack hurts)."""
        return users[~self.malicious[users]]

    def exposure(self, top_items: np.ndarray) -> int:
        """How many of these users' top-k lists (U, k) show a target item (0 without targets)."""
        return int(exposure_hits(top_items, self.targets).sum()) if self.targets is not None else 0
