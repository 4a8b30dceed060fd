"""Build the round's aggregation strategy by name (``strategy=fedavg|trust|median|...``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from strategies.robust import RULES, RobustAggregation
from strategies.row_clip import ItemRowClip
from strategies.trust import create_scorer
from strategies.trust_fedavg import TrustWeightedFedAvg

if TYPE_CHECKING:
    from configs.schema import FedrecConfig
    from recommender.ncf import NeuMFShape

log = logging.getLogger(__name__)


def _scorer(cfg: FedrecConfig, shape: NeuMFShape):
    t = cfg.strategy.trust
    if t.scorer == "constant":
        return create_scorer("constant", value=t.value)
    ramp = {"cos_low": t.cos_low, "cos_high": t.cos_high, "norm_factor": t.norm_factor,
            "cos_z_low": t.cos_z_low, "cos_z_high": t.cos_z_high}  # fmt: skip
    if t.scorer == "reputation":
        return create_scorer("reputation", decay=t.decay, prior=t.prior, **ramp)
    ref_fn = None
    if t.reference == "root":
        from client.node_data import local_split
        from strategies.root_reference import RootReference

        split = local_split(cfg.data)  # the server holds its own copy of the root users' data
        users = np.sort(np.random.default_rng([cfg.seed, 61]).choice(split.n_users, t.root_users, replace=False))
        ref_fn = RootReference(split, users, shape, cfg.client, cfg.seed)
    return create_scorer("update", reference=t.reference, reference_fn=ref_fn, **ramp)


def create_strategy(cfg: FedrecConfig, shape: NeuMFShape, fixed_denominator: float | None = None
                    ) -> TrustWeightedFedAvg:  # fmt: skip
    """The strategy named by ``cfg.strategy.name``.

    ``fedavg``: weighted mean, constant trust, no threshold (the arithmetic of Flower's FedAvg,
    streamed). ``trust``: trust-weighted FedAvg with ``strategy.trust.scorer``. ``median``,
    ``trimmed``, ``krum``, ``multikrum``, ``bulyan``: Flower's rules over per-user updates.
    Rules that need individual updates refuse secure aggregation, which hides them.
    """
    s = cfg.strategy
    common = {"server_lr": s.server_lr, "server_optimizer": s.server_optimizer,
              "fixed_denominator": fixed_denominator, "item_block": shape.n_items * 3 * shape.factors,
              "item_aggregation": s.item_aggregation, "item_lr": s.item_lr}  # fmt: skip
    secagg = cfg.secure_agg.enabled
    if s.name in RULES:
        if secagg:
            raise ValueError(f"strategy={s.name} needs individual updates, which secure aggregation hides; "
                             "use strategy=trust strategy.trust.scorer=reputation or secure_agg=off")  # fmt: skip
        return RobustAggregation(s.name, s.robust.assumed_fraction, s.robust.beta, **common)
    if s.name == "fedavg":
        return TrustWeightedFedAvg(create_scorer("constant", value=1.0), threshold=0.0, **common)
    scorer = _scorer(cfg, shape)
    if secagg and scorer.uses_updates:
        raise ValueError("strategy.trust.scorer=update needs individual updates, which secure aggregation hides; "
                         "use strategy.trust.scorer=reputation (weights fixed before the round)")  # fmt: skip
    strategy = TrustWeightedFedAvg(scorer, threshold=s.trust.threshold, **common)
    t = s.trust
    if scorer.uses_updates and (t.row_clip_factor > 0 or t.row_zero_factor > 0):
        strategy.row_clip = ItemRowClip(shape.n_items, shape.factors, t.row_clip_factor or np.inf, t.row_clip_min_users,
                                        t.row_zero_factor or np.inf, t.row_clip_reference)  # fmt: skip
    # Under secure aggregation nodes send only masked sums; reputation then learns from reported norms.
    strategy.needs_individual_updates = scorer.needs_updates and not secagg
    return strategy
