"""The item catalogue the hybrid recommender serves: metadata, knowledge-graph cast, rating stats.

Built once per dataset and split from the interactions the platform holds (the leave-one-out train
split in the ML-100K demo). The knowledge graph (``ml-100k.kg`` + ``ml-100k.link``, RecBole copy
only) is optional: with the GroupLens copy or synthetic data the cast matrix is empty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recommender.data import GENRES, Dataset, Split

log = logging.getLogger(__name__)

# KG relations whose tail is a person linked to the film at the head.
PERSON_RELATIONS: tuple[str, ...] = ("film.film.actor", "film.film.directed_by")


@dataclass
class Catalog:
    """Item metadata plus the platform's interaction statistics.

    Attributes
    ----------
    raw_item_ids : np.ndarray[int64], shape (I,)
    titles : list[str], length I
    years : np.ndarray[int32], shape (I,)   (0 = unknown)
    genres : np.ndarray[bool], shape (I, G)
    cast : scipy.sparse.csr_matrix[float32], shape (I, P)
        1 where person p acted in / directed item i (P = 0 without a knowledge graph).
    has_kg : np.ndarray[bool], shape (I,)
        The item is linked to a knowledge-graph entity.
    n_ratings, mean_rating : np.ndarray, shape (I,)
        Platform statistics from the interactions given to :meth:`from_split`.
    """

    raw_item_ids: np.ndarray
    titles: list[str]
    years: np.ndarray
    genres: np.ndarray
    cast: sp.csr_matrix
    has_kg: np.ndarray
    n_ratings: np.ndarray
    mean_rating: np.ndarray
    genre_names: tuple[str, ...] = field(default=GENRES)

    @property
    def n_items(self) -> int:
        return len(self.raw_item_ids)

    def genre_list(self, item: int) -> list[str]:
        """Genre names of one item (without ``unknown`` when it has a real genre)."""
        names = [self.genre_names[g] for g in np.flatnonzero(self.genres[item])]
        return [n for n in names if n != "unknown"] or names

    def label(self, item: int) -> str:
        y = int(self.years[item])
        return f"{self.titles[item]} ({y})" if y else self.titles[item]

    @classmethod
    def from_split(cls, ds: Dataset, split: Split, kg_relations: tuple[str, ...] = PERSON_RELATIONS,
                   min_person_items: int = 2) -> Catalog:  # fmt: skip
        """Catalogue of ``ds`` with rating statistics from the train split of ``split``.

        Parameters
        ----------
        kg_relations : tuple of str
            KG relations (film -> person) that make a person node.
        min_person_items : int
            Persons linked to fewer catalogue items are dropped (they connect nothing).
        """
        n = ds.n_items
        cnt = np.bincount(split.train_items, minlength=n).astype(np.float64)
        tot = np.bincount(split.train_items, weights=split.train_ratings, minlength=n)
        mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)
        cast, has_kg = load_kg_cast(ds.source_dir, ds.raw_item_ids, kg_relations, min_person_items)
        return cls(ds.raw_item_ids, list(ds.titles), ds.years, ds.genres, cast, has_kg,
                   cnt.astype(np.float32), mean.astype(np.float32))  # fmt: skip


def load_kg_cast(source_dir: Path | None, raw_item_ids: np.ndarray,
                 relations: tuple[str, ...] = PERSON_RELATIONS,
                 min_person_items: int = 2) -> tuple[sp.csr_matrix, np.ndarray]:  # fmt: skip
    """Item x person incidence from the RecBole knowledge graph, or an empty (I, 0) matrix.

    Returns
    -------
    cast : csr_matrix[float32], shape (I, P)
    has_kg : np.ndarray[bool], shape (I,)
    """
    n = len(raw_item_ids)
    empty = sp.csr_matrix((n, 0), dtype=np.float32), np.zeros(n, bool)
    if source_dir is None:
        return empty
    kg_path, link_path = Path(source_dir) / "ml-100k.kg", Path(source_dir) / "ml-100k.link"
    if not (kg_path.is_file() and link_path.is_file()):
        log.info("no knowledge graph in %s: cast features disabled", source_dir)
        return empty
    item_pos = {int(r): k for k, r in enumerate(raw_item_ids)}
    entity_item: dict[str, int] = {}
    with open(link_path, encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            iid, ent = line.rstrip("\n").split("\t")[:2]
            if int(iid) in item_pos:
                entity_item[ent] = item_pos[int(iid)]
    wanted = set(relations)
    rows, persons = [], []
    with open(kg_path, encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            head, rel, tail = line.rstrip("\n").split("\t")[:3]
            if rel in wanted and head in entity_item:
                rows.append(entity_item[head])
                persons.append(tail)
    has_kg = np.zeros(n, bool)
    has_kg[list(entity_item.values())] = True
    if not rows:
        return sp.csr_matrix((n, 0), dtype=np.float32), has_kg
    names, cols = np.unique(np.array(persons), return_inverse=True)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (np.array(rows), cols)), shape=(n, len(names)))
    m.data[:] = 1.0  # duplicates (actor and director) count once
    keep = np.flatnonzero(np.asarray((m > 0).sum(0)).ravel() >= min_person_items)
    return m[:, keep].tocsr(), has_kg
