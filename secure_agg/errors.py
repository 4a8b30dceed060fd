"""Exception types of the secure-aggregation package; messages name the offending value."""

from __future__ import annotations


class SecAggError(Exception):
    """A protocol violation: a stage called out of order, a malformed or inconsistent message."""


class SecAggAbort(SecAggError):
    """The round cannot finish securely (too few users left); discard it and start a new one."""


class SecAggConfigError(SecAggError, ValueError):
    """A configuration value is out of range; the message names the key and the value."""


class QuantizationError(SecAggConfigError):
    """A quantisation config would let the uint32 sum wrap, or a value is out of its range."""


class EnvelopeError(SecAggError):
    """An upload envelope was rejected. ``reason`` is the short key used by ``RejectionCounter``."""

    reason = "envelope"


class TamperedEnvelope(EnvelopeError):
    """Authentication failed: the GCM tag, the wrapped key or an authenticated header field was altered."""

    reason = "tampered"


class TruncatedEnvelope(EnvelopeError):
    """The blob is shorter than its header says it should be."""

    reason = "truncated"


class ReplayedEnvelope(EnvelopeError):
    """An authentic envelope for a (run, round, user, stage) that was already accepted once."""

    reason = "replayed"


class MisroutedEnvelope(EnvelopeError):
    """The envelope is for another run, round, user or stage than the one expected."""

    reason = "misrouted"


class WrongKeyEnvelope(EnvelopeError):
    """The envelope's key was wrapped for a different server public key (fingerprint mismatch)."""

    reason = "wrong_key"


ENVELOPE_ERRORS: tuple[type[EnvelopeError], ...] = (
    TamperedEnvelope,
    TruncatedEnvelope,
    ReplayedEnvelope,
    MisroutedEnvelope,
    WrongKeyEnvelope,
)
