"""Secure aggregation for fedrec: double masking (Bonawitz et al. 2017, SecAgg+), quantisation,
upload envelopes. A plain library: no Flower imports."""

from secure_agg.client import ClientCohort
from secure_agg.config import STAGES, SecAggConfig, resolve_threshold
from secure_agg.dropout import inject_dropouts
from secure_agg.envelope import EnvelopeOpener, EnvelopeSealer, OpenedEnvelope, RejectionCounter
from secure_agg.errors import (
    EnvelopeError,
    MisroutedEnvelope,
    QuantizationError,
    ReplayedEnvelope,
    SecAggAbort,
    SecAggConfigError,
    SecAggError,
    TamperedEnvelope,
    TruncatedEnvelope,
    WrongKeyEnvelope,
)
from secure_agg.floor import MachineRates, compute_floor, floor_breakdown, measure_rates
from secure_agg.keys import generate_server_keypair, load_private_key, load_public_key
from secure_agg.messages import (
    AdvertiseKeys,
    MaskedInput,
    Roster,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from secure_agg.primitives import MaskExpander, expand_mask
from secure_agg.quantize import (
    QuantizationConfig,
    check_no_wrap,
    dequantize,
    pack_weighted,
    quantize,
    quantize_rows,
    quantize_sum_rows,
    unpack_weighted,
    weighted_mean,
)
from secure_agg.server import SecAggServer

__all__ = [
    "STAGES",
    "AdvertiseKeys",
    "ClientCohort",
    "EnvelopeError",
    "EnvelopeOpener",
    "EnvelopeSealer",
    "MachineRates",
    "MaskExpander",
    "MaskedInput",
    "MisroutedEnvelope",
    "OpenedEnvelope",
    "QuantizationConfig",
    "QuantizationError",
    "RejectionCounter",
    "ReplayedEnvelope",
    "Roster",
    "SecAggAbort",
    "SecAggConfig",
    "SecAggConfigError",
    "SecAggError",
    "SecAggServer",
    "ShareKeys",
    "TamperedEnvelope",
    "TruncatedEnvelope",
    "UnmaskRequest",
    "UnmaskResponse",
    "WrongKeyEnvelope",
    "check_no_wrap",
    "compute_floor",
    "dequantize",
    "expand_mask",
    "floor_breakdown",
    "generate_server_keypair",
    "inject_dropouts",
    "load_private_key",
    "load_public_key",
    "measure_rates",
    "pack_weighted",
    "quantize",
    "quantize_rows",
    "quantize_sum_rows",
    "resolve_threshold",
    "unpack_weighted",
    "weighted_mean",
]
