"""The central hybrid recommender: strategies -> weighted RRF -> trust -> MMR -> explanations.

It consumes only the run's registered global model (``runs/<name>/models/LATEST``) and the
catalogue with the platform's interactions. Precomputed artefacts (ALS factors, text embeddings,
folded-in NeuMF users, GNN node embeddings) are cached per model version under
``<run_dir>/recommender/vNNNN/`` so serving loads them instead of training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recommender.als import ALSConfig, CollaborativeALS
from recommender.catalog import Catalog
from recommender.content import ContentConfig, ContentStrategy, build_item_vectors, history_weights
from recommender.context import ContextConfig, ContextStrategy
from recommender.data import Dataset, Split
from recommender.explain import select_explanation
from recommender.fusion import (
    DEFAULT_WEIGHTS,
    FUSION_METHODS,
    RRF_K,
    FusionLearnConfig,
    fuse_scores,
    ranks_from_scores,
    rrf_fuse,
)
from recommender.gnn import GNNConfig, GNNStrategy, build_graph, node_embeddings, train_gnn
from recommender.mmr import jaccard_matrix, mmr
from recommender.model_store import ModelVersion, load_version
from recommender.neumf_strategy import FoldInConfig, NeuMFStrategy
from recommender.trust_items import TrustConfig, apply_trust, item_trust

log = logging.getLogger(__name__)
STRATEGIES = ("collaborative", "neumf", "content", "gnn", "context")


class RecommenderError(RuntimeError):
    """The hybrid recommender cannot serve a request or load its artefacts."""


@dataclass
class HybridConfig:
    """Hybrid recommender configuration (config group ``recommender``, ``configs/recommender/``).

    Parameters
    ----------
    strategies : list[str]
        Enabled strategies, a subset of ``collaborative, neumf, content, gnn, context``.
    weights : dict[str, float]
        Fusion weights (defaults: collaborative 0.35, content 0.25, gnn 0.30, context 0.10, and the
        federated NeuMF 0.30). ``evaluate-recommender`` learns its own on the validation item.
    fusion : {"rrf", "combsum"}
        Fusion served when no learned ``weights.json`` exists: weighted CombSUM of per-request
        z-scores (default; with the default weights it beat RRF on the validation item of every
        federated run) or weighted reciprocal rank fusion (:mod:`recommender.fusion`).
    rrf_k : int
        RRF constant (60).
    learn : FusionLearnConfig
        The fusion methods, RRF constants and search ``evaluate-recommender`` tries on validation.
    depth : int
        Candidates each strategy contributes to the fusion (100).
    mmr_lambda : float
        MMR relevance weight (0.85); ``use_mmr`` switches the re-ranking.
    mmr_pool : int
        Fused candidates MMR chooses from.
    learned_weights : bool
        Serve with the weights ``evaluate-recommender`` learned (``<run>/recommender/weights.json``)
        when that file exists, else ``weights``.
    seed : int
    """

    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    fusion: str = "combsum"
    rrf_k: int = RRF_K
    learn: FusionLearnConfig = field(default_factory=FusionLearnConfig)
    depth: int = 100
    use_mmr: bool = True
    mmr_lambda: float = 0.85
    mmr_pool: int = 50
    learned_weights: bool = True
    seed: int = 0
    als: ALSConfig = field(default_factory=ALSConfig)
    neumf: FoldInConfig = field(default_factory=FoldInConfig)
    content: ContentConfig = field(default_factory=ContentConfig)
    gnn: GNNConfig = field(default_factory=GNNConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)

    def validate(self) -> None:
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad:
            raise RecommenderError(f"recommender.strategies has unknown {bad}: choose from {list(STRATEGIES)}")
        if self.fusion not in FUSION_METHODS:
            raise RecommenderError(f"recommender.fusion={self.fusion!r}: choose from {list(FUSION_METHODS)}")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise RecommenderError(f"recommender.mmr_lambda={self.mmr_lambda} must lie in [0, 1]")
        self.als.validate()
        self.gnn.validate()
        self.learn.validate()


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> HybridConfig:
    """Load ``configs/recommender/<name>.yaml`` onto the schema; a misspelled key fails by name."""
    from omegaconf import OmegaConf

    base = OmegaConf.structured(HybridConfig)
    parts = [base]
    if path is not None:
        p = Path(path)
        if not p.is_file():
            p = Path(__file__).resolve().parent.parent / "configs" / "recommender" / f"{path}.yaml"
        if not p.is_file():
            raise RecommenderError(f"recommender config {path!r} not found (a path or a name in configs/recommender/)")
        parts.append(OmegaConf.load(p))
    if overrides:
        parts.append(OmegaConf.from_dotlist(overrides))
    cfg = OmegaConf.to_object(OmegaConf.merge(*parts))
    cfg.validate()
    return cfg


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:10]  # noqa: S324 (cache key, not security)


def _interactions_digest(split: Split) -> str:
    """Digest of the interactions artefacts are built from: a cache hit needs the same items, ratings and times."""
    h = hashlib.sha1()  # noqa: S324 (cache key, not security)
    for a in (split.train_indptr, split.train_items, split.train_ratings, split.train_timestamps):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:10]


@dataclass
class Request:
    """One recommendation request.

    Attributes
    ----------
    user : int | None
        Dense index of a known user (their platform history is used), else None.
    items, ratings, times : np.ndarray, shape (H,)
        Watch history (dense items), ratings 1-5 and timestamps (s).
    now : float
        Request time (s).
    device : str | None
    unknown_user : int | None
        A raw user id that was asked for but is not known (cold start).
    """

    user: int | None
    items: np.ndarray
    ratings: np.ndarray
    times: np.ndarray
    now: float
    device: str | None = None
    unknown_user: int | None = None

    @property
    def cold(self) -> bool:
        return len(self.items) == 0


@dataclass
class Recommendation:
    """One recommended item with everything the table shows."""

    item: int
    raw_id: int
    title: str
    year: int
    genres: list[str]
    relevance: float
    trust: float
    explanation: str
    explanation_kind: str
    ranks: dict[str, int]


class HybridRecommender:
    """The assembled pipeline (build with :meth:`build`).

    Parameters
    ----------
    ds : Dataset
    split : Split
        Its train rows are the interactions the platform holds.
    catalog : Catalog
    strategies : dict name -> strategy object
    cfg : HybridConfig
    model : ModelVersion
    """

    def __init__(self, ds: Dataset, split: Split, catalog: Catalog, strategies: dict[str, Any],
                 cfg: HybridConfig, model: ModelVersion) -> None:  # fmt: skip
        self.ds, self.split, self.catalog, self.cfg, self.model = ds, split, catalog, cfg, model
        self.strategies = strategies
        self.content: ContentStrategy = strategies["content"]
        self.context: ContextStrategy = strategies["context"]
        has_kg = catalog.has_kg if catalog.cast.shape[1] else None
        has_genre = catalog.genres[:, 1:].any(1)
        self.trust = item_trust(catalog.n_ratings, catalog.mean_rating, catalog.years > 0, has_genre,
                                has_kg, cfg.trust)  # fmt: skip
        self.weights = dict(cfg.weights)
        self.fusion, self.rrf_k = cfg.fusion, cfg.rrf_k

    # ----------------------------------------------------------------------------------------
    # Construction
    # ----------------------------------------------------------------------------------------
    @classmethod
    def build(cls, run_dir: str | Path, ds: Dataset, split: Split, cfg: HybridConfig | None = None,
              cache: bool = True, tag: str = "train", als_params: dict | None = None,
              progress=None) -> HybridRecommender:  # fmt: skip
        """Load the global model and build (or load from the cache) every strategy's artefacts.

        Parameters
        ----------
        run_dir : path
            Run directory holding ``models/LATEST``.
        tag : str
            Names the interactions the artefacts were built from (``train`` / ``trainval``).
        als_params : dict, optional
            Fixed ALS hyper-parameters (skips tuning), e.g. the ones tuned in the ``train`` phase.
        progress : callable(str), optional
            Called with a short message before each stage.
        """
        cfg = cfg or HybridConfig()
        cfg.validate()
        say = progress or (lambda msg: log.info("%s", msg))
        model = load_version(run_dir)
        if model.shape.n_items != ds.n_items:
            raise RecommenderError(f"model v{model.version} scores {model.shape.n_items} items but the "
                                   f"catalogue has {ds.n_items}: the run was trained on other data")  # fmt: skip
        cache_dir = Path(run_dir) / "recommender" / f"v{model.version:04d}"
        catalog = Catalog.from_split(ds, split)
        key_base = {"tag": tag, "seed": cfg.seed, "n": int(len(split.train_items)),
                    "interactions": _interactions_digest(split)}  # fmt: skip

        def cached(name: str, key: dict, make):
            path = cache_dir / f"{name}-{_hash({**key_base, **key})}.pt"
            if cache and path.is_file():
                return torch.load(path, weights_only=False)
            obj = make()
            if cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(obj, path)
            return obj

        torch.set_num_threads(max(1, torch.get_num_threads()))
        neumf = NeuMFStrategy(model.shared, model.shape, cfg.neumf, seed=cfg.seed)
        say("text embeddings")
        text = cached("text", {"enc": cfg.content.text_encoder, "titles": _hash(ds.titles)},
                      lambda: build_item_vectors(catalog, None, cfg.content)[1])  # fmt: skip
        item_vec, _ = build_item_vectors(catalog, neumf.item_embeddings(), cfg.content, text, cfg.seed)
        strategies: dict[str, Any] = {
            "content": ContentStrategy(item_vec, catalog.genres, cfg.content),
            "context": ContextStrategy(split.train_items, split.train_timestamps, ds.n_items, cfg.context),
        }
        if "collaborative" in cfg.strategies:
            say("ALS")
            als_cfg = cfg.als
            if als_params:
                als_cfg = dataclasses.replace(cfg.als, tune=False, factors=int(als_params["factors"]),
                                              regularization=float(als_params["regularization"]),
                                              alpha=float(als_params["alpha"]),
                                              weighting=str(als_params.get("weighting", "none")))  # fmt: skip
            state = cached("als", dataclasses.asdict(als_cfg),
                           lambda: CollaborativeALS(als_cfg, cfg.seed).fit(split).state())  # fmt: skip
            strategies["collaborative"] = CollaborativeALS.from_state(state, als_cfg)
        if "neumf" in cfg.strategies:
            say("NeuMF fold-in of known users")
            neumf.user_vectors = cached("neumf_users", dataclasses.asdict(cfg.neumf),
                                        lambda: neumf.precompute_users(split))  # fmt: skip
            strategies["neumf"] = neumf
        if "gnn" in cfg.strategies:
            say("GNN")

            def make_gnn():
                data = build_graph(split, catalog, item_vec, cfg.gnn, cfg.seed)
                net, info = train_gnn(data, split, cfg.gnn, cfg.seed)
                emb = node_embeddings(net, data).numpy()
                u, i = split.n_users, split.n_items
                return {"user": emb[:u], "item": emb[u : u + i], "info": info}

            g = cached("gnn", {**dataclasses.asdict(cfg.gnn), "content": dataclasses.asdict(cfg.content)},
                       make_gnn)  # fmt: skip
            strategies["gnn"] = GNNStrategy(g["user"], g["item"], g.get("info"))
        rec = cls(ds, split, catalog, strategies, cfg, model)
        wpath = Path(run_dir) / "recommender" / "weights.json"
        if cfg.learned_weights and wpath.is_file():
            rec.use_fusion(json.loads(wpath.read_text()))
        return rec

    def use_fusion(self, learned: dict) -> None:
        """Serve with a learned fusion: ``{"method", "rrf_k", "weights"}`` (``weights.json``).

        A flat ``{strategy: weight}`` dict (the file's earlier format) means RRF with ``cfg.rrf_k``.
        """
        if "weights" not in learned:
            learned = {"method": "rrf", "rrf_k": self.cfg.rrf_k, "weights": learned}
        if learned["method"] not in FUSION_METHODS:
            raise RecommenderError(f"learned fusion method {learned['method']!r} is not one of {FUSION_METHODS}")
        self.fusion, self.rrf_k = str(learned["method"]), int(learned.get("rrf_k", self.cfg.rrf_k))
        self.weights = {k: float(v) for k, v in learned["weights"].items()}

    # ----------------------------------------------------------------------------------------
    # Requests
    # ----------------------------------------------------------------------------------------
    def request_for_user(self, raw_user: int, now: float | None = None, device: str | None = None) -> Request:
        """A request for a platform user by raw id; an unknown id gives a cold-start request."""
        pos = np.flatnonzero(self.ds.raw_user_ids == int(raw_user))
        now = float(self.context.last_time + 1 if now is None else now)
        if len(pos) == 0:
            e = np.zeros(0, np.int64)
            return Request(None, e, e.astype(np.float32), e, now, device, unknown_user=int(raw_user))
        u = int(pos[0])
        lo, hi = self.split.train_indptr[u], self.split.train_indptr[u + 1]
        return Request(u, self.split.train_items[lo:hi].astype(np.int64), self.split.train_ratings[lo:hi],
                       self.split.train_timestamps[lo:hi], now, device)  # fmt: skip

    def request_for_history(self, raw_items: list[int], ratings: list[float] | None = None,
                            now: float | None = None, device: str | None = None) -> Request:  # fmt: skip
        """A request carrying its own watch history (raw item ids, most recent last)."""
        items = self.ds.item_index(raw_items) if len(raw_items) else np.zeros(0, np.int64)
        now = float(self.context.last_time + 1 if now is None else now)
        r = np.full(len(items), 5.0, np.float32) if ratings is None else np.asarray(ratings, np.float32)
        # without timestamps, the history is taken as one day apart, the last one just now
        times = (now - 86_400.0 * np.arange(len(items))[::-1]).astype(np.int64)
        return Request(None, items, r, times, now, device)

    def strategy_scores(self, req: Request) -> dict[str, np.ndarray]:
        """Scores per enabled strategy, each shape (I,); a cold request gets only the context."""
        out: dict[str, np.ndarray] = {}
        if "context" in self.cfg.strategies or req.cold:
            out["context"] = self.context.score(req.now, req.device)
        if req.cold:
            return out
        s = self.strategies
        if "collaborative" in s:
            out["collaborative"] = s["collaborative"].score_history(req.items, req.user)
        if "neumf" in s:
            out["neumf"] = s["neumf"].score_history(req.items, req.user)
        if "content" in self.cfg.strategies:
            out["content"] = self.content.score_history(req.items, req.ratings, req.times, req.now)
        if "gnn" in s:
            w = history_weights(req.ratings, req.times, req.now, self.cfg.content.recency_days)
            out["gnn"] = s["gnn"].score_history(req.items, w, req.user)
        return out

    def recommend(self, req: Request, k: int = 10, use_mmr: bool | None = None) -> list[Recommendation]:
        """Top-k recommendations for a request, fused, trust-filtered, diversified and explained."""
        cat = self.catalog
        scores = self.strategy_scores(req)
        exclude = np.zeros(cat.n_items, bool)
        exclude[req.items] = True
        ranks = {n: ranks_from_scores(v, self.cfg.depth, exclude) for n, v in scores.items()}
        if req.cold:
            fused = rrf_fuse(ranks, {"context": 1.0}, self.rrf_k)
        elif self.fusion == "rrf":
            fused = rrf_fuse(ranks, self.weights, self.rrf_k)
        else:
            fused = fuse_scores(scores, self.weights, self.fusion, exclude)
        rel = apply_trust(fused, self.trust, self.cfg.trust)
        rel[(fused <= 0) | exclude] = -np.inf
        pool_n = max(k, self.cfg.mmr_pool)
        cand = np.argsort(-rel, kind="stable")[:pool_n]
        cand = cand[np.isfinite(rel[cand])]
        use_mmr = self.cfg.use_mmr if use_mmr is None else use_mmr
        if use_mmr and len(cand):
            order = cand[mmr(rel[cand], jaccard_matrix(cat.genres[cand]), k, self.cfg.mmr_lambda)]
        else:
            order = cand[:k]
        w = history_weights(req.ratings, req.times, req.now, self.cfg.content.recency_days) if not req.cold else []
        taste: dict[str, float] = {}
        for it, wt in zip(req.items, w, strict=False):
            for g in cat.genre_list(int(it)):
                taste[g] = taste.get(g, 0.0) + float(wt)
        titles = [cat.label(int(i)) for i in req.items]
        out = []
        for i in order:
            i = int(i)
            item_ranks = {n: int(r[i]) for n, r in ranks.items()}
            sims = self.content.similarity_to(i, req.items) if not req.cold else np.zeros(0)
            kind, text = select_explanation(item_ranks, sims, titles, cat.genre_list(i), taste,
                                            cold_start=req.cold)  # fmt: skip
            if req.cold and req.unknown_user is not None:
                text = f"Trending now (user {req.unknown_user} is not known here, so popular and recent picks)"
            out.append(Recommendation(i, int(cat.raw_item_ids[i]), cat.titles[i], int(cat.years[i]),
                                      cat.genre_list(i), float(rel[i]), float(self.trust[i]), text, kind,
                                      item_ranks))  # fmt: skip
        return out
