"""Configuration schema of secure aggregation (mirrors ``configs/secure_agg/``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from secure_agg.errors import SecAggConfigError

#: Protocol stages in order (Bonawitz et al. 2017, rounds 0-3; the consistency round of the
#: actively secure variant is not implemented: the threat model is an honest-but-curious server).
STAGES: tuple[str, ...] = ("advertise_keys", "share_keys", "masked_input", "unmask")

#: Hard floor on the Shamir threshold: with t = 1 any single share holder, colluding with the
#: server, would recover a user's mask secrets and so the user's input.
MIN_THRESHOLD = 2


def _zero_dropout() -> dict[str, float]:
    return {stage: 0.0 for stage in STAGES}


@dataclass
class SecAggConfig:
    """Secure aggregation settings.

    Parameters
    ----------
    enabled : bool, default False
        Run the protocol; when False the update pipeline skips masking (the envelope still applies).
    threshold : float, default 0.5
        Shamir threshold t. A value <= 1 is a fraction of the share group (all users with the
        complete graph, a user and its ``neighbours`` with SecAgg+), rounded up; a value > 1 is an
        absolute count and must be a whole number. Never below 2 (``MIN_THRESHOLD``). It is also
        the collusion bound: fewer than t users colluding with the server learn nothing beyond the
        sum. The round aborts when fewer than t users are left at any stage.
    neighbours : int or None, default None
        SecAgg+ degree k of the random k-regular neighbour graph (Bell et al. 2020); None means the
        complete graph of the original protocol (cost quadratic in the number of users).
    bits : int, default 32
        Bits per quantised coordinate; the arithmetic is always mod 2^32, ``bits`` <= 32.
    clip_range_sigmas : float, default 6.0
        Quantisation range r = w_max * C + clip_range_sigmas * sigma (see ``secure_agg.quantize``).
    n_max : int, default 10000
        Largest number of users whose quantised values are summed; sets the per-user level count
        so that the sum cannot wrap.
    dropout : dict[str, float], default 0 for every stage
        Fraction of the users still present that drop before sending their message of that stage
        (injected by simulations and benchmarks via ``secure_agg.dropout.inject_dropouts``).
    fixed_message_bytes : dict[str, int], default {}
        Per-stage fixed envelope plaintext size in bytes (constant-size uploads); stages not
        listed are padded up to a multiple of ``pad_bucket_bytes``.
    pad_bucket_bytes : int, default 4096
        Padding bucket for envelope plaintexts whose stage has no fixed size.
    """

    enabled: bool = False
    threshold: float = 0.5
    neighbours: int | None = None
    bits: int = 32
    clip_range_sigmas: float = 6.0
    n_max: int = 10000
    dropout: dict[str, float] = field(default_factory=_zero_dropout)
    fixed_message_bytes: dict[str, int] = field(default_factory=dict)
    pad_bucket_bytes: int = 4096

    def validate(self) -> SecAggConfig:
        """Raise ``SecAggConfigError`` naming the first bad key; return self for chaining."""
        if not self.threshold > 0:
            raise SecAggConfigError(
                f"secure_agg.threshold={self.threshold} must be > 0 (a fraction in (0, 1] "
                "or an absolute count >= 2)"
            )
        if self.threshold > 1 and float(self.threshold) != int(self.threshold):
            raise SecAggConfigError(
                f"secure_agg.threshold={self.threshold} is > 1, so it is an absolute count and "
                "must be a whole number"
            )
        if self.neighbours is not None and self.neighbours < 2:
            raise SecAggConfigError(
                f"secure_agg.neighbours={self.neighbours} must be >= 2 or null (complete graph)"
            )
        if not 1 <= self.bits <= 32:
            raise SecAggConfigError(f"secure_agg.bits={self.bits} must be in [1, 32]")
        if not self.clip_range_sigmas > 0:
            raise SecAggConfigError(
                f"secure_agg.clip_range_sigmas={self.clip_range_sigmas} must be > 0"
            )
        if not 1 <= self.n_max <= 2**self.bits - 1:
            raise SecAggConfigError(
                f"secure_agg.n_max={self.n_max} must be in [1, 2^bits - 1 = {2**self.bits - 1}]"
            )
        for stage, frac in self.dropout.items():
            if stage not in STAGES:
                raise SecAggConfigError(
                    f"secure_agg.dropout has unknown stage {stage!r}; stages are {STAGES}"
                )
            if not 0.0 <= frac < 1.0:
                raise SecAggConfigError(f"secure_agg.dropout.{stage}={frac} must be in [0, 1)")
        for stage, size in self.fixed_message_bytes.items():
            if stage not in STAGES:
                raise SecAggConfigError(
                    f"secure_agg.fixed_message_bytes has unknown stage {stage!r}; stages are "
                    f"{STAGES}"
                )
            if size < 1:
                raise SecAggConfigError(
                    f"secure_agg.fixed_message_bytes.{stage}={size} must be >= 1"
                )
        if self.pad_bucket_bytes < 1:
            raise SecAggConfigError(
                f"secure_agg.pad_bucket_bytes={self.pad_bucket_bytes} must be >= 1"
            )
        return self

    def share_group_size(self, n_users: int) -> int:
        """Holders of each user's shares: the user and its neighbours (all users if complete)."""
        if self.neighbours is None or self.neighbours >= n_users - 1:
            return n_users
        return graph_degree(n_users, self.neighbours) + 1

    def resolve_threshold(self, n_users: int) -> int:
        """Shamir threshold t for a round that starts with ``n_users`` users."""
        return resolve_threshold(self.threshold, self.share_group_size(n_users))


def graph_degree(n_users: int, k: int) -> int:
    """Degree actually used for ``n_users`` and requested degree k (k-regular needs n*k even)."""
    if k >= n_users - 1:
        return n_users - 1
    if k % 2 == 1 and n_users % 2 == 1:
        return k + 1
    return k


def resolve_threshold(threshold: float, group_size: int) -> int:
    """t for a share group of ``group_size`` holders: ceil(fraction * size) or the absolute count.

    Clamped to [MIN_THRESHOLD, group_size]; a group smaller than MIN_THRESHOLD cannot run the
    protocol and raises ``SecAggConfigError``.
    """
    if group_size < MIN_THRESHOLD:
        raise SecAggConfigError(
            f"a share group of {group_size} user(s) is too small: secure aggregation needs at "
            f"least {MIN_THRESHOLD} users"
        )
    # the 1e-9 keeps 0.3 * 10 = 3.0000000000000004 from rounding up to 4
    t = math.ceil(threshold * group_size - 1e-9) if threshold <= 1 else int(threshold)
    return min(max(t, MIN_THRESHOLD), group_size)
