"""Content strategy: history weights, genre taste, KG-free catalogue, the packaged text encoder."""

import numpy as np
import pytest

from recommender.content import (
    ContentConfig,
    ContentStrategy,
    encode_text,
    genre_taste,
    history_weights,
)
from recommender.context import ContextStrategy

DAY = 86_400.0


def test_history_weights_rating_and_recency():
    w = history_weights(np.array([5.0, 1.0, 3.0]), np.array([0, 0, -30 * DAY]) + 100 * DAY, now=100 * DAY)
    np.testing.assert_allclose(w, [1.0, 0.0, 0.5 * np.exp(-1.0)])
    # only 1-star ratings: uniform instead of all-zero
    np.testing.assert_allclose(history_weights(np.array([1.0, 1.0]), np.zeros(2), 0.0), [1.0, 1.0])


def test_genre_taste_is_a_distribution():
    g = np.array([[1, 0, 0], [1, 1, 0]], bool)
    np.testing.assert_allclose(genre_taste(g, np.array([1.0, 1.0])), [2 / 3, 1 / 3, 0])


def test_content_blend_prefers_similar_items():
    vec = np.eye(4, dtype=np.float32)
    vec[1] = vec[0] * 0.9 + vec[1] * 0.1
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    genres = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], bool)
    s = ContentStrategy(vec, genres, ContentConfig()).score_history(np.array([0]), np.array([5.0]),
                                                                     np.array([0.0]), 0.0)
    assert s[1] > s[2] and s[1] > s[3]
    assert np.isnan(ContentStrategy(vec, genres).score_history(np.zeros(0, int), [], [], 0.0)).all()


def test_trending_window():
    ctx = ContextStrategy(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 2, 10 * DAY, 10 * DAY, 20 * DAY]), 3)
    ctx.cfg.window_days, ctx.cfg.popularity_prior = 5.0, 0.0
    s = ctx.score(now=12 * DAY)
    np.testing.assert_allclose(s, [0, 0, 1])
    assert np.argmax(ctx.score(now=3 * DAY)) == 0


@pytest.mark.slow
def test_packaged_minilm_encodes_offline():
    e = encode_text(["Toy Story (1995). Genres: Animation, Comedy.", "Heat (1995). Genres: Crime."])
    assert e.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
