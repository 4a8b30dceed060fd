"""Config dataclasses of the recommendation domain (Hydra groups ``data`` and ``model``)."""

from __future__ import annotations

from dataclasses import dataclass

FIT_ON = ("train", "trainval", "train_minus_last")  # what federated clients may train on (``DataConfig.fit_on``)


@dataclass
class DataConfig:
    """Which population to federate.

    Parameters
    ----------
    name : {"ml-100k", "synthetic"}
    cache : str or None
        Data cache dir (default ``$FEDREC_DATA`` or the user cache dir).
    users, items : int
        Synthetic population size (ignored for ml-100k: 943 x 1682).
    mean_interactions : float
        Synthetic mean interactions per user (ML-100K: 106).
    exact_interactions : int
        If > 0, every synthetic user has exactly this many interactions (benchmark workloads).
    seed : int
        Seed of the synthetic generator and of the evaluation negatives.
    fit_on : {"train", "trainval", "train_minus_last"}
        What the clients train on: the leave-one-out train items (default; the validation item
        stays held out for tuning), or train + validation, for the test phase of
        ``fedrec evaluate-recommender --test-run`` (the hybrid's other strategies are rebuilt on
        train + validation there too), or the train items without each user's most recent one,
        for the optional earlier phase of ``--early-run`` (the fusion weights are then learned on
        that held-out interaction as well as on the validation item). The test item is never
        trained on.
    """

    name: str = "ml-100k"
    cache: str | None = None
    users: int = 943
    items: int = 1682
    mean_interactions: float = 106.0
    exact_interactions: int = 0
    seed: int = 0
    fit_on: str = "train"

    def validate(self) -> None:
        if self.name not in ("ml-100k", "synthetic"):
            raise ValueError(f"data.name={self.name!r}: choose ml-100k or synthetic")
        if self.fit_on not in FIT_ON:
            raise ValueError(f"data.fit_on={self.fit_on!r}: choose one of {list(FIT_ON)}")
        if self.name == "synthetic" and (self.users < 2 or self.items < 200):
            raise ValueError(f"data.users={self.users} must be >= 2 and data.items={self.items} >= 200")

    @property
    def population(self) -> int:
        return 943 if self.name == "ml-100k" else self.users


@dataclass
class ModelConfig:
    """NeuMF size.

    Parameters
    ----------
    factors : int
        GMF factor f (MLP embeddings 2f, tower 4f -> 2f -> f).
    init_seed : int
        Seed of the initial global model.
    """

    factors: int = 32
    init_seed: int = 0

    def validate(self) -> None:
        if self.factors < 1:
            raise ValueError(f"model.factors={self.factors} must be >= 1")
