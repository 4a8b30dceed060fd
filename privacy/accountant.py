"""Privacy accounting over rounds: a thin, resumable wrapper around Opacus accountants.

The mathematics is Opacus's (``opacus.accountants.analysis``) and, for
cross-checks, Google's ``dp_accounting``; this module only keeps the history,
caches per-step RDP curves, and turns the degenerate cases (no rounds, zero
noise, zero sampling) into numbers instead of crashes.

A history entry ``(z, q, n)`` means ``n`` rounds of the Poisson-subsampled
Gaussian mechanism with noise multiplier ``z`` (noise std / L2 sensitivity) and
inclusion probability ``q``, under the add/remove-one-user relation.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from privacy.errors import PrivacyError

# Opacus is imported where it is used, not here: importing it pulls in scipy.stats and
# torch.distributed (~110 MB of RSS and seconds of start-up), and every simulated node imports this
# package through the config schema without ever accounting.

__all__ = [
    "HistoryEntry",
    "PrivacyAccountant",
    "available_accountants",
    "compact_history",
    "create_accountant",
    "epsilon_from_history",
    "noise_for_target_epsilon",
    "pld_epsilon",
    "prv_epsilon",
    "rdp_epsilon",
    "recompute_epsilons",
    "register_accountant",
]

logger = logging.getLogger(__name__)

HistoryEntry = tuple[float, float, int]
"""``(noise_multiplier, sample_rate, steps)``, as in Opacus."""



@lru_cache(maxsize=1)
def _default_alphas() -> tuple[float, ...]:
    """Opacus's default RDP orders (``RDPAccountant.DEFAULT_ALPHAS``)."""
    from opacus.accountants import RDPAccountant

    return tuple(float(a) for a in RDPAccountant.DEFAULT_ALPHAS)


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_ALPHAS":  # module attribute, resolved on first use (see the imports above)
        return _default_alphas()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- history helpers
def _check_entry(noise_multiplier: float, sample_rate: float, steps: int) -> HistoryEntry:
    z, q, n = float(noise_multiplier), float(sample_rate), int(steps)
    if not math.isfinite(z) or z < 0:
        raise PrivacyError(f"noise_multiplier {z} must be finite and >= 0")
    if not 0.0 <= q <= 1.0:
        raise PrivacyError(f"sample_rate {q} must be in [0, 1]")
    if n < 0 or n != steps:
        raise PrivacyError(f"steps {steps} must be a non-negative integer")
    return z, q, n


def _check_delta(delta: float) -> float:
    d = float(delta)
    if not 0.0 < d < 1.0:
        raise PrivacyError(f"delta {delta} must be in (0, 1); set privacy.delta or leave it null")
    return d


def compact_history(entries: Iterable[Sequence[float]]) -> list[HistoryEntry]:
    """Validate entries and merge consecutive ones with equal ``(z, q)``.

    Parameters
    ----------
    entries : iterable of (z, q, steps)

    Returns
    -------
    list of (float, float, int)
        Entries with ``steps == 0`` dropped, runs of equal ``(z, q)`` summed.
    """
    out: list[HistoryEntry] = []
    for entry in entries:
        z, q, n = _check_entry(*entry)
        if n == 0:
            continue
        if out and out[-1][0] == z and out[-1][1] == q:
            out[-1] = (z, q, out[-1][2] + n)
        else:
            out.append((z, q, n))
    return out


def _released(history: Iterable[Sequence[float]]) -> list[HistoryEntry]:
    """Entries that released anything: ``q == 0`` rounds include nobody."""
    return [e for e in compact_history(history) if e[1] > 0.0]


def _released_for_epsilon(
    history: Iterable[Sequence[float]], delta: float
) -> tuple[float, list[HistoryEntry], float | None]:
    """The checked delta, the released entries, and the epsilon when no numerics are needed:
    0 when nothing was released, ``inf`` when a released round had no noise (``z == 0``), else
    None (the accountant has to compute it)."""
    d = _check_delta(delta)
    released = _released(history)
    if not released:
        return d, released, 0.0
    if any(z == 0.0 for z, _, _ in released):
        return d, released, math.inf
    return d, released, None


def _history_steps(history: Iterable[Sequence[float]]) -> int:
    return sum(int(e[2]) for e in history)


def _truncate(history: Sequence[HistoryEntry], rounds: int) -> list[HistoryEntry]:
    """The prefix of ``history`` covering its first ``rounds`` steps."""
    out: list[HistoryEntry] = []
    left = rounds
    for z, q, n in history:
        if left <= 0:
            break
        out.append((z, q, min(n, left)))
        left -= n
    return out


# --------------------------------------------------------------------------- epsilon methods
@lru_cache(maxsize=1024)
def _rdp_one_step(
    noise_multiplier: float, sample_rate: float, alphas: tuple[float, ...]
) -> np.ndarray:
    """Opacus ``compute_rdp`` for one step, cached: it costs ~0.1 s per (z, q) pair."""
    from opacus.accountants.analysis import rdp as opacus_rdp

    rdp = np.asarray(
        opacus_rdp.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(alphas)
        ),
        dtype=np.float64,
    )
    rdp.setflags(write=False)
    return rdp


def rdp_epsilon(
    history: Iterable[Sequence[float]],
    delta: float,
    alphas: Sequence[float] | None = None,
) -> float:
    """Epsilon of ``history`` by Opacus RDP accounting (Mironov et al. 2019).

    RDP of the subsampled Gaussian at each order ``alpha`` adds up over rounds,
    ``R(alpha) = sum_i n_i * R_i(alpha)``, and converts to
    ``eps = min_alpha R(alpha) + log((alpha-1)/alpha) - (log delta + log alpha)/(alpha-1)``
    (Balle et al. 2020) via ``opacus.accountants.analysis.rdp.get_privacy_spent``.
    Equal to ``opacus.accountants.RDPAccountant.get_epsilon`` for the same history,
    except that ``q == 0`` rounds count as nothing released (Opacus would still
    add the conversion slack) and an empty history gives 0.

    Returns
    -------
    float
        Epsilon >= 0; ``inf`` if any released round has ``z == 0``.
    """
    d, released, trivial = _released_for_epsilon(history, delta)
    if trivial is not None:
        return trivial
    from opacus.accountants.analysis import rdp as opacus_rdp

    orders = _default_alphas() if alphas is None else tuple(float(a) for a in alphas)
    # Same expression as RDPAccountant.get_privacy_spent, so results are bit-identical.
    rdp = sum([_rdp_one_step(z, q, orders) * n for z, q, n in released])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eps, best_alpha = opacus_rdp.get_privacy_spent(orders=list(orders), rdp=rdp, delta=d)
    for w in caught:
        logger.debug("RDP conversion (best alpha %s): %s", best_alpha, w.message)
    return float(eps)


def prv_epsilon(
    history: Iterable[Sequence[float]],
    delta: float,
    eps_error: float = 0.01,
    delta_error: float | None = None,
) -> float:
    """Epsilon of ``history`` by Opacus PRV accounting (Gopi et al. 2021).

    Numerical composition of privacy-loss random variables via FFT; returns the
    rigorous upper estimate ``eps_upper`` (within ``eps_error`` of the truth).
    When the PRV numerics fail (known for very large epsilon, Opacus #601/#604)
    this logs a warning and returns the RDP epsilon, which is also a valid but
    looser upper bound.

    Returns
    -------
    float
        Epsilon >= 0; ``inf`` if any released round has ``z == 0``.
    """
    d, released, trivial = _released_for_epsilon(history, delta)
    if trivial is not None:
        return trivial
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = list(released)
    try:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            return float(acc.get_epsilon(d, eps_error=eps_error, delta_error=delta_error))
    except (RuntimeError, ValueError, OverflowError, FloatingPointError) as exc:
        logger.warning(
            "PRV accounting failed (%s) for history %s at delta %.3g; using the RDP bound",
            exc,
            released,
            d,
        )
        return rdp_epsilon(released, d)


def pld_epsilon(
    history: Iterable[Sequence[float]],
    delta: float,
    value_discretization_interval: float = 1e-4,
) -> float:
    """Epsilon of ``history`` by Google ``dp_accounting`` PLD accounting, for cross-checks.

    Each entry becomes ``SelfComposedDpEvent(PoissonSampledDpEvent(q,
    GaussianDpEvent(z)), n)``; entries are composed with ``ComposedDpEvent`` and
    evaluated by ``dp_accounting.pld.PLDAccountant`` (add/remove-one relation,
    pessimistic discretisation), which should agree with PRV to about 1%.
    """
    import dp_accounting  # local import: heavy, and only reports/tests need it

    d = _check_delta(delta)
    released = _released(history)
    if not released:
        return 0.0
    event = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), n
            )
            for z, q, n in released
        ]
    )
    acc = dp_accounting.pld.PLDAccountant(
        value_discretization_interval=value_discretization_interval
    )
    return float(acc.compose(event).get_epsilon(d))


EpsilonFn = Callable[[Sequence[HistoryEntry], float], float]

_ACCOUNTANTS: dict[str, EpsilonFn] = {"rdp": rdp_epsilon, "prv": prv_epsilon}


def register_accountant(name: str, epsilon_fn: EpsilonFn, force: bool = False) -> None:
    """Register ``epsilon_fn(history, delta) -> float`` under ``name`` (like Opacus)."""
    if name in _ACCOUNTANTS and not force:
        raise PrivacyError(f"accountant {name!r} is already registered; pass force=True")
    _ACCOUNTANTS[name] = epsilon_fn


def available_accountants() -> tuple[str, ...]:
    """Names accepted by ``privacy.accountant``."""
    return tuple(_ACCOUNTANTS)


def _epsilon_fn(name: str) -> EpsilonFn:
    try:
        return _ACCOUNTANTS[name]
    except KeyError:
        raise PrivacyError(
            f"privacy.accountant {name!r} is not one of {'|'.join(_ACCOUNTANTS)}"
        ) from None


def epsilon_from_history(
    history: Iterable[Sequence[float]], delta: float, method: str = "rdp"
) -> float:
    """Epsilon of ``history`` at ``delta`` with the accountant registered as ``method``."""
    return _epsilon_fn(method)(compact_history(history), delta)


def recompute_epsilons(
    history: Iterable[Sequence[float]],
    delta: float,
    method: str = "rdp",
    rounds: Sequence[int] | None = None,
) -> np.ndarray:
    """Epsilon after each round, recomputed from scratch (for reports).

    Parameters
    ----------
    history : iterable of (z, q, steps)
    delta : float
    method : str
        Registered accountant name (``rdp`` | ``prv``) or ``pld``.
    rounds : sequence of int or None
        1-based rounds to evaluate; None means every round ``1..T``. PRV/PLD cost
        ~0.1-1 s per point, so pass a subset for long runs.

    Returns
    -------
    numpy.ndarray, shape [len(rounds)], float64
        ``eps[i]`` = epsilon of the first ``rounds[i]`` steps.
    """
    hist = compact_history(history)
    total = _history_steps(hist)
    points = list(range(1, total + 1)) if rounds is None else [int(r) for r in rounds]
    bad = [r for r in points if not 0 <= r <= total]
    if bad:
        raise PrivacyError(f"rounds {bad[:5]} outside 0..{total} of the history")
    fn: EpsilonFn = pld_epsilon if method == "pld" else _epsilon_fn(method)
    return np.array([fn(_truncate(hist, r), delta) for r in points], dtype=np.float64)


def noise_for_target_epsilon(
    target_epsilon: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    accountant: str = "rdp",
    epsilon_tolerance: float = 0.01,
) -> float:
    """Smallest noise multiplier (to ``epsilon_tolerance``) reaching the target after ``rounds``.

    Delegates to ``opacus.accountants.utils.get_noise_multiplier`` (doubling then
    bisection on sigma; the result's epsilon is <= target and within
    ``epsilon_tolerance`` of it). A PRV failure falls back to RDP, which asks
    for at least as much noise.

    Raises
    ------
    PrivacyError
        If the target cannot be met with sigma <= 1e6.
    """
    eps, d = float(target_epsilon), _check_delta(delta)
    if not eps > 0:
        raise PrivacyError(f"privacy.target_epsilon {target_epsilon} must be > 0")
    _check_entry(1.0, sample_rate, rounds)
    if float(sample_rate) == 0.0 or int(rounds) == 0:
        return 0.0
    if accountant not in ("rdp", "prv"):
        raise PrivacyError(f"accountant {accountant!r} must be rdp|prv for noise calibration")
    kwargs: dict[str, Any] = {
        "target_epsilon": eps,
        "target_delta": d,
        "sample_rate": float(sample_rate),
        "steps": int(rounds),
        "accountant": accountant,
        "epsilon_tolerance": epsilon_tolerance,
    }
    try:
        with (
            warnings.catch_warnings(),
            np.errstate(over="ignore", divide="ignore", invalid="ignore"),
        ):
            warnings.simplefilter("ignore")
            from opacus.accountants.utils import get_noise_multiplier

            return float(get_noise_multiplier(**kwargs))
    except ValueError as exc:
        if "too low" in str(exc):
            raise PrivacyError(
                f"target epsilon {eps:g} at delta {d:.3g} is unreachable in {rounds} rounds "
                f"with sample rate {sample_rate:g}; raise privacy.target_epsilon or lower rounds"
            ) from exc
        if accountant != "prv":
            raise
        failure: Exception = exc
    except (RuntimeError, OverflowError, FloatingPointError) as exc:
        if accountant != "prv":
            raise
        failure = exc
    logger.warning("PRV noise calibration failed (%s); using the RDP calibration", failure)
    return noise_for_target_epsilon(eps, sample_rate, rounds, d, "rdp", epsilon_tolerance)


# --------------------------------------------------------------------------- the class
class PrivacyAccountant:
    """Tracks the rounds released so far and reports their epsilon.

    Parameters
    ----------
    mechanism : str, default "rdp"
        Registered accountant: ``rdp`` (Opacus RDP, cached, ~ms per query) or
        ``prv`` (Opacus PRV, tighter, ~0.2-0.7 s per query).

    Attributes
    ----------
    history : list of (float, float, int)
        Compact ``(noise_multiplier, sample_rate, steps)`` runs, a copy.
    """

    def __init__(self, mechanism: str = "rdp") -> None:
        self._fn = _epsilon_fn(mechanism)
        self._mechanism = mechanism
        self._history: list[HistoryEntry] = []
        self._cache: OrderedDict[tuple[Any, ...], float] = OrderedDict()

    @property
    def mechanism(self) -> str:
        """Accountant name, e.g. ``"rdp"``."""
        return self._mechanism

    @property
    def history(self) -> list[HistoryEntry]:
        return list(self._history)

    @property
    def num_steps(self) -> int:
        """Rounds accounted so far (sum of ``steps``)."""
        return _history_steps(self._history)

    def __len__(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        return (
            f"PrivacyAccountant(mechanism={self._mechanism!r}, steps={self.num_steps}, "
            f"history={self._history})"
        )

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` rounds with multiplier z (actually received) and rate q."""
        self._history = compact_history([*self._history, (noise_multiplier, sample_rate, steps)])

    def _epsilon(self, history: list[HistoryEntry], delta: float) -> float:
        key = (tuple(history), float(delta))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        eps = float(self._fn(history, delta))
        self._cache[key] = eps
        if len(self._cache) > 16:
            self._cache.popitem(last=False)
        return eps

    def get_epsilon(self, delta: float) -> float:
        """Epsilon spent so far at ``delta`` (0 before any round, inf with z == 0)."""
        return self._epsilon(self._history, delta)

    def epsilon_if_step(self, noise_multiplier: float, sample_rate: float, delta: float) -> float:
        """Epsilon after one more round with ``(z, q)``; does not change the state.

        The result is cached, so a ``step`` with the same ``(z, q)`` followed by
        ``get_epsilon(delta)`` costs nothing extra (matters for PRV).
        """
        hist = compact_history([*self._history, (noise_multiplier, sample_rate, 1)])
        return self._epsilon(hist, delta)

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: ``{"mechanism": str, "history": [[z, q, n], ...]}``."""
        return {
            "mechanism": self._mechanism,
            "history": [[z, q, n] for z, q, n in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output (history is mechanism-independent)."""
        if not isinstance(state, dict) or "history" not in state:
            raise PrivacyError("accountant state must be a dict with a 'history' key")
        other = state.get("mechanism", self._mechanism)
        if other != self._mechanism:
            logger.warning(
                "loading a %s accountant history into a %s accountant; epsilon will be "
                "recomputed with %s",
                other,
                self._mechanism,
                self._mechanism,
            )
        self._history = compact_history(state["history"])
        self._cache.clear()

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], mechanism: str | None = None
    ) -> PrivacyAccountant:
        """New accountant from a state dict, with its mechanism unless overridden."""
        acc = cls(mechanism or state.get("mechanism", "rdp"))
        acc.load_state_dict(state)
        return acc


def create_accountant(mechanism: str = "rdp") -> PrivacyAccountant:
    """Create a ``PrivacyAccountant`` by registered name (``rdp`` | ``prv``)."""
    return PrivacyAccountant(mechanism)
