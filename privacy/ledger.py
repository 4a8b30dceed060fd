"""Per-user participation counts, the optional cap K, and the no-amplification epsilon."""

from __future__ import annotations

import base64
import logging
from typing import Any

import numpy as np

from privacy.accountant import epsilon_from_history
from privacy.errors import PrivacyError

__all__ = ["ParticipationLedger"]

logger = logging.getLogger(__name__)


class ParticipationLedger:
    """How many rounds each user has taken part in.

    Parameters
    ----------
    population : int
        N >= 1; user ids are ``0 .. N-1``.
    max_participations : int or None, default None
        K; users with K recorded rounds are no longer eligible. None means no cap.

    Attributes
    ----------
    counts : numpy.ndarray, shape [N], int32
        Rounds each user has taken part in (read-only view).
    rounds : int
        Number of ``record`` calls.
    """

    def __init__(self, population: int, max_participations: int | None = None) -> None:
        if int(population) < 1:
            raise PrivacyError(f"population {population} must be >= 1")
        if max_participations is not None and int(max_participations) < 1:
            raise PrivacyError(
                f"privacy.max_participations {max_participations} must be >= 1 or null"
            )
        self.population = int(population)
        self.max_participations = None if max_participations is None else int(max_participations)
        self._counts = np.zeros(self.population, dtype=np.int32)
        self.rounds = 0

    @property
    def counts(self) -> np.ndarray:
        view = self._counts.view()
        view.setflags(write=False)
        return view

    def __repr__(self) -> str:
        return (
            f"ParticipationLedger(population={self.population}, "
            f"max_participations={self.max_participations}, rounds={self.rounds}, "
            f"max_count={int(self._counts.max())})"
        )

    def _ids(self, user_ids: Any) -> np.ndarray:
        ids = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.population):
            raise PrivacyError(
                f"user ids must be in 0..{self.population - 1}; got min {ids.min()} max {ids.max()}"
            )
        return ids

    def record(self, user_ids: Any) -> None:
        """Count one round for each id in ``user_ids`` (int array [k], distinct)."""
        ids = self._ids(user_ids)
        if np.unique(ids).size != ids.size:
            raise PrivacyError("user ids recorded for one round must be distinct")
        if self.max_participations is not None and ids.size:
            over = ids[self._counts[ids] >= self.max_participations]
            if over.size:
                raise PrivacyError(
                    f"users {over[:10].tolist()} already took part in "
                    f"{self.max_participations} rounds (privacy.max_participations); "
                    "filter them with eligible() before the round"
                )
        self._counts[ids] += 1
        self.rounds += 1

    def eligible(self, user_ids: Any) -> np.ndarray:
        """The subset of ``user_ids`` still under the cap K, order kept (int64 [k'])."""
        ids = self._ids(user_ids)
        if self.max_participations is None:
            return ids
        return ids[self._counts[ids] < self.max_participations]

    def histogram(self) -> np.ndarray:
        """``h[k]`` = number of users with exactly k participations (int64 [max+1])."""
        return np.bincount(self._counts, minlength=1).astype(np.int64)

    def worst_case_epsilon(
        self,
        noise_multiplier: float,
        delta: float,
        participations: int | None = None,
        accountant: str = "rdp",
    ) -> float:
        """Epsilon of a user who took part in K rounds, without subsampling amplification.

        This is the guarantee against a party that knows who was sampled (the
        server itself): K un-amplified Gaussian releases, history
        ``[(z, 1.0, K)]``.

        Parameters
        ----------
        noise_multiplier : float
            z of those rounds; pass the smallest z received for a conservative bound.
        delta : float
        participations : int or None
            K; None means the cap if set, else the largest observed count.
        accountant : str
            ``rdp`` | ``prv``.
        """
        if participations is None:
            participations = (
                self.max_participations
                if self.max_participations is not None
                else int(self._counts.max())
            )
        return epsilon_from_history(
            [(noise_multiplier, 1.0, int(participations))], delta, accountant
        )

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state; counts as base64 of the little-endian int32 array."""
        return {
            "population": self.population,
            "max_participations": self.max_participations,
            "rounds": self.rounds,
            "counts_b64": base64.b64encode(self._counts.astype("<i4").tobytes()).decode("ascii"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counts from ``state_dict()`` output; the population must match.

        The cap K stays the one this ledger was built with (the running config).
        """
        try:
            population = int(state["population"])
            raw = base64.b64decode(state["counts_b64"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise PrivacyError(f"invalid ledger state: {exc}") from exc
        if population != self.population:
            raise PrivacyError(
                f"ledger state is for population {population}, this ledger has "
                f"{self.population}; use the checkpoint of the same population"
            )
        counts = np.frombuffer(raw, dtype="<i4")
        if counts.size != population:
            raise PrivacyError(
                f"ledger state holds {counts.size} counts for population {population}"
            )
        self._counts = counts.astype(np.int32)
        self.rounds = int(state.get("rounds", 0))
        cap = state.get("max_participations")
        if cap != self.max_participations:
            # The running config decides the cap; the checkpoint only restores counts.
            logger.warning(
                "ledger checkpoint had max_participations=%s, keeping the configured %s",
                cap,
                self.max_participations,
            )

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ParticipationLedger:
        ledger = cls(int(state["population"]), state.get("max_participations"))
        ledger.load_state_dict(state)
        return ledger
