"""Explanations from graph paths: name the watched item or the genre that produced a recommendation."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ITEM_STRATEGIES = ("collaborative", "content", "gnn", "neumf")


def select_explanation(
    strategy_ranks: Mapping[str, int],
    item_sim_to_history: np.ndarray,
    history_titles: list[str],
    item_genres: list[str],
    genre_taste: Mapping[str, float],
    min_item_sim: float = 0.3,
    cold_start: bool = False,
) -> tuple[str, str]:
    """Pick the explanation path for one recommended item.

    The path follows the strategy that ranked the item best (lowest 1-based rank, 0 = absent):
    an item-based strategy (collaborative, content, gnn, neumf) explains through the watched item
    most similar to the recommendation ("Because you watched <title>") when that similarity
    reaches ``min_item_sim``; otherwise, or for a genre-driven match, through the item genre the
    user likes most ("Popular among <genre> fans"); the context strategy says "Trending now".

    Parameters
    ----------
    strategy_ranks : mapping strategy -> int
        The item's 1-based rank per strategy (0 = not returned).
    item_sim_to_history : np.ndarray[float], shape (H,)
        Similarity of the item to each history item (same order as ``history_titles``).
    history_titles : list[str], length H
    item_genres : list[str]
        Genres of the recommended item.
    genre_taste : mapping genre -> float
        The user's genre preference (empty for a cold start).
    cold_start : bool
        The request had no usable history: the explanation says so.

    Returns
    -------
    (kind, text) : kind in {"item", "genre", "trending", "cold_start"}
    """
    if cold_start:
        return "cold_start", "Trending now (no watch history yet, so popular and recent picks)"
    ranked = sorted(((r, s) for s, r in strategy_ranks.items() if r > 0), key=lambda t: (t[0], t[1]))
    best = ranked[0][1] if ranked else "context"
    sims = np.asarray(item_sim_to_history, np.float64)
    if best in ITEM_STRATEGIES and len(sims) and sims.max() >= min_item_sim:
        return "item", f"Because you watched {history_titles[int(np.argmax(sims))]}"
    liked = [(genre_taste.get(g, 0.0), g) for g in item_genres]
    liked = [t for t in liked if t[0] > 0]
    if best != "context" and liked:
        return "genre", f"Popular among {max(liked)[1]} fans"
    if best == "context" or not len(sims):
        return "trending", "Trending now"
    return "item", f"Because you watched {history_titles[int(np.argmax(sims))]}"
