"""Server optimizers: how the aggregated delta moves the global model (pure functions + state).

``sgd``: theta <- theta + eta * delta (FedAvg with server learning rate eta).
``adam``: FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization"): the aggregated delta is
treated as a pseudo-gradient; m <- b1 m + (1-b1) delta, v <- b2 v + (1-b2) delta^2,
theta <- theta + eta * m / (sqrt(v) + tau). Per-coordinate scaling matters for NeuMF: an item row
is updated only by the few sampled users who touched it, so its averaged delta is diluted by the
round's total weight; Adam's normalisation restores a useful step for rare items.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ServerOptState:
    """Moments of the server optimizer (empty for sgd)."""

    m: np.ndarray | None = None
    v: np.ndarray | None = None
    t: int = 0
    extra: dict = field(default_factory=dict)


def server_step(theta: np.ndarray, delta: np.ndarray, state: ServerOptState, name: str, lr: float,
                beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> np.ndarray:  # fmt: skip
    """Return the new global parameters (float32, shape (d,)) and update ``state`` in place.

    Parameters
    ----------
    theta, delta : np.ndarray, shape (d,)
        Current global parameters and the aggregated (weighted mean) delta.
    name : {"sgd", "adam"}
    lr : float
        Server learning rate eta.
    """
    if name == "sgd":
        return (theta + lr * delta).astype(np.float32)
    if name != "adam":
        raise ValueError(f"strategy.server_optimizer={name!r}: choose sgd or adam")
    if state.m is None:
        state.m = np.zeros_like(delta, dtype=np.float32)
        state.v = np.zeros_like(delta, dtype=np.float32)
    state.t += 1
    state.m = (beta1 * state.m + (1 - beta1) * delta).astype(np.float32)
    state.v = (beta2 * state.v + (1 - beta2) * delta * delta).astype(np.float32)
    return (theta + lr * state.m / (np.sqrt(state.v) + tau)).astype(np.float32)
