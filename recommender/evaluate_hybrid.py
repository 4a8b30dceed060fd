"""Offline evaluation of every strategy and the fused list on the leave-one-out split.

Protocol: strategies are built on the train split and scored against the validation item (ALS is
tuned and the fusion weights are learned there); then rebuilt on train + validation with the tuned
ALS hyper-parameters and scored against the test item, excluding train + validation from the
ranking (full ranking over the whole catalogue) and against the 99 sampled negatives.

The federated NeuMF is not rebuilt here (it is trained by the clients): for the test phase pass
``test_run_dir``, a federated run of the same configuration with ``data.fit_on=trainval``, so that
every strategy has seen the validation interactions at test time; without it the test phase uses
the train-only global model and the NeuMF (and the federated item embeddings inside the content
and GNN strategies) is one interaction per user behind the rest.

With one held-out item per user the learned fusion weights are noisy. ``early_run_dir`` (a run with
``data.fit_on=train_minus_last``) adds an earlier phase: every strategy is built on the train rows
without each user's most recent one and scored against that interaction
(:func:`recommender.data.one_step_earlier`), and the fusion weights are learned on both held-out
interactions of every user (2U rows). ALS keeps the hyper-parameters tuned on the validation item.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from recommender.data import Dataset, Split, one_step_earlier, with_val_in_train
from recommender.fusion import (
    combsum_fuse,
    fuse_scores,
    learn_weights,
    ranks_from_scores,
    rrf_fuse,
    standardize,
    start_weights,
)
from recommender.hybrid import HybridConfig, HybridRecommender, RecommenderError, Request
from recommender.metrics import (
    full_ndcg,
    full_ranking_metrics,
    full_ranks,
    ndcg_per_user,
    paired_bootstrap_gain,
    rank_metrics,
    sampled_report,
    top_k,
)
from recommender.mmr import intra_list_diversity, jaccard_matrix, mmr
from recommender.trust_items import apply_trust

log = logging.getLogger(__name__)
K = 10


def target_times(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps of each user's validation and test interactions (the request times), (U,) each."""
    rows = np.arange(ds.n_interactions)
    order = np.lexsort((rows, ds.timestamps, ds.users))
    ends = np.cumsum(np.bincount(ds.users, minlength=ds.n_users))
    return ds.timestamps[order[ends - 2]], ds.timestamps[order[ends - 1]]


def score_matrices(rec: HybridRecommender, now: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of every known user for every strategy, each (U, I), requests at times ``now``."""
    sp = rec.split
    users = np.arange(sp.n_users)
    out: dict[str, np.ndarray] = {}
    for name in ("collaborative", "neumf", "gnn"):
        if name in rec.strategies:
            out[name] = np.asarray(rec.strategies[name].score_users(users), np.float32)
    content = np.empty((sp.n_users, sp.n_items), np.float32)
    context = np.empty_like(content)
    for u in users:
        lo, hi = sp.train_indptr[u], sp.train_indptr[u + 1]
        req = Request(int(u), sp.train_items[lo:hi], sp.train_ratings[lo:hi], sp.train_timestamps[lo:hi],
                      float(now[u]))  # fmt: skip
        content[u] = rec.content.score_history(req.items, req.ratings, req.times, req.now)
        context[u] = rec.context.score(req.now)
    if "content" in rec.cfg.strategies:
        out["content"] = content
    if "context" in rec.cfg.strategies:
        out["context"] = context
    out["popularity"] = np.broadcast_to(rec.context.score_popularity(), content.shape).copy()
    return out


def history_exclude(sp: Split) -> np.ndarray:
    ex = np.zeros((sp.n_users, sp.n_items), bool)
    for u in range(sp.n_users):
        ex[u, sp.train_of(u)] = True
    return ex


def _report(scores: np.ndarray, target: np.ndarray, exclude: np.ndarray, negatives: np.ndarray,
            genres: np.ndarray, seed: int) -> dict:  # fmt: skip
    u = np.arange(len(target))
    ranks, lists = full_ranks(scores, target, exclude, seed), top_k(scores, K, exclude, seed)
    samp = sampled_report(scores[u, target], scores[u[:, None], negatives], K, seed)
    return {"full": full_ranking_metrics(ranks, lists, scores.shape[1], K), "sampled": samp,
            "ild@10": intra_list_diversity(lists, genres),
            "per_user_ndcg@10": [round(float(x), 6) for x in ndcg_per_user(ranks, K)]}  # fmt: skip


def _mmr_lists(rel: np.ndarray, genres: np.ndarray, pool: int, lam: float) -> np.ndarray:
    out = np.empty((rel.shape[0], K), np.int64)
    for u in range(rel.shape[0]):
        cand = np.argsort(-rel[u], kind="stable")[:pool]
        out[u] = cand[mmr(rel[u, cand], jaccard_matrix(genres[cand]), K, lam)]
    return out


def _list_metrics(lists: np.ndarray, target: np.ndarray, n_items: int, genres: np.ndarray) -> dict:
    hit = lists == target[:, None]
    pos = np.where(hit.any(1), hit.argmax(1), K)
    m = rank_metrics(pos, K)
    return {**m, "coverage@10": float(len(np.unique(lists)) / n_items),
            "ild@10": intra_list_diversity(lists, genres)}  # fmt: skip


def search_fusion(scores: dict[str, np.ndarray], ranks: dict[str, np.ndarray], exclude: np.ndarray,
                  objective, init: dict[str, float], cfg: HybridConfig,
                  single: dict[str, float] | None = None) -> list[dict]:  # fmt: skip
    """Learn the weights of every fusion candidate in ``cfg.learn`` on the validation item.

    Parameters
    ----------
    scores, ranks : name -> np.ndarray, shape (U, I)
        Validation-request scores and top-``depth`` ranks per strategy (fused strategies only).
    exclude : np.ndarray[bool], shape (U, I)
    objective : callable (fused (U, I)) -> float
        The validation objective (NDCG@``cfg.learn.metric_k`` in :func:`evaluate`).
    init : dict
        The default weights (the ``default`` start).
    single : dict, optional
        Each strategy's own validation score (the ``best`` start); ``objective`` of it when not given.

    Returns
    -------
    list of dict
        One per candidate, in config order: ``method``, ``rrf_k``, learned ``weights``, their
        ``val_objective`` and the ``start`` of the search that found them.
    """
    lc = cfg.learn
    names = list(scores)
    if single is None:
        single = {n: objective(scores[n]) for n in names}
    starts = {kind: start_weights(kind, names, init, single) for kind in lc.starts}
    out = []
    zs = None
    for method in lc.methods:
        if method == "rrf":
            grid = [(k, ranks, lambda x, w, k=k: rrf_fuse(x, w, k)) for k in (lc.rrf_k or [cfg.rrf_k])]
        else:
            zs = zs if zs is not None else {n: standardize(s, exclude) for n, s in scores.items()}
            grid = [(cfg.rrf_k, zs, combsum_fuse)]
        for k, inputs, fuse in grid:
            best = None
            for kind, w0 in starts.items():
                w, val = learn_weights(inputs, objective, w0, fuse=fuse, grid=tuple(lc.grid), sweeps=lc.sweeps,
                                       min_gain=lc.min_gain)  # fmt: skip
                if best is None or val > best["val_objective"]:
                    best = {"method": method, "rrf_k": int(k), "weights": w, "val_objective": float(val),
                            "start": kind}  # fmt: skip
            log.info("fusion %s k=%d: validation objective %.4f from the %s start, weights %s", method, k,
                     best["val_objective"], best["start"], best["weights"])  # fmt: skip
            out.append(best)
    return out


def learn_fusion(scores: dict[str, np.ndarray], ranks: dict[str, np.ndarray], exclude: np.ndarray,
                 target: np.ndarray, default_w: dict[str, float], cfg: HybridConfig) -> list[dict]:  # fmt: skip
    """:func:`search_fusion` on held-out rows: the objective is NDCG@``cfg.learn.metric_k`` of
    ``target`` and the single-strategy baselines NDCG@10 (``evaluate`` and the fusion's
    cross-validation both learn through here)."""
    single = {n: full_ndcg(scores[n], target, exclude, K, cfg.seed) for n in scores}

    def objective(fused: np.ndarray) -> float:
        return full_ndcg(fused, target, exclude, cfg.learn.metric_k, cfg.seed)

    return search_fusion(scores, ranks, exclude, objective, default_w, cfg, single)


def fitted_on(meta: dict) -> str:
    """What a global model was trained on, from its registry meta (``data.fit_on``: ``train`` when absent)."""
    return str((meta.get("data") or {}).get("fit_on", "train"))


def check_runs(run_dir: str | Path, test_run_dir: str | Path | None, early_run_dir: str | Path | None = None) -> None:
    """Refuse a phase-1 model that saw the validation item, a test-phase model that did not, or an
    earlier-phase model that saw the interaction it is scored on."""
    from recommender.model_store import load_version

    roles = (
        (early_run_dir, "train_minus_last", "--early-run {run}: its global model was trained with data.fit_on={fit}, "
         "so it has seen each user's last train interaction the earlier phase is scored on "
         "(fedrec simulate data.fit_on=train_minus_last)"),
        (run_dir, "train", "{run}: its global model was trained with data.fit_on={fit}, so it has seen the validation "
         "item the fusion is learned on; pass a train-only run as RUN_DIR and this one as --test-run"),
        (test_run_dir, "trainval", "--test-run {run}: its global model was trained with data.fit_on={fit}; the test "
         "phase needs one trained on train + validation (fedrec simulate data.fit_on=trainval)"),
    )  # fmt: skip
    for run, wanted, message in roles:
        fit = fitted_on(load_version(run).meta) if run is not None else wanted
        if fit != wanted:
            raise RecommenderError(message.format(run=run, fit=fit))


def tuned_als_params(rec: HybridRecommender) -> dict | None:
    """The ALS hyper-parameters ``rec`` was built with (tuned on validation), to rebuild ALS with them."""
    als = rec.strategies.get("collaborative")
    return {k: v for k, v in als.params.items() if k != "val_ndcg@10"} if als else None


def earlier_phase(early_run_dir: str | Path, ds: Dataset, split: Split, cfg: HybridConfig,
                  als_params: dict | None, progress=None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict]:  # fmt: skip
    """Phase 0: strategies built without each user's last train interaction, scored against it.

    Parameters
    ----------
    early_run_dir : path
        Federated run trained with ``data.fit_on=train_minus_last``.
    als_params : dict, optional
        ALS hyper-parameters (those tuned on the validation item).

    Returns
    -------
    scores : name -> np.ndarray, shape (U, I)
        As :func:`score_matrices`, requests at the held-out interactions' times.
    exclude : np.ndarray[bool], shape (U, I)
    target : np.ndarray[int], shape (U,)
        Each user's last train interaction.
    info : dict
        ``run_dir``, ``fit_on`` and every strategy's NDCG@10 of the held-out interaction.
    """
    sp_e = one_step_earlier(split)
    rec = HybridRecommender.build(early_run_dir, ds, sp_e, cfg, tag="train_minus_last", als_params=als_params,
                                  progress=progress)  # fmt: skip
    scores = score_matrices(rec, sp_e.val_timestamp.astype(np.float64))
    exclude = history_exclude(sp_e)
    info = {"run_dir": str(early_run_dir), "fit_on": fitted_on(rec.model.meta),
            "ndcg@10": {n: full_ndcg(s, sp_e.val_item, exclude, K, cfg.seed) for n, s in scores.items()}}  # fmt: skip
    return scores, exclude, sp_e.val_item, info


def evaluate(run_dir: str | Path, ds: Dataset, split: Split, cfg: HybridConfig | None = None,
             progress=None, test_run_dir: str | Path | None = None,
             early_run_dir: str | Path | None = None) -> dict:  # fmt: skip
    """Evaluate all strategies and fused variants; returns a JSON-ready dict.

    Parameters
    ----------
    run_dir : path
        Federated run trained on the train split (``data.fit_on=train``): the validation phase.
    ds, split : Dataset, Split
    cfg : HybridConfig, optional
    progress : callable(str), optional
    test_run_dir : path, optional
        Federated run of the same configuration trained on train + validation, used for the test
        phase (module docstring); default ``run_dir``.
    early_run_dir : path, optional
        Federated run of the same configuration trained with ``data.fit_on=train_minus_last``: the
        fusion weights are then learned on each user's last train interaction too (module docstring).
    """
    cfg = cfg or HybridConfig()
    check_runs(run_dir, test_run_dir, early_run_dir)
    say = progress or (lambda m: log.info("%s", m))
    t0 = time.perf_counter()
    val_t, test_t = target_times(ds)
    genres = ds.genres

    say("phase 1: build on train, score the validation item")
    rec_v = HybridRecommender.build(run_dir, ds, split, cfg, tag="train", progress=say)
    sc_v = score_matrices(rec_v, val_t)
    ex_v = history_exclude(split)
    names = [n for n in sc_v if n != "popularity"]
    default_w = {n: cfg.weights.get(n, 0.0) for n in names}
    val_metrics = {n: rank_metrics(full_ranks(sc_v[n], split.val_item, ex_v, cfg.seed), K) for n in sc_v}
    als = rec_v.strategies.get("collaborative")
    als_params = tuned_als_params(rec_v)
    del rec_v

    # the rows the fusion is learned on: every user's validation item, and with an earlier phase
    # also every user's last train interaction (scored by strategies built without it)
    fit_sc, fit_ex, fit_target = {n: sc_v[n] for n in names}, ex_v, split.val_item
    early = None
    if early_run_dir is not None:
        say("phase 0: build on train without each user's last interaction, score that interaction")
        sc_e, ex_e, target_e, early = earlier_phase(early_run_dir, ds, split, cfg, als_params, say)
        fit_sc = {n: np.concatenate([sc_v[n], sc_e[n]]) for n in names}
        fit_ex, fit_target = np.concatenate([ex_v, ex_e]), np.concatenate([split.val_item, target_e])
        del sc_e, ex_e
    ranks_fit = {n: ranks_from_scores(fit_sc[n], cfg.depth, fit_ex) for n in names}

    mk = cfg.learn.metric_k
    search = learn_fusion(fit_sc, ranks_fit, fit_ex, fit_target, default_w, cfg)
    del fit_sc, ranks_fit
    for c in search:
        f = fuse_scores({n: sc_v[n] for n in names}, c["weights"], c["method"], ex_v, cfg.depth, c["rrf_k"])
        c["val_ndcg@10"] = full_ndcg(f, split.val_item, ex_v, K, cfg.seed)
        # the same fusion with the default weights: how the methods compare before any learning
        f = fuse_scores({n: sc_v[n] for n in names}, default_w, c["method"], ex_v, cfg.depth, c["rrf_k"])
        c["val_ndcg@10_default_weights"] = full_ndcg(f, split.val_item, ex_v, K, cfg.seed)
    chosen = max(search, key=lambda c: c["val_objective"])  # the first of equals: the config's order
    learned_w = chosen["weights"]
    fused_default_v = fuse_scores({n: sc_v[n] for n in names}, default_w, cfg.fusion, ex_v, cfg.depth, cfg.rrf_k)
    val_metrics["fused_default"] = rank_metrics(full_ranks(fused_default_v, split.val_item, ex_v, cfg.seed), K)
    val_metrics["fused_learned"] = {f"ndcg@{K}": chosen["val_ndcg@10"]}
    del sc_v

    say("phase 2: rebuild on train+validation, score the test item")
    sp_t = with_val_in_train(split)
    rec_t = HybridRecommender.build(test_run_dir or run_dir, ds, sp_t, cfg, tag="trainval", als_params=als_params,
                                    progress=say)  # fmt: skip
    sc_t = score_matrices(rec_t, test_t)
    ex_t = history_exclude(sp_t)
    sc_t_fused = {n: sc_t[n] for n in names}
    neg = split.eval_negatives
    results: dict[str, dict] = {}
    for n, s in sc_t.items():
        results[n] = _report(s, split.test_item, ex_t, neg, genres, cfg.seed)
    fused = {"fused_default": fuse_scores(sc_t_fused, default_w, cfg.fusion, ex_t, cfg.depth, cfg.rrf_k),
             "fused_learned": fuse_scores(sc_t_fused, learned_w, chosen["method"], ex_t, cfg.depth,
                                          chosen["rrf_k"])}  # fmt: skip
    for n, f in fused.items():
        results[n] = _report(f, split.test_item, ex_t, neg, genres, cfg.seed)
    for c in search:  # for information only: the choice above was made on validation
        f = fuse_scores(sc_t_fused, c["weights"], c["method"], ex_t, cfg.depth, c["rrf_k"])
        c["test_ndcg@10"] = full_ndcg(f, split.test_item, ex_t, K, cfg.seed)
    trusted = apply_trust(fused["fused_learned"], rec_t.trust, cfg.trust)
    trusted[ex_t] = -np.inf
    results["fused_learned+trust"] = _report(np.where(np.isfinite(trusted), trusted, -1.0),
                                             split.test_item, ex_t, neg, genres, cfg.seed)  # fmt: skip
    rel = np.where(np.isfinite(trusted) & (fused["fused_learned"] > 0), trusted, -1.0)
    mmr_lists = _mmr_lists(rel, genres, cfg.mmr_pool, cfg.mmr_lambda)
    results["fused_learned+trust+mmr"] = {"lists": _list_metrics(mmr_lists, split.test_item, ds.n_items, genres)}
    best_single = max(names, key=lambda n: results[n]["full"][f"ndcg@{K}"])
    b = results[best_single]["full"][f"ndcg@{K}"]
    f_l = results["fused_learned"]["full"][f"ndcg@{K}"]
    ci = paired_bootstrap_gain(np.array(results["fused_learned"]["per_user_ndcg@10"]),
                               np.array(results[best_single]["per_user_ndcg@10"]), seed=cfg.seed)  # fmt: skip
    return {
        "protocol": "leave-one-out; tune on validation (models on train), test with models on train+val; "
                    "full ranking excludes train+val; sampled = test item vs 99 negatives",
        "model_version": rec_t.model.version,
        "test_phase_model": {"run_dir": str(test_run_dir or run_dir), "fit_on": fitted_on(rec_t.model.meta)},
        "model_meta": {k: v for k, v in rec_t.model.meta.items() if k in ("round", "source", "data", "epsilon")},
        "seed": cfg.seed,
        "als_params": als_params,
        "als_tuning": als.tuning if als else None,
        "weights_default": default_w,
        "weights_learned": learned_w,
        "fusion_default": {"method": cfg.fusion, "rrf_k": cfg.rrf_k},
        "fusion_learned": {k: chosen[k] for k in ("method", "rrf_k", "weights", "start")},
        "fusion_objective": f"NDCG@{mk} of the held-out items it is learned on",
        "fusion_learned_on": "validation item" + (" + each user's last train interaction" if early else ""),
        "early_phase": early,
        "fusion_search": search,
        "validation": val_metrics,
        "test": results,
        "best_single": best_single,
        "fused_vs_best_single_pct": 100.0 * (f_l / b - 1.0) if b > 0 else None,
        "fused_vs_best_single_ci": {k: v for k, v in ci.items() if k != "boot_pct"},
        "trust_dropped_items": int((rec_t.trust < cfg.trust.min_trust).sum()),
        "seconds": time.perf_counter() - t0,
    }
