"""The hybrid recommender end to end on a small synthetic population (fast config)."""

import numpy as np
import pytest
import torch

from recommender.data import (
    DataError,
    generate_synthetic,
    leave_one_out,
    one_step_earlier,
    with_val_in_train,
    without_last_train,
)
from recommender.explain import select_explanation
from recommender.hybrid import HybridRecommender, load_config
from recommender.model_store import load_version
from recommender.ncf import init_private, score_all_items, unflatten_shared
from recommender.neumf_strategy import FoldInConfig, fold_in, make_reference_run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    ds = generate_synthetic(n_users=60, n_items=200, mean_interactions=25, min_interactions=10, seed=3,
                            preference_strength=4.0)
    split = leave_one_out(ds, n_negatives=20)
    run = tmp_path_factory.mktemp("run")
    make_reference_run(run, split, "synthetic", factors=8, epochs=20, seed=0, batch_size=64, lr=0.01)
    cfg = load_config("fast")
    rec = HybridRecommender.build(run, ds, split, cfg)
    return ds, split, run, rec


def test_known_user_gets_k_explained_items(world):
    ds, split, _, rec = world
    req = rec.request_for_user(int(ds.raw_user_ids[0]))
    recs = rec.recommend(req, k=5)
    assert len(recs) == 5
    assert not set(r.item for r in recs) & set(req.items.tolist())
    for r in recs:
        assert r.trust >= rec.cfg.trust.min_trust
        assert r.explanation and r.title == ds.titles[r.item]
        assert set(r.ranks) == {"collaborative", "neumf", "content", "gnn", "context"}


def test_explanation_names_a_watched_item_in_history(world):
    ds, split, _, rec = world
    watched = [10, 11, 12]
    req = rec.request_for_history(watched)
    labels = {rec.catalog.label(int(i)) for i in rec.ds.item_index(watched)}
    recs = rec.recommend(req, k=10)
    item_expl = [r for r in recs if r.explanation_kind == "item"]
    assert item_expl, "some recommendation should be explained by a watched item"
    for r in item_expl:
        name = r.explanation.removeprefix("Because you watched ")
        assert name in labels


def test_select_explanation_paths():
    sims = np.array([0.1, 0.8])
    kind, text = select_explanation({"content": 1, "context": 5}, sims, ["A (1990)", "B (1991)"],
                                    ["Drama"], {"Drama": 1.0})
    assert (kind, text) == ("item", "Because you watched B (1991)")
    kind, text = select_explanation({"collaborative": 2}, np.array([0.05]), ["A"], ["Drama", "War"],
                                    {"War": 2.0, "Drama": 1.0})
    assert (kind, text) == ("genre", "Popular among War fans")
    kind, text = select_explanation({"context": 1, "content": 9}, sims, ["A", "B"], ["Drama"], {})
    assert kind == "trending"


@pytest.mark.parametrize("how", ["unknown_user", "empty_history"])
def test_cold_start_falls_back_to_context(world, how):
    ds, _, _, rec = world
    req = rec.request_for_user(999_999) if how == "unknown_user" else rec.request_for_history([])
    recs = rec.recommend(req, k=5)
    assert len(recs) == 5
    for r in recs:
        assert r.explanation_kind == "cold_start"
        assert set(r.ranks) == {"context"}
        assert ("not known" in r.explanation) if how == "unknown_user" else ("no watch history" in r.explanation)
    ctx = rec.context.score(req.now)
    top_ctx = set(np.argsort(-ctx)[:20].tolist())
    assert {r.item for r in recs} <= top_ctx


def test_fold_in_improves_held_out_scores(world):
    ds, split, run, _ = world
    mv = load_version(run)
    shared = unflatten_shared(mv.shared, mv.shape)
    users = np.arange(split.n_users)
    hist = [split.train_of(u) for u in users]
    cfg = FoldInConfig(epochs=10, lr=0.05, batch_size=16)
    before = score_all_items(shared, init_private(len(users), mv.shape, 7)).numpy()
    after = score_all_items(shared, fold_in(mv.shared, mv.shape, hist, cfg, seed=1)).numpy()

    def auc(scores):  # held-out (test) item vs the 99... here: all unseen items
        out = []
        for u in users:
            unseen = np.setdiff1d(np.arange(split.n_items), split.seen_of(u))
            out.append((scores[u, split.test_item[u]] > scores[u, unseen]).mean())
        return float(np.mean(out))

    assert auc(after) > auc(before) + 0.05


def test_with_val_in_train_appends_validation_item(world):
    _, split, _, _ = world
    sp2 = with_val_in_train(split)
    ds = world[0]
    for u in (0, 5):
        np.testing.assert_array_equal(sp2.train_of(u), np.append(split.train_of(u), split.val_item[u]))
        # the real rating and time of the validation interaction, looked up in the dataset
        row = np.flatnonzero((ds.users == u) & (ds.items == split.val_item[u]))
        last = sp2.train_indptr[u + 1] - 1
        assert sp2.train_ratings[last] == ds.ratings[row[0]]
        assert sp2.train_timestamps[last] == ds.timestamps[row[0]]
    np.testing.assert_array_equal(sp2.test_item, split.test_item)


def test_one_step_earlier_holds_out_the_last_train_interaction(world):
    ds, split, _, _ = world
    sp0 = one_step_earlier(split)
    for u in (0, 5, 59):
        row = split.train_of(u)
        np.testing.assert_array_equal(sp0.train_of(u), row[:-1])
        assert sp0.val_item[u] == row[-1] and sp0.test_item[u] == split.val_item[u]
        # the held-out interaction is the user's latest train interaction, with its real rating and time
        mine = np.flatnonzero((ds.users == u) & np.isin(ds.items, row))
        latest = mine[np.argmax(ds.timestamps[mine])]
        assert sp0.val_timestamp[u] == ds.timestamps[latest]
        hit = mine[ds.items[mine] == row[-1]]
        assert sp0.val_rating[u] == ds.ratings[hit[0]] and sp0.val_timestamp[u] == ds.timestamps[hit[0]]
        assert (sp0.train_timestamps[sp0.train_indptr[u] : sp0.train_indptr[u + 1]] <= sp0.val_timestamp[u]).all()
    assert len(sp0.train_items) == len(split.train_items) - split.n_users
    np.testing.assert_array_equal(without_last_train(split).val_item, split.val_item)


def test_without_last_train_refuses_a_user_it_would_leave_empty(world):
    _, split, _, _ = world
    one = without_last_train(split)
    while (np.diff(one.train_indptr) >= 2).all():
        one = without_last_train(one)
    with pytest.raises(DataError, match="fewer than 2 train interactions"):
        without_last_train(one)


def test_config_rejects_misspelled_key():
    with pytest.raises(Exception, match="mmr_lambdaa"):
        load_config(None, ["mmr_lambdaa=0.5"])


def test_fast_neumf_scoring_matches_neumf_logits(world):
    from recommender.ncf import neumf_logits

    _, _, _, rec = world
    n = rec.strategies["neumf"]
    vec = n.user_vectors[2]
    ref = neumf_logits(n.shared, vec, torch.arange(n.shape.n_items)).detach().numpy()
    np.testing.assert_allclose(n._score_vec(vec), ref, atol=1e-5)


def test_learned_combsum_fusion_is_served(world):
    from recommender.fusion import fuse_scores

    ds, _, _, rec = world
    old = (rec.fusion, rec.rrf_k, dict(rec.weights))
    try:
        w = {"collaborative": 0.6, "neumf": 0.1, "content": 0.1, "gnn": 0.1, "context": 0.1}
        rec.use_fusion({"method": "combsum", "rrf_k": 60, "weights": w})
        assert rec.fusion == "combsum" and rec.weights == w
        req = rec.request_for_user(int(ds.raw_user_ids[3]))
        recs = rec.recommend(req, k=5, use_mmr=False)
        rel = [r.relevance for r in recs]
        assert len(recs) == 5 and all(x > 0 for x in rel) and rel == sorted(rel, reverse=True)
        # without trust and MMR, the served list is the CombSUM order itself
        ex = np.zeros(rec.catalog.n_items, bool)
        ex[req.items] = True
        fused = fuse_scores(rec.strategy_scores(req), w, "combsum", ex)
        rec.cfg.trust.enabled = False
        try:
            served = [r.item for r in rec.recommend(req, k=5, use_mmr=False)]
        finally:
            rec.cfg.trust.enabled = True
        assert served == np.argsort(-fused, kind="stable")[:5].tolist()
        # the earlier flat weights.json format still means RRF with the configured k
        rec.use_fusion({"collaborative": 1.0})
        assert rec.fusion == "rrf" and rec.rrf_k == rec.cfg.rrf_k and rec.weights == {"collaborative": 1.0}
        with pytest.raises(Exception, match="borda"):
            rec.use_fusion({"method": "borda", "weights": w})
    finally:
        rec.fusion, rec.rrf_k, rec.weights = old


def test_fusion_search_chooses_on_validation_only():
    from recommender.evaluate_hybrid import search_fusion
    from recommender.fusion import ranks_from_scores

    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30
    target = rng.integers(0, n_items, n_users)
    good = rng.normal(size=(n_users, n_items))
    good[np.arange(n_users), target] += 3.0  # "good" knows the validation item
    noise = rng.normal(size=(n_users, n_items))
    scores = {"good": good, "noise": noise}
    ex = np.zeros((n_users, n_items), bool)
    ranks = {n: ranks_from_scores(s, 10, ex) for n, s in scores.items()}

    def obj(f):
        return float((np.argsort(-f, 1)[:, :1] == target[:, None]).mean())

    cfg = load_config("fast", ["learn.methods=[rrf,combsum]", "learn.rrf_k=[5,60]"])
    out = search_fusion(scores, ranks, ex, obj, {"good": 0.5, "noise": 0.5}, cfg)
    assert [(c["method"], c["rrf_k"]) for c in out] == [("rrf", 5), ("rrf", 60), ("combsum", 60)]
    for c in out:
        assert c["weights"]["good"] > c["weights"]["noise"]
        assert c["val_objective"] == pytest.approx(obj(fuse_any(c, scores, ex)))


def fuse_any(c, scores, ex):
    from recommender.fusion import fuse_scores

    return fuse_scores(scores, c["weights"], c["method"], ex, depth=10, k=c["rrf_k"])


def test_fold_in_private_lr_reaches_the_trainer():
    # the fold-in trains only the private embedding: its step size must be the one configured
    assert FoldInConfig(private_lr=0.05).local().user_lr == 0.05
    assert FoldInConfig(optimizer="sgd", private_lr=2.0).local().user_lr == 2.0


def test_evaluate_reports_per_user_ndcg_and_a_bootstrap_interval(world):
    from recommender.evaluate_hybrid import evaluate

    ds, split, run, _ = world
    res = evaluate(run, ds, split, load_config("fast"))
    for name in ("collaborative", "neumf", "gnn", "content", "context", "fused_learned"):
        per_user = np.array(res["test"][name]["per_user_ndcg@10"])
        assert per_user.shape == (split.n_users,)
        assert per_user.mean() == pytest.approx(res["test"][name]["full"]["ndcg@10"], abs=1e-5)
    for cand in res["fusion_search"]:  # every candidate is also scored with the default weights
        assert 0.0 <= cand["val_ndcg@10_default_weights"] <= 1.0
    assert res["test_phase_model"] == {"run_dir": str(run), "fit_on": "train"}
    ci = res["fused_vs_best_single_ci"]
    assert ci["gain_pct"] == pytest.approx(res["fused_vs_best_single_pct"], abs=1e-3)
    assert ci["low_pct"] <= ci["gain_pct"] <= ci["high_pct"]


def test_evaluate_refuses_runs_fitted_on_the_wrong_interactions(world, tmp_path):
    """Phase 1 must not use a model that saw the validation item; --test-run must be one that did."""
    from recommender.evaluate_hybrid import check_runs
    from recommender.hybrid import RecommenderError
    from recommender.model_store import load_version, save_version

    _, _, run, _ = world
    mv = load_version(run)
    trainval = tmp_path / "trainval"
    save_version(trainval, 1, mv.shared, mv.shape, {**mv.meta, "data": {"name": "synthetic", "fit_on": "trainval"}})
    check_runs(run, None)
    check_runs(run, trainval)
    with pytest.raises(RecommenderError, match="seen the validation item"):
        check_runs(trainval, None)
    with pytest.raises(RecommenderError, match="fit_on=train"):
        check_runs(run, run)
    early = tmp_path / "early"
    save_version(early, 1, mv.shared, mv.shape, {**mv.meta, "data": {"name": "synthetic", "fit_on": "train_minus_last"}})
    check_runs(run, trainval, early)
    for wrong in (run, trainval):
        with pytest.raises(RecommenderError, match="--early-run"):
            check_runs(run, trainval, wrong)


def test_evaluate_learns_the_fusion_on_the_earlier_interaction_too(world, tmp_path):
    """--early-run: a third build scored on each user's last train interaction; both feed the weight search."""
    from recommender.evaluate_hybrid import evaluate
    from recommender.model_store import save_version

    ds, split, run, _ = world
    mv = load_version(run)
    early = tmp_path / "early"  # the train model stands in (a real early run never saw the held-out item)
    save_version(early, 1, mv.shared, mv.shape, {**mv.meta, "data": {"name": "synthetic", "fit_on": "train_minus_last"}})
    cfg = load_config("fast", ["learn.methods=[combsum]"])
    plain = evaluate(run, ds, split, cfg)
    res = evaluate(run, ds, split, cfg, early_run_dir=early)
    assert plain["early_phase"] is None and plain["fusion_learned_on"] == "validation item"
    assert res["fusion_learned_on"] == "validation item + each user's last train interaction"
    assert res["early_phase"]["fit_on"] == "train_minus_last"
    assert set(res["early_phase"]["ndcg@10"]) >= {"collaborative", "neumf", "gnn", "content", "context"}
    # the validation phase and the test lists of single strategies are the same builds either way
    assert res["validation"]["collaborative"] == plain["validation"]["collaborative"]
    assert res["test"]["collaborative"]["full"] == plain["test"]["collaborative"]["full"]
    # the search objective is NDCG@metric_k over the 2U held-out interactions, rebuilt here from the
    # (cached) artefacts of both phases with the learned weights
    from recommender.evaluate_hybrid import history_exclude, score_matrices, target_times
    from recommender.fusion import fuse_scores
    from recommender.metrics import full_ndcg

    c = res["fusion_search"][0]
    sp0 = one_step_earlier(split)
    sc1 = score_matrices(HybridRecommender.build(run, ds, split, cfg, tag="train"), target_times(ds)[0])
    rec0 = HybridRecommender.build(early, ds, sp0, cfg, tag="train_minus_last", als_params=res["als_params"])
    sc0 = score_matrices(rec0, sp0.val_timestamp.astype(np.float64))
    ex = np.concatenate([history_exclude(split), history_exclude(sp0)])
    stacked = {n: np.concatenate([sc1[n], sc0[n]]) for n in c["weights"]}
    fused = fuse_scores(stacked, c["weights"], c["method"], ex, cfg.depth, c["rrf_k"])
    target = np.concatenate([split.val_item, sp0.val_item])
    assert c["val_objective"] == pytest.approx(full_ndcg(fused, target, ex, cfg.learn.metric_k, cfg.seed), abs=1e-9)
    assert res["early_phase"]["ndcg@10"]["collaborative"] == pytest.approx(
        full_ndcg(sc0["collaborative"], sp0.val_item, history_exclude(sp0), 10, cfg.seed), abs=1e-9)


def test_local_split_fit_on_trainval_trains_on_the_validation_item():
    from client.node_data import local_split
    from recommender.config import DataConfig

    base = DataConfig(name="synthetic", users=30, items=200, mean_interactions=12.0, seed=1)
    sp = local_split(base)
    sp_tv = local_split(DataConfig(**{**base.__dict__, "fit_on": "trainval"}))
    for u in (0, 7):
        np.testing.assert_array_equal(sp_tv.train_of(u), np.append(sp.train_of(u), sp.val_item[u]))
    np.testing.assert_array_equal(sp_tv.test_item, sp.test_item)
    sp_early = local_split(DataConfig(**{**base.__dict__, "fit_on": "train_minus_last"}))
    for u in (0, 7):
        np.testing.assert_array_equal(sp_early.train_of(u), sp.train_of(u)[:-1])
    np.testing.assert_array_equal(sp_early.val_item, sp.val_item)
    with pytest.raises(ValueError, match="fit_on"):
        DataConfig(fit_on="all").validate()
